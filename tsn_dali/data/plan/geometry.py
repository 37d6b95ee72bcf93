"""Spatial ops as pure functions on sizes and boxes (no pixels).

Rules from MMAction2's mmaction/datasets/transforms/processing.py (Resize,
MultiScaleCrop, RandomResizedCrop, CenterCrop, ThreeCrop, TenCrop, Flip) and
mmcv's ``rescale_size``. Sizes are ``(w, h)``; boxes are ``(x1, y1, x2, y2)`` with
``x2 = x1 + crop_w`` (exclusive ends, as MMAction2's crop_bbox). Random ops take a
``numpy.random.Generator`` (methods used: ``integers(low, high)``, ``uniform(low,
high, size)``, ``random()``); MMAction2 draws with Python's ``random`` there, whose
``randint(a, b)`` is inclusive: here ``rng.integers(a, b + 1)``.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple, Union

import numpy as np

Size = Tuple[int, int]
Box = Tuple[int, int, int, int]

MULTI_SCALE_CROP_SCALES = (1, 0.875, 0.75, 0.66)


def pair(value) -> Size:
    """``224`` -> ``(224, 224)``; ``[w, h]`` -> ``(w, h)`` (MMAction2 ``_pair``)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a (w, h) pair, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def rescale_size(size: Size, scale: Union[float, Sequence[float]]) -> Size:
    """mmcv.rescale_size: scale ``(w, h)`` keeping its aspect ratio.

    A number scales both sides; a pair ``(a, b)`` gives the largest size whose long side
    is at most ``max(a, b)`` and short side at most ``min(a, b)``; ``-1`` in the pair
    means "no limit" on the long side (MMAction2 Resize turns it into ``inf``), so
    ``(-1, 256)`` sets the short side to 256. Each side is ``int(x * factor + 0.5)``.
    """
    w, h = size
    if isinstance(scale, (int, float)):
        if scale <= 0:
            raise ValueError(f"scale: expected a positive number, got {scale}")
        factor = float(scale)
    else:
        a, b = float(scale[0]), float(scale[1])
        long_edge, short_edge = max(a, b), min(a, b)
        if short_edge == -1:
            long_edge, short_edge = math.inf, long_edge
        factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5)


def resize(size: Size, scale, keep_ratio: bool = True) -> Size:
    """MMAction2 Resize: the new ``(w, h)``.

    ``keep_ratio``: ``rescale_size(size, scale)``; otherwise ``scale`` is the ``(w, h)``
    itself (e.g. ``Resize((224, 224), keep_ratio=False)``).
    """
    if keep_ratio:
        return rescale_size(size, scale)
    w, h = pair(scale)
    return w, h


def _check_fits(size: Size, crop: Size, op: str) -> None:
    if crop[0] > size[0] or crop[1] > size[1]:
        raise ValueError(f"{op}: crop {crop[0]}x{crop[1]} is larger than the "
                         f"{size[0]}x{size[1]} frame; resize first (Resize scale (-1, short_side))")


def multi_scale_crop_sizes(size: Size, input_size, scales=MULTI_SCALE_CROP_SCALES,
                           max_wh_scale_gap: int = 1) -> List[Size]:
    """Candidate ``(w, h)`` of MMAction2 MultiScaleCrop, in its order.

    ``crop_sizes = [int(min(w, h) * s) for s in scales]``; every (w, h) pair whose scale
    levels differ by at most ``max_wh_scale_gap`` (outer loop h, inner loop w). A side
    within 3 px of ``input_size`` snaps to it (applied after the draw in MMAction2; the
    same thing since it does not depend on the draw).
    """
    w, h = size
    target = pair(input_size)
    base = min(w, h)
    sides = [int(base * s) for s in scales]
    out = []
    for i, ch in enumerate(sides):
        for j, cw in enumerate(sides):
            if abs(i - j) <= max_wh_scale_gap:
                crop = [cw, ch]
                for k in range(2):
                    if abs(crop[k] - target[k]) < 3:
                        crop[k] = target[k]
                out.append((crop[0], crop[1]))
    return out


