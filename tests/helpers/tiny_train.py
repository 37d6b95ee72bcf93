"""A tiny generated dataset and recipe for train/test entry-point tests (CPU, seconds).

Videos are numbered H.264 clips written with tsn_dali.data.media.videoio (decoded by the
reference executor through decord/PyAV); the recipe is based on recipes/k400_r50.yaml
with resnet18, 3 classes, 2 segments, 32 px crops (short side 40), batch 2, AMP off.
"""
from __future__ import annotations

from pathlib import Path

from helpers.tiny_clips import clip_dataset

PROJECT = Path(__file__).resolve().parents[2]


def make_videos(root, num_videos: int = 6, num_classes: int = 3, num_frames: int = 10,
                width: int = 64, height: int = 48) -> Path:
    """``tiny_clips.clip_dataset`` of two distinct clips (``num_frames`` and 4 more frames), so
    that the videos are not all identical."""
    return clip_dataset(root, num_videos, [num_frames, num_frames + 4], width, height, num_classes)


def train_recipe(root, *, epochs: int = 2, batch_size: int = 2, test_batch_size: int = 2,
                 test_pipeline: str = "tsn_test_threecrop", short_side: int = 40,
                 input_size: int = 32, extra: str = "") -> Path:
    """``root/recipe.yaml``: tiny sizes, base recipes/k400_r50.yaml. ``extra`` adds top-level
    sections not written here (e.g. ``reported:``)."""
    root = Path(root)
    text = f"""base: {PROJECT / 'recipes' / 'k400_r50.yaml'}
name: tiny
model:
  backbone: resnet18
  num_classes: 3
data:
  root: {root}
  train_list: train.txt
  train_prefix: videos
  val_list: val.txt
  val_prefix: videos
  test_list: test.txt
  test_prefix: videos
  short_side: {short_side}
  input_size: {input_size}
  num_segments: 2
  test_pipeline: {test_pipeline}
  index_cache: {root / 'index'}
loader:
  executor: reference
  reference_workers: 0
  batch_size: {batch_size}
  test_batch_size: {test_batch_size}
  dtype: float32
  prefetch: 1
train:
  epochs: {epochs}
  lr: 0.01
  milestones: [1]
  amp: 'off'
  log_interval: 1
  checkpoint_interval: 1
{extra}"""
    path = root / "recipe.yaml"
    path.write_text(text)
    return path
