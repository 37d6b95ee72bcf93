"""The CPU render path of a plan: its frames decoded (only what it needs), its views cut and
resized in uint8 straight into the output, as MMAction2 does it.

Decoding (``decode_plan``, ``decoder``):

- ``gops``: PyAV decodes only the GOPs the plan's frames lie in, skipping the frames no
  wanted frame depends on (tsn_dali.data.media.gops; the same pixels as a full decode),
  where the index found the video cuttable (closed-GOP starts with pts, frame 0 a
  keyframe: ``StreamFacts.sliceable``); elsewhere, and for rawframe folders, ``auto``;
- ``auto``: decord (MMAction2's DecordDecode), PyAV where decord fails; ``decord``, ``pyav``
  (tsn_dali.data.media.decoding.decode_frames). A stream decord cannot be told
  (several video streams, a rotated WebM: ``pyav_stream``) is PyAV's in every mode.

Frames come upright (their display matrix, as decord turns them), and of the plan's size
(``check_frame_size``: an index that does not describe the stream is refused by name).

Transforms (``resize``):

- ``uint8``: OpenCV's ``cv2.resize`` with INTER_LINEAR on uint8 frames, what MMAction2's
  Resize does (mmcv.imresize): the same pixels as MMAction2 where the inputs are equal.
  Each view is written once, into its place in ``out``: a box of the output size is a
  slice copy (mirrored with ``cv2.flip``), another is resized from the box;
- ``float``: the exact rule (reference.apply_plan: torch's bilinear in float32, rounded
  once per resize), cv2's sampling grid without its fixed-point weights; for checks.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from tsn_dali.data.media.decoding import decode_frames
from tsn_dali.data.plan.clip_plan import ClipPlan
from tsn_dali.data.render.executors.base import check_frame_size, pyav_stream

CPU_DECODERS = ("gops", "auto", "decord", "pyav")
RESIZES = ("uint8", "float")


def gops_usable(plan: ClipPlan) -> bool:
    """Whether the GOP decoder can take the plan's video: the index found it cuttable
    (closed GOPs from frame 0, a pts per packet) and it is a file, not a rawframe folder."""
    s = plan.stream
    return s is not None and bool(s.sliceable) and bool(s.keyframes) and int(s.keyframes[0]) == 0 \
        and len(s.keyframes) == len(s.keyframe_pts) and s.codec not in ("rawframes", "jpeg")


def decode_plan(plan: ClipPlan, decoder: str = "gops", filename_tmpl: str = "img_{:05}.jpg",
                frame_indices=None, counts: Optional[Dict[str, int]] = None, threads: int = 1) -> np.ndarray:
    """RGB ``[T, H, W, 3]`` uint8, upright, at ``frame_indices`` (default the plan's), decoded
    as ``decoder`` says (module docstring); ``counts`` gets the GOP decoder's counters
    (``gop_clips``, ``packets_fed``, ``frames_decoded``, ``gops``)."""
    frames = plan.frame_indices if frame_indices is None else frame_indices
    if decoder == "gops" and gops_usable(plan):
        from tsn_dali.data.media.gops import decode_gops

        s = plan.stream
        out = decode_gops(plan.path, frames, s.keyframes, s.keyframe_pts, reordered=bool(s.reordered),
                          stream_index=int(s.stream_index), threads=threads, counts=counts)
        if counts is not None:
            counts["gop_clips"] = counts.get("gop_clips", 0) + 1
    else:
        out = decode_frames(plan.path, frames, "auto" if decoder == "gops" else decoder, filename_tmpl,
                            stream=pyav_stream(plan))
    check_frame_size(plan, out)
    return out


def _cv2():
    import cv2

    cv2.setNumThreads(1)  # one clip per worker: the pool is the parallelism
    return cv2


def render_uint8(frames: np.ndarray, plan: ClipPlan, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Decoded frames ``[T, H, W, C]`` -> the plan's views ``[K*T, h, w, C]`` uint8, crop-major,
    written into ``out`` (allocated where None): resize to ``resize_to`` (cv2 INTER_LINEAR,
    uint8; left out where the size is already that), cut each box, resize it to ``out_size``
    where it differs, mirror where the plan says (ClipPlan docstring)."""
    cv2 = _cv2()
    T = len(frames)
    rw, rh = (int(v) for v in plan.resize_to)
    ow, oh = (int(v) for v in plan.out_size)
    if out is None:
        out = np.empty((len(plan.crops) * T, oh, ow, frames.shape[-1]), np.uint8)
    if frames.shape[1:3] != (rh, rw):
        frames = np.stack([cv2.resize(f, (rw, rh), interpolation=cv2.INTER_LINEAR) for f in frames])
    for k, ((x1, y1, x2, y2), flip) in enumerate(zip(np.asarray(plan.crops).tolist(),
                                                     np.asarray(plan.crop_flips).tolist())):
        views = out[k * T:(k + 1) * T]
        same = (x2 - x1, y2 - y1) == (ow, oh)
        for t in range(T):
            box = frames[t, y1:y2, x1:x2]
            if same and not flip:
                views[t] = box
            elif same:
                cv2.flip(box, 1, dst=views[t])
            else:
                cv2.resize(box, (ow, oh), dst=views[t], interpolation=cv2.INTER_LINEAR)
                if flip:
                    cv2.flip(views[t], 1, dst=views[t])
    return out


__all__ = ["CPU_DECODERS", "RESIZES", "decode_plan", "gops_usable", "render_uint8"]
