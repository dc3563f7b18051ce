#!/usr/bin/env bash
# Train the architecture ablations on one budget (the Architecture tab, checkpoints/ablations.md).
#   bash scripts/train_ablations.sh [DATA_DIR]        resumable: run it again to continue
# Every variant: the same data, 5 epochs, optimiser, schedule and seed; only the architecture differs.
# The reference run also keeps 16-bit snapshots along the way (the Training tab's epoch slider).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${1:-../shared/data}"
OUT=checkpoints/ablations
EPOCHS=5
COMMON=(--data-dir "$DATA_DIR" --epochs "$EPOCHS" --seed 0 --quiet --resume)
run() {  # run NAME [extra options]
  local name=$1; shift
  python3 -m diffusion.train "${COMMON[@]}" --out "$OUT/$name" "$@"
}
run reference --snapshot-steps 25 100 235 469 938 1407 2345
run no_time_embedding --no-time-embedding
run no_skip_connections --no-skip-connections
run no_attention --attention-heads 0
