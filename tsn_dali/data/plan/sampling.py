"""Frame sampling: which frames of a video a clip is made of.

Pure numpy versions of MMAction2's ``SampleFrames`` and ``DenseSampleFrames``
(mmaction/datasets/transforms/loading.py). Every random draw comes from the
``rng`` argument, a ``numpy.random.Generator`` (the planner passes
``default_rng([seed, epoch, sample])``). Only these Generator methods are called, so a
test may pass any object that has them:

- ``rng.integers(high, size=n)``: uniform ints in [0, high), MMAction2's
  ``np.random.randint(high, size=n)``;
- ``rng.integers(low, high)``: one int in [low, high);
- ``rng.uniform(low, high, size=n)``: floats in [low, high).

All functions return int32 frame indices with ``start_index`` added (0 for videos,
1 for rawframes), clip by clip: ``[clip0 frame0, clip0 frame1, ..., clip1 frame0, ...]``.
"""
from __future__ import annotations


import numpy as np

OUT_OF_BOUND = ("loop", "repeat_last")


def original_clip_len(clip_len: int, frame_interval: int, test_mode: bool) -> int:
    """Frames one clip spans in the video.

    MMAction2 SampleFrames._get_ori_clip_len (no target_fps): ``clip_len *
    frame_interval`` in train mode, ``(clip_len - 1) * frame_interval + 1`` in test mode.
    """
    if test_mode:
        return (clip_len - 1) * frame_interval + 1
    return clip_len * frame_interval


def train_clip_offsets(num_frames: int, num_clips: int, ori_clip_len: int, rng,
                       keep_tail_frames: bool = False) -> np.ndarray:
    """First frame of each clip, train mode (MMAction2 SampleFrames._get_train_clips).

    ``avg_interval = (num_frames - ori_clip_len + 1) // num_clips``;
    - ``avg_interval > 0``: segment ``i`` starts at ``i * avg_interval``, plus a draw in
      ``[0, avg_interval)`` per segment;
    - else if ``num_frames > max(num_clips, ori_clip_len)``: ``num_clips`` sorted draws in
      ``[0, num_frames - ori_clip_len + 1)``;
    - else if ``avg_interval == 0``: ``around(i * (num_frames - ori_clip_len + 1) / num_clips)``
      (no draw; short videos repeat frames);
    - else: all zeros.
    ``keep_tail_frames``: float segments ``(num_frames - ori_clip_len + 1) / num_clips`` wide,
    offsets ``int(i * avg + uniform(0, avg))`` when ``num_frames > ori_clip_len - 1``.
    """
    if keep_tail_frames:
        avg = (num_frames - ori_clip_len + 1) / float(num_clips)
        if num_frames > ori_clip_len - 1:
            base = np.arange(num_clips) * avg
            return (base + rng.uniform(0, avg, size=num_clips)).astype(np.int32)
        return np.zeros((num_clips,), dtype=np.int32)
    avg_interval = (num_frames - ori_clip_len + 1) // num_clips
    if avg_interval > 0:
        base = np.arange(num_clips) * avg_interval
        return base + np.asarray(rng.integers(avg_interval, size=num_clips))
    if num_frames > max(num_clips, ori_clip_len):
        return np.sort(np.asarray(rng.integers(num_frames - ori_clip_len + 1, size=num_clips)))
    if avg_interval == 0:
        ratio = (num_frames - ori_clip_len + 1.0) / num_clips
        return np.around(np.arange(num_clips) * ratio)
    return np.zeros((num_clips,), dtype=np.int32)


