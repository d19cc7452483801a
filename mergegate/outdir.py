"""May mergegate write here? One answer for every command that writes a directory.

``merge``, ``run``, ``demo`` and ``batch`` (and the temporary directories of safety-aware
weighting) all go through :func:`check_output_dir`, then hold an :class:`OutputClaim` while they
write. The rules:

* ``~`` and ``$VARS`` are expanded once, here, before any check (an unset variable is an error,
  never a directory literally named ``$VAR``); symlinks are resolved, and the check and the writer
  use that one resolved path.
* Refused with exit code 2 and a message naming what is there: ``/``, the home directory (or a
  directory containing it), a file, a dangling symlink, a directory containing or inside an input
  model, and a non-empty directory that is not a previous output of the same kind (recognised by
  its own files: mergegate's ``report.json`` / ``mergegate_provenance.json``; mergekit's
  ``mergekit_config.yml`` + ``config.json`` + ``*.safetensors``).
* Commands that *replace* their output (``merge``, ``run``) build it in a sibling
  ``.NAME.partial-XXXXXXXX`` and swap it in atomically when it is complete
  (:func:`mergegate.atomic.replace_dir`); so they also refuse the current directory (or one
  containing it) and a previous output holding files it did not write (they would be lost).
  Commands that *add to* their output (``batch``, ``demo``) never delete anything in it.
* One writer per output at a time: a lock file ``.NAME.lock`` beside the output (holding the
  owner's pid; removed on release, released by the kernel if the process dies), held for the whole
  run. A second run into the same directory is refused (exit 2) instead of racing.
* Temporary siblings left by a killed run (``.NAME.partial-*``, ``.NAME.old-*``,
  ``.NAME.weighting-*``, ``.NAME.push-*``) are removed by the next run that takes the lock: every
  writer holds the lock while its siblings exist, so when the lock is free they are stale. A
  previous output moved aside as ``.NAME.old-*`` by a replacement killed half-way is put back.
* New directories get the normal permissions (the umask decides), not ``tempfile``'s 0700.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from mergegate.atomic import replace_dir
from mergegate.errors import InputError

log = logging.getLogger(__name__)

# Temporary siblings: ".NAME.<purpose>-<8 chars>" (secrets.token_hex(4), or tempfile's 8 chars).
STAGING_PURPOSES = ("partial", "old", "weighting", "push")
_ENV_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_ATOMIC_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # mergegate.atomic.write_text_atomic leftovers
# Our locks and temp siblings of outputs written inside a directory we only add to (demo, batch).
_OWN_HIDDEN = re.compile(rf"^\..+\.(lock|({'|'.join(STAGING_PURPOSES)})-[A-Za-z0-9_]{{8}})$")


def _sibling_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.({'|'.join(STAGING_PURPOSES)})-[A-Za-z0-9_]{{8}}$")


# --- expansion ----------------------------------------------------------------------------------

def expand_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~``/``~user`` and every ``$VAR``/``${VAR}`` expanded, exactly once,
    made absolute (symlinks not yet resolved).

    Each part is expanded once: a variable whose value starts with ``~`` or holds ``$`` is taken
    literally. Raises :class:`InputError` for an empty path, an unknown ``~user`` or an unset
    variable (instead of creating a directory literally named ``$VAR``).
    """
    text = os.fsdecode(os.fspath(path))
    if not text.strip():
        raise InputError("the output path is empty", hint="pass a directory name, e.g. ./merged")
    prefix, rest = "", text
    if text.startswith("~"):
        head, sep, tail = text.partition("/")
        prefix = os.path.expanduser(head)
        if prefix == head:
            raise InputError(f"cannot expand '{head}': no such user", source=text)
        rest = sep + tail

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        value = os.environ.get(name)
        if value is None:
            raise InputError(f"the environment variable ${name} is not set", source=text,
                             hint=f"set {name}, or write the path out")
        return value

    return Path(os.path.abspath(prefix + _ENV_VAR.sub(variable, rest)))


# --- what a previous output looks like ------------------------------------------------------------

