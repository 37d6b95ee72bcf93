"""A tiny generated video dataset and recipe for loader tests (MMAction2 list layout)."""
from __future__ import annotations

import shutil
from pathlib import Path


from tsn_dali.data.media.videoio import video_extension, write_numbered_video

PROJECT = Path(__file__).resolve().parents[2]


def clip_dataset(root, num_videos: int, frame_counts, width: int, height: int, num_classes: int,
                 codec: str = "h264") -> Path:
    """``root/videos/v000.mp4 ...``: copies of numbered clips (one per frame count, written to
    ``root/sources``; video ``i`` a copy of clip ``i % len(frame_counts)``), listed with label
    ``i % num_classes`` in ``root/train.txt``, ``val.txt`` and ``test.txt`` (MMAction2's layout)."""
    root = Path(root)
    for folder in ("videos", "sources"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ext = video_extension(codec)
    sources = []
    for j, frames in enumerate(frame_counts):
        path = root / "sources" / f"clip{j}{ext}"
        write_numbered_video(str(path), frames, width, height, codec=codec)
        sources.append(path)
    lines = []
    for i in range(num_videos):
        name = f"v{i:03d}{ext}"
        shutil.copyfile(sources[i % len(sources)], root / "videos" / name)
        lines.append(f"{name} {i % num_classes}\n")
    for split in ("train", "val", "test"):
        (root / f"{split}.txt").write_text("".join(lines))
    return root


def make_dataset(root, num_videos: int, num_frames: int = 12, width: int = 64, height: int = 48,
                 num_classes: int = 5, codec: str = "h264") -> Path:
    """``clip_dataset`` of one numbered clip (loader tests: every video shows frame ``i`` at ``i``)."""
    return clip_dataset(root, num_videos, [num_frames], width, height, num_classes, codec)


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
