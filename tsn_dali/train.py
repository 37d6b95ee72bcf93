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
"""
from __future__ import annotations

import argparse
import inspect
import math
import os
import random
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from tsn_dali.config import RecipeError, load_recipe, recipe_to_yaml
from tsn_dali.data.errors import LoaderStalled
from tsn_dali.engine import distributed as dist_utils
from tsn_dali.engine.amp import AMP_CHOICES, resolve_amp
from tsn_dali.engine.checkpoint import (FORMAT, VERSION, CheckpointError, check_state_dict,
                                        link_or_copy, load_checkpoint, rng_state, save_checkpoint,
                                        set_rng_state, unwrap)
from tsn_dali.engine.logs import RunLog, progress_bar
from tsn_dali.engine.optim import build_optimizer, build_scheduler, scaled_lr, set_lr
from tsn_dali.engine.signals import EXIT_STALLED, StopRequest, run_cli
from tsn_dali.engine.step import TrainStep, autocast, prepare_clips


class TrainingStopped(Exception):
    """The run stopped early on purpose (signal); ``code`` is the process exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf under ``train.nan_policy: stop``."""


def build_model(model_cfg):
    """tsn_dali.models.build_model (looked up at call time so tests can swap it)."""
    from tsn_dali.models import build_model as build
    return build(model_cfg)


def user_errors() -> tuple:
    """Exceptions a user can cause: printed as one line, exit status 1."""
    from tsn_dali.data.annotations import AnnotationError
    from tsn_dali.data.errors import VideoDecodeError
    return (RecipeError, AnnotationError, VideoDecodeError, CheckpointError, TrainingDiverged,
            dist_utils.UsageError)


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tsn_dali.train", description=__doc__.splitlines()[0])
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
    p.add_argument("--amp", choices=AMP_CHOICES,
                   help="mixed precision (default: train.amp; auto picks per device)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set train.lr=0.02 (repeatable)")
    p.add_argument("--pretrained", help="local ImageNet backbone weights (sets model.pretrained)")
    p.add_argument("--executor", help="auto | dali-gpu | dali-cpu | reference (sets loader.executor)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps in total, "
                   "saving a resumable latest.pth (for short checks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


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
    torch.use_deterministic_algorithms(before["algorithms"])
    torch.backends.cudnn.deterministic = before["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = before["cudnn_benchmark"]


def sync_buffers(model: torch.nn.Module, info) -> None:
    """Average floating-point buffers (BN running stats) over ranks: mmengine SyncBuffersHook."""
    if not info.distributed:
        return
    for buf in unwrap(model).buffers():
        if buf.is_floating_point():
            torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
            buf.div_(info.world_size)


@torch.no_grad()
def evaluate(model, loader, info, recipe, amp: str) -> dict:
    """Top-1/top-5 (percent) over the val split; padding (``samples == -1``) left out, each
    video counted once over all ranks. Scores: ``model.predict`` (MMAction2 average_clips)."""
    bare = unwrap(model)
    was_training = bare.training
    bare.eval()
    k5 = min(5, recipe.model.num_classes)
    hits1 = hits5 = count = 0
    for batch in loader:
        keep = batch.samples >= 0
        if not bool(keep.any()):
            continue
        with autocast(info.device, amp):
            scores = bare.predict(prepare_clips(batch.clips, recipe.data.mean, recipe.data.std, amp))
        scores, labels = scores[keep].float(), batch.labels[keep]
        top = scores.topk(k5, dim=1).indices
        hits1 += int((top[:, 0] == labels).sum())
        hits5 += int((top == labels[:, None]).any(dim=1).sum())
        count += int(keep.sum())
    hits1, hits5, count = dist_utils.all_reduce_sum([hits1, hits5, count], info)
    bare.train(was_training)
    return {"top1": 100.0 * hits1 / max(count, 1), "top5": 100.0 * hits5 / max(count, 1),
            "num_videos": int(count)}


def resolve_resume(arg: Optional[str], work_dir: Path) -> Optional[Path]:
    """``--resume`` value: a path, or 'auto' for ``<work_dir>/latest.pth`` (None when absent)."""
    if arg is None:
        return None
    if arg == "auto":
        latest = work_dir / "latest.pth"
        return latest if latest.is_file() else None
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


def train(args) -> dict:
    """Run training for parsed ``args``; returns the summary dict (see ``main``)."""
    if args.deterministic:  # cuBLAS reads it when its first handle is made
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    info = dist_utils.setup_distributed(args.device)
    stop = StopRequest().install()
    before = None
    loaders = []
    log = None
    try:
        recipe = load_recipe(args.recipe, recipe_overrides(args))
        cfg = recipe.train
        work_dir = Path(args.work_dir or Path("work_dirs") / recipe.name)
        latest = work_dir / "latest.pth"
        is_main = info.is_main
        show = is_main and not args.no_progress

        resume_path = resolve_resume(args.resume, work_dir)
        ckpt = load_checkpoint(resume_path) if resume_path else None
        if ckpt is not None and (ckpt.get("format") != FORMAT or "optimizer" not in ckpt):
            raise CheckpointError(f"{resume_path}: not a tsn_dali training checkpoint (no optimizer "
                                  "state); use --pretrained for weights, or start without --resume")
        seed = args.seed if args.seed is not None else (ckpt or {}).get("seed", 0)
        before = seed_everything(seed, args.deterministic)

        model = build_model(recipe.model).to(info.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)

        train_loader = make_loader(recipe, "train", info, seed, show)
        loaders.append(train_loader)
        val_loader = None

        batch_size = train_loader.batch_size
        base_lr = scaled_lr(cfg, batch_size, info.world_size, args.auto_scale_lr)
        optimizer = build_optimizer(model, cfg, base_lr, info.device)
        scheduler = build_scheduler(optimizer, cfg)
        amp_choice = resolve_amp(cfg.amp, info.device)
        if amp_choice.warning and is_main:
            print(f"tsn_dali.train: warning: {amp_choice.warning}", file=sys.stderr, flush=True)
        scaler = torch.amp.GradScaler(info.device.type) if amp_choice.amp == "fp16" else None

        start_epoch, step, best_top1, history = 0, 0, None, []
        partial = {}  # a mid-epoch checkpoint's running epoch figures (losses, skipped steps)
        if ckpt is not None:
            check_state_dict(model, ckpt["model"], resume_path)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if scaler is not None and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
            best_top1, history = ckpt.get("best_top1"), list(ckpt.get("history", []))
            if ckpt.get("loader"):
                state = map_loader_state(ckpt["loader"], int(ckpt.get("batch_size", batch_size)),
                                         int(ckpt.get("world_size", info.world_size)), train_loader)
                train_loader.set_epoch(int(state["epoch"]))
                train_loader.load_state_dict(state)
                start_epoch = int(state["epoch"])
                partial = ckpt.get("partial_epoch") or {}
            set_rng_state(ckpt.get("rng"))
        set_lr(optimizer, scheduler, base_lr, cfg, start_epoch)
        del ckpt

        net = model
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [info.device] if info.device.type == "cuda" else None
            # BN buffers stay rank-local during the epoch and are averaged at its end
            # (sync_buffers), as mmengine's MMDistributedDataParallel + SyncBuffersHook.
            no_sync = ({"forward_sync_buffers": False}
                       if "forward_sync_buffers" in inspect.signature(DDP).parameters
                       else {"broadcast_buffers": False})
            net = DDP(model, device_ids=ids, **no_sync)
        if cfg.compile:
            net = torch.compile(net)

        if is_main:
            work_dir.mkdir(parents=True, exist_ok=True)
            (work_dir / "recipe.yaml").write_text(recipe_to_yaml(recipe))
        log = RunLog(work_dir, enabled=is_main)
        if is_main:
            print(f"tsn_dali.train: {recipe.name} on {info.world_size} x {info.device.type}, "
                  f"{len(train_loader)} steps/epoch of {batch_size * info.world_size} clips, "
                  f"lr {base_lr:g}, amp {amp_choice.describe()}, executor {train_loader.executor_name}, "
                  f"work dir {work_dir}" + (f", resumed from {resume_path} at epoch {start_epoch + 1}"
                                            if resume_path else ""), flush=True)
        dropped = train_loader.stats.get("dropped", [])
        if dropped:  # unusable videos (missing, truncated, not a video): left out, never fatal
            log.write({"kind": "bad_videos", "split": "train", "dropped": dropped})
            if is_main:
                print(f"tsn_dali.train: {len(dropped)} train video(s) left out "
                      f"(data.on_bad_video=skip), listed in {log.path}", flush=True)

        def training_state(epoch_done: int, loader_state, partial_epoch=None) -> dict:
            return {"format": FORMAT, "version": VERSION, "model": unwrap(model).state_dict(),
                    "recipe": recipe.to_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "epoch": epoch_done, "step": step, "loader": loader_state,
                    "rng": rng_state(), "seed": seed, "best_top1": best_top1,
                    "world_size": info.world_size, "batch_size": batch_size,
                    "history": history, "partial_epoch": partial_epoch,
                    "meta": {"torch": str(torch.__version__), "time": time.time()}}

        def checkpoint(epoch_done: int, loader_state, partial_epoch=None) -> None:
            """Rank 0 writes latest.pth; every rank learns whether it worked."""
            error = None
            if is_main:
                try:
                    save_checkpoint(training_state(epoch_done, loader_state, partial_epoch), latest)
                except CheckpointError as exc:
                    error = str(exc)
            error = dist_utils.broadcast_object(error, info)
            if error:
                raise CheckpointError(error)

        amp = amp_choice.amp
        step_fn = TrainStep(net, optimizer, amp=amp, grad_clip=cfg.grad_clip, mean=recipe.data.mean,
                            std=recipe.data.std, scaler=scaler)
        skip_bad = cfg.nan_policy == "skip"  # needs each loss on the host before its update
        stopped = None
        epoch, bar, losses, skipped, pending = start_epoch, None, [], 0, []  # read after a stall
        reported_replaced = 0  # replaced-video entries already written to the log
        for epoch in range(start_epoch, cfg.epochs):
            train_loader.set_epoch(epoch)
            net.train()
            num_steps = len(train_loader)
            first = train_loader.state_dict()["batches_done"]
            bar = progress_bar(num_steps, f"epoch {epoch + 1}/{cfg.epochs}", show, initial=first)
            epoch_lr = optimizer.param_groups[0]["lr"]
            t_epoch = time.perf_counter()
            wait = 0.0
            losses, skipped = list(partial.get("losses", [])), int(partial.get("skipped", 0))
            clips_seen, partial = 0, {}
            window_loss, window_t, window_wait, window_clips = [], time.perf_counter(), 0.0, 0
            pending = []  # (loss on the device, batch number, global step) not read back yet
            t_ready = time.perf_counter()
            batch_no = first
            for batch in train_loader:
                got = time.perf_counter()
                wait += got - t_ready
                window_wait += got - t_ready
                batch_no += 1
                loss = step_fn.forward(batch.clips, batch.labels)
                pending.append((loss.detach(), batch_no, step + 1))
                if not skip_bad:
                    step_fn.update(loss)
                    step += 1
                # Losses are read back (one host sync) and the non-finite/stop flags agreed
                # over ranks at the same steps on every rank: each step under nan_policy
                # skip, else at log steps, the epoch's end and --max-steps. A lone process
                # also checks when it got a signal.
                check = (skip_bad or batch_no % cfg.log_interval == 0 or batch_no == num_steps
                         or bool(args.max_steps and step >= args.max_steps)
                         or (not info.distributed and bool(stop.signum)))
                signalled = False
                if check:
                    values = torch.stack([x for x, _, _ in pending]).float().tolist()
                    first_bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
                    bad, signalled = dist_utils.all_reduce_max(
                        [0.0 if first_bad is None else 1.0, 1.0 if stop.signum else 0.0], info)
                    if bad:
                        at = pending[first_bad if first_bad is not None else 0]
                        value = values[first_bad] if first_bad is not None else "not finite on another rank"
                        where = f"epoch {epoch + 1}, step {at[1]}/{num_steps} (global step {at[2]})"
                        log.write({"kind": "nonfinite", "epoch": epoch + 1, "iter": at[1],
                                   "step": at[2], "loss": value, "policy": cfg.nan_policy})
                        if not skip_bad:
                            raise TrainingDiverged(
                                f"loss is {value} at {where}: stopped (train.nan_policy=stop); "
                                f"{latest} and best.pth were left as they were")
                        step_fn.skip()
                        skipped += 1
                    elif skip_bad:
                        step_fn.update(loss)
                        step += 1
                    finite = [v for v in values if math.isfinite(v)]
                    losses += finite
                    window_loss += finite
                    pending = []
                del loss
                n_clips = int(batch.labels.numel()) * info.world_size
                clips_seen += n_clips
                window_clips += n_clips
                if bar is not None:
                    bar.update(1)
                if batch_no % cfg.log_interval == 0 or batch_no == num_steps:
                    now = time.perf_counter()
                    span = max(now - window_t, 1e-9)
                    rec = {"kind": "train", "epoch": epoch + 1, "iter": batch_no, "step": step,
                           "loss": float(np.mean(window_loss)) if window_loss else float("nan"),
                           "lr": epoch_lr, "clips_per_s": window_clips / span,
                           "data_wait_share": window_wait / span}
                    log.write(rec, step)
                    if bar is not None:
                        bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{epoch_lr:.3g}",
                                        clips_s=f"{rec['clips_per_s']:.1f}",
                                        wait=f"{rec['data_wait_share']:.0%}")
                    window_loss, window_t, window_wait, window_clips = [], now, 0.0, 0
                if signalled or (args.max_steps and step >= args.max_steps):
                    stopped = stop.name or "max_steps"
                    break
                t_ready = time.perf_counter()
            if bar is not None:
                bar.close()
            if pending:  # the last batch reads back; fewer batches than len() breaks ClipLoader's contract
                raise RuntimeError(f"internal: the train loader gave {batch_no - first} batches in epoch "
                                   f"{epoch + 1}, expected {num_steps - first}; losses left unchecked")
            if stopped:
                checkpoint(epoch, train_loader.state_dict(), {"losses": losses, "skipped": skipped})
                log.write({"kind": "stopped", "epoch": epoch + 1, "iter": batch_no, "step": step,
                           "reason": stopped, "checkpoint": str(latest)})
                break

            elapsed = max(time.perf_counter() - t_epoch, 1e-9)
            with warnings.catch_warnings():  # a resumed epoch may have had no step left
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                scheduler.step()
            sync_buffers(model, info)
            entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                     "top1": None, "lr": epoch_lr,
                     "clips_per_s": clips_seen / elapsed, "data_wait_share": wait / elapsed,
                     "skipped_steps": skipped, "seconds": elapsed,
                     # videos that failed to decode this run and were replaced by others
                     "bad_videos_replaced": len(train_loader.stats.get("replaced", []))}
            last = epoch + 1 == cfg.epochs
            improved = False
            if (epoch + 1) % cfg.val_interval == 0 or last:
                if val_loader is None:
                    val_loader = make_loader(recipe, "val", info, seed, False)
                    loaders.append(val_loader)
                val = evaluate(net, val_loader, info, recipe, amp)
                entry.update(top1=val["top1"], top5=val["top5"])
                if best_top1 is None or val["top1"] > best_top1:
                    best_top1, improved = val["top1"], True
            history.append(entry)
            checkpoint(epoch + 1, None)
            if is_main:
                if improved:
                    link_or_copy(latest, work_dir / "best.pth")
                if (epoch + 1) % cfg.checkpoint_interval == 0 or last:
                    link_or_copy(latest, work_dir / f"epoch_{epoch + 1}.pth")
                replaced = train_loader.stats.get("replaced", [])
                if len(replaced) > reported_replaced:
                    log.write({"kind": "bad_videos", "split": "train", "epoch": epoch + 1,
                               "replaced": replaced[reported_replaced:]})
                    reported_replaced = len(replaced)
                log.write(dict(entry, kind="epoch", step=step), step)
                top = "" if entry["top1"] is None else f", val top-1 {entry['top1']:.2f}%"
                print(f"epoch {epoch + 1}/{cfg.epochs}: loss {entry['loss']:.4f}{top}, "
                      f"{entry['clips_per_s']:.1f} clips/s, data wait {entry['data_wait_share']:.0%}"
                      + (f", {skipped} non-finite steps skipped" if skipped else ""), flush=True)
            dist_utils.barrier(info)
            if stop.signum:
                stopped = stop.name
                break

        summary = {"work_dir": str(work_dir), "best_top1": best_top1, "history": history,
                   "checkpoint": str(latest), "log": str(log.path) if log.path else None,
                   "steps": step, "stopped": stopped, "world_size": info.world_size,
                   "stats": {k: len(v) for k, v in train_loader.stats.items()}}
        if stopped and stop.signum:
            raise TrainingStopped(
                f"stopped by {stopped}: saved {latest}; continue with: python -m tsn_dali.train "
                f"{args.recipe} --work-dir {work_dir} --resume", stop.exit_code)
        return summary
    except LoaderStalled as exc:
        if log is None:  # not in the epoch loop: nothing to save
            raise
        if bar is not None:
            bar.close()
        losses += [v for v in (float(x) for x, _, _ in pending) if math.isfinite(v)]
        saved = save_after_stall(lambda: training_state(epoch, train_loader.state_dict(),
                                                        {"losses": losses, "skipped": skipped}),
                                 latest, pending)
        log.write({"kind": "stalled", "epoch": epoch + 1, "split": exc.split, "batch": exc.batch,
                   "step": step, "videos": exc.paths, "seconds": exc.seconds, "checkpoint": saved})
        raise TrainingStopped(f"error: {exc}; {saved}; continue with: python -m tsn_dali.train "
                              f"{args.recipe} --work-dir {work_dir} --resume", EXIT_STALLED) from None
    finally:
        stop.uninstall()
        for loader in loaders:
            loader.close()
        if log is not None:
            log.close()
        if before is not None:
            restore_determinism(before)
        dist_utils.cleanup(info)


def save_after_stall(state_fn, latest: Path, pending) -> str:
    """Write ``latest.pth`` from this rank alone (the others may be blocked in a collective);
    not when an unchecked loss is not finite. Returns what happened, for the one-line message."""
    values = [float(x) for x, _, _ in pending]
    if not all(math.isfinite(v) for v in values):
        return f"{latest} not written (a loss since the last check is not finite)"
    try:
        save_checkpoint(state_fn(), latest)
    except CheckpointError as err:
        return str(err)
    return f"saved {latest}"


def make_loader(recipe, split, info, seed, progress):
    from tsn_dali.data.loader import build_loader
    return build_loader(recipe, split, rank=info.rank, world_size=info.world_size,
                        device=info.device, seed=seed, progress=progress)


def main(argv: Optional[List[str]] = None) -> dict:
    """Command line entry. Returns the summary: work_dir, best_top1, history (per epoch:
    epoch, loss, top1, lr, clips_per_s, data_wait_share), checkpoint (latest.pth).

    User errors print one line and exit 1; SIGINT/SIGTERM save and exit 130/143; a stalled
    loader saves and exits 75 (EXIT_STALLED).
    """
    args = build_parser().parse_args(argv)
    try:
        return train(args)
    except TrainingStopped as exc:
        print(str(exc), file=sys.stderr, flush=True)
        raise SystemExit(exc.code) from None
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    run_cli(main)
