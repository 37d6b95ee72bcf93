"""Pipelines (pipelines/*.yaml) and the ClipPlanner that turns them into ClipPlans.

A pipeline file is a YAML list of one-key mappings ``- Op: {param: value, ...}``, named
and parameterised as MMAction2's config transforms. ``$num_segments``,
``$input_size``, ``$short_side``, ``$flip_label_map`` and ``$start_index`` are taken
from the recipe's ``DataConfig``. Sampling ops also get ``start_index`` from it
(MMAction2 puts the dataset's start_index into ``results``).

The planner is the only place with randomness: ``plan(sample, ..., epoch)`` draws from
``numpy.random.default_rng([seed, epoch, sample])``, op by op in pipeline order, so a
plan depends on (seed, epoch, sample) only, in any process.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import yaml

from ..config import PIPELINES_DIR, DataConfig, RecipeError, YamlLoader
from . import geometry, sampling
from .plan import ClipPlan

REQUIRED = object()

# op name -> {parameter: default} (REQUIRED: must be given). MMAction2's names; its
# ``lazy`` flag is accepted and ignored (plans are always "lazy").
OPS: Dict[str, Dict[str, object]] = {
    "SampleFrames": {
        "clip_len": REQUIRED, "frame_interval": 1, "num_clips": 1, "temporal_jitter": False,
        "twice_sample": False, "out_of_bound_opt": "loop", "test_mode": False,
        "keep_tail_frames": False, "start_index": 0,
    },
    "DenseSampleFrames": {
        "clip_len": REQUIRED, "frame_interval": 1, "num_clips": 1, "sample_range": 64,
        "num_sample_positions": 10, "temporal_jitter": False, "out_of_bound_opt": "loop",
        "test_mode": False, "start_index": 0,
    },
    "Resize": {"scale": REQUIRED, "keep_ratio": True, "interpolation": "bilinear", "lazy": False},
    "MultiScaleCrop": {
        "input_size": REQUIRED, "scales": (1,), "max_wh_scale_gap": 1, "random_crop": False,
        "num_fixed_crops": 5, "lazy": False,
    },
    "RandomResizedCrop": {"area_range": (0.08, 1.0), "aspect_ratio_range": (3 / 4, 4 / 3),
                          "lazy": False},
    "CenterCrop": {"crop_size": REQUIRED, "lazy": False},
    "ThreeCrop": {"crop_size": REQUIRED},
    "TenCrop": {"crop_size": REQUIRED},
    "Flip": {"flip_ratio": 0.5, "direction": "horizontal", "flip_label_map": None, "lazy": False},
}

SAMPLING_OPS = ("SampleFrames", "DenseSampleFrames")
CROP_OPS = ("MultiScaleCrop", "RandomResizedCrop", "CenterCrop", "ThreeCrop", "TenCrop")


def pipeline_variables(data_cfg: DataConfig) -> Dict[str, object]:
    return {
        "num_segments": data_cfg.num_segments,
        "input_size": data_cfg.input_size,
        "short_side": data_cfg.short_side,
        "flip_label_map": dict(data_cfg.flip_label_map or {}),
        "start_index": data_cfg.start_index,
    }


def _closest(name: str, names) -> str:
    close = difflib.get_close_matches(str(name), list(names), n=1, cutoff=0.4)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _substitute(value, variables, file, key, line):
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in variables:
            raise RecipeError(file, key, f"unknown variable {value}{_closest(name, variables)}; "
                              f"known: {', '.join('$' + v for v in variables)}", line)
        return variables[name]
    if isinstance(value, list):
        return [_substitute(v, variables, file, key, line) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, variables, file, key, line) for k, v in value.items()}
    return value


def _resolve_path(name_or_path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = PIPELINES_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))
    raise RecipeError(str(name_or_path), "", f"no pipeline file or name in {PIPELINES_DIR}"
                      f"{_closest(str(name_or_path), known)}")


def load_pipeline(name_or_path, data_cfg: DataConfig) -> List[Tuple[str, dict]]:
    """Read, substitute and validate a pipeline -> ``[(op, params), ...]``.

    Unknown ops and parameters, missing required parameters and values an op rejects
    raise ``RecipeError`` naming the pipeline file, the line and the closest valid name.
    """
    path = _resolve_path(name_or_path)
    file = str(path)
    text = path.read_text()
    try:
        root = yaml.compose(text, Loader=YamlLoader)  # YAML 1.2 booleans: 'off' is a string
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise RecipeError(file, "", f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          mark.line + 1 if mark else None) from None
    if not isinstance(root, yaml.SequenceNode) or not root.value:
        raise RecipeError(file, "", "expected a list of ops, e.g. '- SampleFrames: {...}'", 1)
    variables = pipeline_variables(data_cfg)
    ops, lines = [], []
    for item in root.value:
        line = item.start_mark.line + 1
        if not isinstance(item, yaml.MappingNode) or len(item.value) != 1:
            raise RecipeError(file, "", "expected one 'Op: {params}' mapping per list entry", line)
        key_node, params_node = item.value[0]
        op = key_node.value
        if op not in OPS:
            raise RecipeError(file, op, f"unknown op{_closest(op, OPS)}; valid ops: "
                              f"{', '.join(OPS)}", line)
        params = yaml.load(yaml.serialize(params_node), Loader=YamlLoader) if params_node is not None else None
        params = params or {}
        if not isinstance(params, dict):
            raise RecipeError(file, op, "expected a mapping of parameters", line)
        param_lines = {}
        if isinstance(params_node, yaml.MappingNode):
            param_lines = {k.value: k.start_mark.line + 1 for k, _ in params_node.value}
        spec = OPS[op]
        for name in params:
            if name not in spec:
                raise RecipeError(file, f"{op}.{name}", f"unknown parameter{_closest(name, spec)}; "
                                  f"valid: {', '.join(spec)}", param_lines.get(name, line))
        params = {k: _substitute(v, variables, file, f"{op}.{k}", param_lines.get(k, line))
                  for k, v in params.items()}
        for name, value in params.items():
            if isinstance(spec[name], bool) and not isinstance(value, bool):
                raise RecipeError(file, f"{op}.{name}", f"expected true or false, got {value!r}",
                                  param_lines.get(name, line))
        if op in SAMPLING_OPS:
            params.setdefault("start_index", data_cfg.start_index)
        missing = [k for k, v in spec.items() if v is REQUIRED and k not in params]
        if missing:
            raise RecipeError(file, op, f"missing parameter {missing[0]}", line)
        full = {k: v for k, v in spec.items() if v is not REQUIRED}
        full.update(params)
        ops.append((op, full))
        lines.append(line)
    if not any(op in SAMPLING_OPS for op, _ in ops):
        raise RecipeError(file, "", f"expected a sampling op ({' or '.join(SAMPLING_OPS)})")
    # Dry run on a typical frame so bad values are reported against the file and line.
    for i in range(len(ops)):
        try:
            ClipPlanner(ops[: i + 1], seed=0)._run(0, "<check>", 0, 300, (340, 256),
                                                  np.random.default_rng(0))
        except (ValueError, TypeError, KeyError) as exc:
            raise RecipeError(file, ops[i][0], str(exc), lines[i]) from None
    return ops


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value


class ClipPlanner:
    """Carries out a pipeline's sampling and geometry ops on sizes and indices only."""

    def __init__(self, ops: List[Tuple[str, dict]], seed: int = 0):
        for op, _ in ops:
            if op not in OPS:
                raise ValueError(f"unknown op {op!r}{_closest(op, OPS)}")
        self.ops = [(op, dict(params)) for op, params in ops]
        self.seed = int(seed)

    def rng(self, sample: int, epoch: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), int(sample)])

    def plan(self, sample: int, path: str, label: int, info, epoch: int = 0) -> ClipPlan:
        """The plan for one sample: frames, resize, crops, flips from (seed, epoch, sample)."""
        if not getattr(info, "ok", True) or info.num_frames <= 0:
            raise ValueError(f"{path}: cannot plan a video with no usable frames "
                             f"({getattr(info, 'error', None) or 'num_frames 0'})")
        return self._run(sample, path, label, int(info.num_frames),
                         (int(info.width), int(info.height)), self.rng(sample, epoch))

    def _run(self, sample, path, label, num_frames, orig_size, rng) -> ClipPlan:
        size = orig_size
        resize_to = None
        crops: Optional[list] = None
        crop_flips: list = []
        out_size = None
        frame_indices = None
        flipped = False
        for op, p in self.ops:
            if op == "SampleFrames":
                frame_indices = sampling.sample_frames(
                    num_frames, int(p["num_clips"]), rng, clip_len=int(p["clip_len"]),
                    frame_interval=int(p["frame_interval"]), test_mode=bool(p["test_mode"]),
                    start_index=int(p["start_index"]), out_of_bound_opt=p["out_of_bound_opt"],
                    twice_sample=bool(p["twice_sample"]),
                    keep_tail_frames=bool(p["keep_tail_frames"]),
                    temporal_jitter=bool(p["temporal_jitter"]))
            elif op == "DenseSampleFrames":
                frame_indices = sampling.dense_sample_frames(
                    num_frames, int(p["num_clips"]), rng, clip_len=int(p["clip_len"]),
                    frame_interval=int(p["frame_interval"]), sample_range=int(p["sample_range"]),
                    num_sample_positions=int(p["num_sample_positions"]),
                    test_mode=bool(p["test_mode"]), start_index=int(p["start_index"]),
                    out_of_bound_opt=p["out_of_bound_opt"],
                    temporal_jitter=bool(p["temporal_jitter"]))
            elif op == "Resize":
                scale = _tuple(p["scale"])
                if crops is None:
                    size = geometry.resize(size, scale, bool(p["keep_ratio"]))
                    resize_to = size
                else:
                    sizes = {(b[2] - b[0], b[3] - b[1]) for b in crops}
                    outs = {geometry.resize(s, scale, bool(p["keep_ratio"])) for s in sizes}
                    if len(outs) != 1:
                        raise ValueError("Resize after crops of different sizes needs keep_ratio: false")
                    out_size = outs.pop()
            elif op in CROP_OPS:
                if crops is not None:
                    raise ValueError(f"{op}: only one crop op per pipeline")
                if op == "MultiScaleCrop":
                    crops = [geometry.multi_scale_crop(
                        size, rng, p["input_size"], tuple(p["scales"]),
                        int(p["max_wh_scale_gap"]), bool(p["random_crop"]),
                        int(p["num_fixed_crops"]))]
                    crop_flips = [False]
                elif op == "RandomResizedCrop":
                    crops = [geometry.random_resized_crop(size, rng, tuple(p["area_range"]),
                                                          tuple(p["aspect_ratio_range"]))]
                    crop_flips = [False]
                elif op == "CenterCrop":
                    crops, crop_flips = [geometry.center_crop(size, p["crop_size"])], [False]
                elif op == "ThreeCrop":
                    crops = geometry.three_crop(size, p["crop_size"])
                    crop_flips = [False] * 3
                else:
                    crops, crop_flips = geometry.ten_crop(size, p["crop_size"])
            elif op == "Flip":
                if p["direction"] != "horizontal":
                    raise ValueError(f"Flip: direction: expected 'horizontal', got {p['direction']!r}")
                flipped = geometry.flip(rng, float(p["flip_ratio"]))
                label = geometry.flip_label(label, flipped, p["flip_label_map"])
                if crops is None:
                    crops, crop_flips = [(0, 0, size[0], size[1])], [False]
                crop_flips = [f != flipped for f in crop_flips]
        if frame_indices is None:
            raise ValueError("expected a sampling op (SampleFrames or DenseSampleFrames)")
        if crops is None:
            crops, crop_flips = [(0, 0, size[0], size[1])], [False]
        if out_size is None:
            x1, y1, x2, y2 = crops[0]
            out_size = (x2 - x1, y2 - y1)
        return ClipPlan(
            sample=int(sample), path=str(path), label=int(label), num_frames=int(num_frames),
            orig_size=tuple(orig_size), frame_indices=np.asarray(frame_indices, np.int32),
            resize_to=tuple(resize_to or orig_size), crops=np.asarray(crops, np.int32).reshape(-1, 4),
            crop_flips=np.asarray(crop_flips, bool), out_size=tuple(int(v) for v in out_size),
            flip=bool(flipped))
