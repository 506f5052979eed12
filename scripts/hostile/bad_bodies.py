"""The tables of bad request bodies: malformed JSON, wrong fields, bad chunked encoding."""
from __future__ import annotations

import functools
import gzip

from .routes import RAW, ROUTES, body
from .stack import Target
from .wire import request_head

# OpenAI fields this server refuses, and bad values of the ones it takes.
UNSUPPORTED = {"best_of": 2, "suffix": "x", "functions": [{"name": "f"}]}
BAD_OPENAI = {
    "bad-schema": dict(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "nonsense"}}}),
    "deep-schema": dict(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": RAW}}, raw='{"items": ' * 5000 + "{}" + "}" * 5000),
    "huge-logit-bias": dict(logit_bias={"1": 500}),
    "word-logit-bias-key": dict(logit_bias={"one": 5}),
}
BAD_TOOLS = {  # chat only: the completions route ignores these fields
    "bad-tool-name": dict(tools=[{"type": "function", "function": {"name": "a b"}}]),
    "unknown-tool-choice": dict(tools=[{"type": "function", "function": {"name": "f"}}],
                                tool_choice={"type": "function", "function": {"name": "g"}}),
}


def body_cases(route: str, model: str) -> list[tuple[str, bytes, dict]]:
    """(name, body, extra headers) of the bad bodies for one route."""
    stop, flag, deep = ROUTES[route][2], ROUTES[route][3], "[" * 100_000 + "]" * 100_000
    b = functools.partial(body, route, model)
    changes = {"nan-max-tokens": dict(max_tokens=RAW, raw="NaN"),
            "infinity-temperature": dict(temperature=RAW, raw="Infinity"),
            "minus-infinity-top-p": dict(top_p=RAW, raw="-Infinity"),
            "1e400-max-tokens": dict(max_tokens=RAW, raw="1e400"),
            "5000-digit-max-tokens": dict(max_tokens=RAW, raw="9" * 5000),
            "deep-prompt": dict(content=RAW, raw=deep), "deep-stop": {stop: RAW, "raw": deep},
            "surrogate-prompt": dict(content=RAW, raw='"\\udc00"'),
            "surrogate-inside-prompt": dict(content=RAW, raw='"a \\ud800 b"'),
            "surrogate-stop": {stop: RAW, "raw": '["\\udc00"]'},
            "huge-seed": dict(seed=10**30), "nan-string-temperature": dict(temperature="NaN"),
            "infinity-string-top-p": dict(top_p="Infinity"), "yes-for-boolean": {flag: "yes"},
            "2-for-boolean": {flag: 2}, "number-prompt": dict(content=123),
            "object-prompt": dict(content={"a": 1}), "null-prompt": dict(content=None),
            "list-max-tokens": dict(max_tokens=[1]), "word-max-tokens": dict(max_tokens="many"),
            "3.5-max-tokens": dict(max_tokens=3.5), "unknown-field": dict(bogus_field=1),
            "empty-prompt": dict(content=""), "whitespace-prompt": dict(content=" \n\t "),
            "1e9-max-tokens": dict(max_tokens=10**9), "negative-max-tokens": dict(max_tokens=-1),
            "zero-max-tokens": dict(max_tokens=0), "1e6-temperature": dict(temperature=1e6),
            "negative-temperature": dict(temperature=-1), "zero-top-p": dict(top_p=0),
            "17-stops": {stop: ["x"] * 17}, "906kb-stop-list": {stop: ["s" * 256] * 3540},
            "1040000-char-prompt": dict(content="a" * 1_040_000),
            "word-top-p": dict(top_p="high"), "2.5-top-k": dict(top_k=2.5),
            "1e6-top-k": dict(top_k=10**6), "negative-seed": dict(seed=-1),
            "word-seed": dict(seed="abc"), "number-stop": {stop: 5}, "object-stop": {stop: {}},
            "numbers-in-stop-list": {stop: [1, 2]}, "empty-stop": {stop: ""},
            "257-char-stop": {stop: "s" * 257}, "true-max-tokens": dict(max_tokens=True),
            "true-temperature": dict(temperature=True), "nested-list-prompt": dict(content=[["a"]]),
            "boolean-prompt": dict(content=True)}
    if route in ("completions", "chat"):
        changes |= {f"unsupported-{name}": {name: value} for name, value in UNSUPPORTED.items()}
        changes |= BAD_OPENAI
    changes |= {"chat": {"no-messages": dict(messages=[]), "messages-object": dict(messages={}),
                      "65-char-role": dict(messages=[{"role": "r" * 65, "content": "hi"}]),
                      "empty-role": dict(messages=[{"role": "", "content": "hi"}]),
                      "image-part": dict(content=[{"type": "image_url", "image_url": {}}]),
                      "surrogate-part": dict(content=[{"type": "text", "text": RAW}],
                                             raw='"\\udc00"'),
                      "1000-choices": dict(n=1000), **BAD_TOOLS},
             "completions": {"out-of-vocabulary-id-prompt": dict(content=[1, 2, 10**30]),
                             "empty-prompt-list": dict(content=[]), "1000-choices": dict(n=1000)},
             "generate": {"text-and-prompt": dict(prompt="b"), "zero-samples": dict(num_samples=0),
                          "1000-samples": dict(num_samples=1000),
                          "negative-eos-id": dict(eos_token_ids=[-1]),
                          "17-eos-ids": dict(eos_token_ids=[1] * 17),
                          "zero-max-input-tokens": dict(max_input_tokens=0)},
             "inference": {"zero-top-k": dict(top_k=0), "object-session-id": dict(session_id={})},
             "predictions": {"zero-top-k": dict(top_k=0)}}.get(route, {})
    return [("malformed-json", b'{"text": "a", "max_tokens": ', {}), ("not-json", b"hello", {}),
            ("trailing-garbage", b() + b" x", {}), ("two-objects", b() + b(), {}),
            ("single-quotes", b"{'text': 'a'}", {}), ("trailing-comma", b'{"text": "a",}', {}),
            ("comment", b'{"text": "a" /* hi */}', {}),
            ("empty-body", b"", {}), ("array-body", b"[1, 2]", {}), ("string-body", b'"hi"', {}),
            ("null-body", b"null", {}), ("number-body", b"1e400", {}),
            ("deep-array-body", deep.encode(), {}),
            ("deep-object-body", ('{"a":' * 100_000 + "1" + "}" * 100_000).encode(), {}),
            ("invalid-utf8", b(content=RAW, raw='"\xff"').replace(b"\xc3\xbf", b"\xff"), {}),
            ("gzip-body", gzip.compress(b()), {"Content-Encoding": "gzip"}),
            ("64kb-header", b(), {"X-Filler": "a" * 65536}),
            *((name, b(**fields), {}) for name, fields in changes.items())]


def chunked_cases(target: Target, path: str, data: bytes) -> list[tuple[str, bytes, list]]:
    """(name, head, body parts) of chunked bodies with bad sizes or beyond every body limit."""
    head = request_head(target.url, "POST", path, {**target.headers, "Transfer-Encoding":
                                                   "chunked", "Content-Type": "application/json"})
    big = [b"10000\r\n" + b"a" * 0x10000 + b"\r\n"] * 144  # 9.4 MB in chunks of 64 KB
    return [("chunked-size-zz", head, [b"zz\r\n" + data + b"\r\n0\r\n\r\n"]),
            ("chunked-size-minus-1", head, [b"-1\r\n" + data + b"\r\n0\r\n\r\n"]),
            ("chunked-9mb", head, [b'b\r\n{"text": "a\r\n', *big, b"0\r\n\r\n"])]

