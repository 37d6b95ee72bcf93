"""The DALI graph that carries out ClipPlans, one function for CPU and GPU.

Per sample (one ClipPlan, T frames of which U are distinct, K crops) the graph does, in
the order of the ClipPlan docstring:

    frames [U, H, W, C]  (DALI's video decoder at sorted unique ``frame_positions`` of the
                          clip's slice, tsn_dali.data.render.slicing; or frames decoded outside
                          DALI and fed in, upright already, see ``source``)
    -> fn.rotate by ``rotate_angle``    (decoder only: DALI's decoders ignore a display
                                         matrix, so a rotated video's frames are turned
                                         upright here, on the graph's device: a multiple of
                                         90 degrees, nearest-neighbour, the output sized to
                                         fit, is an exact pixel permutation, np.rot90's;
                                         left out where no sample of the run is rotated)
    -> fn.resize to resize_to           (INTERP_LINEAR, antialias=False; left out of the graph
                                         where no sample of the run changes size: a
                                         resize to the same size is the identity)
    -> fn.sequence_rearrange            (``frame_order``: the plan's order and repeats,
                                         [T, h, w, C], on the graph's device; left out
                                         where every sample's frames are already in
                                         order, as TSN's train and val sampling gives)
    -> for k in range(K):               (one branch per crop: DALI's crop, resize and
         fn.slice crops[k]               flip take per-sample arguments, not per-frame
         -> fn.resize to out_size        ones, so each crop is its own branch and its
         -> mirror if crop_flips[k]      box is a per-sample argument)
         (-> normalise and cast)
    -> fn.cat on the frame axis         [K*T, h, w, C], crop-major (view k*T + t)

Each branch is one fused fn.crop_mirror_normalize (cut, mirror, normalise, cast in one
pass over the pixels) where no box of the run needs resizing to ``out_size`` (the test
views: TenCrop / ThreeCrop / CenterCrop boxes already have the output size), else
fn.slice -> fn.resize -> crop_mirror_normalize (fn.flip for raw uint8): resizing a slice
clamps at the box's edges as cv2 does on MMAction2's cropped array. crop_mirror_normalize
places a box at ``pos * (W - w)`` from a normalised position; ``plan_inputs`` gives
``(x1 + 0.25) / (W - w)``, which lands on ``x1`` whether DALI rounds or truncates
(tests/test_dali_executor.py checks every offset against numpy slicing).

Bilinear rule: DALI's resize with ``antialias=False`` samples at half-pixel centres
with a 2-tap linear filter, the same grid and weights as cv2 ``INTER_LINEAR``
(mmcv.imresize, MMAction2's Resize) and as torch ``interpolate(bilinear,
align_corners=False, antialias=False)``; on CPU it equals the latter exactly on our
test frames (tests/test_dali_executor.py). DALI's default ``antialias=True`` would
low-pass when shrinking, which cv2 does not do, so it is switched off. A resize to
the same size is an exact copy, so the out_size step costs nothing in accuracy where
the box already has the output size.

Normalisation is fn.crop_mirror_normalize: ``(x - mean) / std`` computed in float32,
written as float16 or float32 (DALI has no bfloat16 output: the executor asks for
float32 and casts in torch). Raw uint8 output uses fn.flip for the mirror.

``device="gpu"`` builds the same graph with the decoder on ``mixed`` (NVDEC) and
every op on the GPU; only the small argument arrays stay on the host.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tsn_dali.data.plan.clip_plan import ClipPlan

# Codecs (PyAV codec names) DALI's fn.decoders.video decodes, per backend (its docs, DALI 2.4).
DALI_CODECS = {
    "cpu": frozenset({"vp8", "vp9", "mjpeg"}),
    "gpu": frozenset({"vp8", "vp9", "h264", "hevc", "mpeg4", "av1", "libdav1d", "libaom-av1"}),  # NVDEC: no MJPEG
}

SOURCES = ("decoder", "frames")  # frames decoded by DALI in the graph, or fed in already decoded
OUT_DTYPES = ("uint8", "float16", "float32")  # what the graph writes (bfloat16: float32, cast in torch)


def first_line(exc: BaseException) -> str:
    """One line from a DALI error: the text after "encountered:" (DALI's own message,
    without its pipeline traceback and C++ context), else the first non-empty line."""
    text = str(exc)
    if "encountered:" in text:
        text = text.split("encountered:", 1)[1].split("C++ context", 1)[0]
        text = re.sub(r'^\s*Assert on ".*?" failed:\s*', "", text, flags=re.S)
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text[:300] or type(exc).__name__


def decoder_device(device: str) -> dict:
    """fn.decoders.video's placement: ``mixed`` (NVDEC) for "gpu", with ``affine=False``.
    DALI pins the mixed decoder's threads to the GPU's CPU cores through NVML (``affine``
    defaults to true); where NVML gives no affinity (a VM, a sandbox), every decode would
    fail, and pinning buys little beside the decode itself, so it is off."""
    return {"device": "mixed", "affine": False} if device == "gpu" else {"device": "cpu"}


def input_names(num_crops: int, source: str, normalise: bool, resize_frames: bool = True,
                reorder_frames: bool = True, resize_crops: bool = True, rotate_frames: bool = False) -> List[str]:
    """Names of the graph's external sources (those of ``plan_inputs`` the graph reads)."""
    names = ["encoded", "frame_positions"] if source == "decoder" else ["frames"]
    names += ["rotate_angle"] if rotate_frames and source == "decoder" else []
    names += (["frame_order"] if reorder_frames else []) + (["resize_hw"] if resize_frames else [])
    for k in range(num_crops):
        box = [f"crop{k}_start", f"crop{k}_shape"] if resize_crops else [f"crop{k}_window"]
        names += box + [f"crop{k}_flip"]
    if normalise:
        names += ["mean", "std"]
    return names


