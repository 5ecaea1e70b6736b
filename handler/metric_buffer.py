"""The handler's metrics: what it declares (METRICS, HISTOGRAMS) and what holds them between flushes.

Every metric is a line the frontend reads from the worker's stdout and parses; one line per digit
per batch cost as much frontend CPU as the request itself, and writing lines from the request path
stalled batches on the pipe (docs/performance.md). So the handler records into a MetricBuffer and a
background thread writes it out every HandlerSettings.metrics_flush_seconds: per counter and
dimensions one line with the sum, per gauge its latest value, per histogram its bucket counts.

Histograms: TorchServe 0.12's frontend exports a declared histogram with the Prometheus Java
client's default buckets, 0.005 to 10 (PrometheusHistogram.java sets none, and the metrics config
has no bucket setting), where batch sizes (1 to 1024 images) and milliseconds mostly land in +Inf.
So a histogram here is three declared counters, NAME_bucket{le} (cumulative, one per upper bound
below, and +Inf), NAME_sum and NAME_count: the series a Prometheus histogram is exposed as, so
histogram_quantile() reads them like any other histogram.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from itertools import accumulate

from ts.metrics.metric_type_enum import MetricTypes

# Upper bounds (le) of the buckets. Images per batch: up to batchSize requests of up to 64 images each.
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024)
# Milliseconds: from a 28x28 PNG's decoding (tenths of a ms) to responseTimeout (30 s).
MS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)

# name -> (unit, upper bounds)
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "DigitBatchSize": ("count", BATCH_BUCKETS),  # images per batch
    "PreprocessTime": ("ms", MS_BUCKETS),  # decoding and preprocessing a batch
    "BatchTime": ("ms", MS_BUCKETS),  # the handler's whole batch: HandlerTime's distribution
}


def _histogram_counters(name: str, unit: str) -> dict[str, tuple[MetricTypes, str, str | None]]:
    return {
        f"{name}_bucket": (MetricTypes.COUNTER, "count", "le"),
        f"{name}_sum": (MetricTypes.COUNTER, unit, None),
        f"{name}_count": (MetricTypes.COUNTER, "count", None),
    }


# What the handler emits, declared in handler/metrics.yaml so that Prometheus exports them.
# name -> (type, unit, extra dimension after ModelName)
METRICS: dict[str, tuple[MetricTypes, str, str | None]] = {
    "DigitPredictions": (MetricTypes.COUNTER, "count", "Digit"),
    "LowConfidencePredictions": (MetricTypes.COUNTER, "count", None),
    "RejectedInputs": (MetricTypes.COUNTER, "count", "Reason"),
    "InternalErrors": (MetricTypes.COUNTER, "count", None),  # requests answered 500: bugs of ours
    "Explanations": (MetricTypes.COUNTER, "count", None),  # images explained (handler/explanations.py)
    # Seconds each worker's flush thread has been running: its rate is the number of live workers.
    "WorkerAliveSeconds": (MetricTypes.COUNTER, "s", None),
    **{k: v for name, (unit, _) in HISTOGRAMS.items() for k, v in _histogram_counters(name, unit).items()},
    "HandlerTime": (MetricTypes.GAUGE, "ms", "Level"),  # TorchServe's own, with its Level="Model"
    "PredictionTime": (MetricTypes.GAUGE, "ms", "Level"),  # TorchServe's, see fast_paths.route_prediction_time
}

Key = tuple[str, tuple[str, ...]]  # (name, dimension values after ModelName)


class MetricBuffer:
    """Counters, gauges and histograms recorded by the request path (any thread), written out by
    flush() through `emit(name, value, *dimensions)`, one line each."""

    def __init__(self, emit: Callable[..., None]) -> None:
        self._emit = emit
        self._lock = threading.Lock()
        self._counters: Counter[Key] = Counter()  # sums since the last flush
        self._gauges: dict[Key, float] = {}  # the latest values
        self._histograms: dict[Key, list[float]] = {}  # per bucket (+Inf last) the count, then the sum
        self._histograms_out: set[Key] = set()  # histograms whose every bucket has been written once

    def add(self, counter: str, value: float, *dimensions: str) -> None:
        with self._lock:
            self._counters[counter, dimensions] += value

    def observe(self, name: str, value: float, *dimensions: str) -> None:
        if name in HISTOGRAMS:
            bounds = HISTOGRAMS[name][1]
            with self._lock:
                counts = self._histograms.get((name, dimensions))
                if counts is None:
                    counts = self._histograms[name, dimensions] = [0] * (len(bounds) + 2)
                counts[bisect_left(bounds, value)] += 1  # the first bucket whose bound is >= value
                counts[-1] += value
        else:  # a gauge is read as its latest value
            with self._lock:
                self._gauges[name, dimensions] = value

    def flush(self) -> None:
        with self._lock:
            counters, self._counters = self._counters, Counter()
            gauges, self._gauges = self._gauges, {}
            histograms, self._histograms = self._histograms, {}
        for (name, dimensions), counts in histograms.items():
            self._flush_histogram(name, dimensions, counts)
        for (name, dimensions), value in gauges.items():
            self._emit(name, value, *dimensions)
        for (counter, dimensions), value in sorted(counters.items()):
            self._emit(counter, value, *dimensions)

    def _flush_histogram(self, name: str, dimensions: tuple[str, ...], counts: list[float]) -> None:
        """The observations since the last flush as increments of the cumulative bucket counters,
        from +Inf down: a scrape between two lines still sees counts that grow with `le`. Every
        bucket is written on a histogram's first flush (so that each series exists, at its true
        count, before it grows); after that only the buckets that grew."""
        bounds = HISTOGRAMS[name][1]
        *per_bucket, total = counts
        cumulative = list(accumulate(per_bucket))
        first = (name, dimensions) not in self._histograms_out
        self._histograms_out.add((name, dimensions))
        for le, count in reversed(list(zip([*map(_le, bounds), "+Inf"], cumulative))):
            if count or first:
                self._emit(f"{name}_bucket", count, *dimensions, le)
        self._emit(f"{name}_sum", total, *dimensions)
        self._emit(f"{name}_count", cumulative[-1], *dimensions)


def _le(bound: float) -> str:
    """An upper bound as the Prometheus Java client writes TorchServe's own: 1.0, 0.25, 30000.0."""
    return repr(float(bound))
