"""Every executor against MMAction2 1.2.0's own test pipeline, pixel by pixel.

    # a throwaway environment: MMAction2 is never a dependency of tsn_dali
    python -m venv --system-site-packages /tmp/mmenv
    /tmp/mmenv/bin/pip install --no-deps mmaction2==1.2.0
    /tmp/mmenv/bin/pip install mmengine==0.10.7 mmcv-lite==2.1.0 opencv-python-headless
    PYTHONPATH=. /tmp/mmenv/bin/python benchmarks/mmaction_parity.py --videos a.mp4 b.avi ...

For each video and each test view (``tsn_test_tencrop``: 25 clips x TenCrop 224 of short
side 256, MMAction2's TSN test; ``tsn_test_threecrop``; ``tsn_val``: 8 segment centres,
CenterCrop 224), MMAction2's transforms (DecordInit, SampleFrames test_mode, DecordDecode,
Resize (-1, 256), TenCrop / ThreeCrop / CenterCrop) give uint8 views; tsn_dali's planner
plans the same view and each executor renders it as uint8. Reported per executor: whether
the frame indices are MMAction2's, and the mean and max |difference| in grey levels.
Writes ``results.json`` and ``results.md`` to ``--out`` (default
``benchmarks/results/mmaction_parity-<device>-<date>/``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402,F401  (PyAV before decord: see tsn_dali.data.index.video_index)
import numpy as np  # noqa: E402

from tsn_dali.config import PROJECT_ROOT, DataConfig  # noqa: E402

# tsn_dali pipeline -> MMAction2's transforms after DecordDecode (short side 256, crop 224)
VIEWS = {
    "tsn_test_tencrop": (dict(num_clips=25), [("Resize", dict(scale=(-1, 256))),
                                              ("TenCrop", dict(crop_size=224))]),
    "tsn_test_threecrop": (dict(num_clips=25), [("Resize", dict(scale=(-1, 256))),
                                                ("ThreeCrop", dict(crop_size=256))]),
    "tsn_val": (dict(num_clips=8), [("Resize", dict(scale=(-1, 256))),
                                    ("CenterCrop", dict(crop_size=224))]),
}


def mmaction_views(path: str, view: str) -> Dict[str, np.ndarray]:
    """MMAction2 1.2.0's test transforms on ``path``: frame indices and uint8 views [V, H, W, C]."""
    from mmaction.datasets import transforms as T

    sampling, rest = VIEWS[view]
    ops = [T.DecordInit(), T.SampleFrames(clip_len=1, frame_interval=1, test_mode=True, **sampling),
           T.DecordDecode()] + [getattr(T, name)(**kw) for name, kw in rest]
    results = {"filename": path, "label": -1, "start_index": 0, "modality": "RGB"}
    for op in ops:
        results = op(results)
    return {"frame_inds": np.asarray(results["frame_inds"]), "views": np.stack(results["imgs"])}


def our_views(path: str, view: str, executors: Dict[str, object]) -> Dict[str, np.ndarray]:
    from tsn_dali.data.plan.planner import ClipPlanner, load_pipeline
    from tsn_dali.data.index.video_index import probe_video

    info = probe_video(path)
    if not info.ok:
        raise SystemExit(f"error: {path}: {info.error}")
    data = DataConfig(num_segments=VIEWS[view][0]["num_clips"], short_side=256, input_size=224)
    plan = ClipPlanner(load_pipeline(view, data)).plan(0, path, 0, info)
    out = {"frame_inds": np.asarray(plan.frame_indices)}
    for label, executor in executors.items():
        out[label] = executor.render([plan])[0].permute(0, 2, 3, 1).cpu().numpy()
    return out


def build_executors(names: Sequence[str], device: str) -> Dict[str, object]:
    from tsn_dali.data.render.executors import build_executor

    out = {}
    for spec in names:
        name, _, decode = spec.partition(":")
        label = name if not decode else f"{name} ({decode} decode)"
        out[label] = build_executor(name, device=device if name != "dali-cpu" else "cpu",
                                    num_threads=2, decode_workers=2, reference_workers=0,
                                    decode=decode or "native")
    return out


