"""Explanations: the 28x28 view the network read for an upload, and how much each of its pixels
moved the network toward the digit it answered.

A request to one of TorchServe's explanation routes (open_inference.EXPLAIN_HEADER) is decoded,
preprocessed and read with the rest of its batch, as a prediction is; then the views read for all
the batch's explanation requests get their attributions in one computation: integrated gradients
(captum.attr.IntegratedGradients) of the answered digit's logit, from the blank (black) view to
the view read. A pixel's attribution is its ink times the mean gradient along that path: 0 where
there is no ink, and together they add up to about logit(view) - logit(blank), the Gauss-Legendre
rule's error aside (reports/explanations.md measures it, and the cost and faithfulness that chose
N_STEPS).

The prediction path never comes here: captum (which brings matplotlib, about 0.3 s to import) is
imported when a worker's first explanation request arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from handler.errors import InternalError
from handler.preprocess import RequestBatch
from handler.served_model import ServedCNN

logger = logging.getLogger(__name__)

# Points on the path from the blank view. Each costs a forward and a backward pass per image: at 6,
# an explanation costs 7.5 to 8.5x a prediction's CPU, at 8 about 9x, against a goal of 10x; fewer
# steps leave the attributions' sum further from the logit's rise (their ranking of pixels stays as
# faithful): reports/explanations.md, `make explanations`.
N_STEPS = 6
# Scaled views per forward and backward pass (captum's internal_batch_size): a batch of up to
# INTERNAL_BATCH_SIZE / N_STEPS images is one pass, larger ones are split by steps (at least one
# step of every image per pass), bounding memory.
INTERNAL_BATCH_SIZE = 256
# Decimals in the answers: views come from 8-bit images (steps of 0.0039); attributions are shares
# of the logit's rise from the blank view, about 6 for a clear MNIST digit.
VIEW_DECIMALS, ATTRIBUTION_DECIMALS = 4, 5


class Explainer:
    """Integrated gradients of a served network (handler/served_model.py, ServedCNN)."""

    def __init__(self, model: ServedCNN, n_steps: int = N_STEPS) -> None:
        from captum.attr import IntegratedGradients

        # The fused network behind ServedCNN, same logits: plain module calls that autograd can go
        # back through (not the native small-batch kernel). Only the input's gradient is wanted.
        for parameter in model.network.parameters():
            parameter.requires_grad_(False)
        self.method = IntegratedGradients(model.network)
        self.n_steps = n_steps

    def attributions(self, views: torch.Tensor, digits: list[int]) -> torch.Tensor:
        """(n, 1, 28, 28) views on the worker's device and the digit answered for each -> (n, 28, 28)
        attributions on the CPU."""
        views = views.clone()  # a normal tensor: the views were made under inference mode
        attributions = self.method.attribute(
            views,
            baselines=torch.zeros_like(views),
            target=digits,
            n_steps=self.n_steps,
            # at least one whole step per pass (captum warns otherwise)
            internal_batch_size=max(INTERNAL_BATCH_SIZE, len(views)),
        )
        return attributions[:, 0].detach().cpu()


def explain_batch(
    explainer: Callable[[], Explainer], batch: RequestBatch, probabilities: torch.Tensor, views: torch.Tensor
) -> list[dict | None]:
    """Per image of the batch: {"view", "attributions"} (28 rows of 28 floats each) where its
    request asked for an explanation, else None. `probabilities` (N, 10) and `views` (N, 1, 28, 28)
    are inference.read_views' for the batch's N images; `explainer()` gives the worker's Explainer.
    Should it or the computation fail (a bug of ours, captum missing), each explanation request of
    the batch becomes an InternalError (500) and the batch's predictions are still answered."""
    explained: list[dict | None] = [None] * len(batch.views)
    rows = [
        i
        for span, envelope in zip(batch.outcomes, batch.envelopes)
        if envelope.explain and isinstance(span, slice)
        for i in range(span.start, span.stop)
    ]
    if not rows:
        return explained
    try:
        chosen = views[torch.tensor(rows, device=views.device)]
        attributions = explainer().attributions(chosen, probabilities[rows].argmax(1).tolist())
        shown = zip(rounded(chosen[:, 0], VIEW_DECIMALS), rounded(attributions, ATTRIBUTION_DECIMALS))
        for i, (view, attribution) in zip(rows, shown):
            explained[i] = {"view": view, "attributions": attribution}
    except Exception:
        logger.exception("explaining %d images failed", len(rows))
        for idx, envelope in enumerate(batch.envelopes):
            if envelope.explain and isinstance(batch.outcomes[idx], slice):
                batch.outcomes[idx] = InternalError()
    return explained


def rounded(images: torch.Tensor, decimals: int) -> list[list[list[float]]]:
    """(n, 28, 28) -> per image 28 rows of 28 floats, rounded in float64 (where the decimals are
    exact, as the probabilities are, handler/mnist_handler.py); no -0.0."""
    return (np.round(images.cpu().numpy().astype(np.float64), decimals) + 0.0).tolist()