# Files a model directory written by mergegate or mergekit holds at its top level. mergekit 0.1.5
# writes config.json, README.md + mergekit_config.yml (model card), the tokenizer
# (tokenizer.save_pretrained or _copy_tokenizer's list), tag-along files of some architectures
# (preprocessor/processor/normalizer configs) and model*.safetensors (+ .index.json), or
# pytorch_model*.bin without safetensors (arcee-ai/mergekit mergekit/merge.py,
# mergekit/io/tensor_writer.py, mergekit/_data/architectures/*.json "tagalong_files").
MODEL_DIR_FILES = (
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model*.bin.index.json",
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
    "chat_template.jinja", "chat_template.json", "preprocessor_config.json", "processor_config.json",
    "video_preprocessor_config.json", "normalizer.json", "README.md", "mergekit_config.yml",
    "mergegate_provenance.json", "report.json", "report.previous.json", "mergegate_alignment.png",
)
REPORT_FILE = "report.json"  # mergegate.gate.report.REPORT_FILENAME (not imported: no gate dependency)
PREVIOUS_REPORT_FILE = "report.previous.json"
PROVENANCE_FILE = "mergegate_provenance.json"  # mergegate.merging.api.PROVENANCE_FILE


def _read_json(path: Path) -> object:
    try:
        if path.stat().st_size > 64 * 1024 * 1024:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _run_report(path: Path) -> dict | None:
    data = _read_json(path)
    if (isinstance(data, dict) and data.get("decision") in ("pass", "blocked", "error")
            and "schema_version" in data and isinstance(data.get("files", {}), dict)):
        return data
    return None


def _weights_present(directory: Path) -> bool:
    return any(fnmatch.fnmatch(p.name, pattern) for p in directory.iterdir() if p.is_file()
               for pattern in ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin"))


@dataclass(frozen=True)
class OutputKind:
    """A kind of directory a command may write into again, recognised by its own files."""

    name: str  # the writer, in messages: "a previous output of `mergegate run`"
    recognise: Callable[[Path], bool]
    # Relative posix paths of files the previous output vouches for beyond MODEL_DIR_FILES.
    recorded: Callable[[Path], set[str]] = field(default=lambda _: set())


def _run_recorded(directory: Path) -> set[str]:
    files: set[str] = set()
    for name in (REPORT_FILE, PREVIOUS_REPORT_FILE):
        report = _run_report(directory / name)
        if report:
            files.update(str(f) for f in report.get("files", {}))
    return files


def _merge_recorded(directory: Path) -> set[str]:
    data = _read_json(directory / PROVENANCE_FILE)
    outputs = data.get("outputs") if isinstance(data, dict) else None
    return {str(f) for f in outputs} if isinstance(outputs, dict) else set()


RUN_OUTPUT = OutputKind("`mergegate run`",
                        lambda d: _run_report(d / REPORT_FILE) is not None
                        or _run_report(d / PREVIOUS_REPORT_FILE) is not None, _run_recorded)
MERGE_OUTPUT = OutputKind("`mergegate merge`",
                          lambda d: isinstance(_read_json(d / PROVENANCE_FILE), dict), _merge_recorded)
MERGEKIT_OUTPUT = OutputKind("mergekit-yaml",
                             lambda d: (d / "mergekit_config.yml").is_file() and (d / "config.json").is_file()
                             and _weights_present(d))
DEMO_OUTPUT = OutputKind("`mergegate demo`",
                         lambda d: (d / "recipes" / "mergegate.yml").is_file()
                         or any((d / n / REPORT_FILE).is_file() for n in ("blocked", "passes")))
BATCH_OUTPUT = OutputKind("`mergegate batch`",
                          lambda d: (d / "results.jsonl").is_file() or (d / "audit-cache.sqlite3").is_file())

#: What ``merge`` and ``run`` may replace: a previous output of either, or of mergekit-yaml.
MERGE_OUTPUTS: tuple[OutputKind, ...] = (RUN_OUTPUT, MERGE_OUTPUT, MERGEKIT_OUTPUT)


# --- the check ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutputDir:
    """An output directory mergegate may write (the result of :func:`check_output_dir`)."""

    path: Path  # absolute, ~ and $VARS expanded once, symlinks resolved: what the writer uses
    given: str  # as the user wrote it, for messages
    option: str  # the command-line name of the argument ("OUT_DIR", "--out")
    previous: str | None  # who wrote the previous output found there ("`mergegate run`"); None: new or empty
    kinds: tuple[OutputKind, ...]
    replace: bool  # True: the directory is replaced as a whole; False: files are added to it

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def lock_path(self) -> Path:
        """``.NAME.lock`` beside the output."""
        return self.path.parent / f".{self.path.name}.lock"

    def claim(self, *, inputs: Iterable[str | os.PathLike[str]] = (), timeout: float = 0.0) -> OutputClaim:
        """Take the output's lock and re-check it (see :class:`OutputClaim`); use as ``with``."""
        return OutputClaim(self, inputs=inputs, timeout=timeout)


def _refuse(message: str, target: Path | str, option: str, hint: str) -> InputError:
    return InputError(f"refusing to write here: {message}", source=str(target), field=option, hint=hint)


def _listing(names: Sequence[str], total: int) -> str:
    shown = ", ".join(names[:6])
    return shown + (f" and {total - 6} more" if total > 6 else "")


def _display(entry: Path) -> str:
    return entry.name + ("/" if entry.is_dir() and not entry.is_symlink() else "")


def _suggestion(given: str, path: Path) -> str:
    base = given.rstrip("/") or "."
    return f"{base}/merged" if not (path / "merged").exists() else f"{base}/merged-{secrets.token_hex(2)}"


def _unexplained(directory: Path, kinds: Sequence[OutputKind], entries: Sequence[Path]) -> list[Path]:
    """Top-level entries no matching kind accounts for (they would be lost by a replacement)."""
    recorded: set[str] = set()
    for kind in kinds:
        recorded |= kind.recorded(directory)
    nested = {r.split("/", 1)[0] for r in recorded if "/" in r}
    lost = []
    for entry in entries:
        name = entry.name
        if entry.is_file() and not entry.is_symlink():
            if name in recorded or any(fnmatch.fnmatch(name, p) for p in MODEL_DIR_FILES):
                continue
        elif entry.is_dir() and not entry.is_symlink() and name in nested:
            inside = [p for p in entry.rglob("*") if not p.is_dir()]
            if all(p.relative_to(directory).as_posix() in recorded for p in inside):
                continue
        lost.append(entry)
    return lost


def _previous_of(kinds: Sequence[OutputKind]) -> str:
    names = [k.name for k in kinds]
    return "a previous output of " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1])


