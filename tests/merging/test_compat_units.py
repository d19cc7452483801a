"""Where mergekit 0.1.5 is lenient, mergegate is too: ignored keys (named), the modules: form,
model+lora references, named chat templates, tokenizer sources. Fast checks; the end-to-end
comparison with mergekit is tests/merging/test_compat_corpus.py."""

from __future__ import annotations

import importlib.resources
import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from compat_helpers import make_compat_family, write_lora
from merge_helpers import load_dir

from mergegate.cli.main import main
from mergegate.errors import ConfigError, InputError, ModelFilesError
from mergegate.merging import plan_merge, run_merge
from mergegate.merging.chat_templates import NAMED, TemplateKind, classify
from mergegate.merging.config import AdapterReference, ModelReference, load_merge_config


@pytest.fixture(scope="module")
def fam(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_compat_family(tmp_path_factory.mktemp("compat-units"))


# --- ignored keys --------------------------------------------------------------------------------

def test_unknown_keys_are_ignored_and_each_is_named(caplog: pytest.LogCaptureFixture) -> None:
    config, _ = load_merge_config({
        "merge_method": "ties", "base_model": "org/base", "int8_mask": True, "tokenzer_source": "union",
        "align_weights": True,
        "models": [{"model": "org/a", "paramters": {"weight": 1}, "parameters": {
            "weight": [{"filter": "mlp", "value": 0.5, "note": "x"}, {"value": 1}], "density": 0.5}}],
        "slices": None, "tokenizer": None})
    notes = "\n".join(config.compat_notes)
    assert "'int8_mask': unknown field, ignored" in notes and "indent it under 'parameters'" in notes
    assert "'tokenzer_source'" in notes and "did you mean 'tokenizer_source'?" in notes
    assert "'align_weights'" in notes
    assert "'models[0].paramters'" in notes and "did you mean 'parameters'?" in notes
    assert "'models[0].parameters.weight[0].note'" in notes
    assert config.tokenizer_source is None and config.parameters is None  # int8_mask did not land anywhere
    assert all(n.split(":")[0] in caplog.text for n in config.compat_notes)


def test_modules_default_is_the_plain_recipe_with_a_module_scope(fam: dict[str, Path]) -> None:
    base, e1, e2 = (str(fam[k]) for k in ("base", "e1", "e2"))
    recipe = {"merge_method": "task_arithmetic", "base_model": base, "parameters": {"weight": 0.5},
              "modules": {"default": {"models": [{"model": e1}, {"model": e2, "parameters": {"weight": 0.9}}],
                                      "parameters": {"weight": [{"filter": "mlp", "value": 0.2}]}}}}
    config, _ = load_merge_config(recipe)
    assert [str(m.model) for m in config.models or []] == [e1, e2] and config.slices is None
    plan = plan_merge(config)
    weights = {t.out.name: [p.get("weight") for p in t.per_input] for t in plan.tasks}
    # module scope first (mlp: 0.2), then falls through to the top level (0.5); the model's own wins
    assert weights["model.layers.0.mlp.up_proj.weight"][:2] == [0.2, 0.9]
    assert weights["model.layers.0.self_attn.q_proj.weight"][:2] == [0.5, 0.9]
    again, _ = load_merge_config(config.to_yaml())  # written back in the modules: form
    assert again.module_parameters == config.module_parameters and "modules:" in config.to_yaml()


@pytest.mark.parametrize("text, path, revision, lora", [
    ("org/m", "org/m", None, None),
    ("org/m@abc", "org/m", "abc", None),
    ("org/m@abc+org/lora@def", "org/m", "abc", AdapterReference(path="org/lora", revision="def")),
    ({"model": {"path": "org/m", "revision": "r"}, "lora": {"path": "org/l"}}, "org/m", "r",
     AdapterReference(path="org/l")),
])
def test_model_reference_forms(text: object, path: str, revision: str | None, lora: AdapterReference | None) -> None:
    ref = ModelReference.parse(text)
    assert (ref.path, ref.revision, ref.lora) == (path, revision, lora)
    assert ModelReference.parse(str(ref)) == ref


def test_override_architecture_round_trips() -> None:
    config, _ = load_merge_config({"merge_method": "linear", "models": [
        {"model": {"model": "org/m", "override_architecture": "MistralForCausalLM"}, "parameters": {"weight": 1}}]})
    ref = (config.models or [])[0].model
    assert ref.override_architecture == "MistralForCausalLM"
    assert load_merge_config(config.to_yaml())[0].models[0].model == ref  # type: ignore[index]


@pytest.mark.parametrize("source, expected", [("union", "union"), ("base", "base"),
                                              ("model:org/tok", ModelReference(path="org/tok")),
                                              ("org/tok@v2", ModelReference(path="org/tok", revision="v2"))])
def test_tokenizer_sources(source: str, expected: object) -> None:
    plain, _ = load_merge_config({"merge_method": "linear", "models": [{"model": "a/b"}], "tokenizer_source": source})
    nested, _ = load_merge_config({"merge_method": "linear", "models": [{"model": "a/b"}],
                                   "tokenizer": {"source": source}})
    assert plain.tokenizer_choice == nested.tokenizer_choice == expected
    assert ("legacy 'model:' prefix" in " ".join(plain.compat_notes)) == source.startswith("model:")


# --- chat templates ------------------------------------------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "Hi "}],
    [{"role": "system", "content": " Be nice. "}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": " yo\n"}],
    [{"role": "system", "content": "s1"}, {"role": "system", "content": "s2 "}, {"role": "user", "content": "q"},
     {"role": "user_context", "content": "ctx"}, {"role": "assistant", "content": "a"},
     {"role": "user", "content": " q2 "}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],  # mistral refuses
    [{"role": "tool", "content": "t"}],
    [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}],
]


