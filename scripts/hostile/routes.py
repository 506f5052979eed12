"""The generation routes under attack and valid bodies for them."""
from __future__ import annotations

import json

RAW = "@@raw@@"  # a field set to this is replaced by a raw JSON text
ROUTES = {  # name: (path, prompt field, stop field, a boolean field)
    "inference": ("/inference/{model}", "text", "stop_sequence", "ignore_eos"),
    "predictions": ("/predictions/{model}", "text", "stop_sequence", "return_prompt"),
    "generate": ("/generate", "text", "stop", "do_sample"),
    "completions": ("/v1/completions", "prompt", "stop", "stream"),
    "chat": ("/v1/chat/completions", "content", "stop", "stream"),
    # No stop strings here: the field is unknown, and refused like any other.
    "solve-math": ("/solve/math", "problem", "stop", "stream"),
    "solve-coding": ("/solve/coding", "problem", "stop", "stream"),
}
# The routes whose token limit is max_new_tokens: a case's max_tokens is sent under that name.
MAX_NEW_TOKENS_ROUTES = ("solve-math", "solve-coding")


def body(route: str, model: str, content="hello", raw: str = "", **fields) -> bytes:
    """A valid body for the route with fields changed; a value RAW becomes the text `raw`."""
    data = {"model": model} if route in ("completions", "chat") else {}
    if route == "chat":
        data["messages"] = [{"role": "user", "content": content}]
    else:
        data[ROUTES[route][1]] = content
    fields = {"max_tokens": 4, **fields}
    if route in MAX_NEW_TOKENS_ROUTES:
        fields = {("max_new_tokens" if k == "max_tokens" else k): v for k, v in fields.items()}
    return json.dumps({**data, **fields}).replace(f'"{RAW}"', raw).encode()


def long_body(route: str, model: str, args, stream: bool) -> dict:
    """A body asking for a long generation on the route."""
    data = json.loads(body(route, model, "go on and on", max_tokens=args.max_tokens))
    if route not in ("generate", *MAX_NEW_TOKENS_ROUTES):  # these have no ignore_eos
        data |= {"ignore_eos": True}  # (the mock never ends early)
    return data | ({"stream": stream} if route in ("completions", "chat", "generate",
                                                   *MAX_NEW_TOKENS_ROUTES) else {})
