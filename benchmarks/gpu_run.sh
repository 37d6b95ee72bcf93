#!/usr/bin/env bash
# The GPU run of benchmarks/README.md ("The GPU run"): what a first GPU must settle.
#
#   bash benchmarks/gpu_run.sh OUT_DIR [quick|full|env|clips|check|loader|train|soak]
#
# quick (the default, the first thing to run on a GPU): at most 8 minutes on one H100/H200
# with 16 CPU cores, start-up included, even where every part runs to its limit. Each part
# runs under its own `timeout` and writes its results as it goes (gpu_check after each
# check, the bench after each comparison); OUT_DIR/summary.md gets a line per part as it
# ends, so a run killed at any point leaves what it measured:
#   env              driver, torch's and DALI's CUDA and whether they pair, GPU, NVDEC
#                    engines, NVML, the Python that runs the parts
#   clips            K400-like H.264 clips (340x256, 300 frames at 30 fps, the encoder's long
#                    GOP) generated on every CPU core in $CLIPS (default /tmp/k400like), and the
#                    same clips with keyframes every 16 frames (python -m tsn_dali.prepare
#                    --gop 16); reused when there
#   check            benchmarks/gpu_check.py: frame identities (numbered clips, one 340x256),
#                    GOP slices vs whole files bit for bit, dali-gpu vs dali-cpu view by view
#                    (bounded colour difference and shift), a mixed NVDEC + frames-path batch,
#                    bfloat16, view integrity under a lagging training step (with its control),
#                    a whole-pipeline failure said in one line; then dali-gpu vs dali-cpu
#                    clips/s, interleaved
#   loader_original  python -m tsn_dali.bench --parts loader on the original clips: dali-gpu
#                    (slices, 16 NVDEC sessions, views), +whole, +copy (full: +sessions4) and
#                    the reference loader with 16 workers, train then test view, interleaved;
#                    NVDEC busy % (NVML)
#   loader_gop16     the same on the GOP-16 clips, under a limit of its own
#   train            the trainer's step alone and fed by dali-gpu and by the reference loader,
#                    interleaved, with the share of time spent waiting for data
# full: the same at larger sizes, then soak (train + val epochs, host and device memory).
# At the end benchmarks/gpu_report.py writes OUT_DIR/results.md and results.json: every
# check's status, the targets (5x the reference loader, 90% of the step) met or not, and
# what a part cut short did not measure.
# Knobs (environment): CLIPS, NUM_VIDEOS, FRAMES, SIZE, DEVICE=cpu (a dry run without a GPU:
# dali-cpu where dali-gpu would be, VP9 numbered clips), BENCH_ARGS and CHECK_ARGS (added to
# every bench / gpu_check call), TIME_SCALE (multiplies every part's limit), SOAK_ARGS.
set -uo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then  # the header above, without its '# '
  sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"
  exit 0
fi
if ! command -v python >/dev/null; then  # only python3 on PATH (a venv, an image): a wrapper that
  shim=$(mktemp -d)                       # execs it; a symlink would lose the venv, which Python
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$(command -v python3)" > "$shim/python"  # finds from
  chmod +x "$shim/python"                 # the path it was started by
  export PATH="$shim:$PATH"
fi
out=${1:?usage: bash benchmarks/gpu_run.sh OUT_DIR [quick|full|env|clips|check|loader|train|soak]}
mode=${2:-quick}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(realpath "$out")
device=${DEVICE:-cuda}
clips=$(realpath -m "${CLIPS:-/tmp/k400like}")
frames=${FRAMES:-300}
size=${SIZE:-340x256}
scale=${TIME_SCALE:-1}
bench_extra=${BENCH_ARGS:-}
check_extra=${CHECK_ARGS:-}
soak_args=${SOAK_ARGS:---epochs 24 --warmup 8}
cores=$(nproc)
export PYTHONUNBUFFERED=1
status=0
dali=dali-gpu
[[ $device == cpu ]] && dali=dali-cpu
# quick: the loader windows take about 2 s each on the original clips: 4 systems x 2 views x
# (1 untimed + 3 timed rounds) = 32 windows, about 64 s, inside loader_original's 110 s
variants="$dali,$dali+whole,$dali+copy,reference"
case $mode in
  full) num=${NUM_VIDEOS:-64}; rounds=5; iters=5; batch=32; check_videos=32
        variants="$dali,$dali+whole,$dali+sessions4,$dali+copy,reference" ;;
  *) num=${NUM_VIDEOS:-32}; rounds=3; iters=2; batch=32; check_videos=4 ;;
esac
summary="$out/summary.md"
[[ -f $summary ]] || printf '# GPU run (%s)\n\n| part | status | seconds | results |\n| --- | --- | ---: | --- |\n' "$mode" > "$summary"

part() {  # part NAME SECONDS FUNCTION: run under timeout, log, one summary line
  local name=$1 limit
  limit=$(python -c "print(max(1, int($2 * $scale)))")  # timeout 0 would mean none
  local t0=$SECONDS rc
  echo "gpu_run: $name (at most ${limit} s)"
  timeout --kill-after=5 "$limit" bash -c "$3" > >(tee "$out/$name.log") 2>&1
  rc=$?
  local verdict=ok
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then verdict="TIMED OUT after ${limit} s"; status=1
  elif [[ $rc -ne 0 ]]; then verdict="FAILED (exit $rc)"; status=1; fi
  printf '| %s | %s | %d | %s.log |\n' "$name" "$verdict" $((SECONDS - t0)) "$name" >> "$summary"
  echo "gpu_run: $name: $verdict ($((SECONDS - t0)) s)"
  return $rc
}

