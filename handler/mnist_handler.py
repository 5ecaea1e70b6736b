"""TorchServe handler: a batch of image requests -> one forward pass -> a digit per request.

Each request is decoded and validated on its own (handler/preprocess/); a bad one gets its own
4xx JSON answer through `context.set_response_status`, and the rest of the batch is unaffected.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from ts.metrics.metric_cache_errors import MetricsCacheKeyError
from ts.metrics.metric_type_enum import MetricTypes

from handler import worker_socket
from handler.cuda_sync import checked_schedule, set_sync_schedule
from handler.errors import InputError, RequestError
from handler.preprocess import RequestBatch, decode_batch, read_digits
from handler.preprocess.mnistify import GPU_MIN_PIXELS
from model import load_checkpoint, served_network

logger = logging.getLogger(__name__)

# Handler metrics, declared in handler/metrics.yaml so that Prometheus exports them.
# name -> (type, unit, extra dimension after ModelName)
METRICS = {
    "DigitPredictions": (MetricTypes.COUNTER, "count", "Digit"),
    "LowConfidencePredictions": (MetricTypes.COUNTER, "count", None),
    "RejectedInputs": (MetricTypes.COUNTER, "count", "Reason"),
    "InternalErrors": (MetricTypes.COUNTER, "count", None),  # requests answered 500: bugs of ours
    "DigitBatchSize": (MetricTypes.HISTOGRAM, "count", None),
    "PreprocessTime": (MetricTypes.HISTOGRAM, "ms", None),
    "HandlerTime": (MetricTypes.GAUGE, "ms", "Level"),  # TorchServe's own, with its Level="Model"
    "PredictionTime": (MetricTypes.GAUGE, "ms", "Level"),  # TorchServe's worker records it; see _route_prediction_time
}
# Metrics leave the worker from a background thread every this many seconds (model-config.yaml,
# handler.metrics_flush_seconds; 0: at the end of each batch): counters summed, histogram and
# gauge observations as they came. Every metric is a line the frontend reads from the worker's
# stdout and parses; one line per digit per batch cost as much frontend CPU as the request itself,
# and writing lines from the request path stalled batches on the pipe (README, "Performance").
METRICS_FLUSH_SECONDS = 1.0
REQUEST_ID_HEADER = "X-Client-Request-ID"  # echoed on each answer (see _echo_request_id)


def _not_per_batch_chatter(record: logging.LogRecord) -> bool:
    """Drops the line TorchServe's worker logs at INFO before every batch ("Backend received
    inference at: <epoch>", ts/protocol/otf_message_handler.py): the frontend reads each line of a
    worker's output and copies it to model_log.log, and under load these were the most frequent
    lines there, timing nothing that the access log and the metrics do not."""
    return record.msg != "Backend received inference at: %d"


class DigitHandler:
    """What TorchServe calls: `initialize(context)` once per worker, `handle(data, context)` per batch.

    Not a subclass of ts.torch_handler.base_handler.BaseHandler, on purpose: its initialize loads
    a model by its own rules (TorchScript or an eager model file with a state dict, optional
    torch.compile) where ours rebuilds the network from the config saved in its checkpoint, and
    its handle passes only inference's output to postprocess, where our answers also need each
    request's error. Keeping the base class would mean overriding both and inheriting nothing
    (explain/describe are not offered); TorchServe needs only these two methods.
    """

    def __init__(self) -> None:
        self.initialized = False
        self.context = None

    def initialize(self, context) -> None:
        properties = context.system_properties
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler", {})
        # One intra-op thread per worker: workers, not threads, are how this service scales on CPU;
        # more threads per worker only fight each other for the same cores.
        torch.set_num_threads(int(settings.get("torch_threads", 1)))
        logging.getLogger().addFilter(_not_per_batch_chatter)  # the root logger, which TorchServe logs it to
        if settings.get("buffered_socket", True) and worker_socket.in_torchserve_worker():
            worker_socket.install()
        self.low_confidence = float(settings.get("low_confidence", 0.6))
        self.gpu_min_pixels = int(settings.get("gpu_min_pixels", GPU_MIN_PIXELS))

        gpu_id = properties.get("gpu_id")
        schedule = checked_schedule(settings.get("cuda_sync", "auto"))
        if torch.cuda.is_available() and gpu_id is not None:
            if schedule != "auto":  # before set_device creates the context (handler/cuda_sync.py)
                set_sync_schedule(int(gpu_id), schedule)
            self.device = torch.device(f"cuda:{gpu_id}")
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        weights = Path(properties["model_dir"]) / context.manifest["model"]["serializedFile"]
        # Read on the CPU (the network is rebuilt there from its config), then moved once.
        self.model = served_network(load_checkpoint(weights), properties.get("batch_size")).to(self.device)
        self.model_name = context.model_name
        self._declare_metrics(context.metrics)
        self._route_prediction_time(context.metrics)
        self._counters: Counter[tuple[str, tuple[str, ...]]] = Counter()  # (name, dimensions) -> sum
        self._observations: list[tuple[str, float, tuple[str, ...]]] = []  # histograms: (name, value, dimensions)
        self._gauges: dict[tuple[str, tuple[str, ...]], float] = {}  # (name, dimensions) -> the latest value
        self._pending_lock = threading.Lock()
        self.flush_seconds = float(settings.get("metrics_flush_seconds", METRICS_FLUSH_SECONDS))
        if self.flush_seconds > 0:
            threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()
        with torch.inference_mode():  # first call allocates; keep it off the first request
            self.model(torch.zeros(1, 1, 28, 28, device=self.device))
        self.context = context
        self.initialized = True
        logger.info("digit model loaded on %s from %s", self.device, weights)

    def preprocess(self, data: list[dict]) -> RequestBatch:
        start = time.perf_counter()
        batch = decode_batch(data, self.device, gpu_min_pixels=self.gpu_min_pixels)
        self._observe("PreprocessTime", (time.perf_counter() - start) * 1000)
        return batch

    def inference(self, batch: RequestBatch) -> torch.Tensor | None:
        """(N, 10) probabilities on the CPU for the batch's N images, None if every request failed."""
        if len(batch.images) == 0:
            return None
        probabilities = read_digits(self.model, batch.images, self.device)
        self._observe("DigitBatchSize", len(batch.images))
        return probabilities

    def handle(self, data: list[dict], context) -> list[str]:
        start = time.perf_counter()
        self.context = context
        batch = self.preprocess(data)
        answers = self.postprocess(batch, self.inference(batch))
        self._observe("HandlerTime", round((time.perf_counter() - start) * 1000, 2), "Model")
        if self.flush_seconds <= 0:
            self.flush_metrics()
        return answers

    def postprocess(self, batch: RequestBatch, probabilities: torch.Tensor | None) -> list[str]:
        predictions = self._predictions(probabilities) if probabilities is not None else []
        for digit, count in Counter(p["digit"] for p in predictions).items():
            self._add("DigitPredictions", count, str(digit))
        unsure = sum(p["confidence"] < self.low_confidence for p in predictions)
        if unsure:
            self._add("LowConfidencePredictions", unsure)
        answers = []
        for idx, (span, instances) in enumerate(zip(batch.outcomes, batch.instances)):
            self.context.set_response_content_type(idx, "application/json")
            self._echo_request_id(idx)
            if isinstance(span, RequestError):
                self.context.set_response_status(span.status, span.message, idx)
                if isinstance(span, InputError):
                    self._add("RejectedInputs", 1, span.reason)
                else:
                    self._add("InternalErrors", 1)
                answers.append(json.dumps(span.body()))
            elif instances:
                answers.append(json.dumps({"predictions": predictions[span]}))
            else:
                answers.append(json.dumps(predictions[span.start]))
        return answers

    def _echo_request_id(self, idx: int) -> None:
        """The request's X-Client-Request-ID back on its answer: a caller can check that the answer is its
        own. TorchServe 0.12's frontend has delivered a batch's answers to other requests when a
        worker was scaled down mid-batch (README, "Operations"); DigitClient sends one and retries
        an answer that carries another."""
        for name, value in self.context.get_all_request_header(idx).items():
            if name.lower() == REQUEST_ID_HEADER.lower():
                self.context.set_response_header(idx, REQUEST_ID_HEADER, value)
                return

    @staticmethod
    def _predictions(probabilities: torch.Tensor) -> list[dict]:
        """(N, 10) float32 probabilities on the CPU -> per row its answer: the first most probable
        digit, and the probabilities rounded to 6 places. Rounded for the whole batch in float64,
        where a float32 times 1e6 is exact, so each is what Python's round(p, 6) gives
        (tests/test_handler.py) for a fraction of its cost; numpy, whose calls cost less than
        torch's on a batch of one."""
        p = probabilities.numpy()
        return [{"digit": digit, "confidence": row[digit], "probabilities": row}
                for digit, row in zip(p.argmax(1).tolist(), np.round(p.astype(np.float64), 6).tolist())]

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

    def _route_prediction_time(self, metrics) -> None:
        """TorchServe's worker records the PredictionTime gauge after every batch with
        `metrics.add_time` (ts/service.py), a line on stdout naming every request id of the batch
        for the frontend to parse. Kept here instead, and flushed as its latest value with the other
        gauges: what Prometheus reads of a gauge anyway."""
        torchserve_add_time = metrics.add_time

        def add_time(name, value, idx=None, unit="ms", dimensions=None, metric_type=MetricTypes.GAUGE):
            if name == "PredictionTime" and idx is None and not dimensions and unit == "ms":
                self._observe("PredictionTime", value, "Model")
            else:
                torchserve_add_time(name, value, idx, unit, dimensions or [], metric_type)

        metrics.add_time = add_time

    def _add(self, counter: str, value: int, *dimensions: str) -> None:
        with self._pending_lock:
            self._counters[counter, dimensions] += value

    def _observe(self, name: str, value: float, *dimensions: str) -> None:
        with self._pending_lock:
            if METRICS[name][0] is MetricTypes.GAUGE:  # a gauge is read as its latest value
                self._gauges[name, dimensions] = value
            else:
                self._observations.append((name, value, dimensions))

    def flush_metrics(self) -> None:
        """Emit what was recorded since the last flush: each histogram observation, the latest value
        of each gauge, and one line per counter and dimension."""
        with self._pending_lock:
            counters, self._counters = self._counters, Counter()
            observations, self._observations = self._observations, []
            gauges, self._gauges = self._gauges, {}
        for name, value, dimensions in observations:
            self._emit(name, value, *dimensions)
        for (name, dimensions), value in gauges.items():
            self._emit(name, value, *dimensions)
        for (counter, dimensions), value in sorted(counters.items()):
            self._emit(counter, value, *dimensions)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            try:
                self.flush_metrics()
            except Exception:  # never let metrics take the worker down
                logger.exception("metrics flush failed")

    def _emit(self, name: str, value: float, *dimensions: str) -> None:
        kind = METRICS[name][0]
        self.metrics.get_metric(name, kind).add_or_update(value, [self.model_name, *dimensions])
