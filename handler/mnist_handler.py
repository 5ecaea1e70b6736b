"""TorchServe handler: a batch of image requests -> one forward pass -> a digit per request.

Each request is decoded and validated on its own (handler/preprocess.py); a bad one gets its own
4xx JSON answer through `context.set_response_status`, and the rest of the batch is unaffected.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from ts.metrics.metric_cache_errors import MetricsCacheKeyError
from ts.metrics.metric_type_enum import MetricTypes
from ts.torch_handler.base_handler import BaseHandler

from handler.errors import InputError
from handler.preprocess import RequestBatch, decode_batch, to_batch
from model import fuse_batchnorm, load_checkpoint

logger = logging.getLogger(__name__)

# Handler metrics, declared in handler/metrics.yaml so that Prometheus exports them.
# name -> (type, unit, extra dimension after ModelName)
METRICS = {
    "DigitPredictions": (MetricTypes.COUNTER, "count", "Digit"),
    "LowConfidencePredictions": (MetricTypes.COUNTER, "count", None),
    "RejectedInputs": (MetricTypes.COUNTER, "count", "Reason"),
    "DigitBatchSize": (MetricTypes.HISTOGRAM, "count", None),
    "PreprocessTime": (MetricTypes.HISTOGRAM, "ms", None),
    "HandlerTime": (MetricTypes.GAUGE, "ms", "Level"),  # TorchServe's own, with its Level="Model"
}


class DigitHandler(BaseHandler):
    def initialize(self, context) -> None:
        properties = context.system_properties
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler", {})
        # One intra-op thread per worker: workers, not threads, are how this service scales on CPU;
        # more threads per worker only fight each other for the same cores.
        torch.set_num_threads(int(settings.get("torch_threads", 1)))
        self.low_confidence = float(settings.get("low_confidence", 0.6))

        gpu_id = properties.get("gpu_id")
        if torch.cuda.is_available() and gpu_id is not None:
            self.device = torch.device(f"cuda:{gpu_id}")
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        weights = Path(properties["model_dir"]) / context.manifest["model"]["serializedFile"]
        self.model = fuse_batchnorm(load_checkpoint(weights, map_location=self.device)).to(self.device)
        self.model_name = context.model_name
        self._declare_metrics(context.metrics)
        with torch.inference_mode():  # first call allocates; keep it off the first request
            self.model(torch.zeros(1, 1, 28, 28, device=self.device))
        self.context = context
        self.initialized = True
        logger.info("digit model loaded on %s from %s", self.device, weights)

    def preprocess(self, data: list[dict]) -> RequestBatch:
        start = time.perf_counter()
        batch = decode_batch(data)
        self._emit("PreprocessTime", (time.perf_counter() - start) * 1000)
        return batch

    def inference(self, batch: RequestBatch) -> torch.Tensor | None:
        """(N, 10) probabilities on the CPU for the batch's N images, None if every request failed."""
        if not batch.images:
            return None
        inputs = to_batch(batch.images).to(self.device, non_blocking=True)  # (N, 1, 28, 28)
        with torch.inference_mode():
            probabilities = torch.softmax(self.model(inputs), dim=1).cpu()
        self._emit("DigitBatchSize", len(batch.images))
        return probabilities

    def handle(self, data: list[dict], context) -> list[str]:
        # BaseHandler.handle passes only inference's output to postprocess; answers also need the
        # per-request errors, so the three steps are chained here (describe/explain are not used).
        start = time.perf_counter()
        self.context = context
        batch = self.preprocess(data)
        answers = self.postprocess(batch, self.inference(batch))
        self._emit("HandlerTime", round((time.perf_counter() - start) * 1000, 2), "Model")
        return answers

    def postprocess(self, batch: RequestBatch, probabilities: torch.Tensor | None) -> list[str]:
        answers = []
        if probabilities is not None:
            confidence, digits = probabilities.max(1)  # (N,), (N,)
            for digit, count in zip(*torch.unique(digits, return_counts=True)):
                self._emit("DigitPredictions", count.item(), str(digit.item()))
            low = (confidence < self.low_confidence).sum().item()
            if low:
                self._emit("LowConfidencePredictions", low)
        for idx, (rows, instances) in enumerate(zip(batch.rows, batch.instances)):
            self.context.set_response_content_type(idx, "application/json")
            if isinstance(rows, InputError):
                self.context.set_response_status(rows.status, rows.message, idx)
                self._emit("RejectedInputs", 1, rows.reason)
                answers.append(json.dumps(rows.body()))
                continue
            predictions = [self._prediction(p) for p in probabilities[rows]]
            answers.append(json.dumps({"predictions": predictions} if instances else predictions[0]))
        return answers

    @staticmethod
    def _prediction(probabilities: torch.Tensor) -> dict:
        confidence, digit = (v.item() for v in probabilities.max(0))
        return {"digit": digit, "confidence": round(confidence, 6),
                "probabilities": [round(p, 6) for p in probabilities.tolist()]}

    # ------------------------------------------------------------ metrics

    def _declare_metrics(self, metrics) -> None:
        """Metrics missing from the metrics config are added, so the handler never fails on them."""
        self.metrics = metrics
        for name, (kind, unit, extra) in METRICS.items():
            try:
                metrics.get_metric(name, kind)
            except MetricsCacheKeyError:
                dims = ["ModelName"] + ([extra] if extra else [])
                metrics.add_metric_to_cache(name, unit, dims, kind)

    def _emit(self, name: str, value: float, *dimensions: str) -> None:
        kind = METRICS[name][0]
        self.metrics.get_metric(name, kind).add_or_update(value, [self.model_name, *dimensions])
