"""Training tests share two CPU cores with other work: one intra-op thread per process is much faster than two
threads fighting over them for these tiny models."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
