#!/usr/bin/env bash
# The Action's gate step (action.yml calls it; tests/ecosystem runs it with a stand-in mergegate).
#
# Every input arrives in the environment, never interpolated into a script (no template
# injection). ARGS, the pass-through for other `mergegate run` flags, is split like a shell splits
# words (quotes group, backslashes escape) by Python's shlex, and nothing in it is expanded or
# executed: `$(...)`, backticks, `;` and globs stay literal arguments.
#
# Exit code: mergegate's (0 pass, 1 blocked, 2 bad input, 3 failure), so a blocked merge fails the
# step. The outputs (decision, alignment, best-input, ...) are written by `mergegate run --github`.
set -uo pipefail

: "${MERGEGATE:?the mergegate executable of the install step}"
: "${CONFIG:?the recipe to gate}"
: "${OUT:?the output directory}"

args=(run "$CONFIG" --out "$OUT" --prompts "${PROMPTS:-beavertails}" --benign "${BENIGN:-xstest}"
      --judge "${JUDGE:-meta-llama/Llama-Guard-3-8B}" --backend "${BACKEND:-transformers}"
      --device "${DEVICE:-auto}" --max-new-tokens "${MAX_NEW_TOKENS:-512}"
      --comment-mode "${COMMENT_MODE:-update}" --github)
[ -n "${POLICY:-}" ] && args+=(--policy "$POLICY")
[ -n "${LIMIT:-}" ] && args+=(--limit "$LIMIT")
[ "${CHECK_RUN:-true}" = "true" ] || args+=(--no-check-run)

if [ -n "${ARGS:-}" ]; then
  python=${MERGEGATE_PYTHON:-$(dirname "$MERGEGATE")/python}
  if ! "$python" -c 'import os, shlex; shlex.split(os.environ["ARGS"])' 2>/dev/null; then
    echo "::error title=mergegate::the 'args' input is not shell-quoted correctly (an unclosed quote?)" >&2
    exit 2
  fi
  # NUL-separated, so an argument may hold any character but NUL (newlines included)
  while IFS= read -r -d '' word; do
    args+=("$word")
  done < <("$python" -c 'import os, shlex, sys
sys.stdout.write("".join(word + "\0" for word in shlex.split(os.environ["ARGS"])))')
fi

[ -n "${HF_TOKEN:-}" ] || unset HF_TOKEN
"$MERGEGATE" "${args[@]}"
