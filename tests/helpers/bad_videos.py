"""Writers for bad video files the tests feed to the index, the loader and the trainer."""
from __future__ import annotations

import av
import numpy as np


def write_audio_only(path):
    """An .m4a holding only an AAC stream (no video stream at all)."""
    container = av.open(str(path), "w")
    stream = container.add_stream("aac", rate=16000)
    for i in range(4):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = 16000, i * 1024
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_zero_frame_video(path):
    """A container opened for MPEG-4 video into which no frame was ever written."""
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    return path
