"""The hand-off guard (tsn_dali.data.render.handoff): a batch stays referenced until an event
recorded after the consumer's work on it has completed. CUDA events are stood in for by
events the test completes by hand; the guard's rules are the same."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch

from helpers.tiny_clips import make_dataset, recipe_yaml
from tsn_dali.config import load_recipe
from tsn_dali.data import build_loader
from tsn_dali.data.render import handoff
from tsn_dali.data.render.handoff import HandoffGuard


class FakeEvent:
    made = []

    def __init__(self):
        self.recorded = self.done = False
        self.waited = 0
        FakeEvent.made.append(self)

    def record(self):
        self.recorded = True

    def query(self):
        return self.done

    def synchronize(self):
        self.waited += 1
        self.done = True


@pytest.fixture(autouse=True)
def fresh_events():
    FakeEvent.made = []


def _alive(ref):
    gc.collect()
    return ref() is not None


def test_on_the_cpu_nothing_is_held():
    guard = HandoffGuard("cpu", "view")
    x = torch.zeros(2, 3)
    assert guard.hand_out(x) is x and guard.held == 0
    guard.next_requested()
    guard.close()


def test_view_is_held_until_the_event_after_the_consumers_work_completes():
    guard = HandoffGuard("cpu", "view", new_event=FakeEvent)
    batch = torch.arange(12.0).view(3, 4)
    ref = weakref.ref(batch)
    assert guard.hand_out(batch) is batch
    del batch
    assert _alive(ref) and guard.held == 1 and not FakeEvent.made  # no event before the next request
    guard.next_requested()  # the consumer queued its step and asks for more
    (event,) = FakeEvent.made
    assert event.recorded and _alive(ref)  # its kernels may still read the batch
    guard.next_requested()
    assert _alive(ref)
    event.done = True  # the GPU got past the step
    guard.next_requested()
    assert not _alive(ref) and guard.held == 0


def test_copy_hands_out_torch_memory_and_holds_the_source_until_the_copy_ran():
    guard = HandoffGuard("cpu", "copy", new_event=FakeEvent)
    src = torch.arange(2 * 5 * 4 * 4 * 3, dtype=torch.float16).view(2, 5, 4, 4, 3).permute(0, 1, 4, 2, 3)
    ref = weakref.ref(src)
    out = guard.hand_out(src)
    assert out is not src and torch.equal(out, src) and out.stride() == src.stride()  # channels_last kept
    assert out.data_ptr() != src.data_ptr()
    del src
    assert _alive(ref) and FakeEvent.made[0].recorded  # recorded right after the copy
    FakeEvent.made[0].done = True
    guard.next_requested()
    assert not _alive(ref)


def test_at_most_max_held_batches_then_the_oldest_is_waited_for():
    guard = HandoffGuard("cpu", "view", new_event=FakeEvent, max_held=2)
    for i in range(4):
        guard.hand_out(torch.full((2,), float(i)))
        guard.next_requested()
    assert guard.held == 2 and [e.waited for e in FakeEvent.made] == [1, 1, 0, 0]
    guard.close()  # waits for the rest
    assert guard.held == 0 and all(e.done for e in FakeEvent.made)


def test_bad_mode_is_a_one_line_error():
    with pytest.raises(ValueError, match="loader.handoff: 'share'; expected one of view, copy"):
        HandoffGuard("cpu", "share")


@pytest.mark.parametrize("mode", ["view", "copy"])
def test_the_loader_records_an_event_per_batch_when_the_next_is_asked_for(tmp_path, monkeypatch, mode):
    class Guard(HandoffGuard):
        def __init__(self, device, mode="view", new_event=None, max_held=4):
            super().__init__(device, mode, new_event=FakeEvent, max_held=max_held)

    monkeypatch.setattr("tsn_dali.data.render.loader.HandoffGuard", Guard)
    root = make_dataset(tmp_path, 6)
    loader = build_loader(load_recipe(recipe_yaml(root, batch_size=2), overrides=[f"loader.handoff={mode}"]),
                          "train", progress=False)
    seen = []
    for batch in loader:
        seen.append(batch.clips.clone())
        # view: this batch's event comes when the next one is asked for; copy: right away
        assert len(FakeEvent.made) == (len(seen) - 1 if mode == "view" else len(seen))
    assert len(seen) == 3 and len(FakeEvent.made) == 3
    assert all(e.recorded for e in FakeEvent.made)
    assert all(e.done for e in FakeEvent.made)  # the end of the pass waited for all of them
    assert handoff.MODES == ("view", "copy")
