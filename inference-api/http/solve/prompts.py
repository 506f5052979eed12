"""The instructions wrapped around a problem before it goes through the model's chat template.

SOLVE_MATH_PROMPT and SOLVE_CODING_PROMPT replace them (Config checks that each holds the
{problem} placeholder); empty, the defaults below apply. The whole text is one user turn, so a
template that adds its own system prompt (the bundled model's does) keeps it.
"""
from __future__ import annotations

from inference_api.config import PROBLEM_PLACEHOLDER, Config

# The wording instruct models are trained on for these tasks (math benchmarks ask for \boxed{}).
DEFAULT_MATH_PROMPT = (PROBLEM_PLACEHOLDER + "\n\n"
                       "Please reason step by step, and put your final answer within \\boxed{}.")
DEFAULT_CODING_PROMPT = (
    "Solve the following programming problem. Write the complete solution in one fenced code "
    "block (```python ... ```, or the language the problem asks for), then explain it briefly."
    "\n\n" + PROBLEM_PLACEHOLDER)
KINDS = ("math", "coding")


def template_for(kind: str, config: Config) -> str:
    """The prompt template of a kind of problem: the setting's, else the default."""
    if kind == "math":
        return config.solve_math_prompt or DEFAULT_MATH_PROMPT
    return config.solve_coding_prompt or DEFAULT_CODING_PROMPT


def user_turn(template: str, problem: str) -> dict:
    """The chat turn of a problem in its template; the problem is inserted as given (a
    {problem} inside it stays as it is)."""
    return {"role": "user", "content": template.replace(PROBLEM_PLACEHOLDER, problem)}
