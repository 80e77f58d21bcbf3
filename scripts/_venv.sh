# Sourced by scripts/run and scripts/test: a virtualenv in .venv with the project installed (idempotent).
# $1: the extra to install with it ("test"), or nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e ".${1:+[$1]}"
