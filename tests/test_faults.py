"""Faults and sustained load against a real TorchServe serving both models (short versions of `make soak`)."""

from __future__ import annotations

import pytest

from harness.faults import Job, kill_worker, reference_answers, restart, soak, valid_bodies, valid_jobs
from harness.local_server import LocalTorchServe
from harness.settings import model_config

pytestmark = pytest.mark.integration

MODELS = ("mnist", "number")


@pytest.fixture(scope="module")
def fault_server(model_store):
    server = LocalTorchServe(model_store).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def jobs(fault_server) -> list[Job]:
    """Both models' valid requests, each with what the healthy service answers."""
    out = []
    for model in MODELS:
        bodies, labels = valid_bodies(model)
        answers = reference_answers(fault_server, bodies, model)
        right = sum(a == y for a, y in zip(answers, labels))
        assert right >= 0.9 * len(labels), (model, right)
        out += valid_jobs(model, bodies, answers)
    return out


@pytest.mark.parametrize("model", MODELS)
def test_a_killed_worker_is_replaced_and_nothing_is_answered_wrong(fault_server, jobs, model):
    """A worker of one model killed under a load on both: that model fails visibly (an error status
    or a timeout) only while its worker is replaced; the other model answers everything right."""
    result = kill_worker(fault_server, jobs, model)
    assert result["killed_pid"] not in result["workers_after"], result
    assert len(result["workers_after"]) == model_config()["minWorkers"], result
    for of, phases in result["load"].items():
        for phase, counts in phases.items():
            assert counts.get("wrong", 0) == 0 and counts.get("bad_body", 0) == 0, result
            if of != model or phase != "during_recovery":
                assert set(counts) == {"ok"}, (of, phase, result)
    failed = {k for k in result["load"][model]["during_recovery"] if k != "ok"}
    assert all(k == "timeout" or k.startswith("error:5") for k in failed), result
    assert result["after_sequential_ok"] == result["after_sequential_sent"] > 0
    assert result["ping"] == "Healthy"


def test_restart_comes_back_with_the_same_models_and_config(fault_server, jobs):
    result = restart(fault_server, jobs)
    assert set(result) == set(MODELS), result
    for model, after in result.items():
        assert after["settings_equal"] and after["answers_equal"], (model, result)
        assert after["workers"] == model_config()["minWorkers"], (model, result)


def test_short_soak_with_valid_and_invalid_requests_to_both_models(fault_server, jobs):
    result = soak(fault_server, jobs, seconds=15, concurrency=8)
    assert result["requests"] > 200 and set(result["outcomes"]) == set(MODELS), result
    assert result["unexpected"] == 0, result["outcomes"]
    assert result["worker_rss_mb_after"] < result["worker_rss_mb_warm"] + 100, result
