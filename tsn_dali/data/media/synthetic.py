"""A generated, labelled video dataset in MMAction2's video-list layout.

Each class is a coloured shape with a fill texture (``red_circle``, ``blue_triangle_striped``,
...), so one frame is enough to tell classes apart; across frames the object moves,
rotates and changes size over a random background (two-colour gradient plus
low-frequency blotches, drifting), with pixel noise on every frame. Everything a video
shows comes from ``numpy.random.default_rng([seed, split, index])``, so a dataset is
the same for the same parameters, whatever the number of worker processes.

Layout under ``out`` (MMAction2's Kinetics layout, with list paths relative to the
split's video folder)::

    videos_train/<class>/<class>_00000.mp4   videos_val/<class>/...
    demo_train_list_videos.txt               demo_val_list_videos.txt   ("path label" lines)
    label_map.txt                            (one class name a line, line i = class i)
    synthetic.json                           (the parameters; written last)

A second call with the same parameters finds ``synthetic.json`` and every file in
place and writes nothing (``generate`` returns ``written == 0``).

CLI (also for benchmark sets, e.g. Kinetics-like 340x256, 300 frames, long GOP)::

    python -m tsn_dali.data.media.synthetic OUT --videos N --frames F --size WxH \\
        --codec h264|vp9|hevc|mpeg4 --gop G --fps 30 --classes C --seed S
"""
from __future__ import annotations

import argparse
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tsn_dali import cli
from tsn_dali.data.media.videoio import CODECS, write_video

MANIFEST = "synthetic.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val")

# Class vocabulary: shape x colour x fill. None of the shapes turns into another under
# rotation or a horizontal flip (the train pipeline flips), so a class stays a class.
SHAPES = ("circle", "square", "triangle", "cross", "ring", "star")
COLOURS = {  # eight hues 45 degrees apart, full saturation
    "red": (225, 35, 35),
    "orange": (235, 140, 20),
    "yellow": (225, 225, 30),
    "green": (35, 190, 50),
    "cyan": (30, 205, 215),
    "blue": (40, 70, 235),
    "purple": (135, 45, 220),
    "magenta": (220, 40, 170),
}
FILLS = ("solid", "striped", "checker")

# The first eight classes (the demo's) differ in colour and in shape, all solid.
_FIRST = [(c, SHAPES[i % 4], "solid") for i, c in enumerate(COLOURS)]


def class_specs(num_classes: int) -> List[Tuple[str, str, str]]:
    """(colour, shape, fill) of classes ``0..num_classes-1``: the demo's 8 first, then
    every other combination in a fixed order (at most 8 x 6 x 3 = 144)."""
    rest = [(c, s, f) for f in FILLS for c in COLOURS for s in SHAPES if (c, s, f) not in _FIRST]
    specs = _FIRST + rest
    if not 1 <= num_classes <= len(specs):
        raise ValueError(f"--classes: expected 1..{len(specs)} classes, got {num_classes}")
    return specs[:num_classes]


def class_name(spec: Tuple[str, str, str]) -> str:
    colour, shape, fill = spec
    return f"{colour}_{shape}" if fill == "solid" else f"{colour}_{shape}_{fill}"