def fixed_crop_offsets(size: Size, crop: Size, num_fixed_crops: int = 5) -> List[Tuple[int, int]]:
    """MMAction2 MultiScaleCrop's fixed ``(x, y)`` offsets, in its order.

    ``w_step = (w - crop_w) // 4``, ``h_step = (h - crop_h) // 4``; 5 regions: upper
    left, upper right, lower left, lower right, centre (``2 * step``); 13 adds centre
    left, centre right, lower centre, upper centre and the four quarter points.
    """
    if num_fixed_crops not in (5, 13):
        raise ValueError(f"num_fixed_crops: expected 5 or 13, got {num_fixed_crops}")
    ws, hs = (size[0] - crop[0]) // 4, (size[1] - crop[1]) // 4
    offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    if num_fixed_crops == 13:
        offsets += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                    (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
    return offsets


def multi_scale_crop(size: Size, rng, input_size, scales=MULTI_SCALE_CROP_SCALES,
                     max_wh_scale_gap: int = 1, random_crop: bool = False,
                     num_fixed_crops: int = 5) -> Box:
    """MMAction2 MultiScaleCrop: one box.

    Draws a crop size uniformly from ``multi_scale_crop_sizes`` (``rng.integers(0, n)``),
    then either a uniform offset (``random_crop``: x in ``[0, w - crop_w]``, then y) or one
    of ``fixed_crop_offsets`` (``rng.integers(0, 5 or 13)``).
    """
    sizes = multi_scale_crop_sizes(size, input_size, scales, max_wh_scale_gap)
    cw, ch = sizes[int(rng.integers(0, len(sizes)))]
    _check_fits(size, (cw, ch), "MultiScaleCrop")
    if random_crop:
        x = int(rng.integers(0, size[0] - cw + 1))
        y = int(rng.integers(0, size[1] - ch + 1))
    else:
        offsets = fixed_crop_offsets(size, (cw, ch), num_fixed_crops)
        x, y = offsets[int(rng.integers(0, len(offsets)))]
    return x, y, x + cw, y + ch


def random_resized_crop(size: Size, rng, area_range=(0.08, 1.0),
                        aspect_ratio_range=(3 / 4, 4 / 3), max_attempts: int = 10) -> Box:
    """MMAction2 RandomResizedCrop.get_crop_bbox: one box.

    Draws ``max_attempts`` log-uniform aspect ratios, then as many uniform areas (fraction
    of ``w * h``); candidate sides ``round(sqrt(area * ratio))`` x ``round(sqrt(area /
    ratio))``. The first candidate that fits gets a uniform offset (x then y, inclusive
    ranges); if none fits, the centred ``min(w, h)`` square.
    """
    w, h = size
    lo, hi = area_range
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"area_range: expected 0 < min <= max <= 1, got {area_range}")
    if not 0 < aspect_ratio_range[0] <= aspect_ratio_range[1]:
        raise ValueError(f"aspect_ratio_range: expected 0 < min <= max, got {aspect_ratio_range}")
    ratios = np.exp(rng.uniform(np.log(aspect_ratio_range[0]), np.log(aspect_ratio_range[1]),
                                size=max_attempts))
    areas = rng.uniform(lo, hi, size=max_attempts) * (w * h)
    cws = np.round(np.sqrt(areas * ratios)).astype(np.int32)
    chs = np.round(np.sqrt(areas / ratios)).astype(np.int32)
    for cw, ch in zip(cws.tolist(), chs.tolist()):
        if ch <= h and cw <= w:
            x = int(rng.integers(0, w - cw + 1))
            y = int(rng.integers(0, h - ch + 1))
            return x, y, x + cw, y + ch
    side = min(w, h)
    x, y = (w - side) // 2, (h - side) // 2
    return x, y, x + side, y + side


def center_crop(size: Size, crop_size) -> Box:
    """MMAction2 CenterCrop: ``left = (w - crop_w) // 2``, ``top = (h - crop_h) // 2``."""
    cw, ch = pair(crop_size)
    _check_fits(size, (cw, ch), "CenterCrop")
    x, y = (size[0] - cw) // 2, (size[1] - ch) // 2
    return x, y, x + cw, y + ch


def three_crop(size: Size, crop_size) -> List[Box]:
    """MMAction2 ThreeCrop: three boxes along the long side, order left, right, middle.

    The crop must span the full height (``step = (w - crop_w) // 2``, x offsets 0,
    ``2 * step``, ``step``) or the full width (same along y: top, bottom, middle).
    """
    w, h = size
    cw, ch = pair(crop_size)
    _check_fits(size, (cw, ch), "ThreeCrop")
    if ch == h:
        step = (w - cw) // 2
        offsets = [(0, 0), (2 * step, 0), (step, 0)]
    elif cw == w:
        step = (h - ch) // 2
        offsets = [(0, 0), (0, 2 * step), (0, step)]
    else:
        raise ValueError(f"ThreeCrop: crop {cw}x{ch} must match the frame's width or height "
                         f"({w}x{h}); give ThreeCrop a crop_size equal to the short side the frames "
                         f"are resized to before it (MMAction2: Resize scale (-1, S) then ThreeCrop crop_size S)")
    return [(x, y, x + cw, y + ch) for x, y in offsets]


def ten_crop(size: Size, crop_size) -> Tuple[List[Box], List[bool]]:
    """MMAction2 TenCrop: boxes and their mirror flags, crop-major.

    Five regions (upper left, upper right, lower left, lower right, centre) at
    ``step = (side - crop) // 4`` multiples (centre ``2 * step``, which can differ by a
    pixel from CenterCrop's), each followed by its horizontally flipped copy:
    ``[b0, b0 flipped, b1, b1 flipped, ...]``.
    """
    cw, ch = pair(crop_size)
    _check_fits(size, (cw, ch), "TenCrop")
    ws, hs = (size[0] - cw) // 4, (size[1] - ch) // 4
    boxes, flips = [], []
    for x, y in [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]:
        box = (x, y, x + cw, y + ch)
        boxes += [box, box]
        flips += [False, True]
    return boxes, flips


def flip(rng, flip_ratio: float = 0.5) -> bool:
    """MMAction2 Flip: mirror when a uniform draw ``rng.random() < flip_ratio``."""
    return bool(rng.random() < flip_ratio)


def flip_label(label: int, flipped: bool, flip_label_map=None) -> int:
    """MMAction2 Flip: a flipped clip takes ``flip_label_map.get(label, label)``."""
    if flipped and flip_label_map:
        return int(flip_label_map.get(int(label), label))
    return int(label)


def flip_box(box: Box, width: int) -> Box:
    """A box mirrored in a frame ``width`` wide (MMAction2 Flip._box_flip)."""
    x1, y1, x2, y2 = box
    return width - x2, y1, width - x1, y2
