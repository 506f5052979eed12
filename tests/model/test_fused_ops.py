"""The layers' small operations in our C++ kernel give torch's tensors to the bit."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from inference_api.model.forward import DecoderModel, PrefillInput
from inference_api.model.fused import NativeLayerOps, TorchLayerOps, layer_ops
from inference_api.model.rope import rope_tables
from inference_api.model.native_build import KernelUnavailable

DTYPES = [torch.bfloat16, torch.float32]


def tables(dtype, head_dim=64, rotary_dim=None):
    """Rotary tables for 512 positions, over rotary_dim of each head's dims (all by default)."""
    params = {"rope_type": "default", "rope_theta": 10000.0, "head_dim": head_dim,
              "rotary_dim": rotary_dim or head_dim, "max_position_embeddings": 512}
    return {"default": rope_tables(params, 512, dtype)}


def both(dtype, heads=9, kv_heads=3, head_dim=64, q_scale=0.125, rotary_dim=None, gemma=False):
    """The kernel's ops and torch's over the same rotary tables."""
    args = (tables(dtype, head_dim, rotary_dim), heads, kv_heads, head_dim, q_scale,
            torch.nn.SiLU(), gemma)
    return NativeLayerOps(*args), TorchLayerOps(*args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [576, 960, 2048, 100])
@pytest.mark.parametrize("rows", [1, 33, 300])  # 300 rows: the kernel splits rows over threads
def test_residual_add_and_norm_equal_torch_to_the_bit(dtype, dim, rows):
    native, reference = both(dtype)
    gen = torch.Generator().manual_seed(dim + rows)
    # Rows of very different sizes: a norm's sum of squares is where orders of addition show.
    x = (torch.randn(rows, dim, generator=gen) * torch.rand(rows, 1, generator=gen) * 50).to(dtype)
    delta = torch.randn(rows, dim, generator=gen).to(dtype)
    weight = (torch.rand(dim, generator=gen) + 0.5).to(dtype)
    for given in (delta, None):
        x_native, h_native = native.norm(x.clone(), given, weight, 1e-5)
        x_torch, h_torch = reference.norm(x.clone(), given, weight, 1e-5)
        assert torch.equal(x_native, x_torch) and torch.equal(h_native, h_torch)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [576, 100])
def test_gemma_norms_equal_torch_to_the_bit(dtype, dim):
    """Gemma's norms: (1 + weight) times the normalized row in float32, rounded once."""
    native, reference = both(dtype, gemma=True)
    gen = torch.Generator().manual_seed(dim)
    x = (torch.randn(33, dim, generator=gen) * 20).to(dtype)
    delta = torch.randn(33, dim, generator=gen).to(dtype)
    weight = torch.randn(dim, generator=gen).to(dtype)
    for given in (delta, None):
        x_native, h_native = native.norm(x.clone(), given, weight, 1e-6)
        x_torch, h_torch = reference.norm(x.clone(), given, weight, 1e-6)
        assert torch.equal(x_native, x_torch) and torch.equal(h_native, h_torch)
    llama_style = both(dtype)[1].norm(x.clone(), None, weight, 1e-6)[1]
    assert not torch.equal(llama_style, h_torch)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads, kv_heads, head_dim", [(9, 3, 64), (4, 4, 16), (8, 2, 128)])
@pytest.mark.parametrize("variant", ["plain", "qk-norm", "gemma-qk-norm", "partial", "no-rope"])
def test_rotary_and_query_scale_equal_torch_to_the_bit(dtype, heads, kv_heads, head_dim, variant):
    native, reference = both(dtype, heads, kv_heads, head_dim, head_dim ** -0.5,
                             rotary_dim=head_dim * 3 // 4 if variant == "partial" else None,
                             gemma=variant == "gemma-qk-norm")
    gen = torch.Generator().manual_seed(heads * head_dim)
    qkv = (torch.randn(40, (heads + 2 * kv_heads) * head_dim, generator=gen) * 3).to(dtype)
    positions = torch.randint(0, 512, (40,), generator=gen)
    norms = {}
    if variant.endswith("qk-norm"):
        norms = {"q_norm": (torch.randn(head_dim, generator=gen) + 1).to(dtype),
                 "k_norm": (torch.randn(head_dim, generator=gen) + 1).to(dtype), "eps": 1e-6}
    rope = (lambda ops: None) if variant == "no-rope" else (
        lambda ops: ops.rope(positions)["default"])
    got = native.rotary(qkv.clone(), rope(native), **norms)
    want = reference.rotary(qkv.clone(), rope(reference), **norms)
    for a, b in zip(got, want):  # q, k and v
        assert a.shape == b.shape and torch.equal(a, b)
    if variant == "partial":  # the dims past the rotated ones pass, only the queries scaled
        assert torch.equal(want[1][..., head_dim * 3 // 4:],
                           qkv.view(40, -1, head_dim)[:, heads:heads + kv_heads,
                                                      head_dim * 3 // 4:])


TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [lambda: LlamaForCausalLM(LlamaConfig(**TINY)),
                                  lambda: Qwen2ForCausalLM(Qwen2Config(**TINY))],
                         ids=["llama", "qwen2-bias"])
def test_a_step_gives_the_same_logits_with_and_without_the_kernel(dtype, make):
    torch.manual_seed(0)
    hf_model = make().to(dtype).eval()
    models = [DecoderModel(hf_model, 4, 128, fused=fused) for fused in (True, False)]
    assert [type(m.ops) for m in models] == [NativeLayerOps, TorchLayerOps]
    prompts = [torch.randint(0, 128, (n,)) for n in (37, 5, 20)]
    tokens = positions = None
    for step in range(12):
        if step == 0:  # prefill in chunks of different rows, then decode every row
            runs = [m.step(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long),
                           torch.empty(0, dtype=torch.long),
                           [PrefillInput(r, p, 0) for r, p in enumerate(prompts)]) for m in models]
            positions = torch.tensor([len(p) for p in prompts])
        else:
            runs = [m.step(torch.arange(3), tokens, positions, []) for m in models]
            positions = positions + 1
        assert torch.equal(runs[0], runs[1]), f"step {step}"
        tokens = runs[0].argmax(-1)


def test_the_choice_follows_the_ask(monkeypatch):
    args = (tables(torch.float32), 9, 3, 64, 0.125, torch.nn.SiLU())
    assert isinstance(layer_ops(*args, native=False), TorchLayerOps)
    assert isinstance(layer_ops(*args), NativeLayerOps)
    odd = (tables(torch.float32, 63), 9, 3, 63, 0.125, torch.nn.SiLU())
    assert isinstance(layer_ops(*odd), TorchLayerOps)  # auto falls back, saying why in the log
    with pytest.raises(KernelUnavailable, match="even head sizes"):
        layer_ops(*odd, native=True)
