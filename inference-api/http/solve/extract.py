"""The answer of a math solution and the code of a coding solution, read from the model's text.

Pure functions of the text. Each returns None when the text gives no answer or no code in the
shape asked for: a missing answer is reported as missing, never guessed from the prose.
"""
from __future__ import annotations

import re

_BOX_OPENING = re.compile(r"\\boxed[ \t]*\{")
# A line that gives the answer: "Answer: 12", "Final answer: 12", "**Answer:** 12", "## Answer: 12".
_ANSWER_LINE = re.compile(r"^[ \t*_#>-]*(?:final[ \t]+)?answer[ \t]*[*_]*[ \t]*:(.*)$",
                          re.IGNORECASE | re.MULTILINE)
_EMPHASIS = "*_ \t"
# An opening fence: three or more backticks, an optional language tag, nothing else after it.
_OPENING_FENCE = re.compile(r"^[ \t]*(`{3,})[ \t]*([^\s`]*)[ \t]*$")


def boxed_answers(text: str) -> list[str]:
    r"""The contents of every complete \boxed{...} in the text, in the order they open, braces
    nested inside kept (\boxed{\frac{1}{2}} gives \frac{1}{2}); an unclosed one is not an
    answer. An escaped brace (\{ or \}, as LaTeX writes a literal one) does not count.

    One pass over the text with a stack of open braces: linear however many boxes are left
    open (a model that loops may write thousands).
    """
    box_braces = {match.end() - 1 for match in _BOX_OPENING.finditer(text)}
    found, open_braces, index = [], [], 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "{":
            open_braces.append(index)
        elif char == "}" and open_braces:
            opening = open_braces.pop()
            if opening in box_braces:
                found.append((opening, text[opening + 1:index]))
        index += 1
    return [content for _, content in sorted(found)]


def answer_lines(text: str) -> list[str]:
    """What follows "answer:" on each line that starts with it (case-insensitive; "Final
    answer:" and Markdown emphasis or headings around it are allowed), in order."""
    found = []
    for match in _ANSWER_LINE.finditer(text):
        value = match[1].strip(_EMPHASIS).strip()
        if value:
            found.append(value)
    return found


def math_answer(text: str) -> str | None:
    r"""The final answer of a math solution: the last non-empty \boxed{...}, else the last
    "answer:" line, else None."""
    boxed = [answer.strip() for answer in boxed_answers(text)]
    boxed = [answer for answer in boxed if answer]
    if boxed:
        return boxed[-1]
    lines = answer_lines(text)
    return lines[-1] if lines else None


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, code) of every complete fenced block in the text, in order.

    A block opens with a line of three or more backticks and an optional language tag, and
    closes with a line of at least as many backticks and nothing else; a block never closed
    (the answer was cut, say) is not one.
    """
    lines, blocks, index = text.split("\n"), [], 0
    while index < len(lines):
        opening = _OPENING_FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        closing = re.compile(rf"^[ \t]*`{{{len(opening[1])},}}[ \t]*$")
        end = next((i for i in range(index + 1, len(lines)) if closing.match(lines[i])), None)
        if end is None:
            break
        blocks.append((opening[2], "\n".join(lines[index + 1:end])))
        index = end + 1
    return blocks


def first_code(text: str) -> str | None:
    """The code of the first fenced block that holds any, as written between its fences; None
    when the text has no complete block with code in it."""
    for _, code in code_blocks(text):
        if code.strip():
            return code
    return None
