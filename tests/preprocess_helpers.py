"""One-image views of the preprocessing for tests (the handler preprocesses whole batches)."""

from __future__ import annotations

import numpy as np
import torch

from handler.preprocess import candidate_views, request_grays
from handler.preprocess.background import noise_levels, noisy
from handler.preprocess.envelopes import PLAIN, Envelope
from handler.preprocess.mnistify import views_of_bytes


def request_images(request: dict, headers: dict | None = None) -> tuple[list[np.ndarray], Envelope]:
    """One request -> its images' primary (28, 28) views and how it is answered, raising its
    InputError: the per-request view that tests and the fuzzer check."""
    grays, envelope = request_grays(request, headers=headers)
    views, errors = candidate_views(grays)
    for error in errors:
        if error is not None:
            raise error
    return [v[0].numpy() for v in views], envelope


def primary_view(data: bytes, denoise_noisy: bool = True) -> np.ndarray:
    """Image file bytes -> its primary (28, 28) view."""
    return views_of_bytes(data, denoise_noisy)[0].numpy()


def noise_level(gray: np.ndarray | torch.Tensor) -> float:
    """One image's noise level (background.noise_levels)."""
    return float(noise_levels(torch.as_tensor(gray, dtype=torch.float32)[None])[0])


def is_noisy(gray: np.ndarray | torch.Tensor) -> bool:
    """Whether the denoise step would run on this image."""
    return len(noisy(torch.as_tensor(gray, dtype=torch.float32)[None])) == 1


def similar(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images' pixels: 1 for the same picture."""
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def one(request: dict) -> np.ndarray:
    """The primary view of a request that holds exactly one image."""
    images, envelope = request_images(request)
    assert len(images) == 1 and envelope == PLAIN
    return images[0]
