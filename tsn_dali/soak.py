"""Soak: is a long run steady? ``python -m tsn_dali.soak [--executors dali-cpu,reference] [--epochs 12]``

Generates a dataset (tsn_dali.data.media.synthetic), then for each executor starts a fresh
process that runs ``--epochs`` train + val epochs of a recipe (default recipes/demo.yaml)
with the trainer's own parts (build_loader, TrainStep, tsn_dali.engine.evaluate) and
samples, before the first epoch and after each one (train and val done, nothing forced
to be freed): the process's resident memory (VmRSS) and peak (VmHWM), its OS threads
(``Threads`` of /proc/self/status, DALI's and torch's own included), Python threads, open
file descriptors, child processes (reference DataLoader workers) and their summed RSS,
and CUDA memory allocated/reserved on a GPU. Once more after the loaders are closed.
``--loader-only`` leaves the model out: many more batches in the same time.

Reported per executor over the epochs after ``--warmup``: the RSS growth in MiB per epoch
(least-squares slope) and in all, and the range of each count. Output in ``--out``
(default ``benchmarks/results/soak-<device>-<date>/``): results.json, results.md, soak.png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from tsn_dali import cli
from tsn_dali.config import PROJECT_ROOT, RECIPES_DIR
from tsn_dali.engine.errors import UsageError

DEFAULT_DATA = dict(videos=64, frames=32, width=128, height=96, codec="vp9")
# On a GPU: Kinetics-like H.264, which NVDEC decodes (VP9 below 128x128 it does not: the
# soak would then never exercise NVDEC).
GPU_DATA = dict(DEFAULT_DATA, width=340, height=256, codec="h264")
# The demo recipe, float32 on CPU (no native bf16 on many CPUs), smaller crops for speed.
CPU_SET = ["train.amp='off'", "loader.dtype=float32", "data.input_size=64", "data.short_side=72"]


# --------------------------------------------------------------------------- sampling


def _status() -> Dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])  # kB, or a count
    return out


def _children_rss(pid: int) -> tuple:
    """(count, summed VmRSS in MiB) of the direct child processes of ``pid``."""
    count, kb = 0, 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            status = Path(f"/proc/{entry}/status").read_text()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        count += 1
        kb += next((int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0)
    return count, kb / 1024


def sample() -> dict:
    """This process now: rss/hwm (MiB), OS and Python threads, open fds, children and their
    RSS, CUDA memory (MiB) where CUDA is initialised."""
    st = _status()
    children, children_rss = _children_rss(os.getpid())
    out = {"rss_mib": st.get("VmRSS", 0) / 1024, "hwm_mib": st.get("VmHWM", 0) / 1024,
           "threads": st.get("Threads", 0), "py_threads": threading.active_count(),
           "fds": len(os.listdir("/proc/self/fd")), "children": children,
           "children_rss_mib": children_rss}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda_allocated_mib"] = torch.cuda.memory_allocated() / 2 ** 20
        out["cuda_reserved_mib"] = torch.cuda.memory_reserved() / 2 ** 20
        free, total = torch.cuda.mem_get_info()  # the whole device: DALI's pools, contexts too
        out["cuda_used_mib"] = (total - free) / 2 ** 20
    return out


# --------------------------------------------------------------------------- one executor


def soak_one(recipe, epochs: int, device: str, seed: int = 0, loader_only: bool = False) -> dict:
    """``epochs`` train + val epochs in this process; a sample before, after each, after close.
    ``loader_only``: the loaders' batches are only counted (no model, no step)."""
    import torch

    from tsn_dali.data.render.loader import build_loader
    from tsn_dali.engine import distributed as dist_utils
    from tsn_dali.engine.amp import loader_dtype, resolve_amp
    from tsn_dali.engine.evaluate import accuracy, gather_scores, score_split
    from tsn_dali.engine.optim import build_optimizer
    from tsn_dali.engine.step import TrainStep
    from tsn_dali.train import build_model, seed_everything

    info = dist_utils.setup_distributed(device, recipe.loader.stall_timeout)
    seed_everything(seed, False)
    cfg = recipe.train
    amp = resolve_amp(cfg.amp, info.device).amp
    dtype = loader_dtype(recipe, info.device)
    train_loader = build_loader(recipe, "train", device=info.device, dtype=dtype, seed=seed, progress=False)
    val_loader = build_loader(recipe, "val", device=info.device, dtype=dtype, seed=seed, progress=False)
    if not loader_only:
        model = build_model(recipe.model).to(info.device, memory_format=torch.channels_last)
        step_fn = TrainStep(model, build_optimizer(model, cfg, cfg.lr, info.device), amp=amp,
                            grad_clip=cfg.grad_clip, mean=recipe.data.mean, std=recipe.data.std)
    samples = [dict(epoch=0, **sample())]
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            train_loader.set_epoch(epoch)
            losses, clips, top1 = [], 0, None
            if loader_only:
                clips = sum(int(b.labels.numel()) for b in train_loader)
                sum(1 for _ in val_loader)
            else:
                model.train()
                for batch in train_loader:
                    loss = step_fn.forward(batch.clips, batch.labels)
                    step_fn.update(loss)
                    losses.append(loss.detach())
                    clips += int(batch.labels.numel())
                rows = score_split(model, val_loader, info.device, recipe.data.mean, recipe.data.std, amp)
                top1 = accuracy(*gather_scores(rows, info)[1:], topk=(1,))["top1"]
            seconds = time.perf_counter() - t0
            samples.append(dict(epoch=epoch + 1, seconds=seconds, clips_per_s=clips / seconds,
                                loss=float(torch.stack(losses).float().mean()) if losses else None,
                                top1=top1, **sample()))
            print(f"soak {train_loader.executor_name}: epoch {epoch + 1}/{epochs}, "
                  f"rss {samples[-1]['rss_mib']:.1f} MiB, {samples[-1]['threads']} threads, "
                  f"{seconds:.1f} s", flush=True)
    finally:
        name = train_loader.executor_name
        train_loader.close()
        val_loader.close()
    time.sleep(0.5)  # threads that were told to stop, stopping
    closed = dict(epoch=None, **sample())
    return {"executor": name, "device": str(info.device), "train_batches": len(train_loader),
            "val_batches": len(val_loader), "samples": samples, "after_close": closed}


