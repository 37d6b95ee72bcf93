"""Box geometry against MMAction2's processing.py rules and mmcv.rescale_size rounding."""

import numpy as np
import pytest

from tsn_dali.data.plan import geometry as g


class Draws:
    """Generator stand-in: queued draws, range-checked (integers high is exclusive)."""

    def __init__(self, integers=(), uniform=(), random=()):
        self._i, self._u, self._r = list(integers), list(uniform), list(random)
        self.calls = []

    def integers(self, low, high=None, size=None):
        if high is None:
            low, high = 0, low
        self.calls.append((low, high))
        v = self._i.pop(0)
        assert low <= v < high, f"draw {v} outside [{low}, {high})"
        return v

    def uniform(self, low, high, size=None):
        v = np.asarray(self._u.pop(0), float)
        assert v.shape == (size,)
        return v

    def random(self):
        return self._r.pop(0)


# ---------------------------------------------------------------- Resize


@pytest.mark.parametrize("size, expected", [
    ((340, 256), (340, 256)),
    ((1920, 1080), (455, 256)),   # 1920 * 256 / 1080 = 455.11 -> int(455.61) = 455
    ((426, 240), (454, 256)),     # 426 * 256 / 240 = 454.4 -> 454
    ((720, 1280), (256, 455)),    # portrait: the short side is the width
    ((64, 48), (341, 256)),       # tiny: 64 * 5.333 = 341.33 -> 341
    ((513, 512), (257, 256)),     # 256.5 rounds up (int(x + 0.5)), not to even
])
def test_resize_short_side(size, expected):
    assert g.resize(size, (-1, 256)) == expected


def test_resize_fixed_and_bounded():
    assert g.resize((455, 256), (224, 224), keep_ratio=False) == (224, 224)
    # keep_ratio with a (long, short) bound: min(340 / 1920, 256 / 1080) = 0.17708;
    # 1080 * 0.17708 = 191.25 -> 191
    assert g.rescale_size((1920, 1080), (340, 256)) == (340, 191)
    assert g.rescale_size((340, 256), 0.5) == (170, 128)


# ---------------------------------------------------------------- MultiScaleCrop


def test_multi_scale_crop_sizes_340x256():
    # base 256: sides int(256 * s) = 256, 224, 192, 168 (256 * 0.66 = 168.96);
    # (w, h) with |level(w) - level(h)| <= 1, outer loop h, inner w
    assert g.multi_scale_crop_sizes((340, 256), 224) == [
        (256, 256), (224, 256), (256, 224), (224, 224), (192, 224), (224, 192),
        (192, 192), (168, 192), (192, 168), (168, 168)]


def test_multi_scale_crop_sizes_snap_to_input_size():
    # base 258: 258, int(225.75) = 225 -> within 3 px of 224 -> 224, 193, 170
    sizes = g.multi_scale_crop_sizes((344, 258), 224)
    assert sizes[:4] == [(258, 258), (224, 258), (258, 224), (224, 224)]
    assert (193, 193) in sizes and (170, 170) in sizes
    # max_wh_scale_gap 0: squares only
    assert g.multi_scale_crop_sizes((340, 256), 224, max_wh_scale_gap=0) == [
        (256, 256), (224, 224), (192, 192), (168, 168)]


def test_fixed_crop_offsets():
    # 340x256, crop 224: w_step = 116 // 4 = 29, h_step = 32 // 4 = 8
    assert g.fixed_crop_offsets((340, 256), (224, 224)) == [
        (0, 0), (116, 0), (0, 32), (116, 32), (58, 16)]
    assert g.fixed_crop_offsets((340, 256), (224, 224), 13)[5:] == [
        (0, 16), (116, 16), (58, 32), (58, 0), (29, 8), (87, 8), (29, 24), (87, 24)]
    # 1920x1080 resized to 455x256, crop 168x192: w_step = 287 // 4 = 71, h_step 16
    assert g.fixed_crop_offsets((455, 256), (168, 192))[1:] == [(284, 0), (0, 64), (284, 64),
                                                                (142, 32)]
    with pytest.raises(ValueError, match="5 or 13"):
        g.fixed_crop_offsets((340, 256), (224, 224), 7)


def test_multi_scale_crop_draws():
    # size index 3 -> (224, 224); offset index 4 (centre) -> (58, 16)
    rng = Draws(integers=[3, 4])
    assert g.multi_scale_crop((340, 256), rng, 224) == (58, 16, 282, 240)
    assert rng.calls == [(0, 10), (0, 5)]
    # 13 fixed crops: index 12 = lower right quarter (3 w_step, 3 h_step) = (87, 24)
    rng = Draws(integers=[3, 12])
    assert g.multi_scale_crop((340, 256), rng, 224, num_fixed_crops=13) == (87, 24, 311, 248)
    # random_crop: size 0 (256x256), x in [0, 84], y in [0, 0]
    rng = Draws(integers=[0, 84, 0])
    assert g.multi_scale_crop((340, 256), rng, 224, random_crop=True) == (84, 0, 340, 256)
    assert rng.calls == [(0, 10), (0, 85), (0, 1)]


