"""Entry point of the ``mergegate`` command.

Each subcommand lives in its own module with ``register(subparsers)``; the module imports heavy
libraries only inside its handler so ``--help`` stays fast. This is the only place that turns
exceptions into messages and exit codes: 0 pass, 1 blocked, 2 bad input, 3 failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from mergegate import __version__
from mergegate.errors import InputError, MergegateError
from mergegate.redact import redact

EXIT_PASS, EXIT_BLOCKED, EXIT_BAD_INPUT, EXIT_FAILURE = 0, 1, 2, 3

# (module, one-line help) in the order `mergegate --help` lists them.
COMMAND_MODULES: list[str] = [
    "mergegate.cli.merge_cmd",
    "mergegate.cli.audit_cmd",
    "mergegate.cli.run_cmd",
    "mergegate.cli.card_cmd",
    "mergegate.cli.push_cmd",
    "mergegate.cli.demo_cmd",
    "mergegate.cli.batch_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mergegate",
        description="Rebuild declared model merges, audit their safety alignment, gate publishing.",
        epilog="Exit codes: 0 pass, 1 blocked by the gate, 2 bad input, 3 failure. "
        "Set MERGEGATE_DEBUG=1 for (redacted) tracebacks; it never changes the exit code.",
    )
    parser.add_argument("--version", action="version", version=f"mergegate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _format_validation_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", lambda: [])()
    lines = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        lines.append(f"  field '{loc}': {err.get('msg')}")
    return "invalid input:\n" + "\n".join(lines)


class RedactingFormatter(logging.Formatter):
    """Log lines (and the tracebacks logged with them) with every secret redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _configure_logging(verbose: bool) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:
        if handler not in before:  # only the handler basicConfig made (not a host application's)
            handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))


def _traceback(debug: bool) -> None:
    """MERGEGATE_DEBUG=1: the traceback, redacted. Verbosity only: the exit code is the same."""
    if debug:
        print(redact(traceback.format_exc()), file=sys.stderr, end="")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    debug = os.environ.get("MERGEGATE_DEBUG") == "1"
    try:
        return int(args.handler(args) or 0)
    except MergegateError as exc:
        _traceback(debug)
        print(f"mergegate: error: {redact(exc.render())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mergegate: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns anything into an exit code
        from pydantic import ValidationError

        _traceback(debug)
        if isinstance(exc, ValidationError):
            print(f"mergegate: error: {redact(_format_validation_error(exc))}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
            print(f"mergegate: error: {redact(str(exc))}", file=sys.stderr)
            return EXIT_BAD_INPUT
        hint = "report it with the traceback above" if debug else \
            "re-run with MERGEGATE_DEBUG=1 for a traceback and report it"
        print(f"mergegate: internal error: {redact(type(exc).__name__ + ': ' + str(exc))}\n  hint: {hint}",
              file=sys.stderr)
        return EXIT_FAILURE


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


__all__ = ["main", "build_parser", "InputError", "EXIT_PASS", "EXIT_BLOCKED", "EXIT_BAD_INPUT",
           "EXIT_FAILURE"]
