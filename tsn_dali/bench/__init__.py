"""Throughput benchmarks: clips/s of the loader, the model and both together.

``python -m tsn_dali.bench RECIPE --videos DIR_OR_LIST ...`` measures, in one process,
one after another on the same machine and the same videos (``--parts``):

- loader: clips/s of each executor variant (``--executors``: dali-gpu where CUDA is
  present, dali-cpu, reference with N DataLoader workers; ``+whole``, ``+copy``,
  ``+sessionsN`` variants, measure.py) for the recipe's train view and test view,
  through the ClipLoader a training run uses (prefetch included); frames sampled per
  clip, and frames and bytes fed to the decoder per clip as the DALI executors count
  them (the reference executor's decord: an estimate); NVDEC utilisation on a GPU;
- model: clips/s of the trainer's own step (tsn_dali.engine.step: forward, backward,
  grad clip, SGD, fused on CUDA) on synthetic input, channels_last; with
  ``torch.compile`` where ``--compile``;
- e2e: training clips/s with each executor feeding that step, and the share of time the
  host spent blocked waiting for data;
- gop: decode cost vs GOP: the first ``--gop-videos`` videos as they are and re-encoded
  (``--gop-codec``, ``tsn_dali.prepare``) with each of ``--gops``; loader only.

Every measurement: ``--warmup`` batches excluded, then ``--repeats`` windows of
``--iters`` batches, each window one clips/s figure; the report gives the median,
min/max and the quartiles of the windows. Results: ``results.json``, ``results.md``
and ``throughput.png`` in ``--out`` (default ``benchmarks/results/<device>-<date>``).

Modules: cli (the parts, the command line), measure (executors, loaders, the step),
videos, environment (machine facts, NVDEC utilisation), stats, report.
"""
from tsn_dali.bench.cli import main, parse_args, run
from tsn_dali.bench.measure import frames_decoded, make_train_step
from tsn_dali.bench.stats import summarize
from tsn_dali.bench.videos import find_videos, generate_videos

__all__ = ["find_videos", "frames_decoded", "generate_videos", "main", "make_train_step", "parse_args", "run",
           "summarize"]
