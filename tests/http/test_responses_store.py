"""The Responses API's store keeps at most its count, each response at most its age; and a
server started with a small store forgets the oldest response first."""
from __future__ import annotations

import openai
import pytest

from helpers import MODEL, api_server, client_for
from inference_api.http.responses.store import ResponseStore


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def response(n: int) -> dict:
    return {"id": f"resp_{n}"}


def test_the_oldest_goes_first_when_the_store_is_full():
    store = ResponseStore(max_count=2, max_age_s=60, clock=Clock())
    for n in range(3):
        store.put(response(n), [{"n": n}])
    assert store.get("resp_0") is None
    assert store.get("resp_1").items == [{"n": 1}] and store.get("resp_2") is not None
    assert len(store) == 2


def test_responses_older_than_the_age_are_forgotten():
    clock = Clock()
    store = ResponseStore(max_count=10, max_age_s=60, clock=clock)
    store.put(response(0), [])
    clock.now = 30
    store.put(response(1), [])
    clock.now = 60
    assert store.get("resp_0") is not None  # exactly its age: still kept
    clock.now = 60.5
    assert store.get("resp_0") is None and store.get("resp_1") is not None
    clock.now = 91
    assert len(store) == 0


def test_delete_says_whether_there_was_one():
    store = ResponseStore(max_count=10, max_age_s=60, clock=Clock())
    store.put(response(0), [])
    assert store.delete("resp_0") and not store.delete("resp_0")
    assert store.get("resp_0") is None


@pytest.mark.processes
def test_a_server_with_a_small_store_forgets_the_oldest_response():
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "0", "RESPONSES_STORE_MAX": "2"})
    server.start(timeout=60)
    try:
        client = client_for(server)
        ids = [client.responses.create(model=MODEL, input=f"turn {n}", max_output_tokens=2).id
               for n in range(3)]
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(ids[0])
        assert [client.responses.retrieve(i).id for i in ids[1:]] == ids[1:]
        with pytest.raises(openai.BadRequestError):  # the conversation it ended is gone too
            client.responses.create(model=MODEL, input="more", previous_response_id=ids[0])
    finally:
        server.stop()
