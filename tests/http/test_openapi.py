"""GET /openapi.json describes every route, and a fuzzer's requests get answers that it declares."""
from __future__ import annotations

import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

from helpers import MODEL, api_server

pytestmark = pytest.mark.processes

ROUTES = {("post", "/inference/{model_id}"), ("post", "/predictions/{model_id}"),
          ("post", "/inference"), ("post", "/predictions"),
          ("post", "/v1/completions"), ("post", "/v1/chat/completions"), ("post", "/generate"),
          ("get", "/v1/models"), ("get", "/v1/models/{model_id}"), ("get", "/health"),
          ("get", "/metrics"), ("get", "/openapi.json"), ("post", "/tokenize"),
          ("post", "/detokenize"), ("post", "/v1/responses"),
          ("get", "/v1/responses/{response_id}"), ("delete", "/v1/responses/{response_id}"),
          ("post", "/v1/messages"), ("post", "/v1/messages/count_tokens"),
          ("post", "/solve/math"), ("post", "/solve/coding")}
# A bounded number of requests per operation and mode, the same ones every run: the suite's
# time matters, and a failure must reproduce.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))  # raise it for a deeper search
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_server():
    """A mock server with no pause per token and a short context, so that answers come at once."""
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "0", "MAX_SEQ_LEN": "64",
                         "MAX_QUEUE": "256"})
    server.start(timeout=60)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    """The server's own document, loaded by schemathesis."""
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


def test_document_lists_every_route_with_request_models_and_error_shapes(fuzz_server):
    document = requests.get(fuzz_server.url + "/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.1")
    assert {(m, p) for p, item in document["paths"].items() for m in item} == ROUTES
    components = document["components"]["schemas"]
    inference = document["paths"]["/inference/{model_id}"]["post"]
    assert inference["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/InferenceRequest"}
    assert set(inference["responses"]) >= {"200", "400", "404", "413", "415", "503"}
    assert "text/plain" in inference["responses"]["200"]["content"]
    assert components["InferenceRequest"]["additionalProperties"] is False
    assert components["InferenceRequest"]["properties"]["temperature"]["maximum"] == 5
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert chat["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OpenAIError"}
    assert components["ChatRequest"]["properties"]["model"]["enum"] == [MODEL]
    assert set(components["OpenAIErrorDetail"]["properties"]) == {"message", "type", "param",
                                                                  "code"}
    assert set(components["NativeError"]["required"]) == {"status_code", "message"}
    messages = document["paths"]["/v1/messages"]["post"]
    assert messages["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AnthropicError"}
    assert components["MessagesRequest"]["properties"]["model"]["enum"] == [MODEL]
    assert "max_tokens" in components["MessagesRequest"]["required"]
    responses = document["paths"]["/v1/responses"]["post"]
    assert set(responses["responses"]["200"]["content"]) == {"application/json",
                                                            "text/event-stream"}
    assert components["ResponsesRequest"]["properties"]["model"]["enum"] == [MODEL]
    assert set(document["paths"]["/v1/responses/{response_id}"]) == {"get", "delete"}
    for path, answer, field in (("/solve/math", "MathSolution", "answer"),
                                ("/solve/coding", "CodingSolution", "code")):
        operation = document["paths"][path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/SolveRequest"}
        ok = operation["responses"]["200"]["content"]
        assert ok["application/json"]["schema"] == {"$ref": f"#/components/schemas/{answer}"}
        assert "text/event-stream" in ok
        assert operation["responses"]["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/NativeError"}
        assert set(components[answer]["required"]) == {
            "problem", "solution", field, "generation_time", "finish_reason", "usage"}
    solve = components["SolveRequest"]
    assert solve["additionalProperties"] is False and solve["required"] == ["problem"]
    assert set(solve["properties"]) == {"problem", "max_new_tokens", "temperature", "stream",
                                        "model"}
    assert solve["properties"]["problem"]["maxLength"] == 16384
    assert solve["properties"]["temperature"]["maximum"] == 2


# Routes that take a body get invalid ones too; the others have no input that could be invalid.
FUZZ_CASES = [(method, path, GenerationMode.POSITIVE) for method, path in sorted(ROUTES)] + [
    (method, path, GenerationMode.NEGATIVE) for method, path in sorted(ROUTES) if method == "post"]


@pytest.mark.parametrize("method,path,mode", FUZZ_CASES)
def test_fuzzed_requests_get_declared_answers_and_never_a_5xx(api_schema, method, path, mode):
    operation = api_schema[path][method.upper()]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def answered_as_declared(case):
        case.call_and_validate(checks=CHECKS, timeout=30)

    answered_as_declared()
