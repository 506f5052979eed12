"""The generic tool format's answer, read as it streams: content deltas, or tool call deltas.

See tools.py for the format. ToolStream turns the answer's text, fed piece by piece, into the
deltas of OpenAI's chat stream; parse_answer reads a whole answer the same way.
"""
from __future__ import annotations

import json
import secrets

_SCALAR_CHARS = frozenset("0123456789+-.eEtrufalsn")  # what a number, true, false or null is made of


def new_call_id() -> str:
    """An id for a tool call, in OpenAI's style."""
    return "call_" + secrets.token_hex(12)


def _paired(text: str) -> str:
    # Escaped surrogate pairs (\ud83d\ude00) decode as two halves; a half alone is not UTF-8.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class ToolStream:
    """Turns a generic-format answer, fed piece by piece, into OpenAI chat stream deltas.

    A response's string streams as content; the first tool call as a delta with its id and
    name, then fragments of its arguments' JSON text as generated. Each later call goes out
    whole once it is complete, unless it repeats an earlier call exactly (the same name and
    arguments): a small model, free to add another call, tends to write the same one again until
    max_tokens, and the function would run once per copy. Text that is not such an answer is
    passed on as content, unless deltas were made already: then the rest is dropped.
    """

    def __init__(self):
        self.text, self.pos, self.raw_from, self.end = "", 0, 0, None
        self.stack: list[list] = []  # per open container: its bracket and current key or index
        self.expect = "value"  # what may come next outside strings
        self.string = self.sink = self.escape = None  # inside a string: what it is, where to
        self.chars: list[str] = []  # the characters of a kept string, or content not yet sent
        self.calls: list[dict] = []
        self.sent_calls = 0  # calls whose head went out
        self.out: list[dict] = []
        self.scalar = self.raw = self.spoke = self.done = False

    @property
    def called(self) -> bool:
        """True when the answer holds tool calls (finish_reason "tool_calls")."""
        return any(call["name"] is not None for call in self.calls)

    def feed(self, piece: str) -> list[dict]:
        """The deltas the next piece of the answer completes."""
        self.text += piece
        while self.pos < len(self.text) and not (self.raw or self.done):
            self._char(self.text[self.pos])
            self.pos += 1
        if self.raw:
            self._say(self.text[self.raw_from:])
            self.raw_from = len(self.text)
        elif self.sink == "content":
            self._send_content(final=False)
        if self.calls:
            self._send_arguments(self.calls[-1])
        out, self.out = self.out, []
        return out

    def finish(self) -> list[dict]:
        """The last deltas, once the answer is over (it may have been cut short)."""
        self.raw = self.raw or (not self.spoke and bool(self.text.strip()))
        return self.feed("")

    def _say(self, text: str) -> None:
        if text:
            self.out.append({"content": text})
            self.spoke = True

    def _send_content(self, final: bool) -> None:
        text = "".join(self.chars)
        keep = not final and text[-1:] and "\ud800" <= text[-1] < "\udc00"  # half a pair
        self.chars = [text[-1]] if keep else []
        self._say(_paired(text[:-1] if keep else text))

    def _send_arguments(self, call: dict) -> None:
        if call["out"] is None or call["start"] is None:
            return
        upto = self.pos if call["end"] is None else call["end"]
        if upto > call["sent"]:
            self._call_delta(call, {"arguments": self.text[call["sent"]:upto]})
            call["sent"] = upto

    def _call_delta(self, call: dict, function: dict, head: bool = False) -> None:
        if head:
            call["out"], self.sent_calls = self.sent_calls, self.sent_calls + 1  # repeats skip
        part = {"index": call["out"], **({"id": call["id"], "type": "function"} if head else {})}
        self.out.append({"tool_calls": [{**part, "function": function}]})

    def _release(self, call: dict) -> None:
        """A later call, now complete: sent whole unless it repeats an earlier one."""
        if any(self._key(sent)[:2] == self._key(call)[:2] for sent in self.calls[:call["index"]]
               if sent["out"] is not None):
            return
        self._call_delta(call, {"name": call["name"], "arguments": ""}, head=True)
        self._call_delta(call, {"arguments": self._key(call)[2]})
        call["sent"] = call["end"]

    def _key(self, call: dict) -> tuple:
        """(name, arguments as a value, arguments' text) of a complete call."""
        arguments = "{}" if call["start"] is None else self.text[call["start"]:call["end"]]
        return call["name"], _parsed(arguments), arguments

    def _stop(self) -> None:
        # Parsing ends: at the root's end, or at text out of the format. Text nothing was made
        # of (a bad start, JSON of neither form) is passed on as content.
        self.done, self.raw = self.spoke, not self.spoke

    def _char(self, c: str) -> None:
        if self.string:
            return self._string_char(c)
        if self.scalar:
            if c in _SCALAR_CHARS:
                return
            self.scalar = False
            self._value_end(self.pos)
        if c in " \t\n\r" or self.expect == "end":
            return
        expect, kind = self.expect, self.stack[-1][0] if self.stack else None
        closer = {"{": "}", "[": "]"}.get(kind)
        if expect in ("key or }", "value or ]", ", or close") and c == closer:
            self.stack.pop()
            self._value_end(self.pos + 1)
        elif expect.startswith("value"):
            self._value_start(c)
        elif expect.startswith("key") and c == '"':
            self.string, self.sink, self.chars = "key", "keep", []
        elif (expect, c) in (("colon", ":"), (", or close", ",")):
            self.expect = "key" if expect == ", or close" and kind == "{" else "value"
        else:
            self._stop()

    def _value_start(self, c: str) -> None:
        if self.stack and self.stack[-1][0] == "[":
            self.stack[-1][1] += 1
        path = tuple(frame[1] for frame in self.stack)
        role = self._role(path)
        if role == "call":
            self.calls.append({"index": len(self.calls), "id": new_call_id(), "name": None,
                               "start": None, "end": None, "sent": 0, "out": None})
        elif role == "call.arguments" and self.calls[-1]["start"] is None:
            self.calls[-1].update(start=self.pos, sent=self.pos)
        elif role == "call.arguments" or role == "call.name" and self.calls[-1]["name"]:
            return self._stop()  # given twice
        wanted = {"root": "{", "calls": "[", "call": "{", "response": '"', "call.name": '"'}
        if c not in wanted.get(role, '{["' + "".join(_SCALAR_CHARS)):
            return self._stop()
        if c in "{[":
            self.stack.append([c, None if c == "{" else -1])
            self.expect = "key or }" if c == "{" else "value or ]"
        elif c == '"':
            self.string, self.chars = "value", []
            self.sink = {"response": "content", "call.name": "keep"}.get(role)
            self.spoke = self.spoke or role == "response"  # even an empty answer is one
        else:
            self.scalar = True

    @staticmethod
    def _role(path: tuple) -> str | None:
        """What the value at path is in the answer's format (None: nothing to us)."""
        if path[:1] == ("tool_calls",) and len(path) in (1, 2, 3):
            return ("calls", "call", f"call.{path[-1]}")[len(path) - 1]
        return {(): "root", ("response",): "response"}.get(path)

    def _value_end(self, end: int) -> None:
        path = tuple(frame[1] for frame in self.stack)
        self.expect, role = (", or close" if self.stack else "end"), self._role(path)
        call = self.calls[-1] if self.calls else None
        if role == "call.name":
            call["name"], self.spoke = _paired("".join(self.chars)), True
            if call["index"] == 0:  # the first call streams as it comes
                self._call_delta(call, {"name": call["name"], "arguments": ""}, head=True)
                self._send_arguments(call)
        elif role == "call.arguments":
            call["end"] = end
            self._send_arguments(call)
        elif role == "call" and call["name"] is None:
            self._stop()
        elif role == "call" and call["index"] > 0:
            self._release(call)
        elif role == "call" and call["start"] is None:  # no arguments: the function takes none
            self._call_delta(call, {"arguments": "{}"})
        elif role == "root":
            self.end = end
            self._stop()

    def _string_char(self, c: str) -> None:
        if self.escape is not None:
            self.escape += c
            if self.escape[0] == "u" and len(self.escape) < 5:
                return
            try:
                c = json.loads(f'"\\{self.escape}"')
            except ValueError:
                return self._stop()
            self.escape = None
        elif c == "\\":
            self.escape = ""
            return
        elif c == '"':
            self.string, kind = None, self.string
            if kind == "key":
                self.stack[-1][1], self.expect = _paired("".join(self.chars)), "colon"
                return
            if self.sink == "content":
                self._send_content(final=True)
            return self._value_end(self.pos + 1)
        if self.sink:
            self.chars.append(c)


def _parsed(arguments: str):
    """Arguments as a value to compare (key order aside), or their text if they do not parse."""
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def parse_answer(text: str) -> tuple[str | None, list[dict]]:
    """(content, tool calls) of a whole answer; the text as content when it is not one."""
    stream = ToolStream()
    deltas = stream.feed(text) + stream.finish()
    content = "".join(d["content"] for d in deltas if "content" in d)
    calls: list[dict] = []
    for part in (p for d in deltas for p in d.get("tool_calls", ())):
        if "id" in part:
            calls.append({"id": part["id"], "type": "function",
                          "function": {"name": part["function"]["name"], "arguments": ""}})
        calls[part["index"]]["function"]["arguments"] += part["function"]["arguments"]
    if calls and not (stream.end and _is_json(text[:stream.end])):
        return text, []  # cut or broken: the arguments would not be JSON
    return (content or None) if calls else content, calls


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False
