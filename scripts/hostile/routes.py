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
}


def body(route: str, model: str, content="hello", raw: str = "", **fields) -> bytes:
    """A valid body for the route with fields changed; a value RAW becomes the text `raw`."""
    data = {"model": model} if route in ("completions", "chat") else {}
    if route == "chat":
        data["messages"] = [{"role": "user", "content": content}]
    else:
        data[ROUTES[route][1]] = content
    return json.dumps({**data, "max_tokens": 4, **fields}).replace(f'"{RAW}"', raw).encode()


def long_body(route: str, model: str, args, stream: bool) -> dict:
    """A body asking for a long generation on the route."""
    data = json.loads(body(route, model, "go on and on", max_tokens=args.max_tokens))
    data |= {"ignore_eos": True} if route != "generate" else {}  # the mock never ends early
    return data | ({"stream": stream} if route in ("completions", "chat", "generate") else {})
