"""The fake server's streamed answers: a whole answer cut into the events a real server sends.

OpenAI's routes stream server-sent events (``data: {...}`` chunks, a usage chunk when
``stream_options.include_usage`` asks for it, ``data: [DONE]``), Ollama's NDJSON (one
message per line, the last with ``"done": true`` and the token counts). The text is cut
after each word's trailing spaces, so a word is a token (as the fake's usage counts
them); tool-call arguments come in pieces of 8 characters, as real servers send them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

ARGUMENT_PIECE = 8
CUT_FAULTS = ("cut", "bad-event")  # close mid-answer; send an event that is not JSON
# "no-done": the whole answer, closed cleanly without data: [DONE], as transformers serve sends it
STREAM_FAULTS = (*CUT_FAULTS, "no-done")


def pieces_of(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def events(
    path: str, whole: Mapping[str, Any], body: Mapping[str, Any], *, done: bool = True
) -> Iterator[bytes]:
    """The lines (with their newlines) that stream ``whole``, the route's usual answer
    (``done=False``: no ``data: [DONE]`` at the end of an OpenAI stream)."""
    if path.startswith("/v1/"):
        for chunk in _openai_chunks(path, whole, body):
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
        if done:
            yield b"data: [DONE]\n\n"
    else:
        for message in _ollama_messages(path, whole):
            yield json.dumps(message).encode() + b"\n"


def bad_event(path: str) -> bytes:
    return b"data: {not json\n\n" if path.startswith("/v1/") else b"{not json\n"


def _openai_chunks(
    path: str, whole: Mapping[str, Any], body: Mapping[str, Any]
) -> Iterator[dict[str, Any]]:
    head = {key: whole[key] for key in ("id", "model", "system_fingerprint") if key in whole}
    choice = whole["choices"][0]
    if path == "/v1/completions":
        head["object"] = "text_completion"
        for piece in pieces_of(choice["text"]):
            yield {**head, "choices": [{"index": 0, "text": piece, "finish_reason": None}]}
    else:
        head["object"] = "chat.completion.chunk"
        message = choice["message"]

        def chunk(delta: dict[str, Any]) -> dict[str, Any]:
            return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}

        for piece in pieces_of(message.get("content") or ""):
            yield chunk({"content": piece})
        for index, call in enumerate(message.get("tool_calls", [])):
            function = call["function"]
            start = {"index": index, "id": call["id"], "type": "function"}
            yield chunk({"tool_calls": [{**start, "function": {"name": function["name"]}}]})
            arguments = function["arguments"]
            for at in range(0, len(arguments), ARGUMENT_PIECE):
                piece = arguments[at : at + ARGUMENT_PIECE]
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if (body.get("stream_options") or {}).get("include_usage"):
        yield {**head, "choices": [], "usage": whole["usage"]}


def _ollama_messages(path: str, whole: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    head = {"model": whole.get("model")}
    if path == "/api/chat":
        message = whole["message"]
        for piece in pieces_of(message.get("content") or ""):
            yield {**head, "message": {"role": "assistant", "content": piece}, "done": False}
        if message.get("tool_calls"):
            calls = {"role": "assistant", "content": "", "tool_calls": message["tool_calls"]}
            yield {**head, "message": calls, "done": False}
        last: dict[str, Any] = {"message": {"role": "assistant", "content": ""}}
    else:
        for piece in pieces_of(whole["response"]):
            yield {**head, "response": piece, "done": False}
        last = {"response": ""}
    counts = {key: whole[key] for key in ("prompt_eval_count", "eval_count")}
    yield {**head, **last, "done": True, **counts}
