"""Where the suite finds real video clips: the folder named by ``TSN_DALI_TEST_VIDEOS``.

The tests that need real encoders' output (H.264 with B-frames, odd sizes and frame rates)
read MMAction2's demo and test clips from that folder and are skipped without it. This
project's CI points it at its own copy (``.ci/run``).
"""
import os
from pathlib import Path

import pytest

ENV = "TSN_DALI_TEST_VIDEOS"
VIDEOS = Path(os.environ.get(ENV) or "/nonexistent-tsn-dali-test-videos").expanduser()
AVAILABLE = VIDEOS.is_dir()
REASON = f"real clips not found: set {ENV} to a folder of them (tests/helpers/real_videos.py)"
needs_videos = pytest.mark.skipif(not AVAILABLE, reason=REASON)


def real_video(name: str) -> Path:
    """The real clip ``name`` of the folder, or skip the calling test where it is absent."""
    path = VIDEOS / name
    if not path.is_file():
        pytest.skip(f"{name} not in {ENV} ({VIDEOS})" if AVAILABLE else REASON)
    return path
