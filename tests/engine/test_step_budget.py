"""The step budget: fitted step costs, and the prompt tokens that fit in the inter-token target."""
import random

import pytest

from common.settings import ConfigError
from inference_api.config import Config
from inference_api.engine.step_budget import (MAX_STEP_PROMPT_TOKENS, WINDOW, FixedBudget, StepBudget,
                                       step_budget)


def feed(budget: StepBudget, cost, steps: int, seed: int = 0, noise_s: float = 0.002) -> None:
    """Steps of random mixes timed by cost(rows, tokens) plus noise."""
    rng = random.Random(seed)
    for _ in range(steps):
        rows, tokens = rng.randint(0, 32), rng.choice([0, 0, 16, 48, 120])
        budget.observe(rows, tokens, cost(rows, tokens) + rng.gauss(0, noise_s))


def test_the_fit_finds_the_costs_and_fills_the_target_with_prompt_tokens():
    budget = StepBudget(target_s=0.150, min_tokens=8, max_tokens=512)
    feed(budget, lambda rows, tokens: 0.010 + 0.002 * rows + 0.0008 * tokens, 300)
    fixed, per_row, per_token = budget.costs
    assert fixed == pytest.approx(0.010, abs=0.002)
    assert per_row == pytest.approx(0.002, abs=0.0002)
    assert per_token == pytest.approx(0.0008, abs=0.0001)
    # 150 ms - 10 ms - 32 rows * 2 ms = 76 ms of prompt tokens at 0.8 ms: 95 tokens.
    assert 85 <= budget.tokens(32) <= 105
    assert 160 <= budget.tokens(1) <= 190  # fewer rows decoding, more room for prompts
    assert budget.tokens(0) == 512  # none decoding: no stream waits, the step takes its most


def test_the_budget_shrinks_when_steps_get_slower():
    budget = StepBudget(target_s=0.150, min_tokens=8, max_tokens=512)
    feed(budget, lambda rows, tokens: 0.010 + 0.002 * rows + 0.0008 * tokens, 300)
    before = budget.tokens(16)
    feed(budget, lambda rows, tokens: 2 * (0.010 + 0.002 * rows + 0.0008 * tokens), WINDOW,
         seed=1)
    assert budget.tokens(16) < before / 2  # (150 - 2 * 42) / 1.6 = 41 against 135


def test_steps_all_alike_still_predict_their_own_time():
    budget = StepBudget(target_s=0.100, min_tokens=8, max_tokens=512)
    for _ in range(300):
        budget.observe(32, 48, 0.120)  # every step the same: the three costs are not separable
    fixed, per_row, per_token = budget.costs
    assert fixed + 32 * per_row + 48 * per_token == pytest.approx(0.120, rel=0.01)
    tokens = budget.tokens(32)
    assert fixed + 32 * per_row + tokens * per_token == pytest.approx(0.100, abs=0.003)


def test_the_budget_stays_within_its_floor_and_ceiling():
    slow = StepBudget(target_s=0.050, min_tokens=16, max_tokens=512)
    feed(slow, lambda rows, tokens: 0.020 + 0.004 * rows + 0.002 * tokens, 300)
    assert slow.tokens(32) == 16  # decoding alone takes more than the target: prompts still go
    free = StepBudget(target_s=0.100, min_tokens=16, max_tokens=512)
    for _ in range(300):  # a mock: every step the same time whatever it runs
        free.observe(random.randint(0, 32), random.choice([0, 100]), 0.010)
    assert free.tokens(32) == 512


def test_settings_choose_the_budget():
    assert isinstance(step_budget(0, 48), FixedBudget)
    assert step_budget(0, 48).tokens(32) == 48
    measured = step_budget(120, 16)
    assert isinstance(measured, StepBudget)
    assert (measured.target_s, measured.min_tokens, measured.max_tokens) == \
        (0.120, 16, MAX_STEP_PROMPT_TOKENS)
    assert Config.from_env({"ITL_TARGET_MS": "80"}).itl_target_ms == 80
    with pytest.raises(ConfigError, match="ITL_TARGET_MS"):
        Config.from_env({"ITL_TARGET_MS": "-1"})
    assert Config.from_env({"PREFIX_CACHING": "0"}).prefix_caching is False
