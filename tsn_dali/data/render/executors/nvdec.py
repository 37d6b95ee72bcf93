"""What this GPU's NVDEC decodes: known rules first, then one real decode per format.

NVDEC (DALI's ``mixed`` video decoder) reads H.264, HEVC, VP8, VP9, AV1 and MPEG-4, not
MJPEG (DALI 2.4's documentation). NVIDIA's NVDEC application note and DALI's issues
(#4483, #6079, #2197) add per-GPU limits that fail only at decode time:

- no AV1 on Hopper (compute capability 9.0): NVIDIA's support matrix, not measured here,
  so it is a hint (``likely_reason``) and the real test decode decides;
- H.264 4:2:2 / 4:4:4 and 10-bit H.264 only from Blackwell (compute capability 10.0 on);
  HEVC 4:2:2 likewise;
- gray (monochrome) video fails;
- each codec has a minimum coded size (``MIN_SIZE``, from cuvidGetDecoderCaps' nMinWidth
  and nMinHeight on current GPUs).

A building decoder proves nothing (libnvcuvid loads at the first real decode), so every
(codec, pixel format, profile) a data set holds is tried once per process with a real
decode of a tiny in-memory clip cut from one of its own videos (its first frame, see
tsn_dali.data.render.slicing). A format is judged undecodable only once ``CONFIRM`` different
videos of it failed (one damaged file must not send a whole format to the CPU); until
then only the failing video is. A video either rule rejects goes to the frames path
(decoded on the CPU, augmented on the GPU).
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, Optional, Tuple

from tsn_dali.data.plan.clip_plan import StreamFacts

NVDEC_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "libdav1d", "libaom-av1", "mpeg4"})
MIN_SIZE = {"h264": (48, 16), "mpeg4": (48, 16), "vp8": (48, 16), "hevc": (144, 144),
            "vp9": (128, 128), "av1": (128, 128)}
HOPPER = (9, 0)
BLACKWELL = (10, 0)

# (codec, pix_fmt, profile) -> None (decodes) or the reason it does not; one answer per
# process and GPU (_PROBED[device_id]). _FAILED[device_id][format]: path -> reason, for
# formats not yet judged.
_PROBED: Dict[int, Dict[Tuple[str, str, str], Optional[str]]] = {}
_FAILED: Dict[int, Dict[Tuple[str, str, str], Dict[str, str]]] = {}
CONFIRM = 2
_LOCK = threading.Lock()


def chroma(pix_fmt: str) -> str:
    """'420' | '422' | '444' | 'gray' | '' from a pixel format name (yuv420p10le -> '420')."""
    name = pix_fmt or ""
    if name.startswith("gray") or name in ("y400a", "monob", "monow"):
        return "gray"
    for sub in ("420", "422", "444", "440", "411", "410"):
        if sub in name or (sub == "420" and name.startswith("nv12")):
            return sub
    return ""


def _codec(codec: str) -> str:
    return "av1" if codec in ("libdav1d", "libaom-av1") else codec


def rule_reason(stream: StreamFacts, compute_capability: Tuple[int, int]) -> Optional[str]:
    """Why NVDEC on a GPU of ``compute_capability`` cannot decode ``stream`` (known rules), or None."""
    codec = _codec(stream.codec)
    if codec not in NVDEC_CODECS:
        return f"codec {stream.codec or 'unknown'}: NVDEC has no decoder for it"
    sub = chroma(stream.pix_fmt)
    if sub == "gray":
        return f"gray video ({stream.pix_fmt}): NVDEC decodes colour video only"
    old = tuple(compute_capability) < BLACKWELL
    if codec == "h264" and old and (sub in ("422", "444") or stream.bit_depth > 8):
        return f"H.264 {stream.pix_fmt}: 4:2:2, 4:4:4 and 10-bit H.264 need a Blackwell GPU's NVDEC"
    if codec == "hevc" and old and sub == "422":
        return f"HEVC {stream.pix_fmt}: 4:2:2 HEVC needs a Blackwell GPU's NVDEC"
    min_w, min_h = MIN_SIZE.get(codec, (0, 0))
    w = stream.coded_width or stream.width
    h = stream.coded_height or stream.height
    if w and h and (w < min_w or h < min_h):
        return f"{w}x{h} is below NVDEC's minimum {min_w}x{min_h} for {codec}"
    return None


def likely_reason(stream: StreamFacts, compute_capability: Tuple[int, int]) -> Optional[str]:
    """A limit NVIDIA's tables give but nothing here measured: the test decode still runs,
    and this is said beside its reason when it fails."""
    if _codec(stream.codec) == "av1" and tuple(compute_capability) == HOPPER:
        return "Hopper's NVDEC has no AV1 decoder, by NVIDIA's support matrix"
    return None


class NvdecSupport:
    """Answers "does NVDEC on this GPU decode this video?" (module docstring).

    ``probe(stream, path) -> Optional[str]`` makes the real decode (None: it worked, else
    the one-line reason); tests pass a stub. ``compute_capability`` defaults to the
    device's own.
    """

    def __init__(self, device_id: int = 0, probe: Optional[Callable[[StreamFacts, str], Optional[str]]] = None,
                 compute_capability: Optional[Tuple[int, int]] = None):
        self.device_id = int(device_id)
        self._probe = probe
        self._cc = compute_capability

    @property
    def compute_capability(self) -> Tuple[int, int]:
        if self._cc is None:
            import torch

            self._cc = tuple(torch.cuda.get_device_capability(self.device_id))
        return self._cc

    def reason(self, stream: Optional[StreamFacts], path: str) -> Optional[str]:
        """None where NVDEC decodes the video at ``path``, else why not (one line)."""
        if stream is None or not stream.codec:
            return None  # nothing known: let the decoder try (a failure names the video)
        why = rule_reason(stream, self.compute_capability)
        if why is not None:
            return why
        key = (_codec(stream.codec), stream.pix_fmt, stream.profile)
        with _LOCK:
            answers = _PROBED.setdefault(self.device_id, {})
            failed = _FAILED.setdefault(self.device_id, {}).setdefault(key, {})
            if key in answers:
                return answers[key]
            if path in failed:
                return failed[path]
            probe = self._probe or (lambda s, p: probe_decode(s, p, self.device_id))
            why = probe(stream, path)
            hint = likely_reason(stream, self.compute_capability)
            if why is not None and hint:
                why = f"{why} ({hint})"
            if why is None:
                answers[key] = None
            else:
                failed[path] = why
                if len(failed) >= CONFIRM:
                    answers[key] = why
            return why


def probe_decode(stream: StreamFacts, path: str, device_id: int) -> Optional[str]:
    """One real NVDEC decode of ``path``'s first frame (an in-memory slice): None, or why it failed."""
    from tsn_dali.data.render.executors.dali_pipeline import first_line
    from tsn_dali.data.render.slicing import first_frame_clip

    try:
        clip = first_frame_clip(path, stream)
        return decode_once(clip.data, clip.positions, device_id)
    except Exception as exc:  # VideoDecodeError from slicing, DALI's RuntimeError
        return f"test decode failed: {first_line(exc)}"