def plan_inputs(plan: ClipPlan, *, order: np.ndarray, encoded: Optional[np.ndarray] = None,
                positions: Optional[np.ndarray] = None, frames: Optional[np.ndarray] = None,
                mean=None, std=None) -> Dict[str, np.ndarray]:
    """One sample's arrays for the graph's external sources, worked out from ``plan``.

    Either ``encoded`` (the clip's bytes: a slice or the whole file) with ``positions``
    (int32 sorted unique frame positions in it), or ``frames`` (``[U, H, W, C]`` uint8,
    decoded outside DALI, upright); ``order``: int32 ``[T]``, view ``t`` shows decoded frame
    ``order[t]``. ``rotate_angle`` float32: fn.rotate's counter-clockwise degrees that turn
    the decoder's stored frames upright (``upright_angle``; 0 for fed frames).
    ``resize_hw`` float32 [h, w] of ``resize_to``; per crop ``k``: ``start``
    int32 [x1, y1], ``shape`` int32 [x2 - x1, y2 - y1] (fn.slice's ``axis_names="WH"``
    order), ``window`` float32 [pos_x, pos_y, w, h] (crop_mirror_normalize's normalised
    position, ``window_position``) and ``flip`` int32 0/1.
    """
    crops = np.asarray(plan.crops, dtype=np.int64).reshape(-1, 4)
    flips = np.asarray(plan.crop_flips, dtype=bool).reshape(-1)
    if len(flips) != len(crops):
        raise ValueError(f"{plan.path}: plan has {len(crops)} crops but {len(flips)} crop_flips")
    rw, rh = int(plan.resize_to[0]), int(plan.resize_to[1])
    out: Dict[str, np.ndarray] = {}
    if encoded is not None and positions is not None:
        out["encoded"] = encoded
        out["frame_positions"] = np.ascontiguousarray(positions, dtype=np.int32).reshape(-1)
        decoded = len(out["frame_positions"])
        out["rotate_angle"] = np.array(upright_angle(plan), np.float32)
    elif frames is not None:
        out["frames"] = frames
        decoded = len(frames)
        out["rotate_angle"] = np.array(0.0, np.float32)
    else:
        raise ValueError("plan_inputs: give encoded bytes with positions, or decoded frames")
    out["frame_order"] = np.ascontiguousarray(order, dtype=np.int32).reshape(-1)
    if len(out["frame_order"]) != len(plan.frame_indices) or out["frame_order"].max() >= decoded:
        raise ValueError(f"{plan.path}: frame_order {out['frame_order'].tolist()} does not map "
                         f"{len(plan.frame_indices)} views onto {decoded} decoded frames")
    out["resize_hw"] = np.array([rh, rw], np.float32)
    for k, ((x1, y1, x2, y2), flip) in enumerate(zip(crops.tolist(), flips.tolist())):
        if not (0 <= x1 < x2 <= rw and 0 <= y1 < y2 <= rh):
            raise ValueError(f"{plan.path}: crop {k} box {[x1, y1, x2, y2]} is not inside the "
                             f"resized frame {rw}x{rh}")
        out[f"crop{k}_start"] = np.array([x1, y1], np.int32)
        out[f"crop{k}_shape"] = np.array([x2 - x1, y2 - y1], np.int32)
        out[f"crop{k}_window"] = np.array([window_position(x1, rw - (x2 - x1)),
                                           window_position(y1, rh - (y2 - y1)), x2 - x1, y2 - y1], np.float32)
        out[f"crop{k}_flip"] = np.array(int(flip), np.int32)
    if mean is not None:
        out["mean"] = np.asarray(mean, np.float32).reshape(-1)
        out["std"] = np.asarray(std, np.float32).reshape(-1)
    return out