def _contained(a: Path, b: Path) -> bool:
    """True when ``a`` is ``b`` or inside it."""
    return a == b or b in a.parents


def _inspect(path: Path, *, given: str, option: str, kinds: tuple[OutputKind, ...], replace: bool,
             inputs: Iterable[str | os.PathLike[str]]) -> OutputDir:
    """Every refusal, on an already expanded and resolved ``path``."""
    new_dir_hint = f"pass a new or empty directory instead, e.g. {_suggestion(given, path)}"
    if path.parent == path:
        raise _refuse("this is the root directory", path, option, new_dir_hint)
    home = Path(os.path.realpath(Path.home()))
    if _contained(home, path):
        what = "this is your home directory" if path == home else "this directory contains your home directory"
        raise _refuse(what, path, option, new_dir_hint)
    for raw in inputs:
        src = Path(os.path.realpath(os.fspath(raw)))
        if _contained(src, path) or _contained(path, src):
            what = ("this is the input model" if src == path else
                    "this directory contains the input model" if path in src.parents else
                    "this directory is inside the input model")
            raise _refuse(f"{what} {src}", path, option,
                          "write the output to a directory outside every input model")
    if path.exists() and not path.is_dir():
        raise _refuse("a file is there, not a directory", path, option,
                      f"pass a directory path instead, e.g. {given.rstrip('/')}-out")
    previous = None
    if path.is_dir():
        entries = sorted((p for p in path.iterdir() if not _ATOMIC_TMP.match(p.name)), key=lambda p: p.name)
        if not replace:  # our own locks and temp siblings of outputs written inside it
            entries = [p for p in entries if not _OWN_HIDDEN.match(p.name)]
        if entries:
            matching = [k for k in kinds if k.recognise(path)]
            names = [_display(e) for e in entries]
            if not matching:
                raise _refuse(f"the directory is not empty and is not {_previous_of(kinds)} "
                              f"(it holds {_listing(names, len(names))})", path, option, new_dir_hint)
            if replace:
                lost = _unexplained(path, matching, entries)
                if lost:
                    shown = [_display(e) for e in lost]
                    raise _refuse(f"it is {_previous_of(matching[:1])} but also holds files mergegate did not write "
                                  f"({_listing(shown, len(shown))}); the output directory is replaced as a "
                                  "whole, so they would be lost", path, option,
                                  f"move them out, or {new_dir_hint}")
            previous = matching[0].name
    cwd = Path(os.path.realpath(os.getcwd())) if os.path.exists(os.getcwd()) else None
    if replace and cwd is not None and _contained(cwd, path):
        what = ("this is the current directory" if path == cwd else
                "this directory contains the current directory")
        hint = (f"run it from outside, e.g. `cd {path.parent}` and pass {path.name}" if previous else
                f"write to a new directory inside it instead, e.g. {_suggestion(given, path)}")
        raise _refuse(f"{what}; mergegate replaces its output directory as a whole, which would leave "
                      "your shell in a deleted directory", path, option, hint)
    return OutputDir(path=path, given=given, option=option, previous=previous, kinds=kinds, replace=replace)


