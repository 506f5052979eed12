"""The 8-bit KV cache (KV_CACHE_DTYPE=int8): its codes and tiles, the kernel's int8 variants
against float64 attention and against the cache in the model's dtype, the torch-ops path against
the kernel, prefix copies and chunked prefill, and the real model's answers against the exact
cache."""
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from common.settings import ConfigError
from inference_api.config import Config
from inference_api.model.attention.int8_cache import TILE, Int8DecodeAttention, quantize
from inference_api.model.attention.native_decode import (NativeDecodeAttention,
                                                         NativeInt8DecodeAttention,
                                                         choose_decode_attention)
from inference_api.model.attention.torch_decode import DecodeAttention
from inference_api.model.forward import DecoderModel, PrefillInput
from inference_api.process_messages import Submit
from real_engine import PROMPTS, greedy, make_engine, run as run_engine, text_of

CPU = torch.device("cpu")
EMPTY = torch.empty(0, dtype=torch.long)
TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def dequantized(attention, cache: torch.Tensor, keys: bool) -> torch.Tensor:
    """A layer's whole int8 cache [rows, kv, tiles, bytes] in float64: keys [rows, kv, dim, seq],
    values [rows, kv, seq, dim]."""
    codes, scales = attention._parts(cache, keys)
    if keys:
        return (codes.double() * scales.double()[..., None, :]).movedim(-3, -2).flatten(-2)
    return (codes.double() * scales.double()[..., None]).flatten(-3, -2)


def attention_f64(q, keys, values, rows, positions, window):
    """Float64 attention of q [D, kv, groups, dim] over keys [rows, kv, dim, seq] and values
    [rows, kv, seq, dim], each row's visible positions only."""
    out = torch.empty(q.shape, dtype=torch.float64)
    for i, (row, pos) in enumerate(zip(rows.tolist(), positions.tolist())):
        first = max(0, pos + 1 - window) if window else 0
        k, v = keys[row, :, :, first:pos + 1].double(), values[row, :, first:pos + 1].double()
        out[i] = torch.einsum("hgn,hnd->hgd",
                              torch.einsum("hgd,hdn->hgn", q[i].double(), k).softmax(-1), v)
    return out


def test_codes_round_to_nearest_with_one_scale_per_position():
    x = torch.tensor([[0.5, -1.27, 0.0, 0.004], [0.0, 0.0, 0.0, 0.0], [3.0, 1.5, -0.75, 1e-4]])
    codes, scales = quantize(x)
    assert codes.dtype == torch.int8 and scales.dtype == torch.float32
    assert torch.equal(scales, x.abs().amax(-1) / 127)
    assert torch.equal(codes[0], torch.tensor([50, -127, 0, 0], dtype=torch.int8))
    assert torch.equal(codes[1], torch.zeros(4, dtype=torch.int8))  # all zeros: scale 0, no NaN
    assert codes.abs().max() == 127
    assert ((codes.float() * scales[:, None] - x).abs() <= scales[:, None] / 2 + 1e-9).all()


@pytest.mark.parametrize("attention", [NativeInt8DecodeAttention, Int8DecodeAttention])
def test_prompt_chunks_store_the_same_bytes_as_one_write_and_read_back_within_half_a_step(
        attention):
    """Each position has its own scale, so how a prompt is cut into chunks never changes its
    bytes; reads give back every position within half its quantization step."""
    torch.manual_seed(2)
    cache = (NativeInt8DecodeAttention(CPU, torch.bfloat16, 6, 3, 32) if attention
             is NativeInt8DecodeAttention else Int8DecodeAttention(1, 50, 3, 32, torch.bfloat16))
    k_cache, v_cache = (c[0] for c in cache.allocate_cache(1, 2, 50, CPU))
    assert k_cache.shape == (2, 3, 4, 64 + TILE * 32) and k_cache.dtype == torch.int8
    keys, values = (torch.randn(40, 3, 32).to(torch.bfloat16) for _ in range(2))
    start, whole = 0, (k_cache.clone(), v_cache.clone())
    for n in (5, 20, 1, 14):  # crossing tile edges
        cache.write_prompt_keys(k_cache, 1, start, keys[start:start + n])
        cache.write_prompt_values(v_cache, 1, start, values[start:start + n])
        start += n
    cache.write_prompt_keys(whole[0], 1, 0, keys)
    cache.write_prompt_values(whole[1], 1, 0, values)
    assert torch.equal(k_cache, whole[0]) and torch.equal(v_cache, whole[1])
    assert not k_cache[0].any() and not k_cache[1, :, 3].any()  # row 0, positions 48.. untouched
    read_k, read_v = cache.prompt_keys(k_cache, 1, 33), cache.prompt_values(v_cache, 1, 33)
    assert read_k.shape == (3, 32, 33) and read_v.shape == (3, 33, 32)
    assert read_k.dtype == read_v.dtype == torch.bfloat16
    # Half a step (max |x| / 254 at that position) and the read's rounding to bfloat16.
    step_k, step_v = ((x[:33].float().abs().amax(-1) / 127).T for x in (keys, values))  # [kv, 33]
    error_k = (read_k.float() - keys[:33].float().permute(1, 2, 0)).abs()
    assert (error_k <= step_k[:, None, :] * 0.5 + read_k.float().abs() * 2 ** -8).all()
    error_v = (read_v.float() - values[:33].float().transpose(0, 1)).abs()
    assert (error_v <= step_v[:, :, None] * 0.5 + read_v.float().abs() * 2 ** -8).all()


