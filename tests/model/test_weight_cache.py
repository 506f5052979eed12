"""The weight cache: a second load of a model maps the prepared weights instead of converting them
again and gives the same outputs to the bit; a damaged file, another dtype's or another
model's, is never used; a restart from the cache does not import transformers."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from inference_api.config import Config
from inference_api.model import weight_cache
from inference_api.model.files import load_tokenizer, prepare_model_folder
from inference_api.model.forward import DecoderModel, PrefillInput
from inference_api.model.quantized import Int8Linear
from inference_api.model.weight_cache import cache_file, load_model
from int8_dtypes import INT8_DTYPES, needs_int8
from processes import REPO

TINY = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


@pytest.fixture
def tiny_folder(tmp_path):
    """A tiny random Qwen2 model (biases on q, k and v) saved as a Hugging Face folder."""
    torch.manual_seed(0)
    folder = tmp_path / "tiny-qwen2"
    Qwen2ForCausalLM(Qwen2Config(**TINY)).save_pretrained(folder)
    return folder


def greedy_logits(weights, prompt: list[int], steps: int = 6, **kwargs) -> list[torch.Tensor]:
    """The logits of a prompt and of its greedy continuation, step by step."""
    model = DecoderModel(weights, max_rows=2, max_seq_len=64, **kwargs)
    empty = torch.empty(0, dtype=torch.long)
    logits = model.step(empty, empty, empty, [PrefillInput(1, torch.tensor(prompt), 0)])
    found = [logits]
    for position in range(len(prompt), len(prompt) + steps):
        logits = model.step(torch.tensor([1]), logits.argmax(-1), torch.tensor([position]), [])
        found.append(logits)
    return found


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def overwrite(path, data: bytes) -> None:
    """Put other bytes under the file's name, as a new file: an earlier load may still map the
    old one, which a write in place would cut under it."""
    aside = path.with_name(path.name + ".new")
    aside.write_bytes(data)
    os.replace(aside, path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_second_load_comes_from_the_cache_with_the_same_outputs(tiny_folder, tmp_path, dtype):
    cache = tmp_path / "weights"
    fresh = load_model(tiny_folder, "cpu", dtype, cache=cache)
    path, _ = cache_file(cache, tiny_folder, dtype, "none")
    assert not fresh.from_cache and path.is_file()
    cached = load_model(tiny_folder, "cpu", dtype, cache=cache)
    assert cached.from_cache
    prompt = [5, 17, 3, 88, 42, 9, 61]
    assert same(greedy_logits(cached, prompt), greedy_logits(fresh, prompt))


@needs_int8
def test_int8_weights_are_cached_quantized(tiny_folder, tmp_path):
    cache = tmp_path / "weights"
    dtype = INT8_DTYPES[-1]  # float32 where int8 runs in it, else bfloat16
    fresh = load_model(tiny_folder, "cpu", dtype, "int8", cache)
    cached = load_model(tiny_folder, "cpu", dtype, "int8", cache)
    assert cached.from_cache and cached.tensors["layers.0.qkv.q"].dtype == torch.int8
    kwargs = dict(quantization="int8", attention="torch")
    assert isinstance(DecoderModel(cached, 1, 16, **kwargs).layers[0].qkv, Int8Linear)
    assert same(greedy_logits(cached, [1, 2, 3], **kwargs),
                greedy_logits(fresh, [1, 2, 3], **kwargs))
    # The exact weights' file is another one: int8 codes never stand in for them.
    assert not load_model(tiny_folder, "cpu", dtype, cache=cache).from_cache


@pytest.mark.parametrize("damage", ["truncated", "garbage", "a changed weight"])
def test_a_damaged_file_is_ignored_and_written_again(tiny_folder, tmp_path, caplog, damage):
    cache = tmp_path / "weights"
    want = greedy_logits(load_model(tiny_folder, "cpu", torch.float32, cache=cache), [4, 5, 6])
    path, _ = cache_file(cache, tiny_folder, torch.float32, "none")
    data = bytearray(path.read_bytes())
    if damage == "truncated":  # as a copy cut short
        data = data[:len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"not a weight file")
    else:  # one value of the embeddings, in place: the file still loads
        embed = load_model(tiny_folder, "cpu", torch.float32, cache=cache).tensors["embed"]
        at = data.find(embed[3].numpy().tobytes())
        assert at > 0
        data[at] ^= 0x40
    overwrite(path, bytes(data))
    with caplog.at_level(logging.WARNING):
        again = load_model(tiny_folder, "cpu", torch.float32, cache=cache)
    assert not again.from_cache and "not used" in caplog.text
    assert same(greedy_logits(again, [4, 5, 6]), want)
    restored = load_model(tiny_folder, "cpu", torch.float32, cache=cache)
    assert restored.from_cache and same(greedy_logits(restored, [4, 5, 6]), want)


def test_another_dtype_or_a_changed_model_is_never_read_from_the_file(tiny_folder, tmp_path):
    cache = tmp_path / "weights"
    load_model(tiny_folder, "cpu", torch.float32, cache=cache)
    assert not load_model(tiny_folder, "cpu", torch.bfloat16, cache=cache).from_cache
    f32, _ = cache_file(cache, tiny_folder, torch.float32, "none")
    bf16, _ = cache_file(cache, tiny_folder, torch.bfloat16, "none")
    assert f32 != bf16 and f32.is_file() and bf16.is_file()
    # A file under the other dtype's name is refused by its recorded key.
    overwrite(bf16, f32.read_bytes())
    assert not load_model(tiny_folder, "cpu", torch.bfloat16, cache=cache).from_cache
    # The model's files changed (here: other weights saved over them): a new file, the old one
    # deleted, and the new weights used.
    torch.manual_seed(1)
    Qwen2ForCausalLM(Qwen2Config(**TINY)).save_pretrained(tiny_folder)
    changed = load_model(tiny_folder, "cpu", torch.float32, cache=cache)
    assert not changed.from_cache and not f32.exists()
    assert cache_file(cache, tiny_folder, torch.float32, "none")[0].is_file()


def test_a_tied_llama_keeps_its_lm_head_tied_to_the_embeddings(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "tiny-llama"
    LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=True)).save_pretrained(folder)
    fresh = load_model(folder, "cpu", torch.float32, cache=tmp_path / "weights")
    cached = load_model(folder, "cpu", torch.float32, cache=tmp_path / "weights")
    tensors = cached.tensors
    assert tensors["lm_head.weight"].untyped_storage().data_ptr() == \
        tensors["embed"].untyped_storage().data_ptr()
    assert same(greedy_logits(cached, [7, 8, 9]), greedy_logits(fresh, [7, 8, 9]))


def test_an_unwritable_cache_only_costs_the_conversion(tiny_folder, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the cache folder cannot be made under a file
    weights = load_model(tiny_folder, "cpu", torch.float32, cache=blocked / "weights")
    assert not weights.from_cache and weights.tensors["embed"].shape[0] == TINY["vocab_size"]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_default_model_from_the_cache_answers_as_converted_without_transformers(tmp_path,
                                                                                   dtype):
    folder = prepare_model_folder("", Config().model_cache_dir)
    cache = tmp_path / "weights"
    prompt = load_tokenizer(folder).encode("The capital of France is").ids
    fresh = load_model(folder, "cpu", getattr(torch, dtype), cache=cache)
    want = greedy_logits(fresh, prompt, steps=8)
    cached = load_model(folder, "cpu", getattr(torch, dtype), cache=cache)
    assert cached.from_cache and same(greedy_logits(cached, prompt, steps=8), want)
    # A restart maps the file and builds the model without importing transformers.
    code = ("import sys, torch; from pathlib import Path;"
            "from inference_api.model.weight_cache import load_model;"
            "from inference_api.model.forward import DecoderModel;"
            f"w = load_model(Path({str(folder)!r}), 'cpu', torch.{dtype},"
            f" cache=Path({str(cache)!r}));"
            "DecoderModel(w, 1, 16);"
            "print(w.from_cache, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert done.stdout.split() == ["True", "False"], done.stderr
