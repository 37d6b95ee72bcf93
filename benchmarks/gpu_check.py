"""dali-gpu on the GPU: checks that can fail, and its speed beside dali-cpu, interleaved.

    python benchmarks/gpu_check.py [FOLDER] [--numbered 4] [--device cuda:0] [--out DIR]

Every check prints PASS, FAIL, SKIP or UNPROVEN with what it compared, and goes into
``--out``/gpu_check.json as it finishes (the checks planned are listed there first, so a
run cut short shows what it did not reach); the exit status is 1 where any check failed
(2: could not run at all). Each check, and the GPU failure it exists to catch:

- ``numbered``: clips whose frames carry their own number (written here, ``--numbered``;
  the first is 340x256, as Kinetics is: not a multiple of 16, so NVDEC's coded size differs
  from the display size), rendered uncropped by dali-gpu: the numbers read back are the
  plan's frame indices (frames decoded from the wrong place, or out of order).
- ``sliced_vs_whole``: for every clip, dali-gpu fed GOP slices (its default) and fed whole
  files give the same bytes (a slice that decodes differently from the file).
- ``gpu_vs_cpu``: every dali-gpu view against the dali-cpu view of the same plan, twin by
  twin (same frame and same crop): each view is nearest to its twin (crops or frames
  swapped), the clip's mean |difference| is at most ``COLOUR_BOUND`` levels (a colour
  range or matrix error; what DALI's colour conversion explains is below it), and no view
  is shifted against its twin by more than ``SHIFT_BOUND`` px (a half-pixel grid offset, a
  crop placed from the coded instead of the display width).
- ``mixed_batch``: one batch of a clip NVDEC decodes and one it cannot (MJPEG: the frames
  path): both give their own frame numbers, in plan order (the two runs put back wrongly).
- ``bfloat16``: a bfloat16 batch is the float32 batch rounded (relative error <= 2^-8).
- ``view_integrity``: batches handed over as views of DALI's buffers to a consumer that
  falls behind (a long kernel queued before each training step, the batch dropped as soon
  as the step is queued) have the checksums of the same batches handed over as copies (a
  buffer reused while queued kernels still read it). A control run with the hand-off guard
  bypassed must FAIL: the check counts only then (else UNPROVEN: this run could not have
  caught the race; on the CPU there is no queue, so it is always UNPROVEN there).
- ``pipeline_failure``: a failure of the whole pipeline (the device's memory taken) is one
  line naming what failed, not a video (``not triggered`` where DALI still found memory).

Then clips/s of dali-gpu (slices), dali-gpu (whole files) and dali-cpu on the same plans,
measured interleaved (tsn_dali.bench.interleave), with frames fed per clip as counted.

``--device cpu`` dry-runs everything on the CPU: dali-cpu's own decoder (VP9 numbered clips)
stands where dali-gpu would be, and dali-cpu's frames path (decord or PyAV) where dali-cpu
would be, so gpu_vs_cpu compares two colour conversions there too. ``--inject-fault F``
feeds the checks a wrong answer: ``swap-crop``, ``colour-range``, ``shift``, ``coded-size``
model a GPU failure (every dali-gpu output gets it, and the check meant for it must fail),
``stale-buffer`` what a consumer reads from a reused buffer (the next batch), and
``swap-frame`` / ``flip-byte`` corrupt the candidate of every comparison.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
GPU_FAULTS = ("swap-crop", "colour-range", "shift", "coded-size")  # what a GPU could get wrong
FAULTS = ("none", "swap-frame", "flip-byte", *GPU_FAULTS, "stale-buffer")
CHECKS = ("numbered", "sliced_vs_whole", "gpu_vs_cpu", "mixed_batch", "bfloat16", "view_integrity",
          "speed", "pipeline_failure")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=None,
                    help="videos to check (searched recursively); without it, the numbered clips alone")
    ap.add_argument("--numbered", type=int, default=4, help="numbered clips to write and check (0: none)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--decode-workers", type=int, default=8)
    ap.add_argument("--view-batches", type=int, default=6, help="batches of the view-integrity check")
    ap.add_argument("--view-size", type=int, default=112, help="crop size of the view-integrity check")
    ap.add_argument("--lag-ms", type=float, default=50.0,
                    help="view integrity: how far behind the consumer falls before each step (GPU only)")
    ap.add_argument("--max-videos", type=int, default=16, help="videos of FOLDER checked (the first ones)")
    ap.add_argument("--device", default="cuda:0", help="dali-gpu's device; 'cpu' dry-runs on dali-cpu")
    ap.add_argument("--checks", default="clips,mixed,bf16,view,failure,speed")
    ap.add_argument("--inject-fault", choices=FAULTS, default="none",
                    help="feed the checks a wrong answer (module docstring): each must turn its check to FAIL")
    ap.add_argument("--out", default=None, help="folder for gpu_check.json (written as checks finish)")
    return ap


if __name__ == "__main__":  # --help and a bad command line answer before torch is imported
    build_parser().parse_args()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tsn_dali.data.index.video_index import probe_video  # noqa: E402
from tsn_dali.data.media.videoio import read_frame_number, video_extension, write_numbered_video  # noqa: E402
from tsn_dali.data.plan.clip_plan import ClipPlan, StreamFacts  # noqa: E402
from tsn_dali.errors import one_line  # noqa: E402

# gpu_vs_cpu's bounds. DALI converts NVDEC's YUV to RGB itself (BT.601, chroma bilinear at
# centred sites, DALI 2.4 color_space.cu); dali-cpu's frames path gets swscale's RGB (PyAV or
# decord). Measured on a 2-core CPU on 2026-12-07: that conversion written out in numpy on
# PyAV's YUV planes, against PyAV's RGB, at the 8 TSN test frames of 13 clips (the 8 real
# clips of TSN_DALI_TEST_VIDEOS, 4 K400-like synthetic clips, a numbered clip): mean
# |difference| per clip 0.01-1.79 levels (per frame at most 2.19); DALI's own CPU decoder
# (the same conversion) against PyAV's RGB on VP9 copies of 5 of them: 1.22-1.56, and
# 0.03-0.06 from the numpy model. Through the executors, with this script's plans and
# views_match: dali-cpu's decoder against its frames path on those VP9 copies 1.22-1.72
# (shift at most 0.04 px); H.264 through the frames path against the reference executor,
# 12 clips: 0.00 (one decoder). A limited-range picture shown as full range (the
# colour-range fault) differs by 6.7-16.8 per clip; a half-pixel shift reads 0.29-0.51 px.
COLOUR_BOUND = 3.0  # levels (0-255), mean |gpu - cpu| over a clip's views
SHIFT_BOUND = 0.15  # pixels, per view and axis
LOOKALIKE = 2 * COLOUR_BOUND  # views whose RMS difference is within this look the same (a tie passes)


# --------------------------------------------------------------------------- the checks (pure)


def frames_match(got: Sequence[int], expected: Sequence[int]) -> Optional[str]:
    """None where the frame numbers read back are the plan's, else what differs."""
    got, expected = [int(g) for g in got], [int(e) for e in expected]
    return None if got == expected else f"read {got}, expected {expected}"


