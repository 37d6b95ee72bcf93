"""tsn_dali.data: the data path, in three stages that import only downward.

    index/   what each video is: annotation lists, probing (frames, size, codec,
             keyframes), the on-disk index cache shared by ranks
    plan/    what to take from it: MMAction2's sampling and crop rules as pipeline ops;
             the seeded planner turns a VideoInfo into a ClipPlan (the only randomness)
    render/  taking it: GOP slices, the executors (DALI GPU/CPU, reference), batch order,
             prefetch, hand-off, and the ClipLoader users iterate
    media/   the floor under all three: decoding frames outside DALI, writing videos,
             the synthetic dataset
    errors   the error types every stage raises

Importing this package pulls in no model or trainer code (tests/test_loader.py checks
it), so another project can use the loader with its own model::

    from tsn_dali.data import loader_from           # from (path, label) pairs, a folder, a list
    from tsn_dali.data import build_loader          # from a recipe
    from tsn_dali.data import SampleFrames, Resize  # the pipeline ops, for a view of your own

Names are imported on first use, so ``tsn_dali.data.plan.planner`` (numpy only) does not
pay for torch. Module paths from before the split (``tsn_dali.data.loader`` and the like)
still import, with a FutureWarning naming the new path, until release 0.3.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

_EXPORTS = {
    "tsn_dali.data.index.annotations": ("AnnotationError", "VideoRecord", "read_label_map",
                                        "read_rawframe_list", "read_video_list"),
    "tsn_dali.data.errors": ("DatasetError", "LoaderStalled", "PipelineError", "VideoDecodeError"),
    "tsn_dali.data.render.executors": ("EXECUTORS", "Executor", "ReferenceExecutor", "build_executor"),
    "tsn_dali.data.render.loader": ("Batch", "ClipLoader", "MetaBatch", "build_loader"),
    "tsn_dali.data.render.sources": ("loader_from",),
    "tsn_dali.data.plan.ops": ("SampleFrames", "DenseSampleFrames", "Resize", "MultiScaleCrop",
                               "RandomResizedCrop", "CenterCrop", "ThreeCrop", "TenCrop", "Flip", "OPS"),
    "tsn_dali.data.render.order": ("BatchOrder", "eval_order", "train_order"),
    "tsn_dali.data.plan.clip_plan": ("ClipPlan",),
    "tsn_dali.data.plan.planner": ("ClipPlanner", "load_pipeline"),
    "tsn_dali.data.index.video_index": ("VideoIndex", "VideoInfo", "probe_video"),
    "tsn_dali.data.index.build": ("build_index",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)

# Where the modules of the flat layout (release 0.1) went.
MOVED = {
    "annotations": "index.annotations", "bitstream": "index.bitstream",
    "video_index": "index.video_index", "index_cache": "index.cache", "index_build": "index.build",
    "ops": "plan.ops", "planner": "plan.planner", "sampling": "plan.sampling",
    "geometry": "plan.geometry",
    "slicing": "render.slicing", "prefetch": "render.prefetch", "handoff": "render.handoff",
    "order": "render.order", "loader": "render.loader", "executors": "render.executors",
    "decoding": "media.decoding", "videoio": "media.videoio", "synthetic": "media.synthetic",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tsn_dali.data' has no attribute {name!r}")


def __dir__():
    return __all__


def _moved_target(fullname: str):
    """``tsn_dali.data.loader.x`` -> ``tsn_dali.data.render.loader.x``; None if not moved."""
    prefix = __name__ + "."
    if not fullname.startswith(prefix):
        return None
    head, _, rest = fullname[len(prefix):].partition(".")
    if head not in MOVED:
        return None
    return f"{__name__}.{MOVED[head]}" + (f".{rest}" if rest else "")


def _warn_moved(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes in tsn_dali 0.3", FutureWarning, stacklevel=3)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module at its new path (the same module object,
    so classes and monkeypatches are shared), with a FutureWarning; ``python -m`` on an
    old path runs the new module's code."""

    def find_spec(self, fullname, path=None, target=None):
        new = _moved_target(fullname)
        if new is None:
            return None
        real = importlib.util.find_spec(new)
        if real is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=real.submodule_search_locations is not None)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        new = _moved_target(module.__name__)
        _warn_moved(module.__name__, new)
        # The import system returns whatever sys.modules holds once exec_module is done.
        sys.modules[module.__name__] = importlib.import_module(new)

    def get_code(self, fullname):  # python -m tsn_dali.data.synthetic
        new = _moved_target(fullname)
        _warn_moved(fullname, new)
        return importlib.util.find_spec(new).loader.get_code(new)


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
