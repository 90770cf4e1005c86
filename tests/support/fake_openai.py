"""A fake OpenAI-compatible (and Ollama) server on 127.0.0.1, for tests and benches.

A real HTTP/1.1 keep-alive server, so the engine's connection pool, timeouts and
retries are exercised for real. Answers are deterministic; faults are scripted per
prompt substring; every request is counted per prompt so a test can prove that each
example was asked exactly once.

In-process::

    with FakeOpenAI(latency_s=0.05, capacity=8) as server:
        server.script(match="question 7", faults=["500", "429:1", "drop", "timeout"])
        ... server.base_url, server.counts, server.max_concurrent

As a subprocess (prints the port on its first stdout line, serves until killed)::

    python -m tests.support.fake_openai --port 0 --latency 0.2 --capacity 64

The subprocess is scripted with ``POST /_control`` ({"match", "faults"} or
{"answers": {...}} or {"reset": true}) and read with ``GET /_stats``.

An answer may depend on the request's ``seed`` (sampled generation asked several
times): ``{"by_seed": {"0": "A", "1": "B"}, "default": "C"}`` answers "A" to seed 0,
"B" to seed 1 and "C" (else the usual answer) to any other seed or none.

Faults, each consumed by one request: ``"500"`` (any status), ``"429:1"`` (a status
with Retry-After seconds), ``"drop"`` (close the connection without an answer),
``"timeout"`` (never answer, until the server stops), ``"malformed"`` (200 with a
body that is not JSON), ``"empty"`` (200 with no choices), ``"null"`` (200 with a
message whose ``content`` is null, and no tool calls), ``"401-key"`` (401 quoting the
credential received, as OpenAI's "Incorrect API key provided: sk-…" does).

Streaming (``"stream": true`` in the body, tests/support/fake_streams.py): the answer
comes as server-sent events on the OpenAI routes and as NDJSON on Ollama's, one word a
chunk, ``first_token_s`` (``--first-token-s``) after the usual latency and ``token_s``
(``--token-s``) between chunks. Stream faults: ``"cut"`` (the connection closes after
the first chunk), ``"bad-event"`` (the second event is not JSON, then the cut) and
``"no-done"`` (the whole answer without ``data: [DONE]``, as transformers serve sends it).

A careless server, for tests of secret scrubbing: with ``echo_key`` (``--echo-key``)
every answer ends with the credentials it received (``Authorization``, ``X-Api-Key``)
and each request's credentials are printed on stdout (the managed server's log).
Faults can be scripted from the command line too: ``--script MATCH FAULT``.

Connections are counted too (``connections`` accepted, ``max_open`` at once), for tests
of a client's connection pool; ``close_connections()`` closes the open ones as a server's
keep-alive timeout would. With ``ssl_context`` the server speaks HTTPS.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import ssl
import struct
import sys
import threading
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support import fake_streams

_LINGER_OFF = struct.pack("ii", 1, 0)  # close() then sends an RST, not a FIN

Answer = str | Mapping[str, Any]


@dataclass(frozen=True)
class Received:
    """One request as the server saw it, for tests of a target's request shape."""

    path: str
    headers: Mapping[str, str]
    body: Any


