"""The videos a benchmark runs on: found, generated, or re-encoded with another GOP."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")


def find_videos(sources: Sequence[str], prefix: Optional[str] = None) -> List[str]:
    """Video paths from directories (their video files, sorted), video files, and
    MMAction2 video lists (``path label`` per line, paths relative to ``prefix``, default
    the list's folder)."""
    from tsn_dali.data.index.annotations import read_video_list

    out: List[str] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise ValueError(f"--videos {src}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in this folder")
            out += found
        elif p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            out.append(str(p))
        elif p.is_file():
            records, _ = read_video_list(str(p), prefix or str(p.parent))
            out += [r.path for r in records]
        else:
            raise ValueError(f"--videos {src}: expected a folder, a video file or a video list; not found")
    return out


def generate_videos(out_dir: str, num_videos: int, num_frames: int = 300, size=(340, 256),
                    fps: float = 30, gop: Optional[int] = None, codec: str = "h264") -> List[str]:
    """K400-like clips (340x256, 10 s at 30 fps, the encoder's long GOP by default; H.264
    or VP9), written by ``tsn_dali.data.media.synthetic`` (the demo's generator; kept when
    already there)."""
    from tsn_dali.data.media.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(videos=num_videos, val_fraction=0.0, classes=min(8, num_videos),
                         frames=num_frames, width=size[0], height=size[1], fps=fps, codec=codec,
                         gop=gop, name="bench")
    out = generate(out_dir, spec, progress=False)
    return find_videos([os.path.join(out["out"], out["train_list"])],
                       os.path.join(out["out"], out["train_prefix"]))


def reencode(src: str, dst: str, gop: Optional[int], codec: str = "h264") -> str:
    """``src`` written again as ``codec`` with keyframes every ``gop`` frames (None: the
    encoder's default) by ``tsn_dali.prepare.reencode_video``. Kept if ``dst`` exists."""
    from tsn_dali.prepare import reencode_video

    if os.path.isfile(dst):
        return dst
    return reencode_video(src, dst, gop=gop, codec=codec)


__all__ = ["VIDEO_EXTENSIONS", "find_videos", "generate_videos", "reencode"]
