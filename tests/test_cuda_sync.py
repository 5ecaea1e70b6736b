"""handler/cuda_sync.py: the GPU worker's wait schedule, set before its context exists."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
import torch

from handler import cuda_sync


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="cuda_sync must be one of"):
        cuda_sync.set_sync_schedule(0, "busy")


def test_without_a_driver_the_worker_keeps_cudas_default(monkeypatch, caplog):
    def no_library(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(cuda_sync.ctypes, "CDLL", no_library)
    with caplog.at_level(logging.WARNING, logger=cuda_sync.__name__):
        assert cuda_sync.set_sync_schedule(0, "block") is False
    assert "cuda_sync=block not applied: no CUDA driver library" in caplog.text


def test_a_refusing_driver_is_logged_not_raised(monkeypatch, caplog):
    class Driver:
        def cuInit(self, flags):
            return 100  # CUDA_ERROR_NO_DEVICE

    monkeypatch.setattr(cuda_sync.ctypes, "CDLL", lambda name: Driver())
    with caplog.at_level(logging.WARNING, logger=cuda_sync.__name__):
        assert cuda_sync.set_sync_schedule(0, "block") is False
    assert "cuInit returned CUresult 100" in caplog.text


def test_the_handler_on_the_cpu_ignores_the_setting_but_checks_it():
    from harness.inprocess import load_handler

    handler, _ = load_handler(cuda_sync="block")
    assert handler.device == torch.device("cpu")
    with pytest.raises(ValueError, match="not 'blocking'"):
        load_handler(cuda_sync="blocking")


# In a fresh process: the schedule must be set before anything creates the device's context.
_CONTEXT_FLAGS = """
import ctypes, torch
from handler.cuda_sync import set_sync_schedule
assert set_sync_schedule(0, "block")
torch.zeros(1, device="cuda:0")
flags = ctypes.c_uint()
assert ctypes.CDLL("libcuda.so.1").cuCtxGetFlags(ctypes.byref(flags)) == 0
print(flags.value & 0x7)
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_block_reaches_the_context_that_torch_creates():
    out = subprocess.run([sys.executable, "-c", _CONTEXT_FLAGS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) == cuda_sync.SCHEDULES["block"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_blocking_gpu_worker_reads_what_the_cpu_reads(mnist_sample):
    from harness.inprocess import load_handler
    from tests.conftest import png_bytes

    requests = [{"body": png_bytes(p)} for p in mnist_sample[0][:16]]
    read = {}
    for gpu_id in (None, 0):
        handler, context = load_handler(gpu_id=gpu_id, cuda_sync="block")
        read[gpu_id] = [json.loads(a)["digit"] for a in handler.handle(requests, context)]
    assert handler.device == torch.device("cuda:0")
    assert read[0] == read[None]
