"""The handler's metric buffer: counters summed, gauges as their latest value, histograms as
Prometheus bucket counters with bounds that fit (handler/metric_buffer.py)."""

from __future__ import annotations

import pytest
from ts.metrics.metric_type_enum import MetricTypes

from handler.metric_buffer import HISTOGRAMS, METRICS, MetricBuffer


def recording() -> tuple[MetricBuffer, list[tuple]]:
    lines: list[tuple] = []
    return MetricBuffer(lambda name, value, *dims: lines.append((name, value, *dims))), lines


def test_observations_become_cumulative_buckets_sum_and_count():
    buffer, lines = recording()
    values = [0.05, 0.1, 0.3, 7, 40000]  # an upper bound is inclusive (le); 40000 ms only fits +Inf
    for value in values:
        buffer.observe("PreprocessTime", value)
    buffer.flush()
    buckets = {le: count for name, count, le in (line for line in lines if line[0] == "PreprocessTime_bucket")}
    assert len(buckets) == len(HISTOGRAMS["PreprocessTime"][1]) + 1  # the first flush writes every bucket
    assert (buckets["0.1"], buckets["0.25"], buckets["0.5"], buckets["10.0"]) == (2, 2, 3, 4)
    assert (buckets["30000.0"], buckets["+Inf"]) == (4, 5)
    assert ("PreprocessTime_sum", pytest.approx(sum(values))) in lines
    assert ("PreprocessTime_count", 5) in lines


def test_buckets_are_written_from_inf_down_so_a_scrape_in_between_sees_them_grow_with_le():
    buffer, lines = recording()
    for value in (1, 3, 16, 16, 700):
        buffer.observe("DigitBatchSize", value)
    buffer.flush()
    buckets = [(count, float(le)) for name, count, le in (line for line in lines if len(line) == 3)]
    bounds = [le for _, le in buckets]
    assert bounds == sorted(bounds, reverse=True) and bounds[0] == float("inf")
    counts = [count for count, _ in buckets]
    assert counts == sorted(counts, reverse=True)


def test_later_flushes_write_only_the_buckets_that_grew():
    buffer, lines = recording()
    buffer.observe("DigitBatchSize", 16)
    buffer.flush()
    lines.clear()
    buffer.flush()
    assert lines == []  # nothing observed: nothing written
    buffer.observe("DigitBatchSize", 16)
    buffer.observe("DigitBatchSize", 64)
    buffer.flush()
    assert [(count, le) for name, count, le in (line for line in lines if len(line) == 3)] == [
        (2, "+Inf"),
        (2, "1024.0"),
        (2, "512.0"),
        (2, "256.0"),
        (2, "128.0"),
        (2, "64.0"),
        (1, "48.0"),
        (1, "32.0"),
        (1, "24.0"),
        (1, "16.0"),
    ]
    assert ("DigitBatchSize_count", 2) in lines and ("DigitBatchSize_sum", 80) in lines


def test_counters_are_summed_and_gauges_keep_their_latest_value():
    buffer, lines = recording()
    buffer.add("InternalErrors", 0)  # a series created at 0
    for reason in ("empty", "empty", "blank"):
        buffer.add("RejectedInputs", 1, reason)
    buffer.observe("HandlerTime", 3.0, "Model")
    buffer.observe("HandlerTime", 2.5, "Model")
    buffer.flush()
    assert sorted(lines) == [
        ("HandlerTime", 2.5, "Model"),
        ("InternalErrors", 0),
        ("RejectedInputs", 1, "blank"),
        ("RejectedInputs", 2, "empty"),
    ]


def test_every_histogram_is_declared_as_three_counters_with_sorted_bounds():
    for name, (unit, bounds) in HISTOGRAMS.items():
        assert list(bounds) == sorted(set(bounds)), name
        assert METRICS[f"{name}_bucket"] == (MetricTypes.COUNTER, "count", "le")
        assert METRICS[f"{name}_sum"] == (MetricTypes.COUNTER, unit, None)
        assert METRICS[f"{name}_count"] == (MetricTypes.COUNTER, "count", None)
