#!/usr/bin/env bash
# The GPU run of benchmarks/README.md, on a machine where torch sees CUDA and the package
# is installed as the README says (DALI, PyAV and decord import):
#
#   bash benchmarks/gpu_run.sh OUT_DIR [PART] [NUM_VIDEOS]
#
# PART (default all), each well under 10 minutes on one H100 with 16 CPU cores:
#   clips   NUM_VIDEOS (default 64) K400-like H.264 clips (340x256, 300 frames at 30 fps, the
#           encoder's long GOP) in $CLIPS (default /tmp/k400like), and the same clips prepared
#           with keyframes every 16 frames (python -m tsn_dali.prepare --gop 16); kept if there
#   check   benchmarks/gpu_check.py: dali-gpu vs dali-cpu frame identities, and dali-gpu's GOP
#           slices vs whole files bit for bit (exit 1 on a mismatch)
#   loader  loader only, train and test views, on the original and the prepared clips: dali-gpu
#           (GOP slices, 16 NVDEC sessions, DLPack view), +whole (whole files), +sessions4,
#           +copy (torch-owned copies), and the reference loader with 16 workers; NVDEC busy %
#   train   the trainer's step alone (eager and torch.compile) and fed by dali-gpu (view, copy)
#           and by the reference loader
#   soak    python -m tsn_dali.soak: train + val epochs with dali-gpu and reference; host RSS,
#           threads and device memory after each epoch
# Results: OUT_DIR/<part>/ (results.json/.md/.png) and OUT_DIR/<part>.log. BENCH_ARGS replaces
# the bench's sizes and repeats, SOAK_ARGS the soak's (defaults below), COMPILE= leaves
# torch.compile out; DEVICE=cpu dry-runs every part without a GPU
# (dali-gpu then listed as unavailable, gpu_check comparing dali-cpu with itself), as
# tests/test_bench.py does.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_run.sh OUT_DIR [all|clips|check|loader|train|soak] [NUM_VIDEOS]}
part=${2:-all}
num=${3:-64}
clips=${CLIPS:-/tmp/k400like}
out=$(realpath -m "$out"); clips=$(realpath -m "$clips")
device=${DEVICE:-cuda}
bench_args=${BENCH_ARGS:---batch-size 32 --iters 10 --warmup 3 --repeats 3}
compile=${COMPILE---compile}  # COMPILE= (empty) leaves torch.compile out of the train part
soak_args=${SOAK_ARGS:---epochs 24 --warmup 8}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0

DEVICE=$device python - <<'EOF' || exit 2
import os
import torch
import av, decord, nvidia.dali  # noqa: F401
gpu = os.environ["DEVICE"] != "cpu"
assert not gpu or torch.cuda.is_available(), "no CUDA device (DEVICE=cpu dry-runs this script)"
print("gpu_run:", torch.cuda.get_device_name(0) if gpu else "cpu dry run", "torch", torch.__version__,
      "DALI", nvidia.dali.__version__)
EOF

run_clips() {
  if [[ ! -f "$clips/demo_train_list_videos.txt" ]]; then
    python -m tsn_dali.data.media.synthetic "$clips" --videos "$num" --classes $((num < 8 ? num : 8)) \
      --val-fraction 0 --frames 300 --size 340x256 --codec h264 --fps 30 --quiet || return 2
  fi
  if [[ ! -f "$clips/gop16/demo_train_list_videos.txt" ]]; then
    python -m tsn_dali.prepare "$clips/demo_train_list_videos.txt" --prefix "$clips/videos_train" \
      --out "$clips/gop16" --gop 16 --no-progress || return 2
  fi
}

run_check() {
  python benchmarks/gpu_check.py "$clips/videos_train" --numbered 4 --device "$device" 2>&1 | tee "$out/gpu_check.txt"
  return "${PIPESTATUS[0]}"
}

dali=dali-gpu
[[ $device == cpu ]] && dali=dali-cpu  # the dry run measures dali-cpu where dali-gpu would be

bench() {  # bench NAME LIST PREFIX EXTRA_ARGS...
  local name=$1 list=$2 prefix=$3
  shift 3
  # shellcheck disable=SC2086
  python -m tsn_dali.bench recipes/k400_r50.yaml --device "$device" --videos "$list" --prefix "$prefix" \
    --reference-workers 16 --gop-videos 0 --out "$out/$name" "$@" $bench_args 2>&1 | tee "$out/$name.log"
  return "${PIPESTATUS[0]}"
}

run_loader() {
  local variants="$dali,$dali+whole,$dali+sessions4,$dali+copy,reference"
  bench loader_original "$clips/demo_train_list_videos.txt" "$clips/videos_train" \
    --parts loader --executors "$variants" || return 1
  bench loader_gop16 "$clips/gop16/demo_train_list_videos.txt" "$clips/gop16" \
    --parts loader --executors "$variants" || return 1
}

run_train() {
  bench train "$clips/demo_train_list_videos.txt" "$clips/videos_train" \
    --parts model,e2e --executors "$dali,$dali+copy,reference" $compile
}

run_soak() {
  # shellcheck disable=SC2086
  python -m tsn_dali.soak --device "$device" --out "$out/soak" $soak_args 2>&1 | tee "$out/soak.log"
  return "${PIPESTATUS[0]}"
}

case $part in
  all) run_clips || exit 2; run_check || status=1; run_loader || status=1; run_train || status=1
       run_soak || status=1 ;;
  clips) run_clips || exit 2 ;;
  check) run_check || status=1 ;;
  loader) run_loader || status=1 ;;
  train) run_train || status=1 ;;
  soak) run_soak || status=1 ;;
  *) echo "gpu_run: unknown part $part; expected all, clips, check, loader, train or soak" >&2; exit 2 ;;
esac
echo "gpu_run: $part done (exit $status); results in $out"
exit $status
