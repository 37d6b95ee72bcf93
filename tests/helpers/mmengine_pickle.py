"""Checkpoints exactly as mmengine 0.10 writes them (MMAction2 1.2.0's training), made by
mmengine itself: a ``Runner`` trains one epoch and its CheckpointHook calls
``Runner.save_checkpoint``, which writes ``meta``, ``state_dict``, ``message_hub`` (the
HistoryBuffers of the training log, whose statistics methods pickle as
``builtins.getattr`` calls since mmengine 0.7.3), ``optimizer`` and ``param_schedulers``.

Run in a subprocess (``python tests/helpers/mmengine_pickle.py ...``): a Runner sets
process-wide state (seeds, logging, the multiprocessing start method) that the test
process keeps out of. Where mmengine is not installed, ``TINY_FILE`` is the committed one
(tests/data/README.md says how it was made) and tests that need mmengine skip.

    python tests/helpers/mmengine_pickle.py tiny OUT.pth [--state STATE.pt] [--legacy]
    python tests/helpers/mmengine_pickle.py mmaction OUT_DIR --classes 3 --size 32 --views 2

``tiny``: an mmengine ``BaseModel`` (``backbone`` conv, ``cls_head.fc_cls``) trained one
epoch of two steps. ``--state STATE.pt`` (a plain dict of tensors) is what the checkpoint's
``state_dict`` holds instead (a ``before_save_checkpoint`` hook puts it there, the way
mmengine's EMAHook swaps weights); ``--legacy`` re-saves the file in torch's pre-1.6
format (MMAction2's 2020 checkpoints). ``mmaction``: MMAction2's TSN Recognizer2D (its
ResNet-18, TSNHead, ActionDataPreprocessor) trained one step by a Runner; OUT_DIR gets
``epoch_1.pth`` and ``scores.pt`` (``frames`` uint8 [V, 3, H, W] and MMAction2's own
``scores`` for them, the model in eval mode).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY_FILE = HERE.parent / "data" / "mmengine_0.10.7_runner_tiny.pth"
TINY_CLASSES = 3


def _installed(*names: str) -> bool:
    """Whether these packages are installed (found, not imported: the subprocess imports them)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in names)


def have_mmengine() -> bool:
    return _installed("mmengine")


def have_mmaction() -> bool:
    return _installed("mmengine", "mmaction", "mmcv")


def import_mmaction_models():
    """``mmaction.models``. mmaction2 1.2.0's wheel lacks ``models/localizers/drn`` although
    ``localizers/__init__`` imports it: where that folder is missing, an empty stand-in
    module (no ``DRN`` localizer) is registered first; and ``mmaction.utils.dependency``
    imports the ``importlib_metadata`` backport, which is the standard library's
    ``importlib.metadata`` where the backport is not installed. Nothing TSN uses is replaced."""
    import importlib
    import importlib.metadata
    import types

    try:
        import importlib_metadata  # noqa: F401
    except ImportError:
        sys.modules["importlib_metadata"] = importlib.metadata
    import mmaction

    drn = Path(mmaction.__file__).parent / "models" / "localizers" / "drn"
    if not drn.is_dir():
        for name in ("mmaction.models.localizers.drn", "mmaction.models.localizers.drn.drn"):
            module = sys.modules.setdefault(name, types.ModuleType(name))
            module.__path__ = []
        sys.modules["mmaction.models.localizers.drn.drn"].DRN = None
    return importlib.import_module("mmaction.models")


def run(*args, timeout: int = 600) -> None:
    """This file as a script, in a subprocess; raises with its stderr on failure."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(Path(__file__)), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"mmengine_pickle {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")


def runner_checkpoint(path, state=None, legacy: bool = False) -> Path:
    """``tiny`` in a subprocess: a Runner-written checkpoint at ``path`` (its ``state_dict``
    replaced by ``state``, a dict of tensors, where given)."""
    import torch

    path = Path(path)
    args = ["tiny", path]
    if state is not None:
        state_file = path.with_suffix(".state.pt")
        torch.save(dict(state), state_file)
        args += ["--state", state_file]
    run(*args, *(["--legacy"] if legacy else []))
    return path


def mmaction_checkpoint(out_dir, classes: int = 3, size: int = 32, views: int = 2) -> dict:
    """``mmaction`` in a subprocess: {"checkpoint": path, "frames": uint8 [V, 3, H, W],
    "scores": MMAction2's [classes]}."""
    import torch

    out_dir = Path(out_dir)
    run("mmaction", out_dir, "--classes", classes, "--size", size, "--views", views)
    parity = torch.load(out_dir / "scores.pt", weights_only=True)
    return {"checkpoint": out_dir / "epoch_1.pth", **parity}


# ---- what runs in the subprocess (mmengine imported) ----

def _runner(model, work_dir: Path, dataset, hooks=(), cfg=None, **kwargs):
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import Runner

    loader = torch.utils.data.DataLoader(dataset, batch_size=kwargs.pop("batch_size", 2), shuffle=False,
                                         collate_fn=kwargs.pop("collate_fn", pseudo_collate))
    return Runner(model=model, work_dir=str(work_dir), train_dataloader=loader,
                  train_cfg=dict(by_epoch=True, max_epochs=1),
                  optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=1e-4),
                                     clip_grad=dict(max_norm=40, norm_type=2)),
                  param_scheduler=dict(type="MultiStepLR", by_epoch=True, milestones=[40, 80], gamma=0.1),
                  default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1),
                                     logger=dict(type="LoggerHook", interval=1)),
                  custom_hooks=list(hooks), randomness=dict(seed=0), cfg=cfg,
                  experiment_name=f"tsn_dali_test_{uuid.uuid4().hex[:8]}", **kwargs)


