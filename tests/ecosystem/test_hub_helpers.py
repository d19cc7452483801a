"""huggingface_hub's and PyGithub's helpers instead of hand-written code.

- card front matter through ``metadata_load``: a card with a BOM, a leading blank line or CRLF line
  ends declares its license (a hand parser read "license unknown");
- ``HF_HUB_OFFLINE`` as huggingface_hub sees it; cached snapshots through ``local_files_only``;
- the token through ``get_token``; PyGithub's retries on.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mergegate.batch.lint import card_metadata
from mergegate.errors import InputError
from mergegate.gate.licenses import read_local_license

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "mergegate").rglob("*.py"))


@pytest.mark.parametrize("prefix, newline", [("\ufeff", "\n"), ("\n", "\n"), ("", "\r\n"), ("\n\n", "\r\n")],
                         ids=["bom", "leading-newline", "crlf", "blank-lines-crlf"])
def test_card_front_matter_is_read_like_the_hub_reads_it(tmp_path: Path, prefix: str, newline: str) -> None:
    text = prefix + newline.join(["---", "license: MIT", "base_model:", "- org/base", "---", "# card", ""])
    (tmp_path / "README.md").write_bytes(text.encode("utf-8"))
    assert read_local_license(tmp_path).license == "mit"
    assert card_metadata(tmp_path / "README.md") == {"license": "MIT", "base_model": ["org/base"]}


@pytest.mark.parametrize("content", [b"---\nlicense: [unclosed\n---\n", b"---\n- a list\n---\n", b"\xff\xfe\x00binary",
                                     b"no front matter"])
def test_unreadable_front_matter_declares_nothing(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "README.md").write_bytes(content)
    assert card_metadata(tmp_path / "README.md") == {}
    assert read_local_license(tmp_path) is None


def _code(path: Path) -> str:
    """A module's source without comments and docstrings' prose mattering: we grep code lines."""
    return "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))


def test_no_hand_written_front_matter_parser() -> None:
    pattern = re.compile(r"""startswith\(\s*["']---|split\(\s*["']\\n---|["']---["']\s*\)""")
    offenders = [p.relative_to(ROOT).as_posix() for p in SOURCES if pattern.search(_code(p))]
    assert offenders == []


def test_no_hand_parsed_hf_hub_offline() -> None:
    pattern = re.compile(r"""(environ\.get|getenv|environ\[)\(?\s*["']HF_HUB_OFFLINE|["']HF_HUB_OFFLINE["']\s+in\s+os\.environ""")
    offenders = [p.relative_to(ROOT).as_posix() for p in SOURCES if pattern.search(_code(p))]
    assert offenders == []


def test_no_hand_read_hf_cache_layout_or_token_file() -> None:
    # a token file joined by hand: `... / "token"` or `os.path.join(..., "token")` (a bare "token"
    # string elsewhere, e.g. a tuple of recipe keys, is not one); huggingface_hub's own
    # `constants.HF_TOKEN_PATH` may be consulted (redaction checks the file exists before paying for
    # the import of get_token), never rebuilt
    pattern = re.compile(r"""/\s*["'](refs|snapshots|blobs|token)["']|["']models--["']|(?<!constants\.)HF_TOKEN_PATH|"""
                         r"""join\([^()]*["']token["']\)""")
    offenders = [p.relative_to(ROOT).as_posix() for p in SOURCES if pattern.search(_code(p))]
    assert offenders == []


def _cache_repo(cache: Path, repo_id: str, sha: str, files: dict[str, str], refs: dict[str, str]) -> None:
    """Lay out a repo in the HF cache the way huggingface_hub writes it (test data only)."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    for ref, target in refs.items():
        (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(target)
    for name, text in files.items():
        path = folder / "snapshots" / sha / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_offline_pin_goes_through_huggingface_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from mergegate.batch import hub

    sha = "1" * 40
    _cache_repo(tmp_path, "org/merge", sha, {"README.md": "---\nlicense: mit\n---\n", "sub/config.json": "{}"},
                {"main": sha, "v1": sha})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.offline()
    for revision in (None, "v1", sha):
        pinned = hub.pin("org/merge", revision)
        assert pinned.sha == sha and pinned.files == ["README.md", "sub/config.json"]
    with pytest.raises(InputError, match="not in the local Hugging Face cache"):
        hub.pin("org/absent")
    with pytest.raises(InputError, match="not in the local Hugging Face cache"):
        hub.pin("org/merge", "no-such-branch")


def test_hub_offline_follows_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from mergegate.batch import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at import by huggingface_hub, as by every HF library
    assert hub.offline() is False
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.offline() is True


def test_redaction_knows_the_token_huggingface_hub_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from mergegate.redact import redact

    token_file = tmp_path / "token"
    token_file.write_text("hf_StoredByLogin0123456789abcdefXYZ\n")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    assert redact("token=hf_StoredByLogin0123456789abcdefXYZ!") == "token=***!"
    custom = "custom-login-token-not-hf-shaped"
    token_file.write_text(custom)
    assert custom not in redact(f"a {custom} b")


def test_github_client_retries_a_server_error() -> None:
    from mergegate.gate import github as gh

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            seen.append(self.path)
            status, body = (502, {"message": "bad gateway"}) if len(seen) == 1 else (
                200, {"id": 1, "name": "r", "full_name": "o/r", "url": f"{url}/repos/o/r"})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        repo = gh._client("ghs_FakeToken0123456789abcdef", url).get_repo("o/r")  # noqa: SLF001
        assert repo.full_name == "o/r" and seen == ["/repos/o/r", "/repos/o/r"]
    finally:
        server.shutdown()
        server.server_close()
    retry = gh.client_retry()
    assert retry.total == 3 and {403, 429, 502} <= set(retry.status_forcelist)