def decode_once(encoded, positions, device_id: int) -> Optional[str]:
    """Decode ``positions`` of ``encoded`` once on ``mixed``: None, or DALI's reason (one line)."""
    import numpy as np
    from nvidia.dali import Pipeline, fn, types

    from tsn_dali.data.render.executors.dali_pipeline import decoder_device, first_line

    pipe = Pipeline(batch_size=1, num_threads=1, device_id=device_id, exec_async=False,
                    exec_pipelined=False, prefetch_queue_depth=1)
    try:
        with pipe:
            data = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            pipe.set_outputs(fn.decoders.video(data, frames=np.asarray(positions, np.int32).tolist(),
                                               **decoder_device("gpu")))
        pipe.build()
        pipe.feed_input("encoded", [np.asarray(encoded, np.uint8)])
        (out,) = pipe.run()
        out.as_cpu()
        return None
    except Exception as exc:
        return f"test decode failed: {first_line(exc)}"
    finally:
        del pipe


def tiny_clip(codec: str = "h264", size: int = 160):
    """An in-memory 2-frame clip (bytes) of ``codec`` for the ``auto`` executor's NVDEC check."""
    import io

    import av
    import numpy as np

    from tsn_dali.data.media.videoio import CODECS

    encoder, ext = CODECS[codec]
    buf = io.BytesIO()
    with av.open(buf, "w", format={".mp4": "mp4", ".webm": "webm"}.get(ext, "matroska")) as out:
        stream = out.add_stream(encoder, rate=30)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(2):
            img = np.full((size, size, 3), 60 * i + 30, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return np.frombuffer(buf.getvalue(), np.uint8)


def nvdec_works(device_id: int = 0, decode: Optional[Callable] = None) -> Optional[str]:
    """None where NVDEC decodes a tiny H.264 or VP9 clip on this GPU; else the last reason."""
    decode = decode or decode_once
    reason = "no test clip could be made"
    for codec in ("h264", "vp9"):
        try:
            clip = tiny_clip(codec)
        except Exception as exc:  # the encoder is missing from this PyAV build
            reason = f"cannot make a {codec} test clip: {exc}"
            continue
        reason = decode(clip, [0], device_id)
        if reason is None:
            return None
    return reason


__all__ = ["MIN_SIZE", "NVDEC_CODECS", "NvdecSupport", "chroma", "decode_once", "likely_reason", "nvdec_works",
           "probe_decode", "rule_reason", "tiny_clip"]
