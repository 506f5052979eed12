"""QUANTIZATION=int8: the per-row quantization kernel against its torch reference, the int8
linear against the integer product times both scales and against float, and where it refuses."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from common.settings import ConfigError
from inference_api.config import Config
from inference_api.model import quantize_kernel, quantized
from inference_api.model.forward import DecoderModel, PrefillInput
from inference_api.model.linear import linear_of, stacked
from inference_api.model.quantize_kernel import kernels_for, quantize_rows
from inference_api.model.quantized import (Int8Linear, QuantizationUnavailable, check_quantization,
                                           quantize_rows_reference, quantize_weight)
from int8_dtypes import INT8_DTYPES, int8_dtype_params

DTYPES = [torch.bfloat16, torch.float32]
# The products themselves are tested where QUANTIZATION=int8 runs (a CPU with VNNI); the checks
# that refuse it elsewhere are tested on every CPU below.
# The int8 product's own result (exact int32 sums) is scaled into the output dtype: rounded once
# by the matmul and once more by the row scale; in float32 that is within a few ulps.
ROUNDING = {torch.bfloat16: 2 ** -7, torch.float32: 1e-6}


def integer_reference(x, weight, bias):
    """(x_q - 128) @ w_q^T * s_row * s_col + bias in float64, from the two quantizations."""
    x_q, s_row = quantize_rows_reference(x.reshape(-1, x.shape[-1]))
    w_q, s_col = quantize_weight(weight)
    y = ((x_q.double() - 128) @ w_q.double().T) * s_row.double()[:, None] * s_col.double()
    return y if bias is None else y + bias.double()


def relative_error(got, want):
    """Largest difference relative to the output's scale (its largest value)."""
    return ((got.double() - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,cols", [(1, 7), (32, 576), (5, 1536), (3, 5000), (64, 33)])
def test_the_kernel_quantizes_bit_for_bit_as_the_reference(dtype, rows, cols):
    torch.manual_seed(rows * cols)
    wide = (torch.randn(rows, cols + 3) * torch.rand(rows, 1) * 50).to(dtype)
    wide[0, :] = 0  # an all-zero row
    x = wide[:, 1:cols + 1]  # rows apart by cols + 3: the kernel reads them in place
    q, scale = quantize_rows(x, kernels_for(dtype))
    want_q, want_scale = quantize_rows_reference(x)
    assert q.dtype == torch.uint8 and q.shape == (rows, cols) and scale.shape == (rows,)
    assert torch.equal(q, want_q) and torch.equal(scale, want_scale)
    assert torch.all(q[0] == 128) and scale[0] == 0
    # Symmetric per row: the largest magnitude of each row maps to 1 or 255, within half a step.
    assert torch.all(((q[1:].int() - 128).abs().amax(-1)) == 127)
    error = (x.float() - (q.float() - 128) * scale[:, None]).abs()
    assert torch.all(error <= scale[:, None] * 0.5001)


def test_weights_are_int8_per_output_channel_and_a_zero_channel_stays_zero():
    torch.manual_seed(0)
    weight = torch.randn(6, 40)
    weight[2] = 0
    weight[4] *= 1000
    q, scale = quantize_weight(weight)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (6,)
    assert torch.all(q[2] == 0)
    rows = [r for r in range(6) if r != 2]
    torch.testing.assert_close(scale[rows], weight[rows].abs().amax(-1) / 127)
    assert torch.all(q[rows].abs().amax(-1) == 127)
    assert torch.all((q.float() * scale[:, None] - weight).abs() <= scale[:, None] * 0.5001)


@pytest.mark.parametrize("dtype", int8_dtype_params())
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("lead", [(1,), (32,), (2, 9)])
def test_int8_linear_is_the_integer_product_times_both_scales(dtype, with_bias, lead):
    torch.manual_seed(len(lead) * 10 + lead[-1])
    weight = (torch.randn(96, 160) * 0.05).to(dtype)
    bias = torch.randn(96).to(dtype) if with_bias else None
    x = torch.randn(*lead, 160).to(dtype)
    layer = Int8Linear(weight, bias)
    y = layer(x)
    assert y.shape == (*lead, 96) and y.dtype == dtype
    want = integer_reference(x, weight, bias)
    assert relative_error(y.reshape(-1, 96), want) <= ROUNDING[dtype]
    # ... and close to the float product: about 1% of its scale on these random values (up to
    # 2% measured for one row), 8 bits for each side.
    exact = x.double() @ weight.double().T + (0 if bias is None else bias.double())
    assert relative_error(y.reshape(-1, 96), exact.reshape(-1, 96)) < 0.04


def test_a_row_of_zeros_gives_the_bias_exactly():
    torch.manual_seed(1)
    weight, bias = torch.randn(24, 64).bfloat16(), torch.randn(24).bfloat16()
    x = torch.randn(4, 64).bfloat16()
    x[2] = 0
    for b in (bias, None):
        y = Int8Linear(weight, b)(x)
        assert torch.equal(y[2], b if b is not None else torch.zeros(24, dtype=torch.bfloat16))


@pytest.mark.parametrize("dtype", int8_dtype_params())
def test_an_outlier_in_one_row_costs_the_other_rows_nothing(dtype):
    """Each row has its own scale: a token with a huge value quantizes coarsely itself, while
    the other rows' outputs are the very values they get without it."""
    torch.manual_seed(2)
    weight = (torch.randn(128, 256) * 0.05).to(dtype)
    x = torch.randn(8, 256).to(dtype)
    layer = Int8Linear(weight, None)
    alone = layer(x[1:])
    x[0, 17] = 30000.0  # far beyond every other value
    together = layer(x)
    assert torch.equal(together[1:], alone)
    exact = x.double() @ weight.double().T
    assert relative_error(together[1:], exact[1:]) < 0.04  # 1% measured
    # One scale for all rows, as a per-tensor quantization would take: the others lose their
    # values to the outlier's step (30000 / 127, above every one of their values).
    step = x.float().abs().max() / 127
    per_tensor = (torch.round(x.float() / step) * step).double() @ weight.double().T
    assert relative_error(per_tensor[1:], exact[1:]) > 0.5


@pytest.mark.parametrize("dtype", int8_dtype_params())
def test_stacked_projections_keep_each_bias(dtype):
    """q, k and v stacked into one int8 product, Qwen2's biases on each part, and a layer
    without a bias (o): each part equals its own float product."""
    torch.manual_seed(3)
    hidden, q_out, kv_out = 64, 64, 32
    projections = [torch.nn.Linear(hidden, n, bias=True) for n in (q_out, kv_out, kv_out)]
    for p in projections:
        torch.nn.init.normal_(p.bias, std=2.0)  # large biases: a misplaced one shows
        p.to(dtype)
    o_proj = torch.nn.Linear(q_out, hidden, bias=False).to(dtype)
    qkv = stacked(*projections, pack=True, quantization="int8")
    o = linear_of(o_proj, True, "int8")
    assert isinstance(qkv, Int8Linear) and isinstance(o, Int8Linear)
    assert qkv.out_features == q_out + 2 * kv_out and o.bias is None
    x = torch.randn(5, hidden).to(dtype)
    with torch.no_grad():
        want = torch.cat([p(x) for p in projections], -1).double()
        assert relative_error(qkv(x), want) < 0.02
        assert relative_error(o(x), o_proj(x).double()) < 0.02


def tiny(kind: str, dtype):
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common)).to(dtype).eval()
    return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True)).to(dtype).eval()


