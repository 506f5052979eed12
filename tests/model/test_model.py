"""DecoderModel against transformers' own forward on tiny random Llama, Mistral and Qwen2 models."""
import pytest
import torch
from transformers import (GPT2Config, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

from inference_api.model.attention.torch_decode import DecodeAttention, length_groups
from inference_api.model.linear import can_pack
from inference_api.model.forward import DecoderModel, PrefillInput
from inference_api.model.loading import (SUPPORTED_ARCHITECTURES, UnsupportedArchitecture,
                                         check_architecture)
from inference_api.model.attention.native_decode import NativeDecodeAttention

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
# Tiny random models covering tied embeddings, rope scaling, sliding windows and q/k/v biases.
TINY_MODELS = {
    "llama-tied": lambda: LlamaForCausalLM(LlamaConfig(**COMMON, tie_word_embeddings=True)),
    "llama3-rope": lambda: LlamaForCausalLM(LlamaConfig(**COMMON, rope_parameters=LLAMA3_ROPE)),
    "mistral-window": lambda: MistralForCausalLM(MistralConfig(**COMMON, sliding_window=6)),
    "qwen2-bias": lambda: Qwen2ForCausalLM(Qwen2Config(**COMMON)),
}


def reference_logits(hf_model, sequence: list[int]) -> torch.Tensor:
    """transformers' logits at the last position of the whole sequence run alone."""
    with torch.inference_mode():
        return hf_model(torch.tensor([sequence])).logits[0, -1].float()


class Driver:
    """Drives DecoderModel like a scheduler would; checks every logit row against transformers."""

    def __init__(self, hf_model, max_rows: int, max_seq_len: int, tol: float = 1e-4,
                 kv_bucket: int = 32, keep_buffers: bool = True, attention: str = "torch"):
        self.hf, self.tol = hf_model, tol
        self.model = DecoderModel(hf_model, max_rows=max_rows, max_seq_len=max_seq_len,
                                  kv_bucket=kv_bucket, attention=attention)
        expected = NativeDecodeAttention if attention == "native" else DecodeAttention
        assert isinstance(self.model.attention, expected)
        if attention == "torch":
            self.model.attention.keep_buffers = keep_buffers
        self.seqs: dict[int, list[int]] = {}  # row -> tokens in the cache so far
        self.prompts: dict[int, list[int]] = {}  # row -> prompt tokens not yet prefilled
        self.gen = torch.Generator().manual_seed(0)
        self.checked = 0

    def admit(self, row: int, length: int) -> None:
        """Start a new prompt in row (possibly reused: position starts again at 0)."""
        self.seqs[row] = []
        self.prompts[row] = torch.randint(0, VOCAB, (length,), generator=self.gen).tolist()

    def copy(self, source: int, target: int, length: int, rest: int) -> None:
        """Start a prompt in target with source's first `length` tokens, copied, then `rest` new."""
        self.model.copy_prefix(source, target, length)
        self.seqs[target] = self.seqs[source][:length]
        self.prompts[target] = torch.randint(0, VOCAB, (rest,), generator=self.gen).tolist()

    def step(self, decode: list[int], chunks: dict[int, int]) -> None:
        """Decode one random token in each row of `decode`; prefill `chunks[row]` prompt tokens."""
        new = {r: int(torch.randint(0, VOCAB, (1,), generator=self.gen)) for r in decode}
        prefills = []
        for row, size in chunks.items():
            part, self.prompts[row] = self.prompts[row][:size], self.prompts[row][size:]
            prefills.append(PrefillInput(row, torch.tensor(part), len(self.seqs[row])))
            self.seqs[row] = self.seqs[row] + part
        logits = self.model.step(torch.tensor(decode, dtype=torch.long),
                                 torch.tensor([new[r] for r in decode], dtype=torch.long),
                                 torch.tensor([len(self.seqs[r]) for r in decode],
                                              dtype=torch.long), prefills)
        for r in decode:
            self.seqs[r] = self.seqs[r] + [new[r]]
        rows = list(decode) + list(chunks)
        assert logits.shape == (len(rows), VOCAB) and logits.dtype == torch.float32
        for i, row in enumerate(rows):
            want = reference_logits(self.hf, self.seqs[row])
            where = f"row {row}, length {len(self.seqs[row])}"
            torch.testing.assert_close(logits[i], want, atol=self.tol, rtol=self.tol,
                                       msg=lambda m: f"{where}: {m}")
            self.checked += 1


# The CPU kernel reads the cache in place. Torch ops: with bucket 1, every step's lengths are
# new, so each group is gathered afresh; 32: groups keep their buffers and add one position a
# step; 4: both, as lengths cross bucket edges. Without kept buffers (as on accelerators) every
# layer gathers its groups afresh each step.
@pytest.mark.parametrize("attention,kv_bucket,keep_buffers", [
    ("native", 32, False), ("torch", 1, True), ("torch", 4, True), ("torch", 32, True),
    ("torch", 4, False)])
@pytest.mark.parametrize("name", TINY_MODELS)
def test_schedule_matches_transformers(name, attention, kv_bucket, keep_buffers):
    torch.manual_seed(0)
    hf_model = TINY_MODELS[name]().eval()
    d = Driver(hf_model, max_rows=4, max_seq_len=64, kv_bucket=kv_bucket,
               keep_buffers=keep_buffers, attention=attention)
    d.admit(0, 11)
    d.admit(2, 5)
    d.step([], {0: 4, 2: 5})  # two prompts start in the same step; row 2 fits in one chunk
    d.step([2], {0: 7})  # row 0 finishes its prompt while row 2 decodes
    d.admit(3, 20)
    d.admit(1, 3)
    d.step([2, 0], {3: 6, 1: 3})  # decode rows out of order, skipping row 1
    for size in (1, 9, 4):
        d.step([0, 1, 2], {3: size})
    for _ in range(6):  # longer than the Mistral window
        d.step([3, 0, 1, 2], {})
    d.admit(0, 2)  # row 0 reused for a shorter prompt: its old cache must stay invisible
    d.step([1, 3], {0: 2})
    d.step([0, 1, 2, 3], {})
    d.step([0], {})
    assert d.checked == 52
    if attention == "torch":
        assert bool(d.model.attention.buffers) == keep_buffers


@pytest.mark.parametrize("attention,kv_bucket", [("native", 32), ("torch", 4), ("torch", 32)])
@pytest.mark.parametrize("name", TINY_MODELS)
def test_a_prefix_copied_from_another_row_matches_transformers(name, attention, kv_bucket):
    torch.manual_seed(0)
    d = Driver(TINY_MODELS[name]().eval(), max_rows=3, max_seq_len=64, kv_bucket=kv_bucket,
               attention=attention)
    d.admit(0, 20)
    d.admit(1, 30)
    d.step([], {0: 20, 1: 30})
    d.step([0, 1], {})
    # Row 2 takes 13 of row 0's tokens (part of a 16-position tile), row 0 then 31 of row 1's,
    # a decoded token included, while row 1 goes on decoding beside them.
    d.copy(0, 2, 13, rest=5)
    d.step([1], {2: 5})
    d.copy(1, 0, 31, rest=3)
    d.step([1, 2], {0: 3})
    for _ in range(3):
        d.step([0, 1, 2], {})
    assert d.checked == 4 + 1 + 1 + 2 + 1 + 9


def test_length_groups_split_long_from_short_and_cover_every_row():
    lengths = [30, 900, 25, 32, 880, 28]
    groups = length_groups(lengths, overhead=64)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert sorted(map(sorted, groups)) == [[0, 2, 3, 5], [1, 4]]
    assert length_groups(lengths, overhead=10**9) == [[2, 5, 0, 3, 4, 1]]  # one group


def test_rows_attended_in_several_length_groups_match_transformers():
    # No overhead per group: every distinct length gets its own group, in scattered rows.
    torch.manual_seed(0)
    d = Driver(TINY_MODELS["mistral-window"]().eval(), max_rows=5, max_seq_len=64, kv_bucket=1)
    d.model.attention.overhead = 0
    for row, length in [(0, 3), (1, 17), (2, 5), (3, 29), (4, 2)]:
        d.admit(row, length)
    d.step([], {row: len(d.prompts[row]) for row in range(5)})
    for _ in range(4):
        d.step([4, 1, 3, 0, 2], {})
    assert d.checked == 25


def test_group_buffers_stay_exact_as_rows_leave_return_and_take_new_prompts():
    torch.manual_seed(0)
    d = Driver(TINY_MODELS["llama-tied"]().eval(), max_rows=3, max_seq_len=64, kv_bucket=16)
    for row, length in [(0, 4), (1, 6), (2, 5)]:
        d.admit(row, length)
    d.step([], {0: 4, 1: 6, 2: 5})
    d.step([0, 1, 2], {})
    (buffer,) = d.model.attention.buffers.values()
    d.step([2, 0, 1], {})  # same rows in another order: the buffer is kept and extended
    assert list(d.model.attention.buffers.values()) == [buffer]
    d.step([0, 2], {})  # row 1 sits out a step; its next position is unchanged
    d.step([0, 1, 2], {})
    # Row 2 takes a new prompt exactly as long as its old sequence: same next position, new cache.
    d.admit(2, len(d.seqs[2]))
    d.step([0, 1], {2: len(d.prompts[2])})
    for _ in range(3):
        d.step([0, 1, 2], {})
    assert d.checked == 26


def test_a_row_joining_keeps_large_groups_and_merges_into_small_ones():
    """Forming a group copies its rows: a row that finishes its prompt beside a big group gets a
    group of its own rather than re-copying the big one; beside a small one, they merge."""
    attention = DecodeAttention(layers=1, max_seq_len=1024, kv_heads=1, head_dim=4,
                                dtype=torch.float32)

    def plan(positions):
        groups = attention.group_rows(torch.arange(len(positions)), torch.tensor(positions), {None})
        return {tuple(g.buffer.rows): g.buffer for g in groups}

    big = plan([500] * 10)
    after = plan([501] * 10 + [505])
    assert sorted(after) == [tuple(range(10)), (10,)]
    assert after[tuple(range(10))] is big[tuple(range(10))]  # kept, not gathered again

    attention.reset()
    plan([500] * 2)
    assert sorted(plan([501] * 2 + [505])) == [(0, 1, 2)]  # copying 2 rows is cheaper


@pytest.mark.parametrize("attention", ["native", "torch"])
def test_bfloat16_matches_transformers(attention):
    """The production dtype: same schedule shape, tolerance of a couple of bfloat16 ulps."""
    hf_model = Qwen2ForCausalLM(Qwen2Config(**COMMON)).to(torch.bfloat16).eval()
    d = Driver(hf_model, max_rows=3, max_seq_len=32, tol=1.5e-2, attention=attention)
    d.admit(0, 9)
    d.admit(1, 4)
    d.step([], {0: 5, 1: 4})
    d.step([1], {0: 4})
    for _ in range(3):
        d.step([1, 0], {})
    assert d.model.dtype == torch.bfloat16 and d.checked == 10


@pytest.mark.parametrize("attention", ["native", "torch"])
def test_reused_row_does_not_see_stale_cache(attention):
    """Sanity check that the schedule test can fail: corrupting the stale tail changes nothing,
    corrupting a live position does (bucket 1: each step gathers the cache afresh)."""
    hf_model = LlamaForCausalLM(LlamaConfig(**COMMON)).eval()
    d = Driver(hf_model, max_rows=2, max_seq_len=32, kv_bucket=1, attention=attention)
    d.admit(0, 10)
    d.step([], {0: 10})
    for position in range(5, 32):  # garbage beyond the next prompt's positions
        cached_keys(d.model, 0, position).fill_(1e4)
    d.admit(0, 3)
    d.step([], {0: 3})
    d.step([0], {})  # positions 0..3 live; 5.. still garbage and must be masked
    cached_keys(d.model, 0, 1).add_(3.0)  # corrupt a live position
    with pytest.raises(AssertionError):
        d.step([0], {})


def cached_keys(model, row: int, position: int) -> torch.Tensor:
    """A writable view of one row's cached keys at one position, every layer and kv head."""
    if isinstance(model.attention, NativeDecodeAttention):  # [.., tiles, head_dim / 2, 16, 2]
        return model.k_cache[:, row, :, position // 16, :, position % 16]
    return model.k_cache[:, row, ..., position]  # [layers, rows, kv_heads, head_dim, seq]


@pytest.mark.parametrize("attention,k_shape,v_shape", [
    ("torch", (2, 3, 2, 16, 24), (2, 3, 2, 24, 16)),  # keys [.., head_dim, seq], values [.., seq, dim]
    ("native", (2, 3, 2, 2, 8, 16, 2), (2, 3, 2, 32, 16))])  # 24 positions in 2 tiles of 16
def test_logits_only_for_requested_positions(attention, k_shape, v_shape):
    hf_model = Qwen2ForCausalLM(Qwen2Config(**COMMON)).eval()
    model = DecoderModel(hf_model, max_rows=3, max_seq_len=24, attention=attention)
    assert model.k_cache.shape == k_shape and model.v_cache.shape == v_shape
    assert model.vocab_size == VOCAB and model.dtype == torch.float32
    empty = torch.empty(0, dtype=torch.long)
    out = model.step(empty, empty, empty, [PrefillInput(1, torch.arange(7), 0)])
    assert out.shape == (1, VOCAB)
    with pytest.raises(IndexError):
        model.step(empty, empty, empty, [PrefillInput(1, torch.arange(7), 20)])


def test_weights_are_shared_not_copied():
    hf_model = LlamaForCausalLM(LlamaConfig(**COMMON, tie_word_embeddings=True))
    model = DecoderModel(hf_model, max_rows=1, max_seq_len=8, pack_weights=False)
    assert not model.layers[0].o.packed  # weights not reordered are used as they are
    assert model.lm_head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
    o_proj = hf_model.model.layers[0].self_attn.o_proj
    assert model.layers[0].o.weight.data_ptr() == o_proj.weight.data_ptr()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_reordered_weights_give_the_same_logits(dtype):
    """On CPUs, float32 weights, and bfloat16 ones where the CPU does bf16 matrix math, are
    reordered once for the matmul library; every step's logits stay those of the plain weights
    (identical in bfloat16; float32 kernels may add in another order)."""
    hf_model = Qwen2ForCausalLM(Qwen2Config(**COMMON)).to(dtype).eval()
    auto = DecoderModel(hf_model, max_rows=2, max_seq_len=32)
    plain = DecoderModel(hf_model, max_rows=2, max_seq_len=32, pack_weights=False)
    assert auto.layers[0].qkv.packed == can_pack(torch.device("cpu"), dtype)
    if dtype == torch.float32:
        assert auto.layers[0].qkv.packed == torch.backends.mkldnn.is_available()
    assert not plain.layers[0].qkv.packed
    empty = torch.empty(0, dtype=torch.long)
    prompts = [PrefillInput(0, torch.arange(3, 12), 0), PrefillInput(1, torch.arange(40, 45), 0)]
    steps = [(empty, empty, empty, prompts)] + [
        (torch.tensor([0, 1]), torch.tensor([7 + i, 90 - i]), torch.tensor([9 + i, 5 + i]), [])
        for i in range(4)]
    for rows, tokens, positions, chunks in steps:
        expected = plain.step(rows, tokens, positions, chunks)
        got = auto.step(rows, tokens, positions, chunks)
        if dtype == torch.bfloat16:
            assert torch.equal(got, expected)
        else:
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_unsupported_architecture():
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2)
    with pytest.raises(UnsupportedArchitecture) as err:
        check_architecture(config)
    message = str(err.value)
    assert "gpt2" in message.lower()
    assert all(name in message for name in SUPPORTED_ARCHITECTURES)
    config.architectures = ["GPT2LMHeadModel"]
    with pytest.raises(UnsupportedArchitecture, match="GPT2LMHeadModel"):
        check_architecture(config)
    check_architecture(LlamaConfig(**COMMON))
    check_architecture(Qwen2Config(**COMMON, architectures=["Qwen2ForCausalLM"]))
