"""Pipeline ops: MMAction2's transform names, each a small frozen dataclass.

An op's fields are its parameters, with MMAction2's defaults (a field without a default
must be given); its constructor checks their values (ValueError naming the parameter).
``apply(state, rng)`` carries the op out on a ``PlanState`` (sizes, indices and boxes, no
pixels), drawing only from ``rng`` (tsn_dali.data.plan.planner seeds it per sample). The rules
themselves are the pure functions of tsn_dali.data.plan.sampling and tsn_dali.data.plan.geometry.
MMAction2's ``lazy`` flag is accepted and ignored (plans are always "lazy").

``OPS`` is the one table, name -> class.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Tuple

from tsn_dali.data.plan import geometry, sampling


@dataclass
class PlanState:
    """What the ops work on for one sample: the frame size as it stands, and the plan so far."""

    num_frames: int
    size: Tuple[int, int]  # (w, h) of the frames as the ops so far leave them
    label: int
    frame_indices: Optional[object] = None  # int32 array, from the sampling op
    resize_to: Optional[Tuple[int, int]] = None  # the whole-frame resize, before any crop
    crops: Optional[List[Tuple[int, int, int, int]]] = None
    crop_flips: List[bool] = field(default_factory=list)
    out_size: Optional[Tuple[int, int]] = None  # the resize after the crops
    flipped: bool = False


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value


def _positive(op: str, **values) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{op}.{name}: expected a positive integer, got {v!r}")


class Op:
    """The shared part: the op's kind ('sampling' | 'crop' | 'resize' | 'flip') and name."""

    kind: ClassVar[str] = ""

    @classmethod
    def parameters(cls) -> Dict[str, object]:
        """{parameter: default} (``dataclasses.MISSING`` where it must be given)."""
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def apply(self, state: PlanState, rng) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class SampleFrames(Op):
    """MMAction2 SampleFrames (sampling.sample_frames): the video is cut into ``num_clips``
    equal segments and one clip of ``clip_len`` frames, ``frame_interval`` apart, is taken
    from each: at a random offset in the segment when training, at its centre with
    ``test_mode=True`` (TSN: ``SampleFrames(clip_len=1, num_clips=8)``). A video shorter
    than a clip is read in a loop (``out_of_bound_opt='loop'``)."""

    kind: ClassVar[str] = "sampling"
    clip_len: int
    frame_interval: int = 1
    num_clips: int = 1
    temporal_jitter: bool = False
    twice_sample: bool = False
    out_of_bound_opt: str = "loop"
    test_mode: bool = False
    keep_tail_frames: bool = False
    start_index: int = 0

    def __post_init__(self):
        _positive("SampleFrames", clip_len=self.clip_len, frame_interval=self.frame_interval,
                  num_clips=self.num_clips)
        if self.out_of_bound_opt not in sampling.OUT_OF_BOUND:
            raise ValueError(f"SampleFrames.out_of_bound_opt: expected one of {', '.join(sampling.OUT_OF_BOUND)}, "
                             f"got {self.out_of_bound_opt!r}")

    def apply(self, state: PlanState, rng) -> None:
        state.frame_indices = sampling.sample_frames(
            state.num_frames, self.num_clips, rng, clip_len=self.clip_len, frame_interval=self.frame_interval,
            test_mode=self.test_mode, start_index=self.start_index, out_of_bound_opt=self.out_of_bound_opt,
            twice_sample=self.twice_sample, keep_tail_frames=self.keep_tail_frames,
            temporal_jitter=self.temporal_jitter)


@dataclass(frozen=True)
class DenseSampleFrames(Op):
    """MMAction2 DenseSampleFrames (sampling.dense_sample_frames): ``num_clips`` clips of
    ``clip_len`` frames within a window of ``sample_range`` frames (one random window when
    training; ``num_sample_positions`` windows spread over the video with ``test_mode``)."""

    kind: ClassVar[str] = "sampling"
    clip_len: int
    frame_interval: int = 1
    num_clips: int = 1
    sample_range: int = 64
    num_sample_positions: int = 10
    temporal_jitter: bool = False
    out_of_bound_opt: str = "loop"
    test_mode: bool = False
    start_index: int = 0

    def __post_init__(self):
        _positive("DenseSampleFrames", clip_len=self.clip_len, frame_interval=self.frame_interval,
                  num_clips=self.num_clips, sample_range=self.sample_range,
                  num_sample_positions=self.num_sample_positions)
        if self.out_of_bound_opt not in sampling.OUT_OF_BOUND:
            raise ValueError(f"DenseSampleFrames.out_of_bound_opt: expected one of "
                             f"{', '.join(sampling.OUT_OF_BOUND)}, got {self.out_of_bound_opt!r}")

    def apply(self, state: PlanState, rng) -> None:
        state.frame_indices = sampling.dense_sample_frames(
            state.num_frames, self.num_clips, rng, clip_len=self.clip_len, frame_interval=self.frame_interval,
            sample_range=self.sample_range, num_sample_positions=self.num_sample_positions,
            test_mode=self.test_mode, start_index=self.start_index, out_of_bound_opt=self.out_of_bound_opt,
            temporal_jitter=self.temporal_jitter)


