"""A tiny generated video dataset and recipe for loader tests (MMAction2 list layout)."""
from __future__ import annotations

import shutil
from pathlib import Path

import av  # noqa: F401  (PyAV before decord: see tsn_dali.data.executors.reference)

from tsn_dali.data.videoio import video_extension, write_numbered_video

PROJECT = Path(__file__).resolve().parents[2]


def make_dataset(root, num_videos: int, num_frames: int = 12, width: int = 64, height: int = 48,
                 num_classes: int = 5, codec: str = "h264") -> Path:
    """``root/videos/v000.mp4 ...`` (copies of one numbered clip, H.264 or ``codec``) and
    ``root/train.txt`` / ``root/val.txt`` listing them with label ``i % num_classes``."""
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    ext = video_extension(codec)
    first = root / "videos" / f"v000{ext}"
    write_numbered_video(str(first), num_frames, width, height, codec=codec)
    lines = []
    for i in range(num_videos):
        name = f"v{i:03d}{ext}"
        if i:
            shutil.copyfile(first, root / "videos" / name)
        lines.append(f"{name} {i % num_classes}\n")
    for split in ("train", "val", "test"):
        (root / f"{split}.txt").write_text("".join(lines))
    return root


def recipe_yaml(root, batch_size: int = 2, test_batch_size: int = 2, extra: str = "") -> Path:
    """A recipe on ``root`` with small sizes, based on recipes/k400_r50.yaml."""
    root = Path(root)
    text = f"""base: {PROJECT / 'recipes' / 'k400_r50.yaml'}
data:
  root: {root}
  train_list: train.txt
  train_prefix: videos
  val_list: val.txt
  val_prefix: videos
  test_list: test.txt
  test_prefix: videos
  short_side: 64
  input_size: 56
  num_segments: 3
  test_pipeline: tsn_test_threecrop
loader:
  executor: reference
  reference_workers: 0
  batch_size: {batch_size}
  test_batch_size: {test_batch_size}
  dtype: uint8
  prefetch: 2
{extra}"""
    path = root / "recipe.yaml"
    path.write_text(text)
    return path
