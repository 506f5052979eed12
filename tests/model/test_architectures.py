"""Our forward pass on each supported architecture against transformers' own forward: tiny
random models with the real configs' features on, rows of different lengths in one step,
chunked prompts, decoding rows, reused rows and prefixes copied between rows, on our CPU kernel
and on torch ops."""
import pytest
import torch

from inference_api.model.forward import DecoderModel, PrefillInput
from inference_api.model.fused import NativeLayerOps, TorchLayerOps
from inference_api.model.loading import SUPPORTED_ARCHITECTURES, check_architecture
from tiny_architectures import ARCHITECTURES, LONGROPE_ORIGINAL, VOCAB, build

EMPTY = torch.empty(0, dtype=torch.long)


class Driver:
    """Steps DecoderModel like the scheduler; checks every logit row against transformers' forward
    of the row's whole sequence."""

    def __init__(self, hf_model, max_rows=4, max_seq_len=64, attention="torch", tol=1e-4):
        self.hf, self.tol = hf_model, tol
        self.model = DecoderModel(hf_model, max_rows=max_rows, max_seq_len=max_seq_len,
                                  attention=attention)
        self.seqs, self.prompts = {}, {}
        self.gen = torch.Generator().manual_seed(1)
        self.checked = 0

    def admit(self, row, length):
        self.seqs[row] = []
        self.prompts[row] = torch.randint(0, VOCAB, (length,), generator=self.gen).tolist()

    def copy(self, source, target, length, rest):
        self.model.copy_prefix(source, target, length)
        self.seqs[target] = self.seqs[source][:length]
        self.prompts[target] = torch.randint(0, VOCAB, (rest,), generator=self.gen).tolist()

    def step(self, decode, chunks):
        new = {r: int(torch.randint(0, VOCAB, (1,), generator=self.gen)) for r in decode}
        prefills = []
        for row, size in chunks.items():
            part, self.prompts[row] = self.prompts[row][:size], self.prompts[row][size:]
            prefills.append(PrefillInput(row, torch.tensor(part), len(self.seqs[row])))
            self.seqs[row] = self.seqs[row] + part
        logits = self.model.step(torch.tensor(decode, dtype=torch.long),
                                 torch.tensor([new[r] for r in decode], dtype=torch.long),
                                 torch.tensor([len(self.seqs[r]) for r in decode]), prefills)
        for r in decode:
            self.seqs[r] = self.seqs[r] + [new[r]]
        for i, row in enumerate(list(decode) + list(chunks)):
            assert len(self.seqs[row]) <= LONGROPE_ORIGINAL  # where transformers' is one rope
            with torch.inference_mode():
                want = self.hf(torch.tensor([self.seqs[row]])).logits[0, -1].float()
            where = f"row {row}, length {len(self.seqs[row])}"
            torch.testing.assert_close(logits[i], want, atol=self.tol, rtol=self.tol,
                                       msg=lambda m: f"{where}: {m}")
            self.checked += 1


@pytest.fixture(scope="module", params=ARCHITECTURES)
def hf_model(request):
    return build(request.param)


@pytest.mark.parametrize("attention", ["native", "torch"])
def test_schedule_matches_transformers(hf_model, attention):
    d = Driver(hf_model, attention=attention)
    d.admit(0, 11)
    d.admit(2, 5)
    d.step([], {0: 4, 2: 5})  # two prompts start in the same step
    d.step([2], {0: 7})  # row 0 finishes its prompt while row 2 decodes
    d.admit(3, 20)
    d.admit(1, 3)
    d.step([2, 0], {3: 6, 1: 3})  # rows of different lengths, out of order, one skipped
    for size in (1, 9, 4):
        d.step([0, 1, 2], {3: size})
    for _ in range(6):  # past every sliding window
        d.step([3, 0, 1, 2], {})
    d.admit(0, 2)  # row 0 reused for a shorter prompt: its old cache must stay invisible
    d.step([1, 3], {0: 2})
    d.step([0, 1, 2, 3], {})
    assert d.checked == 51


