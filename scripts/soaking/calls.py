"""What the soak's clients send: a fixed pool of answerable requests (each answered once on the
idle server first, for reference) and a mix drawn from a seed that adds streaming, slow readers,
clients that leave, bad bodies and expired tokens."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace

MODEL = "SmolLM2-135M-Instruct"
QUESTIONS = ["What is the capital of France?", "Name three primary colours.",
             "Why is the sky blue?", "Write a haiku about rain.",
             "How many legs does a spider have?", "What is 12 times 12?",
             "Give one tip for writing clean code.", "What do bees make?"]
OPENINGS = ["Once upon a time", "The three laws of motion are", "In a small village by the sea",
            "The recipe for bread starts with", "def fibonacci(n):", "The weather today is"]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
CITY_SCHEMA = {"type": "json_schema", "json_schema": {"name": "city", "schema": {
    "type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"]}}}
OVERSIZE_BYTES = 3 << 19  # 1.5 MiB: under the edge's and the proxy's limits, over the API's


@dataclass(frozen=True)
class Call:
    """One request: where, what, and how the client behaves; key names its reference answer."""

    kind: str
    path: str
    body: object  # a dict sent as JSON, or raw bytes
    stream: bool = False
    behaviour: str = "normal"  # normal, slow (a slow reader), leave_mid, leave_early
    token: str = "good"  # good or expired
    key: str | None = None  # answers with this key must all be equal
    expect: str = "answer"  # answer, or client_error (a 4xx is the right answer)


def keyed(kind: str, path: str, body: dict) -> Call:
    return Call(kind, path, body, key=f"{path} {json.dumps(body, sort_keys=True)}")


def document(index: int, records: int = 60) -> str:
    """A long made-up ledger (about 1,000 tokens), the same for the same index."""
    rng = random.Random(index)
    towns = ["Arden", "Belmont", "Corrin", "Dunmore", "Elsby", "Fairholt", "Greywick"]
    goods = ["wool", "salt", "timber", "barley", "copper", "cider", "linen"]
    lines = [f"Entry {i}: {rng.choice(towns)} sent {rng.randint(2, 90)} carts of "
             f"{rng.choice(goods)} in {rng.randint(1700, 1850)}." for i in range(records)]
    return "Trade ledger.\n" + "\n".join(lines) + "\n"


def greedy_pool(max_tokens: int) -> list[Call]:
    """Every answerable request of the soak, as sent whole; greedy or seeded, so each has one
    right answer."""
    chat = "/v1/chat/completions"
    pool = []
    for prompt in OPENINGS:
        pool.append(keyed("completion", "/v1/completions", {
            "model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}))
    for question in QUESTIONS[:6]:
        pool.append(keyed("chat", chat, {"model": MODEL, "max_tokens": max_tokens,
                                         "temperature": 0, "messages": [
                                             {"role": "user", "content": question}]}))
    for city in ("Paris", "Tokyo", "Lima"):
        pool.append(keyed("chat_tools", chat, {
            "model": MODEL, "max_tokens": max_tokens, "temperature": 0, "tools": TOOLS,
            "messages": [{"role": "user", "content": f"What is the weather in {city}?"}]}))
        pool.append(keyed("structured", chat, {
            "model": MODEL, "max_tokens": max_tokens, "temperature": 0,
            "response_format": CITY_SCHEMA,
            "messages": [{"role": "user", "content": f"Where is {city}? Answer in JSON."}]}))
    for seed in (1, 2, 3):
        pool.append(keyed("seeded_n2", "/v1/completions", {
            "model": MODEL, "prompt": OPENINGS[seed], "max_tokens": max_tokens,
            "temperature": 0.8, "seed": seed, "n": 2}))
    for prompt in OPENINGS[:4]:
        pool.append(keyed("generate", "/generate", {
            "text": prompt, "max_tokens": max_tokens, "do_sample": False}))
        pool.append(keyed("inference", f"/inference/{MODEL}", {
            "text": prompt, "max_tokens": max_tokens, "temperature": 0}))
    for doc in (1, 2):
        for question in ("Which town sent the most carts?", "Summarise the ledger."):
            pool.append(keyed("long_document", "/v1/completions", {
                "model": MODEL, "prompt": document(doc) + question + "\nAnswer:",
                "max_tokens": max(4, max_tokens // 2), "temperature": 0}))
    return pool


STREAMABLE = {"completion", "chat", "seeded_n2", "generate", "long_document"}
# Weights of the mix; the answerable kinds share ANSWERS by their number in the pool.
ANSWERS, SLOW, LEAVE_MID, LEAVE_EARLY, BAD_BODY, OVERSIZE, EXPIRED = 70, 4, 8, 4, 8, 2, 4


def bad_bodies() -> list[Call]:
    """Bodies a server must refuse with a 4xx, whatever runs beside them."""
    v1 = "/v1/completions"
    return [Call("bad_body", v1, b'{"model": "x", "prompt": ', expect="client_error"),
            Call("bad_body", v1, {"model": MODEL, "prompt": "hi", "max_tokens": "many"},
                 expect="client_error"),
            Call("bad_body", v1, {"model": "gpt-17", "prompt": "hi"}, expect="client_error"),
            Call("bad_body", "/v1/chat/completions", {"model": MODEL, "messages": []},
                 expect="client_error"),
            Call("bad_body", "/generate", {"text": "hi", "temperature": -1},
                 expect="client_error"),
            Call("bad_body", "/generate", b"", expect="client_error")]


def draw(rng: random.Random, pool: list[Call], max_tokens: int) -> Call:
    """The next request of a client."""
    roll = rng.uniform(0, ANSWERS + SLOW + LEAVE_MID + LEAVE_EARLY + BAD_BODY + OVERSIZE + EXPIRED)
    if roll < ANSWERS:
        call = rng.choice(pool)
        if call.kind in STREAMABLE and rng.random() < 0.5 or call.kind == "inference":
            call = replace(call, stream=True)
        return call
    roll -= ANSWERS
    streamable = [c for c in pool if c.kind in ("completion", "chat")]
    if roll < SLOW:
        return replace(rng.choice(streamable), stream=True, behaviour="slow")
    roll -= SLOW
    if roll < LEAVE_MID:
        call = rng.choice(streamable)
        body = {**call.body, "max_tokens": max_tokens * 4}
        return Call("leave_mid", call.path, body, stream=True, behaviour="leave_mid")
    roll -= LEAVE_MID
    if roll < LEAVE_EARLY:
        call = rng.choice(pool)
        return Call("leave_early", call.path, call.body, behaviour="leave_early")
    roll -= LEAVE_EARLY
    if roll < BAD_BODY:
        return rng.choice(bad_bodies())
    roll -= BAD_BODY
    if roll < OVERSIZE:
        body = json.dumps({"model": MODEL, "prompt": "x" * OVERSIZE_BYTES}).encode()
        return Call("oversize", "/v1/completions", body, expect="client_error")
    return replace(rng.choice(pool), kind="expired_token", token="expired", key=None,
                   expect="client_error")
