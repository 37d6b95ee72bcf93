"""Stage 2, planning: what to take from each video.

Pure rules and the one place randomness lives. ``sampling`` and ``geometry`` are
MMAction2's SampleFrames/DenseSampleFrames and crop rules as plain functions; ``ops`` wraps
them as frozen dataclasses (a pipeline YAML lists them); ``planner.ClipPlanner`` turns a
VideoInfo into a ``ClipPlan`` (frame indices, crop boxes, flips, output size) from a
generator seeded by ``(seed, epoch, sample)``. Same inputs, same plan, on any machine.
May use index/ (VideoInfo) and errors; imports nothing from render/.
"""
from tsn_dali.data.plan.clip_plan import ClipPlan, StreamFacts

__all__ = ["ClipPlan", "StreamFacts"]
