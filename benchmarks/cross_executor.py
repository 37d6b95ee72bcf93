"""Cross-executor accuracy: train the demo with one executor, test it with another.

    python benchmarks/cross_executor.py [--device cpu] [--train dali-cpu,reference]
        [--test dali-cpu,dali-cpu:mmaction,reference] [--seeds 0,1] [--out DIR]

The executors decode the demo's VP9 videos differently: dali-cpu with DALI's own decoder
(``loader.decode: native``; its YUV->RGB conversion upsamples chroma bilinearly), the
reference executor and ``dali-cpu:mmaction`` (``loader.decode: mmaction``) with decord,
as MMAction2's DecordDecode (swscale, nearest chroma sample). This script measures what
that costs a model: it trains ``recipes/demo.yaml`` once per train executor (and seed),
tests every checkpoint with every test executor (the recipe's 5 clips x 3 crops), and
renders the test views of the first ``--pixel-videos`` videos with each test executor
to report how far their pixels are from the reference executor's (grey levels, uint8).

Writes ``results.json`` and ``results.md`` to ``--out`` (default
``benchmarks/results/cross_executor-<device>-<date>/``). Training runs in
``--work-dir/<executor>-seed<S>``; a finished one is reused (``--resume``), so a rerun
after an interruption continues where it stopped.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tsn_dali.config import PROJECT_ROOT, RECIPES_DIR, load_recipe  # noqa: E402

# torch and the video writer are imported once the command line is read (--help at once)

RECIPE = RECIPES_DIR / "demo.yaml"


def parse_executor(spec: str) -> Dict[str, str]:
    """``name[:decode]`` -> {"label", "executor", "decode"} (decode defaults to native)."""
    name, _, decode = spec.partition(":")
    decode = decode or "native"
    label = name if decode == "native" else f"{name} ({decode} decode)"
    return {"label": label, "executor": name, "decode": decode}


def recipe_args(data_root: str, ex: Dict[str, str], device: str, extra: Sequence[str]) -> List[str]:
    out = ["--device", device, "--executor", ex["executor"], "--no-progress",
           "--set", f"data.root={data_root}", "--set", f"loader.decode={ex['decode']}"]
    for text in extra:
        out += ["--set", text]
    return out


def train_once(data_root: str, ex: Dict[str, str], seed: int, work: Path, device: str,
               extra: Sequence[str]) -> dict:
    """Train the demo recipe with ``ex`` (resumes a run left in ``work``); returns the summary."""
    from tsn_dali import train as tsn_train

    argv = [str(RECIPE), "--work-dir", str(work), "--seed", str(seed)]
    if (work / "latest.pth").is_file():
        argv.append("--resume")
    summary = tsn_train.run(argv + recipe_args(data_root, ex, device, extra))
    summary["seconds"] = sum(h.get("seconds", 0.0) for h in summary["history"])  # all epochs, resumed too
    return summary


def test_once(data_root: str, ex: Dict[str, str], checkpoint: str, device: str,
              extra: Sequence[str]) -> dict:
    from tsn_dali import test as tsn_test

    m = tsn_test.run([str(RECIPE), checkpoint] + recipe_args(data_root, ex, device, extra))
    return {k: m[k] for k in ("top1", "top5", "mean_class_accuracy", "num_videos", "num_views",
                              "executor", "amp")}


def render_views(data_root: str, ex: Dict[str, str], device: str, num_videos: int,
                 extra: Sequence[str]) -> np.ndarray:
    """uint8 test views ``[videos, V, H, W, C]`` of the first ``num_videos`` test videos."""
    from tsn_dali.data.render.executors import build_executor
    from tsn_dali.data.render.loader import build_loader

    recipe = load_recipe(RECIPE, [f"data.root={data_root}"] + list(extra))
    cfg = recipe.loader
    executor = build_executor(ex["executor"], device=device, num_threads=cfg.num_threads,
                              decode_workers=cfg.decode_workers, reference_workers=0,
                              decode=ex["decode"])
    loader = build_loader(recipe, "test", device=device, executor=executor, dtype="uint8",
                          progress=False)
    out = []
    try:
        for batch in loader:
            keep = (batch.samples >= 0).cpu()
            out.append(batch.clips.cpu()[keep].permute(0, 1, 3, 4, 2).numpy())
            if sum(len(x) for x in out) >= num_videos:
                break
    finally:
        loader.close()
        executor.close()
    return np.concatenate(out)[:num_videos]


def pixel_differences(views: Dict[str, np.ndarray], against: str) -> Dict[str, dict]:
    """Per executor: mean and max |difference| to ``against`` and the share of values more
    than 8 grey levels apart."""
    ref = views[against].astype(np.int16)
    out = {}
    for label, x in views.items():
        d = np.abs(x.astype(np.int16) - ref)
        out[label] = {"mean": float(d.mean()), "max": int(d.max()),
                      "share_over_8": float((d > 8).mean())}
    return out


def write_markdown(path: Path, result: dict) -> None:
    tests = [t["label"] for t in result["test_executors"]]
    env = result["env"]
    lines = [
        "# Cross-executor accuracy: the demo trained with one executor, tested with another",
        "",
        f"{env['date']}, {env['device']} ({env['cpu_count']} CPU cores, load average at start "
        f"{', '.join(f'{v:.1f}' for v in env['load_average_at_start'])}), torch {env['torch']}, "
        f"DALI {env['dali']}, decord {env['decord']}. Recipe `{result['recipe']}`"
        + (f" with `{' '.join(result['overrides'])}`" if result["overrides"] else "")
        + f", amp {result['amp']}; {result['num_test_videos']} held-out VP9 videos x "
        f"{result['num_views']} views; seeds {', '.join(map(str, result['seeds']))}.",
        "",
        "Top-1 (%) on the held-out videos (mean over seeds; each seed's figure in results.json):",
        "",
        "| trained with \\ tested with | " + " | ".join(tests) + " |",
        "| --- | " + " | ".join("---:" for _ in tests) + " |",
    ]
    for train in result["train_executors"]:
        row = [f"{np.mean([r['tests'][t]['top1'] for r in result['runs'] if r['train'] == train['label']]):.2f}"
               for t in tests]
        lines.append(f"| {train['label']} | " + " | ".join(row) + " |")
    lines += ["", "Per training seed (one held-out video is "
              f"{100 / max(result['num_test_videos'], 1):.2f} points):", "",
              "| trained with | seed | " + " | ".join(tests) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in tests) + " |"]
    for r in result["runs"]:
        lines.append(f"| {r['train']} | {r['seed']} | "
                     + " | ".join(f"{r['tests'][t]['top1']:.2f}" for t in tests) + " |")
    lines += ["", f"Pixels of the test views ({result['pixel_videos']} videos, uint8) against the "
              f"{result['pixel_reference']} executor:", "",
              "| executor | mean abs diff (levels) | max abs diff | values > 8 levels apart |",
              "| --- | ---: | ---: | ---: |"]
    for label, d in result["pixels"].items():
        lines.append(f"| {label} | {d['mean']:.3f} | {d['max']} | {100 * d['share_over_8']:.2f}% |")
    lines += ["", f"Command: `{env['command']}`", ""]
    path.write_text("\n".join(lines))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--train", default="dali-cpu,reference", help="train executors, name[:decode]")
    p.add_argument("--test", default="dali-cpu,dali-cpu:mmaction,reference",
                   help="test executors, name[:decode] (decode: native | mmaction)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--data-dir", default="data/demo", help="the demo dataset (generated if absent)")
    p.add_argument("--work-dir", default="work_dirs/cross_executor")
    p.add_argument("--out", default=None)
    p.add_argument("--pixel-videos", type=int, default=16)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quick", action="store_true", help="the demo's --quick sizes (a smoke test)")
    args = p.parse_args(argv)
    import torch

    from tsn_dali.data.media.synthetic import SyntheticSpec, generate
    from tsn_dali.demo import QUICK_DATA, QUICK_SET

    if args.quick:
        args.overrides = QUICK_SET + args.overrides

    train_ex = [parse_executor(s) for s in args.train.split(",") if s]
    test_ex = [parse_executor(s) for s in args.test.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    date = datetime.date.today().isoformat()
    out = Path(args.out or PROJECT_ROOT / "benchmarks" / "results" / f"cross_executor-{args.device}-{date}")
    load = list(os.getloadavg())
    spec = SyntheticSpec(codec="vp9", **(QUICK_DATA if args.quick else {}))
    data = generate(args.data_dir, spec, progress=False)
    root = data["out"]

    runs = []
    for ex in train_ex:
        for seed in seeds:
            work = Path(args.work_dir) / f"{ex['executor']}-{ex['decode']}-seed{seed}"
            summary = train_once(root, ex, seed, work, args.device, args.overrides)
            tests = {t["label"]: test_once(root, t, summary["checkpoint"], args.device, args.overrides)
                     for t in test_ex}
            runs.append({"train": ex["label"], "seed": seed, "train_seconds": summary["seconds"],
                         "final_val_top1": summary["history"][-1].get("top1"), "tests": tests})
            print(f"cross_executor: trained with {ex['label']} (seed {seed}): "
                  + ", ".join(f"{k} {v['top1']:.2f}%" for k, v in tests.items()), flush=True)

    labels = [t["label"] for t in test_ex]
    reference = next((t["label"] for t in test_ex if t["executor"] == "reference"), labels[0])
    views = {t["label"]: render_views(root, t, args.device, args.pixel_videos, args.overrides)
             for t in test_ex}
    first = runs[0]["tests"][labels[0]]
    from tsn_dali.bench.environment import environment

    env = environment(torch.device(args.device), list(argv if argv is not None else sys.argv[1:]))
    env["command"] = "python benchmarks/cross_executor.py " + " ".join(argv if argv is not None else sys.argv[1:])
    env["load_average_at_start"] = load
    env["platform"] = platform.platform()
    result = {"env": env, "recipe": str(RECIPE.relative_to(PROJECT_ROOT)), "overrides": args.overrides,
              "amp": first["amp"], "num_test_videos": first["num_videos"], "num_views": first["num_views"],
              "seeds": seeds, "train_executors": train_ex, "test_executors": test_ex, "runs": runs,
              "pixel_videos": int(len(views[reference])), "pixel_reference": reference,
              "pixels": pixel_differences(views, reference)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    write_markdown(out / "results.md", result)
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
