"""Batch invariance in the forward pass: a product's rows over fixed tiles, and the real model's
logits the same bits whatever else runs in the step, however the prompt was chunked, and whether
a position was prefilled or decoded (BATCH_INVARIANT=1)."""
from __future__ import annotations

import random

import pytest
import torch

from inference_api.model.forward import PrefillInput
from inference_api.model.invariant import TILE_ROWS, FixedRowsLinear, attention_choice
from inference_api.model.linear import Linear, can_pack
from int8_dtypes import int8_dtype_name, needs_int8

NONE = torch.tensor([], dtype=torch.long)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 5, TILE_ROWS, TILE_ROWS + 1, 3 * TILE_ROWS - 7])
def test_a_rows_product_is_the_same_whatever_the_other_rows(dtype, rows):
    torch.manual_seed(rows)
    weight = torch.randn(1536, 576).to(dtype) * 0.05  # the products' smallest dimension
    layer = FixedRowsLinear(Linear(weight, None, can_pack(torch.device("cpu"), dtype)))
    x = torch.randn(rows, 576).to(dtype)
    # Each row alone at the head of a tile of zeros: what it must get beside any rows.
    alone = torch.stack([layer(x[i:i + 1])[0] for i in range(rows)])
    assert torch.equal(layer(x), alone)
    shuffled = torch.randperm(rows)
    assert torch.equal(layer(x[shuffled]), alone[shuffled])


def test_the_mode_refuses_lora_adapters():
    from inference_api.config import Config
    from common.settings import ConfigError

    with pytest.raises(ConfigError, match="BATCH_INVARIANT=1 is not valid: expected 0 while "
                                          "LORA_MODULES serves adapters"):
        Config(batch_invariant=True, lora_modules="tune=adapters/tune")
    assert Config(batch_invariant=True).batch_invariant


def test_the_mode_refuses_torch_attention():
    with pytest.raises(ValueError, match="BATCH_INVARIANT=1 needs the CPU attention kernel"):
        attention_choice("torch")
    assert attention_choice("auto") == "native"


@pytest.fixture(scope="module", params=[("auto", "auto", "none"), ("float32", "auto", "none"),
                                        ("auto", "int8", "none"),
                                        pytest.param((int8_dtype_name(), "auto", "int8"),
                                                     marks=needs_int8)],
                ids=["default-dtype", "float32", "int8-kv-cache", "int8-weights"])
def invariant_model(request):
    from inference_api.config import Config
    from inference_api.model.runner import ModelRunner

    dtype, kv_cache, quantization = request.param
    runner = ModelRunner(Config(batch_invariant=True, dtype=dtype, kv_cache_dtype=kv_cache,
                                quantization=quantization, device="cpu", max_users=16,
                                max_seq_len=256))
    prompt = runner.tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 6
                                     + "Summarize the text above:").ids
    return runner.model, torch.tensor(prompt)


def last_logits(model, row, prompt, chunk):
    """The prompt prefilled alone in one row, `chunk` tokens a step: its last position's logits."""
    for start in range(0, prompt.numel(), chunk):
        logits = model.step(NONE, NONE, NONE, [PrefillInput(row, prompt[start:start + chunk], start)])
    return logits[-1]


def others(rng, rows):
    """Other rows' prompts of random lengths, for the same step."""
    return [PrefillInput(row, torch.randint(0, 40_000, (rng.randint(1, 60),)), 0) for row in rows]


@pytest.mark.slow
def test_prompt_logits_do_not_depend_on_chunks_or_company(invariant_model):
    model, prompt = invariant_model
    whole = last_logits(model, 0, prompt, prompt.numel())
    for row, chunk in [(1, 1), (2, 7), (3, 16)]:
        assert torch.equal(last_logits(model, row, prompt, chunk), whole), f"chunks of {chunk}"
    rng = random.Random(0)
    company = others(rng, [5, 6, 7]) + [PrefillInput(4, prompt, 0)] + others(rng, [8, 9])
    assert torch.equal(model.step(NONE, NONE, NONE, company)[3], whole)


@pytest.mark.slow
def test_a_decoded_position_is_the_same_alone_beside_others_and_prefilled(invariant_model):
    model, prompt = invariant_model
    n = prompt.numel()
    token = int(last_logits(model, 0, prompt, n).argmax())
    alone = model.step(torch.tensor([0]), torch.tensor([token]), torch.tensor([n]), [])[0]
    last_logits(model, 1, prompt, 9)
    beside = model.step(torch.tensor([7, 1, 8]), torch.tensor([5, token, 9]),
                        torch.tensor([10, n, 3]), others(random.Random(1), [9]))[1]
    assert torch.equal(beside, alone)
    # The same position prefilled: the prefix cache may give a prompt a decoded row's keys.
    prefilled = last_logits(model, 2, torch.cat([prompt, torch.tensor([token])]), 11)
    assert torch.equal(prefilled, alone)
