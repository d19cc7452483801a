"""Bounded YAML: a hostile document is rejected before it costs memory or time.

``yaml.safe_load`` refuses arbitrary Python objects, but not a document that is small on disk and
huge once its aliases are followed ("billion laughs": nine aliases of nine aliases of ... expand a
500-byte file into 10^9 nodes). PyYAML itself shares aliased objects, so loading is cheap; it is
every later walk over the data (validation, error messages that print it, dumping) that explodes.
So before constructing any Python object we walk the *node graph* once, counting each node as
many times as it is reachable (memoised, so the count costs one pass whatever the expansion), and
refuse a document that is too large, expands too far, nests too deep or refers to itself.

Every recipe, policy and model-card front matter mergegate reads goes through :func:`load_yaml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mergegate.errors import ConfigError

MAX_YAML_BYTES = 1 << 20  # 1 MiB: real recipes and policies are a few KB, big frankenmerges ~50 KB
MAX_YAML_NODES = 200_000  # nodes after alias expansion; a 10,000-slice recipe written out has ~110,000
MAX_YAML_DEPTH = 64  # recipes nest about 6 deep, model-card front matter about 8
MAX_CARD_BYTES = 8 << 20  # a model card (README.md) holding a recipe in a ```yaml block

# libyaml's parser when PyYAML was built with it (about 5x faster than the pure-Python one)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_HINT = ("a mergekit recipe or policy is a small YAML file; this one looks generated or hostile "
         "(limits: {bytes} bytes, {nodes:,} nodes after expanding aliases, {depth} levels)")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def expanded_size(root: yaml.Node, *, max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_YAML_DEPTH,
                  source: str = "<yaml>") -> int:
    """How many nodes ``root`` stands for once every alias is expanded (an iterative, memoised walk
    over the node graph: one visit per distinct node, whatever the expansion).

    Raises:
        ConfigError: more than ``max_nodes`` nodes, nested deeper than ``max_depth`` (counting
            through aliases), or an alias that refers to a node containing it (a recursive document).
    """
    hint = _HINT.format(bytes=MAX_YAML_BYTES, nodes=max_nodes, depth=max_depth)
    if isinstance(root, yaml.ScalarNode):
        return 1
    size: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, levels)
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, list[yaml.Node] | None]] = [(root, None)]
    while stack:
        node, children = stack.pop()
        key = id(node)
        if children is not None:  # all children are done
            on_path.discard(key)
            total, levels = 1, 0
            for c in children:
                if isinstance(c, yaml.ScalarNode):
                    total += 1
                    levels = levels or 1
                else:
                    n, h = size[id(c)]
                    total += n
                    levels = max(levels, h)
            if total > max_nodes:
                raise ConfigError(f"the YAML stands for more than {max_nodes:,} nodes once its aliases are "
                                  "expanded (a 'billion laughs' document?)", source=source, hint=hint)
            if levels + 1 > max_depth:
                raise ConfigError(f"the YAML nests deeper than {max_depth} levels", source=source, hint=hint)
            size[key] = (total, levels + 1)
            continue
        if key in size:
            continue
        if len(on_path) >= max_depth:
            raise ConfigError(f"the YAML nests deeper than {max_depth} levels", source=source, hint=hint)
        on_path.add(key)
        kids = _children(node)
        stack.append((node, kids))
        for child in kids:
            if isinstance(child, yaml.ScalarNode):
                continue
            if id(child) in on_path:
                raise ConfigError("the YAML refers to itself (a recursive alias)", source=source, hint=hint)
            if id(child) not in size:
                stack.append((child, None))
    return size[id(root)][0]


def _yaml_error(exc: yaml.YAMLError, source: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    return ConfigError(f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}", source=source,
                       hint="fix the YAML there (indentation, quotes, brackets); no Python tags are accepted")


_NODE_EVENTS = (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)


def _count_nodes(text: str, *, max_nodes: int, source: str, hint: str) -> None:
    """Count the nodes as written (aliases once) from the parser's event stream, before any node
    is built: a flat document with a million scalars is refused in a fraction of the time that
    composing it would take."""
    loader = _Loader(text)
    try:
        n = 0
        while loader.check_event():
            if isinstance(loader.get_event(), _NODE_EVENTS):
                n += 1
                if n > max_nodes:
                    raise ConfigError(f"the YAML has more than {max_nodes:,} nodes", source=source, hint=hint)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    finally:
        loader.dispose()


def load_yaml_documents(text: str, *, source: str = "<yaml>", max_bytes: int = MAX_YAML_BYTES,
                        max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_YAML_DEPTH) -> list[Any]:
    """Every document of ``text`` (``yaml.safe_load_all`` semantics), within the limits.

    Raises:
        ConfigError: not YAML, or beyond a limit (exit code 2, naming ``source``).
    """
    hint = _HINT.format(bytes=max_bytes, nodes=max_nodes, depth=max_depth)
    if len(text) > max_bytes or len(text.encode("utf-8", errors="replace")) > max_bytes:
        raise ConfigError(f"the YAML is larger than {max_bytes:,} bytes", source=source, hint=hint)
    _count_nodes(text, max_nodes=max_nodes, source=source, hint=hint)
    loader = _Loader(text)
    docs: list[Any] = []
    budget = max_nodes
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            budget -= expanded_size(node, max_nodes=budget, max_depth=max_depth, source=source)
            docs.append(loader.construct_document(node))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    except RecursionError:
        raise ConfigError(f"the YAML nests deeper than {max_depth} levels", source=source, hint=hint) from None
    finally:
        loader.dispose()
    return docs


def load_yaml(text: str, *, source: str = "<yaml>", max_bytes: int = MAX_YAML_BYTES) -> Any:
    """One YAML document (``yaml.safe_load`` semantics: ``None`` for an empty one), within the limits.

    Raises:
        ConfigError: not YAML, more than one document, or beyond a limit.
    """
    docs = load_yaml_documents(text, source=source, max_bytes=max_bytes)
    if len(docs) > 1:
        raise ConfigError("expected one YAML document, found several ('---' separators)", source=source)
    return docs[0] if docs else None


def read_text_bounded(path: str | Path, *, max_bytes: int = MAX_YAML_BYTES, what: str = "file") -> str:
    """A small UTF-8 text file, refused (without reading it) when larger than ``max_bytes``.

    Raises:
        ConfigError: too large, or not UTF-8 text.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ConfigError(f"the {what} is {size:,} bytes, larger than the {max_bytes:,}-byte limit",
                          source=str(path), hint=f"a {what} is a small text file; check the path")
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (byte {exc.start}, line {line})", source=str(path),
                          hint="save the file as UTF-8") from None


__all__ = ["MAX_YAML_BYTES", "MAX_YAML_NODES", "MAX_YAML_DEPTH", "MAX_CARD_BYTES", "load_yaml",
           "load_yaml_documents", "read_text_bounded", "expanded_size"]