class FakeOpenAI:
    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        first_token_s: float = 0.0,
        token_s: float = 0.0,
        capacity: int = 64,
        answers: Mapping[str, Answer] | None = None,
        port: int = 0,
        models: set[str] | None = None,
        api_key: str | None = None,
        keep: int = 1000,
        ssl_context: ssl.SSLContext | None = None,
        system_fingerprint: str | None = None,
        echo_key: bool = False,
    ) -> None:
        self.latency_s = latency_s
        self.first_token_s = first_token_s  # a streamed answer: before its first chunk
        self.token_s = token_s  # and between chunks
        self.echo_key = echo_key
        self.system_fingerprint = system_fingerprint  # sent with OpenAI answers when set
        self.answers: dict[str, Answer] = dict(answers or {})
        self.models = models
        self.api_key = api_key
        self.counts: Counter[str] = Counter()
        self.received: deque[Received] = deque(maxlen=keep)
        self.max_concurrent = 0
        self.total = 0
        self.connections = 0
        self.max_open = 0
        self._open: set[socket.socket] = set()
        self._ssl = ssl_context
        self._active = 0
        self._lock = threading.Lock()
        self._faults: list[tuple[str, deque[str]]] = []
        self._capacity = threading.BoundedSemaphore(capacity)
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", port), self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``…/v1``)."""
        return f"{self.root_url}/v1"

    @property
    def root_url(self) -> str:
        """The server's root, for Ollama-style targets (``/api/chat``)."""
        scheme = "https" if self._ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def script(self, match: str, faults: list[str]) -> None:
        """The next requests whose prompt contains ``match`` get these faults, in order."""
        with self._lock:
            self._faults.append((match, deque(faults)))

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.received.clear()
            self._faults.clear()
            self.max_concurrent = 0
            self.total = 0
            self.connections = 0
            self.max_open = len(self._open)

    def close_connections(self) -> None:
        """Close every open connection, idle or not, as a keep-alive timeout would."""
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # under TLS too

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": dict(self.counts),
                "total": self.total,
                "max_concurrent": self.max_concurrent,
                "connections": self.connections,
                "max_open": self.max_open,
            }

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.02)  # a quick stop() keeps tests fast

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ handler's side

    def connected(self, sock: socket.socket) -> socket.socket | None:
        """Count a new connection (after its TLS handshake); None when the handshake failed."""
        if self._ssl is not None:
            try:
                sock = self._ssl.wrap_socket(sock, server_side=True)
            except OSError:  # ssl.SSLError too: the client refused our certificate
                return None
        with self._lock:
            self.connections += 1
            self._open.add(sock)
            self.max_open = max(self.max_open, len(self._open))
        return sock

    def disconnected(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        if isinstance(sock, ssl.SSLSocket):  # the server closes only the socket it accepted
            sock.close()

    def begin(self, prompt: str, path: str, headers: Mapping[str, str], body: Any) -> str | None:
        """Count the request and pick its fault, if one is scripted."""
        with self._lock:
            self.counts[prompt] += 1
            self.total += 1
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
            self.received.append(Received(path, dict(headers), body))
            for match, faults in self._faults:
                if faults and match in prompt:
                    return faults.popleft()
        return None

    def end(self) -> None:
        with self._lock:
            self._active -= 1

    def work(self) -> None:
        """Spend the model's time; requests beyond the capacity wait their turn."""
        with self._capacity:
            if self.latency_s > 0:
                self._stopping.wait(self.latency_s)

    def pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def hang(self) -> None:
        self._stopping.wait(600)

    def answer(self, prompt: str, seed: Any = None) -> tuple[str, list[dict[str, Any]]]:
        found = self.answers.get(prompt)
        if isinstance(found, Mapping) and "by_seed" in found:
            found = found["by_seed"].get(str(seed), found.get("default"))
        if found is None:
            lines = prompt.strip().splitlines() or [""]
            return f"ANSWER: {lines[-1]}", []
        if isinstance(found, str):
            return found, []
        calls = [
            {"name": c["name"], "arguments": c.get("arguments", {})}
            for c in found.get("tool_calls", [])
        ]
        return str(found.get("text", "")), calls


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of new connections must not wait on the backlog

    def __init__(self, address: tuple[str, int], fake: FakeOpenAI) -> None:
        self.fake = fake
        super().__init__(address, _handler_for(fake))

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection in its own thread (the TLS handshake too)."""
        sock = self.fake.connected(request)
        if sock is None:
            return
        try:
            super().finish_request(sock, client_address)
        finally:
            self.fake.disconnected(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a run stopped, a bench's clients closed) is no error
        worth a traceback on stderr; anything else still gets one."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler_for(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        fake = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
    fake: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/_stats":
            self._send(200, self.fake.stats())
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._send(400, {"error": {"message": "the body is not JSON"}})
            return
        if self.path == "/_control":
            self._control(body)
            return
        route = _ROUTES.get(self.path)
        if route is None:
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        if self.fake.api_key and self.headers.get("Authorization") != f"Bearer {self.fake.api_key}":
            self._send(401, {"error": {"message": "invalid api key"}})
            return
        if self.fake.echo_key:
            print(f"request with {self._credentials()}", flush=True)
        model = body.get("model") if isinstance(body, dict) else None
        if self.fake.models is not None and model not in self.fake.models:
            self._send(404, {"error": {"message": f"model '{model}' not found"}})
            return
        prompt = _prompt_of(body, self.path)
        fault = self.fake.begin(prompt, self.path, dict(self.headers.items()), body)
        try:
            if fault is None or not self._fault(fault):
                self.fake.work()
                answer = self._echoed(route(self.fake, body, prompt))
                if isinstance(body, dict) and body.get("stream") is True:
                    self._stream(answer, body, fault)
                else:
                    self._send(200, answer)
        finally:
            self.fake.end()

    def _stream(self, answer: dict[str, Any], body: dict[str, Any], fault: str | None) -> None:
        """Send ``answer`` as its events, chunked, paced by ``first_token_s`` and ``token_s``."""
        self.send_response(200)
        kind = "text/event-stream" if self.path.startswith("/v1/") else "application/x-ndjson"
        self.send_header("Content-Type", kind)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.fake.pause(self.fake.first_token_s)
        lines = fake_streams.events(self.path, answer, body, done=fault != "no-done")
        for number, event in enumerate(lines):
            if number > 0:
                self.fake.pause(self.fake.token_s)
            if number == 1 and fault == "bad-event":
                event = fake_streams.bad_event(self.path)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
            if number == 1 and fault in fake_streams.CUT_FAULTS:
                self.close_connection = True  # no terminating chunk: cut mid-answer
                return
        self.wfile.write(b"0\r\n\r\n")

    def _fault(self, fault: str) -> bool:
        """Act out a fault; False when it was not one (the request is answered normally)."""
        if fault in fake_streams.STREAM_FAULTS:
            return False  # acted out by _stream
        if fault in ("drop", "timeout"):
            if fault == "timeout":
                self.fake.hang()
            self.close_connection = True
            return True
        if fault == "reset":  # torn down with an RST, as by a worker that crashed mid-answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_OFF)
            self.connection.close()
            self.close_connection = True
            return True
        if fault == "401-key":
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            message = f"Incorrect API key provided: {token}. You can find your API key at …"
            self._send(401, {"error": {"message": message, "code": "invalid_api_key"}})
            return True
        if fault == "malformed":
            self._send_raw(200, b"this is not {json", "application/json")
            return True
        if fault == "empty":
            self._send(200, {"id": "x", "object": "chat.completion", "choices": []})
            return True
        if fault == "null":
            message = {"role": "assistant", "content": None}
            self._send(
                200, {"id": "x", "object": "chat.completion", "choices": [{"message": message}]}
            )
            return True
        status, _, retry_after = fault.partition(":")
        if status.isdigit():
            headers = {"Retry-After": retry_after} if retry_after else {}
            self._send(int(status), {"error": {"message": f"injected {status}"}}, headers)
            return True
        return False

    def _credentials(self) -> str:
        names = ("Authorization", "X-Api-Key")
        return ", ".join(f"{n}: {self.headers[n]}" for n in names if self.headers.get(n))

    def _control(self, body: Any) -> None:
        if not isinstance(body, dict):
            self._send(400, {"error": {"message": "expected a JSON object"}})
            return
        if body.get("reset"):
            self.fake.reset()
        if "answers" in body:
            self.fake.answers.update(body["answers"])
        if "match" in body:
            self.fake.script(str(body["match"]), [str(f) for f in body.get("faults", [])])
        self._send(200, {"ok": True})

    def _echoed(self, data: dict[str, Any]) -> dict[str, Any]:
        """The answer, with the credentials received appended to its text (``echo_key``)."""
        if not self.fake.echo_key:
            return data
        suffix = f" (sent {self._credentials()})"
        for choice in data.get("choices", []):
            if isinstance(choice.get("message", {}).get("content"), str):
                choice["message"]["content"] += suffix
            elif isinstance(choice.get("text"), str):
                choice["text"] += suffix
        for key in ("message", "response"):  # Ollama's answers
            if isinstance(data.get(key), dict) and isinstance(data[key].get("content"), str):
                data[key]["content"] += suffix
            elif isinstance(data.get(key), str):
                data[key] += suffix
        return data

    def _send(self, status: int, data: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(data).encode(), "application/json", headers)

    def _send_raw(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


def _prompt_of(body: Any, path: str) -> str:
    if not isinstance(body, dict):
        return ""
    if "messages" in body:
        users = [m.get("content", "") for m in body["messages"] if m.get("role") == "user"]
        return str(users[-1]) if users else ""
    return str(body.get("prompt", ""))


def _usage(prompt: str, text: str) -> dict[str, int]:
    prompt_tokens, completion_tokens = len(prompt.split()), len(text.split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _chat(fake: FakeOpenAI, body: Any, prompt: str) -> dict[str, Any]:
    text, calls = fake.answer(prompt, body.get("seed"))
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for i, c in enumerate(calls)
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": _usage(prompt, text),
        **_fingerprint(fake),
    }


def _fingerprint(fake: FakeOpenAI) -> dict[str, str]:
    fingerprint = fake.system_fingerprint
    return {"system_fingerprint": fingerprint} if fingerprint else {}


def _completions(fake: FakeOpenAI, body: Any, prompt: str) -> dict[str, Any]:
    text, _ = fake.answer(prompt, body.get("seed"))
    return {
        "id": "cmpl-fake",
        "object": "text_completion",
        "model": body.get("model"),
        "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
        "usage": _usage(prompt, text),
        **_fingerprint(fake),
    }


def _ollama_chat(fake: FakeOpenAI, body: Any, prompt: str) -> dict[str, Any]:
    text, calls = fake.answer(prompt)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls
        ]
    usage = _usage(prompt, text)
    return {
        "model": body.get("model"),
        "message": message,
        "done": True,
        "prompt_eval_count": usage["prompt_tokens"],
        "eval_count": usage["completion_tokens"],
    }


def _ollama_generate(fake: FakeOpenAI, body: Any, prompt: str) -> dict[str, Any]:
    text, _ = fake.answer(prompt)
    usage = _usage(prompt, text)
    return {
        "model": body.get("model"),
        "response": text,
        "done": True,
        "prompt_eval_count": usage["prompt_tokens"],
        "eval_count": usage["completion_tokens"],
    }


_ROUTES = {
    "/v1/chat/completions": _chat,
    "/v1/completions": _completions,
    "/api/chat": _ollama_chat,
    "/api/generate": _ollama_generate,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument(
        "--first-token-s", type=float, default=0.0, help="streamed: seconds to the first chunk"
    )
    parser.add_argument(
        "--token-s", type=float, default=0.0, help="streamed: seconds between chunks"
    )
    parser.add_argument("--capacity", type=int, default=64, help="requests served at once")
    parser.add_argument("--answers", help="a JSON file mapping prompt -> answer")
    parser.add_argument(
        "--echo-key", action="store_true", help="echo the credentials received (answers, stdout)"
    )
    parser.add_argument(
        "--script",
        nargs=2,
        action="append",
        default=[],
        metavar=("MATCH", "FAULT"),
        help="the next request whose prompt contains MATCH gets FAULT (repeatable)",
    )
    args = parser.parse_args(argv)
    answers = {}
    if args.answers:
        with open(args.answers, encoding="utf-8") as handle:
            answers = json.load(handle)
    fake = FakeOpenAI(
        latency_s=args.latency,
        first_token_s=args.first_token_s,
        token_s=args.token_s,
        capacity=args.capacity,
        answers=answers,
        port=args.port,
        echo_key=args.echo_key,
    )
    for match, fault in args.script:
        fake.script(match, [fault])
    print(fake.port, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        fake.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
