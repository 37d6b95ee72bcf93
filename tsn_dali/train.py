"""Train a TSN recipe: ``python -m tsn_dali.train RECIPE [options]``, under torchrun or alone.

    torchrun --nproc_per_node=8 -m tsn_dali.train recipes/k400_r50.yaml --seed 0 --deterministic

The loop follows MMAction2's TSN schedule (configs/_base_/schedules/sgd_100e.py): SGD with
momentum and weight decay on every parameter, gradient-norm clipping (max_norm 40), a
MultiStep LR stepped per epoch, validation every ``train.val_interval`` epochs with the best
top-1 kept as ``best.pth``. On top of it: AMP (``train.amp: auto`` picks bf16, fp16 with a
GradScaler, or off per device: tsn_dali.engine.amp), channels_last, resumable checkpoints
written atomically (``latest.pth`` every epoch, ``epoch_N.pth`` every
``train.checkpoint_interval``), mid-epoch save on SIGINT/SIGTERM, and the
``train.nan_policy`` for a loss that is not finite. A loader that gives no batch for
``loader.stall_timeout`` seconds stops the run: the rank that waited saves a resumable
``latest.pth`` at its last finished batch (no collective: the other ranks may be blocked) and
exits 75 with one line naming the stalled batch's videos.

Parameter groups: one, weight decay on every parameter including biases and BN, as
mmengine's DefaultOptimWrapperConstructor does without ``paramwise_cfg``. NVIDIA apex is not
used: torch's fused SGD (CUDA) and torch.amp cover what it offered. Under torchrun, BN
buffers are averaged over ranks at each epoch's end (mmengine SyncBuffersHook). The step
itself (tsn_dali.engine.step) reads nothing back: losses are read once per log interval
(each step under ``nan_policy: skip``), and there the non-finite/stop flags are agreed over
ranks (one small all_reduce) so that every rank skips or stops at the same step. The seed
is the same on every rank (MMAction2's default).

Start-up: this module imports torch, the model zoo and the engine's torch parts in the
functions that use them, so that ``--help``, a bad command line and a recipe error answer
before torch is imported (tests/test_command_startup.py).
"""
from __future__ import annotations

import argparse
import inspect
import os
import re
import random
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from tsn_dali import cli
from tsn_dali.config import CHOICES, load_recipe, recipe_to_yaml
from tsn_dali.data.errors import LoaderStalled
from tsn_dali.engine.errors import CheckpointError, TrainingDiverged, WorkDirError
from tsn_dali.engine.logs import RunLog
from tsn_dali.engine.signals import EXIT_CODES, StopRequest
from tsn_dali.errors import UsageError, one_line

if TYPE_CHECKING:  # annotations only
    import torch

    from tsn_dali.engine import distributed as dist_utils
    from tsn_dali.engine.meters import EpochMeter, LossReadback
    from tsn_dali.engine.saver import CheckpointSaver
    from tsn_dali.engine.step import TrainStep