def identical(a: torch.Tensor, b: torch.Tensor) -> Optional[str]:
    """None where ``a`` and ``b`` are the same bytes, else where they first differ."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
    diff = (a != b)
    if not bool(diff.any()):
        return None
    first = [int(i) for i in torch.nonzero(diff)[0]]
    return f"{int(diff.sum())} value(s) differ, first at {first}"


def view_keys(plan: ClipPlan) -> List[Tuple[int, int]]:
    """(crop, frame index) of each view, crop-major (view k*T + t: crop k of frame t)."""
    return [(k, int(f)) for k in range(len(plan.crops)) for f in plan.frame_indices]


def shift_estimate(a: torch.Tensor, b: torch.Tensor) -> Tuple[float, float]:
    """(dx, dy): the sub-pixel shift of view ``a`` against view ``b`` (``[C, H, W]``), by
    least squares on the luma: ``a - b ~ dx * db/dx + dy * db/dy`` (central differences,
    a little ridge so that an axis without edges reads 0). (0, 0) for a flat view."""
    a, b = a.double().mean(0), b.double().mean(0)
    gx = (b[1:-1, 2:] - b[1:-1, :-2]) / 2
    gy = (b[2:, 1:-1] - b[:-2, 1:-1]) / 2
    d = (a - b)[1:-1, 1:-1]
    sxx, syy, sxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    if sxx + syy < d.numel():  # mean gradient energy below one level squared: nothing to align
        return 0.0, 0.0
    ridge = 0.005 * (sxx + syy)
    m = np.array([[sxx + ridge, sxy], [sxy, syy + ridge]])
    r = np.array([float((gx * d).sum()), float((gy * d).sum())])
    dx, dy = np.linalg.solve(m, r)
    return float(dx), float(dy)


def views_match(cand: torch.Tensor, ref: torch.Tensor, plan: ClipPlan) -> Tuple[Optional[str], dict]:
    """gpu_vs_cpu for one clip: ``cand`` (dali-gpu) and ``ref`` (dali-cpu), uint8 ``[V, C, H, W]``
    of ``plan``. (None or what is wrong, figures). Wrong where a view is nearer (L2) to
    another reference view than to its twin (same crop and frame), unless that view looks
    the same as the twin (RMS difference <= LOOKALIKE: a repeated or unchanged frame), where
    a view is shifted against its twin by more than SHIFT_BOUND px on an axis, or where the
    mean |difference| exceeds COLOUR_BOUND."""
    if cand.shape != ref.shape:
        return f"shape {tuple(cand.shape)} vs {tuple(ref.shape)}", {}
    keys = view_keys(plan)
    diff = (cand.int() - ref.int()).abs().float()
    shifts = [shift_estimate(cand[v], ref[v]) for v in range(cand.shape[0])]
    worst = max(range(len(shifts)), key=lambda v: max(abs(shifts[v][0]), abs(shifts[v][1])))
    figures = {"mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
               "max_shift_px": round(max(abs(shifts[worst][0]), abs(shifts[worst][1])), 4)}
    flat = ref.flatten(1).float()
    d = torch.cdist(cand.flatten(1).float(), flat)
    alike = torch.cdist(flat, flat) <= LOOKALIKE * flat.shape[1] ** 0.5  # RMS difference
    for v, key in enumerate(keys):
        twin = v  # the same plan on both sides: view v is (crop k, frame t) on each
        nearer = [j for j in range(len(keys)) if d[v, j] < d[v, twin] and not alike[j, twin]]
        if nearer:
            j = min(nearer, key=lambda i: float(d[v, i]))
            return (f"view {v} (crop {key[0]}, frame {key[1]}) is nearer to view {j} "
                    f"(crop {keys[j][0]}, frame {keys[j][1]}) than to its twin"), figures
    if figures["max_shift_px"] > SHIFT_BOUND:
        dx, dy = shifts[worst]
        return (f"view {worst} (crop {keys[worst][0]}, frame {keys[worst][1]}) is shifted by "
                f"({dx:+.2f}, {dy:+.2f}) px against its twin (at most {SHIFT_BOUND:g})"), figures
    if figures["mean_abs_diff"] > COLOUR_BOUND:
        return (f"mean |difference| {figures['mean_abs_diff']:.2f} levels, above the {COLOUR_BOUND:g} "
                "that colour conversion explains"), figures
    return None, figures


def bf16_close(bf16: torch.Tensor, f32: torch.Tensor) -> Optional[str]:
    """None where the bfloat16 batch is the float32 one rounded (|d| <= 2^-8 |x| + 1e-6)."""
    d = (bf16.float() - f32.float()).abs()
    bound = f32.float().abs() * 2.0 ** -8 + 1e-6
    bad = d > bound
    return None if not bool(bad.any()) else f"{int(bad.sum())} value(s) beyond bfloat16 rounding (max |d| {float(d.max()):.4g})"


def checksums_agree(view: Sequence[float], copy: Sequence[float]) -> Optional[str]:
    """None where each batch handed over as a view summed to what its copy did."""
    if len(view) != len(copy):
        return f"{len(view)} view batches, {len(copy)} copies"
    bad = [i for i, (a, b) in enumerate(zip(view, copy)) if a != b]
    return None if not bad else f"batch(es) {bad} differ (view {view[bad[0]]!r} vs copy {copy[bad[0]]!r})"


def integrity_verdict(view: Sequence[float], copy: Sequence[float],
                      control: Optional[Sequence[float]]) -> Tuple[str, str]:
    """(status, detail) of view_integrity: FAIL where the guarded views differ from the
    copies; PASS only where they agree and the control (guard bypassed) differs, i.e. this
    run could have caught the race; else UNPROVEN (``control`` None: not run)."""
    problem = checksums_agree(view, copy)
    if problem:
        return "FAIL", problem
    if control is None:
        return "UNPROVEN", "views agree with copies; the control (guard bypassed) could not run here"
    caught = checksums_agree(control, copy)
    if caught is None:
        return "UNPROVEN", ("views agree with copies, but so did the control with the guard bypassed: "
                            "this run could not have caught the race")
    return "PASS", f"views agree with copies; the control with the guard bypassed failed as it must ({caught})"


# --------------------------------------------------------------------------- faults


def corrupt(tensor: torch.Tensor, fault: str) -> torch.Tensor:
    """The candidate of a comparison with ``swap-frame`` (views 0 and 1 swapped) or
    ``flip-byte`` (one value changed by one); any other fault leaves it as it is."""
    if fault not in ("swap-frame", "flip-byte"):
        return tensor
    out = tensor.contiguous().clone()
    if fault == "swap-frame" and out.shape[0] > 1:
        out[[0, 1]] = out[[1, 0]]
        if torch.equal(out, tensor):  # two identical views: change a value instead
            fault = "flip-byte"
    if fault == "flip-byte":
        flat = out.view(-1)
        flat[0] = flat[0] + 1 if flat[0] < 100 else flat[0] - 1
    return out


def _displaced(view: torch.Tensor, dx: int) -> torch.Tensor:
    """``view`` [C, H, W] showing what lies ``dx`` px to its right (edge columns repeated)."""
    w = view.shape[-1]
    cols = (torch.arange(w) + dx).clamp(0, w - 1)
    return view[..., cols]


def gpu_fault(views: torch.Tensor, fault: str, plan: ClipPlan) -> torch.Tensor:
    """``views`` (uint8 ``[V, C, H, W]`` of ``plan``, as dali-gpu rendered them) as a GPU
    that got one thing wrong would render them:

    - ``swap-crop``: the first and last crops' branches swapped;
    - ``colour-range``: limited-range video shown as full range (``16 + x * 219 / 255``);
    - ``shift``: the sampling grid half a pixel off in x and y;
    - ``coded-size``: crop boxes placed in the coded width (the next multiple of 16)
      instead of the display width, as a normalised crop position would be, padding
      repeating the last column (a whole frame, or a width already a multiple of 16,
      is unchanged).
    Any other fault leaves them as they are."""
    if fault not in GPU_FAULTS:
        return views
    out = views.clone()
    num_crops, t = len(plan.crops), len(plan.frame_indices)
    if fault == "swap-crop" and num_crops > 1:
        last = slice((num_crops - 1) * t, num_crops * t)
        out[:t], out[last] = views[last], views[:t]
    elif fault == "colour-range":
        out = (16 + views.float() * (219 / 255)).round().to(views.dtype)
    elif fault == "shift":
        x = views.float()
        x = (x + torch.cat([x[..., 1:], x[..., -1:]], -1)) / 2
        x = (x + torch.cat([x[..., 1:, :], x[..., -1:, :]], -2)) / 2
        out = x.round().to(views.dtype)
    elif fault == "coded-size":
        width, rw = int(plan.orig_size[0]), int(plan.resize_to[0])
        pad = math.ceil(width / 16) * 16 - width
        for k, ((x1, _, x2, _), flip) in enumerate(zip(np.asarray(plan.crops).tolist(), plan.crop_flips)):
            room = rw - (x2 - x1)
            if pad == 0 or room <= 0:
                continue
            dx = round(x1 * pad / room * views.shape[-1] / (x2 - x1))  # in view pixels
            for v in range(k * t, (k + 1) * t):
                view = views[v].flip(-1) if flip else views[v]
                moved = _displaced(view, dx)
                out[v] = moved.flip(-1) if flip else moved
    return out


def stale(sums: Sequence[float]) -> List[float]:
    """What a consumer reads where each batch's buffer was reused by the next batch."""
    sums = list(sums)
    return sums[1:] + sums[:1] if len(sums) > 1 else [s + 1.0 for s in sums]


