"""The error hierarchy. Every error that reaches the CLI is one of these.

Exit codes (documented in the README and relied on by the Action and the pre-push hook):
0 pass, 1 blocked by the gate (an outcome, not an exception), 2 bad input, 3 failure.
"""

from __future__ import annotations


class MergegateError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 3

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None,
                 hint: str | None = None) -> None:
        self.message = message
        self.source = source  # the file or model the problem is in
        self.field = field  # the config field / tensor / column at fault
        self.hint = hint  # what the user should do
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        # a command-line option (``field="--judge"``) is named as one, not as a config field
        kind = "option" if self.field and self.field.startswith("--") else "field"
        if self.source and self.field:
            where = f"{self.source}: {kind} '{self.field}': "
        elif self.source:
            where = f"{self.source}: "
        elif self.field:
            where = f"{kind} '{self.field}': "
        text = f"{where}{self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class InputError(MergegateError, ValueError):
    """The user's input is wrong (config, model files, prompts). Exit code 2."""

    exit_code = 2


class ConfigError(InputError):
    """A merge config, policy or option is invalid."""


class UnsupportedMethodError(ConfigError):
    """A mergekit method mergegate does not implement (yet)."""


class ModelFilesError(InputError):
    """Model files are missing, truncated, corrupt, mismatched or contain NaN/Inf."""


class BackendUnavailableError(MergegateError, ImportError):
    """An optional backend is not installed. Carries the pip extra to install."""

    exit_code = 3

    def __init__(self, message: str, *, extra: str | None = None, **kw: object) -> None:
        self.extra = extra
        hint = kw.pop("hint", None) or (f"pip install 'mergegate[{extra}]'" if extra else None)
        super().__init__(message, hint=hint, **kw)  # type: ignore[arg-type]


class MergeFailure(MergegateError):
    """The merge could not be executed for a reason that is not the user's input."""


class AuditError(MergegateError):
    """Generation or judging failed."""


class JudgeProtocolError(AuditError):
    """The judge answered something that is neither 'safe' nor 'unsafe'."""
