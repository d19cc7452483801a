"""Hostile or broken weights: malformed safetensors headers, odd dtypes, NaN/Inf given to `merge`,
`audit` and `run`. Each is exit 2 with a message naming the file (and the tensor where there is one)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from mergegate.cli.main import main
from mergegate.errors import ModelFilesError
from mergegate.merging.random_models import LlamaShape, make_family
from mergegate.models.weight_files import read_safetensors_header

TINY = LlamaShape(hidden=32, intermediate=64, layers=2, heads=2, kv_heads=1, vocab=64)


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def run_mergekit(config: dict, out: Path) -> Path:
    """mergekit 0.1.5 (a test-only reference) on the same recipe."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    text = yaml.safe_dump(config)
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), str(out),
              options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True), config_source=text)
    return out


def _raw_safetensors(path: Path, header: object, data: bytes = b"", *, raw_header: bytes | None = None) -> Path:
    blob = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


GOOD = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize("header, data, raw, message", [
    ({"w": ["F32", [2], [0, 8]]}, b"\0" * 8, None, "is list, not an object"),
    ({"w": "F32"}, b"\0" * 8, None, "is str, not an object"),
    ({"w": {"dtype": "F32", "shape": [-2, -1], "data_offsets": [0, 8]}}, b"\0" * 8, None, "non-negative"),
    ({"w": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "non-negative"),
    ({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, b"\0" * 8, None, "non-negative"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, None, "data_offsets"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8, None, "data_offsets"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "bad byte range"),
    ({"w": {"dtype": "U16", "shape": [4], "data_offsets": [0, 8]}}, b"\0" * 8, None, "dtype U16"),
    ({"w": {"dtype": None, "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "no dtype"),
    ({"__metadata__": ["x"], **GOOD}, b"\0" * 8, None, "__metadata__"),
    (GOOD, b"\0" * 4, None, "truncated"),
    (GOOD, b"\0" * 12, None, "after the last tensor"),
    ([1, 2], b"", None, "not a JSON object"),
    (None, b"", b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    (None, b"", b"\xff\xfe{}", "not JSON"),
    (None, b"", b'{"w": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 8]}}', "not JSON"),
])
def test_malformed_header_names_the_file(tmp_path: Path, header: object, data: bytes, raw: bytes | None,
                                         message: str) -> None:
    f = _raw_safetensors(tmp_path / "model.safetensors", header, data, raw_header=raw)
    with pytest.raises(ModelFilesError, match=message) as exc:
        read_safetensors_header(f)
    assert exc.value.source == str(f) and exc.value.exit_code == 2 and exc.value.hint


def test_header_length_beyond_file(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ModelFilesError, match="header length"):
        read_safetensors_header(f)
    f.write_bytes(b"\1\2")
    with pytest.raises(ModelFilesError, match="truncated"):
        read_safetensors_header(f)


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    return make_family(tmp_path_factory.mktemp("fam"), 2, shape=TINY, dtype="float32")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(model: Path, edit) -> None:  # noqa: ANN001 - edit(state) -> state
    from safetensors.torch import load_file

    f = model / "model.safetensors"
    state = load_file(str(f))
    save_file(edit(state), str(f), metadata={"format": "pt"})


def _recipe(tmp_path: Path, models: list[Path], **extra: object) -> Path:
    cfg = {"merge_method": "linear", "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models],
           **extra}
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_merge_with_malformed_input_exits_2_naming_the_file(tmp_path: Path, family, capsys) -> None:  # noqa: ANN001
    base, (expert, _) = family
    broken = _copy(expert, tmp_path / "broken")
    f = broken / "model.safetensors"
    _raw_safetensors(f, {"w": [1, 2, 3]})
    code = main(["merge", str(_recipe(tmp_path, [base, broken])), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and str(f) in err and "not an object" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool])
def test_integer_and_bool_tensors_are_copied_through(tmp_path: Path, family, dtype: torch.dtype) -> None:  # noqa: ANN001
    """Identical integer/bool buffers (masks, position ids) are copied; the floats are merged."""
    from safetensors import safe_open

    base, (expert, _) = family
    buffer = (torch.arange(12).reshape(3, 4) % 2).to(dtype)
    models = [_copy(m, tmp_path / m.name) for m in (base, expert)]
    for m in models:
        _rewrite(m, lambda s: {**s, "model.extra_buffer": buffer.clone()})
    out = tmp_path / "out"
    assert main(["merge", str(_recipe(tmp_path, models, dtype="bfloat16")), str(out)]) == 0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        got = f.get_tensor("model.extra_buffer")
        assert f.get_tensor("model.norm.weight").dtype == torch.bfloat16  # dtype: applies to floats
    assert got.dtype == dtype and torch.equal(got, buffer)


def test_different_integer_tensors_are_refused(tmp_path: Path, family, capsys) -> None:  # noqa: ANN001
    base, (expert, _) = family
    models = [_copy(m, tmp_path / m.name) for m in (base, expert)]
    for i, m in enumerate(models):
        _rewrite(m, lambda s, i=i: {**s, "model.extra_buffer": torch.full((4,), i, dtype=torch.int32)})
    code = main(["merge", str(_recipe(tmp_path, models)), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "integer/bool tensor 'model.extra_buffer' differs" in err and str(models[1]) in err
    # stored as different dtypes: refused at planning, before any output byte
    _rewrite(models[1], lambda s: {**s, "model.extra_buffer": torch.zeros(4, dtype=torch.int64)})
    code = main(["merge", "--dry-run", str(_recipe(tmp_path, models))])
    err = capsys.readouterr().err
    assert code == 2 and "model.extra_buffer" in err and "I32" in err and "I64" in err


@pytest.mark.parametrize("fp8", ["float8_e4m3fn", "float8_e5m2"])
def test_float8_inputs_merge_like_mergekit_with_a_dtype(tmp_path: Path, family, fp8: str) -> None:  # noqa: ANN001
    """mergekit 0.1.5 upcasts to the recipe's `dtype:`; without one it fails ('Promotion for Float8
    Types is not supported'), and mergegate says what to add instead of crashing."""
    base, (expert, _) = family
    models = [_copy(m, tmp_path / m.name) for m in (base, expert)]
    for m in models:
        _rewrite(m, lambda s: {k: v.to(getattr(torch, fp8)) for k, v in s.items()})
    cfg = {"merge_method": "linear", "dtype": "bfloat16",
           "models": [{"model": str(m), "parameters": {"weight": w}} for m, w in zip(models, (0.3, 0.7))]}
    ours = tmp_path / "ours"
    (tmp_path / "fp8.yml").write_text(yaml.safe_dump(cfg))
    assert main(["merge", str(tmp_path / "fp8.yml"), str(ours)]) == 0
    theirs = run_mergekit(cfg, tmp_path / "theirs")
    a, b = load_dir(ours), load_dir(theirs)
    assert set(b) <= set(a)
    for name, t in b.items():
        assert a[name].dtype == t.dtype == torch.bfloat16 and torch.equal(a[name], t), name


def test_float8_without_dtype_is_a_clear_error(tmp_path: Path, family, capsys) -> None:  # noqa: ANN001
    base, (expert, _) = family
    models = [_copy(m, tmp_path / m.name) for m in (base, expert)]
    for m in models:
        _rewrite(m, lambda s: {k: v.to(torch.float8_e4m3fn) for k, v in s.items()})
    recipe = _recipe(tmp_path, models)
    code = main(["merge", str(recipe), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "field 'dtype'" in err and "F8_E4M3" in err and "dtype: bfloat16" in err
    with pytest.raises(RuntimeError, match="Float8"):  # what mergekit does with the same recipe
        run_mergekit(yaml.safe_load(recipe.read_text()), tmp_path / "theirs")
    # passthrough copies float8 as it is (no arithmetic), as mergekit does
    (tmp_path / "p.yml").write_text(yaml.safe_dump({"merge_method": "passthrough",
                                                    "models": [{"model": str(models[0])}]}))
    assert main(["merge", str(tmp_path / "p.yml"), str(tmp_path / "p")]) == 0


def test_nan_in_merge_input_names_model_and_tensor(tmp_path: Path, family, capsys) -> None:  # noqa: ANN001
    base, (expert, _) = family
    broken = _copy(expert, tmp_path / "broken")

    def poison(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        s["model.layers.1.mlp.up_proj.weight"][0, :3] = float("nan")
        return s

    _rewrite(broken, poison)
    code = main(["merge", str(_recipe(tmp_path, [base, broken])), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and str(broken) in err and "model.layers.1.mlp.up_proj.weight" in err and "NaN" in err


# ---------------------------------------------------------------------------------------- audit
def _audit_argv(fleet: Path, models: list[Path], tmp_path: Path, *extra: str) -> list[str]:
    return ["audit", *map(str, models), "--prompts", str(fleet / "prompts" / "unsafe.jsonl"), "--benign", "none",
            "--judge", "refusal-patterns", "--limit", "4", "--max-new-tokens", "4",
            "--cache", str(tmp_path / "cache"), *extra]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_audit_refuses_non_finite_model_before_generating(toy_fleet: Path, tmp_path: Path, value: float,
                                                          capsys) -> None:  # noqa: ANN001
    from mergegate.audit.batching import STATS

    broken = _copy(toy_fleet / "expert", tmp_path / "broken")

    def poison(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        names = sorted(n for n in s if n.endswith("mlp.down_proj.weight"))
        for n in names[:2]:
            s[n] = s[n].clone()
            s[n].view(-1)[5] = value
        return s

    _rewrite(broken, poison)
    before = STATS["model_loads"]
    code = main(_audit_argv(toy_fleet, [toy_fleet / "base", broken], tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and STATS["model_loads"] == before  # nothing was loaded or generated
    assert str(broken) in err and "2 weight tensor(s) contain NaN/Inf" in err and "down_proj.weight" in err


def test_audit_refuses_non_finite_judge(toy_fleet: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    judge = _copy(toy_fleet / "guard", tmp_path / "guard")
    _rewrite(judge, lambda s: {k: torch.full_like(v, float("nan")) if "norm" in k else v for k, v in s.items()})
    argv = _audit_argv(toy_fleet, [toy_fleet / "base"], tmp_path)
    argv[argv.index("refusal-patterns")] = str(judge)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and str(judge) in err and "NaN/Inf" in err


@pytest.mark.parametrize("damage", ["truncate", "header", "garbage"])
def test_audit_of_malformed_weights_exits_2_naming_the_file(toy_fleet: Path, tmp_path: Path, damage: str,
                                                            capsys) -> None:  # noqa: ANN001
    broken = _copy(toy_fleet / "expert", tmp_path / "broken")
    f = broken / "model.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "header":
        _raw_safetensors(f, {"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4)
    else:
        f.write_bytes(b"this is not a safetensors file at all")
    code = main(_audit_argv(toy_fleet, [broken], tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and str(f) in err and "hint:" in err


def test_finite_check_runs_once_per_weights(toy_fleet: Path, tmp_path: Path) -> None:
    from mergegate.audit.cache import AuditCache
    from mergegate.audit.models import resolve_model

    cache = AuditCache(tmp_path / "c.sqlite3")
    resolve_model(str(toy_fleet / "base"), cache)
    resolve_model(str(toy_fleet / "base"), cache)
    assert cache.counts()["finite_weights"] == 1


def test_run_with_nan_constituent_is_decision_error_exit_2(toy_fleet: Path, tmp_path: Path) -> None:
    broken = _copy(toy_fleet / "expert", tmp_path / "broken")
    _rewrite(broken, lambda s: {k: torch.full_like(v, float("nan")) if k.endswith("norm.weight") else v
                                for k, v in s.items()})
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(toy_fleet / "base"), "parameters": {"weight": 0.5}},
        {"model": str(broken), "parameters": {"weight": 0.5}}]}))
    out = tmp_path / "out"
    code = main(["run", str(recipe), "--out", str(out), "--judge", "refusal-patterns", "--benign", "none",
                 "--prompts", str(toy_fleet / "prompts" / "unsafe.jsonl"), "--limit", "4"])
    report = json.loads((out / "report.json").read_text())
    assert code == 2 and report["decision"] == "error" and report["error"]["exit_code"] == 2
    assert "norm.weight" in report["error"]["message"] and "NaN" in report["error"]["message"]
    assert not (out / "README.md").exists()


def test_pickled_weights_that_are_not_a_state_dict(tmp_path: Path) -> None:
    from mergegate.models.weight_files import load_pickled_weights

    f = tmp_path / "pytorch_model.bin"
    torch.save({"w": [1, 2, 3]}, f)
    with pytest.raises(ModelFilesError, match="not a mapping of tensor names") as exc:
        load_pickled_weights(f)
    assert exc.value.source == str(f)


def test_corrupt_index_is_named(tmp_path: Path, family) -> None:  # noqa: ANN001
    from mergegate.merging.tensor_io import ModelReader

    base, _ = family
    model = _copy(base, tmp_path / "m")
    index = model / "model.safetensors.index.json"
    for text, message in [("[" * 100_000, "corrupt"), ('{"weight_map": [1]}', "weight_map"),
                          ('{"weight_map": {"w": "../../etc/passwd"}}', "not a file of this directory")]:
        index.write_text(text)
        with pytest.raises(ModelFilesError, match=message) as exc:
            ModelReader(model)
        assert exc.value.source == str(index)


@pytest.mark.parametrize("text", ["[" * 100_000, "[1, 2]", "\udcff"])
def test_corrupt_config_json_is_named(tmp_path: Path, family, text: str, capsys) -> None:  # noqa: ANN001
    base, (expert, _) = family
    broken = _copy(expert, tmp_path / "broken")
    (broken / "config.json").write_text(text, errors="surrogateescape")
    code = main(["merge", "--dry-run", str(_recipe(tmp_path, [base, broken]))])
    err = capsys.readouterr().err
    assert code == 2 and str(broken / "config.json") in err