def upright_angle(plan: ClipPlan) -> float:
    """fn.rotate's angle (counter-clockwise degrees, np.rot90's sense) that turns a video's
    stored frames upright: minus its display rotation (``StreamFacts.rotation``, clockwise)."""
    rotation = int(plan.stream.rotation) if plan.stream is not None else 0
    return float((360 - rotation) % 360)


def needs_rotate(inputs: Dict[str, np.ndarray]) -> bool:
    """Whether a sample's decoded frames must be turned upright in the graph."""
    return float(inputs.get("rotate_angle", 0.0)) != 0.0


def window_position(start: int, room: int) -> float:
    """crop_mirror_normalize's normalised position of a box at ``start`` with ``room``
    pixels to move in (frame size minus box size): DALI places it at ``pos * room``, and
    ``(start + 0.25) / room`` gives ``start`` under rounding and truncation alike."""
    if room <= 0:
        return 0.0
    return 1.0 if start >= room else (start + 0.25) / room


def needs_reorder(order: np.ndarray) -> bool:
    """Whether decoded frames must be rearranged (repeats, or not in increasing order)."""
    order = np.asarray(order).reshape(-1)
    return not np.array_equal(order, np.arange(len(order)))


def needs_resize(plan: ClipPlan) -> bool:
    """Whether the plan's whole-frame resize changes the frame's size (else it is the identity)."""
    return tuple(int(v) for v in plan.resize_to) != tuple(int(v) for v in plan.orig_size)


def crops_need_resize(plan: ClipPlan) -> bool:
    """Whether any crop box differs in size from ``out_size`` (else each crop's resize is the
    identity: TenCrop, ThreeCrop and CenterCrop boxes are already the output size)."""
    w, h = int(plan.out_size[0]), int(plan.out_size[1])
    crops = np.asarray(plan.crops).reshape(-1, 4)
    return bool(np.any((crops[:, 2] - crops[:, 0] != w) | (crops[:, 3] - crops[:, 1] != h)))


def clip_graph(*, device: str, num_crops: int, out_size: Tuple[int, int], out_dtype: str,
               source: str, normalise: bool, resize_frames: bool = True, reorder_frames: bool = True,
               resize_crops: bool = True, rotate_frames: bool = False):
    """Build the graph (call inside a pipeline's scope); returns the output DataNode.

    ``device``: "cpu" or "gpu" (decoder on "mixed", every image op on the GPU).
    ``out_size``: (w, h) of every view. ``out_dtype``: one of OUT_DTYPES.
    ``source``: "decoder" (fn.decoders.video on the file's bytes) or "frames".
    ``resize_frames``: False leaves the whole-frame resize out (every sample's ``resize_to``
    is its frame size); ``reorder_frames``: False leaves the rearrangement out (every
    sample's decoded frames are its views' frames, in order); ``resize_crops``: False leaves
    each crop's resize out (every box is already ``out_size``, as test views' are);
    ``rotate_frames``: True turns each sample's decoded frames by its ``rotate_angle``
    (False: no sample of the run is rotated).
    """
    from nvidia.dali import fn, types

    if device not in ("cpu", "gpu"):
        raise ValueError(f"device {device!r}; expected 'cpu' or 'gpu'")
    if source not in SOURCES:
        raise ValueError(f"source {source!r}; expected one of {', '.join(SOURCES)}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype {out_dtype!r}; expected one of {', '.join(OUT_DTYPES)}")
    if out_dtype == "uint8" and normalise:
        raise ValueError("normalise needs a float out_dtype (float16, float32)")

    def arg(name, dtype, ndim):
        return fn.external_source(name=name, dtype=dtype, ndim=ndim, device="cpu")

    if source == "decoder":
        encoded = arg("encoded", types.UINT8, 1)
        positions = arg("frame_positions", types.INT32, 1)
        # pad_mode "none": an index past the end is an error, not a black frame
        frames = fn.decoders.video(encoded, frames=positions, pad_mode="none", **decoder_device(device))
        if rotate_frames:  # upright, on the decoder's device (the GPU on dali-gpu)
            frames = fn.rotate(frames, angle=arg("rotate_angle", types.FLOAT, 0), keep_size=False,
                               interp_type=types.INTERP_NN)
    else:
        frames = fn.external_source(name="frames", dtype=types.UINT8, ndim=4, layout="FHWC",
                                    device="cpu")
        if device == "gpu":
            frames = frames.gpu()
    order = arg("frame_order", types.INT32, 1) if reorder_frames else None
    if resize_frames:
        resize_hw = arg("resize_hw", types.FLOAT, 1)
        frames = fn.resize(frames, size=resize_hw, interp_type=types.INTERP_LINEAR, antialias=False)
    if reorder_frames:
        frames = fn.sequence_rearrange(frames, new_order=order)
    if normalise:
        mean, std = arg("mean", types.FLOAT, 1), arg("std", types.FLOAT, 1)
    else:
        mean, std = 0.0, 1.0
    w, h = int(out_size[0]), int(out_size[1])
    dtype = {"uint8": types.UINT8, "float16": types.FLOAT16, "float32": types.FLOAT}[out_dtype]
    views = []
    for k in range(num_crops):
        flip = arg(f"crop{k}_flip", types.INT32, 0)
        if not resize_crops:  # one pass: cut, mirror, normalise, cast
            window = arg(f"crop{k}_window", types.FLOAT, 1)
            views.append(fn.crop_mirror_normalize(
                frames, crop_pos_x=window[0], crop_pos_y=window[1], crop_w=window[2], crop_h=window[3],
                mirror=flip, mean=mean, std=std, output_layout="FHWC", dtype=dtype))
            continue
        start = arg(f"crop{k}_start", types.INT32, 1)
        shape = arg(f"crop{k}_shape", types.INT32, 1)
        view = fn.slice(frames, start=start, shape=shape, axis_names="WH")
        view = fn.resize(view, size=[float(h), float(w)], interp_type=types.INTERP_LINEAR, antialias=False)
        if out_dtype == "uint8":
            view = fn.flip(view, horizontal=flip)
        else:
            view = fn.crop_mirror_normalize(view, mirror=flip, mean=mean, std=std, output_layout="FHWC",
                                            dtype=dtype)
        views.append(view)
    return views[0] if num_crops == 1 else fn.cat(*views, axis_name="F")