def build_model(model_cfg):
    """tsn_dali.models.build_model (looked up at call time so tests can swap it)."""
    from tsn_dali.models import build_model as build
    return build(model_cfg)


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m tsn_dali.train", description=__doc__.splitlines()[0])
    p.add_argument("recipe", help="recipe YAML (a path, or a file name under recipes/)")
    p.add_argument("--work-dir", help="checkpoints and logs (default: work_dirs/<recipe name>)")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0; a resumed run keeps its own)")
    p.add_argument("--deterministic", action="store_true",
                   help="torch.use_deterministic_algorithms and cudnn.deterministic")
    p.add_argument("--auto-scale-lr", action="store_true",
                   help="lr * batch_size * world_size / train.base_batch_size")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                   help="continue from CKPT (no value: <work-dir>/latest.pth if present)")
    p.add_argument("--amp", choices=CHOICES["train.amp"],
                   help="mixed precision (default: train.amp; auto picks per device)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set train.lr=0.02 (repeatable)")
    p.add_argument("--pretrained", help="local ImageNet backbone weights (sets model.pretrained)")
    p.add_argument("--executor", help="auto | dali-gpu | dali-cpu | reference (sets loader.executor)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--epochs", type=positive_int, help="override train.epochs")
    p.add_argument("--max-steps", type=positive_int, help="stop after this many optimiser steps in total, "
                   "saving a resumable latest.pth (for short checks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse says a bad one in one line, status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def check_inputs(recipe, work_dir: Path, splits=("train", "val")) -> None:
    """Everything a run will need, checked before its first step (one line each, nothing
    trained first): the work dir can be written, and the list of every split it will use
    exists and reads as the loader will read it, under the split's bad-video policy: with
    ``on_bad_video: error`` a malformed line, a label out of range or a listed file that
    does not exist stops the run here; and its pipeline file validates. These are the cheap
    checks, made before the train videos are indexed; the videos themselves are checked
    when indexed, val's too before the first step (``train`` builds both loaders at start)."""
    from tsn_dali.config import RecipeError, resolve_data_path
    from tsn_dali.data.index.annotations import read_rawframe_list, read_video_list
    from tsn_dali.data.plan.planner import load_pipeline
    from tsn_dali.data.render.loader import bad_video_policy

    check_work_dir(work_dir)
    data = recipe.data
    for split in splits:
        rel = getattr(data, f"{split}_list")
        if not rel:
            raise RecipeError(recipe.source or "<recipe>", f"data.{split}_list",
                              f"expected an annotation list for the {split} split (train uses it)")
        strict = bad_video_policy(recipe, split) == "error"
        args = dict(num_classes=recipe.model.num_classes, skip_bad=not strict, check_files=strict)
        prefix = resolve_data_path(recipe, getattr(data, f"{split}_prefix"))
        if data.format == "rawframes":
            read_rawframe_list(resolve_data_path(recipe, rel), prefix, filename_tmpl=data.filename_tmpl,
                               start_index=data.start_index, **args)
        else:
            read_video_list(resolve_data_path(recipe, rel), prefix, **args)
        load_pipeline(getattr(data, f"{split}_pipeline"), data)


def check_work_dir(work_dir: Path) -> None:
    """--work-dir: made if missing, then a file written and removed there; a file in its
    place, or a folder that cannot be made or written (read-only, /proc), is a UsageError."""
    path = Path(work_dir)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--work-dir {work_dir}: is a file; expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"--work-dir {work_dir}: cannot write there ({exc.strerror or exc})") from None


def recipe_overrides(args) -> List[str]:
    """--set plus the flags that are shorthands for recipe fields."""
    out = list(args.overrides)
    if args.pretrained:
        out.append(f"model.pretrained={args.pretrained}")
    if args.executor:
        out.append(f"loader.executor={args.executor}")
    if args.epochs is not None:
        out.append(f"train.epochs={args.epochs}")
    if args.amp:
        out.append(f"train.amp={args.amp}")
    if args.compile:
        out.append("train.compile=true")
    return out


# --------------------------------------------------------------------------- helpers


def seed_everything(seed: int, deterministic: bool) -> dict:
    """Seed Python, numpy and torch; with ``deterministic`` pick deterministic kernels.

    Returns the previous determinism settings (``restore_determinism`` puts them back).
    """
    import numpy as np
    import torch

    before = {"algorithms": torch.are_deterministic_algorithms_enabled(),
              "cudnn_deterministic": torch.backends.cudnn.deterministic,
              "cudnn_benchmark": torch.backends.cudnn.benchmark}
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return before


