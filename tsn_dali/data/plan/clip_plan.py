"""ClipPlan: everything an executor needs to produce one sample's views.

The planner (tsn_dali.data.plan.planner) makes plans; executors (dali-gpu, dali-cpu,
reference) only carry them out, so the same plan gives the same frames and crops on
every executor (DESIGN.md, "Randomness lives in one place").

Views are crop-major: view ``k * T + t`` is crop ``k`` of frame ``frame_indices[t]``
(MMAction2's ThreeCrop/TenCrop order: every frame of the first crop, then the next).
Producing a view: decode frame -> resize the whole frame to ``resize_to`` (bilinear)
-> cut ``crops[k]`` -> resize that box to ``out_size`` if it differs (bilinear)
-> mirror horizontally if ``crop_flips[k]``.

``stream`` carries what the executors need to know of the video from the index (codec,
container, keyframes, pixel format, which stream, its display rotation...), so that no
executor probes a file again. ``orig_size`` is the upright (display) size: every executor
turns rotated frames upright before the resize.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class StreamFacts:
    """The index's facts about one video that executors act on (tsn_dali.data.index.video_index).

    ``codec``: PyAV's codec name ("h264", "vp9", ...; "jpeg" for rawframe folders);
    ``keyframes``/``keyframe_pts``: closed-GOP starts (frame numbers, pts); ``sliceable``:
    clips can be cut out by packets (tsn_dali.data.render.slicing); the rest are NVDEC's
    capability inputs (tsn_dali.data.render.executors.nvdec). ``width``/``height`` are the
    stored size; ``rotation`` the clockwise degrees that turn it upright; ``stream_index``
    the container's index of the stream decoded, of ``video_streams`` video streams.
    """

    codec: str = ""
    container: str = ""
    num_frames: int = 0
    width: int = 0
    height: int = 0
    coded_width: int = 0
    coded_height: int = 0
    pix_fmt: str = ""
    bit_depth: int = 0
    profile: str = ""
    keyframes: Tuple[int, ...] = ()
    keyframe_pts: Tuple[int, ...] = ()
    sliceable: bool = False
    reordered: bool = False
    rotation: int = 0
    stream_index: int = 0
    video_streams: int = 1

    @classmethod
    def from_info(cls, info) -> "StreamFacts":
        """From a VideoInfo (or any object with some of its fields; missing ones default)."""
        values = {}
        for name, default in cls.__dataclass_fields__.items():
            value = getattr(info, name, default.default)
            values[name] = tuple(int(v) for v in value or ()) if name.startswith("keyframe") else value
        return cls(**values)


@dataclass(frozen=True)
class ClipPlan:
    sample: int  # index of the video in its annotation list
    path: str  # video file (or rawframe directory)
    label: int  # after Flip's flip_label_map
    num_frames: int  # the video's frame count as indexed
    orig_size: Tuple[int, int]  # (w, h) of the decoded frames, upright (the display size)
    frame_indices: np.ndarray  # int32 [T]: MMAction2 frame_inds (start_index included)
    resize_to: Tuple[int, int]  # (w, h) after Resize(scale=(-1, short_side))
    crops: np.ndarray  # int32 [K, 4]: x1, y1, x2, y2 in the resized frame
    crop_flips: np.ndarray  # bool [K]: mirror this crop (Flip draw, TenCrop's copies)
    out_size: Tuple[int, int]  # (w, h) of every view
    flip: bool = False  # the Flip op's draw (train); False where there is no Flip
    stream: Optional[StreamFacts] = None  # from the index; None: executors find out themselves

    @property
    def codec(self) -> str:
        """The video's codec from the index ("" where the plan carries no stream facts)."""
        return self.stream.codec if self.stream is not None else ""

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
            "codec": self.codec,
            "rotation": int(self.stream.rotation) if self.stream is not None else 0,
            "stream_index": int(self.stream.stream_index) if self.stream is not None else 0,
            "video_streams": int(self.stream.video_streams) if self.stream is not None else 1,
        }
