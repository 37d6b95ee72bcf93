"""engine.distributed: the process-group timeout outlasts the loader's stall timeout."""
from __future__ import annotations

from datetime import timedelta

import pytest

from tsn_dali.config import load_recipe
from tsn_dali.engine.distributed import process_group_timeout


def test_process_group_timeout_outlasts_the_stall_timeout():
    # a stalled rank saves after loader.stall_timeout; its peers' collectives must wait longer
    stall = load_recipe("k400_r50.yaml").loader.stall_timeout
    assert process_group_timeout(stall) > timedelta(seconds=stall) + timedelta(minutes=4)
    assert process_group_timeout(600) == timedelta(minutes=30)  # never under 30 min
    assert process_group_timeout(3600) == timedelta(seconds=3900)
    assert process_group_timeout(None) == process_group_timeout(0) == timedelta(minutes=30)  # stall check off


def test_cuda_device_for_every_launcher():
    from tsn_dali.engine.distributed import cuda_index
    from tsn_dali.errors import UsageError

    # one process: cuda -> the current device; cuda:0 is device 0, cuda:1 device 1
    assert cuda_index("cuda", 1, 0, visible=4, current=2) == 2
    assert cuda_index("cuda:0", 1, 0, visible=4, current=2) == 0
    assert cuda_index("cuda:1", 1, 0, visible=4, current=0) == 1
    # torchrun, 8 visible: LOCAL_RANK; a launcher that shows each task one GPU: device 0
    assert [cuda_index("cuda", 8, r, 8, 0) for r in range(8)] == list(range(8))
    assert [cuda_index("cuda", 8, r, 1, 0) for r in range(8)] == [0] * 8
    for bad in (lambda: cuda_index("cuda", 8, 5, 4, 0), lambda: cuda_index("cuda:4", 1, 0, 4, 0),
                lambda: cuda_index("cuda:x", 1, 0, 4, 0)):
        with pytest.raises(UsageError):
            bad()
