"""Every import in ``mergegate/`` points down the documented order of rooms (docs/architecture.md).

The rooms, bottom to top (a room may import itself and any room below it; rooms on the same level
are independent of each other):

    foundation  mergegate/__init__, errors, redact, atomic, outdir, safe_yaml, templates
    models      references, Hub pinning, resolution, fingerprints, weight files, chat templates
    merging | audit   recipe -> weights | models -> scores (neither imports the other)
    weighting   safety-aware weights, on merging and audit
    gate        decide one merge: report, card, push, GitHub, demo
    batch       many public merges
    cli         the thin command line

Imports inside functions and under ``TYPE_CHECKING`` count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mergegate"

FOUNDATION = {"__init__", "errors", "redact", "atomic", "outdir", "safe_yaml", "templates"}
LEVELS = {"foundation": 0, "models": 1, "merging": 2, "audit": 2, "weighting": 3, "gate": 4, "batch": 5,
          "cli": 6}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "foundation"
    head = parts[1]
    return "foundation" if head in FOUNDATION else head


def imports_of(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every ``mergegate`` import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "mergegate"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "mergegate":
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.level:
            pytest.fail(f"{path}:{node.lineno}: relative import; write the absolute mergegate path")
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_known_room() -> None:
    unknown = sorted({room_of(m) for m in all_modules()} - set(LEVELS))
    assert not unknown, f"rooms missing from the documented order: {unknown} (add them to docs/architecture.md)"


def test_imports_point_down_and_siblings_stay_apart() -> None:
    wrong = []
    for module, path in all_modules().items():
        src = room_of(module)
        for line, target, names in imports_of(path):
            candidates = [target] + [f"{target}.{n}" for n in names]
            # "from mergegate import x" names a room when x is a subpackage
            dst = room_of(next((c for c in candidates[1:] if c in all_modules() and target == "mergegate"),
                               target))
            if dst == src:
                continue
            if LEVELS[dst] >= LEVELS[src]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {src} imports {dst} ({target})")
    assert not wrong, "imports against the documented order of rooms:\n" + "\n".join(wrong)


def test_no_private_name_crosses_a_room() -> None:
    wrong = []
    for module, path in all_modules().items():
        src = room_of(module)
        for line, target, names in imports_of(path):
            if room_of(target) == src:
                continue
            private = [p for p in target.split(".") if p.startswith("_") and p != "__init__"]
            private += [n for n in names if n.startswith("_") and n != "__version__"]
            if private:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target} {private}")
    assert not wrong, "private names imported from another room:\n" + "\n".join(wrong)


def test_no_import_cycles_between_modules() -> None:
    modules = all_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        for _, target, names in imports_of(path):
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in modules and candidate != module:
                    graph[module].add(candidate)
                    break
    # a package's __init__ re-exporting its own modules is not a cycle worth reporting
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # package <-> its own submodule
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