# ---------------------------------------------------------------- RandomResizedCrop


def test_random_resized_crop_first_fit():
    # aspect exp(0) = 1, area 0.5 * 340 * 256 = 43520 -> side round(208.61) = 209;
    # x in [0, 131], y in [0, 47]
    rng = Draws(uniform=[np.zeros(10), np.full(10, 0.5)], integers=[10, 47])
    assert g.random_resized_crop((340, 256), rng) == (10, 47, 219, 256)
    assert rng.calls == [(0, 132), (0, 48)]


def test_random_resized_crop_fallback_to_centre():
    # area 1.0 * 87040 at aspect 1 -> 295 x 295 never fits a 256-high frame: centre square
    rng = Draws(uniform=[np.zeros(10), np.full(10, 0.999)])
    assert g.random_resized_crop((340, 256), rng) == (42, 0, 298, 256)
    # portrait fallback
    rng = Draws(uniform=[np.zeros(10), np.full(10, 0.999)])
    assert g.random_resized_crop((256, 455), rng) == (0, 99, 256, 355)


def test_random_resized_crop_ranges_with_real_generator():
    rng = np.random.default_rng(0)
    w, h = 455, 256
    for _ in range(200):
        x1, y1, x2, y2 = g.random_resized_crop((w, h), rng)
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        cw, ch = x2 - x1, y2 - y1
        if (cw, ch) != (256, 256) or (x1, y1) != (99, 0):  # not the fallback
            assert 0.07 * w * h <= cw * ch <= w * h
            assert 0.74 <= cw / ch <= 1.35


# ---------------------------------------------------------------- Center / Three / Ten crops


@pytest.mark.parametrize("size, expected", [
    ((340, 256), (58, 16, 282, 240)),
    ((455, 256), (115, 16, 339, 240)),   # 1920x1080 after Resize
    ((454, 256), (115, 16, 339, 240)),   # 426x240 after Resize
    ((256, 455), (16, 115, 240, 339)),   # portrait
    ((341, 256), (58, 16, 282, 240)),    # tiny 64x48 after Resize
])
def test_center_crop(size, expected):
    assert g.center_crop(size, 224) == expected


def test_crop_larger_than_frame_is_an_error():
    with pytest.raises(ValueError, match="larger than the 64x48 frame"):
        g.center_crop((64, 48), 224)


def test_three_crop():
    # 455x256, crop 256: step (455 - 256) // 2 = 99; order left, right, middle
    assert g.three_crop((455, 256), 256) == [(0, 0, 256, 256), (198, 0, 454, 256),
                                             (99, 0, 355, 256)]
    assert g.three_crop((340, 256), 256) == [(0, 0, 256, 256), (84, 0, 340, 256),
                                             (42, 0, 298, 256)]
    # portrait: along y, top, bottom, middle
    assert g.three_crop((256, 455), 256) == [(0, 0, 256, 256), (0, 198, 256, 454),
                                             (0, 99, 256, 355)]
    with pytest.raises(ValueError, match="ThreeCrop"):
        g.three_crop((455, 256), 224)


def test_ten_crop():
    # 455x256, crop 224: w_step 231 // 4 = 57, h_step 8; centre (114, 16) is one pixel
    # left of CenterCrop's (115, 16)
    boxes, flips = g.ten_crop((455, 256), 224)
    regions = [(0, 0), (228, 0), (0, 32), (228, 32), (114, 16)]
    assert boxes == [b for x, y in regions for b in [(x, y, x + 224, y + 224)] * 2]
    assert flips == [False, True] * 5
    # portrait 256x455: w_step 8, h_step 57
    boxes, _ = g.ten_crop((256, 455), 224)
    assert boxes[::2] == [(0, 0, 224, 224), (32, 0, 256, 224), (0, 228, 224, 452),
                          (32, 228, 256, 452), (16, 114, 240, 338)]
    # 340x256: w_step 29, h_step 8
    boxes, _ = g.ten_crop((340, 256), 224)
    assert boxes[::2][1] == (116, 0, 340, 224) and boxes[8] == (58, 16, 282, 240)


# ---------------------------------------------------------------- Flip


def test_flip():
    assert g.flip(Draws(random=[0.3])) is True
    assert g.flip(Draws(random=[0.7])) is False
    assert g.flip(Draws(random=[0.0]), flip_ratio=0.0) is False
    assert g.flip_label(1, True, {1: 2}) == 2
    assert g.flip_label(1, False, {1: 2}) == 1
    assert g.flip_label(5, True, {1: 2}) == 5
    assert g.flip_box((10, 5, 50, 40), 340) == (290, 5, 330, 40)


def test_flip_ratio_with_real_generator():
    rng = np.random.default_rng(1)
    rate = np.mean([g.flip(rng, 0.5) for _ in range(2000)])
    assert abs(rate - 0.5) < 0.05
    assert not any(g.flip(rng, 0.0) for _ in range(100))