@dataclass(frozen=True)
class Resize(Op):
    """MMAction2 Resize (geometry.resize): before a crop op, the whole frame; after one, the
    crops. ``scale=(-1, 256)`` with ``keep_ratio=True`` makes the short side 256 (MMAction2's
    ``(-1, S)``: the other side scaled to keep the aspect ratio, rounded as mmcv rounds);
    ``scale=(224, 224), keep_ratio=False`` resizes to exactly 224x224. Bilinear."""

    kind: ClassVar[str] = "resize"
    scale: object
    keep_ratio: bool = True
    interpolation: str = "bilinear"
    lazy: bool = False

    def __post_init__(self):
        object.__setattr__(self, "scale", _tuple(self.scale))
        if self.interpolation != "bilinear":
            raise ValueError(f"Resize.interpolation: expected 'bilinear', got {self.interpolation!r}")
        geometry.resize((340, 256), self.scale, self.keep_ratio)  # a bad scale raises here

    def apply(self, state: PlanState, rng) -> None:
        if state.crops is None:
            state.size = state.resize_to = geometry.resize(state.size, self.scale, self.keep_ratio)
            return
        sizes = {(b[2] - b[0], b[3] - b[1]) for b in state.crops}
        outs = {geometry.resize(s, self.scale, self.keep_ratio) for s in sizes}
        if len(outs) != 1:
            raise ValueError("Resize after crops of different sizes needs keep_ratio: false")
        state.out_size = outs.pop()


@dataclass(frozen=True)
class MultiScaleCrop(Op):
    """MMAction2 MultiScaleCrop (geometry.multi_scale_crop): a crop whose sides are the short
    side times one of ``scales`` each (at most ``max_wh_scale_gap`` scales apart), at one of
    ``num_fixed_crops`` fixed offsets (5: centre and corners) unless ``random_crop``; then
    resized to ``input_size`` by the Resize after it (TSN's train view)."""

    kind: ClassVar[str] = "crop"
    input_size: object
    scales: tuple = (1,)
    max_wh_scale_gap: int = 1
    random_crop: bool = False
    num_fixed_crops: int = 5
    lazy: bool = False

    def __post_init__(self):
        object.__setattr__(self, "input_size", _tuple(self.input_size))
        object.__setattr__(self, "scales", tuple(self.scales))
        geometry.pair(self.input_size)
        if self.num_fixed_crops not in (5, 13):
            raise ValueError(f"MultiScaleCrop.num_fixed_crops: expected 5 or 13, got {self.num_fixed_crops}")
        if not self.scales or any(not 0 < s <= 1 for s in self.scales):
            raise ValueError(f"MultiScaleCrop.scales: expected values in (0, 1], got {list(self.scales)}")

    def apply(self, state: PlanState, rng) -> None:
        state.crops = [geometry.multi_scale_crop(state.size, rng, self.input_size, self.scales,
                                                 self.max_wh_scale_gap, self.random_crop, self.num_fixed_crops)]
        state.crop_flips = [False]


@dataclass(frozen=True)
class RandomResizedCrop(Op):
    """MMAction2 RandomResizedCrop (geometry.random_resized_crop): a crop of a random share of
    the frame's area (``area_range``) and aspect ratio (``aspect_ratio_range``), placed at
    random; resized by the Resize after it."""

    kind: ClassVar[str] = "crop"
    area_range: tuple = (0.08, 1.0)
    aspect_ratio_range: tuple = (3 / 4, 4 / 3)
    lazy: bool = False

    def __post_init__(self):
        object.__setattr__(self, "area_range", tuple(self.area_range))
        object.__setattr__(self, "aspect_ratio_range", tuple(self.aspect_ratio_range))
        lo, hi = self.area_range
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"RandomResizedCrop.area_range: expected 0 < min <= max <= 1, got {list(self.area_range)}")
        if not 0 < self.aspect_ratio_range[0] <= self.aspect_ratio_range[1]:
            raise ValueError("RandomResizedCrop.aspect_ratio_range: expected 0 < min <= max, "
                             f"got {list(self.aspect_ratio_range)}")

    def apply(self, state: PlanState, rng) -> None:
        state.crops = [geometry.random_resized_crop(state.size, rng, self.area_range, self.aspect_ratio_range)]
        state.crop_flips = [False]