def _dynamic_executor_available() -> bool:
    """DALI's dynamic executor (``exec_dynamic``, DALI >= 1.40): a run's outputs stay valid
    while referenced, so torch can view them through DLPack instead of copying."""
    try:
        import inspect

        from nvidia.dali import Pipeline
    except ImportError:
        return False
    return "exec_dynamic" in inspect.signature(Pipeline.__init__).parameters


OUTPUTS_OUTLIVE_RUN = _dynamic_executor_available()


def build_pipeline(*, device: str, batch_size: int, num_crops: int, out_size: Tuple[int, int],
                   out_dtype: str, source: str, normalise: bool, num_threads: int = 4,
                   device_id: Optional[int] = None, resize_frames: bool = True, reorder_frames: bool = True,
                   resize_crops: bool = True, rotate_frames: bool = False):
    """A built DALI Pipeline around ``clip_graph``, fed with ``feed`` then ``run()``.

    ``batch_size`` is the most samples a run takes (fewer may be fed). ``num_threads``:
    DALI's worker threads; on ``mixed`` the video decoder also sizes its own pool of
    concurrent NVDEC sessions from it (DALI 2.4, video_decoder_base.h). ``device_id``
    None for CPU-only pipelines. Every ``run()`` consumes the one batch fed before it
    (``exec_pipelined=False`` and a queue of one on the Python side). With DALI's dynamic
    executor (DALI >= 1.40, used where available) the C++ side is still asynchronous and
    pipelined, ``run()`` returns outputs synchronised with the host, and those outputs
    live as long as a reference to them does: torch can view them through DLPack.
    """
    from nvidia.dali import Pipeline

    dynamic = {"exec_dynamic": True} if OUTPUTS_OUTLIVE_RUN else {}
    pipe = Pipeline(batch_size=int(batch_size), num_threads=max(1, int(num_threads)),
                    device_id=device_id, prefetch_queue_depth=1,
                    exec_async=False, exec_pipelined=False, **dynamic)
    with pipe:
        pipe.set_outputs(clip_graph(device=device, num_crops=num_crops, out_size=out_size,
                                    out_dtype=out_dtype, source=source, normalise=normalise,
                                    resize_frames=resize_frames, reorder_frames=reorder_frames,
                                    resize_crops=resize_crops, rotate_frames=rotate_frames))
    pipe.build()
    return pipe


def feed(pipe, samples: Sequence[Dict[str, np.ndarray]], names: Sequence[str]):
    """Feed one batch: ``samples[i][name]`` for every external source ``name``."""
    for name in names:
        layout = "FHWC" if name == "frames" else None
        pipe.feed_input(name, [s[name] for s in samples], layout=layout)
