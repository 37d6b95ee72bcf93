"""The ``mmaction2`` peer: MMAction2 1.2.0's own config pipeline, as its users run it.

The recipe names the MMAction2 config of its table row (``reported.config``, under
``configs/recognition/tsn/`` of MMAction2's package); that config's ``train_pipeline``,
``val_pipeline`` or ``test_pipeline`` (the view's split) is built with MMAction2's
``Compose`` (DecordInit, SampleFrames, DecordDecode, Resize, MultiScaleCrop / CenterCrop /
TenCrop, Flip, FormatShape, PackActionInputs) and runs in a torch DataLoader over the
videos with mmengine's ``pseudo_collate``, as MMAction2's runner does; the batch is then
stacked (what MMAction2's ActionDataPreprocessor does before normalising).

Where a recipe overrides the config's values (segments, short side, input size: the tests'
tiny settings), those are put into the pipeline and listed (``adapted``).

Its frames are MMAction2's own random draws, not our plans, so its pixels cannot be
compared on the train view. On val and test views (no randomness) ``view_check`` runs
the same transforms on one video and compares its frame indices and crop boxes with our
plan's, and its pixels with our reference executor's render of that plan.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from tsn_dali.errors import one_line

TSN_CONFIGS = os.path.join(".mim", "configs", "recognition", "tsn")
SPLIT_PIPELINES = {"train": "train_pipeline", "val": "val_pipeline", "test": "test_pipeline"}
CROPS = ("MultiScaleCrop", "CenterCrop", "ThreeCrop", "TenCrop", "RandomResizedCrop", "RandomCrop")
AFTER_DECODE_SKIPPED = ("FormatShape", "PackActionInputs")  # not looked at by view_check


class MmactionMissing(RuntimeError):
    """MMAction2 (or its config for the recipe) is not there; ``str`` says why."""


def _import():
    try:
        import mmaction
        import mmaction.datasets.transforms  # noqa: F401  (registers the transforms)
        from mmaction.registry import TRANSFORMS
        from mmengine.dataset import Compose, pseudo_collate
    except Exception as exc:  # ImportError, or mmcv/mmengine missing beneath it
        raise MmactionMissing(f"mmaction2 does not import ({one_line(exc, named=True)})") from None

    def compose(pipeline):  # built from MMAction2's registry, as its datasets build theirs
        return Compose([TRANSFORMS.build(dict(op)) for op in pipeline])

    return mmaction, compose, pseudo_collate


def config_path(recipe) -> str:
    """MMAction2's config file for the recipe's row (``reported.config``)."""
    mmaction, _, _ = _import()
    name = getattr(getattr(recipe, "reported", None), "config", "") or ""
    if not name:
        raise MmactionMissing(f"{recipe.source}: reported.config names no MMAction2 config")
    path = os.path.join(os.path.dirname(mmaction.__file__), TSN_CONFIGS, name)
    if not os.path.isfile(path):
        raise MmactionMissing(f"MMAction2 {mmaction.__version__} has no config {name} ({path})")
    return path


def _pairs(value) -> Tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def adapt(pipeline: List[dict], split: str, num_segments: int, short_side: int, input_size: int
          ) -> Tuple[List[dict], Dict[str, str]]:
    """The config's pipeline with the recipe's values where they differ: SampleFrames'
    ``num_clips`` (train and val; the test view's 25 clips are the protocol's),
    Resize's short side, the crop and output size. Returns (pipeline, {'position:Op.key': 'old -> new'})."""
    out, changed = [], {}
    crop_size = next((op.get("input_size", op.get("crop_size")) for op in pipeline
                      if op["type"] in ("MultiScaleCrop", "CenterCrop", "TenCrop")), None)
    old_crop = _pairs(crop_size)[0] if crop_size is not None else None

    def put(op, key, value):
        if op.get(key) != value:
            changed[f"{i}:{op['type']}.{key}"] = f"{op.get(key)} -> {value}"
            op[key] = value

    for i, op in enumerate(pipeline):
        op = dict(op)
        kind = op["type"]
        if kind == "SampleFrames" and split != "test":
            put(op, "num_clips", int(num_segments))
        elif kind == "Resize" and tuple(_pairs(op.get("scale"))) [:1] == (-1,):
            put(op, "scale", (-1, int(short_side)))
        elif kind == "Resize" and old_crop is not None and tuple(_pairs(op.get("scale"))) == (old_crop, old_crop):
            put(op, "scale", (int(input_size), int(input_size)))
        elif kind == "MultiScaleCrop":
            put(op, "input_size", int(input_size))
        elif kind in ("CenterCrop", "TenCrop") and op.get("crop_size") == old_crop:
            put(op, "crop_size", int(input_size))
        elif kind == "ThreeCrop":
            put(op, "crop_size", int(short_side))
        out.append(op)
    return out, changed


