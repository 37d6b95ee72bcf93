"""Frame sampling against MMAction2's SampleFrames / DenseSampleFrames rules.

Expected arrays are worked out by hand in the comments; random draws come from a stub
Generator that returns fixed values and checks the range it is asked for.
"""
import numpy as np
import pytest

from tsn_dali.data.plan.sampling import dense_sample_frames, sample_frames


class Draws:
    """A numpy Generator stand-in: returns queued draws, checks the requested range."""

    def __init__(self, integers=(), uniform=()):
        self._integers = list(integers)
        self._uniform = list(uniform)
        self.calls = []

    def integers(self, low, high=None, size=None):
        if high is None:
            low, high = 0, low
        self.calls.append(("integers", low, high, size))
        value = self._integers.pop(0)
        arr = np.atleast_1d(np.asarray(value))
        assert ((arr >= low) & (arr < high)).all(), f"draw {value} outside [{low}, {high})"
        if size is not None:
            assert arr.shape == (size,)
            return arr
        return int(arr[0])

    def uniform(self, low, high, size=None):
        self.calls.append(("uniform", low, high, size))
        value = np.asarray(self._uniform.pop(0), dtype=float)
        assert ((value >= low) & (value < high)).all()
        return value

    def done(self):
        return not self._integers and not self._uniform


def eq(actual, expected):
    assert actual.dtype == np.int32
    np.testing.assert_array_equal(actual, np.array(expected, dtype=np.int32))


# ---------------------------------------------------------------- SampleFrames, train


@pytest.mark.parametrize("start_index", [0, 1])
def test_train_longer_than_segments(start_index):
    # 10 frames, 3 clips: avg_interval = 10 // 3 = 3, bases 0, 3, 6; draws in [0, 3): 2, 0, 1
    rng = Draws(integers=[[2, 0, 1]])
    out = sample_frames(10, 3, rng, start_index=start_index)
    eq(out, np.array([2, 3, 7]) + start_index)
    assert rng.calls == [("integers", 0, 3, 3)] and rng.done()


def test_train_equal_to_segments():
    # 8 frames, 8 clips: avg_interval 1, the only draw is 0: frames 0..7
    out = sample_frames(8, 8, Draws(integers=[[0] * 8]))
    eq(out, range(8))


@pytest.mark.parametrize("start_index", [0, 1])
def test_train_shorter_than_segments(start_index):
    # 2 frames, 3 clips: avg_interval 0 and not num_frames > num_clips -> no draw,
    # around(i * (2 - 1 + 1) / 3) = around([0, .667, 1.333]) = [0, 1, 1]
    rng = Draws()
    eq(sample_frames(2, 3, rng, start_index=start_index), np.array([0, 1, 1]) + start_index)
    assert rng.calls == []


@pytest.mark.parametrize("start_index", [0, 1])
def test_train_one_frame_video(start_index):
    # around([0, 1/3, 2/3]) = [0, 0, 1]; mod 1 -> all 0
    eq(sample_frames(1, 3, Draws(), start_index=start_index), [start_index] * 3)


def test_train_sorted_random_branch():
    # clip_len 4 (ori_clip_len 4), 3 clips, 5 frames: avg = (5 - 4 + 1) // 3 = 0 and
    # 5 > max(3, 4): 3 sorted draws in [0, 2): [1, 0, 1] -> [0, 1, 1]
    rng = Draws(integers=[[1, 0, 1]])
    out = sample_frames(5, 3, rng, clip_len=4)
    eq(out, [0, 1, 2, 3, 1, 2, 3, 4, 1, 2, 3, 4])
    assert rng.calls == [("integers", 0, 2, 3)]


def test_train_negative_interval_gives_zero_offsets_and_loops():
    # clip_len 4, 2 frames: (2 - 4 + 1) // 3 = -1 -> offsets 0; frames 0..3 mod 2
    eq(sample_frames(2, 3, Draws(), clip_len=4), [0, 1, 0, 1] * 3)
    # repeat_last: indices past the end take the clip's last valid index (1)
    eq(sample_frames(2, 3, Draws(), clip_len=4, out_of_bound_opt="repeat_last"), [0, 1, 1, 1] * 3)


def test_train_frame_interval():
    # clip_len 2, frame_interval 3 (ori 6), 2 clips, 20 frames: avg = 15 // 2 = 7,
    # bases 0, 7; draws 6, 0 -> offsets 6, 7 -> frames 6, 9, 7, 10
    eq(sample_frames(20, 2, Draws(integers=[[6, 0]]), clip_len=2, frame_interval=3), [6, 9, 7, 10])


def test_train_keep_tail_frames():
    # avg = (10 - 1 + 1) / 4 = 2.5: bases 0, 2.5, 5, 7.5 plus uniform [0.5, 2.4, 0, 1.0]
    # = 0.5, 4.9, 5.0, 8.5 -> int 0, 4, 5, 8
    rng = Draws(uniform=[[0.5, 2.4, 0.0, 1.0]])
    eq(sample_frames(10, 4, rng, keep_tail_frames=True), [0, 4, 5, 8])


def test_train_with_real_generator_is_in_segments():
    rng = np.random.default_rng(0)
    for _ in range(50):
        out = sample_frames(300, 8, rng)
        # segment i is [37 i, 37 i + 37)
        assert ((out >= np.arange(8) * 37) & (out < np.arange(8) * 37 + 37)).all()


