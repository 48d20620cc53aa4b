#!/bin/sh
# Create the virtualenv that only the benchmark's LiteLLM baseline uses, kept apart from
# inferq's own so that neither pins the other's dependencies.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${1:-"$HERE/../../../.bench/litellm-venv"}
PYTHON=${PYTHON:-python3}
if [ -x "$VENV/bin/litellm" ] && [ "$VENV/.installed" -nt "$HERE/requirements.txt" ]; then
    exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q -r "$HERE/requirements.txt"
touch "$VENV/.installed"
