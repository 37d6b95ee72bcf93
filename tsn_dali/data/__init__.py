"""tsn_dali.data: annotations, video index, clip plans, executors and the clip loader.

Importing this package pulls in no model or trainer code (tests/test_loader.py checks
it), so another project can use the loader with its own model::

    from tsn_dali.data import build_loader
"""
from tsn_dali.data.annotations import (AnnotationError, VideoRecord, read_label_map,
                                       read_rawframe_list, read_video_list)
from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.data.executors import EXECUTORS, ReferenceExecutor, build_executor
from tsn_dali.data.loader import Batch, ClipLoader, build_loader, eval_order, train_order
from tsn_dali.data.plan import ClipPlan
from tsn_dali.data.planner import ClipPlanner, load_pipeline
from tsn_dali.data.video_index import VideoIndex, VideoInfo, build_index, probe_video

__all__ = [
    "AnnotationError", "Batch", "ClipLoader", "ClipPlan", "ClipPlanner", "EXECUTORS",
    "ReferenceExecutor", "VideoDecodeError", "VideoIndex", "VideoInfo", "VideoRecord",
    "build_executor", "build_index", "build_loader", "eval_order", "load_pipeline",
    "probe_video", "read_label_map", "read_rawframe_list", "read_video_list", "train_order",
]
