#!/usr/bin/env bash
# The Action's install step (action.yml calls it; tests/ecosystem runs it on a Debian system Python).
#
# mergegate goes into a virtual environment of its own, never into the runner's Python: a Debian or
# Ubuntu system Python is "externally managed" (PEP 668) and refuses `pip install`, so the Action
# must work without actions/setup-python. The same approach as psf/black's action
# (psf/black action/main.py: a venv under $GITHUB_ACTION_PATH).
#
# PyTorch is installed first, from TORCH_INDEX (default: the CPU wheel index), so pip never pulls a
# multi-GB CUDA build onto a CPU runner; then mergegate is installed with torch held at the version
# just installed (a constraint), so no dependency can swap it for another build.
#
# Environment (the Action passes its inputs here; nothing is interpolated into this script):
#   PY            interpreter that creates the venv (default python3)
#   VENV_DIR      where the venv goes (default $GITHUB_ACTION_PATH/.mergegate-venv)
#   SPEC          pip requirement for mergegate (default: the Action's own checkout)
#   TORCH_SPEC    pip requirement for torch (default torch; "none": install no torch here)
#   TORCH_INDEX   index for torch (default CPU wheels; empty: pip's configured index)
#   SYSTEM_SITE   "true": the venv sees the base interpreter's packages (a self-hosted runner's
#                 preinstalled CUDA torch); torch is then installed only when it is missing
#   GITHUB_OUTPUT the step's output file: gets python=, mergegate= and venv=
# pip's own environment variables (PIP_INDEX_URL, PIP_CONSTRAINT, PIP_NO_INDEX, ...) apply as usual.
set -euo pipefail

PY=${PY:-python3}
ACTION_PATH=${GITHUB_ACTION_PATH:-$(cd "$(dirname "$0")/.." && pwd)}
VENV_DIR=${VENV_DIR:-$ACTION_PATH/.mergegate-venv}
SPEC=${SPEC:-$ACTION_PATH}
TORCH_SPEC=${TORCH_SPEC-torch}
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
SYSTEM_SITE=${SYSTEM_SITE:-false}

fail() { echo "::error title=mergegate install::$*" >&2; exit 3; }

command -v "$PY" >/dev/null 2>&1 || fail "no Python interpreter '$PY' (set the 'python' input, or run actions/setup-python first)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || fail "mergegate needs Python >= 3.10; '$PY' is $("$PY" -c 'import sys; print(sys.version.split()[0])')"

# Reuse the venv only when it was made the same way (same interpreter, torch and options): a second
# use of the Action in one job then costs seconds. mergegate itself is always (re)installed below.
stamp_text="$("$PY" -c 'import sys; print(sys.executable, sys.version)') | $TORCH_SPEC | $TORCH_INDEX | $SYSTEM_SITE"
venv_args=()
[ "$SYSTEM_SITE" = "true" ] && venv_args+=(--system-site-packages)
if [ -f "$VENV_DIR/.mergegate-install" ] && [ "$(cat "$VENV_DIR/.mergegate-install")" = "$stamp_text" ]; then
  echo "reusing $VENV_DIR"
else
  echo "creating a virtual environment in $VENV_DIR (the runner's own Python is left alone)"
  "$PY" -m venv --clear ${venv_args[@]+"${venv_args[@]}"} "$VENV_DIR" \
    || fail "'$PY -m venv' failed: on Debian/Ubuntu install python3-venv (apt-get install python3-venv), or run actions/setup-python first"
fi
if [ -x "$VENV_DIR/bin/python" ]; then BIN=$VENV_DIR/bin; else BIN=$VENV_DIR/Scripts; fi
VPY=$BIN/python
pip_install() { "$VPY" -m pip install --disable-pip-version-check --quiet "$@"; }

if [ "$TORCH_SPEC" != "none" ] && ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
  if [ -n "$TORCH_INDEX" ]; then
    echo "installing $TORCH_SPEC from $TORCH_INDEX"
    pip_install "$TORCH_SPEC" --index-url "$TORCH_INDEX"
  else
    echo "installing $TORCH_SPEC"
    pip_install "$TORCH_SPEC"
  fi
fi
echo "$stamp_text" > "$VENV_DIR/.mergegate-install"

# Hold torch where it is: mergegate's own requirement (torch>=2.1) must not replace it.
constraints=$VENV_DIR/mergegate-constraints.txt
"$VPY" - "$constraints" <<'PYEOF'
import sys
from importlib import metadata

try:
    line = f"torch=={metadata.version('torch')}\n"
except metadata.PackageNotFoundError:
    line = ""
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    handle.write(line)
PYEOF
echo "installing mergegate from $SPEC"
pip_install --constraint "$constraints" "$SPEC"

MERGEGATE=$BIN/mergegate
[ -x "$MERGEGATE" ] || MERGEGATE=$BIN/mergegate.exe
"$MERGEGATE" --version || fail "mergegate was installed but does not run"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  {
    echo "python=$VPY"
    echo "mergegate=$MERGEGATE"
    echo "venv=$VENV_DIR"
  } >> "$GITHUB_OUTPUT"
fi
