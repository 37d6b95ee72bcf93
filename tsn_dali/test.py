"""Test a checkpoint on a recipe's test split: ``python -m tsn_dali.test RECIPE CKPT [--dump result.pkl]``.

    torchrun --nproc_per_node=8 -m tsn_dali.test recipes/k400_r50.yaml work_dirs/k400_r50/best.pth

The test pipeline gives the views (``tsn_test_tencrop``: 25 clips x 10 crops for K400);
``model.predict`` averages them (MMAction2 average_clips). Reported: top-1, top-5 and mean
class accuracy (MMAction2 AccMetric rules, in percent) beside the recipe's reported numbers.
Under torchrun every rank scores its shard; scores are gathered by sample id, so each
video counts exactly once (``samples == -1`` padding is dropped).

The checkpoint may be a tsn_dali one (``{'model', 'recipe', ...}``) or an MMAction2 one
(``{'state_dict': backbone.* / cls_head.fc_cls.*}``, converted on the fly).

Start-up: torch and the engine's torch parts are imported in the functions that use them, so
that ``--help``, a bad command line and a recipe error answer before torch is imported.
"""
from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from tsn_dali import cli
from tsn_dali.config import CHOICES, load_recipe
from tsn_dali.engine.errors import EvaluationError, UsageError
from tsn_dali.engine.logs import progress_bar
from tsn_dali.train import build_model

if TYPE_CHECKING:  # annotations only
    import numpy as np
    import torch


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m tsn_dali.test", description=__doc__.splitlines()[0])
    p.add_argument("recipe", help="recipe YAML (a path, or a file name under recipes/)")
    p.add_argument("checkpoint", help="tsn_dali or MMAction2 checkpoint (.pth)")
    p.add_argument("--dump", help="write per-video predictions to this pickle (MMAction2 --dump form)")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--executor", help="auto | dali-gpu | dali-cpu | reference (sets loader.executor)")
    p.add_argument("--amp", choices=CHOICES["train.amp"],
                   help="autocast dtype (default: train.amp; auto picks per device); off scores in float32, "
                        "as MMAction2 tests")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read a checkpoint with full unpickling: it can run code; trusted files only")
    p.add_argument("--no-progress", action="store_true")
    return p


def load_weights(model: torch.nn.Module, path, recipe, allow_pickle: bool = False) -> str:
    """Load a tsn_dali or MMAction2 checkpoint into ``model``; returns which kind it was.
    Nothing in the file runs unless ``allow_pickle`` (engine.checkpoint.load_checkpoint)."""
    from tsn_dali.engine.checkpoint import load_checkpoint
    from tsn_dali.models.weights import check_state_dict, model_state_from

    ckpt = load_checkpoint(path, allow_pickle=allow_pickle)
    kind = "tsn_dali" if isinstance(ckpt.get("model"), dict) else "mmaction2"
    state = model_state_from(ckpt, path, recipe.model.backbone)
    hint = (f" (recipe {recipe.source}: model.backbone={recipe.model.backbone}, "
            f"model.num_classes={recipe.model.num_classes})")
    check_state_dict(model, state, path, hint)
    model.load_state_dict(state)
    return kind


def dump_records(scores: np.ndarray, labels: np.ndarray) -> List[dict]:
    """One dict per video, in video order, as MMAction2's ``tools/test.py --dump`` writes them
    (mmengine DumpResults of ``ActionDataSample.to_dict()``): ``pred_score`` float tensor
    [num_classes], ``pred_label`` and ``gt_label`` int64 tensors [1], ``num_classes``."""
    import numpy as np
    import torch

    out = []
    for score, label in zip(scores, labels):
        score_t = torch.from_numpy(np.ascontiguousarray(score, dtype=np.float32))
        out.append({"num_classes": int(score_t.numel()),
                    "gt_label": torch.tensor([int(label)], dtype=torch.int64),
                    "pred_score": score_t,
                    "pred_label": torch.tensor([int(score_t.argmax())], dtype=torch.int64)})
    return out


def compute_metrics(scores: np.ndarray, labels: np.ndarray, topk) -> dict:
    """``top{k}`` and ``mean_class_accuracy`` in percent (tsn_dali.engine.evaluate.accuracy)."""
    from tsn_dali.engine.evaluate import accuracy

    return accuracy(scores, labels, topk)


def load_test_recipe(args):
    """The recipe with --set and --executor applied."""
    overrides = list(args.overrides) + ([f"loader.executor={args.executor}"] if args.executor else [])
    return load_recipe(args.recipe, overrides)


PRECISIONS = {"off": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}


def precision_line(amp, frames_dtype: str) -> str:
    """The first line of a test run: the precision scores are computed in (``amp``, an
    AmpChoice: float32, bf16 autocast or fp16 autocast) and why, and the frames' dtype.
    MMAction2 tests in float32: ``--amp off`` reproduces its scores to float32 rounding."""
    return (f"tsn_dali.test: scoring in {PRECISIONS[amp.amp]} (amp {amp.describe()}); frames {frames_dtype}"
            + ("" if amp.amp == "off" else "; --amp off scores in float32, as MMAction2 tests"))


def prepare(args, info, recipe):
    """(amp choice, model with the checkpoint's weights, checkpoint kind)."""
    import torch

    from tsn_dali.engine.amp import loader_dtype, resolve_amp

    amp = resolve_amp(args.amp or recipe.train.amp, info.device)
    if info.is_main:
        print(precision_line(amp, loader_dtype(recipe, info.device, amp.amp)), flush=True)
    if amp.warning and info.is_main:
        print(f"tsn_dali.test: warning: {amp.warning}", file=sys.stderr, flush=True)
    model = build_model(recipe.model)
    kind = load_weights(model, args.checkpoint, recipe, args.allow_pickle)
    model = model.to(info.device)
    if recipe.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return amp, model.eval(), kind


