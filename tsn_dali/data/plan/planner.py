"""Pipelines (pipelines/*.yaml) and the ClipPlanner that turns them into ClipPlans.

A pipeline file is a YAML list of one-key mappings ``- Op: {param: value, ...}``, named
and parameterised as MMAction2's config transforms; each becomes an op of
tsn_dali.data.plan.ops (its parameters are the op's fields). ``$num_segments``,
``$input_size``, ``$short_side``, ``$flip_label_map`` and ``$start_index`` are taken
from the recipe's ``DataConfig``. Sampling ops also get ``start_index`` from it
(MMAction2 puts the dataset's start_index into ``results``).

The planner is the only place with randomness: ``plan(sample, ..., epoch)`` draws from
``numpy.random.default_rng([seed, epoch, sample])``, op by op in pipeline order, so a
plan depends on (seed, epoch, sample) only, in any process.
"""
from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Dict, List

import numpy as np
import yaml

from tsn_dali.config import PIPELINES_DIR, DataConfig, RecipeError, YamlLoader, compose_bounded, read_text_file
from tsn_dali.data.errors import PipelineError
from tsn_dali.data.plan.ops import OPS, Op, PlanState, check_pipeline
from tsn_dali.data.plan.clip_plan import ClipPlan, StreamFacts

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
            raise PipelineError(file, key, f"unknown variable {value}{_closest(name, variables)}; "
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
    raise PipelineError(str(name_or_path), "", f"no pipeline file or name in {PIPELINES_DIR}"
                        f"{_closest(str(name_or_path), known)}")


def _read_nodes(path: Path):
    """The pipeline's YAML node list (PipelineError with the line where it is not one)."""
    try:  # bounded: size, UTF-8, aliases (config.compose_bounded); YAML 1.2 booleans
        root = compose_bounded(read_text_file(path, "pipeline"), path, YamlLoader, "pipeline")
    except RecipeError as err:
        raise PipelineError(str(path), "", err.message, err.line) from None
    if not isinstance(root, yaml.SequenceNode) or not root.value:
        raise PipelineError(str(path), "", "expected a list of ops, e.g. '- SampleFrames: {...}'", 1)
    return root.value


def _build_op(file: str, item, variables, data_cfg: DataConfig) -> Op:
    """One ``- Op: {params}`` entry -> an op instance (PipelineError naming file, line, key)."""
    line = item.start_mark.line + 1
    if not isinstance(item, yaml.MappingNode) or len(item.value) != 1:
        raise PipelineError(file, "", "expected one 'Op: {params}' mapping per list entry", line)
    key_node, params_node = item.value[0]
    name = key_node.value
    if name not in OPS:
        raise PipelineError(file, name, f"unknown op{_closest(name, OPS)}; valid ops: {', '.join(OPS)}", line)
    params = yaml.load(yaml.serialize(params_node), Loader=YamlLoader) if params_node is not None else None
    params = params or {}
    if not isinstance(params, dict):
        raise PipelineError(file, name, "expected a mapping of parameters", line)
    lines = {k.value: k.start_mark.line + 1 for k, _ in params_node.value} \
        if isinstance(params_node, yaml.MappingNode) else {}
    spec = OPS[name].parameters()
    for param in params:
        if param not in spec:
            raise PipelineError(file, f"{name}.{param}", f"unknown parameter{_closest(param, spec)}; "
                                f"valid: {', '.join(spec)}", lines.get(param, line))
    params = {k: _substitute(v, variables, file, f"{name}.{k}", lines.get(k, line)) for k, v in params.items()}
    for param, value in params.items():
        if isinstance(spec[param], bool) and not isinstance(value, bool):
            raise PipelineError(file, f"{name}.{param}", f"expected true or false, got {value!r}",
                                lines.get(param, line))
    if OPS[name].kind == "sampling":
        params.setdefault("start_index", data_cfg.start_index)
    missing = [k for k, v in spec.items() if v is dataclasses.MISSING and k not in params]
    if missing:
        raise PipelineError(file, name, f"missing parameter {missing[0]}", line)
    try:
        return OPS[name](**params)
    except (ValueError, TypeError) as exc:
        raise PipelineError(file, name, str(exc), line) from None


def pipeline_uses(name_or_path) -> Dict[str, List[str]]:
    """The ``$variables`` a pipeline takes -> the ``Op.param`` entries that take each."""
    path = _resolve_path(name_or_path)
    uses: Dict[str, List[str]] = {}

    def walk(node, where):
        if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str) and node.value.startswith("$"):
            uses.setdefault(node.value[1:], []).append(where)
        elif isinstance(node, yaml.SequenceNode):
            for child in node.value:
                walk(child, where)
        elif isinstance(node, yaml.MappingNode):
            for key, child in node.value:
                walk(child, f"{where}.{key.value}" if where else key.value)

    for item in _read_nodes(path):
        walk(item, "")
    return uses


def load_pipeline(name_or_path, data_cfg: DataConfig) -> List[Op]:
    """Read, substitute and validate a pipeline -> its ops (tsn_dali.data.plan.ops).

    Unknown ops and parameters, missing required parameters and values an op rejects
    raise ``PipelineError`` naming the pipeline file, the line and the closest valid name.
    """
    path = _resolve_path(name_or_path)
    variables = pipeline_variables(data_cfg)
    nodes = _read_nodes(path)
    ops = [_build_op(str(path), item, variables, data_cfg) for item in nodes]
    try:
        check_pipeline(ops)
    except ValueError as exc:
        raise PipelineError(str(path), "", str(exc)) from None
    return ops


class ClipPlanner:
    """Carries out a pipeline's ops (tsn_dali.data.plan.ops) on sizes and indices only."""

    def __init__(self, ops: List[Op], seed: int = 0):
        for op in ops:
            if not isinstance(op, Op):
                raise TypeError(f"ClipPlanner: expected pipeline ops (tsn_dali.data.plan.ops), got {op!r}")
        check_pipeline(list(ops))
        self.ops = list(ops)
        self.seed = int(seed)

    def rng(self, sample: int, epoch: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), int(sample)])

    def plan(self, sample: int, path: str, label: int, info, epoch: int = 0) -> ClipPlan:
        """The plan for one sample: frames, resize, crops, flips from (seed, epoch, sample)."""
        if not getattr(info, "ok", True) or info.num_frames <= 0:
            raise ValueError(f"{path}: cannot plan a video with no usable frames "
                             f"({getattr(info, 'error', None) or 'num_frames 0'})")
        size = tuple(int(v) for v in info.display_size) if hasattr(info, "display_size") \
            else (int(info.width), int(info.height))  # upright: what every executor gives
        state = PlanState(num_frames=int(info.num_frames), size=size, label=int(label))
        rng = self.rng(sample, epoch)
        for op in self.ops:
            op.apply(state, rng)
        crops = state.crops or [(0, 0, state.size[0], state.size[1])]
        flips = state.crop_flips if state.crops else [False]
        x1, y1, x2, y2 = crops[0]
        out_size = state.out_size or (x2 - x1, y2 - y1)
        return ClipPlan(
            sample=int(sample), path=str(path), label=int(state.label), num_frames=int(info.num_frames),
            orig_size=size, frame_indices=np.asarray(state.frame_indices, np.int32),
            resize_to=tuple(state.resize_to or size), crops=np.asarray(crops, np.int32).reshape(-1, 4),
            crop_flips=np.asarray(flips, bool), out_size=tuple(int(v) for v in out_size),
            flip=bool(state.flipped), stream=StreamFacts.from_info(info))


__all__ = ["ClipPlanner", "PipelineError", "load_pipeline", "pipeline_variables"]
