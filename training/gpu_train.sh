#!/usr/bin/env bash
# Trains easel-shapes from scratch on one CUDA GPU (an H100), then exports it.
#
#     training/gpu_train.sh OUT_DIR WORK_DIR      # run from the repository root
#
# Uses the plain python3 and installs nothing: torch, diffusers, transformers, tqdm, numpy, Pillow and
# open_clip's CLIP vocabulary (or a tokenizer folder already in WORK_DIR/tokenizer) must be importable,
# e.g. through PYTHONPATH. Randomness is drawn on the CPU as in a CPU run, so this is the CPU run with
# these flags, up to float arithmetic. Rerun with --resume appended to go on after a stop.
#
# Measured on an H100 (2026-11-22): the UNet phase at 14-18 steps/s (bound by the CPU's per-step work).
# The shipped v2 is this schedule's EMA at step 4531 of 8000, where a 5.6-minute budget stopped it; it
# started from v1's autoencoder (the CPU run's phase 1) with a work folder holding only that, so its
# GPU time was the pool (60000 pictures) and the UNet. Whole, the schedule takes about 14 minutes.
set -euo pipefail
OUT_DIR=${1:?usage: training/gpu_train.sh OUT_DIR WORK_DIR}
WORK=${2:?usage: training/gpu_train.sh OUT_DIR WORK_DIR}
shift 2

python3 -m training.train --device cuda --work "$WORK" --out "$OUT_DIR" --minutes 16 \
  --vae-batch 32 --vae-steps 1200 \
  --pool-size 60000 \
  --unet-batch 256 --unet-steps 8000 \
  --checkpoint-every 2000 "$@"