def compare(videos: Sequence[str], executors: Dict[str, object], views: Sequence[str]) -> List[dict]:
    rows = []
    for path in videos:
        for view in views:
            ref = mmaction_views(path, view)
            ours = our_views(path, view, executors)
            for label in executors:
                x = ours[label]
                same_shape = x.shape == ref["views"].shape
                d = np.abs(x.astype(np.int16) - ref["views"].astype(np.int16)) if same_shape else None
                rows.append({
                    "video": os.path.basename(path), "view": view, "executor": label,
                    "views": int(x.shape[0]), "same_frames": bool(np.array_equal(ours["frame_inds"],
                                                                                 ref["frame_inds"])),
                    "same_shape": same_shape,
                    "mean": float(d.mean()) if d is not None else None,
                    "max": int(d.max()) if d is not None else None,
                    "share_over_1": float((d > 1).mean()) if d is not None else None})
                r = rows[-1]
                print(f"{r['video']:<36} {view:<20} {label:<26} frames {'=' if r['same_frames'] else '!='} "
                      f"mean {r['mean']} max {r['max']}", flush=True)
    return rows


def write_markdown(path: Path, result: dict) -> None:
    env = result["env"]
    lines = ["# tsn_dali executors against MMAction2 1.2.0's test pipeline", "",
             f"{env['date']}, {env['cpu']}, mmaction2 {env['mmaction2']}, mmcv {env['mmcv']}, "
             f"decord {env['decord']}, DALI {env['dali']}. Per video and view: MMAction2's DecordInit + "
             "SampleFrames (test_mode) + DecordDecode + Resize (-1, 256) + crop against tsn_dali's "
             "planner + executor, uint8 pixels.", "",
             "| video | view | executor | views | frames equal | mean abs diff | max abs diff | values > 1 level apart |",
             "| --- | --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in result["rows"]:
        mean = "-" if r["mean"] is None else f"{r['mean']:.4f}"
        share = "-" if r["share_over_1"] is None else f"{100 * r['share_over_1']:.3f}%"
        lines.append(f"| {r['video']} | {r['view']} | {r['executor']} | {r['views']} | "
                     f"{'yes' if r['same_frames'] else 'NO'} | {mean} | {r['max']} | {share} |")
    lines += ["", f"Command: `{env['command']}`", ""]
    path.write_text("\n".join(lines))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", nargs="+", required=True)
    p.add_argument("--executors", default="reference,dali-cpu,dali-cpu:mmaction",
                   help="name[:decode], comma-separated (dali-gpu on a GPU machine)")
    p.add_argument("--views", default=",".join(VIEWS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        import mmaction
        import mmcv
    except ImportError as exc:
        print(f"error: {exc}: run this with MMAction2 1.2.0 installed (see the docstring)", file=sys.stderr)
        return 1
    from tsn_dali.bench.environment import cpu_name, version

    executors = build_executors(args.executors.split(","), args.device)
    try:
        rows = compare(args.videos, executors, args.views.split(","))
    finally:
        for executor in executors.values():
            executor.close()
    argv_used = list(argv if argv is not None else sys.argv[1:])
    env = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "cpu": cpu_name(), "mmaction2": mmaction.__version__, "mmcv": mmcv.__version__,
           "decord": version("decord"), "dali": version("nvidia.dali"),
           "command": "python benchmarks/mmaction_parity.py " + " ".join(argv_used)}
    date = datetime.date.today().isoformat()
    out = Path(args.out or PROJECT_ROOT / "benchmarks" / "results" / f"mmaction_parity-{args.device}-{date}")
    out.mkdir(parents=True, exist_ok=True)
    result = {"env": env, "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    write_markdown(out / "results.md", result)
    worst = max((r["max"] for r in rows if r["max"] is not None), default=None)
    print(f"mmaction_parity: {len(rows)} comparisons, largest difference {worst} grey level(s), "
          f"frames equal in {sum(r['same_frames'] for r in rows)}/{len(rows)}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
