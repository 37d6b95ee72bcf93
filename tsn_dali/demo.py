"""The end-to-end demo: ``python -m tsn_dali.demo [--work-dir work_dirs/demo] [--quick]``.

Generates the synthetic dataset (tsn_dali.data.media.synthetic) unless it is already there,
indexes it, trains recipes/demo.yaml (TSN, ResNet-18 from scratch), tests the last
checkpoint with the recipe's multi-view protocol (5 clips x 3 crops), prints top-1 and
clips/s, and writes ``curves.png`` (loss and val top-1 per epoch) and ``report.md`` in
the work dir.

Codec: on a machine whose data loader is dali-gpu the videos are H.264 (NVDEC decodes
them); elsewhere VP9, which DALI's CPU decoder reads natively (it cannot decode H.264:
with H.264, dali-cpu decodes with PyAV/decord and only augments in DALI).
``--quick`` is the CI-sized run: fewer, smaller videos, smaller crops, fewer epochs.

Start-up: torch, the video writer and matplotlib are imported where they are used, so that
``--help``, a bad command line and a recipe error answer at once.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from tsn_dali import cli
from tsn_dali.config import RECIPES_DIR, load_recipe

if TYPE_CHECKING:  # annotations only
    from tsn_dali.data.media.synthetic import SyntheticSpec

RECIPE = RECIPES_DIR / "demo.yaml"

# --quick: dataset and recipe overrides for a CI-sized run (about a minute on 2 CPU cores).
QUICK_DATA = dict(videos=96, frames=16, width=96, height=72)
QUICK_SET = ["data.input_size=64", "data.short_side=72", "train.epochs=10", "train.milestones=[7, 9]",
             "train.log_interval=3"]

LOADER_NOTES = {
    "dali-gpu": "DALI on the GPU: NVDEC decodes, crops, flips and normalisation on the GPU",
    "dali-cpu": "DALI on the CPU",
    "reference": "reference executor (CPU worker processes: decode, crops, flips, resize in numpy/OpenCV)",
}


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m tsn_dali.demo", description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", default="work_dirs/demo", help="checkpoints, plot, report")
    p.add_argument("--data-dir", default=None,
                   help="where the dataset is generated (default data/demo, data/demo_quick with --quick)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--executor", default="auto", help="auto | dali-gpu | dali-cpu | reference")
    p.add_argument("--codec", default=None, choices=("h264", "vp9"),
                   help="video codec (default: h264 for dali-gpu, vp9 otherwise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a small, fast run (CI)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra recipe overrides, passed to train and test")
    p.add_argument("--no-progress", action="store_true")
    return p


def loader_description(executor: str, codec: str) -> str:
    """One line saying which loader ran and who decoded the videos."""
    note = LOADER_NOTES.get(executor, executor)
    if executor == "dali-cpu":
        if codec == "vp9":
            note += ": DALI decodes the VP9 videos and crops/flips/normalises"
        else:
            note += f": PyAV/decord decode the {codec} videos (DALI's CPU decoder cannot), DALI crops/flips/normalises"
    return f"{executor} ({note})"


def plot_curves(history: List[dict], test_top1: Optional[float], path: Path) -> Path:
    """Train loss and val top-1 per epoch, side by side (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [h["loss"] for h in history], "o-")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train loss")
    ax_loss.grid(alpha=0.3)
    val = [(h["epoch"], h["top1"]) for h in history if h.get("top1") is not None]
    if val:
        ax_acc.plot(*zip(*val), "o-", label="val top-1 (1 clip, centre crop)")
    if test_top1 is not None:
        ax_acc.axhline(test_top1, color="C2", linestyle="--", label=f"test top-1 {test_top1:.1f}%")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("top-1 (%)")
    ax_acc.set_ylim(0, 100)
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right", fontsize=8)
    fig.suptitle("tsn_dali demo: TSN ResNet-18 on generated videos")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(path: Path, *, args, spec: SyntheticSpec, data_dir: str, loader: str,
                 device: str, times: dict, train: dict, metrics: dict) -> Path:
    """A short markdown report: what ran, where, how long, how well."""
    import torch

    lines = [
        "# tsn_dali demo" + (" (--quick)" if args.quick else ""),
        "",
        f"- dataset: {data_dir}: {spec.classes} classes, {spec.videos} videos "
        f"({spec.frames} frames, {spec.width}x{spec.height}, {spec.codec}), seed {spec.seed}",
        f"- recipe: {RECIPE.relative_to(RECIPES_DIR.parent)}"
        + (f" with {' '.join(overrides(args))}" if overrides(args) else ""),
        f"- device: {device} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads)",
        f"- data loader: {loader}",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in times.items()]
    lines += ["", "| epoch | loss | lr | val top-1 (%) | train clips/s |", "| ---: | ---: | ---: | ---: | ---: |"]
    for h in train["history"]:
        top = "-" if h.get("top1") is None else f"{h['top1']:.2f}"
        lines.append(f"| {h['epoch']} | {h['loss']:.4f} | {h['lr']:.4g} | {top} | {h['clips_per_s']:.1f} |")
    lines += [
        "",
        f"Test ({metrics['num_videos']} held-out videos x {metrics['num_views']} views, "
        f"checkpoint {metrics['checkpoint']}):",
        "",
        f"- top-1 {metrics['top1']:.2f}%, top-5 {metrics['top5']:.2f}%, "
        f"mean class accuracy {metrics['mean_class_accuracy']:.2f}%",
        f"- {metrics['clips_per_s']:.2f} videos/s ({metrics['views_per_s']:.1f} views/s) at test",
        "",
        "![loss and accuracy](curves.png)",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def write_results(path: Path, *, args, times: dict, train_rate: float, metrics: dict, executor: str,
                  load: tuple) -> Path:
    """The run's figures as JSON beside report.md: what docs/measurements.md and the README
    quote (tests/test_docs.py compares them with the committed copies there)."""
    import json

    import torch

    figures = {
        "date": time.strftime("%Y-%m-%d"), "quick": bool(args.quick), "overrides": overrides(args),
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_model": _cpu_model(),
                    "cores": os.cpu_count(), "torch": torch.__version__},
        "load_average": {"start": round(load[0], 2), "end": round(os.getloadavg()[0], 2)},
        "executor": metrics.get("executor", executor), "amp": metrics.get("amp"),
        "top1": metrics["top1"], "top5": metrics["top5"], "mean_class_accuracy": metrics["mean_class_accuracy"],
        "test_videos": metrics["num_videos"], "test_views": metrics["num_views"],
        "seconds": {k: round(v, 1) for k, v in times.items()}, "train_clips_per_s": round(train_rate, 1),
        "test_videos_per_s": round(metrics["clips_per_s"], 2)}
    path.write_text(json.dumps(figures, indent=1) + "\n")
    return path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        return ""


