"""Recipes: YAML files validated into typed dataclasses.

A recipe is one row of MMAction2's TSN result tables (MMAction2's TSN README). Loading is
strict: an unknown key, a wrong type or a missing referenced file raises
``RecipeError`` naming the recipe file, the line and the dotted key, with the
closest valid key when one is near. Shared values live in ``recipes/_base/*.yaml``
and are pulled in with ``base: <path>`` (later files override earlier ones, mapping
by mapping). ``--set key.sub=value`` overrides any field after loading.

Code reads fields by name (``recipe.train.lr``); there is no registry.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import math
import re
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from tsn_dali.errors import UsageError, UserError

PACKAGE_ROOT = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_ROOT.parent
PIPELINES_DIR = PROJECT_ROOT / "pipelines"
RECIPES_DIR = PROJECT_ROOT / "recipes"


class OverrideSyntaxError(UsageError):
    """A ``--set`` that is not ``key=value``: a bad command line (status 2)."""


class RecipeError(UserError, ValueError):
    """A recipe (or pipeline, or override) that does not validate.

    ``str(err)`` is one line: ``<file>:<line>: <key>: <what was expected>``.
    """

    def __init__(self, file: str, key: str, message: str, line: Optional[int] = None):
        self.file, self.key, self.line, self.message = str(file), key, line, message
        where = f"{file}:{line}" if line else str(file)
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


# --------------------------------------------------------------------------- schema


@dataclass
class ModelConfig:
    """The TSN model: per-frame backbone, dropout, linear classifier, average consensus."""

    backbone: str = "resnet50"
    num_classes: int = 400
    dropout: float = 0.4
    init_std: float = 0.01
    pretrained: Optional[str] = None  # local file: torchvision/timm ImageNet state dict
    deploy: bool = False  # MobileOne: build the reparameterised (inference) form
    # MMAction2 TSN averages features over all views (consensus before fc), then its
    # average_clips='prob' takes a softmax; 'prob' averages per-view softmax instead.
    test_average: str = "feature"


@dataclass
class DataConfig:
    """Where the videos are (MMAction2's layout under ``root``) and how they are read."""

    root: str = "data"
    format: str = "video"  # video | rawframes
    train_list: str = ""
    train_prefix: str = ""
    val_list: str = ""
    val_prefix: str = ""
    test_list: str = ""
    test_prefix: str = ""
    label_map: Optional[str] = None
    filename_tmpl: str = "img_{:05}.jpg"  # rawframes only
    start_index: int = 0  # MMAction2: 0 for videos, 1 for rawframes
    num_segments: int = 8
    input_size: int = 224
    short_side: int = 256
    mean: List[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    std: List[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])
    flip_label_map: Dict[int, int] = field(default_factory=dict)
    train_pipeline: str = "tsn_train"
    val_pipeline: str = "tsn_val"
    test_pipeline: str = "tsn_test_tencrop"
    on_bad_video: str = "skip"  # train time: skip (replace and count) | error
    # a path listed twice (repeated, or with two labels): reported for train and val, refused
    # for test (each video is scored once); true keeps such lines as listed everywhere
    allow_duplicates: bool = False
    index_cache: Optional[str] = None  # default: <root>/.tsn_dali_index/
    index_workers: Optional[int] = None  # probe threads per rank; default: cores per local rank


@dataclass
class LoaderConfig:
    """How clips are produced: executor, batch sizes, DALI threads and queue depth."""

    executor: str = "auto"  # auto | dali-gpu | dali-cpu | reference
    batch_size: int = 32  # per GPU, train and val
    test_batch_size: int = 1  # videos per GPU at test time (each 250 views for K400)
    num_threads: int = 4  # DALI CPU threads per pipeline
    prefetch: int = 2  # batches rendered (and prepared) ahead of the one in use
    decode_workers: int = 4  # host threads reading/slicing clips and decoding outside DALI
    decode_sessions: int = 16  # dali-gpu: concurrent NVDEC decodes
    slice_gops: bool = True  # feed DALI's decoder only the GOP pieces a clip needs
    handoff: str = "view"  # view: DALI's buffer, kept until used | copy: a torch-owned copy
    eval_videos_per_run: int = 8  # val/test: videos rendered per executor run
    reference_workers: int = 8  # torch DataLoader workers of the reference executor
    # auto: what the model's autocast computes in (train.amp on the device: bfloat16, float16,
    # float32 where AMP is off; tsn_dali.engine.amp.loader_dtype) | float16 | bfloat16 |
    # float32 | uint8 (raw pixels)
    dtype: str = "auto"
    # seconds without a batch from the render thread before the run stops (0 or null: off)
    stall_timeout: Optional[float] = 600.0
    # native: DALI decodes what it can (VP9/VP8/MJPEG on CPU; NVDEC codecs on GPU); mmaction:
    # every video decoded with decord as MMAction2's DecordDecode and fed to DALI as frames
    decode: str = "native"


@dataclass
class TrainConfig:
    """Optimisation as MMAction2's sgd_100e / sgd_50e schedules and runtime."""

    gpus: int = 8  # the GPUs the reported row used
    epochs: int = 100
    lr: float = 0.01  # for base_batch_size
    base_batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: Optional[float] = 40.0
    milestones: List[int] = field(default_factory=lambda: [40, 80])
    gamma: float = 0.1
    val_interval: int = 1
    checkpoint_interval: int = 1
    amp: str = "auto"  # auto (per device: tsn_dali.engine.amp) | bf16 | fp16 | off
    channels_last: bool = True
    compile: bool = False
    nan_policy: str = "stop"  # stop | skip
    log_interval: int = 20


@dataclass
class TestConfig:
    """Test protocol: the pipeline gives the views; this says what is reported."""

    topk: List[int] = field(default_factory=lambda: [1, 5])
    on_bad_video: str = "error"  # error | skip (skipped videos are listed in results)


@dataclass
class ReportedConfig:
    """What MMAction2's table row reports (its reported figures), kept beside the recipe to compare against."""

    table: str = ""
    config: str = ""
    top1: Optional[float] = None
    top5: Optional[float] = None
    gflops: Optional[float] = None
    params_m: Optional[float] = None
    testing_protocol: str = ""
    gpus: Optional[int] = None
    batch_per_gpu: Optional[int] = None
    train_command: str = ""
    test_command: str = ""
    note: str = ""


@dataclass
class Recipe:
    name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)
    reported: ReportedConfig = field(default_factory=ReportedConfig)
    source: str = ""  # the file it was loaded from (set by the loader)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The names tsn_dali.models.BACKBONES builds (checked here so that a typo is reported