@dataclass(frozen=True)
class _FixedCrop(Op):
    """A crop of ``crop_size`` (an int or ``[w, h]``), checked when built."""

    kind: ClassVar[str] = "crop"
    crop_size: object

    def __post_init__(self):
        object.__setattr__(self, "crop_size", _tuple(self.crop_size))
        geometry.pair(self.crop_size)


@dataclass(frozen=True)
class CenterCrop(_FixedCrop):
    """MMAction2 CenterCrop (geometry.center_crop): one ``crop_size`` box at the frame's centre."""

    lazy: bool = False

    def apply(self, state: PlanState, rng) -> None:
        state.crops, state.crop_flips = [geometry.center_crop(state.size, self.crop_size)], [False]


@dataclass(frozen=True)
class ThreeCrop(_FixedCrop):
    """MMAction2 ThreeCrop (geometry.three_crop): three ``crop_size`` boxes along the frame's
    long side (start, end, middle); ``crop_size`` must equal the short side the frames are
    resized to before it (TSN test: ``Resize(scale=(-1, 256))``, ``ThreeCrop(crop_size=256)``)."""

    def apply(self, state: PlanState, rng) -> None:
        state.crops = geometry.three_crop(state.size, self.crop_size)
        state.crop_flips = [False] * 3


@dataclass(frozen=True)
class TenCrop(_FixedCrop):
    """MMAction2 TenCrop (geometry.ten_crop): five ``crop_size`` boxes (the four corners and
    the centre), then the same five mirrored: ten views per frame (TSN's K400 test)."""

    def apply(self, state: PlanState, rng) -> None:
        state.crops, state.crop_flips = geometry.ten_crop(state.size, self.crop_size)


@dataclass(frozen=True)
class Flip(Op):
    """MMAction2 Flip (geometry.flip, flip_label): with probability ``flip_ratio`` mirrors
    every crop (the whole frame if there is no crop yet), and where it does, maps the label
    through ``flip_label_map`` (e.g. "swiping left" <-> "swiping right" in SSv2). Comes
    after the crop op."""

    kind: ClassVar[str] = "flip"
    flip_ratio: float = 0.5
    direction: str = "horizontal"
    flip_label_map: Optional[dict] = None
    lazy: bool = False

    def __post_init__(self):
        if self.direction != "horizontal":
            raise ValueError(f"Flip.direction: expected 'horizontal', got {self.direction!r}")
        if not 0 <= float(self.flip_ratio) <= 1:
            raise ValueError(f"Flip.flip_ratio: expected 0 <= flip_ratio <= 1, got {self.flip_ratio}")

    def apply(self, state: PlanState, rng) -> None:
        state.flipped = geometry.flip(rng, float(self.flip_ratio))
        state.label = geometry.flip_label(state.label, state.flipped, self.flip_label_map)
        if state.crops is None:
            state.crops, state.crop_flips = [(0, 0, state.size[0], state.size[1])], [False]
        state.crop_flips = [f != state.flipped for f in state.crop_flips]


OPS: Dict[str, type] = {cls.__name__: cls for cls in (SampleFrames, DenseSampleFrames, Resize, MultiScaleCrop,
                                                      RandomResizedCrop, CenterCrop, ThreeCrop, TenCrop, Flip)}


def check_pipeline(ops: List[Op]) -> None:
    """Rules of a whole pipeline (ValueError): exactly one sampling op, at most one crop op,
    and no Flip before the crop op (a crop op sets unflipped boxes, so the pixels would
    not be mirrored while the label already is)."""
    sampling_ops = [i for i, op in enumerate(ops) if op.kind == "sampling"]
    if len(sampling_ops) != 1:
        raise ValueError(f"expected a sampling op (SampleFrames or DenseSampleFrames), one per pipeline; "
                         f"got {len(sampling_ops)}")
    crops = [i for i, op in enumerate(ops) if op.kind == "crop"]
    if len(crops) > 1:
        raise ValueError(f"{type(ops[crops[1]]).__name__}: only one crop op per pipeline")
    flips = [i for i, op in enumerate(ops) if isinstance(op, Flip)]
    if crops and flips and flips[0] < crops[0]:
        raise ValueError(f"Flip: must come after {type(ops[crops[0]]).__name__}, which would undo its mirroring")


__all__ = ["OPS", "CenterCrop", "DenseSampleFrames", "Flip", "MultiScaleCrop", "Op", "PlanState",
           "RandomResizedCrop", "Resize", "SampleFrames", "TenCrop", "ThreeCrop", "check_pipeline"]
