"""A loader that runs ahead (tsn_dali.data.render.streams): on a GPU the render thread works
on a stream of the loader's own and never waits for the device; the asking thread's stream
waits for a batch's event. No GPU here: CUDA's streams and events are stood in for by
recording objects; the loader's calls into them are the same."""
from __future__ import annotations

import threading

import pytest
import torch

from helpers.tiny_clips import make_dataset, recipe_yaml
from tsn_dali.config import load_recipe
from tsn_dali.data import build_loader
from tsn_dali.data.render import loader as loader_module
from tsn_dali.data.render.streams import HostStream, RenderStream, Retainer


class Event:
    made = []

    def __init__(self):
        self.recorded_on, self.done, self.waits = None, False, 0
        Event.made.append(self)

    def record(self, stream=None):
        self.recorded_on = stream or "current"

    def query(self):
        return self.done

    def synchronize(self):
        self.waits += 1
        self.done = True


class FakeCuda:
    """torch.cuda's stream API, recording who called what from which thread."""

    def __init__(self):
        self.calls = []
        self.consumer = _Stream(self, "consumer")

    def Stream(self, device=None):  # noqa: N802 - torch.cuda's name
        return _Stream(self, "loader")

    def stream(self, stream):
        cuda = self

        class Context:
            def __enter__(self):
                cuda.calls.append((threading.current_thread().name, "enter", stream.name))

            def __exit__(self, *exc):
                cuda.calls.append((threading.current_thread().name, "exit", stream.name))

        return Context()

    def current_stream(self, device=None):
        return self.consumer

    Event = Event


class _Stream:
    def __init__(self, cuda, name):
        self.cuda, self.name = cuda, name

    def wait_event(self, event):
        self.cuda.calls.append((threading.current_thread().name, f"{self.name}.wait_event", event))

    def synchronize(self):
        raise AssertionError("a stream-wide wait")


@pytest.fixture(autouse=True)
def fresh():
    Event.made = []


def test_retainer_holds_until_the_event_and_never_waits_while_working():
    kept = Retainer("cuda", new_event=Event)
    a, b = object(), object()
    kept.retain(a)
    kept.retain(b)
    assert kept.held == 2 and all(e.waits == 0 for e in Event.made)
    Event.made[0].done = True
    kept.sweep()
    assert kept.held == 1
    kept.close()
    assert kept.held == 0 and Event.made[1].waits == 1
    assert Retainer("cpu").retain(a) is None and Retainer("cpu").held == 0


def test_render_stream_orders_by_events_only():
    cuda = FakeCuda()
    rs = RenderStream("cuda:0", cuda=cuda)
    with rs.rendering():
        event = rs.ready()
    assert event.recorded_on is rs.stream  # after the loader stream's work
    batch = [torch.zeros(2), torch.zeros(2)]
    rs.consume(batch, event)
    assert [c[1] for c in cuda.calls] == ["enter", "exit", "consumer.wait_event"]
    assert cuda.calls[-1][2] is event
    rs.consume(batch, None)  # nothing to wait for
    assert len(cuda.calls) == 3


def test_host_stream_is_a_no_op():
    hs = HostStream("cpu")
    t = torch.ones(3)
    assert hs.to_device(t) is t and hs.ready() is None and hs.consume([t], None) is None


class Recording(HostStream):
    """The loader's stream object on a CPU, recording which thread calls what."""

    log = []

    def rendering(self):
        outer = self

        class Context:
            def __enter__(self):
                outer.log.append((threading.current_thread().name, "rendering"))

            def __exit__(self, *exc):
                outer.log.append((threading.current_thread().name, "rendered"))

        return Context()

    def ready(self):
        event = object()
        self.log.append((threading.current_thread().name, "ready", event))
        return event

    def consume(self, tensors, ready):
        self.log.append((threading.current_thread().name, "consume", ready))

    def retain(self, *objects):
        self.log.append((threading.current_thread().name, "retain"))

    def to_device(self, tensor):
        self.log.append((threading.current_thread().name, "to_device"))
        return tensor


@pytest.mark.parametrize("prefetch", [0, 2])
def test_the_loader_renders_on_its_stream_and_the_consumer_waits_on_events(tmp_path, monkeypatch, prefetch):
    Recording.log = []
    monkeypatch.setattr(loader_module, "render_stream", lambda device: Recording(device))

    def no_wait(*args, **kwargs):
        raise AssertionError("a device-wide or stream-wide wait")

    monkeypatch.setattr(torch.cuda, "synchronize", no_wait)
    root = make_dataset(tmp_path, 3)
    loader = build_loader(load_recipe(recipe_yaml(root, test_batch_size=2),
                                      overrides=[f"loader.prefetch={prefetch}", "loader.eval_videos_per_run=2"]),
                          "test", progress=False)
    me = threading.current_thread().name
    batches = list(loader)
    loader.close()
    log = Recording.log
    assert [b.samples.tolist() for b in batches] == [[0, 1], [2, -1]]
    renderer = {name for name, *_ in log if _[0] == "rendering"}
    assert renderer == ({me} if prefetch == 0 else {n for n in renderer if n != me}) and renderer
    # each group: rendering ... ready (inside), then the consumer waits on that very event
    readies = [e for name, what, *e in log if what == "ready"]
    consumed = [e for name, what, *e in log if what == "consume"]
    assert [r[0] for r in readies] == [c[0] for c in consumed]
    assert all(name == me for name, what, *_ in log if what == "consume")
    # label copies and the padded batch's keep-alive happen while rendering, off the consumer
    # (with prefetch 0 the caller renders, inside the stream context all the same)
    depth, inside = 0, []
    for name, what, *_ in log:
        depth += what == "rendering"
        depth -= what == "rendered"
        if what in ("to_device", "retain", "ready"):
            inside.append(depth == 1)
    assert inside and all(inside)
    assert sum(what == "retain" for _, what, *_ in log) == 1  # the padded batch only