def restore_determinism(before: dict) -> None:
    import torch

    torch.use_deterministic_algorithms(before["algorithms"])
    torch.backends.cudnn.deterministic = before["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = before["cudnn_benchmark"]


def sync_buffers(model: torch.nn.Module, info) -> None:
    """Average floating-point buffers (BN running stats) over ranks: mmengine SyncBuffersHook."""
    import torch

    from tsn_dali.engine.checkpoint import unwrap

    if not info.distributed:
        return
    for buf in unwrap(model).buffers():
        if buf.is_floating_point():
            torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
            buf.div_(info.world_size)


def resolve_resume(arg: Optional[str], work_dir: Path) -> Optional[Path]:
    """``--resume`` value: a path, or 'auto' for ``<work_dir>/latest.pth``, else the highest
    ``epoch_N.pth`` there (a run whose latest.pth was lost), else None (a new run)."""
    if arg is None:
        return None
    if arg == "auto":
        latest = work_dir / "latest.pth"
        if latest.is_file():
            return latest
        numbered = [(int(m.group(1)), p) for p in work_dir.glob("epoch_*.pth")
                    if (m := re.fullmatch(r"epoch_(\d+)\.pth", p.name)) and p.is_file()]
        return max(numbered)[1] if numbered else None
    path = Path(arg)
    if not path.is_file():
        raise CheckpointError(f"{path}: --resume checkpoint file not found")
    return path


def map_loader_state(state: dict, old_batch: int, old_world: int, loader) -> dict:
    """A mid-epoch loader state saved with another batch size / world size, re-expressed for
    ``loader``: the same number of samples done (rounded down, so none is left out)."""
    samples_done = int(state["batches_done"]) * old_batch * old_world
    per_step = loader.batch_size * loader.world_size
    return dict(state, batches_done=min(samples_done // per_step, len(loader)),
                num_batches=len(loader), world_size=loader.world_size)


# --------------------------------------------------------------------------- the run


def new_readback():
    """An empty LossReadback (tsn_dali.engine.meters)."""
    from tsn_dali.engine.meters import LossReadback

    return LossReadback()


@dataclass
class TrainingRun:
    """The parts of one run, wired by ``train`` and used by ``train_one_epoch``."""

    args: argparse.Namespace
    info: dist_utils.DistInfo
    recipe: object
    seed: int
    model: torch.nn.Module  # the bare model (its state dict is saved)
    net: torch.nn.Module  # as trained: DDP and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: Optional[object]
    step_fn: TrainStep
    loader: object  # the train ClipLoader
    val_loader: object  # built at start with the train loader (its videos are checked before the first step)
    saver: CheckpointSaver
    log: RunLog
    stop: StopRequest
    amp: str
    step: int = 0
    best_top1: Optional[float] = None
    history: List[dict] = field(default_factory=list)
    partial: dict = field(default_factory=dict)  # a mid-epoch checkpoint's running epoch figures
    stopped: Optional[str] = None
    signum: int = 0  # the signal that stopped the run, agreed over ranks (0: none)
    meter: Optional[EpochMeter] = None  # the epoch in progress
    readback: LossReadback = field(default_factory=new_readback)

    @property
    def cfg(self):
        return self.recipe.train

    def state(self, epoch_done: int, loader_state=None, partial_epoch=None) -> dict:
        """The training checkpoint (docs/CONTRACTS.md, "Checkpoints")."""
        import torch

        from tsn_dali.engine.checkpoint import FORMAT, VERSION, rng_state, unwrap

        return {"format": FORMAT, "version": VERSION, "model": unwrap(self.model).state_dict(),
                "recipe": self.recipe.to_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "epoch": epoch_done, "step": self.step, "loader": loader_state, "rng": rng_state(),
                "seed": self.seed, "best_top1": self.best_top1, "world_size": self.info.world_size,
                "batch_size": self.loader.batch_size, "history": self.history, "partial_epoch": partial_epoch,
                "meta": {"torch": str(torch.__version__), "time": time.time()}}

    def check_due(self, batch_no: int) -> bool:
        """Whether losses are read back (and flags agreed over ranks) after this batch: every
        step under nan_policy skip, else at log steps, the epoch's end and --max-steps; a lone
        process also when it got a signal."""
        return (self.cfg.nan_policy == "skip" or self.meter.log_step() or self.max_steps_reached()
                or (not self.info.distributed and bool(self.stop.signum)))

    def max_steps_reached(self) -> bool:
        return bool(self.args.max_steps and self.step >= self.args.max_steps)

    def read_back(self, epoch: int, loss: torch.Tensor) -> int:
        """Read the pending losses; stop (nan_policy stop) or skip the step (skip) where one is
        not finite on any rank. Returns the signal any rank got (the highest number; 0: none)."""
        from tsn_dali.engine import distributed as dist_utils

        values, first_bad = self.readback.read()
        bad, signalled = dist_utils.all_reduce_max(
            [0.0 if first_bad is None else 1.0, float(self.stop.signum or 0)], self.info)
        skip = self.cfg.nan_policy == "skip"
        if bad:
            batch_no, step = self.readback.where(first_bad or 0)
            value = values[first_bad] if first_bad is not None else "not finite on another rank"
            self.log.write({"kind": "nonfinite", "epoch": epoch + 1, "iter": batch_no, "step": step,
                            "updates": self.step, "loss": value, "policy": self.cfg.nan_policy})
            if not skip:
                raise TrainingDiverged(
                    f"loss is {value} at epoch {epoch + 1}, step {batch_no}/{self.meter.num_steps} (global step "
                    f"{step}): stopped (train.nan_policy=stop); {self.saver.latest} and best.pth were left as they were")
            self.step_fn.skip()
            self.meter.skipped += 1
        elif skip:
            self.step_fn.update(loss)
            self.step += 1
        self.meter.add_losses(values)
        self.readback.clear()
        return int(signalled)


def train_one_epoch(run: TrainingRun, epoch: int) -> Optional[dict]:
    """One pass over the train loader (from where a resumed run stopped); the epoch's figures,
    or None where a signal or --max-steps stopped it (after saving a mid-epoch latest.pth)."""
    from tsn_dali.engine.meters import EpochMeter

    loader, cfg = run.loader, run.cfg
    loader.set_epoch(epoch)
    run.net.train()
    first = loader.state_dict()["batches_done"]
    run.meter = meter = EpochMeter(epoch, cfg.epochs, len(loader), first, cfg.log_interval,
                                   run.optimizer.param_groups[0]["lr"], run.info.is_main and not run.args.no_progress,
                                   run.partial)
    run.partial = {}
    step_at_start = run.step
    for batch in loader:
        batch_no = meter.got_batch()
        loss = run.step_fn.forward(batch.clips, batch.labels)
        run.readback.add(loss, batch_no, epoch * meter.num_steps + batch_no)  # the iteration, skipped ones counted
        if cfg.nan_policy != "skip":
            run.step_fn.update(loss)
            run.step += 1
        signalled = run.read_back(epoch, loss) if run.check_due(batch_no) else 0
        del loss
        record = meter.step_done(int(batch.labels.numel()) * run.info.world_size, run.step)
        if record is not None:
            run.log.write(record, run.step)
        if signalled or run.max_steps_reached():
            mark_stopped(run, signalled)
            break
    meter.close()
    if first < meter.batch_no and run.step == step_at_start and not run.stopped:
        raise TrainingDiverged(
            f"every step of epoch {epoch + 1} ({meter.batch_no - first}) had a non-finite loss and was skipped "
            f"(train.nan_policy=skip): stopped; the model and {run.saver.latest} are as they were before it")
    if len(run.readback):  # the last batch reads back; fewer batches than len() breaks ClipLoader's contract
        raise RuntimeError(f"internal: the train loader gave {meter.batch_no - first} batches in epoch "
                           f"{epoch + 1}, expected {meter.num_steps - first}; losses left unchecked")
    if run.stopped:
        try:
            run.saver.save(lambda: run.state(epoch, loader.state_dict(), meter.partial()))
        except CheckpointError as exc:
            if not run.signum:
                raise
            raise cli.Stopped(f"stopped by {run.stopped}, but the checkpoint was not saved: {exc}",
                              EXIT_CODES.get(run.signum, 1)) from None
        run.log.write({"kind": "stopped", "epoch": epoch + 1, "iter": meter.batch_no, "step": run.step,
                       "reason": run.stopped, "checkpoint": str(run.saver.latest)})
        return None
    return dict(meter.summary(), top1=None, bad_videos_replaced=len(loader.stats.get("replaced", [])))


def validate(run: TrainingRun) -> dict:
    """Top-1/top-5 (percent) of the val split (engine.evaluate, each video once over all ranks)."""
    from tsn_dali.engine.evaluate import accuracy, gather_scores, score_split

    rows = score_split(run.net, run.val_loader, run.info.device, run.recipe.data.mean, run.recipe.data.std,
                       run.amp)
    _, scores, labels = gather_scores(rows, run.info)
    if not len(labels):
        return {"top1": 0.0, "top5": 0.0}
    acc = accuracy(scores, labels, (1, 5))
    return {"top1": acc["top1"], "top5": acc["top5"]}


def validate_or_keep(run: TrainingRun, epoch: int, entry: dict) -> dict:
    """``validate``; where it fails (a val video under on_bad_video: error, out of memory, a
    pipeline failure), the epoch's training is saved first, from this rank alone (the others
    may be blocked in a collective), so that nothing already trained is lost: ``--resume`` goes
    on from the next epoch, and a failed last epoch can still be scored with tsn_dali.test. A
    user error becomes one line (status 1); anything else is raised as it was, after one line
    saying what was saved. A stall keeps its own path (``stopped_by_stall``)."""
    import torch

    try:
        return validate(run)
    except LoaderStalled:
        raise
    except Exception as exc:
        done = epoch + 1
        run.history.append(dict(entry, top1=None, val_failed=one_line(exc)))
        saved = run.saver.save_alone(lambda: run.state(done), True)
        run.log.write({"kind": "val_failed", "epoch": done, "step": run.step, "error": one_line(exc),
                       "checkpoint": saved})
        if done == run.cfg.epochs:
            then = f"score it with: python -m tsn_dali.test {run.args.recipe} {run.saver.latest}"
        else:
            then = (f"continue with: python -m tsn_dali.train {run.args.recipe} --work-dir {run.saver.work_dir} "
                    f"--resume (epoch {done} is not validated again)")
        kept = (f"epoch {done}'s training is kept ({saved}); {then}" if saved.startswith("saved ")
                else f"epoch {done}'s training could not be kept: {saved}")
        if isinstance(exc, (*cli.user_errors(), torch.OutOfMemoryError)):
            raise cli.Stopped(f"error: validation after epoch {done} failed: {one_line(exc)}; {kept}",
                              cli.USER_ERROR) from None
        print(f"validation after epoch {done} failed ({type(exc).__name__}); {kept}", file=sys.stderr, flush=True)
        raise


def end_epoch(run: TrainingRun, epoch: int, entry: dict, reported: int) -> int:
    """LR step, BN sync, validation when due, checkpoints, logs; returns the replaced-video
    entries written so far."""
    from tsn_dali.engine import distributed as dist_utils

    cfg = run.cfg
    with warnings.catch_warnings():  # a resumed epoch may have had no step left
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        run.scheduler.step()
    sync_buffers(run.model, run.info)
    last = epoch + 1 == cfg.epochs
    improved = False
    if (epoch + 1) % cfg.val_interval == 0 or last:
        entry.update(validate_or_keep(run, epoch, entry))
        if run.best_top1 is None or entry["top1"] > run.best_top1:
            run.best_top1, improved = entry["top1"], True
    run.history.append(entry)
    run.saver.save_epoch(lambda: run.state(epoch + 1), epoch + 1, improved)
    if run.info.is_main:
        replaced = run.loader.stats.get("replaced", [])
        if len(replaced) > reported:
            run.log.write({"kind": "bad_videos", "split": "train", "epoch": epoch + 1, "replaced": replaced[reported:]})
            reported = len(replaced)
        run.log.write(dict(entry, kind="epoch", step=run.step), run.step)
        top = "" if entry["top1"] is None else f", val top-1 {entry['top1']:.2f}%"
        print(f"epoch {epoch + 1}/{cfg.epochs}: loss {entry['loss']:.4f}{top}, {entry['clips_per_s']:.1f} clips/s, "
              f"data wait {entry['data_wait_share']:.0%}"
              + (f", {entry['skipped_steps']} non-finite steps skipped" if entry["skipped_steps"] else ""), flush=True)
    dist_utils.barrier(run.info)
    return reported


def stopped_by_stall(run: TrainingRun, exc: LoaderStalled, epoch: int) -> cli.Stopped:
    """Save latest.pth from this rank alone, log, and say how to go on (exit 75)."""
    meter = run.meter
    if meter is not None:
        meter.close()
        meter.add_losses(run.readback.finite_values())
    pending_finite = len(run.readback.finite_values()) == len(run.readback)
    partial = meter.partial() if meter is not None else None
    saved = run.saver.save_alone(lambda: run.state(epoch, run.loader.state_dict(), partial), pending_finite)
    run.log.write({"kind": "stalled", "epoch": epoch + 1, "split": exc.split, "batch": exc.batch, "step": run.step,
                   "videos": exc.paths, "seconds": exc.seconds, "checkpoint": saved})
    return cli.Stopped(f"error: {exc}; {saved}; continue with: python -m tsn_dali.train {run.args.recipe} "
                       f"--work-dir {run.saver.work_dir} --resume", cli.STALLED)


def agreed_signal(run: TrainingRun) -> int:
    """The signal any rank got (the highest number; 0: none), so that all ranks stop at the same
    epoch's end."""
    from tsn_dali.engine import distributed as dist_utils

    return int(dist_utils.all_reduce_max([float(run.stop.signum or 0)], run.info)[0])


def mark_stopped(run: TrainingRun, signum: int) -> None:
    """Record why the run stops: the (agreed) signal, else --max-steps."""
    run.signum = signum
    run.stopped = signal.Signals(signum).name if signum else "max_steps"


def fit(run: TrainingRun, start_epoch: int) -> None:
    """Epoch after epoch until the last, a stop or a stall (the loop of ``train``)."""
    reported, epoch = 0, start_epoch
    try:
        for epoch in range(start_epoch, run.cfg.epochs):
            entry = train_one_epoch(run, epoch)
            if entry is None:
                return
            reported = end_epoch(run, epoch, entry, reported)
            signum = agreed_signal(run)
            if signum:
                mark_stopped(run, signum)
                return
    except LoaderStalled as exc:
        raise stopped_by_stall(run, exc, epoch) from None


def resume_from(run: TrainingRun, ckpt: dict, path) -> int:
    """Load a training checkpoint into the run; returns the epoch to start."""
    from tsn_dali.engine.checkpoint import set_rng_state
    from tsn_dali.models.weights import check_state_dict

    check_state_dict(run.model, ckpt["model"], path)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if run.scaler is not None and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    start_epoch, run.step = int(ckpt["epoch"]), int(ckpt["step"])
    run.best_top1, run.history = ckpt.get("best_top1"), list(ckpt.get("history", []))
    if ckpt.get("loader"):
        state = map_loader_state(ckpt["loader"], int(ckpt.get("batch_size", run.loader.batch_size)),
                                 int(ckpt.get("world_size", run.info.world_size)), run.loader)
        run.loader.set_epoch(int(state["epoch"]))
        run.loader.load_state_dict(state)
        start_epoch = int(state["epoch"])
        run.partial = ckpt.get("partial_epoch") or {}
    set_rng_state(ckpt.get("rng"))
    return start_epoch


def wrap(model: torch.nn.Module, info, compile: bool) -> torch.nn.Module:
    """DDP under torchrun (BN buffers rank-local during the epoch, averaged at its end by
    ``sync_buffers``, as mmengine's MMDistributedDataParallel + SyncBuffersHook), then
    torch.compile where asked."""
    import torch

    net = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [info.device] if info.device.type == "cuda" else None
        no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                   else {"broadcast_buffers": False})
        net = DDP(model, device_ids=ids, **no_sync)
    return torch.compile(net) if compile else net


def open_checkpoint(args, work_dir: Path):
    """(path, checkpoint) of ``--resume``, or (None, None)."""
    from tsn_dali.engine.checkpoint import FORMAT, load_checkpoint

    path = resolve_resume(args.resume, work_dir)
    ckpt = load_checkpoint(path) if path else None
    if ckpt is not None and (ckpt.get("format") != FORMAT or "optimizer" not in ckpt):
        raise CheckpointError(f"{path}: not a tsn_dali training checkpoint (no optimizer state); use "
                              "--pretrained for weights, or start without --resume")
    return path, ckpt


def announce(run: TrainingRun, amp_choice, base_lr: float, resume_path, start_epoch: int) -> None:
    """The start-up line, and the train videos left out (never fatal: listed in the log)."""
    info, loader = run.info, run.loader
    if info.is_main:
        print(f"tsn_dali.train: {run.recipe.name} on {info.world_size} x {info.device.type}, "
              f"{len(loader)} steps/epoch of {loader.batch_size * info.world_size} clips, lr {base_lr:g}, "
              f"amp {amp_choice.describe()}, executor {loader.executor_name}, work dir {run.saver.work_dir}"
              + (f", resumed from {resume_path} at epoch {start_epoch + 1}" if resume_path else ""), flush=True)
    dropped = loader.stats.get("dropped", [])
    if dropped:
        run.log.write({"kind": "bad_videos", "split": "train", "dropped": dropped})
        if info.is_main:
            print(f"tsn_dali.train: {len(dropped)} train video(s) left out (data.on_bad_video=skip), "
                  f"listed in {run.log.path}", flush=True)


def train(args) -> dict:
    """Wire a run from parsed ``args`` and train it; returns the summary (see ``run``)."""
    if args.deterministic:  # cuBLAS reads it when its first handle is made
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    recipe = load_recipe(args.recipe, recipe_overrides(args))  # a recipe error is said before torch loads
    import torch

    from tsn_dali.engine import distributed as dist_utils
    from tsn_dali.engine.amp import resolve_amp
    from tsn_dali.engine.checkpoint import recover_temp_checkpoints
    from tsn_dali.engine.optim import build_optimizer, build_scheduler, scaled_lr, set_lr
    from tsn_dali.engine.saver import CheckpointSaver
    from tsn_dali.engine.step import TrainStep

    info = dist_utils.setup_distributed(args.device, recipe.loader.stall_timeout)
    stop, before, loaders, log = StopRequest().install(), None, [], None
    try:
        cfg = recipe.train
        work_dir = Path(args.work_dir or Path("work_dirs") / recipe.name)
        check_inputs(recipe, work_dir)
        if info.is_main:
            for line in recover_temp_checkpoints(work_dir):
                print(f"tsn_dali.train: {line}", flush=True)
        dist_utils.barrier(info)
        resume_path, ckpt = open_checkpoint(args, work_dir)
        if ckpt is not None and int(ckpt.get("epoch", 0)) >= cfg.epochs and not ckpt.get("loader"):
            return already_finished(info, work_dir, resume_path, ckpt, cfg.epochs)
        seed = args.seed if args.seed is not None else (ckpt or {}).get("seed", 0)
        before = seed_everything(seed, args.deterministic)
        model = build_model(recipe.model).to(info.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        loaders.append(make_loader(recipe, "train", info, seed, info.is_main and not args.no_progress))
        # built now, not at the first validation: its videos, pipeline and executor are checked
        # before the first step (a bad one found after an epoch cost the epoch)
        loaders.append(make_loader(recipe, "val", info, seed, False))
        base_lr = scaled_lr(cfg, loaders[0].batch_size, info.world_size, args.auto_scale_lr)
        optimizer = build_optimizer(model, cfg, base_lr, info.device)
        amp_choice = resolve_amp(cfg.amp, info.device)
        if amp_choice.warning and info.is_main:
            print(f"tsn_dali.train: warning: {amp_choice.warning}", file=sys.stderr, flush=True)
        scaler = torch.amp.GradScaler(info.device.type) if amp_choice.amp == "fp16" else None
        log = RunLog(work_dir, enabled=info.is_main)
        run = TrainingRun(args, info, recipe, seed, model, model, optimizer, build_scheduler(optimizer, cfg), scaler,
                          None, loaders[0], loaders[1],
                          CheckpointSaver(work_dir, info, cfg.checkpoint_interval, cfg.epochs), log, stop, amp_choice.amp)
        start_epoch = resume_from(run, ckpt, resume_path) if ckpt is not None else 0
        set_lr(optimizer, run.scheduler, base_lr, cfg, start_epoch)
        del ckpt
        run.net = wrap(model, info, cfg.compile)
        run.step_fn = TrainStep(run.net, optimizer, amp=run.amp, grad_clip=cfg.grad_clip, mean=recipe.data.mean,
                                std=recipe.data.std, scaler=scaler, skippable=cfg.nan_policy == "skip")
        write_recipe_copy(recipe, work_dir, info)
        announce(run, amp_choice, base_lr, resume_path, start_epoch)
        fit(run, start_epoch)
        return summarize(run)
    finally:
        stop.uninstall()
        for loader in loaders:
            loader.close()
        if log is not None:
            log.close()
        if before is not None:
            restore_determinism(before)
        dist_utils.cleanup(info)


def write_recipe_copy(recipe, work_dir: Path, info) -> None:
    """``<work_dir>/recipe.yaml``, the resolved recipe (rank 0 writes); a failure (a full disk)
    is one WorkDirError line on every rank, so that none waits for the others."""
    from tsn_dali.engine import distributed as dist_utils

    error = None
    if info.is_main:
        path = work_dir / "recipe.yaml"
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(recipe_to_yaml(recipe))
        except OSError as exc:
            error = f"{path}: could not write the run's recipe copy ({exc.strerror or exc}); nothing trained"
    error = dist_utils.broadcast_object(error, info)
    if error:
        raise WorkDirError(error)


def already_finished(info, work_dir: Path, path, ckpt: dict, epochs: int) -> dict:
    """The summary of a run resumed after its last epoch: nothing is trained, status 0."""
    if info.is_main:
        print(f"tsn_dali.train: {path}: already finished (epoch {int(ckpt['epoch'])} done, train.epochs is "
              f"{epochs}); nothing to "
              f"do (raise train.epochs to train further, or test it with python -m tsn_dali.test)", flush=True)
    return {"work_dir": str(work_dir), "best_top1": ckpt.get("best_top1"), "history": list(ckpt.get("history", [])),
            "checkpoint": str(path), "log": None, "steps": int(ckpt.get("step", 0)), "stopped": None,
            "world_size": info.world_size, "stats": {}, "already_finished": True}


def summarize(run: TrainingRun) -> dict:
    """The run's summary; a signal that stopped it becomes ``cli.Stopped`` (exit 130/143)."""
    summary = {"work_dir": str(run.saver.work_dir), "best_top1": run.best_top1, "history": run.history,
               "checkpoint": str(run.saver.latest), "log": str(run.log.path) if run.log.path else None,
               "steps": run.step, "stopped": run.stopped, "world_size": run.info.world_size,
               "stats": {k: len(v) for k, v in run.loader.stats.items()}}
    if run.signum:
        raise cli.Stopped(f"stopped by {run.stopped}: saved {run.saver.latest}; continue with: python -m "
                          f"tsn_dali.train {run.args.recipe} --work-dir {run.saver.work_dir} --resume",
                          EXIT_CODES.get(run.signum, 1))
    return summary


def make_loader(recipe, split, info, seed, progress):
    from tsn_dali.data.render.loader import build_loader
    from tsn_dali.engine.amp import loader_dtype

    return build_loader(recipe, split, rank=info.rank, world_size=info.world_size, device=info.device,
                        dtype=loader_dtype(recipe, info.device), seed=seed, progress=progress)


def run(argv: Optional[List[str]] = None) -> dict:
    """Train as the command line says; returns the summary: work_dir, best_top1, history (per
    epoch: epoch, loss, top1, lr, clips_per_s, data_wait_share), checkpoint (latest.pth),
    steps, stopped. Raises what ``main`` turns into exit statuses (tsn_dali.cli)."""
    return train(build_parser().parse_args(argv))


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tsn_dali.train``: the exit status (tsn_dali.cli: 0, 1 user error, 2 usage,
    75 stalled after saving, 130/143 stopped by a signal after saving)."""
    return cli.run_main(lambda: run(argv))


if __name__ == "__main__":
    raise SystemExit(cli.entry(main))