def run_test(args) -> dict:
    """Score the test split on every rank and report (module docstring); returns the metrics."""
    recipe = load_test_recipe(args)  # a recipe error is said before torch loads
    from tsn_dali.data.render.loader import build_loader
    from tsn_dali.engine import distributed as dist_utils
    from tsn_dali.engine.amp import loader_dtype
    from tsn_dali.engine.evaluate import gather_scores, score_split

    info = dist_utils.setup_distributed(args.device, recipe.loader.stall_timeout)
    loader = bar = None
    try:
        amp, model, kind = prepare(args, info, recipe)
        show = info.is_main and not args.no_progress
        loader = build_loader(recipe, "test", rank=info.rank, world_size=info.world_size, device=info.device,
                              dtype=loader_dtype(recipe, info.device, amp.amp), seed=0, progress=show)
        bar = progress_bar(len(loader), "test", show)
        t0 = time.perf_counter()
        rows = score_split(model, loader, info.device, recipe.data.mean, recipe.data.std, amp.amp, bar)
        seconds = time.perf_counter() - t0
        order, scores, labels = gather_scores(rows, info)
        # videos the index could not use (left out before sharding, the same on every rank)
        # and videos that failed while decoding (per rank) are both listed
        rank_skips = dist_utils.all_gather_objects((list(loader.stats.get("skipped", [])), seconds), info)
        skipped = [dict(row, stage="index") for row in loader.stats.get("dropped", [])]
        skipped += [dict(row, stage="decode") for rows_, _ in rank_skips for row in rows_]
        if not order:
            raise EvaluationError(f"{loader.list_file}: no video of the test split could be scored")
        seconds = max(t for _, t in rank_skips)
        metrics = compute_metrics(scores, labels, recipe.test.topk)
        metrics.update({"num_videos": len(order), "num_skipped": len(skipped), "num_views": loader.num_views,
                        "world_size": info.world_size, "clips_per_s": len(order) / max(seconds, 1e-9),
                        "views_per_s": len(order) * loader.num_views / max(seconds, 1e-9), "seconds": seconds,
                        "checkpoint": str(args.checkpoint), "checkpoint_kind": kind,
                        "executor": loader.executor_name, "amp": amp.describe(),
                        "reported_top1": recipe.reported.top1, "reported_top5": recipe.reported.top5,
                        "samples": order, "skipped": skipped, "dump": args.dump})
        if info.is_main:
            if args.dump:
                Path(args.dump).parent.mkdir(parents=True, exist_ok=True)
                with open(args.dump, "wb") as f:
                    pickle.dump(dump_records(scores, labels), f)
            print(report(recipe, metrics), flush=True)
        dist_utils.barrier(info)
        return metrics
    finally:
        if bar is not None:
            bar.close()  # idempotent; after a stall the error line then starts a line of its own
        if loader is not None:
            loader.close()
        dist_utils.cleanup(info)


def report(recipe, m: dict) -> str:
    """A short table: ours next to MMAction2's reported figures."""
    def fmt(v):
        return "-" if v is None else f"{v:.2f}"
    lines = [f"{recipe.name}: {m['num_videos']} videos x {m['num_views']} views on "
             f"{m['world_size']} process(es), {m['clips_per_s']:.2f} clips/s "
             f"({m['views_per_s']:.1f} views/s), executor {m['executor']}"
             + (f", amp {m['amp']}" if m.get("amp") else ""),
             f"{'metric':<22}{'ours':>10}{'reported':>10}"]
    for k in [k for k in m if k.startswith("top")]:
        lines.append(f"{k:<22}{fmt(m[k]):>10}{fmt(m.get('reported_' + k)):>10}")
    lines.append(f"{'mean_class_accuracy':<22}{fmt(m['mean_class_accuracy']):>10}{'-':>10}")
    if m["num_skipped"]:
        lines.append(f"{m['num_skipped']} video(s) skipped (test.on_bad_video=skip): "
                     + ", ".join(str(r.get('path')) for r in m["skipped"][:5]))
    if m.get("dump"):
        lines.append(f"predictions written to {m['dump']}")
    return "\n".join(lines)


def unwritable_folder(folder: Path) -> Optional[Path]:
    """The folder, or the nearest existing parent it would be made in, where that is not a
    folder this process can write in; None where ``folder`` is, or can be made, writable."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return None if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK) else folder


def check_dump(dump: str) -> None:
    """--dump: a .pkl or .pickle file name, not a folder, in a folder that is or can be made writable."""
    if not dump.endswith((".pkl", ".pickle")):
        raise UsageError(f"--dump {dump}: expected a .pkl or .pickle file name")
    path = Path(dump).absolute()
    if path.is_dir():
        raise UsageError(f"--dump {dump}: is a folder; expected a file name")
    blocked = unwritable_folder(path.parent)
    if blocked is not None:
        raise UsageError(f"--dump {dump}: cannot write there ({blocked} is not a writable folder)")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.dump:
        check_dump(args.dump)
    return args


def run(argv: Optional[List[str]] = None) -> dict:
    """Test as the command line says; returns the metrics dict (top1, top5, mean_class_accuracy
    in percent, num_videos, clips_per_s, ...). Raises what ``main`` turns into exit statuses."""
    return run_test(parse_args(argv))


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tsn_dali.test``: the exit status (tsn_dali.cli: 0, 1 user error, 2 usage, 75
    when the loader stalls, with one line naming the batch's videos)."""
    return cli.run_main(lambda: run(argv))


if __name__ == "__main__":
    raise SystemExit(cli.entry(main))