@dataclass(frozen=True)
class SyntheticSpec:
    """The parameters of a generated dataset (stored in ``synthetic.json``)."""

    videos: int = 256  # train + val, over all classes
    val_fraction: float = 0.25  # of each class's videos
    classes: int = 8
    frames: int = 48
    width: int = 128
    height: int = 96
    fps: float = 30.0
    codec: str = "h264"
    gop: Optional[int] = None
    seed: int = 0
    noise: float = 8.0  # std of the per-pixel noise (0..255 scale)
    name: str = "demo"  # list files are <name>_{train,val}_list_videos.txt

    def check(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"--codec: expected one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.width % 2 or self.height % 2 or self.width < 16 or self.height < 16:
            raise ValueError(f"--size: expected even width and height >= 16, got {self.width}x{self.height}")
        if self.frames < 1:
            raise ValueError(f"--frames: expected at least 1 frame, got {self.frames}")
        if self.videos < self.classes:
            raise ValueError(f"--videos: expected at least one video per class ({self.classes}), got {self.videos}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction: expected 0 <= fraction < 1, got {self.val_fraction}")
        class_specs(self.classes)


@dataclass(frozen=True)
class VideoJob:
    split: str
    index: int  # within the split
    label: int
    relpath: str  # relative to the split's video folder
    path: str  # full path


# --------------------------------------------------------------------------- layout


def list_file(spec: SyntheticSpec, split: str) -> str:
    return f"{spec.name}_{split}_list_videos.txt"


def video_dir(split: str) -> str:
    return f"videos_{split}"


def split_counts(spec: SyntheticSpec) -> List[Tuple[int, int]]:
    """(train, val) video counts per class: ``videos`` spread evenly (the first classes
    take the remainder), ``round(n * val_fraction)`` of each class to val (at least one
    when the fraction is positive and the class has two or more videos)."""
    base, extra = divmod(spec.videos, spec.classes)
    counts = []
    for c in range(spec.classes):
        n = base + (c < extra)
        val = int(round(n * spec.val_fraction))
        if spec.val_fraction > 0 and n >= 2:
            val = min(max(val, 1), n - 1)
        counts.append((n - val, val))
    return counts


def plan_jobs(spec: SyntheticSpec, out: str) -> List[VideoJob]:
    """Every video of the dataset, in list order (classes interleaved: label = i % C
    while every class still has videos left)."""
    names = [class_name(s) for s in class_specs(spec.classes)]
    ext = CODECS[spec.codec][1]
    counts = split_counts(spec)
    jobs = []
    for s, split in enumerate(SPLITS):
        per_class = [c[s] for c in counts]
        order = []
        for k in range(max(per_class, default=0)):
            order += [(label, k) for label in range(spec.classes) if k < per_class[label]]
        for index, (label, k) in enumerate(order):
            rel = f"{names[label]}/{names[label]}_{k:05d}{ext}"
            jobs.append(VideoJob(split, index, label, rel, os.path.join(out, video_dir(split), rel)))
    return jobs


# --------------------------------------------------------------------------- drawing


def _shape_distance(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance-like field of ``shape`` in object units (the shape spans about
    [-1, 1]); negative inside."""
    if shape == "circle":
        return np.hypot(x, y) - 0.9
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) - 0.75
    if shape == "triangle":  # equilateral, apex up, circumradius 1
        d = -y - 0.5
        for angle in (math.radians(30), math.radians(150)):
            d = np.maximum(d, x * math.cos(angle) + y * math.sin(angle) - 0.5)
        return d
    if shape == "cross":
        bar_h = np.maximum(np.abs(x) - 0.9, np.abs(y) - 0.28)
        bar_v = np.maximum(np.abs(x) - 0.28, np.abs(y) - 0.9)
        return np.minimum(bar_h, bar_v)
    if shape == "ring":
        return np.abs(np.hypot(x, y) - 0.7) - 0.22
    if shape == "star":  # five rounded points
        r, theta = np.hypot(x, y), np.arctan2(y, x)
        return r - (0.6 + 0.35 * np.cos(5 * theta))
    raise ValueError(f"unknown shape {shape!r}")


def _fill_pattern(fill: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 where the fill shows the object's colour, 0.35 where it shows a darker shade."""
    if fill == "solid":
        return np.ones_like(x)
    if fill == "striped":
        return np.where(np.sin(x * 2 * math.pi * 1.5) > 0, 1.0, 0.35)
    if fill == "checker":
        return np.where((np.floor(x * 2.5) + np.floor(y * 2.5)) % 2 == 0, 1.0, 0.35)
    raise ValueError(f"unknown fill {fill!r}")


def _background(rng: np.random.Generator, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """A random background twice the frame size (so it can drift) and its drift (px/frame):
    a two-colour linear gradient plus low-frequency blotches, greyish so the object's
    colour stands out."""
    bw, bh = width * 2, height * 2
    grey = rng.uniform(60, 190)
    c1 = grey + rng.uniform(-60, 60, 3)
    c2 = rng.uniform(50, 200) + rng.uniform(-60, 60, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
    t = (xx * math.cos(angle) + yy * math.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    img = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
    # low-frequency blotches: a coarse random grid, bilinearly upsampled
    gh, gw = 5, 7
    grid = rng.normal(0, 25, (gh, gw, 3))
    gy = np.linspace(0, gh - 1, bh)
    gx = np.linspace(0, gw - 1, bw)
    y0 = np.floor(gy).astype(int).clip(0, gh - 2)
    x0 = np.floor(gx).astype(int).clip(0, gw - 2)
    fy = (gy - y0)[:, None, None]
    fx = (gx - x0)[None, :, None]
    blot = (grid[y0][:, x0] * (1 - fy) * (1 - fx) + grid[y0 + 1][:, x0] * fy * (1 - fx)
            + grid[y0][:, x0 + 1] * (1 - fy) * fx + grid[y0 + 1][:, x0 + 1] * fy * fx)
    drift = rng.uniform(-0.5, 0.5, 2) * min(width, height) / 48
    return (img + blot).astype(np.float32), drift


def render_video(spec: SyntheticSpec, split: str, index: int, label: int) -> np.ndarray:
    """Frames ``[T, H, W, 3]`` uint8 of video ``index`` of ``split``.

    Randomness: ``default_rng([seed, split number, index])``. The object (class
    ``label``'s shape, colour and fill) bounces across the frame, rotates at a steady
    random speed and pulses in size; its colour is jittered per video.
    """
    rng = np.random.default_rng([spec.seed, SPLITS.index(split), index])
    colour, shape, fill = class_specs(spec.classes)[label]
    w, h, T = spec.width, spec.height, spec.frames
    short = min(w, h)

    bg, drift = _background(rng, w, h)
    base_colour = np.array(COLOURS[colour], np.float32) * rng.uniform(0.8, 1.1) + rng.normal(0, 12, 3)
    radius0 = short * rng.uniform(0.22, 0.3)
    pulse_amp, pulse_period = rng.uniform(0.05, 0.2), rng.uniform(20, 60)
    pulse_phase = rng.uniform(0, 2 * math.pi)
    angle0, spin = rng.uniform(0, 2 * math.pi), rng.uniform(-0.12, 0.12)
    pos = np.array([rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h])
    speed = short * rng.uniform(0.01, 0.03)
    heading = rng.uniform(0, 2 * math.pi)
    vel = speed * np.array([math.cos(heading), math.sin(heading)])
    offset = np.array([rng.uniform(0, w), rng.uniform(0, h)])

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((T, h, w, 3), np.uint8)
    for t in range(T):
        radius = radius0 * (1 + pulse_amp * math.sin(2 * math.pi * t / pulse_period + pulse_phase))
        # bounce so that the object's centre stays within the middle of the frame
        for axis, size in ((0, w), (1, h)):
            lo, hi = 0.25 * size, 0.75 * size
            if not lo <= pos[axis] + vel[axis] <= hi:
                vel[axis] = -vel[axis]
        pos = pos + vel
        angle = angle0 + spin * t
        dx, dy = (xx - pos[0]) / radius, (yy - pos[1]) / radius
        ox = dx * math.cos(angle) + dy * math.sin(angle)
        oy = -dx * math.sin(angle) + dy * math.cos(angle)
        alpha = np.clip(0.5 - _shape_distance(shape, ox, oy) * radius, 0.0, 1.0)[..., None]
        obj = base_colour[None, None, :] * _fill_pattern(fill, ox, oy)[..., None]
        ox0 = int(offset[0] + drift[0] * t) % w
        oy0 = int(offset[1] + drift[1] * t) % h
        img = bg[oy0:oy0 + h, ox0:ox0 + w] * (1 - alpha) + obj * alpha
        img = img + rng.normal(0, spec.noise, img.shape)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


# --------------------------------------------------------------------------- writing


def _write_one(args) -> str:
    spec, job = args
    frames = render_video(spec, job.split, job.index, job.label)
    tmp = job.path + ".part" + os.path.splitext(job.path)[1]
    write_video(tmp, frames, fps=spec.fps, codec=spec.codec, gop=spec.gop)
    os.replace(tmp, job.path)
    return job.path


def read_manifest(out: str) -> Optional[dict]:
    path = os.path.join(out, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def is_complete(out: str, spec: SyntheticSpec) -> bool:
    """Whether ``out`` holds this exact dataset (same parameters, every file present)."""
    manifest = read_manifest(out)
    if not manifest or manifest.get("version") != FORMAT_VERSION or manifest.get("spec") != asdict(spec):
        return False
    files = [os.path.join(out, f) for f in manifest.get("files", [])]
    return bool(files) and all(os.path.isfile(f) for f in files)


def generate(out: str, spec: SyntheticSpec = SyntheticSpec(), *, workers: Optional[int] = None,
             progress: bool = True) -> Dict:
    """Write the dataset ``spec`` under ``out`` unless it is already complete there.

    Returns ``{"out", "written", "train_list", "val_list", "label_map", "num_classes",
    "train_prefix", "val_prefix"}`` (paths relative to ``out``). ``written`` counts the
    videos written this call (0 when the dataset was already there). Files of an earlier
    dataset with other parameters, as listed in its manifest, are removed first.
    """
    spec.check()
    out = os.path.abspath(out)
    summary = {
        "out": out,
        "train_list": list_file(spec, "train"),
        "val_list": list_file(spec, "val"),
        "train_prefix": video_dir("train"),
        "val_prefix": video_dir("val"),
        "label_map": "label_map.txt",
        "num_classes": spec.classes,
        "written": 0,
    }
    if is_complete(out, spec):
        return summary

    old = read_manifest(out)
    if old:
        os.remove(os.path.join(out, MANIFEST))
        for rel in old.get("files", []):
            path = os.path.join(out, rel)
            if os.path.isfile(path):
                os.remove(path)

    jobs = plan_jobs(spec, out)
    for job in jobs:
        os.makedirs(os.path.dirname(job.path), exist_ok=True)
    workers = workers if workers is not None else min(len(jobs), os.cpu_count() or 1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=f"generating {os.path.basename(out)}", unit="video",
                   disable=None)
    tasks = [(spec, job) for job in jobs]
    if workers <= 1:
        for task in tasks:
            _write_one(task)
            if bar is not None:
                bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_write_one, tasks, chunksize=max(1, len(tasks) // (workers * 8))):
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()

    names = [class_name(s) for s in class_specs(spec.classes)]
    with open(os.path.join(out, summary["label_map"]), "w", encoding="utf-8") as fh:
        fh.write("".join(n + "\n" for n in names))
    for split in SPLITS:
        lines = [f"{j.relpath} {j.label}\n" for j in jobs if j.split == split]
        with open(os.path.join(out, summary[f"{split}_list"]), "w", encoding="utf-8") as fh:
            fh.write("".join(lines))
    files = [os.path.relpath(j.path, out) for j in jobs]
    files += [summary["label_map"], summary["train_list"], summary["val_list"]]
    manifest = {"version": FORMAT_VERSION, "spec": asdict(spec), "files": files}
    tmp = os.path.join(out, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
    os.replace(tmp, os.path.join(out, MANIFEST))
    summary["written"] = len(jobs)
    return summary


# --------------------------------------------------------------------------- CLI


def _parse_size(text: str) -> Tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 128x96, got {text!r}") from None
    return w, h


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Generate a synthetic labelled video dataset (MMAction2 video-list layout)."""
    d = SyntheticSpec()
    parser = cli.ArgumentParser(prog="python -m tsn_dali.data.media.synthetic", description=main.__doc__)
    parser.add_argument("out", help="dataset folder")
    parser.add_argument("--videos", type=int, default=d.videos, help="train + val videos (default %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--classes", type=int, default=d.classes)
    parser.add_argument("--frames", type=int, default=d.frames)
    parser.add_argument("--size", type=_parse_size, default=(d.width, d.height), metavar="WxH")
    parser.add_argument("--fps", type=float, default=d.fps)
    parser.add_argument("--codec", choices=sorted(CODECS), default=d.codec)
    parser.add_argument("--gop", type=int, default=None, help="keyframe interval (default: encoder's)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--noise", type=float, default=d.noise)
    parser.add_argument("--name", default=d.name, help="list file prefix (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    spec = SyntheticSpec(videos=args.videos, val_fraction=args.val_fraction, classes=args.classes,
                         frames=args.frames, width=args.size[0], height=args.size[1], fps=args.fps,
                         codec=args.codec, gop=args.gop, seed=args.seed, noise=args.noise, name=args.name)
    return cli.run_main(lambda: _generate_cli(args, spec), usage_errors=(ValueError,))


def _generate_cli(args, spec) -> None:
    summary = generate(args.out, spec, workers=args.workers, progress=not args.quiet)
    if summary["written"]:
        print(f"wrote {summary['written']} videos to {summary['out']}")
    else:
        print(f"{summary['out']}: complete, nothing to do")
    for key in ("train_list", "val_list", "label_map"):
        print(f"  {key}: {os.path.join(summary['out'], summary[key])}")


if __name__ == "__main__":
    raise SystemExit(cli.entry(main))
