"""The reference executor: what a user would run without DALI.

A torch DataLoader whose worker processes decode each plan's frames with decord
(``VideoReader.get_batch``, as MMAction2's DecordDecode) or PyAV, then apply the
plan's transforms in numpy/torch on the CPU, as MMAction2's pipeline does:

    resize the whole frame to ``plan.resize_to`` (bilinear)
    -> cut ``plan.crops[k]`` -> resize the box to ``plan.out_size`` if it differs
    -> mirror where ``plan.crop_flips[k]`` -> stack crop-major ``[V, H, W, C]`` uint8.

Bilinear resizing is ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False, antialias=False)`` on float32, rounded to uint8: the same
sampling grid and weights as mmcv.imresize's cv2 ``INTER_LINEAR`` (MMAction2's
Resize), up to cv2's fixed-point rounding (at most 1 grey level). PIL's BILINEAR is
not used: it low-pass filters when shrinking, which cv2 does not.

It is the parity oracle of the DALI executors (same plan -> same frames and crops)
and the speed baseline of the benchmarks.
"""
from __future__ import annotations

import os
import threading
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.data.plan import ClipPlan

DECODERS = ("auto", "decord", "pyav")


# --------------------------------------------------------------------------- decoding


def _import_decord():
    """decord, or None where it is not installed.

    PyAV is imported first: decord ships its own FFmpeg libraries, and when they are
    loaded before PyAV's, PyAV's libvpx-vp9 encoder fails to open in that process.
    """
    import av  # noqa: F401  (load order, see above)

    try:
        import decord
    except ImportError:
        return None
    decord.bridge.set_bridge("native")
    return decord


