"""Two gloo ranks (spawned processes, file:// rendezvous) building the video index with a
slowed, stubbed probe under a short process-group timeout.

``run_rank(rank, world_size, work, mode, timeout_s, delays)``: each rank writes
``<work>/rank<r>.json`` with what it probed and the index it got, or ``<work>/rank<r>.error``
with the error it raised. Modes:

- ``loader``: build_loader for train and val (the real path), then an all_reduce to show
  the group is alive; ``loader-full``: the same with rank 1 seeing other cache files
  than rank 0, so that every share carries all its rows.
- ``stall``: rank 1's probe never returns; rank 0 must stop with IndexBuildError.
"""
from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from pathlib import Path



def _rendezvous(work: Path, rank: int, world_size: int, timeout_s: float):
    """Start both ranks' init_process_group within ~50 ms of each other (a file handshake),
    so that the short timeout measures the build, not Python's start-up."""
    import torch.distributed as dist

    (work / f"ready{rank}").touch()
    while not all((work / f"ready{r}").exists() for r in range(world_size)):
        time.sleep(0.02)
    dist.init_process_group("gloo", init_method=f"file://{work / 'rendezvous'}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=timeout_s))


def run_rank(rank: int, world_size: int, work: str, mode: str, timeout_s: float, delays):
    import torch
    import torch.distributed as dist

    from tsn_dali.data.index import video_index

    work = Path(work)
    torch.set_num_threads(1)
    real_probe = video_index.probe_video
    probed = []

    def slow_probe(path):
        probed.append(path)
        if mode == "stall" and rank == 1 and len(probed) == 2:
            time.sleep(3600)  # a probe that never returns
        time.sleep(delays[rank])
        return real_probe(path)

    video_index.probe_video = slow_probe
    if mode == "loader-full" and rank == 1:  # this rank reads other cache files: full shares
        from tsn_dali.data.index import cache as index_cache

        index_cache.IndexCache.snapshot = lambda self: "another snapshot"
    _rendezvous(work, rank, world_size, timeout_s)
    result = {"rank": rank}
    try:
        if mode.startswith("loader"):
            from tsn_dali.config import load_recipe
            from tsn_dali.data import build_loader

            recipe = load_recipe(str(work / "data" / "recipe.yaml"))
            for split in ("train", "val"):
                start = time.monotonic()
                loader = build_loader(recipe, split, rank=rank, world_size=world_size, progress=False)
                result[split] = {
                    "seconds": time.monotonic() - start, "probed": list(probed), "len": len(loader),
                    "index": {i.path: [i.num_frames, i.error] for i in loader.index},
                    "dropped": [d["path"] for d in loader.stats["dropped"]]}
                probed.clear()
                loader.close()
            total = torch.tensor([float(rank + 1)])
            dist.all_reduce(total)  # the group is still alive after both builds
            result["all_reduce"] = total.item()
        else:
            from tsn_dali.data.index.build import build_index

            paths = sorted(str(p) for p in (work / "data" / "videos").iterdir())
            build_index(paths, cache_dir=work / "data" / "cache", workers=1, progress=False,
                        stall_timeout=2.0, poll=0.1)
        (work / f"rank{rank}.json").write_text(json.dumps(result))
    except Exception as exc:  # reported to the test through a file
        (work / f"rank{rank}.error").write_text(f"{type(exc).__name__}: {exc}")
        os._exit(1)  # no destroy_process_group: the other rank may be hung
    dist.destroy_process_group()
