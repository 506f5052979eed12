"""BATCH_INVARIANT=1 on the real server: twenty requests (greedy and seeded, with their log
probabilities) get the same bytes alone, beside 31 random others, in reversed arrival order,
from the prefix cache, in prompt chunks of other sizes, and after a restart with other settings."""
from __future__ import annotations

import pytest

from helpers import api_server, health
from invariance import alone, differences, in_company

# A loaded machine takes minutes for a server start and the twenty answers.
pytestmark = [pytest.mark.slow, pytest.mark.processes, pytest.mark.timeout(1800)]

DTYPES = ["auto", "float32"]  # auto: bfloat16 where the CPU has bf16 math


def invariant_server(dtype: str, **settings: str):
    env = {"MOCK_MODEL": "0", "BATCH_INVARIANT": "1", "DTYPE": dtype, "MAX_SEQ_LEN": "512",
           "DRAIN_TIMEOUT_S": "0", **settings}
    return api_server(env).start(timeout=600)


@pytest.fixture(scope="module", params=DTYPES)
def reference(request):
    """The dtype and its twenty answers, each asked alone of a fresh server with the defaults,
    and that server for the runs in company."""
    server = invariant_server(request.param)
    try:
        yield request.param, alone(server.url), server
    finally:
        server.stop()


def test_health_reports_the_mode(reference):
    _, _, server = reference
    assert health(server)["batch_invariant"] is True


def test_the_same_bytes_beside_others_in_any_order_and_from_the_cache(reference):
    _, expected, server = reference
    assert differences(expected, in_company(server.url, seed=1)) == []
    assert differences(expected, in_company(server.url, seed=2, reverse=True)) == []
    # Every prompt was seen: now each starts from the prefix cache, partly or whole.
    assert differences(expected, alone(server.url)) == []


def test_the_same_bytes_without_prefix_reuse_in_small_chunks_after_a_restart(reference):
    dtype, expected, _ = reference
    # ITL_TARGET_MS=0: every step takes PREFILL_CHUNK prompt tokens, so prompts go in by fives.
    server = invariant_server(dtype, PREFIX_CACHING="0", PREFILL_CHUNK="5", ITL_TARGET_MS="0")
    try:
        assert differences(expected, in_company(server.url, seed=3)) == []
    finally:
        server.stop()