@pytest.mark.parametrize("kind", ["qwen2", "llama-tied"])
@pytest.mark.parametrize("dtype", int8_dtype_params())
def test_the_model_in_int8_keeps_the_exact_models_logits_closely(kind, dtype):
    """Every product int8 (lm_head too); prefill and decode logits near the exact model's."""
    torch.manual_seed(4)
    hf_model = tiny(kind, dtype)
    exact = DecoderModel(hf_model, max_rows=2, max_seq_len=32, attention="torch")
    int8 = DecoderModel(hf_model, max_rows=2, max_seq_len=32, attention="torch",
                        quantization="int8")
    layers = [int8.lm_head] + [getattr(layer, name) for layer in int8.layers
                               for name in ("qkv", "o", "gate_up", "down")]
    assert all(isinstance(layer, Int8Linear) for layer in layers)
    empty = torch.empty(0, dtype=torch.long)
    prompts = [PrefillInput(0, torch.arange(3, 12), 0), PrefillInput(1, torch.arange(40, 45), 0)]
    steps = [(empty, empty, empty, prompts)] + [
        (torch.tensor([0, 1]), torch.tensor([7 + i, 90 - i]), torch.tensor([9 + i, 5 + i]), [])
        for i in range(3)]
    for rows, tokens, positions, chunks in steps:
        want = exact.step(rows, tokens, positions, chunks).double()
        got = int8.step(rows, tokens, positions, chunks).double()
        cosine = torch.nn.functional.cosine_similarity(got, want, dim=-1)
        assert torch.all(cosine > 0.995), cosine


