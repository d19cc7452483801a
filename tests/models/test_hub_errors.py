"""The network-error layer: every failed Hub access is exit 2 naming what, why and the fix.

Real huggingface_hub errors where they can be provoked without a network (a closed localhost
port, offline mode, an empty cache, an invalid id); HTTP answers (gated, missing, 401, 503) are
built from huggingface_hub's own exception classes.
"""

from __future__ import annotations

import logging
import socket
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from mergegate.errors import InputError, ModelFilesError
from mergegate.models import ModelReference, resolve_model
from mergegate.models.hub_errors import HubResource, classify, hub_access, translate

BEAVERTAILS = dict(what="the BeaverTails prompt set (PKU-Alignment/BeaverTails)", why="--prompts beavertails",
                   repo_id="PKU-Alignment/BeaverTails", repo_type="dataset", field="prompts",
                   fixes=["pass --prompts FILE"])
TOKEN = "hf_FakeTokenForTests0123456789abcdef"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> str:
    """huggingface_hub online, pointed at a closed localhost port; no waits between its retries."""
    from huggingface_hub import constants
    import huggingface_hub.utils._http as http

    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(http, "time", SimpleNamespace(sleep=lambda s: None, time=__import__("time").time))
    return url


def http_error(cls: type, status: int, message: str = "") -> Exception:
    response = SimpleNamespace(status_code=status, headers={}, request=None)
    return cls(message or f"{status} error", response=response)


def raised(fn) -> BaseException:  # noqa: ANN001
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no exception")


