"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a test module of tiny models: on a busy 2-core machine
    torch's spin-waiting threads stall small forwards by orders of magnitude."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