def _tiny(out: Path, state_file=None, legacy: bool = False) -> None:
    import torch
    import torch.nn as nn
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel

    class Tiny(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Conv2d(3, 4, 3)
            self.cls_head = nn.Module()
            self.cls_head.fc_cls = nn.Linear(4, TINY_CLASSES)

        def forward(self, inputs, labels, mode="tensor"):
            x = self.cls_head.fc_cls(self.backbone(inputs).mean((2, 3)))
            return {"loss": nn.functional.cross_entropy(x, labels)} if mode == "loss" else x

    class Frames(torch.utils.data.Dataset):
        metainfo = dict(classes=("a", "b", "c"))

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return dict(inputs=torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(i)),
                        labels=torch.tensor(i % TINY_CLASSES))

    class SwapState(Hook):
        def before_save_checkpoint(self, runner, checkpoint):
            checkpoint["state_dict"] = torch.load(state_file, weights_only=True)

    work = out.parent / f"{out.stem}_work"
    runner = _runner(Tiny(), work, Frames(), hooks=[SwapState()] if state_file else [],
                     collate_fn=torch.utils.data.default_collate)
    runner.train()
    written = work / "epoch_1.pth"
    if legacy:  # our own file, just written: full unpickling is safe here
        torch.save(torch.load(written, weights_only=False), out, _use_new_zipfile_serialization=False)
    else:
        written.replace(out)


def mmaction_tsn_config(classes: int) -> dict:
    """MMAction2 1.2.0's TSN (configs/_base_/models/tsn_r50.py) with its ResNet at depth 18."""
    return dict(type="Recognizer2D",
                backbone=dict(type="ResNet", pretrained=None, depth=18, norm_eval=False),
                cls_head=dict(type="TSNHead", num_classes=classes, in_channels=512, spatial_type="avg",
                              consensus=dict(type="AvgConsensus", dim=1), dropout_ratio=0.4, init_std=0.01,
                              average_clips="prob"),
                data_preprocessor=dict(type="ActionDataPreprocessor", mean=[123.675, 116.28, 103.53],
                                       std=[58.395, 57.12, 57.375], format_shape="NCHW"))


def _mmaction(out_dir: Path, classes: int, size: int, views: int) -> None:
    import torch

    import_mmaction_models()
    from mmaction.registry import MODELS
    from mmaction.structures import ActionDataSample
    from mmaction.utils import register_all_modules

    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(mmaction_tsn_config(classes))
    model.init_weights()

    class Clips(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(100 + i)
            sample = ActionDataSample().set_gt_label(i % classes)
            return dict(inputs=torch.randint(0, 256, (views, 3, size, size), dtype=torch.uint8, generator=g),
                        data_samples=sample)

    runner = _runner(model, out_dir, Clips(), default_scope="mmaction")
    runner.train()
    frames = torch.randint(0, 256, (views, 3, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(7))
    model.eval()
    with torch.no_grad():
        result = model.test_step(dict(inputs=[frames], data_samples=[ActionDataSample()]))
    torch.save({"frames": frames, "scores": result[0].pred_score.float()}, out_dir / "scores.pt")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="kind", required=True)
    tiny = sub.add_parser("tiny")
    tiny.add_argument("out", type=Path)
    tiny.add_argument("--state", type=Path)
    tiny.add_argument("--legacy", action="store_true")
    mm = sub.add_parser("mmaction")
    mm.add_argument("out_dir", type=Path)
    mm.add_argument("--classes", type=int, default=3)
    mm.add_argument("--size", type=int, default=32)
    mm.add_argument("--views", type=int, default=2)
    args = p.parse_args(argv)
    if args.kind == "tiny":
        _tiny(args.out, args.state, args.legacy)
    else:
        _mmaction(args.out_dir, args.classes, args.size, args.views)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
