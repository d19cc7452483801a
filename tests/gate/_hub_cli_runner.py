"""Run several ``mergegate`` commands in ONE fresh process (the environment the test chose is read
at import time by huggingface_hub and datasets, as for a user) and print their outcomes as JSON.

Usage: ``python _hub_cli_runner.py '[["audit", "DIR"], ["push", "DIR", "org/name"]]'``.

huggingface_hub retries a refused connection 5 times with 1-8 s waits (``http_backoff``,
``_DEFAULT_RETRY_ON_EXCEPTIONS`` in huggingface/huggingface_hub src/huggingface_hub/utils/_http.py);
the waits are skipped here so that an unreachable Hub fails in milliseconds, not 23 s.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time


class _NoSleep:
    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    @staticmethod
    def sleep(_seconds: float) -> None:
        return None


def main() -> None:
    import huggingface_hub.utils._http as http

    http.time = _NoSleep()  # type: ignore[assignment]
    # import the heavy libraries first, so that each command's time is its own Hub handling
    import datasets  # noqa: F401
    import transformers  # noqa: F401

    import mergegate.audit.api  # noqa: F401
    import mergegate.batch.runner  # noqa: F401
    import mergegate.gate.pipeline  # noqa: F401
    from mergegate.cli.main import main as cli

    results = []
    for argv in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 2
        results.append({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue(),
                        "seconds": round(time.perf_counter() - started, 2)})
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
