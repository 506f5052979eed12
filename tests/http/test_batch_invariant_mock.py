"""BATCH_INVARIANT=1 on the mock: the scheduler's part of the promise, fast. Twenty requests get
the same bytes alone, beside 31 random others and in reversed order, and /health says the mode
is on (off by default)."""
from __future__ import annotations

import pytest
import requests

from helpers import api_server, health
from invariance import alone, differences, in_company, request_body


@pytest.fixture(scope="module")
def invariant_mock():
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "2", "BATCH_INVARIANT": "1",
                         "MAX_USERS": "8", "PREFILL_CHUNK": "5", "ITL_TARGET_MS": "0",
                         "DRAIN_TIMEOUT_S": "0"}).start(timeout=60)
    yield server
    server.stop()


def test_answers_do_not_depend_on_their_company(invariant_mock):
    expected = alone(invariant_mock.url)
    assert differences(expected, in_company(invariant_mock.url, seed=1)) == []
    assert differences(expected, in_company(invariant_mock.url, seed=2, reverse=True)) == []
    assert differences(expected, alone(invariant_mock.url)) == []


def test_health_and_the_fingerprint_report_the_mode(invariant_mock, mock_server):
    assert health(invariant_mock)["batch_invariant"] is True
    assert health(mock_server)["batch_invariant"] is False
    # Answers of the mode are other bits than without it: another system_fingerprint.
    fingerprints = {requests.post(f"{server.url}/v1/completions", timeout=30, json=request_body(
        0, "Hi")).json()["system_fingerprint"] for server in (invariant_mock, mock_server)}
    assert len(fingerprints) == 2
