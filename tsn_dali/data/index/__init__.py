"""Stage 1, the index: what each video is.

Reads annotation lists (MMAction2's video and rawframe list formats) into VideoRecords and
probes each video once for a VideoInfo: decodable frame count, size, codec, keyframes
(closed-GOP starts) and stream facts. The cache (``cache.py``) keeps the probes on disk,
keyed by path, size and mtime; ``build.py`` shares the probing among ranks. Imports
nothing from plan/ or render/; may use media/ and errors.
"""
import importlib

_EXPORTS = {"build_index": "tsn_dali.data.index.build", "VideoIndex": "tsn_dali.data.index.video_index",
            "VideoInfo": "tsn_dali.data.index.video_index", "probe_video": "tsn_dali.data.index.video_index"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):  # on first use: reading a list needs neither PyAV nor the cache
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tsn_dali.data.index' has no attribute {name!r}")
