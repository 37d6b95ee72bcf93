#!/usr/bin/env bash
# The GPU run of benchmarks/README.md in one command, on a machine where torch sees CUDA and
# DALI, PyAV and decord import (see benchmarks/README.md for the lent machine's packing):
#
#   bash benchmarks/gpu_run.sh OUT_DIR [NUM_VIDEOS]
#
# 1. generates NUM_VIDEOS (default 64) K400-like H.264 clips (340x256, 300 frames at 30 fps,
#    the encoder's long GOP) in $CLIPS (default /tmp/k400like), kept if already there;
# 2. benchmarks/gpu_check.py on them: dali-gpu vs dali-cpu frame identities (exit 1 on a
#    mismatch, after the benchmark has run too);
# 3. python -m tsn_dali.bench for recipes/k400_r50.yaml at batch 32 against the reference
#    loader with 16 workers, eager and compiled; results in OUT_DIR/results;
# 4. python -m tsn_dali.soak: train + val epochs with dali-gpu and reference, host RSS,
#    threads and device memory after each epoch; results in OUT_DIR/soak.
# Logs go to OUT_DIR. BENCH_ARGS replaces the bench's sizes and repeats, SOAK_ARGS the
# soak's (defaults below); DEVICE=cpu dry-runs the whole script without a GPU (dali-gpu then listed as
# unavailable, gpu_check comparing dali-cpu with itself), as tests/test_bench.py does.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_run.sh OUT_DIR [NUM_VIDEOS]}
num=${2:-64}
clips=${CLIPS:-/tmp/k400like}
out=$(realpath -m "$out"); clips=$(realpath -m "$clips")
device=${DEVICE:-cuda}
bench_args=${BENCH_ARGS:---reference-workers 16 --batch-size 32 --iters 10 --warmup 3 --repeats 3 --compile}
soak_args=${SOAK_ARGS:---epochs 24 --warmup 8}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1

DEVICE=$device python - <<'EOF' || exit 2
import os
import torch
import av, decord, nvidia.dali  # noqa: F401
gpu = os.environ["DEVICE"] != "cpu"
assert not gpu or torch.cuda.is_available(), "no CUDA device (DEVICE=cpu dry-runs this script)"
print("gpu_run:", torch.cuda.get_device_name(0) if gpu else "cpu dry run", "torch", torch.__version__,
      "DALI", nvidia.dali.__version__)
EOF

if [[ ! -f "$clips/demo_train_list_videos.txt" ]]; then
  python -m tsn_dali.data.synthetic "$clips" --videos "$num" --classes $((num < 8 ? num : 8)) \
    --val-fraction 0 --frames 300 --size 340x256 --codec h264 --fps 30 --quiet || exit 2
fi

python benchmarks/gpu_check.py "$clips/videos_train" --numbered 4 --device "$device" 2>&1 | tee "$out/gpu_check.txt"
check=${PIPESTATUS[0]}

# shellcheck disable=SC2086
python -m tsn_dali.bench recipes/k400_r50.yaml --device "$device" \
  --videos "$clips/demo_train_list_videos.txt" --prefix "$clips/videos_train" \
  --executors dali-gpu,dali-cpu,reference --out "$out/results" $bench_args 2>&1 | tee "$out/bench.log"
bench=${PIPESTATUS[0]}

# shellcheck disable=SC2086
python -m tsn_dali.soak --device "$device" --out "$out/soak" $soak_args 2>&1 | tee "$out/soak.log"
soak=${PIPESTATUS[0]}

echo "gpu_run: gpu_check exit $check, bench exit $bench, soak exit $soak; results in $out"
[[ $check == 0 && $bench == 0 && $soak == 0 ]]
