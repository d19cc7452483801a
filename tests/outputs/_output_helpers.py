"""Helpers of the output-safety tests (imported by module name: tests/outputs is on sys.path)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from mergegate.merging.random_models import LlamaShape

TINY = LlamaShape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=128)


def tree(root: Path) -> dict[str, object]:
    """Everything under ``root`` (not following symlinks): relative path -> bytes, link target or
    'dir', plus permission bits; equal trees mean byte-for-byte unchanged."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                found[rel] = (path.read_bytes(), stat.S_IMODE(st.st_mode))
    return found


def siblings(out: Path) -> list[str]:
    """Hidden entries beside ``out`` that belong to it (locks, staging, moved-aside outputs)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def linear_recipe(path: Path, a: Path, b: Path, wa: float = 0.5, wb: float = 0.5) -> Path:
    path.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "bfloat16", "models": [
        {"model": str(a), "parameters": {"weight": wa}}, {"model": str(b), "parameters": {"weight": wb}}]},
        sort_keys=False))
    return path


def git_checkout(root: Path) -> Path:
    """A directory that looks like a user's git checkout with sources."""
    (root / ".git" / "refs" / "heads").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".git" / "config").write_text("[core]\n\tbare = false\n")
    (root / "src").mkdir()
    (root / "src" / "train.py").write_text("print('my precious code')\n")
    (root / "README.md").write_text("# my project\n")
    (root / "config.json").write_text("{}\n")
    os.chmod(root / "src" / "train.py", 0o755)
    return root
