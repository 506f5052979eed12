"""What /solve/math and /solve/coding read from a solution: the answer and the code, or None."""
from __future__ import annotations

import pytest

from inference_api.http.solve.extract import (answer_lines, boxed_answers, code_blocks,
                                              first_code, math_answer)

MATH = [
    # (solution, answer)
    ("2 + 2 = 4, so the answer is \\boxed{4}.", "4"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\sqrt{\\frac{a^{2}}{b_{1}}}} done", "\\sqrt{\\frac{a^{2}}{b_{1}}}"),
    ("First \\boxed{3}, then corrected: \\boxed{5}", "5"),
    ("\\boxed{1} and \\boxed{2} and \\boxed{10}", "10"),
    ("$\\boxed{x = 2}$", "x = 2"),
    ("\\boxed { 7 }", "7"),  # a space before the brace, spaces inside
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not close the box
    ("an answer \\boxed{9} then a box left open \\boxed{12", "9"),
    ("put it within \\boxed{}: \\boxed{42}", "42"),
    ("the final one is empty \\boxed{6} \\boxed{ }", "6"),  # an empty box is no answer
    ("Answer: 12", "12"),
    ("Steps...\nanswer: 3\nMore thinking.\nANSWER: 4\n", "4"),
    ("**Final Answer:** 15", "15"),
    ("## Answer: **x = 3**", "x = 3"),
    ("- answer : 8", "8"),
    ("Answer: 5\nand the box says \\boxed{6}", "6"),  # a box wins over an answer line
    ("Answer: \\boxed{7}", "7"),
    ("Answer:\nnothing after the colon", None),
    ("The answer is 42.", None),  # prose is not an answer line
    ("My answer: 3", None),  # nor a line that does not start with it
    ("\\boxed{unclosed", None),
    ("\\boxed 5", None),
    ("\\boxed{\\boxed{3}}", "3"),  # a box in a box: the inner one opens last
    ("{ stray braces } } \\boxed{2} {", "2"),
    ("", None),
    ("no answer at all", None),
]


@pytest.mark.parametrize("text,expected", MATH)
def test_math_answer(text, expected):
    assert math_answer(text) == expected


def test_every_box_and_answer_line_is_found_in_order():
    assert boxed_answers("\\boxed{a}\\boxed{b{c}}\\boxed{d") == ["a", "b{c}"]
    assert answer_lines("Answer: 1\nx\nfinal answer: 2\nanswer:\n") == ["1", "2"]


def test_a_very_long_unclosed_box_is_read_in_one_pass():
    assert math_answer("\\boxed{" + "{" * 200_000) is None
    assert math_answer("\\boxed{" * 100_000 + "\\boxed{1}") == "1"


CODE = [
    # (solution, code)
    ("Here:\n```python\nprint(1)\n```\nDone.", "print(1)"),
    ("```\nx = 1\ny = 2\n```", "x = 1\ny = 2"),
    ("```py\ndef f():\n    return 1\n```", "def f():\n    return 1"),  # indentation kept
    ("```c++\nint main() {}\n```", "int main() {}"),
    ("```python\nfirst()\n```\ntext\n```python\nsecond()\n```", "first()"),
    ("```\n```\n```python\nreal()\n```", "real()"),  # an empty block has no code
    ("```python\n   \n```", None),
    ("````\nshow ``` inside\n````", "show ``` inside"),  # a longer fence holds a shorter one
    ("  ```js\n  let a = 1;\n  ```", "  let a = 1;"),  # an indented fence
    ("```python\nprint('cut off before the fence closed')", None),
    ("```python\nprint(1)\n``` trailing words", None),  # not a closing fence: never closed
    ("inline ```code``` is no block", None),
    ("no code at all", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", CODE)
def test_first_code(text, expected):
    assert first_code(text) == expected


def test_code_blocks_give_their_language_tags():
    text = "```python\na\n```\n```\nb\n```\n```rust\nc"
    assert code_blocks(text) == [("python", "a"), ("", "b")]
