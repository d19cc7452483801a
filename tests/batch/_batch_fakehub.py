"""A fake Hugging Face Hub for the batch tests.

* :func:`build_fake_hub` writes a local HF cache (``models--org--name/snapshots/<sha>/…`` +
  ``refs/main``) holding the toy fleet's ``base``/``expert`` as ``toy/base``/``toy/expert`` and
  several toy merges of them, rebuilt with ``run_merge`` at different expert weights, each with its
  ``mergekit_config.yml`` (Hub ids) and a README card;
* :class:`FakeHubServer` serves that cache over HTTP on 127.0.0.1 (stdlib ``http.server`` in a
  thread): the listing ``/api/models?filter=…&sort=downloads&limit=N``, ``model_info``
  (``/api/models/ID[/revision/REV]``), the tree listing ``snapshot_download`` asks for and
  ``/ID/resolve/REV/FILE`` downloads. Every request path is recorded in ``requests``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

TAMPERED_TENSOR = "model.layers.1.mlp.down_proj.weight"
TOY_LIMIT = 40
TOY_MAX_NEW_TOKENS = 48


def toy_audit_args(fleet: Path) -> list[str]:
    """CLI audit options for the toy fleet with its own guard (small and fast)."""
    return ["--prompts", str(fleet / "prompts" / "unsafe.jsonl"), "--benign", str(fleet / "prompts" / "benign.jsonl"),
            "--judge", str(fleet / "guard"), "--limit", str(TOY_LIMIT), "--max-new-tokens", str(TOY_MAX_NEW_TOKENS),
            "--batch-size", "64"]


def fake_sha(repo_id: str, salt: str = "") -> str:
    return hashlib.sha1(f"{repo_id}:{salt}".encode()).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    sha: str
    downloads: int
    tags: list[str] = field(default_factory=list)

    def folder(self, hub: Path) -> Path:
        return hub / ("models--" + self.repo_id.replace("/", "--"))

    def snapshot(self, hub: Path) -> Path:
        return self.folder(hub) / "snapshots" / self.sha


@dataclass
class FakeHub:
    hub: Path  # the HF_HUB_CACHE directory
    repos: dict[str, FakeRepo]


def card(meta: dict[str, Any], body: str) -> str:
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body


def _publish(hub: Path, repo: FakeRepo, files: dict[str, Path | str | bytes]) -> None:
    snap = repo.snapshot(hub)
    if snap.exists():
        shutil.rmtree(snap)
    snap.mkdir(parents=True)
    for name, content in files.items():
        target = snap / name
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    (repo.folder(hub) / "refs").mkdir(parents=True, exist_ok=True)
    (repo.folder(hub) / "refs" / "main").write_text(repo.sha)


def _model_files(directory: Path) -> dict[str, Path | str | bytes]:
    keep = {}
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.name not in ("README.md", "mergegate_provenance.json", "mergekit_config.yml"):
            keep[p.name] = p
    return keep


def _tamper(weights: Path) -> bytes:
    """The same file with one tensor nudged (what a re-upload of other weights looks like)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    tensors[TAMPERED_TENSOR] = tensors[TAMPERED_TENSOR] + 0.01
    tmp = weights.with_name("tampered.safetensors")
    save_file(tensors, str(tmp))
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def _recipe(method: str, expert_weight: float) -> tuple[dict[str, Any], str]:
    """(recipe with placeholder model names, the YAML as published with Hub ids)."""
    if method == "slerp":
        text = ("slices:\n- sources:\n  - model: toy/base\n    layer_range: [0, 2]\n"
                "  - model: toy/expert\n    layer_range: [0, 2]\nmerge_method: slerp\nbase_model: toy/base\n"
                f"parameters:\n  t: {expert_weight}\ndtype: float32\n")
    else:
        text = ("models:\n- model: toy/base\n  parameters:\n"
                f"    weight: {round(1 - expert_weight, 3)}\n- model: toy/expert\n  parameters:\n"
                f"    weight: {expert_weight}\nmerge_method: linear\ndtype: float32\n")
    return yaml.safe_load(text), text


def _localise(data: Any, fleet: Path) -> Any:
    if isinstance(data, dict):
        return {k: (str(fleet / v.split("/", 1)[1]) if k in ("model", "base_model") and isinstance(v, str)
                    and v.startswith("toy/") else _localise(v, fleet)) for k, v in data.items()}
    if isinstance(data, list):
        return [_localise(v, fleet) for v in data]
    return data


def merge_card(name: str, recipe_text: str, meta: dict[str, Any], *, with_yaml: bool = True) -> str:
    body = (f"# {name}\n\nThis is a merge of pre-trained language models created using "
            "[mergekit](https://github.com/cg123/mergekit).\n\n")
    if with_yaml:
        body += "### Configuration\n\nThe following YAML configuration was used to produce this model:\n\n" \
                f"```yaml\n{recipe_text}```\n"
    return card(meta, body)


