#!/usr/bin/env bash
# Set up (first run only) and start the Easel UI on the embedded default model: http://127.0.0.1:7860
# Extra arguments go to app.py (see: .venv/bin/python app.py --help).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
