#!/usr/bin/env bash
# Create .venv/ (if missing) and install ifcml with the pinned versions of constraints.txt.
# Safe to re-run: it only installs what differs from the pins.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
if ! command -v "$PYTHON" >/dev/null; then
    echo "error: $PYTHON not found; ifcml needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
