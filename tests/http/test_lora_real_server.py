"""LoRA adapters through the real server over HTTP, in float32: the model name picks the adapter,
and the answers are PEFT's token for token, whether the requests run together or one after the
other over the same prompt (prefix reuse); an adapter that does not fit stops the start."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch
from safetensors.torch import save_file

from helpers import MODEL, api_server, health_response, post, wait_for
from lora_adapters import ADAPTERS, NEW_TOKENS, PROMPTS

MODELS = [MODEL, *ADAPTERS]


@pytest.fixture(scope="module")
def server(lora_adapter_set):
    server = api_server({"MOCK_MODEL": "0", "DTYPE": "float32", "MAX_SEQ_LEN": "256",
                         "MAX_USERS": "12", "LORA_MODULES": lora_adapter_set.lora_modules})
    server.start(timeout=600)
    yield server
    server.stop()


def complete(server, model: str, prompt: str) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0,
            "ignore_eos": True}
    response = requests.post(server.url + "/v1/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def expected(lora_adapter_set, prompt: str, model: str) -> str:
    return lora_adapter_set.answers[(prompt, None if model == MODEL else model)]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the adapters' fixture runs PEFT's answers first: minutes
def test_requests_for_each_adapter_and_the_base_at_once_get_peft_answers(server,
                                                                        lora_adapter_set):
    listed = requests.get(server.url + "/v1/models", timeout=30).json()["data"]
    assert [(m["id"], m["parent"]) for m in listed] == [(MODEL, None), ("tune1", MODEL),
                                                         ("tune2", MODEL)]
    jobs = [(model, prompt) for prompt in PROMPTS for model in MODELS]
    with ThreadPoolExecutor(len(jobs)) as pool:  # rows of every adapter in the same steps
        answers = list(pool.map(lambda job: complete(server, *job), jobs))
    for (model, prompt), answer in zip(jobs, answers):
        assert answer["model"] == model
        assert answer["choices"][0]["text"] == expected(lora_adapter_set, prompt, model), \
            (model, prompt)
    # The native routes take the adapter's name in the path.
    response = post(server, {"text": PROMPTS[0], "max_tokens": NEW_TOKENS, "temperature": 0,
                             "ignore_eos": True}, model="tune2", timeout=300)
    assert response.text == expected(lora_adapter_set, PROMPTS[0], "tune2")


@pytest.mark.slow
def test_one_prompt_under_two_adapters_in_turn_gets_each_adapters_answer(server,
                                                                       lora_adapter_set):
    # A prompt that starts like none of the others: nothing of it is cached yet.
    prompt = "Write a short poem about the autumn rain on the old roofs of the city"
    references = {}
    for model in ("tune1", "tune2", "tune1"):
        answer = complete(server, model, prompt)
        references.setdefault(model, answer["choices"][0]["text"])
        assert answer["choices"][0]["text"] == references[model]
        cached = answer["usage"]["prompt_tokens_details"]["cached_tokens"]
        # tune2 finds the prompt in tune1's row, and must not use it; tune1 again does.
        assert (cached > 0) == (len(references) == 2 and model == "tune1"), (model, cached)
    assert references["tune1"] != references["tune2"]
    assert complete(server, MODEL, prompt)["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.processes
def test_an_adapter_of_another_model_stops_the_start_with_the_reason(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj"],
        "base_model_name_or_path": "meta-llama/Llama-3.2-1B"}))
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{key}.lora_A.weight": torch.zeros(4, 2048),
               f"{key}.lora_B.weight": torch.zeros(2048, 4)},
              str(folder / "adapter_model.safetensors"))
    server = api_server({"MOCK_MODEL": "0", "LORA_MODULES": f"other={folder}"})
    server.start(wait_ready=False)
    try:
        assert wait_for(lambda: (r := health_response(server)) is not None
                        and "failed to start" in r.text, 180)
        response = health_response(server)
        assert response.status_code == 503
        assert response.json()["message"] == (
            f"the backend failed to start: LoRA adapter 'other' ({folder}) cannot be served: "
            f"it was trained on 'meta-llama/Llama-3.2-1B', and this server serves {MODEL} (set "
            "MODEL_ID to the base model's name if it is the same model)")
    finally:
        server.stop()