# against the recipe's file and line; tests keep the two lists equal).
# Batch dtypes (tsn_dali.data.render.executors.base.TORCH_DTYPES maps them to torch's).
DTYPES = ("float16", "bfloat16", "float32", "uint8")

# The executors (tsn_dali.data.render.executors builds them; "auto" picks one per machine).
EXECUTORS = ("auto", "dali-gpu", "dali-cpu", "reference")

BACKBONE_NAMES = ("resnet50", "resnet101", "resnext101_32x4d", "densenet161",
                  "swin_base_patch4_window7_224", "mobileone_s4", "resnet18", "mobileone_s0")

CHOICES = {
    "model.backbone": BACKBONE_NAMES,
    "model.test_average": ("feature", "prob"),
    "data.format": ("video", "rawframes"),
    "data.on_bad_video": ("skip", "error"),
    "loader.executor": EXECUTORS,
    "loader.dtype": ("auto",) + DTYPES,
    "loader.handoff": ("view", "copy"),
    "loader.decode": ("native", "mmaction"),
    "train.amp": ("auto", "bf16", "fp16", "off"),
    "train.nan_policy": ("stop", "skip"),
    "test.on_bad_video": ("error", "skip"),
}

POSITIVE = {
    "model.num_classes", "data.num_segments", "data.input_size", "data.short_side",
    "loader.batch_size", "loader.test_batch_size", "loader.num_threads",
    "loader.decode_workers", "loader.decode_sessions", "loader.eval_videos_per_run", "train.gpus", "train.epochs", "train.base_batch_size",
    "train.val_interval", "train.checkpoint_interval", "train.log_interval",
}


