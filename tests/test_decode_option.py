"""``loader.decode``: ``native`` (DALI decodes what its decoder reads: on CPU VP9, converted to
RGB with bilinear chroma upsampling) or ``mmaction`` (every video decoded by decord, as
MMAction2's DecordDecode, whose swscale conversion takes the nearest chroma sample).

With ``mmaction`` dali-cpu matches the reference executor on a VP9 clip to resize rounding;
with ``native`` it differs at colour edges (how far is what benchmarks/cross_executor.py
measures in accuracy)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from tsn_dali.config import RECIPES_DIR, load_recipe  # noqa: E402
from tsn_dali.data.render.executors import build_executor  # noqa: E402
from tsn_dali.data.render.executors.reference import ReferenceExecutor  # noqa: E402
from tsn_dali.data.plan.clip_plan import ClipPlan  # noqa: E402
from tsn_dali.data.media.videoio import write_video  # noqa: E402

W, H = 96, 64


@pytest.fixture(scope="module")
def vp9_edges(tmp_path_factory) -> Path:
    """A VP9 clip of saturated colour blocks on grey (sharp chroma edges, where bilinear and
    nearest chroma upsampling part most), moving one pixel a frame."""
    frames = []
    for t in range(6):
        img = np.full((H, W, 3), 128, np.uint8)
        for k, colour in enumerate([(230, 30, 30), (30, 200, 40), (40, 60, 235), (230, 220, 30)]):
            x0, y0 = 9 + 21 * k + t, 13 + 7 * k
            img[y0:y0 + 23, x0:x0 + 15] = colour
        frames.append(img)
    return Path(write_video(str(tmp_path_factory.mktemp("decode") / "edges.webm"), frames, codec="vp9",
                            crf=4))


def _plan(path, frames=(0, 3, 5)):
    return ClipPlan(sample=0, path=str(path), label=0, num_frames=6, orig_size=(W, H),
                    frame_indices=np.asarray(frames, np.int32), resize_to=(72, 48),
                    crops=np.asarray([[0, 0, 48, 48], [24, 0, 72, 48]], np.int32),
                    crop_flips=np.asarray([False, True]), out_size=(40, 40))


def _render(executor, plans):
    try:
        return executor.render(plans).to(torch.int16)
    finally:
        executor.close()


def test_mmaction_decode_matches_the_reference_executor_on_vp9(vp9_edges):
    plans = [_plan(vp9_edges), _plan(vp9_edges, (5, 1, 1))]
    reference = _render(ReferenceExecutor(workers=0), plans)
    mmaction = build_executor("dali-cpu", num_threads=1, decode_workers=1, decode="mmaction")
    assert mmaction.decode == "mmaction" and {mmaction.route(p)[0] for p in plans} == {"frames"}
    diff = (_render(mmaction, plans) - reference).abs()
    assert diff.max().item() <= 1 and diff.float().mean().item() < 0.05  # resize rounding only

    native = build_executor("dali-cpu", num_threads=1, decode_workers=1)
    assert native.decode == "native" and {native.route(p)[0] for p in plans} == {"decoder"}
    far = (_render(native, plans) - reference).abs()
    # DALI's own VP9 decode: bilinear chroma, so colour edges differ by tens of levels
    assert far.max().item() > 10 and far.float().mean().item() > diff.float().mean().item()


def test_decode_option_from_the_recipe_and_its_checks():
    recipe = load_recipe(RECIPES_DIR / "demo.yaml", ["loader.decode=mmaction"])
    assert recipe.loader.decode == "mmaction"
    assert load_recipe(RECIPES_DIR / "demo.yaml").loader.decode == "native"
    with pytest.raises(ValueError, match="loader.decode: 'decord'; expected one of native, mmaction"):
        build_executor("dali-cpu", decode="decord")
    assert isinstance(build_executor("reference", decode="mmaction", reference_workers=0), ReferenceExecutor)
