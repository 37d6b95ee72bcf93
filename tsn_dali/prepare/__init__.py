"""Data preparation, two commands under one name:

    python -m tsn_dali.prepare LIST --out DIR [--gop 16 ...]    re-encode a list (videos.py)
    python -m tsn_dali.prepare lists DATASET --root DIR          official annotations to
                                                                 MMAction2's lists (lists.py)
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from tsn_dali.prepare.videos import (CODECS, DEFAULT_GOP, TRADE_OFF, build_parser, plan_jobs, prepare,
                                     reencode_video, scaled_size)
from tsn_dali.prepare.videos import main as videos_main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``lists ...`` goes to ``tsn_dali.prepare.lists``; anything else re-encodes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lists"]:
        from tsn_dali.prepare.lists import main as lists_main

        return lists_main(argv[1:])
    return videos_main(argv)


__all__ = ["CODECS", "DEFAULT_GOP", "TRADE_OFF", "build_parser", "main", "plan_jobs", "prepare",
           "reencode_video", "scaled_size"]
