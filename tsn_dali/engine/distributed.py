"""torchrun setup: rank/world size from the environment, one device per process."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List, Optional

import torch
import torch.distributed as dist

from tsn_dali.errors import UsageError


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized: bool  # this process called init_process_group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: Optional[str]) -> str:
    """``--device``: 'cpu' | 'cuda' (default cuda when available)."""
    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; expected --device cpu")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: expected cpu or cuda")
    return name


def cuda_index(requested: str, world_size: int, local_rank: int, visible: int, current: int) -> int:
    """The CUDA device a process uses (a pure rule, so that every launcher is testable):

    - ``cuda:N``: device N, in one process or under torchrun alike (it must be visible);
    - ``cuda`` in one process: torch's current device;
    - ``cuda`` under torchrun: ``LOCAL_RANK`` where that many GPUs are visible; where each
      task sees one GPU only (SLURM's ``--gpus-per-task=1``, a per-rank
      ``CUDA_VISIBLE_DEVICES``), device 0. Any other shortfall is a UsageError.
    """
    _, _, index = requested.partition(":")
    if index:
        try:
            n = int(index)
        except ValueError:
            raise UsageError(f"--device {requested}: expected cuda or cuda:N") from None
        if not 0 <= n < visible:
            raise UsageError(f"--device {requested}: {visible} CUDA device(s) visible here (0..{visible - 1})")
        return n
    if world_size <= 1:
        return current
    if local_rank < visible:
        return local_rank
    if visible == 1:
        return 0
    raise UsageError(f"LOCAL_RANK {local_rank} but {visible} CUDA devices are visible: launch at most "
                     f"{visible} processes per node, or show each one its own GPU")


def process_group_timeout(stall_timeout: Optional[float]) -> timedelta:
    """How long a collective may wait: at least 30 min, and 5 min beyond ``loader.stall_timeout``
    (0 or None: off), so that a stalled rank saves and exits before a peer's watchdog kills it."""
    return timedelta(seconds=max(1800.0, float(stall_timeout or 0) + 300.0))


def setup_distributed(device: Optional[str] = None, stall_timeout: Optional[float] = None) -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK (torchrun) and join the process group.

    NCCL on CUDA, gloo on CPU; the CUDA device follows ``cuda_index``. A plain
    ``python -m`` run (no WORLD_SIZE) is a single process without a group. Collectives time
    out after ``process_group_timeout(stall_timeout)``.
    """
    kind = resolve_device(device).split(":")[0]
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cuda":
        name = resolve_device(device)
        dev = torch.device("cuda", cuda_index(name, world_size, local_rank, torch.cuda.device_count(),
                                              torch.cuda.current_device()))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    initialized = False
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if kind == "cuda" else "gloo"
        kwargs = {"device_id": dev} if kind == "cuda" else {}
        dist.init_process_group(backend, timeout=process_group_timeout(stall_timeout), **kwargs)
        initialized = True
    return DistInfo(rank, world_size, local_rank, dev, initialized)


def cleanup(info: DistInfo) -> None:
    if info.initialized and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def _all_reduce(values: List[float], info: DistInfo, op) -> List[float]:
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(info))
    dist.all_reduce(t, op=op)
    return t.tolist()


def all_reduce_max(values: List[float], info: DistInfo) -> List[float]:
    """Element-wise max over ranks (stop flags, non-finite flags)."""
    return _all_reduce(values, info, dist.ReduceOp.MAX)


def all_reduce_sum(values: List[float], info: DistInfo) -> List[float]:
    """Element-wise sum over ranks (validation hit counts)."""
    return _all_reduce(values, info, dist.ReduceOp.SUM)


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process)."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _comm_device(info: DistInfo) -> torch.device:
    return info.device if dist.get_backend() == "nccl" else torch.device("cpu")
