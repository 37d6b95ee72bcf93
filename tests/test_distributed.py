"""engine.distributed: the process-group timeout outlasts the loader's stall timeout."""
from __future__ import annotations

from datetime import timedelta

from tsn_dali.config import load_recipe
from tsn_dali.engine.distributed import process_group_timeout


def test_process_group_timeout_outlasts_the_stall_timeout():
    # a stalled rank saves after loader.stall_timeout; its peers' collectives must wait longer
    stall = load_recipe("k400_r50.yaml").loader.stall_timeout
    assert process_group_timeout(stall) > timedelta(seconds=stall) + timedelta(minutes=4)
    assert process_group_timeout(600) == timedelta(minutes=30)  # never under 30 min
    assert process_group_timeout(3600) == timedelta(seconds=3900)
    assert process_group_timeout(None) == process_group_timeout(0) == timedelta(minutes=30)  # stall check off
