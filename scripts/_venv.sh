# Sourced by scripts/run and scripts/test: a virtualenv in .venv with the project installed (idempotent).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e ".[${1:-}]" 2>&1 | grep -v -e '^WARNING: Location' -e '^\s*$' || true