def _render(template: str, conversation: list[dict], generation_prompt: bool, bos: str | None) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        out, _ = render_jinja_template(conversations=[conversation], chat_template=template,
                                       add_generation_prompt=generation_prompt, bos_token=bos, eos_token="</s>")
        return out[0]
    except Exception as exc:  # noqa: BLE001 - the error is part of the behaviour compared
        return f"error: {type(exc).__name__}: {exc}"


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_templates_render_like_mergekits(name: str) -> None:
    """mergegate's own template text renders exactly what mergekit's file does, whitespace and
    errors included, for every conversation shape, with and without a generation prompt."""
    from mergekit._data import chat_templates

    theirs = importlib.resources.files(chat_templates).joinpath(f"{name}.jinja").read_text()
    for conversation, prompt, bos in itertools.product(CONVERSATIONS, (False, True), ("<s>", "<|begin_of_text|>")):
        assert _render(NAMED[name], conversation, prompt, bos) == _render(theirs, conversation, prompt, bos), \
            (name, conversation, prompt)


@pytest.mark.parametrize("value, kind", [("auto", TemplateKind.AUTO), ("llama3", TemplateKind.NAMED),
                                         ("{% for m in messages %}{{ m.content }}{% endfor %}", TemplateKind.LITERAL)])
def test_template_kinds(value: str, kind: TemplateKind) -> None:
    assert classify(value) is kind


@pytest.mark.parametrize("value", ["vicuna", "llama-3", "{{ x }}", "a much longer plain text without braces"])
def test_invalid_templates_are_refused_before_merging(value: str) -> None:
    with pytest.raises(ConfigError, match="invalid chat template") as exc:
        load_merge_config({"merge_method": "linear", "models": [{"model": "a/b"}], "chat_template": value})
    assert exc.value.field == "chat_template"