def test_real_errors_are_classified(unreachable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi, constants, snapshot_download

    exc = raised(lambda: HfApi().model_info("org/model"))
    assert classify(exc).kind == "unreachable"
    assert classify(raised(lambda: HfApi().model_info("not a valid id!"))).kind == "bad_id"
    exc = raised(lambda: snapshot_download("org/model", cache_dir=tmp_path))  # a cache miss after ConnectError
    assert type(exc).__name__ == "LocalEntryNotFoundError" and classify(exc).kind == "unreachable"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert classify(raised(lambda: HfApi().model_info("org/model"))).kind == "offline"
    assert classify(raised(lambda: snapshot_download("org/model", cache_dir=tmp_path))).kind == "offline"


def test_http_answers_are_classified() -> None:
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    assert classify(http_error(GatedRepoError, 403)).kind == "gated"
    assert classify(http_error(RepositoryNotFoundError, 404)).kind == "not_found"
    assert classify(http_error(RevisionNotFoundError, 404)).kind == "revision"
    assert classify(http_error(HfHubHTTPError, 401)).kind == "unauthorized"
    failure = classify(http_error(HfHubHTTPError, 503))
    assert failure.kind == "unreachable" and failure.status == 503
    assert classify(http_error(HfHubHTTPError, 400)) is None  # a bad request is not the network's fault


def test_datasets_errors_are_classified(monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets.exceptions import DatasetNotFoundError

    gated = DatasetNotFoundError("Dataset 'org/x' is a gated dataset on the Hub. You must be authenticated")
    assert classify(gated).kind == "gated"
    assert classify(DatasetNotFoundError("Dataset 'org/x' doesn't exist on the Hub")).kind == "not_found"
    try:  # what datasets raises when it cannot reach the Hub (or is offline) and has no cached copy
        try:
            raise FileNotFoundError("Dataset org/x is not cached")
        except FileNotFoundError:
            raise ConnectionError("Couldn't reach 'org/x' on the Hub (LocalEntryNotFoundError)") from None
    except ConnectionError as exc:
        assert classify(exc).kind == "offline"  # HF_HUB_OFFLINE=1 (the test default)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        assert classify(exc).kind == "unreachable"


@pytest.mark.parametrize("exc", [ValueError("Unknown split 'tset'"), RuntimeError("bug"), KeyError("prompt"),
                                 tarfile.ReadError("not a tar"), FileNotFoundError("prompts.jsonl")])
def test_other_errors_are_no_hub_failures(exc: Exception) -> None:
    assert classify(exc) is None
    with pytest.raises(type(exc)):  # and hub_access lets them through unchanged (bugs stay bugs)
        with hub_access(**BEAVERTAILS):
            raise exc


def test_offline_message_never_says_accept_the_terms(tmp_path: Path) -> None:
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises(InputError) as info:
        with hub_access(**BEAVERTAILS):
            raise LocalEntryNotFoundError("not in the cache")
    err = info.value
    assert err.exit_code == 2 and err.source == "PKU-Alignment/BeaverTails" and err.field == "prompts"
    text = err.render()
    assert "the BeaverTails prompt set (PKU-Alignment/BeaverTails) for --prompts beavertails" in text
    assert "HF_HUB_OFFLINE=1 is set" in text and "does not hold it" in text
    assert "pass --prompts FILE" in text and "terms" not in text and "HF_TOKEN" not in text


def test_unreachable_message_suggests_the_cache(unreachable: str) -> None:
    from huggingface_hub import HfApi

    with pytest.raises(InputError) as info:
        with hub_access(**BEAVERTAILS):
            HfApi().dataset_info("PKU-Alignment/BeaverTails")
    text = info.value.render()
    assert f"the Hugging Face Hub ({unreachable}) could not be reached (ConnectError" in text
    assert "pass --prompts FILE" in text and "set HF_HUB_OFFLINE=1 to use the cache" in text
    assert "HF_ENDPOINT" in text


def test_gated_message_names_the_terms_page_and_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import GatedRepoError

    def gated_text() -> str:
        with pytest.raises(InputError) as info:
            with hub_access("the model 'meta-llama/Llama-Guard-3-8B'", why="the judge (--judge)",
                            repo_id="meta-llama/Llama-Guard-3-8B", fixes=["pass --judge DIR"]):
                raise http_error(GatedRepoError, 403, "Access to model meta-llama/Llama-Guard-3-8B is restricted")
        return info.value.render()

    text = gated_text()
    assert "gated and no Hugging Face token is set" in text
    assert "accept its terms at https://huggingface.co/meta-llama/Llama-Guard-3-8B" in text and "HF_TOKEN" in text
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    text = gated_text()
    assert "the token's account has no access" in text and TOKEN not in text


def test_dataset_pages_and_missing_repos() -> None:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    err = translate(http_error(GatedRepoError, 403), HubResource(**BEAVERTAILS))
    assert "https://huggingface.co/datasets/PKU-Alignment/BeaverTails" in err.render()
    with pytest.raises(InputError, match="the Hub has no model 'org/typo' .or it is private.; no Hugging Face "
                                         "token is set"):
        with hub_access("the model 'org/typo'", why="the recipe", repo_id="org/typo"):
            raise http_error(RepositoryNotFoundError, 401)


def test_upload_without_token_says_so(unreachable: str, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError) as info:
        with hub_access("DIR to the Hub repository 'org/merge'", why="`mergegate push`", repo_id="org/merge",
                        field="repo_id", write=True):
            HfApi().upload_folder(repo_id="org/merge", folder_path=str(tmp_path))
    text = info.value.render()
    assert "cannot upload DIR to the Hub repository 'org/merge'" in text and "could not be reached" in text
    assert "no Hugging Face token is set" in text and "write access" in text
    assert "HF_HUB_OFFLINE=1 to use the cache" not in text  # a cache cannot upload
    with pytest.raises(InputError, match="not a valid Hub repository id"):
        with hub_access("DIR", why="`mergegate push`", repo_id="not a repo!", write=True):
            HfApi().upload_folder(repo_id="not a repo!", folder_path=str(tmp_path))


def test_input_errors_inside_gain_what_and_why_once() -> None:
    with pytest.raises(ModelFilesError) as info:  # the class (and so the exit code) is kept
        with hub_access("outer", why="outer reason", fixes=["outer fix"]):
            with hub_access("the model 'org/m'", why="the recipe", repo_id="org/m", fixes=["inner fix"]):
                raise ModelFilesError("no safetensors weight files", hint="convert it")
    err = info.value
    assert err.message == "while fetching the model 'org/m' for the recipe: no safetensors weight files"
    assert err.hint == "convert it; inner fix" and err.source == "org/m"


def test_resolver_offline_names_the_model_and_why(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        resolve_model(ModelReference.parse("meta-llama/Llama-Guard-3-8B"), why="the judge (--judge)",
                      fixes=["pass --judge DIR"], cache_dir=tmp_path)
    text = info.value.render()
    assert "cannot fetch the model 'meta-llama/Llama-Guard-3-8B' for the judge (--judge)" in text
    assert "HF_HUB_OFFLINE=1 is set" in text and "pass --judge DIR" in text


def test_resolver_unreachable(unreachable: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot fetch the model 'org/model@main' for the recipe or the "
                                         r"command line: the Hugging Face Hub .* could not be reached"):
        resolve_model(ModelReference.parse("org/model@main"), cache_dir=tmp_path)


def test_prompt_sets_offline_name_the_set_and_the_flag() -> None:
    from mergegate.audit.prompts import load_prompts

    with pytest.raises(InputError) as info:
        load_prompts("xstest", benign=True)
    text = info.value.render()
    assert "the XSTest benign prompt set (walledai/XSTest) for --benign xstest (the default)" in text
    assert "pass --benign FILE" in text and "--benign none" in text and "terms" not in text


def test_unreadable_hub_license_is_unknown_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    from mergegate.gate.licenses import read_hub_license

    with caplog.at_level(logging.WARNING, logger="mergegate.gate.licenses"):
        assert read_hub_license("org/not-cached") is None
    assert "the model card (README.md) of 'org/not-cached' for the merge's license" in caplog.text
    assert "HF_HUB_OFFLINE=1 is set" in caplog.text


def test_a_caller_can_say_why_for_a_loader_it_reuses() -> None:
    """The weighting's --safety-prompts goes through the audit's prompt loader: the error names
    --safety-prompts and its alternative, not the loader's --prompts."""
    from mergegate.weighting.data import load_safety_prompts

    with pytest.raises(InputError) as info:
        load_safety_prompts("hub:org/unsafe-prompts", k=4, seed=0)
    text = info.value.render()
    assert "the Hub dataset 'org/unsafe-prompts' for --safety-prompts hub:org/unsafe-prompts" in text
    assert "pass --safety-prompts FILE" in text and "--prompts FILE" not in text
    assert info.value.field == "safety_prompts"


@pytest.mark.parametrize("env", ["unreachable", "offline"])
def test_lora_adapter_and_tokenizer_source_downloads_name_what_and_why(env: str, unreachable: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe's other Hub fetches (a model+adapter LoRA, a tokenizer_source that is no merged
    model) go through the same layer: exit 2 naming the repository, the recipe field and the fix."""
    from huggingface_hub import constants

    from mergegate.merging.lora import resolve_adapter
    from mergegate.models.reference import AdapterReference
    from mergegate.models.resolver import resolve_tokenizer_files

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    if env == "offline":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError) as info:
        resolve_adapter(AdapterReference.parse("org/chat-lora"))
    lora = info.value
    with pytest.raises(InputError) as info:
        resolve_tokenizer_files(ModelReference.parse("org/tokenizer@v1"))
    tok = info.value
    for err, what, why, field in ((lora, "the LoRA adapter 'org/chat-lora'", "a model+adapter reference", "lora"),
                                  (tok, "the tokenizer source 'org/tokenizer@v1'", "tokenizer_source",
                                   "tokenizer_source")):
        text = err.render()
        assert err.exit_code == 2 and err.field == field, text
        assert what in text and why in text, text
        if env == "offline":
            assert "HF_HUB_OFFLINE=1 is set" in text and "terms" not in text, text
        else:
            assert "could not be reached" in text and unreachable in text, text