def random_int8_caches(attention, rows, positions, window, dtype, cache_rows=4, max_seq=83,
                       poison=True):
    """One layer's int8 caches with random keys and values at each row's visible positions
    before its new token, and (poison) NaN scales everywhere else: a read of a stale or masked
    position poisons the kernel's output (torch ops read masked positions, as zeros)."""
    k_cache, v_cache = (c[0] for c in attention.allocate_cache(1, cache_rows, max_seq, CPU))
    for cache in (k_cache, v_cache) if poison else ():
        attention._parts(cache, True)[1].fill_(float("nan"))
    kv, dim = attention.kv_heads, attention.head_dim
    for row, pos in zip(rows.tolist(), positions.tolist()):
        first = max(0, pos + 1 - window) if window else 0
        keys, values = (torch.randn(pos - first, kv, dim).to(dtype) for _ in range(2))
        attention.write_prompt_keys(k_cache, row, first, keys)
        attention.write_prompt_values(v_cache, row, first, values)
    return k_cache, v_cache


def run(attention, q, k_new, v_new, k_cache, v_cache, rows, positions, window):
    """One layer's decode attention, rows in the order the attention groups them; out as q."""
    out = torch.empty_like(q)
    groups = attention.group_rows(rows, positions, {window})
    order = torch.cat([g.index for g in groups]) if groups else torch.arange(len(rows))
    attention.run(0, q[order].contiguous(), k_new[order], v_new[order], k_cache, v_cache,
                  rows[order], positions[order], groups, window, out)
    return out[order.argsort()]