# --------------------------------------------------------------------------- YAML with lines


class YamlLoader(yaml.SafeLoader):
    """SafeLoader whose booleans and numbers are YAML 1.2's (core schema).

    PyYAML follows YAML 1.1, where ``on``, ``off``, ``yes``, ``no``, ``y`` and ``n`` are
    booleans, a float needs a dot (``1e-3`` is the string "1e-3"), and ``1:30`` is the
    integer 90. Recipes, pipelines and ``--set`` values are read with this loader:
    ``off`` stays the string "off"; ``1e-3``, ``5e-4``, ``1E+2`` and ``.5`` are floats;
    ints are decimal (``1_000`` allowed), ``0x..`` or ``0o..``; anything else is a string.
    """


_YAML12 = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float", "tag:yaml.org,2002:int")
YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML12]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_EXP = r"[eE][-+]?[0-9]+"
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    rf"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:{_EXP})?|[-+]?\.[0-9][0-9_]*(?:{_EXP})?|[-+]?[0-9][0-9_]*{_EXP}"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(
    r"^(?:[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?0o[0-7_]+)$"), list("-+0123456789"))


def load_yaml(text: str):
    """Parse YAML text with ``YamlLoader`` (YAML 1.2 booleans)."""
    return yaml.load(text, Loader=YamlLoader)


class _LineLoader(YamlLoader):
    """YamlLoader that remembers the line of every mapping key (dotted path -> line)."""


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few KB; a bigger file is not one
MAX_YAML_NODES = 100_000  # values after every alias is expanded (a recipe or pipeline has a few hundred)


def expanded_size(node, budget: int = MAX_YAML_NODES) -> int:
    """How many nodes ``node`` holds once every alias is expanded (an alias repeats its
    anchor's whole subtree), counted once per distinct node: linear in the file however
    far the aliases expand. Stops counting past ``budget``."""
    sizes: Dict[int, int] = {}

    def size(n) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        sizes[id(n)] = budget + 1  # a node inside itself (a recursive alias): over budget
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(child) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        sizes[id(n)] = total = min(total, budget + 1)
        return total

    return size(node)


