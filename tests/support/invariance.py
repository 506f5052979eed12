"""Twenty requests asked of a server in different company: alone, beside 31 random others in a
shuffled order, in reversed arrival order, again once the prefix cache holds them. Each answer
is its text and log probabilities as the server sent them, compared byte for byte."""
from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import requests

MODEL = "SmolLM2-135M-Instruct"
PREAMBLE = ("You are a careful assistant. Answer in one short sentence, plainly, without "
            "lists or headings, and say when you do not know. ")
QUESTIONS = [
    "The capital of France is", "def fibonacci(n):", "Water boils at", "List three colors:",
    "Q: What is 12 times 12?\nA:", "Once upon a time, in a small village by the sea,",
    "The quick brown fox jumps over the lazy dog. " * 8 + "Summarize the text above:",
    "Hi", "import numpy as np\n\ndef normalize(x):", "The three states of matter are",
]
NEW_TOKENS = 24


def prompts() -> list[str]:
    """Twenty prompts of 1 to about 120 tokens; the second ten share a long start (so the prefix
    cache has something to give)."""
    return QUESTIONS + [PREAMBLE + q for q in QUESTIONS]


def request_body(index: int, prompt: str) -> dict:
    """Greedy for even indexes, sampled with a seed for odd ones; top-3 log probabilities."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": NEW_TOKENS, "logprobs": 3,
            "ignore_eos": True, "temperature": 0.0}
    if index % 2:
        body.update(temperature=0.9, top_p=0.95, seed=1000 + index)
    return body


def ask(url: str, body: dict) -> str:
    """The answer's text and log probabilities, as the JSON the server sent for them."""
    answer = requests.post(f"{url}/v1/completions", json=body, timeout=600)
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    return json.dumps({"text": choice["text"], "logprobs": choice["logprobs"]}, sort_keys=True)


def others(seed: int, count: int = 31) -> list[dict]:
    """Random requests to run beside the twenty: other prompts, lengths and sampling."""
    rng = random.Random(seed)
    words = "alpha beta gamma delta river stone cloud seven apple green tower music".split()
    bodies = []
    for _ in range(count):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(1, 150)))
        body = {"model": MODEL, "prompt": prompt, "max_tokens": rng.randint(1, 40),
                "ignore_eos": True, "temperature": rng.choice([0.0, 0.7, 1.2])}
        if rng.random() < 0.5:
            body["seed"] = rng.randint(0, 10**6)
        bodies.append(body)
    return bodies


def alone(url: str) -> list[str]:
    """Each of the twenty by itself, one after another."""
    return [ask(url, request_body(i, p)) for i, p in enumerate(prompts())]


def in_company(url: str, seed: int, reverse: bool = False) -> list[str]:
    """The twenty beside 31 random others, all at once in a shuffled order (or the twenty in
    reversed order, each after a few of the others)."""
    mine = [("mine", i, request_body(i, p)) for i, p in enumerate(prompts())]
    extra = [("other", i, body) for i, body in enumerate(others(seed))]
    if reverse:
        order = []
        for item in reversed(mine):
            order += [extra.pop()] if extra else []
            order.append(item)
        order += extra
    else:
        order = mine + extra
        random.Random(seed).shuffle(order)
    answers = [None] * len(mine)
    with ThreadPoolExecutor(len(order)) as pool:
        futures = [(kind, i, pool.submit(ask, url, body)) for kind, i, body in order]
        for kind, i, future in futures:
            result = future.result()
            if kind == "mine":
                answers[i] = result
    return answers


def differences(expected: list[str], got: list[str]) -> list[str]:
    """The prompts whose answers differ, each with both answers' starts."""
    return [f"prompt {i}: {a[:120]} != {b[:120]}"
            for i, (a, b) in enumerate(zip(expected, got)) if a != b]
