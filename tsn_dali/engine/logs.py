"""Run logs: a JSONL file per run, a tqdm bar on rank 0, TensorBoard when importable."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Optional


class RunLog:
    """Append-only JSONL log (one object a line) plus optional TensorBoard scalars.

    Only rank 0 writes; on other ranks every method is a no-op. A line that cannot be
    written (a full disk) is said once on stderr and the log stops there: a log never stops
    training (the checkpoint write, which then fails too, says what happened and stops it).
    """

    def __init__(self, work_dir, enabled: bool, prefix: str = "train"):
        self.enabled = enabled
        self.path: Optional[Path] = None
        self._file = None
        self._tb = None
        if not enabled:
            return
        stamp = time.strftime("%Y%m%d_%H%M%S")
        self.path = Path(work_dir) / f"{prefix}_{stamp}.jsonl"
        n = 1
        while self.path.exists():
            n += 1
            self.path = Path(work_dir) / f"{prefix}_{stamp}_{n}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", buffering=1)
        try:  # optional: torch.utils.tensorboard needs the tensorboard package
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(Path(work_dir) / "tensorboard"))
        except Exception:  # noqa: BLE001 - any import problem means no TensorBoard
            self._tb = None

    def write(self, record: dict, step: Optional[int] = None) -> None:
        if not self.enabled or self._file is None:
            return
        try:
            self._file.write(json.dumps(_plain(record)) + "\n")
        except OSError as exc:
            self._give_up(exc)
            return
        if self._tb is not None and step is not None:
            kind = record.get("kind", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step"):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def _give_up(self, exc: OSError) -> None:
        print(f"warning: {self.path}: could not write the run log ({exc.strerror or exc}); it stops here, "
              "training goes on", file=sys.stderr, flush=True)
        file, self._file = self._file, None
        try:
            file.close()
        except OSError:
            pass

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._give_up(exc)
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _plain(record: dict) -> dict:
    out = {}
    for k, v in record.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)  # JSON has no nan/inf
        out[k] = v
    return out


def progress_bar(total: int, desc: str, enabled: bool, initial: int = 0):
    """A tqdm bar on rank 0 (None elsewhere)."""
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)