def read_text_file(path: Path, what: str = "recipe", limit: int = MAX_RECIPE_BYTES) -> str:
    """A YAML file's text: one RecipeError for one too big (``limit`` bytes), not UTF-8, or
    binary."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise RecipeError(path, "", f"cannot read the {what}: {exc.strerror or exc}") from None
    if size > limit:
        raise RecipeError(path, "", f"the file is {size / 2 ** 20:.1f} MB; a {what} is at most "
                          f"{limit / 2 ** 20:g} MB of YAML")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise RecipeError(path, "", f"expected UTF-8 text, got byte 0x{raw[exc.start]:02x}", line) from None
    if "\x00" in text:
        raise RecipeError(path, "", "expected YAML text, got a NUL byte (a binary file?)",
                          text[:text.index("\x00")].count("\n") + 1)
    return text


def compose_bounded(text: str, path, loader=None, what: str = "recipe"):
    """``yaml.compose`` of ``text``, refused (RecipeError naming ``path``) where its aliases
    expand past MAX_YAML_NODES values: an alias bomb is caught before anything expands it.
    ``what`` (recipe, pipeline, --set value) names the kind of file in the message."""
    try:
        node = yaml.compose(text, Loader=loader or _LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(path, "", f"not valid YAML: {problem}", line) from None
    if node is not None and expanded_size(node) > MAX_YAML_NODES:
        raise RecipeError(path, "", f"its aliases expand to more than {MAX_YAML_NODES:,} values (an alias "
                          f"bomb?); a {what} needs a few hundred")
    return node


def _load_yaml_with_lines(path: Path) -> Tuple[Any, Dict[str, int]]:
    text = read_text_file(path)
    node = compose_bounded(text, path)
    lines: Dict[str, int] = {}

    def walk(n, prefix):
        if isinstance(n, yaml.MappingNode):
            seen: Dict[str, int] = {}
            for k, v in n.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                if key in seen:  # YAML keeps the last silently: a whole section would vanish
                    raise RecipeError(path, key, f"given twice (first at line {seen[key]}); keep one",
                                      k.start_mark.line + 1)
                seen[key] = lines[key] = k.start_mark.line + 1
                walk(v, key)

    if node is not None:
        walk(node, "")
    data = load_yaml(text)
    return data, lines


# --------------------------------------------------------------------------- conversion


_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 60
_SHOW.maxlist = _SHOW.maxdict = _SHOW.maxtuple = 6
_SHOW.maxlevel = 3


SHOW_CHARS = 200  # the most a message shows of one value


def show(value) -> str:
    """``repr(value)`` for a one-line message, bounded (nested and long values elided, then
    cut at SHOW_CHARS): an expanded alias is never formatted whole."""
    text = _SHOW.repr(value)
    return text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS - 3] + "..."


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    if origin in (list, List):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (dict, Dict):
        k, v = typing.get_args(tp)
        return f"mapping of {_type_name(k)} to {_type_name(v)}"
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, key: str, where):
    """Check ``value`` against annotation ``tp``; return the converted value."""
    file, lines = where
    line = lines.get(key)
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(file, key, f"expected a mapping, got {type(value).__name__}", line)
        return _build(tp, value, key, where)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise RecipeError(file, key, f"expected {_type_name(tp)}, got {show(value)}", line)
        (inner,) = typing.get_args(tp)
        return [_convert(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise RecipeError(file, key, f"expected {_type_name(tp)}, got {show(value)}", line)
        kt, vt = typing.get_args(tp)
        return {_convert(k, kt, f"{key}.{k}", where): _convert(v, vt, f"{key}.{k}", where)
                for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise RecipeError(file, key, f"expected {_type_name(tp)}, got {show(value)}", line)


def _build(cls, data: dict, prefix: str, where):
    file, lines = where
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.5)
            hint = f" (did you mean '{(prefix + '.') if prefix else ''}{close[0]}'?)" if close else ""
            valid = ", ".join(names)
            raise RecipeError(file, key, f"unknown key{hint}; valid keys here: {valid}",
                              lines.get(key))
        kwargs[k] = _convert(v, hints[k], key, where)
    return cls(**kwargs)


def _check_values(recipe: Recipe, where) -> None:
    file, lines = where
    for dotted, allowed in CHOICES.items():
        value = _get(recipe, dotted)
        if value not in allowed:
            raise RecipeError(file, dotted, f"expected one of {', '.join(allowed)}, got {show(value)}",
                              lines.get(dotted))
    for dotted in POSITIVE:
        value = _get(recipe, dotted)
        if value <= 0:
            raise RecipeError(file, dotted, f"expected a positive integer, got {show(value)}",
                              lines.get(dotted))
    if recipe.loader.prefetch < 0:
        raise RecipeError(file, "loader.prefetch", "expected 0 (render in the caller) or more, got "
                          f"{recipe.loader.prefetch}", lines.get("loader.prefetch"))
    for dotted in ("data.mean", "data.std"):
        if len(_get(recipe, dotted)) != 3:
            raise RecipeError(file, dotted, "expected 3 values (RGB)", lines.get(dotted))
    stall = recipe.loader.stall_timeout
    if stall is not None and not 0.0 <= stall < float("inf"):
        raise RecipeError(file, "loader.stall_timeout", f"expected seconds >= 0 (0 or null: off), "
                          f"got {stall!r}", lines.get("loader.stall_timeout"))
    if recipe.data.index_workers is not None and recipe.data.index_workers <= 0:
        raise RecipeError(file, "data.index_workers", "expected a positive integer or null",
                          lines.get("data.index_workers"))
    for dotted, rule, ok in _RANGES:
        value = _get(recipe, dotted)
        values = value if isinstance(value, list) else [value]
        if not all(v is None or (math.isfinite(v) and ok(v)) for v in values):
            raise RecipeError(file, dotted, f"expected {rule}, got {show(value)}", lines.get(dotted))
    mean, std = recipe.data.mean, recipe.data.std
    if max(mean) <= 1.0 and max(std) <= 1.0 and not (mean == [0.0, 0.0, 0.0] and std == [1.0, 1.0, 1.0]):
        raise RecipeError(file, "data.mean", f"{show(mean)} and std {show(std)} look scaled to 0-1, but the "
                          "pixels are 0-255: multiply them by 255 (ImageNet's: [123.675, 116.28, 103.53], "
                          "[58.395, 57.12, 57.375])", lines.get("data.mean"))
    if not 0.0 <= recipe.model.dropout < 1.0:
        raise RecipeError(file, "model.dropout", "expected 0 <= dropout < 1", lines.get("model.dropout"))
    ms = recipe.train.milestones
    if ms != sorted(ms):
        raise RecipeError(file, "train.milestones", f"expected increasing epochs, got {ms}",
                          lines.get("train.milestones"))
    if recipe.model.pretrained and not Path(recipe.model.pretrained).is_file():
        raise RecipeError(file, "model.pretrained",
                          f"file not found: {recipe.model.pretrained}", lines.get("model.pretrained"))
    for split in ("train", "val", "test"):
        key = f"data.{split}_pipeline"
        name = _get(recipe, key)
        if not (PIPELINES_DIR / f"{name}.yaml").is_file():
            known = sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml"))
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(file, key, f"no pipeline '{name}' in {PIPELINES_DIR}{hint}",
                              lines.get(key))


MAX_EPOCHS = 100_000

# Numbers that must be finite and in range (a list: each value). null passes (e.g. grad_clip).
_RANGES = (
    ("train.lr", "a finite learning rate > 0", lambda v: v > 0),
    ("train.momentum", "0 <= momentum < 1", lambda v: 0 <= v < 1),
    ("train.weight_decay", "a finite weight decay >= 0", lambda v: v >= 0),
    ("train.grad_clip", "a finite gradient-norm clip > 0, or null for none", lambda v: v > 0),
    ("train.gamma", "0 < gamma <= 1", lambda v: 0 < v <= 1),
    ("train.epochs", f"at most {MAX_EPOCHS:,} epochs", lambda v: v <= MAX_EPOCHS),
    ("model.init_std", "a finite std >= 0", lambda v: v >= 0),
    ("data.mean", "3 finite values", lambda v: True),
    ("data.std", "3 finite values > 0 (pixels are divided by them)", lambda v: v > 0),
)


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------- merging


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "flip_label_map":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_with_bases(path: Path, seen=()) -> Tuple[dict, Dict[str, int], Dict[str, str]]:
    """Read a recipe and its ``base:`` chain. Returns (merged dict, key->line, key->file)."""
    path = path.resolve()
    if path in seen:
        raise RecipeError(path, "base", "include cycle: " + " -> ".join(str(p) for p in seen))
    data, lines = _load_yaml_with_lines(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(path, "", "expected a mapping at the top level")
    files = {k: str(path) for k in lines}
    bases = data.pop("base", None)
    if bases is None:
        return data, lines, files
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(path, "base", "expected a file path or a list of file paths", lines.get("base"))
    merged, mlines, mfiles = {}, {}, {}
    for b in bases:
        bpath = (path.parent / b)
        if not bpath.is_file():
            raise RecipeError(path, "base", f"file not found: {bpath}", lines.get("base"))
        bdata, blines, bfiles = _read_with_bases(bpath, seen + (path,))
        merged = _deep_merge(merged, bdata)
        mlines.update(blines)
        mfiles.update(bfiles)
    merged = _deep_merge(merged, data)
    mlines.update(lines)
    mfiles.update(files)
    return merged, mlines, mfiles


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> Tuple[str, Any]:
    """``key.sub=value`` -> (``key.sub``, YAML-parsed value; ``off``/``on``/``yes``/``no`` stay
    strings, as in recipe files)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise OverrideSyntaxError(f"--set {show(text)}: expected key=value with a dotted key, e.g. --set train.lr=0.02")
    if len(raw) > MAX_RECIPE_BYTES:
        raise OverrideSyntaxError(f"--set {key}: the value is over {MAX_RECIPE_BYTES / 2 ** 20:g} MB")
    try:
        compose_bounded(raw, "--set", YamlLoader, "--set value")
        value = load_yaml(raw) if raw.strip() else ""
    except RecipeError as err:
        if "alias" in err.message:
            raise RecipeError("--set", key, err.message) from None
        value = raw
    return key, value


