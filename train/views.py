"""Training sees what serving sees: augmented digits turned into one of the candidate views the
handler's preprocessing would make of them (handler/preprocess/mnistify.py)."""

from __future__ import annotations

import numpy as np
import torch

from handler.preprocess.framing import already_mnist, fit_and_centre
from handler.preprocess.mnistify import cleaned, ground_and_ink


def training_view(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For training: (N, 28, 28) augmented images -> one of the views serving would make of
    each, drawn at random (either polarity when unclear, filtered or not, as it is or cropped), so
    that the network learns every view it will be shown. The crop without border structures is
    left out (rarely made, costly). Blank images stay as they are."""
    x, dark, ambiguous = ground_and_ink(torch.from_numpy(x.astype(np.float32, copy=False)))
    flip = dark ^ (ambiguous & torch.from_numpy(rng.random(len(x)) < 0.5))
    y, blank, unfiltered = cleaned(torch.where(flip[:, None, None], 1 - x, x), True)
    if unfiltered is not None:
        noisy, raw = unfiltered
        keep = torch.from_numpy(rng.random(len(noisy)) < 0.5)
        y[noisy[keep]] = raw[keep]
    ready = already_mnist(y) & ~blank
    out = torch.where(blank[:, None, None], x, y)
    crop = torch.nonzero(~ready & ~blank & torch.from_numpy(rng.random(len(x)) < 0.5)).flatten()
    if len(crop):
        out[crop] = fit_and_centre(y[crop])
    return out.numpy()
