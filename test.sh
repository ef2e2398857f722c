#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite: unit, app (gradio_client) and browser (chromium).
# Extra arguments go to pytest. A run that collects no tests fails.
set -uo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh --browser || exit 1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
# One torch thread: as fast for these small models, and immune to the ~100x OpenMP slowdown when another
# process shares the two cores; the expected pictures were verified this way.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# One worker per core (at most 4), a test module's tests on one worker: they share its fixtures and its order.
.venv/bin/python -m pytest -n auto --maxprocesses 4 --dist loadfile "$@"
status=$?
if [ "$status" = 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
