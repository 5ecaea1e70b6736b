"""TorchServe handler: a batch of image requests -> one forward pass -> a digit per request.

Each request is decoded and validated on its own (handler/preprocess/); a bad one gets its own
4xx JSON answer through `context.set_response_status`, and the rest of the batch is unaffected.
Requests to TorchServe's explanation routes are read with the rest of their batch and answered
with explanations (handler/explanations.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import torch
from ts.metrics.metric_cache_errors import MetricsCacheKeyError

from handler import fast_paths
from handler.answers import error_answer, explanation_answer, model_metadata, prediction_answer, predictions_of
from handler.calibration import CALIBRATION_FILE, load_calibration
from handler.cuda_sync import set_sync_schedule
from handler.errors import REASONS, InputError, RequestError
from handler.explanations import Explainer, explain_batch
from handler.inference import Reading, read_views
from handler.metric_buffer import METRICS, MetricBuffer
from handler.open_set import OpenSet
from handler.preprocess import RequestBatch, decode_batch
from handler.preprocess.envelopes import Envelope
from handler.preprocess.open_inference import lowercased_headers
from handler.request_log import (
    MODEL_VERSION_HEADER,
    REQUEST_ID_HEADER,
    not_per_batch_chatter,
    one_line_records,
    refusal_line,
    served_version,
)
from handler.served_model import served_network
from handler.settings import HandlerSettings
from model import load_checkpoint
from model.open_set import OPEN_SET_FILE

logger = logging.getLogger(__name__)


class DigitHandler:
    """What TorchServe calls: `initialize(context)` once per worker, `handle(data, context)` per batch.

    Not a subclass of ts.torch_handler.base_handler.BaseHandler, on purpose: its initialize loads
    a model by its own rules (TorchScript or an eager model file with a state dict, optional
    torch.compile) where ours rebuilds the network from the config saved in its checkpoint, and
    its handle passes only inference's output to postprocess, where our answers also need each
    request's error, and its explain_handle takes a whole batch as an explanation when its first
    request is one, where TorchServe's batches mix both (handler/explanations.py). Keeping the
    base class would mean overriding all three and inheriting nothing (describe answers the Open
    Inference Protocol's model metadata, in handle); TorchServe needs only these two methods.
    """

    served_files = (CALIBRATION_FILE, OPEN_SET_FILE)  # what it serves besides the weights: its version's digest

    def __init__(self) -> None:
        self.initialized = False
        self.context = None

    def initialize(self, context) -> None:
        properties = context.system_properties
        # Raises SettingsError on an unknown key or a wrong value: the worker does not start.
        self.settings = settings = HandlerSettings.from_config(
            (getattr(context, "model_yaml_config", None) or {}).get("handler")
        )
        torch.set_num_threads(settings.torch_threads)
        logging.getLogger().addFilter(not_per_batch_chatter)  # the root logger, which TorchServe logs it to
        one_line_records()  # LOG_FORMAT=json: a traceback stays one record (handler/request_log.py)
        if settings.buffered_socket and fast_paths.in_torchserve_worker():
            fast_paths.install_buffered_socket()
        self.device = self._device(properties.get("gpu_id"), settings.cuda_sync)
        model_dir = Path(properties["model_dir"])
        weights = model_dir / context.manifest["model"]["serializedFile"]
        # Read on the CPU (the network is rebuilt there from its config), then moved once.
        self.model = served_network(load_checkpoint(weights), settings.native_small_batches).to(self.device)
        # Raises CalibrationError when missing or fitted for other weights: the worker does not start.
        self.calibration = load_calibration(model_dir / CALIBRATION_FILE, weights)
        # Uploads that are not one digit get a 422 (handler/open_set.py); the head reads this network's features.
        head = model_dir / OPEN_SET_FILE
        self.open_set = OpenSet(head, weights, self.device) if settings.open_set else None
        self.model_name = context.model_name
        # (name, version) as v2 answers and X-Model-Version give them, with a digest (handler/request_log.py)
        served = (model_dir / name for name in self.served_files)
        version = served_version(str(context.manifest["model"].get("modelVersion", "1.0")), weights, *served)
        self.model_id = self.model_name, version
        self._declare_metrics(context.metrics)
        if settings.route_prediction_time:
            fast_paths.route_prediction_time(context.metrics, lambda ms: self._observe("PredictionTime", ms, "Model"))
        # Metrics leave the worker from a background thread every flush_seconds (0: at the end of
        # each batch), summed in between (handler/metric_buffer.py).
        self._metrics = MetricBuffer(self._emit)
        for counter, dimensions in (
            [("InternalErrors", ()), ("LowConfidencePredictions", ()), ("Explanations", ())]
            + [("DigitPredictions", (str(digit),)) for digit in range(10)]
            + [("RejectedInputs", (reason,)) for reason in REASONS]
        ):
            # every series from the start at 0, so that the first count is an increase Prometheus sees
            self._metrics.add(counter, 0, *dimensions)
        self.flush_seconds = settings.metrics_flush_seconds
        if self.flush_seconds > 0:
            threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()
        with torch.inference_mode():  # first call allocates; keep it off the first request
            self.model(torch.zeros(1, 1, 28, 28, device=self.device))
        self.context = context
        self.initialized = True
        logger.info("digit model %s loaded on %s from %s", version, self.device, weights)

    @staticmethod
    def _device(gpu_id, cuda_sync: str) -> torch.device:
        if not (torch.cuda.is_available() and gpu_id is not None):
            return torch.device("cpu")
        if cuda_sync != "auto":  # before set_device creates the context (handler/cuda_sync.py)
            set_sync_schedule(int(gpu_id), cuda_sync)
        device = torch.device(f"cuda:{gpu_id}")
        torch.cuda.set_device(device)
        return device

    def preprocess(self, data: list[dict], headers: list[dict[str, str]] | None = None) -> RequestBatch:
        """`headers`: each request's, lowercased."""
        start = time.perf_counter()
        batch = decode_batch(data, self.device, gpu_min_pixels=self.settings.gpu_min_pixels, headers=headers)
        self._observe("PreprocessTime", (time.perf_counter() - start) * 1000)
        return batch

    def inference(self, batch: RequestBatch) -> torch.Tensor | None:
        """(N, 10) calibrated probabilities on the CPU for the batch's N images, None if every request
        failed. A request with an image that is not one digit is refused in `batch` (handler/open_set.py)."""
        read = self._read(batch)
        return None if read is None else read[1]

    def _read(self, batch: RequestBatch) -> tuple[Reading, torch.Tensor] | None:
        """read_views' Reading of the batch's images and their calibrated probabilities; the images
        that are not one digit refused in `batch`. The head reads the network's own probabilities,
        before calibration, as it was trained on them."""
        if len(batch.views) == 0:
            return None
        reading = read_views(self.model, batch.views, self.device, self.settings.tta_below)
        if self.open_set is not None:
            batch.refuse_images(self.open_set.refusals(reading))
        self._observe("DigitBatchSize", len(batch.views))
        return reading, reading.calibrated(self.calibration)

    @cached_property
    def explainer(self) -> Explainer:
        """Made on a worker's first explanation request: predictions never import captum."""
        return Explainer(self.model)

    def explain(self, batch: RequestBatch) -> tuple[torch.Tensor | None, list[dict | None]]:
        """A batch holding explanation requests: inference's probabilities, and per image its
        explanation where its request asked for one (all of them in one computation)."""
        read = self._read(batch)
        if read is None:
            return None, []
        reading, probabilities = read
        explained = explain_batch(lambda: self.explainer, batch, probabilities, reading.views)  # refused: none
        self._add("Explanations", sum(e is not None for e in explained))
        return probabilities, explained

    def handle(self, data: list[dict], context) -> list[str]:
        start = time.perf_counter()
        self.context = context
        headers = [lowercased_headers(context.get_all_request_header(i)) for i in range(len(data))]
        # GET /models/mnist?customized=true sends one request with this header (a batch never has more)
        if len(data) == 1 and headers[0].get("describe") == "True":
            context.set_response_header(0, MODEL_VERSION_HEADER, self.model_id[1])
            return [json.dumps(self.metadata())]
        batch = self.preprocess(data, headers)
        if batch.explains:
            answers = self.postprocess(batch, *self.explain(batch), headers=headers)
        else:
            answers = self.postprocess(batch, self.inference(batch), headers=headers)
        handler_ms = (time.perf_counter() - start) * 1000
        self._observe("HandlerTime", round(handler_ms, 2), "Model")
        self._observe("BatchTime", handler_ms)
        if self.flush_seconds <= 0:
            self.flush_metrics()
        return answers

    def metadata(self) -> dict:
        """The Open Inference Protocol's model metadata of this model."""
        return model_metadata(self.model_id)

    def postprocess(
        self,
        batch: RequestBatch,
        probabilities: torch.Tensor | None,
        explained: list[dict | None] | None = None,
        headers: list[dict[str, str]] | None = None,
    ) -> list[str]:
        """`explained`: per image, explain()'s explanation parts; None in a batch without explanation requests."""
        predictions = predictions_of(probabilities) if probabilities is not None else []
        answered = [p for span in batch.outcomes if isinstance(span, slice) for p in predictions[span]]
        for digit, count in Counter(p["digit"] for p in answered).items():
            self._add("DigitPredictions", count, str(digit))
        unsure = sum(p["confidence"] < self.settings.low_confidence for p in answered)
        if unsure:
            self._add("LowConfidencePredictions", unsure)

        def answer(span: slice, envelope: Envelope) -> str:
            if envelope.explain:
                parts = zip(predictions[span], explained[span])
                return explanation_answer(envelope, [p | e for p, e in parts], self.model_id)
            return prediction_answer(envelope, predictions[span], self.model_id)

        return self._answers(batch, headers, answer)

    def _answers(
        self, batch: RequestBatch, headers: list[dict[str, str]] | None, answer: Callable[[slice, Envelope], str]
    ) -> list[str]:
        """Per request its answer: `answer(its images' slice, its envelope)`, or its error's, with the
        headers, status, metrics and log line every answer gets."""
        answers, version = [], self.model_id[1]
        for idx, (span, envelope) in enumerate(zip(batch.outcomes, batch.envelopes)):
            request_headers = headers[idx] if headers else {}
            self.context.set_response_content_type(idx, "application/json")
            self.context.set_response_header(idx, MODEL_VERSION_HEADER, version)
            self._echo_request_id(idx, request_headers)
            if isinstance(span, RequestError):
                self.context.set_response_status(span.status, span.message, idx)
                if isinstance(span, InputError):
                    self._add("RejectedInputs", 1, span.reason)
                else:
                    self._add("InternalErrors", 1)
                self._log_refusal(idx, span, request_headers)
                answers.append(error_answer(envelope, span, self.model_id))
            else:
                answers.append(answer(span, envelope))
        return answers

    def _echo_request_id(self, idx: int, headers: dict[str, str]) -> None:
        """The request's X-Client-Request-ID back on its answer: a caller can check that the answer is its
        own. TorchServe 0.12's frontend has delivered a batch's answers to other requests when a
        worker was scaled down mid-batch (docs/operations.md); DigitClient sends one and retries
        an answer that carries another."""
        value = headers.get(REQUEST_ID_HEADER.lower())
        if value is not None:
            self.context.set_response_header(idx, REQUEST_ID_HEADER, value)

    def _log_refusal(self, idx: int, error: RequestError, headers: dict[str, str]) -> None:
        """One line in the model log per request not answered 200 (handler/request_log.py); a 500's
        traceback was logged where it was caught."""
        line = refusal_line(
            error.status,
            error.reason,
            error.message,
            self.context.get_request_id(idx),
            headers.get(REQUEST_ID_HEADER.lower()),
        )
        logger.log(logging.ERROR if error.status >= 500 else logging.INFO, line)

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

    def _add(self, counter: str, value: int, *dimensions: str) -> None:
        self._metrics.add(counter, value, *dimensions)

    def _observe(self, name: str, value: float, *dimensions: str) -> None:
        self._metrics.observe(name, value, *dimensions)

    def flush_metrics(self) -> None:
        """Emit what was recorded since the last flush: one line per counter and dimensions, the
        latest value of each gauge, the buckets of each histogram that grew."""
        self._metrics.flush()

    def _flush_forever(self) -> None:
        last = time.monotonic()
        while True:
            time.sleep(self.flush_seconds)
            now = time.monotonic()
            # A heartbeat: its rate is the number of live workers (docs/operations.md).
            self._add("WorkerAliveSeconds", round(now - last, 3))
            last = now
            try:
                self.flush_metrics()
            except Exception:  # never let metrics take the worker down
                logger.exception("metrics flush failed")

    def _emit(self, name: str, value: float, *dimensions: str) -> None:
        kind = METRICS[name][0]
        self.metrics.get_metric(name, kind).add_or_update(value, [self.model_name, *dimensions])