@pytest.mark.parametrize("window", [None, 7])
@pytest.mark.parametrize("group,dim", [(1, 16), (3, 64), (5, 128)])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_int8_kernel_matches_float64_attention_over_its_cache_and_writes_the_same_codes(
        dtype, tol, group, dim, window):
    """The kernel's arithmetic: float64 attention over the dequantized cache, to the tolerance of
    the model's dtype as for the exact cache; the new tokens' codes are torch's to the bit."""
    torch.manual_seed(0)
    kv_heads = 2
    attention = NativeInt8DecodeAttention(CPU, dtype, kv_heads * group, kv_heads, dim)
    rows, positions = torch.tensor([3, 0, 2, 1]), torch.tensor([82, 0, 16, 40])
    k_cache, v_cache = random_int8_caches(attention, rows, positions, window, dtype)
    q = (torch.randn(len(rows), kv_heads, group, dim) * dim ** -0.5).to(dtype)
    k_new, v_new = (torch.randn(len(rows), kv_heads, dim).to(dtype) for _ in range(2))
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    attention.write_tokens(expected_k, expected_v, rows, positions, k_new, v_new)

    out = run(attention, q, k_new, v_new, k_cache, v_cache, rows, positions, window)

    assert torch.equal(k_cache.view(torch.uint8), expected_k.view(torch.uint8))  # NaN scales too
    assert torch.equal(v_cache.view(torch.uint8), expected_v.view(torch.uint8))
    want = attention_f64(q, dequantized(attention, k_cache, True),
                         dequantized(attention, v_cache, False), rows, positions, window)
    torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_kernel_stays_within_the_quantization_error_of_the_exact_cache(dtype):
    """The same keys and values in the exact cache and in int8: the outputs differ by no more
    than rounding each cached value to its nearest code can explain. A value moves by at most
    half a step (max |v| / 254), and so does an output, a weighted mean of values; a score q.k
    moves by at most d = sum |q| * max |k| / 254, which scales each softmax weight by between
    e^-2d and e^2d, and so moves the output by at most (e^2d - 1) * 2 max |v|. Plus the model's
    dtype's own rounding of the output (bfloat16: 2^-8 of its size)."""
    torch.manual_seed(3)
    kv, group, dim, seq = 3, 3, 64, 300
    exact = NativeDecodeAttention(CPU, dtype, kv * group, kv, dim)
    int8 = NativeInt8DecodeAttention(CPU, dtype, kv * group, kv, dim)
    keys = torch.randn(4, seq, kv, dim).to(dtype)
    values = torch.randn(4, seq, kv, dim).to(dtype)
    rows, positions = torch.tensor([0, 1, 2, 3]), torch.tensor([299, 150, 31, 5])
    q = (torch.randn(4, kv, group, dim) * dim ** -0.5).to(dtype)
    outs, caches = [], []
    for attention in (exact, int8):
        k_cache, v_cache = (c[0] for c in attention.allocate_cache(1, 4, seq + 1, CPU))
        for row in range(4):
            attention.write_prompt_keys(k_cache, row, 0, keys[row])
            attention.write_prompt_values(v_cache, row, 0, values[row])
        outs.append(run(attention, q, keys[rows, positions], values[rows, positions], k_cache,
                        v_cache, rows, positions, None).double())
    error = (outs[1] - outs[0]).abs()
    for i, pos in enumerate(positions.tolist()):
        k_top = keys[i, :pos + 1].double().abs().amax()
        v_top = values[i, :pos + 1].double().abs().amax()
        d = q[i].double().abs().sum(-1, keepdim=True) * k_top / 254  # [kv, group, 1]
        bound = v_top / 254 + (torch.exp(2 * d) - 1) * 2 * v_top
        bound = bound + outs[0][i].abs() * (2 ** -8 if dtype == torch.bfloat16 else 1e-6)
        assert (error[i] <= bound).all(), f"row {i}: {(error[i] - bound).max()}"
    # And in practice far inside that bound: a few thousandths on values of size 1.
    assert error.mean() < 3e-3 and error.max() < 3e-2


def test_torch_ops_and_the_kernel_agree_on_the_int8_cache():
    torch.manual_seed(1)
    kv, group, dim, seq = 3, 3, 64, 256
    rows, positions = torch.tensor([5, 1, 2]), torch.tensor([200, 3, 64])
    q = torch.randn(3, kv, group, dim) / 8
    k_new, v_new = torch.randn(3, kv, dim), torch.randn(3, kv, dim)
    results = []
    for attention in (NativeInt8DecodeAttention(CPU, torch.float32, kv * group, kv, dim),
                      Int8DecodeAttention(1, seq, kv, dim, torch.float32)):
        torch.manual_seed(4)  # the same cache contents for both
        k_cache, v_cache = random_int8_caches(attention, rows, positions, None, torch.float32,
                                              cache_rows=6, max_seq=seq, poison=False)
        out = run(attention, q, k_new, v_new, k_cache, v_cache, rows, positions, None)
        results.append((out, k_cache.view(torch.uint8), v_cache.view(torch.uint8)))
    (out_native, k_native, v_native), (out_torch, k_torch, v_torch) = results
    assert torch.equal(k_native, k_torch) and torch.equal(v_native, v_torch)
    torch.testing.assert_close(out_native, out_torch, atol=1e-5, rtol=1e-5)


def test_the_setting_chooses_the_int8_cache_on_every_path():
    assert Config.from_env({}).kv_cache_dtype == "auto"
    assert Config.from_env({"KV_CACHE_DTYPE": "int8"}).kv_cache_dtype == "int8"
    with pytest.raises(ConfigError, match="KV_CACHE_DTYPE='fp8' is not valid"):
        Config.from_env({"KV_CACHE_DTYPE": "fp8"})
    hf_model = LlamaForCausalLM(LlamaConfig(**TINY)).eval()
    for choice, kind in [("auto", NativeInt8DecodeAttention), ("native", NativeInt8DecodeAttention),
                         ("torch", Int8DecodeAttention)]:
        model = DecoderModel(hf_model, max_rows=2, max_seq_len=40, attention=choice,
                             kv_cache_dtype="int8")
        assert type(model.attention) is kind
        assert model.k_cache.shape == model.v_cache.shape == (2, 2, 2, 3, 64 + TILE * 16)
    for choice, kind in [("auto", NativeDecodeAttention), ("torch", DecodeAttention)]:
        assert type(DecoderModel(hf_model, max_rows=2, max_seq_len=40, attention=choice)
                    .attention) is kind
    # Where the kernel does not run, auto keeps the int8 cache in torch ops.
    chosen = choose_decode_attention("auto", CPU, torch.float16, 4, 2, 16, lambda: "torch ops",
                                     "int8")
    assert chosen == "torch ops"


