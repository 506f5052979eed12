"""Fixtures that tests in several folders share: real servers on free ports (the mock and the
default model), and the default model's runner in this process with transformers' own beside it."""
from __future__ import annotations

import os

import pytest

from helpers import api_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def mock_server():
    """A real gunicorn server on the mock backend, shared by the tests that only read from it."""
    # No drain at the end: streams tests left open would hold the teardown for their length.
    server = api_server({"MOCK_MODEL": "1", "MOCK_STEP_MS": "5", "DRAIN_TIMEOUT_S": "0"})
    server.start(timeout=60)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def real_server():
    """A real gunicorn server on the default model (bfloat16 where the CPU has it)."""
    server = api_server({"MOCK_MODEL": "0", "MAX_SEQ_LEN": "1024"})
    server.start(timeout=600)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def model_runner_fp32():
    """The default model's runner in this process, in float32 (for exact comparisons)."""
    from inference_api.config import Config
    from inference_api.model.runner import ModelRunner

    return ModelRunner(Config(dtype="float32", device="cpu", max_users=32, max_seq_len=1024))


@pytest.fixture(scope="session")
def hf_model_fp32(model_runner_fp32):
    """transformers' own model and tokenizer for the same folder, in float32 (the reference)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_runner_fp32.info["folder"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="session")
def lora_adapter_set(tmp_path_factory):
    """Two random LoRA adapters over the default model, saved by PEFT, with PEFT's greedy
    float32 answers (lora_adapters.py)."""
    from lora_adapters import make_adapters

    return make_adapters(tmp_path_factory.mktemp("lora"))