def check_output_dir(path: str | os.PathLike[str], *, kinds: Sequence[OutputKind] = MERGE_OUTPUTS,
                     replace: bool = True, inputs: Iterable[str | os.PathLike[str]] = (),
                     option: str = "OUT_DIR") -> OutputDir:
    """May mergegate write its output to ``path``? The one function that decides.

    Args:
        path: as the user gave it; ``~`` and ``$VARS`` are expanded here, once.
        kinds: the previous outputs that may be written over (see :data:`MERGE_OUTPUTS`,
            :data:`DEMO_OUTPUT`, :data:`BATCH_OUTPUT`).
        replace: True when the output is replaced as a whole (``merge``, ``run``): also refuses the
            current directory and previous outputs holding files nobody recorded. False when
            files are only added or rewritten in place (``batch``, ``demo``).
        inputs: input model directories (and other inputs) the output must neither be nor contain
            nor sit inside.
        option: the argument's name in messages (``OUT_DIR``, ``--out``).

    Returns:
        The checked :class:`OutputDir`; nothing has been written. Write through
        :meth:`OutputDir.claim`.

    Raises:
        InputError: (exit 2) the message says what is there and what to pass instead.
    """
    given = os.fsdecode(os.fspath(path))
    expanded = expand_path(path)
    if expanded.is_symlink() and not expanded.exists():
        raise _refuse(f"it is a symlink to {os.readlink(expanded)}, which does not exist", expanded, option,
                      "pass the directory itself, or create the symlink's target first")
    resolved = Path(os.path.realpath(expanded))
    return _inspect(resolved, given=given, option=option, kinds=tuple(kinds), replace=replace, inputs=inputs)


# --- the lock -----------------------------------------------------------------------------------

class OutputInUseError(InputError):
    """Another mergegate process holds the output's lock (exit code 2)."""


class OutputBusy(Exception):
    """The output's lock is held by another process (``holder``: its pid, when known)."""

    def __init__(self, holder: str | None) -> None:
        self.holder = holder
        super().__init__(holder or "unknown")


class OutputLock:
    """An exclusive lock on ``.NAME.lock``, released by the kernel if its process dies.

    POSIX: ``flock`` on the file, which holds the owner's pid and is unlinked on release (while
    still locked), so no lock file is left behind; a waiter that opened the file before it was
    unlinked notices the inode changed and tries again. Elsewhere: :mod:`filelock`.
    """

    def __init__(self, path: Path, *, timeout: float = 0.0) -> None:
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        self._fallback: object | None = None

    def acquire(self) -> None:
        import time

        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            self._acquire_filelock()
            return
        deadline = time.monotonic() + max(self.timeout, 0.0)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise OutputBusy(holder) from None
                time.sleep(0.05)
                continue
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder unlinked it after we opened it: take the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return

    @staticmethod
    def _holder(fd: int) -> str | None:
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            return None
        return f"pid {text}" if text.isdigit() else None

    def _acquire_filelock(self) -> None:  # pragma: no cover - Windows
        import filelock

        lock = filelock.FileLock(str(self.path), timeout=self.timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise OutputBusy(None) from None
        self._fallback = lock

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)  # while still holding it: see the class docstring
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None
        if self._fallback is not None:  # pragma: no cover - Windows
            self._fallback.release()  # type: ignore[attr-defined]
            self._fallback = None


# --- the claim: lock, stale siblings, staging, commit --------------------------------------------