def tiny_models():
    torch.manual_seed(0)
    return {"llama": LlamaForCausalLM(LlamaConfig(**TINY)).eval(),
            "mistral-window": MistralForCausalLM(MistralConfig(**TINY, sliding_window=6)).eval()}


def prefill(model, row, tokens, start, **kw):
    return model.step(EMPTY, EMPTY, EMPTY, [PrefillInput(row, torch.tensor(tokens), start, **kw)])


def decode(model, rows, tokens, positions):
    return model.step(torch.tensor(rows), torch.tensor(tokens), torch.tensor(positions), [])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("attention", ["native", "torch"])
@pytest.mark.parametrize("name", ["llama", "mistral-window"])
def test_a_copied_prefix_gives_the_same_bytes_and_logits_as_prefilling_it(name, attention,
                                                                          dtype):
    """Row 2 copies row 0's first 13 positions (part of a tile) and prefills the rest as row 0
    did: its cache and every logit are row 0's to the bit, decoding included."""
    model = DecoderModel(tiny_models()[name].to(dtype), max_rows=3, max_seq_len=64,
                         attention=attention, kv_cache_dtype="int8")
    prompt = torch.randint(0, 128, (20,), generator=torch.Generator().manual_seed(5)).tolist()
    prefill(model, 0, prompt[:13], 0)
    first = prefill(model, 0, prompt[13:], 13)
    decoded = [decode(model, [0], [7], [20]), decode(model, [0], [9], [21])]
    model.copy_prefix(0, 2, 13)
    assert torch.equal(prefill(model, 2, prompt[13:], 13), first)
    assert torch.equal(decode(model, [2], [7], [20]), decoded[0])
    assert torch.equal(decode(model, [2], [9], [21]), decoded[1])
    tiles = -(-22 // TILE)
    assert torch.equal(model.k_cache[:, 2, :, :tiles], model.k_cache[:, 0, :, :tiles])
    assert torch.equal(model.v_cache[:, 2, :, :tiles], model.v_cache[:, 0, :, :tiles])


@pytest.mark.parametrize("attention", ["native", "torch"])
@pytest.mark.parametrize("name", ["llama", "mistral-window"])
def test_chunked_prefill_on_the_int8_cache_matches_one_chunk(name, attention):
    """A prompt in chunks (and decoding beside another row) against the same prompt in one chunk.
    Each position's code depends on that position alone, and here the logits are the same to the
    bit; 3e-4 leaves room for a code or two moved across a rounding edge where float32 sums run
    in another order, a tenth of what the int8 cache moves these logits from the exact cache's."""
    model = DecoderModel(tiny_models()[name], max_rows=3, max_seq_len=64, attention=attention,
                         kv_cache_dtype="int8")
    prompt = torch.randint(0, 128, (30,), generator=torch.Generator().manual_seed(6)).tolist()
    whole = prefill(model, 0, prompt, 0, all_logits=True)
    prefill(model, 2, prompt[:3], 0)
    chunks = [prefill(model, 1, prompt[:5], 0, all_logits=True)]
    for start, end in [(5, 17), (17, 30)]:
        logits = model.step(torch.tensor([2]), torch.tensor([1]), torch.tensor([len(chunks) + 2]),
                            [PrefillInput(1, torch.tensor(prompt[start:end]), start, True)])
        chunks.append(logits[1:])
    torch.testing.assert_close(torch.cat(chunks), whole, atol=3e-4, rtol=0)
    torch.testing.assert_close(decode(model, [1], [3], [30]), decode(model, [0], [3], [30]),
                               atol=3e-4, rtol=0)


@pytest.mark.parametrize("name", ["llama", "mistral-window"])
def test_torch_ops_and_the_kernel_agree_on_the_model(name):
    """The same schedule on both paths over the int8 cache, float32: the same logits but for
    the order of float32 sums (measured 1.5e-7), with room for a code or two moved by it."""
    models = [DecoderModel(tiny_models()[name], max_rows=3, max_seq_len=64, attention=attention,
                           kv_cache_dtype="int8") for attention in ("native", "torch")]
    gen = torch.Generator().manual_seed(7)
    prompts = [torch.randint(0, 128, (n,), generator=gen).tolist() for n in (11, 25, 4)]
    logits = [[] for _ in models]
    for model, out in zip(models, logits):
        out.append(prefill(model, 0, prompts[0], 0))
        out.append(model.step(EMPTY, EMPTY, EMPTY, [PrefillInput(1, torch.tensor(prompts[1]), 0),
                                                    PrefillInput(2, torch.tensor(prompts[2]), 0)]))
        for i in range(6):
            out.append(decode(model, [2, 0, 1], [i, 2 * i, 3 * i], [4 + i, 11 + i, 25 + i]))
    for native, torch_ops in zip(*logits):
        torch.testing.assert_close(native, torch_ops, atol=3e-4, rtol=0)
    assert math.isfinite(float(torch.cat(logits[0]).abs().max()))


@pytest.fixture(scope="module")
def int8_runner_fp32():
    """The default model's runner over the int8 cache, in float32: beside model_runner_fp32, the
    cache is the only difference."""
    from inference_api.model.runner import ModelRunner

    return ModelRunner(Config(dtype="float32", device="cpu", max_users=32, max_seq_len=1024,
                              kv_cache_dtype="int8"))


def greedy_tokens(runner, tokenizer, prompts, tokens=24, prefix_caching=True) -> dict:
    """Greedy tokens of each prompt, arriving while earlier rows decode and prefill, and how many
    of its prompt's tokens were reused from the cache: name -> (tokens, cached)."""
    arrivals = {}
    for i, prompt in enumerate(prompts):
        arrivals.setdefault(i * 3, []).append(Submit(f"s{i}", tokenizer(prompt)["input_ids"],
                                                     greedy(tokens, ignore_eos=True, logprobs=0)))
    results = run_engine(make_engine(runner, prefix_caching=prefix_caching), arrivals)
    return {name: ([lp.token_id for out in outs for lp in out.logprobs or []],
                   outs[0].cached_tokens) for name, outs in results.items()}


@pytest.mark.slow
def test_the_real_model_on_the_int8_cache_answers_mostly_as_on_the_exact_cache(
        int8_runner_fp32, model_runner_fp32, hf_model_fp32):
    _, tokenizer = hf_model_fp32
    assert isinstance(int8_runner_fp32.model.attention, NativeInt8DecodeAttention)
    exact = {n: tokens for n, (tokens, _) in greedy_tokens(model_runner_fp32, tokenizer,
                                                           PROMPTS).items()}
    int8 = {n: tokens for n, (tokens, _) in greedy_tokens(int8_runner_fp32, tokenizer,
                                                          PROMPTS).items()}
    assert all(len(tokens) == 24 for tokens in int8.values())
    same_first = sum(int8[name][0] == exact[name][0] for name in exact)
    agreed = [next((i for i, (a, b) in enumerate(zip(exact[n], int8[n])) if a != b), 24)
              for n in exact]
    assert same_first >= len(PROMPTS) - 1, agreed
    assert sum(agreed) / len(agreed) >= 12, agreed  # tokens the answers agree on, of 24
    assert "Paris" in tokenizer.decode(int8["s0"])  # "The capital of France is"


@pytest.mark.slow
def test_prefix_reuse_on_the_int8_cache_changes_no_greedy_answer(int8_runner_fp32, hf_model_fp32):
    """Prefix copies carry codes and scales: with them, the answers are those of prefilling."""
    _, tokenizer = hf_model_fp32
    document = "The quick brown fox jumps over the lazy dog. " * 12
    prompts = [document + "Summarize the text above:", document + "In one word:",
               "What is the capital of Spain?"]
    answers = []
    for caching in (False, True):
        int8_runner_fp32.model.k_cache.zero_()
        int8_runner_fp32.model.v_cache.zero_()
        answers.append(greedy_tokens(int8_runner_fp32, tokenizer, prompts, 12, caching))
    assert all(cached == 0 for _, cached in answers[0].values())
    assert answers[1]["s1"][1] >= 100  # the document, copied from the row still running it
    assert {n: t for n, (t, _) in answers[0].items()} == {n: t for n, (t, _) in answers[1].items()}