def test_named_template_is_written_into_the_tokenizer(fam: dict[str, Path], tmp_path: Path) -> None:
    recipe = {"merge_method": "linear", "chat_template": "mistral",
              "models": [{"model": str(fam["e1"]), "parameters": {"weight": 1.0}}]}
    out = run_merge(recipe, tmp_path / "out").out_dir
    assert (out / "chat_template.jinja").read_text() == NAMED["mistral"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<s> [INST] hi [/INST]"


# --- LoRA ---------------------------------------------------------------------------------------------

def _lora_recipe(base: Path, adapter: Path) -> dict:
    return {"merge_method": "linear", "dtype": "bfloat16",
            "models": [{"model": f"{base}+{adapter}", "parameters": {"weight": 1.0}}]}


def test_pickled_adapter_only_with_allow_pickle(fam: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelFilesError, match="only a pickled adapter_model.bin") as exc:
        plan_merge(_lora_recipe(fam["base"], fam["lora_bin"]))
    assert "--allow-pickle" in (exc.value.hint or "")
    same = tmp_path / "as-safetensors"
    write_lora(same, fam["base"], seed=6)  # the same tensors as lora_bin, as safetensors
    pickled = load_dir(run_merge(_lora_recipe(fam["base"], fam["lora_bin"]), tmp_path / "a", allow_pickle=True).out_dir)
    safe = load_dir(run_merge(_lora_recipe(fam["base"], same), tmp_path / "b").out_dir)
    assert all(torch.equal(pickled[k], safe[k]) for k in safe)
    base = load_dir(fam["base"])
    assert not torch.equal(safe["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(safe["model.layers.0.mlp.up_proj.weight"], base["model.layers.0.mlp.up_proj.weight"])


def _broken_adapter(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    shutil.copytree(src, dst)
    edit(dst)
    return dst


def _set_config(**values: object):  # type: ignore[no-untyped-def]
    def edit(path: Path) -> None:
        cfg = json.loads((path / "adapter_config.json").read_text())
        cfg.update(values)
        (path / "adapter_config.json").write_text(json.dumps(cfg))
    return edit


def _rename_tensor(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(path / "adapter_model.safetensors"))
    for key in [k for k in state if ".layers.0.self_attn.q_proj.lora_" in k]:
        state[key.replace("q_proj", "qq_proj")] = state.pop(key)
    save_file(state, str(path / "adapter_model.safetensors"))


@pytest.mark.parametrize("edit, message", [
    (lambda p: (p / "adapter_config.json").unlink(), "no adapter_config.json"),
    (_set_config(peft_type="IA3"), "peft_type 'IA3'"),
    (_set_config(use_dora=True), "DoRA"),
    (_set_config(r=0), "'r' must be a positive number"),
    (_rename_tensor, "adapter targets 'model.layers.0.self_attn.qq_proj'"),
    (lambda p: (p / "adapter_model.safetensors").write_bytes(b"\x00" * 4), "cannot read adapter_model.safetensors"),
])
def test_bad_adapters_are_refused_before_merging(fam: dict[str, Path], tmp_path: Path, edit, message: str) -> None:
    adapter = _broken_adapter(fam["lora"], tmp_path / "adapter", edit)
    with pytest.raises(ModelFilesError, match=message):
        run_merge(_lora_recipe(fam["base"], adapter), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_adapter_is_bad_input(fam: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="LoRA adapter"):
        plan_merge(_lora_recipe(fam["base"], tmp_path / "no-such-adapter"))


def test_hub_adapter_is_pinned_and_recorded(fam: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--chat-lora"
    shutil.copytree(fam["lora"], repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    recipe = _lora_recipe(fam["base"], Path("org/chat-lora"))
    result = run_merge(recipe, tmp_path / "out")
    record = json.loads((result.out_dir / "mergegate_provenance.json").read_text())
    lora = record["inputs"][0]["lora"]
    assert (lora["id"], lora["revision"], lora["source"]) == ("org/chat-lora", sha, "hub")
    assert set(lora["files"]) == {"adapter_model.safetensors", "adapter_config.json"}
    local = load_dir(run_merge(_lora_recipe(fam["base"], fam["lora"]), tmp_path / "local").out_dir)
    assert all(torch.equal(local[k], v) for k, v in load_dir(result.out_dir).items())


# --- tokenizers ----------------------------------------------------------------------------------

def test_union_gives_each_input_the_rows_of_the_tokens_it_lacks(fam: dict[str, Path], tmp_path: Path) -> None:
    """With weight 1 on the base, the merged rows of the chat tokens are the chat model's own: the
    base took them from the one input that has them."""
    recipe = {"merge_method": "linear", "base_model": str(fam["base"]), "tokenizer_source": "union",
              "dtype": "float32", "models": [{"model": str(fam["base"]), "parameters": {"weight": 1.0}},
                                             {"model": str(fam["chat"]), "parameters": {"weight": 0.0}}]}
    out = run_merge(recipe, tmp_path / "out").out_dir
    vocab = json.loads((out / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in vocab}
    merged, chat, base = load_dir(out), load_dir(fam["chat"]), load_dir(fam["base"])
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert merged[name].shape[0] == 99
        assert torch.equal(merged[name][:97], base[name].float())
        for token in ("<|im_start|>", "<|im_end|>"):
            assert torch.equal(merged[name][ids[token]], chat[name][ids[token]].float())
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 99


def test_tokenizer_source_outside_the_recipe(fam: dict[str, Path], tmp_path: Path) -> None:
    tokenizer_only = tmp_path / "tok"
    tokenizer_only.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(fam["chat"] / name, tokenizer_only / name)
    recipe = {"merge_method": "linear", "base_model": str(fam["base"]), "tokenizer_source": str(tokenizer_only),
              "models": [{"model": str(fam["base"]), "parameters": {"weight": 0.5}},
                         {"model": str(fam["e1"]), "parameters": {"weight": 0.5}}]}
    out = run_merge(recipe, tmp_path / "out").out_dir
    assert (out / "tokenizer.json").read_bytes() != (fam["base"] / "tokenizer.json").read_bytes()
    assert load_dir(out)["model.embed_tokens.weight"].shape[0] == 99


def test_tokenizer_source_without_tokenizer_files_is_refused_before_merging(fam: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(fam["e1"], bare)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    recipe = {"merge_method": "linear", "base_model": str(bare), "tokenizer_source": "union",
              "models": [{"model": str(bare), "parameters": {"weight": 0.5}},
                         {"model": str(fam["chat"]), "parameters": {"weight": 0.5}}]}
    with pytest.raises(ModelFilesError, match="cannot load the tokenizer") as exc:
        run_merge(recipe, tmp_path / "out")
    assert str(bare) in exc.value.render() and not (tmp_path / "out").exists()


def test_dry_run_names_the_tokenizer_and_what_was_read_leniently(fam: dict[str, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yml"
    recipe.write_text(yaml.safe_dump({
        "merge_method": "linear", "base_model": str(fam["base"]), "tokenizer_source": f"model:{fam['chat']}",
        "int8_mask": True, "models": [{"model": str(fam["base"]), "parameters": {"weight": 0.5}},
                                      {"model": str(fam["tool"]), "parameters": {"weight": 0.5}}]}))
    assert main(["merge", str(recipe), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"tokenizer: {fam['chat']}, 99 tokens (2 beyond the base: '<|im_start|>', '<|im_end|>')" in out
    assert "'int8_mask': unknown field, ignored" in out and "legacy 'model:' prefix" in out


def test_embedding_shorter_than_its_tokenizer_is_refused_when_planning(fam: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    short = tmp_path / "short"
    shutil.copytree(fam["chat"], short)
    state = load_file(str(short / "model.safetensors"))
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        state[name] = state[name][:97].clone()
    save_file(state, str(short / "model.safetensors"), metadata={"format": "pt"})
    recipe = {"merge_method": "linear", "base_model": str(fam["base"]), "tokenizer_source": "union",
              "models": [{"model": str(fam["base"]), "parameters": {"weight": 0.5}},
                         {"model": str(short), "parameters": {"weight": 0.5}}]}
    with pytest.raises(ModelFilesError, match="has 97 rows but its tokenizer has token id 98"):
        plan_merge(recipe)
