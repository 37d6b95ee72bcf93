"""Show what the data path does with one video: its index entry and its clip plan.

    python -m tsn_dali.inspect RECIPE --video PATH [--split train|val|test]
        [--seed S] [--epoch E] [--sample N] [--label L] [--json] [--sheet out.png]
        [--executor dali-gpu|dali-cpu|reference] [--dump-clips out.npy]

Prints the index entry (frames, upright size and display rotation, fps, codec, GOP, the
video stream decoded and how many the file has), the frame indices, every crop
box (in the frame after the first Resize) and its flip. ``--json`` prints one JSON
object (``ClipPlan.to_json()`` plus ``index``). ``--sheet`` saves a contact sheet of the
views the model gets (rows: crops, columns: frames); ``--dump-clips`` saves them as uint8
``[V, H, W, C]``, crop-major. Both use ``--executor`` (default: reference). A bad recipe or an unreadable video is one line on stderr and
exit status 1.
"""
from __future__ import annotations

import json
from typing import List, Optional

import numpy as np

from tsn_dali import cli
from tsn_dali.config import EXECUTORS, load_recipe
from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.data.index.video_index import probe_video
from tsn_dali.data.plan.clip_plan import ClipPlan
from tsn_dali.data.plan.planner import ClipPlanner, load_pipeline
from tsn_dali.errors import one_line


def make_plan(recipe, video: str, split: str = "train", seed: int = 0, epoch: int = 0,
              sample: int = 0, label: int = 0):
    """(VideoInfo, ClipPlan) for one video under the recipe's ``split`` pipeline."""
    info = probe_video(video)
    if not info.ok:
        raise VideoDecodeError(video, info.error or "no decodable frames")
    ops = load_pipeline(getattr(recipe.data, f"{split}_pipeline"), recipe.data)
    plan = ClipPlanner(ops, seed=seed).plan(sample, video, label, info, epoch=epoch)
    return info, plan


def render_with_executor(plan: ClipPlan, name: str = "reference",
                         filename_tmpl: str = "img_{:05}.jpg") -> np.ndarray:
    """``build_executor(name).render([plan])`` as uint8 ``[V, H, W, C]`` (crop-major)."""
    from tsn_dali.data.render.executors import build_executor  # lazy: torch, and DALI for dali-*

    executor = build_executor(name, reference_workers=0, filename_tmpl=filename_tmpl)
    try:
        clips = executor.render([plan])
        return clips[0].permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
    finally:
        executor.close()


def contact_sheet(views: np.ndarray, num_frames: int, path: str, tile: int = 112) -> None:
    """Save views ``[V, H, W, C]`` as a grid: one row per crop, one column per frame."""
    from PIL import Image

    rows = max(1, len(views) // max(1, num_frames))
    h, w = views.shape[1:3]
    tw, th = (tile, max(1, round(tile * h / w))) if w >= h else (max(1, round(tile * w / h)), tile)
    pad = 2
    sheet = Image.new("RGB", (num_frames * (tw + pad) + pad, rows * (th + pad) + pad), (40, 40, 40))
    for k, view in enumerate(views):
        r, c = divmod(k, num_frames)
        img = Image.fromarray(view).resize((tw, th), Image.BILINEAR)
        sheet.paste(img, (pad + c * (tw + pad), pad + r * (th + pad)))
    sheet.save(path)


def describe(info, plan: ClipPlan, split: str) -> str:
    (w, h), turn = info.display_size, int(getattr(info, "rotation", 0))
    count = int(getattr(info, "video_streams", 1))
    lines = [
        f"video      {info.path}",
        f"index      {info.num_frames} frames, {w}x{h}"
        + (f" upright (stored {info.width}x{info.height}, turned {turn} degrees clockwise)" if turn else "")
        + f", {info.fps:.3f} fps, codec {info.codec}, keyframe every {info.keyframe_interval or 0:.1f} frames",
        f"stream     #{info.stream_index} decoded, {count} video stream{'s' if count != 1 else ''} in the file",
        f"split      {split}: {len(plan.frame_indices)} frames x {len(plan.crops)} crops = "
        f"{plan.num_views} views of {plan.out_size[0]}x{plan.out_size[1]}",
        f"label      {plan.label}" + ("  (flipped)" if plan.flip else ""),
        f"frames     {' '.join(str(int(i)) for i in plan.frame_indices)}",
        f"resize     {plan.orig_size[0]}x{plan.orig_size[1]} -> {plan.resize_to[0]}x{plan.resize_to[1]}",
    ]
    for k, (box, mirrored) in enumerate(zip(plan.crops, plan.crop_flips)):
        x1, y1, x2, y2 = (int(v) for v in box)
        lines.append(f"crop {k:<5} [{x1}, {y1}, {x2}, {y2}] {x2 - x1}x{y2 - y1}"
                     + (" flipped" if mirrored else ""))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = cli.ArgumentParser(prog="python -m tsn_dali.inspect", description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--video", required=True)
    parser.add_argument("--split", choices=("train", "val", "test"), default="train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epoch", type=int, default=0)
    parser.add_argument("--sample", type=int, default=0, help="index in the list (seeds the draws)")
    parser.add_argument("--label", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sheet")
    parser.add_argument("--executor", choices=[n for n in EXECUTORS if n != "auto"])
    parser.add_argument("--dump-clips")
    args = parser.parse_args(argv)
    return cli.run_main(lambda: inspect_video(args), more_errors=(ValueError,))


def inspect_video(args) -> None:
    """Print the video's plan (and render it) as ``args`` say."""
    recipe = load_recipe(args.recipe, args.set)
    info, plan = make_plan(recipe, args.video, args.split, args.seed, args.epoch,
                           args.sample, args.label)
    if args.json:
        out = plan.to_json()
        out["index"] = info.to_json()
        print(json.dumps(out))
    else:
        print(describe(info, plan, args.split))
    if args.sheet or args.dump_clips:
        executor = args.executor or "reference"
        try:
            views = render_with_executor(plan, executor, recipe.data.filename_tmpl)
        except (RuntimeError, ImportError) as exc:  # no GPU, no DALI, ...
            if isinstance(exc, VideoDecodeError):
                raise
            raise ValueError(f"executor {executor}: {one_line(exc)}") from None
        if args.dump_clips:
            np.save(args.dump_clips, views)
        if args.sheet:
            contact_sheet(views, len(plan.frame_indices), args.sheet)
        if not args.json:
            print(f"views      {tuple(views.shape)} uint8 by {executor}")


if __name__ == "__main__":
    raise SystemExit(cli.entry(main))
