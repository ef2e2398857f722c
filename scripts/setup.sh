#!/usr/bin/env bash
# Sets up everything Easel needs, idempotently: a Python 3.11 venv with the pinned requirements, the
# open_clip_torch wheel (without its dependencies: only its CLIP vocabulary file is used), and, with
# --browser, Debian's chromium for the end-to-end tests. Re-running is fast: installs are skipped when done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; Easel needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

stamp=.venv/.easel-requirements
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: installing Python packages (a few minutes the first time)"
  # pip's find-links notices on this machine are noise; real errors still fail the step.
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/pip install -q --disable-pip-version-check --no-deps open_clip_torch==3.3.0 2>&1 \
    | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import diffusers, dynamicprompts, gradio, transformers, torch, importlib.util as u; assert u.find_spec('open_clip')" \
    || { echo "setup: the Python packages did not install; see the pip output above" >&2; exit 1; }
  echo "$wanted" > "$stamp"
fi

if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing Debian's chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-noto-color-emoji >/dev/null
fi
