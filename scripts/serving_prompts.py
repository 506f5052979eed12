"""Deterministic prompts for the serving benchmark: short questions and documents of set sizes.

Sizes are in tokens, estimated from words (about 1.2 tokens a word for SmolLM2's tokenizer on
this English text) so that no tokenizer is needed; the servers' own counts (usage.prompt_tokens)
are reported beside the results. Every prompt of "mixed" and "long" starts with a tag naming its
run and index, so that no two prompts share a prefix: a server with prefix caching (vLLM's
default) gets no hits across requests or across rounds. "shared" is "mixed" with the same
~250-token instructions before each tag, as an application's system prompt would be: there the
instructions are all that prefix caching can reuse.
"""
from __future__ import annotations

import json

from prompt_set import DATA

TOKENS_PER_WORD = 1.2
DOC_TOKENS = (75, 430, 160, 345, 245, 120, 390, 300)  # documents of the mixed workload, in turn
LONG_TOKENS = 1250
SHARED_TOKENS = 250
WORKLOADS = {"mixed": (64, 32), "long": (48, 48), "shared": (64, 32)}  # (requests, concurrency)


def _data() -> tuple[list[str], list[str]]:
    """The questions and the words of all paragraphs of the fixed prompt set."""
    data = json.loads(DATA.read_text())
    return data["questions"], " ".join(data["paragraphs"]).split()


def document(words: list[str], tokens: int, offset: int) -> str:
    """About `tokens` tokens of text, taken from the word pool from `offset` on, wrapping."""
    count = max(1, round(tokens / TOKENS_PER_WORD))
    return " ".join(words[(offset + k) % len(words)] for k in range(count))


def workload_prompts(name: str, tag: str = "") -> list[str]:
    """The prompts of a workload, each with a unique tag (after the shared instructions)."""
    questions, words = _data()
    count = WORKLOADS[name][0]
    long_at = {5, 17, 29, 41} if name == "long" else set()  # four long documents mixed in
    shared = "Instructions: " + document(words, SHARED_TOKENS, 7) + "\n\n" \
        if name == "shared" else ""
    prompts = []
    for i in range(count):
        head = f"{shared}[{tag}{i}] "
        if i in long_at:
            body = document(words, LONG_TOKENS, i * 53)
            prompts.append(f"{head}{body}\n\nWrite a short summary of the text above.")
        elif i % 2 == 1:
            body = document(words, DOC_TOKENS[(i // 2) % len(DOC_TOKENS)], i * 53)
            prompts.append(f"{head}{body}\n\nWhat is the main idea of this text?")
        else:
            prompts.append(head + questions[(i // 2) % len(questions)])
    return prompts