# --------------------------------------------------------------------------- plans


def make_plan(path: str, num_frames: int, size, stream: StreamFacts, num_segments: int = 8,
              short_side: int = 256, crop: int = 224) -> ClipPlan:
    """TSN test sampling (segment centres) plus a repeated and an out-of-order index; short
    side ``short_side``; three ``crop`` crops, the middle one mirrored."""
    w, h = size
    seg = num_frames / num_segments
    idx = [int(seg / 2 + seg * i) for i in range(num_segments)]
    idx[-1], idx[-2] = idx[1], idx[-1]
    rw, rh = (int(w * short_side / h + 0.5), short_side) if w >= h else (short_side, int(h * short_side / w + 0.5))
    c = min(crop, rw, rh)
    boxes = [(0, 0, c, c), ((rw - c) // 2, (rh - c) // 2, (rw - c) // 2 + c, (rh - c) // 2 + c),
             (rw - c, rh - c, rw, rh)]
    return ClipPlan(sample=0, path=path, label=0, num_frames=num_frames, orig_size=(w, h),
                    frame_indices=np.asarray(idx, np.int32), resize_to=(rw, rh),
                    crops=np.asarray(boxes, np.int32), crop_flips=np.array([False, True, False]),
                    out_size=(c, c), stream=stream)


def whole_frame_plan(plan: ClipPlan) -> ClipPlan:
    """The same frames, uncropped and unflipped (for reading frame numbers)."""
    w, h = plan.orig_size
    return ClipPlan(sample=0, path=plan.path, label=0, num_frames=plan.num_frames, orig_size=(w, h),
                    frame_indices=plan.frame_indices, resize_to=(w, h), crops=np.array([[0, 0, w, h]], np.int32),
                    crop_flips=np.array([False]), out_size=(w, h), stream=plan.stream)


def read_numbers(views: torch.Tensor) -> List[int]:
    return [read_frame_number(v.permute(1, 2, 0).cpu().numpy()) for v in views]


# --------------------------------------------------------------------------- view integrity


@contextlib.contextmanager
def bypassed_guard():
    """The control of view_integrity: loaders built inside hand batches out through a guard
    that holds nothing (as on the CPU), so a batch's memory goes back to DALI as soon as
    the consumer drops it, whatever its queued kernels still read."""
    from tsn_dali.data.render import loader as loader_module
    from tsn_dali.data.render.handoff import HandoffGuard

    class Bypassed(HandoffGuard):
        def __init__(self, device, mode: str = "view", new_event=None, max_held: int = 4):
            super().__init__("cpu", mode)

    saved = loader_module.HandoffGuard
    loader_module.HandoffGuard = Bypassed
    try:
        yield
    finally:
        loader_module.HandoffGuard = saved


def integrity_sums(batches: Iterable, consume: Callable, read: Callable) -> List[float]:
    """Feed each batch to ``consume`` (which queues its work and returns a handle to the
    batch's checksum as the consumer saw it), dropping the batch at once; ``read`` the
    handles at the end."""
    handles = []
    for batch in batches:
        handles.append(consume(batch))
        del batch  # nothing of ours keeps it alive while the queued work reads it
    return read(handles)


class LaggingConsumer:
    """A trainer that falls behind: before each step a kernel that spins ``lag_ms`` (at a
    2 GHz clock; longer on a slower one) is queued on the current stream, then the
    training step, then the checksum of the batch as the step saw it; nothing waits."""

    def __init__(self, step, device: torch.device, lag_ms: float):
        self.step, self.device, self.cycles = step, device, int(lag_ms * 2e6)

    def __call__(self, batch):
        if self.device.type == "cuda" and self.cycles > 0:
            torch.cuda._sleep(self.cycles)
        self.step(batch.clips, batch.labels)
        return batch.clips.double().sum()

    def read(self, handles) -> List[float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return [float(h) for h in handles]


class ViewIntegrity:
    """view_integrity: the same batches (same seed, epoch and plans) handed over as views
    (the guard on), as copies, and as views with the guard bypassed (the control), each to
    a lagging consumer (LaggingConsumer); checksums compared (integrity_verdict). The
    control runs last of all the checks (``run("control")``, then ``record`` again): a
    buffer reused under a reading kernel could take the process down, and nothing else
    may be lost with it."""

    def __init__(self, device: str, videos: Sequence[str], fault: str, args):
        from tsn_dali.config import load_recipe
        from tsn_dali.data.index import build_index

        self.device, self.videos, self.fault, self.args = device, list(videos), fault, args
        self.dev = torch.device(device if device != "cpu" else "cpu")
        self.recipe = load_recipe("recipes/k400_r50.yaml", [
            "model.backbone=resnet18", "model.num_classes=8", f"data.input_size={args.view_size}",
            f"data.short_side={args.view_size + 16}", "data.num_segments=4", "loader.dtype=float32"])
        self.index = build_index(self.videos, cache_dir=None, workers=2, progress=False)
        self.sums = {}

    def run(self, name: str) -> None:
        """Checksums of the ``name`` run: "view", "copy" or "control" (views, guard bypassed)."""
        from tsn_dali.bench.measure import make_loader, make_train_step
        from tsn_dali.data.render.executors.dali import DaliExecutor
        from tsn_dali.models import build_model

        a = self.args
        guard = bypassed_guard if name == "control" else contextlib.nullcontext
        with DaliExecutor(self.device, num_threads=a.threads, decode_workers=a.decode_workers) as ex, guard():
            torch.manual_seed(0)
            step = make_train_step(build_model(self.recipe.model), self.recipe, self.dev)
            consumer = LaggingConsumer(step, self.dev, a.lag_ms)
            loader = make_loader(self.recipe, "train", self.videos, self.index, ex, a.batch, a.view_batches, self.dev,
                                 handoff="copy" if name == "copy" else "view")
            loader.set_epoch(3)
            self.sums[name] = integrity_sums(loader, consumer, consumer.read)
            loader.close()

    def record(self, checks) -> None:
        view = self.sums["view"]
        if self.fault in ("swap-frame", "flip-byte"):
            view = [s + (1.0 if i == 0 else 0.0) for i, s in enumerate(view)]
        elif self.fault == "stale-buffer":
            view = stale(view)
        status, detail = integrity_verdict(view, self.sums["copy"], self.sums.get("control"))
        if status == "UNPROVEN" and "control" not in self.sums:
            detail = ("views agree with copies; the control (guard bypassed) runs after every other check"
                      if self.dev.type == "cuda" else
                      "views agree with copies; the CPU queues nothing, so the control (guard bypassed) cannot fail "
                      "here (tests/test_gpu_check.py shows the check failing on a stale buffer with stand-in streams)")
        lag = f", the consumer {self.args.lag_ms:g} ms behind a step" if self.dev.type == "cuda" else ""
        checks.add("view_integrity", f"{len(view)} batches of {self.args.batch}{lag}", detail, status=status,
                   sums=dict(self.sums), replace=True)


# --------------------------------------------------------------------------- the run


class Checks:
    """Records each check as it finishes (stdout and gpu_check.json)."""

    def __init__(self, out: Optional[Path], planned: Sequence[str] = ()):
        self.out, self.results = out, {"planned": list(planned), "checks": [], "speed": None, "complete": False}
        self.save()

    def add(self, name: str, subject: str, problem: Optional[str], status: Optional[str] = None,
            replace: bool = False, **extra) -> None:
        """Record a check (``replace``: in place of the earlier record of the same check)."""
        if status is None:
            status = "PASS" if problem is None else ("SKIP" if problem.startswith("not ") else "FAIL")
        if replace:
            self.results["checks"] = [c for c in self.results["checks"] if c["check"] != name]
        self.results["checks"].append({"check": name, "subject": subject, "status": status,
                                       "detail": problem or "", **extra})
        print(f"{status} {name:16s} {subject}" + (f": {problem}" if problem else ""), flush=True)
        self.save()

    def save(self) -> None:
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            tmp = self.out / "gpu_check.json.tmp"
            tmp.write_text(json.dumps(self.results, indent=1))
            os.replace(tmp, self.out / "gpu_check.json")  # a run killed mid-write keeps the last file

    @property
    def failed(self) -> int:
        return sum(c["status"] == "FAIL" for c in self.results["checks"])


def executors(device: str, args):
    """dali-gpu fed GOP slices and whole files, and dali-cpu; on ``--device cpu`` dali-cpu's
    own decoder stands for dali-gpu and its frames path (decord/PyAV) for dali-cpu."""
    from tsn_dali.data.render.executors.dali import DaliExecutor

    kw = dict(num_threads=args.threads, decode_workers=args.decode_workers)
    return {"sliced": DaliExecutor(device, **kw), "whole": DaliExecutor(device, slice_gops=False, **kw),
            "cpu": DaliExecutor("cpu", decode="mmaction" if device == "cpu" else "native", **kw)}


def numbered_clips(folder: str, count: int, codec: str) -> List[str]:
    """``count`` numbered clips: the first 340x256 (Kinetics' size; its coded width is 352),
    the rest 320x240, with the encoder's GOP, keyframes every 12, every frame, every 250."""
    ext = video_extension(codec)
    return [write_numbered_video(os.path.join(folder, f"numbered_{i}{ext}"), 64, *((340, 256) if i == 0 else (320, 240)),
                                 codec=codec, gop=[None, 12, 1, 250][i % 4]) for i in range(count)]


def check_clips(checks: Checks, ex, videos, numbered, codecs, fault: str) -> list:
    plans = []
    for path in videos:
        info = probe_video(path)
        name = os.path.basename(path)
        if not info.ok or info.codec not in codecs:
            print(f"skip {name} (codec {info.codec or 'unreadable'}{', ' + info.error if info.error else ''})")
            continue
        plan = make_plan(path, info.num_frames, info.display_size, StreamFacts.from_info(info))
        plans.append(plan)
        try:
            sliced = gpu_fault(ex["sliced"].render([plan])[0].cpu(), fault, plan)
            whole = gpu_fault(ex["whole"].render([plan])[0].cpu(), fault, plan)
            on_cpu = ex["cpu"].render([plan])[0].cpu()
        except Exception as exc:  # noqa: BLE001 - a check that cannot run fails, saying why
            checks.add("render", name, one_line(exc, named=True))
            continue
        checks.add("sliced_vs_whole", name, identical(corrupt(sliced, fault), whole))
        problem, figures = views_match(corrupt(sliced, fault), on_cpu, plan)
        checks.add("gpu_vs_cpu", f"{name} ({info.width}x{info.height})", problem, **figures)
        if path in numbered:
            frame_plan = whole_frame_plan(plan)
            got = read_numbers(gpu_fault(ex["sliced"].render([frame_plan])[0].cpu(), fault, frame_plan))
            if fault == "swap-frame":
                got[0], got[1] = got[1], got[0]
            elif fault == "flip-byte":
                got[0] += 1
            checks.add("numbered", f"{name} ({info.width}x{info.height})",
                       frames_match(got, plan.frame_indices.tolist()))
    return plans


def check_mixed(checks: Checks, ex, folder: str, fault: str, device: str) -> None:
    """A batch of a clip the device's decoder reads and one it does not (the frames path):
    H.264 and MJPEG on a GPU; VP9 and H.264 on the CPU."""
    first, second = ("h264", "mjpeg") if device != "cpu" else ("vp9", "h264")
    decodable = write_numbered_video(os.path.join(folder, "mixed_a" + video_extension(first)), 24, 160, 128,
                                     codec=first)
    other = write_numbered_video(os.path.join(folder, "mixed_b" + video_extension(second)), 24, 160, 128,
                                 codec=second)
    plans = []
    for path in (decodable, other):
        info = probe_video(path)
        plans.append(whole_frame_plan(make_plan(path, info.num_frames, info.display_size,
                                                StreamFacts.from_info(info))))
    routes = [ex["sliced"].route(p)[0] for p in plans]
    out = ex["sliced"].render(plans)
    problems = []
    for i, plan in enumerate(plans):
        got = read_numbers(corrupt(gpu_fault(out[i].cpu(), fault, plan), fault))
        why = frames_match(got, plan.frame_indices.tolist())
        if why:
            problems.append(f"sample {i}: {why}")
    if sorted(routes) != ["decoder", "frames"]:
        problems.append(f"routes {routes}: expected one decoder and one frames-path sample")
    checks.add("mixed_batch", f"{os.path.basename(decodable)} + {os.path.basename(other)}",
               "; ".join(problems) or None, routes=routes)


def check_bf16(checks: Checks, ex, plan: ClipPlan, fault: str) -> None:
    f32 = ex["sliced"].render([plan], mean=MEAN, std=STD, dtype="float32")[0].cpu()
    bf16 = ex["sliced"].render([plan], mean=MEAN, std=STD, dtype="bfloat16")[0].cpu()
    checks.add("bfloat16", os.path.basename(plan.path), bf16_close(corrupt(bf16, fault), f32))


def check_pipeline_failure(checks: Checks, ex, plan: ClipPlan, device: str) -> None:
    """Take the device's memory, then render: the failure must be one line naming the
    pipeline, not a video (PipelineFailure)."""
    from tsn_dali.data.errors import PipelineFailure, VideoDecodeError

    if device == "cpu":
        checks.add("pipeline_failure", "cpu", "not triggered (the CPU has no device memory to take)")
        return
    hog = []
    try:
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        while free > 64 << 20:
            hog.append(torch.empty(int(free * 0.9), dtype=torch.uint8, device=device))
            free, _ = torch.cuda.mem_get_info(torch.device(device))
        big = make_plan(plan.path, plan.num_frames, plan.orig_size, plan.stream, num_segments=8,
                        short_side=2048, crop=2048)
        ex["whole"].render([big] * 16, mean=MEAN, std=STD, dtype="float32")
        problem = "not triggered (DALI found memory for a batch of 16 2048 px clips)"
    except PipelineFailure as exc:
        problem = None if "\n" not in str(exc) else f"more than one line: {exc!r}"
        print(f"  said: {exc}")
    except VideoDecodeError as exc:
        problem = f"charged to a video: {exc}"
    except Exception as exc:  # noqa: BLE001
        problem = f"{type(exc).__name__}, not PipelineFailure: {one_line(exc)}"
    finally:
        del hog
        torch.cuda.empty_cache()
    checks.add("pipeline_failure", "device memory taken", problem)


def speed(checks: Checks, ex, plans, args) -> None:
    """clips/s of each executor on batches of the same plans, interleaved."""
    from tsn_dali.bench.interleave import compare, run_rounds

    plans = (plans * ((args.batch * 4) // max(len(plans), 1) + 1))[: max(args.batch * 4, len(plans))]
    batches = [plans[i:i + args.batch] for i in range(0, len(plans), args.batch)]
    batches = [b for b in batches if len(b) == args.batch] or [plans[:args.batch]]

    def system(executor):
        def window(round_no):
            executor.render(batches[0], mean=MEAN, std=STD, dtype="float16")  # untimed
            if executor.device.type == "cuda":
                torch.cuda.synchronize(executor.device)
            t0 = time.perf_counter()
            for b in batches:
                executor.render(b, mean=MEAN, std=STD, dtype="float16")
            if executor.device.type == "cuda":
                torch.cuda.synchronize(executor.device)
            return sum(len(b) for b in batches) / (time.perf_counter() - t0)
        return window

    gpu = "dali-gpu" if args.device != "cpu" else "dali-cpu"
    names = {f"{gpu} slices": ex["sliced"], f"{gpu} whole files": ex["whole"],
             "dali-cpu" if args.device != "cpu" else "dali-cpu frames path": ex["cpu"]}
    before = {k: dict(e.stats) for k, e in names.items()}
    rates, errors, orders, _ = run_rounds({k: system(e) for k, e in names.items()}, args.rounds, warmup=1)
    rows = compare(rates, next(iter(names)))
    for row in rows:
        e = names[row["system"]]
        fed = e.stats.get("frames_fed", 0) - before[row["system"]].get("frames_fed", 0)
        decoded = e.stats.get("decoder_clips", 0) - before[row["system"]].get("decoder_clips", 0)
        row["frames_fed_per_clip"] = fed / decoded if decoded else None
        print(f"speed {row['system']:22s} {row['clips_per_s']['median']:8.1f} clips/s "
              f"({row['clips_per_s']['min']:.1f}-{row['clips_per_s']['max']:.1f}), {row.get('ratio', 0):.2f}x, "
              f"{row.get('verdict', 'no baseline')}; frames fed/clip {row['frames_fed_per_clip']}")
    checks.results["speed"] = {"rows": rows, "errors": errors, "orders": orders, "batch": args.batch}
    checks.save()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; dali-gpu needs one (--device cpu dry-runs on dali-cpu)", file=sys.stderr)
        return 2
    wanted = set(args.checks.split(","))
    groups = {"clips": ("numbered", "sliced_vs_whole", "gpu_vs_cpu"), "mixed": ("mixed_batch",),
              "bf16": ("bfloat16",), "view": ("view_integrity",), "speed": ("speed",),
              "failure": ("pipeline_failure",)}
    checks = Checks(Path(args.out) if args.out else None,
                    [c for c in CHECKS if any(c in groups[g] for g in wanted if g in groups)])
    codec = "vp9" if args.device == "cpu" else "h264"
    codecs = ("vp9",) if args.device == "cpu" else ("h264", "hevc", "vp9", "vp8", "mpeg4", "av1")
    tmp = tempfile.mkdtemp(prefix="gpu_check_")
    numbered = numbered_clips(tmp, args.numbered, codec)
    found = Path(args.folder).rglob("*") if args.folder else []
    videos = sorted(str(p) for p in found if p.suffix.lower() in EXTS)[: args.max_videos]
    ex = executors(args.device, args)
    try:
        plans = check_clips(checks, ex, numbered + videos, set(numbered), codecs, args.inject_fault) \
            if "clips" in wanted else []
        if "mixed" in wanted:
            check_mixed(checks, ex, tmp, args.inject_fault, args.device)
        if "bf16" in wanted and plans:
            check_bf16(checks, ex, plans[0], args.inject_fault)
        integrity = ViewIntegrity(args.device, numbered, args.inject_fault, args) \
            if "view" in wanted and numbered else None
        if integrity:
            integrity.run("view")
            integrity.run("copy")
            integrity.record(checks)
        if "speed" in wanted and plans:
            speed(checks, ex, plans, args)
        if "failure" in wanted and plans:  # it takes the device's memory for a moment
            check_pipeline_failure(checks, ex, plans[0], args.device)
        if integrity and integrity.dev.type == "cuda":  # last of all (ViewIntegrity)
            integrity.run("control")
            integrity.record(checks)
    finally:
        for e in ex.values():
            e.close()
    checks.results["complete"] = True
    checks.save()
    total = len(checks.results["checks"])
    passed = sum(c["status"] == "PASS" for c in checks.results["checks"])
    print(f"gpu_check: {passed} of {total} checks passed" +
          (f"; {checks.failed} FAILED" if checks.failed else ""), flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