def _apply_override(data: dict, key: str, value) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = {}
            node[p] = nxt
        if not isinstance(nxt, dict):
            raise RecipeError("--set", key, f"'{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


# --------------------------------------------------------------------------- public


def load_recipe(path, overrides: Optional[List[str]] = None) -> Recipe:
    """Load, merge (``base:``), override (``--set``) and validate one recipe file."""
    path = Path(path)
    if not path.is_file():
        alt = RECIPES_DIR / path
        if alt.is_file():
            path = alt
        else:
            known = sorted(p.name for p in RECIPES_DIR.glob("*.yaml"))
            close = difflib.get_close_matches(path.name, known, n=1)
            hint = f" (did you mean recipes/{close[0]}?)" if close else ""
            raise RecipeError(path, "", f"recipe file not found{hint}")
    data, lines, files = _read_with_bases(path)
    set_keys = []
    for text in overrides or []:
        key, value = parse_override(text)
        _apply_override(data, key, value)
        set_keys.append(key)

    file_of = dict(files)
    for k in set_keys:
        file_of[k] = "--set"

    # Errors are raised against the recipe, then re-pointed at the file the key came
    # from (a base file, or --set).
    where = (str(path), lines)
    try:
        recipe = _build(Recipe, data, "", where)
        _check_values(recipe, where)
    except RecipeError as err:
        origin = file_of.get(err.key) or file_of.get(err.key.split("[")[0])
        if origin and origin != err.file:
            line = None if origin == "--set" else err.line
            raise RecipeError(origin, err.key, err.message, line) from None
        raise
    recipe.source = str(path)
    if not recipe.name:
        recipe.name = path.stem
    return recipe


def recipe_to_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML (stored in checkpoints and work dirs)."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)


def recipe_from_dict(data: dict, source: str = "<checkpoint>") -> Recipe:
    """Rebuild a Recipe from ``to_dict()`` output (e.g. one stored in a checkpoint)."""
    data = dict(data)
    data.pop("source", None)
    recipe = _build(Recipe, data, "", (source, {}))
    recipe.source = source
    return recipe


def list_recipes() -> List[Path]:
    """Every table-row recipe in recipes/ (bases excluded)."""
    return sorted(p for p in RECIPES_DIR.glob("*.yaml"))


def resolve_data_path(recipe: Recipe, rel: str) -> str:
    """A data path from the recipe, relative to ``data.root`` unless absolute."""
    if not rel:
        return rel
    return rel if os.path.isabs(rel) else os.path.join(recipe.data.root, rel)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tsn_dali.config RECIPE [--set k=v ...]``: validate and print the resolved recipe."""
    from tsn_dali import cli

    parser = cli.ArgumentParser(prog="python -m tsn_dali.config", description=main.__doc__)
    parser.add_argument("recipe")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    args = parser.parse_args(argv)
    return cli.run_main(lambda: print(recipe_to_yaml(load_recipe(args.recipe, args.overrides)), end=""))


if __name__ == "__main__":
    from tsn_dali import cli, config  # the module itself, whose RecipeError tsn_dali.cli knows

    raise SystemExit(cli.entry(config.main))
