"""How a GPU worker's thread waits for its device.

Every read of a result (`.tolist()`, `.cpu()`) waits for the GPU. With one CUDA context per
process and more cores than contexts, CUDA's default ("auto") spins a core for the whole wait:
eight TorchServe workers sharing one GPU each burn a core while their kernels queue behind the
others', and that spinning is counted as the worker's CPU. "block" makes the thread sleep on an
OS primitive until the device is done instead (a wake-up of some microseconds per wait).

Set through the driver API (cuDevicePrimaryCtxSetFlags), the one place that covers every wait
PyTorch makes, before PyTorch creates the device's primary context. PyTorch does not expose it.
"""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger(__name__)

# CUcontext scheduling flags (cuda.h, CU_CTX_SCHED_*).
SCHEDULES = {"auto": 0x0, "spin": 0x1, "yield": 0x2, "block": 0x4}


def set_sync_schedule(ordinal: int, schedule: str) -> bool:
    """Ask the driver to wait for device `ordinal` this way (a key of SCHEDULES); True if it took.
    Call before the first CUDA work on that device; False (logged) where the driver is missing or
    refuses, and the worker keeps CUDA's default."""
    if schedule not in SCHEDULES:
        raise ValueError(f"cuda_sync must be one of {sorted(SCHEDULES)}, not {schedule!r}")
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        logger.warning("cuda_sync=%s not applied: no CUDA driver library", schedule)
        return False
    device = ctypes.c_int()
    steps = (
        ("cuInit", lambda: driver.cuInit(0)),
        ("cuDeviceGet", lambda: driver.cuDeviceGet(ctypes.byref(device), ordinal)),
        ("cuDevicePrimaryCtxSetFlags", lambda: _primary_context_flags(driver)(device, SCHEDULES[schedule])),
    )
    for step, call in steps:
        error = call()
        if error != 0:
            logger.warning("cuda_sync=%s not applied: %s returned CUresult %d", schedule, step, error)
            return False
    return True


def _primary_context_flags(driver):
    """cuDevicePrimaryCtxSetFlags; its _v2 entry point (CUDA 11+) where the driver has it, which
    also changes an already active primary context's flags."""
    return getattr(driver, "cuDevicePrimaryCtxSetFlags_v2", None) or driver.cuDevicePrimaryCtxSetFlags