def config_pipeline(recipe, split: str) -> Tuple[List[dict], dict]:
    """(the split's pipeline of the recipe's MMAction2 config, adapted to the recipe; facts:
    config file, pipeline key, what was adapted)."""
    path = config_path(recipe)  # MmactionMissing first where mmaction2 or mmengine does not import
    from mmengine.config import Config

    key = SPLIT_PIPELINES[split]
    cfg = Config.fromfile(path)
    if key not in cfg:
        raise MmactionMissing(f"{os.path.basename(path)} has no {key}")
    data = recipe.data
    pipeline, changed = adapt([dict(op) for op in cfg[key]], split, data.num_segments, data.short_side,
                              data.input_size)
    return pipeline, {"config": os.path.basename(path), "pipeline": key, "adapted": changed,
                      "transforms": [op["type"] for op in pipeline]}


class MmactionVideos(torch.utils.data.Dataset):
    """MMAction2's VideoDataset as the runner feeds it: ``pipeline(dict(filename, label,
    start_index=0, modality='RGB'))`` per video, the pipeline built with MMAction2's Compose."""

    def __init__(self, records: Sequence[Tuple[str, int]], pipeline: List[dict]):
        _, Compose, _ = _import()
        self.records = list(records)
        self.pipeline = Compose(pipeline)

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        path, label = self.records[i]
        return self.pipeline({"filename": path, "label": int(label), "start_index": 0, "modality": "RGB"})


def collate():
    """mmengine's ``pseudo_collate`` (MMAction2's default_collate for its runners)."""
    return _import()[2]


def stack_inputs(collated) -> torch.Tensor:
    """``pseudo_collate``'s ``inputs`` (one ``[V, C, H, W]`` uint8 tensor a video) stacked
    ``[N, V, C, H, W]``, as ActionDataPreprocessor's ``stack_batch``."""
    return torch.stack(list(collated["inputs"]))


def _run_until_formatted(pipeline: List[dict], path: str) -> dict:
    _, Compose, _ = _import()
    ops = Compose([op for op in pipeline if op["type"] not in AFTER_DECODE_SKIPPED])
    return ops({"filename": path, "label": 0, "start_index": 0, "modality": "RGB"})


def plan_boxes(plan) -> np.ndarray:
    """Our plan's crop box of every view ``[V, 4]`` (crop-major: box ``k`` for its T frames)."""
    crops = np.asarray(plan.crops, dtype=np.int64).reshape(-1, 4)
    return np.repeat(crops, len(plan.frame_indices), axis=0)


def their_boxes(results: dict, views: int) -> Optional[np.ndarray]:
    """MMAction2's crop box of every view ``[V, 4]`` (CenterCrop records one box for all,
    TenCrop and ThreeCrop one per view); None where no crop recorded one."""
    box = results.get("crop_bbox")
    if box is None:
        return None
    box = np.asarray(box, dtype=np.int64).reshape(-1, 4)
    return np.repeat(box, views, axis=0) if len(box) == 1 else box


def view_check(pipeline: List[dict], split: str, plan, our_views: Optional[torch.Tensor],
               executors_views: Optional[Dict[str, torch.Tensor]] = None) -> dict:
    """MMAction2's transforms on ``plan.path`` against our ``plan`` (val/test views): frame
    indices, crop boxes and, with ``our_views`` (uint8 ``[V, H, W, C]``, our reference
    executor's render of ``plan``), pixels; ``executors_views`` (label -> each measured
    executor's render) adds each one's difference (``executors``). The train view is
    MMAction2's random draw: only its shape is compared."""
    results = _run_until_formatted(pipeline, plan.path)
    theirs = np.stack(results["imgs"])
    out = {"compared": "frames, boxes, pixels" if split != "train" else "shape only (random draws)",
           "same_shape": our_views is not None and tuple(theirs.shape) == tuple(our_views.shape),
           "peer_shape": list(theirs.shape)}
    if split == "train":
        return out
    inds = np.asarray(results["frame_inds"]).reshape(-1)
    out["same_frames"] = bool(np.array_equal(inds, np.asarray(plan.frame_indices).reshape(-1)))
    boxes = their_boxes(results, len(theirs))
    out["same_boxes"] = boxes is not None and boxes.shape == plan_boxes(plan).shape and \
        bool(np.array_equal(boxes, plan_boxes(plan)))
    out["frame_indices"] = [int(i) for i in inds]
    if out["same_shape"]:
        diff = np.abs(theirs.astype(np.int16) - our_views.cpu().numpy().astype(np.int16))
        out.update(mean_abs_diff=float(diff.mean()), max_abs_diff=float(diff.max()))
    out["executors"] = differences(theirs, executors_views or {})
    return out


def differences(theirs, views: Dict[str, torch.Tensor]) -> Dict[str, dict]:
    """Per label, the mean and max absolute difference (grey levels) of ``views[label]``
    (uint8 ``[V, H, W, C]``) from ``theirs``; None where the shapes differ."""
    theirs = np.asarray(theirs).astype(np.int16)
    out = {}
    for label, v in views.items():
        v = np.asarray(v.cpu() if hasattr(v, "cpu") else v).astype(np.int16)
        d = np.abs(v - theirs) if v.shape == theirs.shape else None
        out[label] = None if d is None else {"mean": float(d.mean()), "max": float(d.max())}
    return out


__all__ = ["MmactionMissing", "MmactionVideos", "adapt", "collate", "config_path", "config_pipeline", "differences", "plan_boxes",
           "stack_inputs", "their_boxes", "view_check"]
