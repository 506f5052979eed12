"""A sequence's text state: EOS ids, stop strings and the detokenizer, token by token."""
from inference_api.sampling_params import SamplingParams
from inference_api.process_messages import FINISH_EOS, FINISH_STOP
from inference_api.engine.sequence import Sequence
from inference_api.engine.text_state import TextMaker

EOS = 2
WORDS = {5: "Hel", 6: "lo", 7: " wor", 8: "ld", 9: "!"}


class WordDetokenizer:
    def __init__(self, seq):
        self.seq = seq

    def push(self, token_id):
        return WORDS[token_id]


def state(**params):
    return TextMaker(WordDetokenizer, (EOS,))(Sequence("s", [1], SamplingParams(**params)))


def push_all(text_state, tokens):
    return [text_state.push(t) for t in tokens]


def test_model_and_request_eos_end_the_text_unless_ignored():
    assert state().push(EOS) == ("", FINISH_EOS)
    assert state(eos_token_ids=(9,)).push(9) == ("", FINISH_EOS)
    assert state(eos_token_ids=(9,)).push(EOS) == ("", FINISH_EOS)
    ignoring = state(ignore_eos=True, eos_token_ids=(9,))
    assert push_all(ignoring, [9]) == [("!", None)]
    assert ignoring.eos_ids == frozenset()


def test_stop_string_across_tokens_is_held_then_cut():
    text_state = state(stop=("o wo",))
    assert push_all(text_state, [5, 6, 7]) == [("Hel", None), ("l", None), ("", FINISH_STOP)]
    assert text_state.pending_tokens == 3


def test_held_text_comes_out_when_the_stop_does_not_follow():
    text_state = state(stop=("lo!",))
    assert push_all(text_state, [5, 6, 7]) == [("He", None), ("l", None), ("lo wor", None)]