def centre_clip_offsets(num_frames: int, num_clips: int, clip_len: int, ori_clip_len: int,
                      twice_sample: bool = False) -> np.ndarray:
    """First frame of each clip, test mode (MMAction2 SampleFrames._get_test_clips).

    2D models (``clip_len == 1``): segment centres ``i * avg + avg / 2`` with
    ``avg = num_frames / num_clips`` as floats (truncated to int after the bound rule);
    ``twice_sample`` appends the segment starts ``i * avg``. 3D models: ``num_clips``
    starts spread evenly over ``[0, max(num_frames - ori_clip_len, 0)]`` and rounded, or
    the middle when there is one clip.
    """
    if clip_len == 1:
        avg = num_frames / float(num_clips)
        base = np.arange(num_clips) * avg
        offsets = base + avg / 2.0
        if twice_sample:
            offsets = np.concatenate([offsets, base])
        return offsets
    max_offset = max(num_frames - ori_clip_len, 0)
    n = num_clips * 2 if twice_sample else num_clips
    if n > 1:
        between = max_offset / float(num_clips - 1) if num_clips > 1 else 0.0
        return np.round(np.arange(n) * between)
    return np.array([max_offset // 2])


def _expand_clips(offsets: np.ndarray, num_frames: int, clip_len: int, frame_interval: int,
                  out_of_bound: str, start_index: int, rng=None,
                  temporal_jitter: bool = False) -> np.ndarray:
    """Clip offsets -> frame indices (MMAction2 SampleFrames.transform).

    Each clip takes ``clip_len`` frames ``frame_interval`` apart (``temporal_jitter``
    adds a draw in ``[0, frame_interval)`` to each). Indices past the end wrap
    (``loop``: ``mod num_frames``) or repeat the clip's last valid index
    (``repeat_last``). Then ``start_index`` is added and the result truncated to int32
    (so float test offsets are truncated after the modulo).
    """
    if out_of_bound not in OUT_OF_BOUND:
        raise ValueError(f"out_of_bound_opt: expected one of {', '.join(OUT_OF_BOUND)}, "
                         f"got {out_of_bound!r}")
    inds = np.asarray(offsets)[:, None] + np.arange(clip_len)[None, :] * frame_interval
    inds = np.concatenate(inds)
    if temporal_jitter:
        inds = inds + np.asarray(rng.integers(frame_interval, size=len(inds)))
    inds = inds.reshape((-1, clip_len))
    if out_of_bound == "loop":
        inds = np.mod(inds, num_frames)
    else:
        safe = inds < num_frames
        last = np.max(safe * inds, axis=1)
        inds = safe * inds + ((1 - safe).T * last).T
    return (np.concatenate(inds) + start_index).astype(np.int32)


def sample_frames(num_frames: int, num_clips: int, rng=None, *, clip_len: int = 1,
                  frame_interval: int = 1, test_mode: bool = False, start_index: int = 0,
                  out_of_bound_opt: str = "loop", twice_sample: bool = False,
                  keep_tail_frames: bool = False, temporal_jitter: bool = False) -> np.ndarray:
    """MMAction2 ``SampleFrames``: TSN segment sampling.

    Train: one random frame per segment (``train_clip_offsets``); test/val
    (``test_mode``): the centre of each segment (``centre_clip_offsets``), no draws.
    Returns int32 ``[num_clips * clip_len]`` (twice that with ``twice_sample``).
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames: expected a positive frame count, got {num_frames}")
    ori = original_clip_len(clip_len, frame_interval, test_mode)
    if test_mode:
        offsets = centre_clip_offsets(num_frames, num_clips, clip_len, ori, twice_sample)
    else:
        offsets = train_clip_offsets(num_frames, num_clips, ori, rng, keep_tail_frames)
    return _expand_clips(offsets, num_frames, clip_len, frame_interval, out_of_bound_opt,
                         start_index, rng, temporal_jitter)


def dense_clip_offsets(num_frames: int, num_clips: int, sample_range: int, rng=None,
                       test_mode: bool = False, num_sample_positions: int = 10) -> np.ndarray:
    """First frame of each clip (MMAction2 DenseSampleFrames._get_train/test_clips).

    The clips sit ``sample_range // num_clips`` frames apart inside a window of
    ``sample_range`` frames; ``sample_position = max(1, 1 + num_frames - sample_range)``
    windows fit. Train: the window starts at 0 when ``sample_position == 1``, else at a
    draw in ``[0, sample_position - 1)`` (MMAction2's ``randint(0, sample_position - 1)``,
    whose upper end is exclusive). Test: ``num_sample_positions`` window starts
    ``linspace(0, sample_position - 1, num, dtype=int)``, each giving ``num_clips`` offsets.
    Offsets wrap ``mod num_frames``.
    """
    sample_position = max(1, 1 + num_frames - sample_range)
    interval = sample_range // num_clips
    base = np.arange(num_clips) * interval
    if test_mode:
        starts = np.linspace(0, sample_position - 1, num=num_sample_positions, dtype=int)
        return np.concatenate([(base + s) % num_frames for s in starts])
    start = 0 if sample_position == 1 else int(rng.integers(0, sample_position - 1))
    return (base + start) % num_frames


def dense_sample_frames(num_frames: int, num_clips: int, rng=None, *, clip_len: int = 1,
                        frame_interval: int = 1, sample_range: int = 64,
                        num_sample_positions: int = 10, test_mode: bool = False,
                        start_index: int = 0, out_of_bound_opt: str = "loop",
                        temporal_jitter: bool = False) -> np.ndarray:
    """MMAction2 ``DenseSampleFrames``: clips packed into a ``sample_range`` window.

    Returns int32 ``[num_clips * clip_len]`` in train mode and
    ``[num_sample_positions * num_clips * clip_len]`` in test mode.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames: expected a positive frame count, got {num_frames}")
    offsets = dense_clip_offsets(num_frames, num_clips, sample_range, rng, test_mode,
                                 num_sample_positions)
    return _expand_clips(offsets, num_frames, clip_len, frame_interval, out_of_bound_opt,
                         start_index, rng, temporal_jitter)


__all__ = ["sample_frames", "dense_sample_frames", "train_clip_offsets", "centre_clip_offsets",
           "dense_clip_offsets", "original_clip_len"]
