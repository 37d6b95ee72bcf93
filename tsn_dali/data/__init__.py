"""tsn_dali.data: annotations, video index, clip plans, executors and the clip loader.

Importing this package pulls in no model or trainer code (tests/test_loader.py checks
it), so another project can use the loader with its own model::

    from tsn_dali.data import build_loader

Names are imported on first use, so ``tsn_dali.data.planner`` (numpy only) does not pay
for torch: the executors and the loader import it when they are asked for.
"""
import importlib

_EXPORTS = {
    "tsn_dali.data.annotations": ("AnnotationError", "VideoRecord", "read_label_map",
                                  "read_rawframe_list", "read_video_list"),
    "tsn_dali.data.errors": ("DatasetError", "LoaderStalled", "PipelineError", "VideoDecodeError"),
    "tsn_dali.data.executors": ("EXECUTORS", "Executor", "ReferenceExecutor", "build_executor"),
    "tsn_dali.data.loader": ("Batch", "ClipLoader", "build_loader"),
    "tsn_dali.data.order": ("BatchOrder", "eval_order", "train_order"),
    "tsn_dali.data.plan": ("ClipPlan",),
    "tsn_dali.data.planner": ("ClipPlanner", "load_pipeline"),
    "tsn_dali.data.video_index": ("VideoIndex", "VideoInfo", "build_index", "probe_video"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'tsn_dali.data' has no attribute {name!r}")


def __dir__():
    return __all__