# --------------------------------------------------------------------------- figures


def summarize(samples: Sequence[dict], warmup: int) -> dict:
    """Figures over the epochs after ``warmup``: RSS slope (MiB/epoch, least squares), RSS
    change first -> last, and min/max of threads, Python threads, fds, children."""
    steady = [s for s in samples if s["epoch"] is not None and s["epoch"] > warmup]
    if len(steady) < 2:
        raise ValueError(f"soak: {len(steady)} epoch(s) after a warm-up of {warmup}; expected at least 2")
    x = np.array([s["epoch"] for s in steady], dtype=np.float64)
    out = {"epochs": [int(v) for v in x], "warmup": warmup}
    for key in ("rss_mib", "children_rss_mib", "cuda_allocated_mib", "cuda_reserved_mib", "cuda_used_mib"):
        if key not in steady[0]:
            continue
        y = np.array([s[key] for s in steady], dtype=np.float64)
        out[key] = {"slope_per_epoch": float(np.polyfit(x, y, 1)[0]), "change": float(y[-1] - y[0]),
                    "first": float(y[0]), "last": float(y[-1]), "min": float(y.min()),
                    "max": float(y.max())}
    for key in ("threads", "py_threads", "fds", "children"):
        values = [int(s[key]) for s in steady]
        out[key] = {"min": min(values), "max": max(values)}
    return out


