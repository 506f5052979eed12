"""How many prompt tokens a step can take: what fits in the inter-token target, by measured cost.

A step's time is close to linear in what it runs: a fixed part (Python, kernel launches, the
norms of the final layer), a part per decoding row (its share of the weights' reads, attention
over its cache, sampling) and a part per prompt token. The three are fitted by recursive least
squares with forgetting over the last few hundred steps, so the fit follows the machine (a
loaded host, a longer context) without a calibration run. Each step then takes as many prompt
tokens as fit in ITL_TARGET_MS beside its decoding rows (Sarathi-Serve's stall-free batching),
never fewer than PREFILL_CHUNK, so that prompts go on even when decoding alone fills the target.
A step with no decoding row takes the most a step may (no stream waits on it).
"""
from __future__ import annotations

from collections import deque

# Before any step is measured: 5 ms a step, 1 ms a row, 1 ms a prompt token (a small model on a
# CPU core). The fit moves from these only as far as the measurements say: in a direction they
# do not tell apart (every step with the same rows, say), it stays near them.
PRIOR_COSTS = (0.005, 0.001, 0.001)
PRIOR_WEIGHT = 1.0  # ridge weight pulling the fit toward PRIOR_COSTS
WINDOW = 256  # steps the fit remembers
MIN_TOKEN_COST = 1e-5  # seconds; a fit at or below zero (a mock, noise) means "cheap"
# The most prompt tokens in one step: past this a step gains nothing in speed per token, and its
# attention masks grow with the square of its chunks.
MAX_STEP_PROMPT_TOKENS = 512


class FixedBudget:
    """The same number of prompt tokens every step (ITL_TARGET_MS=0, and tests)."""

    def __init__(self, tokens: int):
        self.fixed = tokens

    def tokens(self, decode_rows: int) -> int:
        """Prompt tokens the next step may take, whatever decodes beside them."""
        return self.fixed

    def observe(self, decode_rows: int, prompt_tokens: int, seconds: float) -> None:
        """Nothing is measured."""

    def describe(self) -> str:
        """For logs and benchmarks."""
        return f"{self.fixed} prompt tokens a step"


def step_budget(itl_target_ms: float, prefill_chunk: int) -> StepBudget | FixedBudget:
    """The budget the settings ask for: measured against ITL_TARGET_MS, or PREFILL_CHUNK alone."""
    if itl_target_ms <= 0:
        return FixedBudget(prefill_chunk)
    return StepBudget(itl_target_ms / 1000, prefill_chunk,
                      max(prefill_chunk, MAX_STEP_PROMPT_TOKENS))


class StepBudget:
    """Fits step time = fixed + per_row * rows + per_token * prompt tokens; sizes prompt chunks."""

    def __init__(self, target_s: float, min_tokens: int, max_tokens: int):
        self.target_s = target_s
        self.min_tokens, self.max_tokens = min_tokens, max_tokens
        self.costs = list(PRIOR_COSTS)
        self.steps: deque[tuple[tuple[float, float, float], float]] = deque()
        # Sums over the remembered steps of x x^T and x y, x = (1, rows, tokens), y = seconds.
        self._gram = [[0.0] * 3 for _ in range(3)]
        self._moment = [0.0] * 3

    def tokens(self, decode_rows: int) -> int:
        """Prompt tokens the next step may take beside decode_rows decoding rows: the most a
        step takes when none decodes (no stream waits on it, and larger steps prefill faster)."""
        if decode_rows == 0:
            return self.max_tokens
        fixed, per_row, per_token = self.costs
        room = self.target_s - max(fixed, 0.0) - max(per_row, 0.0) * decode_rows
        fit = int(room / max(per_token, MIN_TOKEN_COST))
        return max(self.min_tokens, min(self.max_tokens, fit))

    def observe(self, decode_rows: int, prompt_tokens: int, seconds: float) -> None:
        """Add one step's measured time and fit the costs again (ridge least squares)."""
        x = (1.0, float(decode_rows), float(prompt_tokens))
        self.steps.append((x, seconds))
        self._add(x, seconds, 1.0)
        if len(self.steps) > WINDOW:
            self._add(*self.steps.popleft(), -1.0)
        gram = [[g + (PRIOR_WEIGHT if i == j else 0.0) for j, g in enumerate(row)]
                for i, row in enumerate(self._gram)]
        moment = [m + PRIOR_WEIGHT * c for m, c in zip(self._moment, PRIOR_COSTS)]
        self.costs = solve3(gram, moment)

    def _add(self, x: tuple, y: float, sign: float) -> None:
        for i in range(3):
            self._moment[i] += sign * x[i] * y
            for j in range(3):
                self._gram[i][j] += sign * x[i] * x[j]

    def describe(self) -> str:
        """The fitted costs, for logs and benchmarks."""
        fixed, per_row, per_token = self.costs
        return (f"step {fixed * 1000:.1f} ms + {per_row * 1000:.2f} ms/row + "
                f"{per_token * 1000:.2f} ms/prompt token")


def solve3(a: list[list[float]], b: list[float]) -> list[float]:
    """x with a x = b for a symmetric positive definite 3x3 a (Gaussian elimination)."""
    m = [row[:] + [rhs] for row, rhs in zip(a, b)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, 3):
            factor = m[r][col] / m[col][col]
            m[r] = [v - factor * p for v, p in zip(m[r], m[col])]
    x = [0.0, 0.0, 0.0]
    for r in (2, 1, 0):
        x[r] = (m[r][3] - sum(m[r][c] * x[c] for c in range(r + 1, 3))) / m[r][r]
    return x