class OutputClaim:
    """The right to write one output: its lock, its temporary siblings and the final swap.

    ``with out.claim(inputs=...) as claim:`` takes ``.NAME.lock`` (refusing with exit 2 when another
    process holds it), puts back or removes what a killed run left beside the output, and checks the
    directory again under the lock (same resolved path, nothing re-expanded). Inside,
    :meth:`staging` makes an empty sibling to build in and :meth:`commit` swaps it in. On leaving,
    uncommitted staging directories are deleted and the lock is released.
    """

    def __init__(self, target: OutputDir, *, inputs: Iterable[str | os.PathLike[str]] = (),
                 timeout: float = 0.0) -> None:
        self.target = target
        self._inputs = list(inputs)
        self._timeout = timeout
        self._lock: OutputLock | None = None
        self._staging: list[Path] = []
        self.committed = False

    @property
    def path(self) -> Path:
        return self.target.path

    def __enter__(self) -> OutputClaim:
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the directory that holds the output: {exc.strerror}",
                             source=str(parent), field=self.target.option,
                             hint="pass a directory you can write to") from None
        lock = OutputLock(self.target.lock_path, timeout=self._timeout)
        try:
            lock.acquire()
        except OutputBusy as busy:
            who = f" ({busy.holder})" if busy.holder else ""
            raise OutputInUseError(f"another mergegate process{who} is writing this output right now",
                             source=str(self.path), field=self.target.option,
                             hint=f"wait for it to finish, or pass another directory (its lock: "
                             f"{self.target.lock_path})") from None
        except OSError as exc:
            raise InputError(f"cannot create the lock file beside the output: {exc.strerror}",
                             source=str(self.target.lock_path), field=self.target.option,
                             hint="pass a directory whose parent you can write to") from None
        self._lock = lock
        try:
            self._clean_stale()
            self.target = _inspect(self.path, given=self.target.given, option=self.target.option,
                                   kinds=self.target.kinds, replace=self.target.replace, inputs=self._inputs)
        except BaseException:
            lock.release()
            self._lock = None
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            for path in self._staging:
                shutil.rmtree(path, ignore_errors=True)
            self._staging.clear()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _clean_stale(self) -> None:
        """Siblings of a killed run: put back an output moved aside, delete the rest."""
        parent, pattern = self.path.parent, _sibling_pattern(self.path.name)
        stale = [p for p in parent.iterdir() if pattern.match(p.name)] if parent.is_dir() else []
        olds = sorted((p for p in stale if ".old-" in p.name and p.is_dir()), key=lambda p: p.stat().st_mtime)
        if olds and not self.path.exists() and not self.path.is_symlink():
            os.replace(olds[-1], self.path)  # a replacement was killed between its two renames
            log.warning("put back the previous output of %s from %s (a run was killed while replacing it)",
                        self.path, olds[-1].name)
            stale.remove(olds[-1])
        for p in stale:
            log.info("removing %s, left by a run that was stopped", p)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def staging(self, purpose: str = "partial") -> Path:
        """A new, empty sibling ``.NAME.<purpose>-XXXXXXXX`` (umask permissions), deleted on exit
        unless committed."""
        if self._lock is None:
            raise RuntimeError("staging() outside `with claim`")
        if purpose not in STAGING_PURPOSES:
            raise ValueError(f"purpose must be one of {STAGING_PURPOSES}")
        while True:
            path = self.path.parent / f".{self.path.name}.{purpose}-{secrets.token_hex(4)}"
            try:
                os.mkdir(path)  # mode 0o777 minus the umask, unlike tempfile.mkdtemp's 0700
            except FileExistsError:
                continue
            self._staging.append(path)
            return path

    def commit(self, staging: Path) -> Path:
        """Swap the finished ``staging`` directory in as the output (atomic; see ``replace_dir``)."""
        if self._lock is None:
            raise RuntimeError("commit() outside `with claim`")
        if staging not in self._staging:
            raise ValueError(f"{staging} is not a staging directory of this claim")
        replace_dir(staging, self.path)
        self._staging.remove(staging)
        self.committed = True
        return self.path

    def ensure_dir(self) -> Path:
        """Create the output directory if needed (for outputs that are added to, not replaced)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path


__all__ = ["check_output_dir", "expand_path", "OutputDir", "OutputClaim", "OutputKind", "OutputLock",
           "OutputBusy", "OutputInUseError", "MERGE_OUTPUTS", "RUN_OUTPUT", "MERGE_OUTPUT", "MERGEKIT_OUTPUT",
           "DEMO_OUTPUT", "BATCH_OUTPUT", "STAGING_PURPOSES", "MODEL_DIR_FILES", "PREVIOUS_REPORT_FILE"]