def markdown(results: dict) -> str:
    what = "loader-only (no model) " if results.get("loader_only") else ""
    lines = [f"# Soak: {results['epochs']} {what}train + val epochs per executor", "",
             f"{results['machine']}; {results['date']}; recipe {results['recipe']} "
             f"({' '.join(results['overrides'])}); {results['data']['videos']} generated "
             f"{results['data']['codec']} videos ({results['data']['width']}x{results['data']['height']}, "
             f"{results['data']['frames']} frames); figures over epochs {results['warmup'] + 1}-"
             f"{results['epochs']} (after a warm-up of {results['warmup']}); load average at the end "
             f"{results['load_average'][0]:.1f} (other jobs share the machine: epoch times are noisy).", "",
             "| executor | RSS growth (MiB/epoch) | RSS first -> last (min-max) MiB | OS threads "
             "| Python threads | open fds | children (their RSS growth, MiB/epoch) | epoch s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def span(d):
        return f"{d['min']}" if d["min"] == d["max"] else f"{d['min']}-{d['max']}"

    for run in results["runs"]:
        f = run["figures"]
        secs = [s["seconds"] for s in run["samples"] if s.get("seconds")]
        kids = f"{span(f['children'])} ({f['children_rss_mib']['slope_per_epoch']:+.2f})" \
            if f["children"]["max"] else "0"
        lines.append(f"| {run['executor']} | {f['rss_mib']['slope_per_epoch']:+.2f} | "
                     f"{f['rss_mib']['first']:.1f} -> {f['rss_mib']['last']:.1f} "
                     f"({f['rss_mib']['min']:.1f}-{f['rss_mib']['max']:.1f}) | {span(f['threads'])} | "
                     f"{span(f['py_threads'])} | {span(f['fds'])} | {kids} | {np.median(secs):.1f} |")
    for run in results["runs"]:
        f = run["figures"]
        if "cuda_used_mib" in f:
            lines.append(f"\n{run['executor']}: device memory in use (all of the GPU's, DALI's pools "
                         f"included) {f['cuda_used_mib']['first']:.0f} -> {f['cuda_used_mib']['last']:.0f} MiB "
                         f"({f['cuda_used_mib']['slope_per_epoch']:+.2f} MiB/epoch); torch reserved "
                         f"{f['cuda_reserved_mib']['first']:.0f} -> {f['cuda_reserved_mib']['last']:.0f} MiB.")
    lines += ["", "Per epoch (RSS MiB / OS threads):", "",
              "| epoch | " + " | ".join(r["executor"] for r in results["runs"]) + " |",
              "| --- |" + " --- |" * len(results["runs"])]
    for i in range(results["epochs"] + 1):
        cells = []
        for run in results["runs"]:
            s = run["samples"][i]
            cells.append(f"{s['rss_mib']:.1f} / {s['threads']}")
        lines.append(f"| {'setup' if i == 0 else i} | " + " | ".join(cells) + " |")
    cells = [f"{r['after_close']['rss_mib']:.1f} / {r['after_close']['threads']}" for r in results["runs"]]
    lines.append("| closed | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{results['command']}`", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    for run in results["runs"]:
        epochs = [s["epoch"] for s in run["samples"]]
        ax1.plot(epochs, [s["rss_mib"] for s in run["samples"]], marker="o", ms=3, label=run["executor"])
        ax2.plot(epochs, [s["threads"] for s in run["samples"]], marker="o", ms=3, label=run["executor"])
    for ax, title in ((ax1, "resident memory (MiB)"), (ax2, "OS threads")):
        ax.axvspan(0, results["warmup"], color="0.9")
        ax.set_xlabel("epoch (0: before the first)")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m tsn_dali.soak", description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(RECIPES_DIR / "demo.yaml"))
    p.add_argument("--executors", help="comma-separated (default dali-cpu,reference; dali-gpu,reference "
                   "with --device cuda)")
    p.add_argument("--epochs", type=int, default=24)
    p.add_argument("--warmup", type=int, default=8, help="epochs left out of the figures (default 8: "
                   "the allocators' and DataLoader workers' memory settles over the first few)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--loader-only", action="store_true", help="no model: the loaders' batches are only "
                   "counted (many more batches per minute)")
    p.add_argument("--data", help="dataset folder (generated there if absent; default a temp folder)")
    for key, value in DEFAULT_DATA.items():
        gpu = GPU_DATA[key]
        p.add_argument(f"--{key}", type=type(value), default=None,
                       help=f"generated data (default {value}" + (f"; {gpu} on a GPU)" if gpu != value else ")"))
    p.add_argument("--set", dest="overrides", action="append", default=None, metavar="KEY=VALUE",
                   help="recipe overrides (default on CPU: " + " ".join(CPU_SET) + ")")
    p.add_argument("--out", help="results folder (default benchmarks/results/soak-<device>-<date>)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one executor, write JSON
    p.add_argument("--worker-json", help=argparse.SUPPRESS)
    return p


def _recipe(args, data: dict):
    from tsn_dali.config import load_recipe

    overrides = [f"data.root={data['out']}", f"data.train_list={data['train_list']}",
                 f"data.train_prefix={data['train_prefix']}", f"data.val_list={data['val_list']}",
                 f"data.val_prefix={data['val_prefix']}", f"model.num_classes={data['num_classes']}",
                 f"data.index_cache={os.path.join(data['out'], '.tsn_dali_index')}"]
    if args.worker:
        overrides.append(f"loader.executor={args.worker}")
    return load_recipe(args.recipe, overrides + _overrides(args))


def _overrides(args) -> List[str]:
    if args.overrides is not None:
        return list(args.overrides)
    return CPU_SET if args.device == "cpu" else []


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                 if x.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def data_spec(args) -> dict:
    """The generated data: what the command line gives, else the device's defaults."""
    defaults = GPU_DATA if str(args.device).startswith("cuda") else DEFAULT_DATA
    return {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in defaults.items()}


def run(argv: Optional[List[str]] = None) -> dict:
    """The soak as the command line says; returns the results (a worker: its one run)."""
    args = build_parser().parse_args(argv)
    from tsn_dali.data.media.synthetic import SyntheticSpec, generate

    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="tsn_dali_soak_")
        args.data = tmp.name
    spec = SyntheticSpec(**data_spec(args))
    data = generate(args.data, spec, progress=False)
    if args.worker:  # one executor in this process
        result = soak_one(_recipe(args, data), args.epochs, args.device, loader_only=args.loader_only)
        Path(args.worker_json).write_text(json.dumps(result))
        return result
    if args.epochs - args.warmup < 2:
        raise UsageError(f"--epochs {args.epochs} --warmup {args.warmup}: expected at least 2 "
                         "epochs after the warm-up")
    _recipe(args, data)  # a bad recipe or override: one error here, before any worker starts
    date = datetime.date.today().isoformat()
    out = Path(args.out or PROJECT_ROOT / "benchmarks" / "results" / f"soak-{args.device}-{date}")
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        names = args.executors or ("dali-cpu,reference" if args.device == "cpu" else "dali-gpu,reference")
        for name in [x.strip() for x in names.split(",") if x.strip()]:
            runs.append(_run_worker(args, name, out))
    finally:
        if tmp is not None:
            tmp.cleanup()
    for run in runs:
        run["figures"] = summarize(run["samples"], args.warmup)
    results = {"date": date, "machine": _machine(), "recipe": os.path.relpath(args.recipe, PROJECT_ROOT),
               "overrides": _overrides(args), "epochs": args.epochs, "warmup": args.warmup,
               "loader_only": args.loader_only,
               "data": data_spec(args),
               "load_average": os.getloadavg(), "command": " ".join(
                   ["python -m tsn_dali.soak"] + list(argv if argv is not None else sys.argv[1:])), "runs": runs}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    plot(results, out / "soak.png")
    print(markdown(results))
    return results


def _run_worker(args, name: str, out: Path) -> dict:
    """One executor in a fresh process (its memory and threads are its own)."""
    path = out / f".worker-{name}.json"
    cmd = [sys.executable, "-m", "tsn_dali.soak", "--worker", name, "--worker-json", str(path),
           "--recipe", args.recipe, "--epochs", str(args.epochs), "--device", args.device,
           "--data", args.data] + [f"--{k}={v}" for k, v in data_spec(args).items()]
    if args.loader_only:
        cmd.append("--loader-only")
    for text in _overrides(args):
        cmd += ["--set", text]
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise SoakFailed(f"soak of {name} failed (exit status {proc.returncode})")
    result = json.loads(path.read_text())
    path.unlink()
    return result


class SoakFailed(RuntimeError):
    """A worker process of the soak failed (its own output says why)."""


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tsn_dali.soak``: the exit status (tsn_dali.cli)."""
    return cli.run_main(lambda: run(argv), more_errors=(SoakFailed,))


if __name__ == "__main__":
    raise SystemExit(cli.entry(main))