def build_fake_hub(fleet: Path, root: Path) -> FakeHub:
    """Write the fake Hub's cache under ``root/hub`` (see the module docstring)."""
    from mergegate.merging.api import run_merge

    hub = root / "hub"
    repos: dict[str, FakeRepo] = {}

    def add(repo_id: str, downloads: int, tags: list[str], files: dict[str, Path | str | bytes]) -> FakeRepo:
        repo = FakeRepo(repo_id, fake_sha(repo_id), downloads, tags)
        _publish(hub, repo, files)
        repos[repo_id] = repo
        return repo

    for name in ("base", "expert"):
        files = _model_files(fleet / name)
        files["README.md"] = card({"license": "apache-2.0", "library_name": "transformers"},
                                  f"# toy {name}\n\nA toy model.\n")
        add(f"toy/{name}", 1000, ["transformers"], files)

    built = root / "built"
    merges = [
        # repo id, downloads, method, expert weight, recipe in mergekit_config.yml?, tampered?, card metadata
        ("mergers/toy-linear-30", 900, "linear", 0.3, True, False,
         {"base_model": ["toy/base", "toy/expert"], "license": "apache-2.0", "tags": ["mergekit", "merge"]}),
        ("mergers/toy-linear-70", 800, "linear", 0.7, True, True,
         {"license": "mit", "tags": ["mergekit", "merge", "toy/base", "toy/expert"]}),
        ("mergers/toy-slerp-50", 700, "slerp", 0.5, False, False,
         {"base_model": ["toy/base"], "license": "apache-2.0", "tags": ["mergekit", "merge"]}),
    ]
    for repo_id, downloads, method, weight, config_file, tampered, meta in merges:
        data, text = _recipe(method, weight)
        out = built / repo_id.replace("/", "__")
        run_merge(_localise(data, fleet), out, seed=0, config_text=text)
        files = _model_files(out)
        if tampered:
            files["model.safetensors"] = _tamper(out / "model.safetensors")
        if config_file:
            files["mergekit_config.yml"] = text
        files["README.md"] = merge_card(repo_id.split("/")[1], text, meta)
        add(repo_id, downloads, ["mergekit", "merge", "safetensors"], files)

    # published merges without a usable recipe: none at all, and one naming a repo that does not exist
    files = _model_files(fleet / "base")
    files["README.md"] = card({"tags": ["mergekit"]}, "# a merge\n\nTrust me, it is a merge.\n")
    add("mergers/no-recipe", 600, ["mergekit", "merge"], files)
    ghost_text = ("models:\n- model: toy/base\n  parameters:\n    weight: 0.5\n- model: toy/ghost\n"
                  "  parameters:\n    weight: 0.5\nmerge_method: linear\ndtype: float32\n")
    files = _model_files(fleet / "base")
    files["mergekit_config.yml"] = ghost_text
    files["README.md"] = merge_card("ghost", ghost_text, {"base_model": ["toy/base", "toy/ghost"]})
    add("mergers/ghost-parent", 500, ["mergekit", "merge"], files)
    # a popular model that is not a merge: the mergekit filter must leave it out
    add("other/popular", 10_000, ["transformers"], _model_files(fleet / "base"))
    return FakeHub(hub=hub, repos=repos)


class FakeHubServer:
    """Serve a :class:`FakeHub` on 127.0.0.1 (see the module docstring)."""

    def __init__(self, fake: FakeHub) -> None:
        self.fake = fake
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _json(self, payload: Any, status: int = 200) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _missing(self, what: str) -> None:
                body = json.dumps({"error": f"{what} not found"}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("X-Error-Message", "Repository not found")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:  # noqa: N802
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                server.requests.append(self.path)
                path = unquote(url.path)
                query = parse_qs(url.query)
                if path == "/api/models":
                    return self._json(server.listing(query))
                if path.startswith("/api/models/"):
                    parts = path[len("/api/models/"):].split("/")
                    repo = server.fake.repos.get("/".join(parts[:2]))
                    if repo is None:
                        return self._missing("repository")
                    rest = parts[2:]
                    if rest[:1] == ["tree"]:
                        if rest[1:2] != [repo.sha]:
                            return self._missing("revision")
                        return self._json(server.tree(repo))
                    if rest[:1] == ["revision"] and rest[1:2] not in ([repo.sha], ["main"]):
                        return self._missing("revision")
                    return self._json(server.info(repo))
                parts = path.lstrip("/").split("/")
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo = server.fake.repos.get("/".join(parts[:2]))
                    if repo is None or parts[3] not in (repo.sha, "main"):
                        return self._missing("repository")
                    file = repo.snapshot(server.fake.hub) / "/".join(parts[4:])
                    if not file.is_file():
                        return self._missing("entry")
                    data = file.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
                    self.send_header("X-Repo-Commit", repo.sha)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    return None
                return self._missing("route")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- payloads -------------------------------------------------------------------------------
    def files(self, repo: FakeRepo) -> list[Path]:
        snap = repo.snapshot(self.fake.hub)
        return sorted(p for p in snap.rglob("*") if p.is_file())

    def info(self, repo: FakeRepo) -> dict[str, Any]:
        snap = repo.snapshot(self.fake.hub)
        return {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha, "private": False,
                "downloads": repo.downloads, "tags": repo.tags,
                "siblings": [{"rfilename": p.relative_to(snap).as_posix()} for p in self.files(repo)]}

    def tree(self, repo: FakeRepo) -> list[dict[str, Any]]:
        snap = repo.snapshot(self.fake.hub)
        return [{"type": "file", "path": p.relative_to(snap).as_posix(), "size": p.stat().st_size,
                 "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in self.files(repo)]

    def listing(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        wanted = query.get("filter", [])
        repos = [r for r in self.fake.repos.values() if all(f in r.tags for f in wanted)]
        if query.get("sort", [""])[0] == "downloads":
            repos.sort(key=lambda r: -r.downloads)
        limit = int(query.get("limit", ["1000"])[0])
        return [{"id": r.repo_id, "modelId": r.repo_id, "downloads": r.downloads, "tags": r.tags,
                 "private": False} for r in repos[:limit]]

    def __enter__(self) -> FakeHubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