def test_the_setting_is_validated():
    assert Config.from_env({}).quantization == "none"
    assert Config.from_env({"QUANTIZATION": "int8"}).quantization == "int8"
    with pytest.raises(ConfigError, match="QUANTIZATION='int4' is not valid: expected one of "
                                          "none|int8"):
        Config.from_env({"QUANTIZATION": "int4"})


def one_line_refusal(*args) -> str:
    with pytest.raises(QuantizationUnavailable) as refused:
        check_quantization(*args)
    message = str(refused.value)
    assert message.startswith("QUANTIZATION=int8 is not available: ") and "\n" not in message
    assert message.endswith("set QUANTIZATION=none")
    return message


def test_int8_refuses_what_it_cannot_run_and_none_runs_everywhere(monkeypatch, tmp_path):
    assert "not on cuda" in one_line_refusal("int8", "cuda", torch.bfloat16)
    assert "float16" in one_line_refusal("int8", "cpu", torch.float16)
    for device, dtype in [("cuda", torch.float16), ("cpu", torch.float16), ("meta", None)]:
        check_quantization("none", device, dtype)  # nothing to check, nothing refused
    if INT8_DTYPES:
        check_quantization("int8", "cpu", INT8_DTYPES[0])  # this machine runs it
    # A torch build without oneDNN's int8 linear, as the availability check would find it:
    monkeypatch.setattr(quantized, "_int8_matmul_works", lambda dtype: "no int8 linear here")
    assert "no int8 linear here" in one_line_refusal("int8", "cpu", torch.bfloat16)
    monkeypatch.undo()
    # No C++ compiler for the quantization kernel (its build is cached per process), on a CPU
    # that would otherwise run it.
    monkeypatch.setattr(quantized, "_vnni_missing", lambda: None)
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        quantize_kernel._library.cache_clear()
        assert "no C++ compiler" in one_line_refusal("int8", "cpu", torch.bfloat16)
    finally:
        quantize_kernel._library.cache_clear()


@pytest.mark.parametrize("dtype", DTYPES)
def test_int8_runs_exactly_where_its_products_are_right_and_fast(dtype):
    """Rows whose every value is their largest, against weights of one sign: every code is 255
    against 127, the products a CPU without VNNI adds in 16 bits and may saturate. Where such a
    product is wrong in a dtype, QUANTIZATION=int8 refuses that dtype, saying so; where it is
    right, the setting runs exactly where the CPU has VNNI (without, oneDNN's slow path)."""
    weight = torch.full((16, 64), 0.5).to(dtype)
    x = torch.full((4, 64), 3.0).to(dtype)
    y = Int8Linear(weight, None)(x).double()
    if not torch.allclose(y, torch.full_like(y, 96.0), rtol=ROUNDING[dtype] + 1e-9):
        assert "gives wrong " + str(dtype).removeprefix("torch.") in one_line_refusal(
            "int8", "cpu", dtype)
    elif torch.cpu._is_vnni_supported():
        check_quantization("int8", "cpu", dtype)
    else:
        assert "no VNNI" in one_line_refusal("int8", "cpu", dtype)


def test_the_model_refuses_int8_where_it_cannot_run(monkeypatch):
    monkeypatch.setattr(quantized, "_int8_matmul_works", lambda dtype: "no int8 linear here")
    with pytest.raises(QuantizationUnavailable, match="QUANTIZATION=int8 is not available"):
        DecoderModel(tiny("qwen2", torch.float32), max_rows=1, max_seq_len=8,
                     quantization="int8")
