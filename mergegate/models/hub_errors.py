"""The one place where a failed Hugging Face Hub access becomes a message a user can act on.

Every Hub access in mergegate runs inside :func:`hub_access`, which names *what* is fetched and
*why* (the flag or default that asked for it) and what the user can do instead (``fixes``, e.g.
"pass --prompts FILE"). Errors of huggingface_hub, datasets, httpx/requests and the socket layer
are classified (:func:`classify`) and re-raised as :class:`~mergegate.errors.InputError` (exit
code 2: bad input or environment, never "internal error"), with the fix that fits the cause:

============  ================================================  =========================================
kind          raised by                                          the hint
============  ================================================  =========================================
offline       ``OfflineModeIsEnabled``; a cache miss under      the alternatives; run once online to fill
              ``HF_HUB_OFFLINE=1``                               the cache (never "accept the terms")
unreachable   ``ConnectError``/``ConnectionError``/timeouts;    the alternatives; ``HF_HUB_OFFLINE=1``
              a cache miss after a network failure;             with a warm cache; the network/HF_ENDPOINT
              HTTP 5xx/429
gated         ``GatedRepoError``; datasets' "gated dataset"     ``HF_TOKEN`` of an account that accepted
                                                                 the terms (with the repo's page)
unauthorized  HTTP 401/403                                       ``HF_TOKEN`` (says when none is set)
not_found     ``RepositoryNotFoundError``,                       check the id; a token for private repos
              datasets' ``DatasetNotFoundError``
revision      ``RevisionNotFoundError``                          check the revision
bad_id        ``HFValidationError``                              write ``org/name``
no_token      ``LocalTokenNotFoundError``                        ``HF_TOKEN`` / ``hf auth login``
============  ================================================  =========================================

An :class:`~mergegate.errors.InputError` raised inside the block keeps its class and gains the
what/why prefix and the alternatives. Anything else (a bug) propagates unchanged. The token is
only ever tested for presence, never printed.

Exception classes are recognised by name along their MRO, so neither httpx, requests nor
datasets has to be importable here (huggingface_hub 1.x uses ``httpx``, 2.x ``httpx2``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Literal

from mergegate.errors import InputError

Kind = Literal["offline", "unreachable", "gated", "unauthorized", "not_found", "revision", "bad_id",
               "no_token"]
RepoType = Literal["model", "dataset"]

# Class names (along the MRO) of transport failures in httpx/httpx2/httpcore, requests/urllib3 and
# the standard library: the Hub could not be reached, or did not answer in time.
# (Generic names such as ``ReadError``, which tarfile also uses, are left out on purpose.)
_NETWORK_NAMES = frozenset({
    "ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "TimeoutException",
    "NetworkError", "TransportError", "ProxyError", "RemoteProtocolError", "ConnectionError", "Timeout",
    "NewConnectionError", "MaxRetryError", "SSLError", "TimeoutError", "gaierror",
})
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HubResource:
    """What a Hub access fetches, and why.

    Attributes:
        what: the thing, as a user knows it, e.g. "the BeaverTails prompt set (PKU-Alignment/BeaverTails)".
        why: who asked for it, e.g. "the default --prompts" or "a model of the recipe".
        repo_id: the Hub repository (for the gated-terms page and the error's ``source``).
        repo_type: "model" or "dataset".
        field: the flag or recipe field at fault (the error's ``field``), e.g. "prompts".
        fixes: what the user can do instead of fetching it, e.g. "pass --prompts FILE (...)".
        write: an upload, which needs a token with write access.
    """

    what: str
    why: str
    repo_id: str | None = None
    repo_type: RepoType = "model"
    field: str | None = None
    fixes: tuple[str, ...] = ()
    write: bool = False

    @property
    def page(self) -> str | None:
        if not self.repo_id:
            return None
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        return f"https://huggingface.co/{prefix}{self.repo_id}"


@dataclass(frozen=True)
class HubFailure:
    """A classified failure: its kind and the underlying error it was read from."""

    kind: Kind
    cause: BaseException
    status: int | None = None
    detail: str = field(default="")


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return out


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub sees it (``is_offline_mode``: read when it is imported,
    as by every HF library; the helper moved between versions)."""
    try:
        from huggingface_hub import is_offline_mode
    except ImportError:  # older huggingface_hub
        try:
            from huggingface_hub.utils import is_offline_mode  # type: ignore[no-redef]
        except ImportError:  # pragma: no cover - huggingface_hub is a dependency
            return False
    return bool(is_offline_mode())


def token_is_set() -> bool:
    """Whether huggingface_hub would send a token (``HF_TOKEN`` or ``hf auth login``). Never read out."""
    try:
        from huggingface_hub import get_token
    except ImportError:  # pragma: no cover
        return bool(os.environ.get("HF_TOKEN"))
    try:
        return bool(get_token())
    except Exception:  # noqa: BLE001 - an unreadable token file is no token
        return False


def classify(exc: BaseException) -> HubFailure | None:
    """The kind of Hub failure ``exc`` (or an error it was raised from) is, or None if it is none."""
    chain = _chain(exc)
    for e in chain:  # the most specific answers of the Hub first
        names = _names(e)
        if "HFValidationError" in names:
            return HubFailure("bad_id", e)
        if "GatedRepoError" in names:
            return HubFailure("gated", e)
        if "RevisionNotFoundError" in names:
            return HubFailure("revision", e)
        if "LocalTokenNotFoundError" in names:
            return HubFailure("no_token", e)
        if "DatasetNotFoundError" in names:  # datasets: "... is a gated dataset on the Hub" or missing
            return HubFailure("gated" if "gated" in str(e).lower() else "not_found", e)
        if "RepositoryNotFoundError" in names:
            return HubFailure("not_found", e, _status(e))
    offline = offline_mode()
    for e in chain:
        names = _names(e)
        if "OfflineModeIsEnabled" in names:
            return HubFailure("offline", e)
        if "HfHubHTTPError" in names:
            status = _status(e)
            if status in (401, 403):
                return HubFailure("unauthorized", e, status)
            if status in _TRANSIENT_STATUS:
                return HubFailure("unreachable", e, status)
        if names & _NETWORK_NAMES:
            return HubFailure("offline" if offline else "unreachable", e)
    for e in chain:
        if "LocalEntryNotFoundError" in _names(e):  # a cache miss: offline, or local_files_only
            return HubFailure("offline" if offline else "unreachable", e)
    return None


def is_hub_error(exc: BaseException) -> bool:
    """Whether :func:`hub_access` would translate ``exc`` (for code that catches broadly)."""
    return classify(exc) is not None


def _home(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home and home != "/" and path.startswith(home) else path


def _cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return _home(str(constants.HF_HUB_CACHE))
    except ImportError:  # pragma: no cover
        return "the Hugging Face cache"


def _endpoint() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except ImportError:  # pragma: no cover
        return "https://huggingface.co"


TOKEN_HOW = "set HF_TOKEN (or run `hf auth login`)"


def _or(fixes: Sequence[str], alternative: str) -> list[str]:
    """``fixes`` and then ``alternative``, read as one ("...; or ...") when there are fixes before it."""
    return [*fixes, f"or {alternative}" if fixes else alternative]


def _explain(failure: HubFailure, res: HubResource) -> tuple[str, list[str]]:
    """The reason (one clause) and the fixes, in the order to try them."""
    kind, cause = failure.kind, failure.cause
    token = token_is_set()
    no_token = "no Hugging Face token is set (HF_TOKEN or `hf auth login`)"
    repo = res.repo_id or "it"
    if kind == "bad_id":
        return (f"'{res.repo_id or '?'}' is not a valid Hub repository id ({_short(cause)})",
                ["write it as ORG/NAME: letters, digits, '-', '_' and '.', at most 96 characters"])
    if kind == "offline":
        if res.write:
            return ("HF_HUB_OFFLINE=1 is set, and this needs the Hub", ["unset HF_HUB_OFFLINE"])
        return (f"HF_HUB_OFFLINE=1 is set and the local Hugging Face cache ({_cache_dir()}) does not hold it",
                _or(res.fixes, "run once with network access (HF_HUB_OFFLINE unset) to fill the cache"))
    if kind == "unreachable":
        status = f"answered HTTP {failure.status}" if failure.status else f"could not be reached ({_short(cause)})"
        fixes = list(res.fixes)
        if not res.write:
            fixes = _or(fixes, "with it already in your Hugging Face cache, set HF_HUB_OFFLINE=1 to use the cache")
        fixes.append("check the network (proxy, firewall) and HF_ENDPOINT" if not failure.status
                     else "try again later")
        return f"the Hugging Face Hub ({_endpoint()}) {status}", fixes
    if res.write and not token and kind in ("gated", "unauthorized", "no_token", "not_found"):
        return (f"{no_token}, and uploading needs one with write access",
                [f"{TOKEN_HOW} to a token with write access to {repo}"])
    if kind == "gated":
        who = "and no Hugging Face token is set" if not token else "and the token's account has no access"
        accept = f"accept its terms at {res.page}" if res.page else "accept its terms on the Hub"
        return (f"{repo} is gated {who}",
                [f"{accept} and {TOKEN_HOW} with a token of that account", *res.fixes])
    if kind in ("unauthorized", "no_token"):
        reason = (no_token if not token else
                  f"the Hub refused the token (HTTP {failure.status})" if failure.status else _short(cause))
        need = "a token with write access" if res.write else "a token with access to it"
        return reason, [f"{TOKEN_HOW} to {need}", *res.fixes]
    if kind == "revision":
        return ("the Hub has no such revision (branch, tag or commit)",
                ["check the @revision: a branch, a tag or a 40-hex commit sha", *res.fixes])
    if res.write:  # not_found with a token
        return (f"the Hub has no {res.repo_type} repository '{repo}', or the token cannot see it",
                ["check the id, or create the repository on the Hub first"])
    # not_found
    private = "" if token else "; no Hugging Face token is set, so private repositories are invisible"
    return (f"the Hub has no {res.repo_type} '{repo}' (or it is private){private}",
            ["check the id", *([f"{TOKEN_HOW} for a private repository"] if not token else []), *res.fixes])


def translate(exc: BaseException, res: HubResource) -> InputError | None:
    """The :class:`InputError` for a failed access to ``res``, or None when ``exc`` is no Hub failure."""
    failure = classify(exc)
    if failure is None:
        return None
    reason, fixes = _explain(failure, res)
    verb = "upload" if res.write else "fetch"
    if res.write and failure.kind in ("offline", "unreachable", "bad_id", "revision") and not token_is_set():
        reason += "; also, no Hugging Face token is set, and uploading needs one with write access"
        fixes.append(f"{TOKEN_HOW} to a token with write access")
    err = InputError(f"cannot {verb} {res.what} for {res.why}: {reason}", source=res.repo_id,
                     field=res.field, hint="; ".join(fixes) or None)
    err.hub_failure = failure.kind  # type: ignore[attr-defined]
    return err


def _with_context(exc: InputError, res: HubResource) -> InputError:
    """``exc`` (an InputError raised inside the block) naming what was fetched and why."""
    hints = [h for h in (exc.hint, *res.fixes) if h]
    try:
        new = type(exc)(f"while fetching {res.what} for {res.why}: {exc.message}",
                        source=exc.source or res.repo_id, field=exc.field or res.field,
                        hint="; ".join(hints) or None)
    except TypeError:  # a subclass with another constructor: keep it as it is
        return exc
    new.hub_failure = getattr(exc, "hub_failure", None)  # type: ignore[attr-defined]
    return new


@dataclass(frozen=True)
class _Purpose:
    why: str
    field: str | None
    fixes: tuple[str, ...]


_PURPOSE: ContextVar[_Purpose | None] = ContextVar("mergegate_hub_purpose", default=None)


@contextmanager
def hub_purpose(why: str, *, field: str | None = None, fixes: Sequence[str] = ()) -> Iterator[None]:
    """Say why, for every :func:`hub_access` inside: a caller that reuses a loader written for
    another flag (the weighting's ``--safety-prompts`` goes through the audit's prompt loader)
    names its own flag and alternatives instead of the loader's."""
    token = _PURPOSE.set(_Purpose(why, field, tuple(fixes)))
    try:
        yield
    finally:
        _PURPOSE.reset(token)


@contextmanager
def hub_access(what: str, *, why: str, repo_id: str | None = None, repo_type: RepoType = "model",
               field: str | None = None, fixes: Sequence[str] = (), write: bool = False
               ) -> Iterator[HubResource]:
    """Run a Hub access; turn its failures into an :class:`InputError` naming what, why and the fix.

    Example::

        with hub_access("the BeaverTails prompt set (PKU-Alignment/BeaverTails)", why="the default --prompts",
                        repo_id="PKU-Alignment/BeaverTails", repo_type="dataset", field="prompts",
                        fixes=["pass --prompts FILE (a .jsonl with a 'prompt' column)"]):
            rows = datasets.load_dataset(...)

    Nested blocks: the innermost one that translates wins; outer ones leave its error as it is.
    """
    res = HubResource(what=what, why=why, repo_id=repo_id, repo_type=repo_type, field=field,
                      fixes=tuple(fixes), write=write)
    purpose = _PURPOSE.get()
    if purpose is not None:
        res = replace(res, why=purpose.why, field=purpose.field or res.field, fixes=purpose.fixes or res.fixes)
    try:
        yield res
    except InputError as exc:
        if getattr(exc, "hub_context", False):
            raise
        new = _with_context(exc, res)
        new.hub_context = True  # type: ignore[attr-defined]
        if new is exc:
            raise
        raise new from exc
    except Exception as exc:  # noqa: BLE001 - translated when it is a Hub failure, else re-raised
        err = translate(exc, res)
        if err is None:
            raise
        err.hub_context = True  # type: ignore[attr-defined]
        raise err from exc


__all__ = ["HubResource", "HubFailure", "hub_access", "hub_purpose", "classify", "translate", "is_hub_error",
           "offline_mode", "token_is_set"]
