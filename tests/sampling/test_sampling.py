"""Per-row sampling: filters pick from the right tokens, seeds reproduce, penalties and EOS rules hold."""
import math

import pytest
import torch

from inference_api.sampling import draws
from inference_api.sampling.sampler import RowSampler
from inference_api.sampling_params import SamplingParams

V = 64
EOS = 1


def logits_for(step: int, rows: int = 1, vocab: int = V) -> torch.Tensor:
    """Deterministic pseudo-random logits for one step: [rows, vocab]."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(rows, vocab, generator=g) * 2


def run(params_by_row: dict[int, SamplingParams], steps: int, vocab: int = V,
        logits_fn=None, prompt=(5, 6, 7)) -> dict[int, list[int]]:
    """Generate `steps` tokens for each row; every row sees the same logits at a given step."""
    sampler = RowSampler(32, vocab, "cpu", (EOS,))
    for row, params in params_by_row.items():
        sampler.add(row, params, list(prompt))
    rows = sorted(params_by_row)
    out = {r: [] for r in rows}
    for step in range(steps):
        one = (logits_fn or logits_for)(step, 1, vocab)
        tokens = sampler.sample(torch.tensor(rows), one.expand(len(rows), vocab).clone())
        for r, t in zip(rows, tokens.tolist()):
            out[r].append(t)
    return out


def test_greedy_takes_the_argmax_of_each_row():
    sampler = RowSampler(4, V, "cpu", (EOS,))
    for r in range(4):
        sampler.add(r, SamplingParams(temperature=0), [])
    logits = torch.randn(4, V)
    tokens = sampler.sample(torch.tensor([3, 0, 2, 1]), logits.clone())
    assert tokens.tolist() == logits.argmax(-1).tolist()


@pytest.mark.parametrize("params", [SamplingParams(top_k=1, seed=3), SamplingParams(top_p=1e-6, seed=3),
                                    SamplingParams(top_k=20, top_p=1e-6, seed=3),
                                    SamplingParams(min_p=1.0, seed=3)])
def test_tight_filters_equal_greedy(params):
    greedy = run({0: SamplingParams(temperature=0)}, 30)[0]
    assert run({5: params}, 30)[5] == greedy


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_never_leaves_the_k_best(k):
    seeds = {r: SamplingParams(top_k=k, temperature=3.0, seed=r) for r in range(32)}
    out = run(seeds, 20)
    for step in range(20):
        best = set(logits_for(step)[0].topk(k).indices.tolist())
        assert all(out[r][step] in best for r in out)


# The nucleus is looked for among a few candidates first: all fit (64), most rows' nucleus fits
# (16), most rows spill past them to the full sort (2).
@pytest.mark.parametrize("candidates", [64, 16, 2])
@pytest.mark.parametrize("top_k", [0, 20])
def test_top_p_keeps_the_smallest_set_reaching_p(top_k, candidates, monkeypatch):
    monkeypatch.setattr(draws, "NUCLEUS_CANDIDATES", candidates)
    seeds = {r: SamplingParams(top_p=0.6, top_k=top_k, temperature=1.0, seed=r) for r in range(32)}
    out = run(seeds, 20)
    for step in range(20):
        vals, order = logits_for(step)[0].sort(descending=True)
        probs = vals[:top_k or V].softmax(-1)  # top_p applies within the top k (renormalised)
        n = int(((probs.cumsum(0) - probs) < 0.6).sum())
        allowed = set(order[:n].tolist())
        assert all(out[r][step] in allowed for r in out)
        # Many seeds over a set of several tokens: more than one of them shows up.
        assert n == 1 or len({out[r][step] for r in out}) > 1


@pytest.mark.parametrize("top_k", [0, 10])
def test_min_p_drops_tokens_far_below_the_best(top_k):
    seeds = {r: SamplingParams(min_p=0.3, top_k=top_k, temperature=1.0, seed=r) for r in range(32)}
    out = run(seeds, 20)
    for step in range(20):
        probs = logits_for(step)[0].softmax(-1)
        allowed = set((probs >= 0.3 * probs.max()).nonzero()[:, 0].tolist())
        assert all(out[r][step] in allowed for r in out)


def _mixed_neighbours(skip: int) -> dict[int, SamplingParams]:
    kinds = [SamplingParams(temperature=0), SamplingParams(temperature=0.7),
             SamplingParams(top_k=5, seed=1), SamplingParams(top_p=0.8, temperature=1.3),
             SamplingParams(top_k=200, top_p=0.9, min_p=0.05, repetition_penalty=1.3),
             SamplingParams(frequency_penalty=1.0, presence_penalty=-0.5, min_tokens=3)]
    return {r: kinds[r % len(kinds)] for r in range(32) if r != skip}


@pytest.mark.parametrize("params", [
    SamplingParams(seed=42),
    SamplingParams(seed=42, temperature=0.8, top_k=7, top_p=0.9),
    SamplingParams(seed=-5, temperature=1.2, top_p=0.7, min_p=0.02),
    SamplingParams(seed=2 ** 70 + 3, repetition_penalty=1.5, presence_penalty=1.0,
                   frequency_penalty=0.5),
])
def test_seeded_row_is_the_same_alone_and_in_a_full_batch(params):
    vocab = 3000  # above the nucleus probe and topk sizes used by the neighbours
    alone = run({0: params}, 25, vocab)[0]
    crowd = _mixed_neighbours(skip=17)
    crowd[17] = params
    assert run(crowd, 25, vocab)[17] == alone


def test_different_seeds_give_different_sequences():
    out = run({r: SamplingParams(seed=r, temperature=1.5) for r in range(8)}, 20)
    assert len({tuple(v) for v in out.values()}) == 8


def test_unseeded_rows_differ():
    out = run({r: SamplingParams(temperature=1.5) for r in range(4)}, 20)
    assert len({tuple(v) for v in out.values()}) == 4


def _one_step_greedy(params: SamplingParams, logits: torch.Tensor, prompt, history=()) -> int:
    sampler = RowSampler(2, logits.shape[0], "cpu", (EOS,))
    sampler.add(1, params, list(prompt))
    for t in history:  # generate `history` by forcing those tokens to win
        forced = torch.full((1, logits.shape[0]), -10.0)
        forced[0, t] = 10.0
        assert sampler.sample(torch.tensor([1]), forced).item() == t
    return sampler.sample(torch.tensor([1]), logits[None].clone()).item()


def test_repetition_penalty_discourages_prompt_tokens():
    logits = torch.zeros(V)
    logits[10], logits[11] = 2.0, 1.8
    assert _one_step_greedy(SamplingParams(temperature=0), logits, [10]) == 10
    assert _one_step_greedy(SamplingParams(temperature=0, repetition_penalty=1.2), logits, [10]) == 11
    # Negative logits are multiplied, so a seen token goes further down, not up.
    neg = torch.full((V,), -5.0)
    neg[10], neg[11] = -1.0, -1.1
    assert _one_step_greedy(SamplingParams(temperature=0, repetition_penalty=1.2), neg, [10]) == 11
    # Below 1 it rewards repetition.
    assert _one_step_greedy(SamplingParams(temperature=0, repetition_penalty=0.8), neg, [11]) == 11


def test_presence_and_frequency_penalties_count_only_generated_tokens():
    logits = torch.zeros(V)
    logits[10], logits[11] = 2.0, 1.5
    greedy = SamplingParams(temperature=0, presence_penalty=0.6)
    assert _one_step_greedy(greedy, logits, [10]) == 10  # the prompt is not penalised
    assert _one_step_greedy(greedy, logits, [], history=[10]) == 11
    freq = SamplingParams(temperature=0, frequency_penalty=0.3)
    assert _one_step_greedy(freq, logits, [], history=[10]) == 10  # 2.0 - 0.3 > 1.5
    assert _one_step_greedy(freq, logits, [], history=[10, 10]) == 11  # 2.0 - 0.6 < 1.5
    attract = SamplingParams(temperature=0, presence_penalty=-1.0)
    assert _one_step_greedy(attract, logits, [], history=[11]) == 11


def test_min_tokens_bans_eos_until_reached():
    def eos_heavy(step, rows, vocab):
        x = logits_for(step, rows, vocab)
        x[:, EOS] = 50.0
        return x
    params = SamplingParams(temperature=0, min_tokens=3, eos_token_ids=(4,))
    out = run({2: params}, 5, logits_fn=eos_heavy)[2]
    assert EOS not in out[:3] and 4 not in out[:3]
    assert out[3] == EOS


def test_ignore_eos_never_yields_eos():
    def eos_heavy(step, rows, vocab):
        x = logits_for(step, rows, vocab)
        x[:, EOS] = x[:, 4] = 50.0
        return x
    params = SamplingParams(temperature=1.0, ignore_eos=True, eos_token_ids=(4,), seed=1)
    out = run({0: params, 1: SamplingParams(temperature=0)}, 30, logits_fn=eos_heavy)
    assert EOS not in out[0] and 4 not in out[0]
    assert out[1][0] in (EOS, 4)


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    mask = expected > 0
    assert counts[~mask].sum() == 0, "a token outside the allowed set was drawn"
    return float(((counts[mask] - expected[mask]) ** 2 / expected[mask]).sum())


@pytest.mark.parametrize("params,keep,candidates", [
    (dict(temperature=0.7), None, 1024),
    (dict(temperature=1.3, top_k=4), 4, 1024),
    (dict(temperature=1.0, top_p=0.75), "p", 1024),
    (dict(temperature=1.0, top_p=0.75), "p", 3),  # the nucleus found among 3 candidates
    (dict(temperature=1.0, top_p=0.75), "p", 2),  # past 2 candidates: the full sort
])
def test_draws_follow_the_softmax(params, keep, candidates, monkeypatch):
    monkeypatch.setattr(draws, "NUCLEUS_CANDIDATES", candidates)
    vocab = 8
    logits = torch.tensor([2.0, 1.5, 1.0, 0.6, 0.3, 0.0, -0.5, -1.0])
    probs = torch.softmax(logits / params["temperature"], -1)
    if keep == 4:
        probs[4:] = 0
    elif keep == "p":
        n = int(((probs.cumsum(0) - probs) < 0.75).sum())
        probs[n:] = 0
    probs /= probs.sum()
    counts = torch.zeros(vocab)
    sampler = RowSampler(32, vocab, "cpu", (100,))
    for batch in range(50):  # 32 seeds x 5 steps x 50 batches = 8000 draws
        for r in range(32):
            sampler.add(r, SamplingParams(seed=batch * 32 + r, **params), [])
        for _ in range(5):
            t = sampler.sample(torch.arange(32), logits.expand(32, vocab).clone())
            counts += torch.bincount(t, minlength=vocab)
    dof = int((probs > 0).sum()) - 1
    # Mean dof, sd sqrt(2 dof): 6 sd above is far beyond chance yet catches a wrong distribution.
    assert _chi_square(counts, probs) < dof + 6 * math.sqrt(2 * dof)


@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("temperature", 6), ("temperature", float("nan")), ("top_k", -1),
    ("top_k", 1001), ("top_p", 0), ("top_p", 1.5), ("min_p", 2), ("repetition_penalty", 0),
    ("presence_penalty", 3), ("frequency_penalty", -2.5), ("max_tokens", 0), ("seed", "x"),
    ("stop", ("",)), ("eos_token_ids", (-1,)), ("min_tokens", 300), ("ignore_eos", "yes"),
])
def test_invalid_params_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_eos_ids_beyond_the_vocabulary_are_rejected():
    with pytest.raises(ValueError, match="eos_token_ids"):
        RowSampler(2, V, "cpu", (EOS,)).add(0, SamplingParams(eos_token_ids=(V,)), [])


@pytest.mark.parametrize("candidates", [1, 7, 100, 4096])
def test_nucleus_among_candidates_equals_the_full_sort(candidates, monkeypatch):
    monkeypatch.setattr(draws, "NUCLEUS_CANDIDATES", candidates)
    g = torch.Generator().manual_seed(0)
    vocab = 2048
    # Peaked rows and flat rows: some nuclei fit in the candidates, some do not.
    w = torch.cat([(torch.randn(6, vocab, generator=g) * 4).exp(),
                   torch.rand(6, vocab, generator=g)])
    w = w / w.amax(-1, keepdim=True)
    top_p = torch.tensor([0.1, 0.5, 0.9, 0.95, 0.99, 1e-6] * 2)
    scratch = [torch.empty(12, vocab) for _ in range(2)] + [torch.empty(12, vocab, dtype=torch.bool)]
    got = draws.nucleus_floor(w, top_p, *scratch)
    want = draws._nucleus_floor_sorted(w, top_p, *scratch)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