@pytest.mark.parametrize("attention", ["native", "torch"])
def test_a_prefix_copied_from_another_row_matches_transformers(hf_model, attention):
    d = Driver(hf_model, max_rows=3, attention=attention)
    d.admit(0, 20)
    d.admit(1, 30)
    d.step([], {0: 20, 1: 30})
    d.step([0, 1], {})
    d.copy(0, 2, 13, rest=5)  # part of a 16-position tile
    d.step([1], {2: 5})
    d.copy(1, 0, 31, rest=3)  # a decoded token included
    d.step([1, 2], {0: 3})
    for _ in range(3):
        d.step([0, 1, 2], {})
    assert d.checked == 18


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_bfloat16_kernel_and_torch_ops_agree_to_the_bit(name):
    """In bfloat16 our fused kernel's norms and rotary give torch ops' tensors exactly, on every
    family's switches (Gemma's norms, q/k norms, partial rotary, layers without rope)."""
    hf_model = build(name).to(torch.bfloat16)
    models = [DecoderModel(hf_model, 3, 64, fused=fused, attention="torch")
              for fused in (True, False)]
    assert [type(m.ops) for m in models] == [NativeLayerOps, TorchLayerOps]
    prompts = [torch.randint(0, VOCAB, (n,)) for n in (21, 5, 13)]
    runs = [m.step(EMPTY, EMPTY, EMPTY, [PrefillInput(r, p, 0) for r, p in enumerate(prompts)])
            for m in models]
    positions = torch.tensor([len(p) for p in prompts])
    for step in range(6):
        assert torch.equal(runs[0], runs[1]), f"step {step}"
        tokens = runs[0].argmax(-1)
        runs = [m.step(torch.arange(3), tokens, positions, []) for m in models]
        positions = positions + 1


@pytest.mark.parametrize("name,switch", [
    ("gemma2", "attn_softcap"), ("gemma2", "final_softcap"), ("gemma2", "embed_scale"),
    ("gemma3", "post_norms"), ("qwen3", "qk_norm"), ("smollm3", "no_rope")])
def test_each_switch_changes_the_logits(name, switch):
    """The tiny models are built so that each family's features matter: without one, the
    logits move by far more than the tolerance (so the tests above would catch its loss)."""
    hf_model = build(name)
    model = DecoderModel(hf_model, 1, 32, attention="torch")
    prompt = [PrefillInput(0, torch.randint(0, VOCAB, (20,), generator=torch.Generator()), 0)]
    want = model.step(EMPTY, EMPTY, EMPTY, prompt)
    if switch == "attn_softcap":
        model.attn_softcap = model.attention.softcap = model.prompts.softcap = None
    elif switch == "final_softcap":
        model.final_softcap = None
    elif switch == "embed_scale":
        model.embed_scale = None
    elif switch == "no_rope":
        assert None in [layer.rope for layer in model.layers]
        for layer in model.layers:
            layer.rope = "default"
    else:
        names = ("post_attn_norm", "post_mlp_norm") if switch == "post_norms" else (
            "q_norm", "k_norm")
        assert all(n in layer.norms for layer in model.layers for n in names)
        for layer in model.layers:
            layer.norms = {k: v for k, v in layer.norms.items() if k not in names}
    assert (model.step(EMPTY, EMPTY, EMPTY, prompt) - want).abs().max() > 1e-2


def test_every_family_is_supported_and_others_are_named():
    from transformers import GPT2Config

    for name in ARCHITECTURES:
        check_architecture(build(name).config)
    assert len(SUPPORTED_ARCHITECTURES) == len(ARCHITECTURES)
    with pytest.raises(ValueError) as err:
        check_architecture(GPT2Config(n_layer=1, n_embd=32, n_head=2,
                                      architectures=["GPT2LMHeadModel"]))
    assert str(err.value).startswith("unsupported model architecture GPT2LMHeadModel; supported: ")
    assert all(name in str(err.value) for name in SUPPORTED_ARCHITECTURES)
