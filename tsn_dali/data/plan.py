"""ClipPlan: everything an executor needs to produce one sample's views.

The planner (tsn_dali.data.planner) makes plans; executors (dali-gpu, dali-cpu,
reference) only carry them out, so the same plan gives the same frames and crops on
every executor (DESIGN.md, "Randomness lives in one place").

Views are crop-major: view ``k * T + t`` is crop ``k`` of frame ``frame_indices[t]``
(MMAction2's ThreeCrop/TenCrop order: every frame of the first crop, then the next).
Producing a view: decode frame -> resize the whole frame to ``resize_to`` (bilinear)
-> cut ``crops[k]`` -> resize that box to ``out_size`` if it differs (bilinear)
-> mirror horizontally if ``crop_flips[k]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class ClipPlan:
    sample: int  # index of the video in its annotation list
    path: str  # video file (or rawframe directory)
    label: int  # after Flip's flip_label_map
    num_frames: int  # the video's frame count as indexed
    orig_size: Tuple[int, int]  # (w, h) of the decoded frames
    frame_indices: np.ndarray  # int32 [T]: MMAction2 frame_inds (start_index included)
    resize_to: Tuple[int, int]  # (w, h) after Resize(scale=(-1, short_side))
    crops: np.ndarray  # int32 [K, 4]: x1, y1, x2, y2 in the resized frame
    crop_flips: np.ndarray  # bool [K]: mirror this crop (Flip draw, TenCrop's copies)
    out_size: Tuple[int, int]  # (w, h) of every view
    flip: bool = False  # the Flip op's draw (train); False where there is no Flip

    @property
    def num_views(self) -> int:
        return len(self.crops) * len(self.frame_indices)

    def to_json(self) -> dict:
        return {
            "sample": self.sample,
            "path": self.path,
            "label": int(self.label),
            "num_frames": int(self.num_frames),
            "orig_size": list(self.orig_size),
            "frame_indices": [int(i) for i in self.frame_indices],
            "resize_to": list(self.resize_to),
            "crops": [[int(v) for v in box] for box in self.crops],
            "crop_flips": [bool(f) for f in self.crop_flips],
            "out_size": list(self.out_size),
            "flip": bool(self.flip),
            "num_views": self.num_views,
        }