env_part() {
  DEVICE=$device python - <<'EOF'
import json, os, shutil, subprocess, sys
import torch
info = {"device": os.environ["DEVICE"], "python": sys.version.split()[0], "python_prefix": sys.prefix,
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cpu_cores": os.cpu_count()}
try:
    import nvidia.dali as dali
    info["dali"], info["dali_cuda"] = dali.__version__, getattr(dali, "__cuda_version__", None)
except Exception as exc:
    info["dali"] = f"does not import: {exc}"
from tsn_dali.data.render.executors import cuda_pairing
info["pairing"] = cuda_pairing(info["torch_cuda"], info.get("dali_cuda")) or "torch and DALI agree"
for module in ("av", "decord", "torchcodec", "pynvml"):
    try:
        info[module] = getattr(__import__(module), "__version__", "present")
    except Exception:
        info[module] = None
smi = shutil.which("nvidia-smi")
if smi and info["device"] != "cpu":
    q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"],
                       capture_output=True, text=True).stdout.strip().splitlines()
    info["gpu"], info["driver"], info["memory"], info["compute_capability"] = [x.strip() for x in q[0].split(",")]
    # NVDEC engines per GPU, from NVIDIA's Video Codec SDK support matrix (not read off the device)
    engines = {"H100": 7, "H200": 7, "H800": 7, "A100": 5, "A800": 5, "L40": 3, "L4": 4, "A10": 2, "B200": 7}
    info["nvdec_engines"] = next((n for k, n in engines.items() if k in info["gpu"]), None)
if info["device"] != "cpu":  # what the bench's NVDEC column and DALI's thread pinning rely on
    try:
        import pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        info["nvml_decoder_utilisation"] = pynvml.nvmlDeviceGetDecoderUtilization(handle)[0]
        info["nvml_cpu_affinity"] = [hex(m) for m in pynvml.nvmlDeviceGetCpuAffinity(handle, 4)]
    except Exception as exc:
        info["nvml"] = f"unavailable: {type(exc).__name__}: {exc}"
print(json.dumps(info, indent=1))
EOF
}

clips_part() {
  if [[ ! -f "$clips/demo_train_list_videos.txt" ]]; then
    python -m tsn_dali.data.media.synthetic "$clips" --videos "$num" --classes $((num < 8 ? num : 8)) \
      --val-fraction 0 --frames "$frames" --size "$size" --codec h264 --fps 30 --workers "$cores" --quiet || return 2
  fi
  if [[ ! -f "$clips/gop16/demo_train_list_videos.txt" ]]; then
    python -m tsn_dali.prepare "$clips/demo_train_list_videos.txt" --prefix "$clips/videos_train" \
      --out "$clips/gop16" --gop 16 --workers "$cores" --no-progress || return 2
  fi
  ls "$clips/videos_train" | head -3
}

check_part() {
  # shellcheck disable=SC2086
  python benchmarks/gpu_check.py "$clips/videos_train" --device "$([[ $device == cpu ]] && echo cpu || echo cuda:0)" \
    --numbered 4 --max-videos "$check_videos" --rounds "$rounds" --out "$out/check" $check_extra
}

bench() {  # bench NAME LIST PREFIX ARGS...
  local name=$1 list=$2 prefix=$3
  shift 3
  # shellcheck disable=SC2086
  python -m tsn_dali.bench recipes/k400_r50.yaml --device "$device" --videos "$list" --prefix "$prefix" \
    --reference-workers 16 --gop-videos 0 --rounds "$rounds" --iters "$iters" --batch-size "$batch" \
    --out "$out/$name" "$@" $bench_extra
}

loader_original_part() {
  bench loader_original "$clips/demo_train_list_videos.txt" "$clips/videos_train" --parts loader \
    --executors "$variants" --note "K400-like H.264, the encoder's long GOP"
}

loader_gop16_part() {
  bench loader_gop16 "$clips/gop16/demo_train_list_videos.txt" "$clips/gop16" --parts loader \
    --executors "$variants" --note "the same clips with keyframes every 16 frames"
}

train_part() {
  bench train "$clips/gop16/demo_train_list_videos.txt" "$clips/gop16" --parts model,e2e \
    --executors "$dali,reference" --note "the trainer's step, fed by each loader (GOP-16 clips)"
}

soak_part() {
  # shellcheck disable=SC2086
  python -m tsn_dali.soak --device "$device" --out "$out/soak" $soak_args
}

export out device clips frames size bench_extra check_extra soak_args cores dali num rounds iters batch check_videos \
  variants
export -f env_part clips_part check_part bench loader_original_part loader_gop16_part train_part soak_part
echo "gpu_run: $mode, device $device, $cores CPU cores, results in $out"
case $mode in
  quick|full)  # quick: 25 + 70 + 100 + 110 + 90 + 80 = 475 s at most
    part env 25 env_part
    part clips 70 clips_part || { echo "gpu_run: no clips, nothing else can run" >&2; exit 2; }
    part check 100 check_part
    part loader_original 110 loader_original_part
    part loader_gop16 90 loader_gop16_part
    part train 80 train_part
    [[ $mode == full ]] && part soak 1800 soak_part ;;
  env) part env 30 env_part ;;
  clips) part clips 300 clips_part ;;
  check) part check 600 check_part ;;
  loader) part loader_original 600 loader_original_part; part loader_gop16 600 loader_gop16_part ;;
  train) part train 600 train_part ;;
  soak) part soak 3600 soak_part ;;
  *) echo "gpu_run: unknown mode $mode; expected quick, full, env, clips, check, loader, train or soak" >&2; exit 2 ;;
esac
python benchmarks/gpu_report.py "$out" > /dev/null || status=1
echo "gpu_run: $mode done (exit $status); results: $out/results.md (checks and targets), $summary"
exit $status
