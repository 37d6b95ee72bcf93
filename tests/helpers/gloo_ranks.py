"""Two gloo ranks (spawned processes, file:// rendezvous) running one small engine scenario;
each rank writes ``<work>/rank<r>.json``: what the scenario returned, or the error it raised.

``run_ranks(work, scenario)`` starts both and returns ``{rank: result}``; ``spawn_two`` is
the spawning and waiting it shares with other two-rank tests. Scenarios:

- ``link_fails``: CheckpointSaver.save_epoch where rank 0's best.pth link fails.
- ``signal_on_rank1``: train.fit over three stub epochs where rank 1 alone got SIGTERM.
- ``ddp_layout``: DDP over a batch laid out as the loader's (channels_last views), with the
  model channels_last and contiguous: the warnings and the gradients' strides of each.
"""
from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

PG_TIMEOUT = 20.0  # seconds: a rank left waiting in a collective fails the test, not hangs it


def _link_fails(info, work: Path) -> dict:
    from tsn_dali.engine import saver as saver_mod
    from tsn_dali.engine.errors import CheckpointError

    def broken_link(src, dst):
        if info.is_main:
            raise CheckpointError(f"{dst}: could not write the checkpoint (No space left on device)")

    saver_mod.link_or_copy = broken_link
    saver = saver_mod.CheckpointSaver(work / "ckpt", info, checkpoint_interval=1, epochs=2)
    try:
        saver.save_epoch(lambda: {"epoch": 1}, 1, improved=True)
    except CheckpointError as exc:
        return {"error": str(exc)}
    return {"error": None}


def _signal_on_rank1(info, work: Path) -> dict:
    import signal
    from types import SimpleNamespace

    import tsn_dali.train as train_mod
    from tsn_dali.engine.signals import StopRequest

    epochs = []
    train_mod.train_one_epoch = lambda run, epoch: epochs.append(epoch) or {}
    train_mod.end_epoch = lambda run, epoch, entry, reported: reported
    stop = StopRequest()
    stop.signum = signal.SIGTERM if info.rank == 1 else None
    run = SimpleNamespace(cfg=SimpleNamespace(epochs=3), info=info, stop=stop, stopped=None, signum=0)
    train_mod.fit(run, 0)
    return {"epochs": epochs, "stopped": run.stopped, "signum": int(run.signum)}


def _ddp_layout(info, work: Path) -> dict:
    import warnings

    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    def model():  # a 1x1 convolution: its weight's strides are where layouts disagree
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 1), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))

    # two threads: oneDNN's convolution (which, as cuDNN, gives channels_last gradients for
    # channels_last inputs) is what torch picks then; with one it may take a path that does not
    torch.set_num_threads(2)
    clips = torch.rand(2, 3, 16, 16, 3).permute(0, 1, 4, 2, 3)  # [N, V, C, H, W] over NVHWC, as a batch
    out = {}
    # channels_last first: DDP's warning is given once per process, so the order matters
    for name, net in (("channels_last", model().to(memory_format=torch.channels_last)), ("contiguous", model())):
        ddp = DDP(net)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                ddp(clips.flatten(0, 1)).sum().backward()
        out[name] = [str(w.message).splitlines()[0] for w in caught]
        # DDP's layout contract: a gradient's strides are its parameter's
        out[name + "_mismatched"] = [n for n, p in net.named_parameters() if p.grad.stride() != p.stride()]
    return out


SCENARIOS = {"link_fails": _link_fails, "signal_on_rank1": _signal_on_rank1, "ddp_layout": _ddp_layout}


def run_rank(rank: int, world_size: int, work: str, scenario: str) -> None:
    import torch
    import torch.distributed as dist

    from tsn_dali.engine.distributed import DistInfo

    work = Path(work)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{work / 'rendezvous'}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=PG_TIMEOUT))
    info = DistInfo(rank, world_size, rank, torch.device("cpu"), True)
    try:
        result = SCENARIOS[scenario](info, work)
    except Exception as exc:  # noqa: BLE001 - reported to the test
        result = {"raised": f"{type(exc).__name__}: {exc}"}
    (work / f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def spawn_two(target, args, done, wait_s: float = 120.0) -> None:
    """Run ``target(rank, *args)`` for ranks 0 and 1 in spawned processes until ``done(procs)``
    is true or ``wait_s`` passed; whatever still runs then is killed."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=(r, *args)) for r in range(2)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + wait_s
    try:
        while not done(procs) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()


def run_ranks(work: Path, scenario: str, wait_s: float = 120.0) -> dict:
    """Both ranks' results ({rank: dict}; a rank that wrote none is missing)."""
    spawn_two(run_rank, (2, str(work), scenario), lambda procs: not any(p.is_alive() for p in procs), wait_s)
    return {r: json.loads((work / f"rank{r}.json").read_text())
            for r in range(2) if (work / f"rank{r}.json").is_file()}
