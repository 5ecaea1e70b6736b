"""Faults and sustained load against a real TorchServe (short versions of `make soak`)."""

from __future__ import annotations

import pytest

from harness.faults import kill_worker, reference_answers, restart, soak, valid_bodies
from harness.local_server import LocalTorchServe
from harness.settings import model_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fault_server(model_store):
    server = LocalTorchServe(model_store).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bodies_and_answers(fault_server):
    bodies, labels = valid_bodies()
    answers = reference_answers(fault_server, bodies)
    assert sum(a == y for a, y in zip(answers, labels)) >= 98
    return bodies, answers


def test_killed_worker_is_replaced_and_nothing_is_answered_wrong(fault_server, bodies_and_answers):
    result = kill_worker(fault_server, *bodies_and_answers)
    workers = model_config()["minWorkers"]
    assert result["killed_pid"] not in result["workers_after"] and len(result["workers_after"]) == workers
    for phase in ("before_kill", "during_recovery", "after_recovery"):
        assert result[phase].get("wrong", 0) == 0 and result[phase].get("bad_body", 0) == 0, result
    assert set(result["before_kill"]) == {"ok"} and set(result["after_recovery"]) == {"ok"}, result
    # What failed during recovery failed visibly: an error status or a client timeout.
    failed = {k for k in result["during_recovery"] if k != "ok"}
    assert all(k == "timeout" or k.startswith("error:5") for k in failed), result
    assert result["after_sequential_ok"] == result["after_sequential_sent"]
    assert result["ping"] == "Healthy"


def test_restart_comes_back_with_the_same_model_and_config(fault_server, bodies_and_answers):
    result = restart(fault_server, *bodies_and_answers)
    assert result["settings_equal"] and result["answers_equal"] and result["workers"] == model_config()["minWorkers"], (
        result
    )


def test_short_soak_with_valid_and_invalid_requests(fault_server, bodies_and_answers):
    result = soak(fault_server, *bodies_and_answers, seconds=15, concurrency=8)
    assert result["requests"] > 200
    assert result["unexpected"] == 0, result["outcomes"]
    assert result["worker_rss_mb_after"] < result["worker_rss_mb_before"] + 100, result