def decode_decord(path: str, frame_indices: Sequence[int]) -> np.ndarray:
    """RGB frames ``[T, H, W, 3]`` uint8 at ``frame_indices`` (MMAction2 DecordDecode, accurate mode)."""
    decord = _import_decord()
    if decord is None:
        raise VideoDecodeError(path, "decord is not installed")
    try:
        reader = decord.VideoReader(path, num_threads=1)
        count = len(reader)
        bad = [int(i) for i in frame_indices if not 0 <= int(i) < count]
        if bad:
            raise VideoDecodeError(path, f"frame {bad[0]} requested, decord sees {count} frames")
        return reader.get_batch([int(i) for i in frame_indices]).asnumpy()
    except VideoDecodeError:
        raise
    except Exception as exc:  # decord raises DECORDError and RuntimeError subclasses
        raise VideoDecodeError(path, f"decord: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def decode_pyav(path: str, frame_indices: Sequence[int]) -> np.ndarray:
    """RGB frames ``[T, H, W, 3]`` uint8: frame ``i`` is the ``i``-th frame PyAV decodes."""
    import av

    wanted = sorted({int(i) for i in frame_indices})
    if wanted and wanted[0] < 0:
        raise VideoDecodeError(path, f"frame {wanted[0]} requested")
    frames = {}
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            want = set(wanted)
            last = wanted[-1] if wanted else -1
            count = 0
            for count, frame in enumerate(container.decode(stream), start=1):
                i = count - 1
                if i in want:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except VideoDecodeError:
        raise
    except Exception as exc:  # av.error.* and OSError
        raise VideoDecodeError(path, f"PyAV: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise VideoDecodeError(path, f"frame {missing[0]} requested, PyAV decoded {count} frames")
    return np.stack([frames[int(i)] for i in frame_indices])


def decode_rawframes(directory: str, frame_indices: Sequence[int], filename_tmpl: str) -> np.ndarray:
    """RGB frames from JPEG files ``directory/filename_tmpl.format(i)`` (MMAction2 RawFrameDecode)."""
    from PIL import Image

    out = []
    for i in frame_indices:
        file = os.path.join(directory, filename_tmpl.format(int(i)))
        try:
            with Image.open(file) as img:
                out.append(np.asarray(img.convert("RGB")))
        except (OSError, ValueError) as exc:
            raise VideoDecodeError(file, f"cannot read frame: {exc}") from None
    return np.stack(out)


def decode_frames(path: str, frame_indices: Sequence[int], decoder: str = "auto",
                  filename_tmpl: str = "img_{:05}.jpg") -> np.ndarray:
    """Decode a plan's frames: a rawframe directory with PIL, a video with decord,
    falling back to PyAV where decord is missing or fails (``decoder="auto"``)."""
    if os.path.isdir(path):
        return decode_rawframes(path, frame_indices, filename_tmpl)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    if decoder == "pyav":
        return decode_pyav(path, frame_indices)
    if decoder == "decord":
        return decode_decord(path, frame_indices)
    try:
        return decode_decord(path, frame_indices)
    except VideoDecodeError as first:
        try:
            return decode_pyav(path, frame_indices)
        except VideoDecodeError as second:
            raise VideoDecodeError(path, f"{first.reason}; {second.reason}") from None


# --------------------------------------------------------------------------- transforms


def resize_bilinear(frames: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``[T, H, W, C]`` uint8 -> ``[T, h, w, C]`` uint8 for ``size=(w, h)``.

    cv2 INTER_LINEAR sampling (half-pixel centres, no antialias), as mmcv.imresize.
    """
    w, h = int(size[0]), int(size[1])
    if frames.shape[1:3] == (h, w):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def apply_plan(frames: np.ndarray, plan: ClipPlan) -> np.ndarray:
    """Decoded frames ``[T, H, W, C]`` -> the plan's views ``[K*T, h, w, C]`` uint8, crop-major.

    Resize whole frames to ``resize_to``, cut each crop box (x1, y1, x2, y2), resize it to
    ``out_size`` if it differs, mirror where ``crop_flips`` (ClipPlan docstring).
    """
    resized = resize_bilinear(frames, plan.resize_to)
    views = []
    for (x1, y1, x2, y2), flip in zip(np.asarray(plan.crops).tolist(), np.asarray(plan.crop_flips).tolist()):
        crop = resized[:, y1:y2, x1:x2]
        crop = resize_bilinear(crop, plan.out_size)
        if flip:
            crop = crop[:, :, ::-1]
        views.append(crop)
    return np.ascontiguousarray(np.concatenate(views, axis=0))


def render_plan(plan: ClipPlan, decoder: str = "auto", filename_tmpl: str = "img_{:05}.jpg") -> np.ndarray:
    """One plan's views ``[V, H, W, C]`` uint8 (decode, then ``apply_plan``)."""
    frames = decode_frames(plan.path, plan.frame_indices, decoder, filename_tmpl)
    return apply_plan(frames, plan)


# --------------------------------------------------------------------------- DataLoader plumbing


class _PlanDataset(torch.utils.data.Dataset):
    """Map-style dataset whose keys are the plans themselves (sent to the workers by the sampler)."""

    def __init__(self, decoder: str, filename_tmpl: str):
        self.decoder, self.filename_tmpl = decoder, filename_tmpl

    def __getitem__(self, plan: ClipPlan):
        try:
            return torch.from_numpy(render_plan(plan, self.decoder, self.filename_tmpl)), None
        except VideoDecodeError as err:
            return None, (err.path, err.reason)


class _PlanSampler(torch.utils.data.Sampler):
    """Yields the plans of the current ``render`` call; refilled before each pass."""

    def __init__(self):
        self.plans: List[ClipPlan] = []

    def __iter__(self):
        return iter(list(self.plans))

    def __len__(self):
        return len(self.plans)


def _keep(item):
    return item


class ReferenceExecutor:
    """Executor on a torch DataLoader (``workers`` processes; 0 decodes in the caller).

    ``render(plans)`` hands the plans to persistent DataLoader workers, one plan per
    task, and stacks the returned views into ``[N, V, H, W, C]``.
    """

    name = "reference"

    def __init__(self, device="cpu", workers: int = 0, decoder: str = "auto",
                 filename_tmpl: str = "img_{:05}.jpg"):
        if decoder not in DECODERS:
            raise ValueError(f"reference executor: decoder {decoder!r}; expected one of {', '.join(DECODERS)}")
        if workers < 0:
            raise ValueError(f"reference executor: workers {workers}; expected 0 or more")
        self.device = torch.device(device)
        self.workers = int(workers)
        self.decoder = decoder
        self.filename_tmpl = filename_tmpl
        self._dataset = _PlanDataset(decoder, filename_tmpl)
        self._sampler = _PlanSampler()
        self._lock = threading.Lock()
        self._loader = None
        if self.workers > 0:
            self._loader = torch.utils.data.DataLoader(
                self._dataset, sampler=self._sampler, batch_size=None, collate_fn=_keep,
                num_workers=self.workers, persistent_workers=True,
                # Its own generator: each new iterator draws a worker seed, which must not
                # come from torch's global generator (that would race with dropout in the
                # training thread and break --deterministic).
                generator=torch.Generator().manual_seed(0))

    def _views(self, plans: Sequence[ClipPlan]):
        if self._loader is None:
            return [self._dataset[p] for p in plans]
        with self._lock:
            self._sampler.plans = list(plans)
            return list(self._loader)

    def render(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype="uint8") -> torch.Tensor:
        """Plans -> ``[N, V, C, H, W]``, a permuted view of ``[N, V, H, W, C]`` on ``self.device``.

        With mean/std: ``(x - mean) / std`` computed in float32 and cast to ``dtype``;
        without: raw pixels (uint8 unless ``dtype`` says otherwise).
        Raises VideoDecodeError for the first plan whose video fails.
        """
        plans = list(plans)
        if not plans:
            raise ValueError("render: expected at least one plan")
        results = self._views(plans)
        for views, error in results:
            if error is not None:
                raise VideoDecodeError(*error)
        shapes = {tuple(v.shape) for v, _ in results}
        if len(shapes) != 1:
            raise ValueError(f"render: plans give views of different shapes {sorted(shapes)}; "
                             "expected one view count and out_size per batch")
        buf = torch.empty((len(plans),) + shapes.pop(), dtype=torch.uint8,
                          pin_memory=self.device.type == "cuda")
        for i, (views, _) in enumerate(results):
            buf[i].copy_(views)
        x = buf.to(self.device, non_blocking=True)
        x = normalise(x, mean, std, dtype)
        return x.permute(0, 1, 4, 2, 3)

    def close(self):
        loader, self._loader = self._loader, None
        if loader is not None:
            it = getattr(loader, "_iterator", None)
            if it is not None:
                it._shutdown_workers()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float32": torch.float32}


def normalise(x: torch.Tensor, mean=None, std=None, dtype="uint8") -> torch.Tensor:
    """``[..., C]`` uint8 -> ``(x - mean) / std`` in ``dtype`` (float32 arithmetic).

    Without mean/std the pixels are only cast. uint8 output with mean/std is an error.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}; expected one of {', '.join(_DTYPES)}")
    out = _DTYPES[dtype]
    if mean is None and std is None:
        return x if out == torch.uint8 else x.to(out)
    if mean is None or std is None:
        raise ValueError("normalise: give both mean and std, or neither")
    if out == torch.uint8:
        raise ValueError("normalise: mean/std need a float dtype (float16, bfloat16, float32), got uint8")
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device)
    return ((x.float() - m) / s).to(out)