# ---------------------------------------------------------------- SampleFrames, test mode


@pytest.mark.parametrize("start_index", [0, 1])
def test_test_mode_segment_centres(start_index):
    # 10 frames, 4 clips: avg 2.5, centres 1.25, 3.75, 6.25, 8.75 -> truncated 1, 3, 6, 8
    eq(sample_frames(10, 4, None, test_mode=True, start_index=start_index),
       np.array([1, 3, 6, 8]) + start_index)


def test_test_mode_25_clips():
    # 300 frames, 25 clips: avg 12, centres 6 + 12 i
    eq(sample_frames(300, 25, None, test_mode=True), 6 + 12 * np.arange(25))
    # 280 frames (demo.mp4): avg 11.2, centres 5.6 + 11.2 i truncated
    expected = [5, 16, 28, 39, 50, 61, 72, 83, 95, 106, 117, 128, 139, 151, 162, 173, 184,
                195, 207, 218, 229, 240, 251, 263, 274]
    eq(sample_frames(280, 25, None, test_mode=True), expected)


def test_test_mode_shorter_than_segments():
    # 5 frames, 8 clips: avg 0.625, centres 0.3125 + 0.625 i (exact binary fractions):
    # 0.3125 0.9375 1.5625 2.1875 2.8125 3.4375 4.0625 4.6875 -> 0 0 1 2 2 3 4 4
    eq(sample_frames(5, 8, None, test_mode=True), [0, 0, 1, 2, 2, 3, 4, 4])
    # equal: 8 frames, 8 clips: centres i + 0.5
    eq(sample_frames(8, 8, None, test_mode=True), range(8))


@pytest.mark.parametrize("start_index", [0, 1])
def test_test_mode_one_frame(start_index):
    # centres 0.02 + 0.04 i < 1 for 25 clips -> all frame 0
    eq(sample_frames(1, 25, None, test_mode=True, start_index=start_index), [start_index] * 25)


def test_test_mode_twice_sample():
    # 8 frames, 4 clips: centres 1, 3, 5, 7 then bases 0, 2, 4, 6
    eq(sample_frames(8, 4, None, test_mode=True, twice_sample=True), [1, 3, 5, 7, 0, 2, 4, 6])


def test_test_mode_3d_clips():
    # clip_len 4, interval 2: ori = 3 * 2 + 1 = 7; max_offset 20 - 7 = 13; 3 clips
    # 13 / 2 = 6.5 apart: round([0, 6.5, 13]) = [0, 6, 13] (round half to even)
    eq(sample_frames(20, 3, None, clip_len=4, frame_interval=2, test_mode=True),
       [0, 2, 4, 6, 6, 8, 10, 12, 13, 15, 17, 19])


def test_bad_arguments():
    with pytest.raises(ValueError, match="out_of_bound_opt"):
        sample_frames(10, 3, None, test_mode=True, out_of_bound_opt="clamp")
    with pytest.raises(ValueError, match="num_frames"):
        sample_frames(0, 3, None, test_mode=True)


# ---------------------------------------------------------------- DenseSampleFrames


@pytest.mark.parametrize("start_index", [0, 1])
def test_dense_train(start_index):
    # 300 frames, 8 clips, range 64: sample_position = 1 + 300 - 64 = 237, interval 8;
    # start drawn in [0, 236): 100 -> 100 + 8 i
    rng = Draws(integers=[100])
    out = dense_sample_frames(300, 8, rng, start_index=start_index)
    eq(out, 100 + 8 * np.arange(8) + start_index)
    assert rng.calls == [("integers", 0, 236, None)]


def test_dense_train_short_video_wraps():
    # 50 frames: sample_position max(1, -13) = 1 -> start 0, no draw; 8 i mod 50
    rng = Draws()
    eq(dense_sample_frames(50, 8, rng), [0, 8, 16, 24, 32, 40, 48, 6])
    assert rng.calls == []
    # 65 frames: sample_position 2 -> MMAction2's randint(0, 1) can only give 0
    rng = Draws(integers=[0])
    eq(dense_sample_frames(65, 8, rng), 8 * np.arange(8))
    assert rng.calls == [("integers", 0, 1, None)]
    eq(dense_sample_frames(1, 4, Draws()), [0, 0, 0, 0])


def test_dense_test_mode():
    # sample_position 237: starts linspace(0, 236, 10, dtype=int)
    # = 0, 26, 52, 78, 104, 131, 157, 183, 209, 236 (236 / 9 = 26.22 per step, truncated)
    out = dense_sample_frames(300, 8, None, test_mode=True)
    starts = [0, 26, 52, 78, 104, 131, 157, 183, 209, 236]
    expected = np.concatenate([(s + 8 * np.arange(8)) % 300 for s in starts])
    eq(out, expected)
    assert len(out) == 80
    # 25 clips (the dense test pipeline): interval 64 // 25 = 2 -> 250 frames
    out25 = dense_sample_frames(300, 25, None, test_mode=True, start_index=1)
    assert len(out25) == 250
    eq(out25[:25], 2 * np.arange(25) + 1)
    eq(out25[-25:], 236 + 2 * np.arange(25) + 1)


def test_dense_test_mode_short_video():
    # 50 frames: every start is 0 -> the same 8 offsets 10 times
    out = dense_sample_frames(50, 8, None, test_mode=True)
    eq(out, np.tile([0, 8, 16, 24, 32, 40, 48, 6], 10))
