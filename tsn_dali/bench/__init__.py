"""Throughput benchmarks: clips/s of the loaders, the model and both together.

``python -m tsn_dali.bench RECIPE --videos DIR_OR_LIST ...``. Every part is a comparison of
systems measured in this one process, interleaved (interleave.py): one untimed round, then
``--rounds`` rounds in which each system times one window of ``--iters`` steps, the order
rotated each round; each system gets its median, spread and ratio to a named baseline, and
a difference within the spread is said to be one (``--parts``):

- loader: each executor variant (``--executors``: dali-gpu where CUDA is present, dali-cpu,
  reference with N DataLoader workers; ``+whole``, ``+copy``, ``+sessionsN``, ``+mmaction``
  variants, measure.py) and the peers (``--peers``: MMAction2's own config pipeline, a
  decord + OpenCV loader, torchcodec; peers.py, checked against our plans), for the recipe's train
  view and test view, through a ClipLoader as training uses it (prefetch included); clips
  per path and codec, frames and bytes fed per clip as counted; NVDEC utilisation on a GPU;
- model / e2e: the trainer's own step (tsn_dali.engine.step) on synthetic input as the
  baseline (``torch.compile`` too with ``--compile``), and with ``e2e`` that step fed by each
  executor, with the share of time the host waited for data;
- gop: the first ``--gop-videos`` videos in each codec of ``--gop-codec`` (h264, vp9), as
  they are or re-encoded (``tsn_dali.prepare``) with each of ``--gops``, for each view of
  ``--gop-views``: one loader comparison per codec, GOP and view (one command gives the
  whole CPU table of docs/measurements.md).

Results: ``results.json``, ``results.md`` and ``throughput.png`` in ``--out`` (default
``benchmarks/results/<device>-<date>``). Modules: cli (the command line), options (its
names and checks, no torch), runner (the parts), interleave (rounds, comparisons), measure
(executors, loaders, the step as systems), peers and mmaction_peer (MMAction2's own config
pipeline), videos, environment (machine facts, NVDEC utilisation), stats, report, guard (the
CI guard's counts: what a plan needs decoded).
"""
import importlib

# Names are imported on first use, so that ``python -m tsn_dali.bench --help`` (which imports
# this package first) and the light parts (interleave, options, report) pay for no torch.
_EXPORTS = {
    "tsn_dali.bench.cli": ("main", "parse_args", "run"),
    "tsn_dali.bench.measure": ("frames_decoded", "make_train_step"),
    "tsn_dali.bench.stats": ("summarize",),
    "tsn_dali.bench.videos": ("find_videos", "generate_videos"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
_MODULES = ("cli", "environment", "guard", "interleave", "measure", "mmaction_peer", "options", "peers", "report",
            "runner", "stats", "videos")
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'tsn_dali.bench' has no attribute {name!r}")


def __dir__():
    return __all__ + list(_MODULES)
