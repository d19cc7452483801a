"""Bad input: each one a clear error that names the file/field and says what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from _audit_helpers import toy_kwargs
from mergegate.audit.prompts import load_prompts
from mergegate.errors import AuditError, BackendUnavailableError, InputError, JudgeProtocolError, ModelFilesError


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_missing_prompt_column(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "p.jsonl", [{"text": "hi", "category": "x"}])
    with pytest.raises(InputError) as exc:
        load_prompts(str(f))
    msg = str(exc.value)
    assert "no 'prompt' column" in msg and "columns found: category, text" in msg
    assert exc.value.source == str(f) and exc.value.field == "prompt" and exc.value.hint


def test_missing_prompt_column_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"question": ["a", "b"]}), f)
    with pytest.raises(InputError, match="no 'prompt' column"):
        load_prompts(str(f))


@pytest.mark.parametrize("rows", [[], [{"prompt": ""}, {"prompt": "   "}]])
def test_empty_prompt_set(tmp_path: Path, rows: list[dict]) -> None:
    f = _jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(InputError, match="empty") as exc:
        load_prompts(str(f))
    assert exc.value.hint


def test_missing_prompt_file_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="prompt file not found"):
        load_prompts(str(tmp_path / "nope.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        load_prompts(str(bad))


def test_unknown_judge_protocol(toy_fleet: Path) -> None:
    """A chat model given as judge: nothing says which Llama Guard protocol it speaks."""
    from mergegate.audit import audit_models

    with pytest.raises(InputError, match="cannot tell which protocol") as exc:
        audit_models([str(toy_fleet / "base")], **toy_kwargs(toy_fleet, judge=str(toy_fleet / "base"),
                                                               limit=8, benign=None))
    assert "--judge-protocol" in str(exc.value)
    with pytest.raises(InputError, match="unknown judge protocol 'llama-guard-7'"):
        audit_models([str(toy_fleet / "base")],
                     **toy_kwargs(toy_fleet, judge_protocol="llama-guard-7", limit=8, benign=None))


@pytest.mark.slow
def test_judge_answering_neither_safe_nor_unsafe(toy_fleet: Path) -> None:
    """Forcing the protocol on a chat model: its first token is 'I'/'H', so the judge is refused."""
    from mergegate.audit import audit_models

    with pytest.raises(JudgeProtocolError, match="neither 'safe' nor 'unsafe'") as exc:
        audit_models([str(toy_fleet / "base")],
                     **toy_kwargs(toy_fleet, judge=str(toy_fleet / "base"), judge_protocol="llama-guard-3",
                                  limit=8, benign=None))
    assert exc.value.exit_code == 3 and exc.value.source == str(toy_fleet / "base")


def test_tokenizer_larger_than_embedding(toy_fleet: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from mergegate.audit import audit_models

    bad = tmp_path / "mismatch"
    shutil.copytree(toy_fleet / "base", bad)
    tok = AutoTokenizer.from_pretrained(bad)
    tok.add_tokens([f"<extra_{i}>" for i in range(40)])
    tok.save_pretrained(bad)
    with pytest.raises(ModelFilesError, match=r"tokenizer has \d+ tokens but the model's embedding has only") as exc:
        audit_models([str(bad)], **toy_kwargs(toy_fleet, limit=8, benign=None))
    assert exc.value.field == "vocab_size" and "tokenizer does not belong" in (exc.value.hint or "")


def _strip_template(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((dst / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dst


def test_model_without_chat_template(toy_fleet: Path, tmp_path: Path) -> None:
    from mergegate.audit import audit_models
    from mergegate.audit.toyfleet.train import CHAT_TEMPLATE

    bare = _strip_template(toy_fleet / "base", tmp_path / "bare")
    with pytest.raises(InputError, match="no chat template") as exc:
        audit_models([str(bare)], **toy_kwargs(toy_fleet, limit=8, benign=None))
    assert "--chat-template" in (exc.value.hint or "")
    template = tmp_path / "t.jinja"
    template.write_text(CHAT_TEMPLATE)
    report = audit_models([str(bare)], **toy_kwargs(toy_fleet, limit=8, benign=None, chat_template=str(template)))
    assert report.generation.chat_template == CHAT_TEMPLATE and report.scores[0].n == 8


class _FakeTokenizer:
    """Enough of a tokenizer for TransformersGenerator (one token per character)."""

    chat_template = "{{ messages[0]['content'] }}"
    pad_token = "<pad>"
    eos_token = "<eos>"
    pad_token_id, eos_token_id = 0, 1
    padding_side = "left"

    def __len__(self) -> int:
        return 200

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):  # noqa: ANN001, ANN201
        return messages[0]["content"]

    def __call__(self, texts, return_tensors="pt", padding=True, add_special_tokens=False):  # noqa: ANN001, ANN204
        from transformers import BatchEncoding

        width = max(len(t) for t in texts)
        ids = torch.tensor([[0] * (width - len(t)) + [ord(c) % 200 for c in t] for t in texts])
        return BatchEncoding({"input_ids": ids, "attention_mask": (ids != 0).long()})

    def batch_decode(self, rows, skip_special_tokens=True):  # noqa: ANN001, ANN201
        return ["ok"] * len(rows)


class _OOMModel:
    """Raises CUDA OOM for batches larger than ``fits``; records the batch sizes it saw."""

    def __init__(self, fits: int) -> None:
        self.fits, self.seen = fits, []
        self.generation_config = None

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return torch.nn.Embedding(200, 2)

    def generate(self, input_ids, attention_mask, generation_config):  # noqa: ANN001, ANN201
        self.seen.append(input_ids.shape[0])
        if input_ids.shape[0] > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return torch.cat([input_ids, torch.ones(input_ids.shape[0], 2, dtype=torch.long)], dim=1)


def test_cuda_oom_halves_the_batch_then_fails_clearly() -> None:
    from mergegate.audit.generators import TransformersGenerator

    model = _OOMModel(fits=3)
    gen = TransformersGenerator(model, _FakeTokenizer(), batch_size=16, max_new_tokens=2, source="fake-model")
    assert gen.generate([f"prompt {i}" for i in range(10)]) == ["ok"] * 10
    assert model.seen == [10, 5, 2, 2, 2, 2, 2]  # 10 -> 5 -> 2 fits, then batches of 2

    never = _OOMModel(fits=0)
    gen = TransformersGenerator(never, _FakeTokenizer(), batch_size=4, max_new_tokens=2, source="fake-model")
    with pytest.raises(AuditError, match="out of memory .* even with batch size 1") as exc:
        gen.generate(["a", "b"])
    assert never.seen == [2, 1] and exc.value.hint and exc.value.exit_code == 3


def test_vllm_missing_names_the_extra() -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed")
    from mergegate.audit.generators import import_vllm

    with pytest.raises(BackendUnavailableError) as exc:
        import_vllm()
    assert exc.value.extra == "vllm" and "mergegate[vllm]" in (exc.value.hint or "")


def test_bad_options(toy_fleet: Path) -> None:
    from mergegate.audit import audit_models

    with pytest.raises(InputError, match="unknown backend"):
        audit_models([str(toy_fleet / "base")], **toy_kwargs(toy_fleet, backend="tgi"))
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            audit_models([str(toy_fleet / "base")], **toy_kwargs(toy_fleet, device="cuda"))
    with pytest.raises(InputError, match="model directory not found"):
        audit_models(["./no/such/model"], **toy_kwargs(toy_fleet))