def overrides(args) -> List[str]:
    return (QUICK_SET if args.quick else []) + list(args.overrides)


def check_args(args) -> str:
    """The device, after checking --set, --executor and --device as train would (before any
    video is generated; the recipe before torch is imported); errors give train's statuses."""
    load_recipe(RECIPE, overrides(args) + [f"loader.executor={args.executor}"])
    from tsn_dali.engine.distributed import resolve_device

    return resolve_device(args.device)


def run(args) -> dict:
    """The demo's stages in order; returns train summary, test metrics and timings."""
    device = check_args(args)
    from tsn_dali import test as tsn_test
    from tsn_dali import train as tsn_train
    from tsn_dali.data.index import build_index
    from tsn_dali.data.media.synthetic import SyntheticSpec, generate
    from tsn_dali.data.render.executors import resolve_executor_name

    executor = resolve_executor_name(args.executor, device)
    codec = args.codec or ("h264" if executor == "dali-gpu" else "vp9")
    data_dir = args.data_dir or ("data/demo_quick" if args.quick else "data/demo")
    spec = SyntheticSpec(codec=codec, seed=args.seed, **(QUICK_DATA if args.quick else {}))
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    times = {}
    t_all = time.perf_counter()
    load = os.getloadavg()

    t0 = time.perf_counter()
    data = generate(data_dir, spec, progress=progress)
    times["generate"] = time.perf_counter() - t0
    print(f"demo: dataset {data['out']}: " + (f"{data['written']} videos written" if data["written"]
                                              else "already complete"), flush=True)

    t0 = time.perf_counter()
    paths = []
    for split in ("train", "val"):
        with open(os.path.join(data["out"], data[f"{split}_list"]), encoding="utf-8") as fh:
            paths += [os.path.join(data["out"], data[f"{split}_prefix"], line.split()[0])
                      for line in fh if line.strip()]
    index = build_index(paths, cache_dir=os.path.join(data["out"], ".tsn_dali_index"), workers=2,
                        progress=progress)
    times["index"] = time.perf_counter() - t0
    if index.bad:
        print(index.report(), file=sys.stderr)
    loader = loader_description(executor, codec)
    print(f"demo: {len(paths)} videos indexed; data loader: {loader}", flush=True)

    common = ["--device", device, "--executor", executor, "--set", f"data.root={data['out']}"]
    for text in overrides(args):
        common += ["--set", text]
    quiet = ["--no-progress"] if not progress else []

    t0 = time.perf_counter()
    summary = tsn_train.run([str(RECIPE), "--work-dir", str(work_dir), "--seed", str(args.seed)]
                             + common + quiet)
    times["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    metrics = tsn_test.run([str(RECIPE), summary["checkpoint"]] + common + quiet)
    times["test"] = time.perf_counter() - t0
    times["total"] = time.perf_counter() - t_all

    history = summary["history"]
    train_rate = sum(h["clips_per_s"] for h in history) / max(len(history), 1)
    plot = plot_curves(history, metrics["top1"], work_dir / "curves.png")
    report = write_report(work_dir / "report.md", args=args, spec=spec, data_dir=data["out"],
                          loader=loader, device=device, times=times, train=summary, metrics=metrics)
    results = write_results(work_dir / "results.json", args=args, times=times, train_rate=train_rate,
                            metrics=metrics, executor=executor, load=load)
    print(f"demo: test top-1 {metrics['top1']:.2f}% (top-5 {metrics['top5']:.2f}%, mean class "
          f"{metrics['mean_class_accuracy']:.2f}%) on {metrics['num_videos']} held-out videos x "
          f"{metrics['num_views']} views", flush=True)
    print(f"demo: train {train_rate:.1f} clips/s, test {metrics['clips_per_s']:.2f} videos/s "
          f"({metrics['views_per_s']:.1f} views/s); data loader {metrics.get('executor', executor)}",
          flush=True)
    print(f"demo: {times['total']:.0f} s in all (" + ", ".join(
        f"{k} {v:.0f} s" for k, v in times.items() if k != "total") + ")", flush=True)
    print(f"demo: wrote {plot}, {report} and {results.name}", flush=True)
    return {"train": summary, "test": metrics, "times": times, "executor": executor, "codec": codec,
            "data_dir": data["out"], "plot": str(plot), "report": str(report), "results": str(results)}


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tsn_dali.demo``: the exit status (tsn_dali.cli), as train's for the same
    arguments: a bad --set or --executor 1, a bad --device or command line 2."""
    return cli.run_main(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(cli.entry(main))
