"""HttpModelClient against real servers on 127.0.0.1: TLS, proxies, encodings, errors, pooling."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import gzip
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from pytest_expertbench.records import TargetError
from pytest_expertbench.transport import HttpModelClient
from tests.support.fake_openai import FakeOpenAI

T = TypeVar("T")
CHAT = {"model": "m", "messages": [{"role": "user", "content": "What is 6 x 7?"}]}
ANSWER = "ANSWER: What is 6 x 7?"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, 5.0)

    return asyncio.run(bounded())


def ask(
    url: str, payload: Any = CHAT, *, ssl_context: ssl.SSLContext | None = None, **options: Any
) -> Any:
    """One request through a fresh client; ``options`` go to ``request_json``."""

    async def one() -> Any:
        async with HttpModelClient(2, ssl_context=ssl_context) as client:
            return await client.request_json(url, payload, **options)

    return run(one())


def error_of(url: str, payload: Any = CHAT, **options: Any) -> TargetError:
    with pytest.raises(TargetError) as raised:
        ask(url, payload, **options)
    assert "\n" not in raised.value.message
    return raised.value


def content_of(answer: Any) -> str:
    return str(answer["choices"][0]["message"]["content"])


# ------------------------------------------------------------------ a scriptable server


@dataclass(frozen=True)
class Seen:
    """One request as the raw server saw it; ``target`` is the request line's URL."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, str], bytes]


class RawServer:
    """An HTTP/1.1 server whose answers a test writes: a (status, headers, body) or raw bytes.

    It also tunnels ``CONNECT`` to 127.0.0.1, so it serves as an HTTP(S) proxy.
    """

    def __init__(self, respond: Callable[[Seen], Reply | bytes]) -> None:
        self.respond = respond
        self.seen: list[Seen] = []
        self.tunnels: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _raw_handler_for(self))
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RawServer:
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _raw_handler_for(raw: RawServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = Seen(self.command, self.path, dict(self.headers.items()), body)
            raw.seen.append(seen)
            reply = raw.respond(seen)
            if isinstance(reply, bytes):
                self.wfile.write(reply)
                self.close_connection = True
                return
            status, headers, payload = reply
            self.send_response(status)
            for name, value in {"Content-Length": str(len(payload)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_GET

        def do_CONNECT(self) -> None:
            raw.tunnels.append(self.path)
            host, _, port = self.path.rpartition(":")
            assert host == "127.0.0.1", self.path
            with socket.create_connection((host, int(port))) as upstream:
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                _pipe(self.connection, upstream)
            self.close_connection = True

    return Handler


def _pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Relay bytes both ways until either side hangs up."""

    def relay(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    back = threading.Thread(target=relay, args=(upstream, client), daemon=True)
    back.start()
    relay(client, upstream)
    back.join(5)


def json_reply(data: Any, status: int = 200, **headers: str) -> Reply:
    return status, {"Content-Type": "application/json", **headers}, json.dumps(data).encode()


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No proxy from the machine's environment."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    yield monkeypatch


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made by the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: no certificate for the TLS tests")
    folder = tmp_path_factory.mktemp("tls")
    made = Certificate(folder / "cert.pem", folder / "key.pem")
    command = (
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
        " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
    )
    keys = ["-keyout", str(made.key), "-out", str(made.cert)]
    subprocess.run([openssl, *command.split(), *keys], check=True, capture_output=True)
    return made


@pytest.fixture
def tls_server(certificate: Certificate) -> Iterator[FakeOpenAI]:
    with FakeOpenAI(ssl_context=certificate.server_context()) as fake:
        yield fake


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ TLS


def test_tls_with_a_context_that_trusts_the_certificate(
    tls_server: FakeOpenAI, certificate: Certificate, environ: pytest.MonkeyPatch
) -> None:
    url = tls_server.base_url + "/chat/completions"
    assert url.startswith("https://")
    answer = ask(url, ssl_context=certificate.client_context())
    assert content_of(answer) == ANSWER
    assert tls_server.total == 1


def test_an_untrusted_certificate_is_refused_once_and_for_all(
    tls_server: FakeOpenAI, environ: pytest.MonkeyPatch
) -> None:
    url = tls_server.base_url + "/chat/completions"
    error = error_of(url, ssl_context=httpx.create_ssl_context())
    assert error.message.startswith(f"cannot ask {url}: ")
    assert "certificate verify failed" in error.message
    assert not error.retryable  # a bad certificate does not fix itself
    assert tls_server.total == 0


def test_https_to_a_plain_http_server_is_not_retried(
    server: FakeOpenAI, environ: pytest.MonkeyPatch
) -> None:
    url = server.base_url.replace("http://", "https://") + "/chat/completions"
    error = error_of(url, ssl_context=httpx.create_ssl_context())
    assert error.message.startswith(f"cannot ask {url}: TLS handshake failed")
    assert not error.retryable


# ------------------------------------------------------------------ proxies


@pytest.fixture
def proxy() -> Iterator[RawServer]:
    with RawServer(lambda seen: json_reply({"via": "proxy", "target": seen.target})) as raw:
        yield raw


def test_http_proxy_forwards_absolute_urls(proxy: RawServer, environ: pytest.MonkeyPatch) -> None:
    environ.setenv("HTTP_PROXY", proxy.url)
    url = "http://model.invalid/v1/chat/completions"
    assert ask(url) == {"via": "proxy", "target": url}
    (seen,) = proxy.seen
    assert json.loads(seen.body) == CHAT
    assert "Proxy-Authorization" not in seen.headers


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", None])
def test_no_proxy_bypasses_the_proxy(
    proxy: RawServer, server: FakeOpenAI, environ: pytest.MonkeyPatch, no_proxy: str | None
) -> None:
    environ.setenv("HTTP_PROXY", proxy.url)
    if no_proxy is not None:
        environ.setenv("NO_PROXY", no_proxy)
    url = server.base_url + "/chat/completions"
    answer = ask(url)
    if no_proxy is None:
        assert answer == {"via": "proxy", "target": url}
        assert server.total == 0
    else:
        assert content_of(answer) == ANSWER
        assert proxy.seen == []


def test_proxy_credentials_arrive_as_proxy_authorization(
    proxy: RawServer, environ: pytest.MonkeyPatch
) -> None:
    port = proxy.url.rpartition(":")[2]
    environ.setenv("HTTP_PROXY", f"http://alice:p%40ss%3Aword@127.0.0.1:{port}")
    ask("http://model.invalid/v1/chat/completions")
    (seen,) = proxy.seen
    expected = base64.b64encode(b"alice:p@ss:word").decode()
    assert seen.headers["Proxy-Authorization"] == f"Basic {expected}"


def test_https_through_a_connect_proxy(
    proxy: RawServer,
    tls_server: FakeOpenAI,
    certificate: Certificate,
    environ: pytest.MonkeyPatch,
) -> None:
    environ.setenv("HTTPS_PROXY", proxy.url)
    url = tls_server.base_url + "/chat/completions"
    answer = ask(url, ssl_context=certificate.client_context())
    assert content_of(answer) == ANSWER
    assert proxy.tunnels == [f"127.0.0.1:{tls_server.port}"]


def test_a_socks_proxy_is_one_clear_error(environ: pytest.MonkeyPatch) -> None:
    environ.setenv("ALL_PROXY", "socks5://alice:hunter2@127.0.0.1:1080")
    url = "http://model.invalid/v1/chat/completions"
    error = error_of(url)
    assert error.message.startswith(f"cannot ask {url}: the proxy from the environment: ")
    assert "SOCKS" in error.message
    assert not error.retryable
    assert "hunter2" not in error.message


def test_no_proxy_names_hosts_as_httpx_reads_it(
    proxy: RawServer, environ: pytest.MonkeyPatch
) -> None:
    """``.example.com`` is example.com's subdomains, not example.com itself (httpx's rule)."""
    environ.setenv("HTTP_PROXY", proxy.url)
    environ.setenv("NO_PROXY", ".example.com")
    url = "http://example.com/v1/chat/completions"
    assert ask(url) == {"via": "proxy", "target": url}


# ------------------------------------------------------------------ encodings


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
        ("deflate", _raw_deflate),  # bare, as some servers send it
        ("identity", lambda data: data),
    ],
)
def test_compressed_answers_are_decoded(
    encoding: str, pack: Callable[[bytes], bytes], environ: pytest.MonkeyPatch
) -> None:
    def respond(seen: Seen) -> Reply:
        body = json.dumps({"echo": json.loads(seen.body), "pad": "x" * 500}).encode()
        return 200, {"Content-Encoding": encoding}, pack(body)

    with RawServer(respond) as raw:
        answer = ask(raw.url + "/v1/chat/completions")
    assert answer == {"echo": CHAT, "pad": "x" * 500}


def test_a_chunked_answer_is_read_whole(environ: pytest.MonkeyPatch) -> None:
    """Servers that stream their JSON (chunked transfer encoding) give the same answer."""
    body = json.dumps({"echo": "x" * 3000}).encode()
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n"
    with RawServer(lambda seen: head + framed) as raw:
        answer = ask(raw.url + "/v1/chat/completions")
    assert answer == {"echo": "x" * 3000}


def test_a_gzipped_error_keeps_its_message(environ: pytest.MonkeyPatch) -> None:
    body = gzip.compress(json.dumps({"error": {"message": "quota exceeded"}}).encode())
    with RawServer(lambda seen: (429, {"Content-Encoding": "gzip"}, body)) as raw:
        error = error_of(raw.url + "/v1/chat/completions")
    assert error.message.endswith(": quota exceeded")
    assert (error.status, error.retryable) == (429, True)


# ------------------------------------------------------------------ errors


def test_a_refused_connection_is_retryable(environ: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1/chat/completions"
    error = error_of(url)
    assert error.message.startswith(f"cannot reach {url}: ")
    assert error.retryable
    assert error.status is None


def test_a_dropped_connection_is_retryable(server: FakeOpenAI, environ: pytest.MonkeyPatch) -> None:
    server.script(match="6 x 7", faults=["drop"])
    url = server.base_url + "/chat/completions"
    error = error_of(url)
    assert error.message.startswith(f"the connection to {url} was dropped: ")
    assert error.retryable
    assert content_of(ask(url)) == ANSWER  # and asking again helps


def test_a_reset_by_a_server_that_was_reached_is_no_failed_connection(
    server: FakeOpenAI, environ: pytest.MonkeyPatch
) -> None:
    """transformers serve resets a kept-alive connection after its parser crashed: the
    server is up, so the breaker (which reads connection_failed) must not open."""
    server.script(match="6 x 7", faults=["reset"])
    url = server.base_url + "/chat/completions"
    error = error_of(url)
    assert error.message.startswith(f"the connection to {url} was dropped: ")  # not unreachable
    assert error.retryable
    assert not error.connection_failed
    assert error_of(f"http://127.0.0.1:{closed_port()}/v1/chat/completions").connection_failed


def _in(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


@pytest.mark.parametrize(
    ("fault", "status", "retry_after"),
    [
        ("500", 500, None),
        ("503:7", 503, (7.0, 7.0)),
        ("429:2.5", 429, (2.5, 2.5)),
        ("429:{in 120 s}", 429, (100.0, 120.0)),  # an HTTP date, made when the test runs
        ("408", 408, None),
    ],
    ids=["500", "503-seconds", "429-fraction", "429-http-date", "408"],  # no clock in an id:
)  # xdist workers must collect the same names
def test_statuses_worth_retrying(
    server: FakeOpenAI,
    environ: pytest.MonkeyPatch,
    fault: str,
    status: int,
    retry_after: tuple[float, float] | None,
) -> None:
    server.script(match="6 x 7", faults=[fault.replace("{in 120 s}", _in(120))])
    url = server.base_url + "/chat/completions"
    error = error_of(url)
    assert error.message == f"HTTP {status} from {url}: injected {status}"
    assert (error.status, error.retryable) == (status, True)
    if retry_after is None:
        assert error.retry_after is None
    else:
        assert error.retry_after is not None
        assert retry_after[0] <= error.retry_after <= retry_after[1]


@pytest.mark.parametrize("status", [400, 401, 404, 422, 501, 505])
def test_statuses_not_worth_retrying(
    server: FakeOpenAI, environ: pytest.MonkeyPatch, status: int
) -> None:
    server.script(match="6 x 7", faults=[str(status)])
    url = server.base_url + "/chat/completions"
    error = error_of(url)
    assert error.message == f"HTTP {status} from {url}: injected {status}"
    assert (error.status, error.retryable) == (status, False)


def test_an_unknown_route_gives_the_servers_message(
    server: FakeOpenAI, environ: pytest.MonkeyPatch
) -> None:
    url = server.base_url + "/chat/nowhere"
    error = error_of(url)
    assert error.message == f"HTTP 404 from {url}: no route /v1/chat/nowhere"
    assert not error.retryable


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b'{"error": {"message": "bad   model\\n name"}}', "bad model name"),
        (b'{"error": "bad model name"}', "bad model name"),
        (b'{"detail": "bad model name"}', "bad model name"),
        (b'{"message": "bad model name"}', "bad model name"),
        (b"<html>\n<b>Bad Request</b></html>", "<html> <b>Bad Request</b></html>"),
        (b"", "Bad Request"),
    ],
)
def test_error_messages_in_every_shape(
    body: bytes, shown: str, environ: pytest.MonkeyPatch
) -> None:
    with RawServer(lambda seen: (400, {}, body)) as raw:
        error = error_of(raw.url + "/v1/chat/completions")
    assert error.message == f"HTTP 400 from {raw.url}/v1/chat/completions: {shown}"


def test_a_body_that_is_not_json(server: FakeOpenAI, environ: pytest.MonkeyPatch) -> None:
    server.script(match="6 x 7", faults=["malformed"])
    url = server.base_url + "/chat/completions"
    error = error_of(url)
    assert error.message == f"malformed JSON from {url}: 'this is not {{json'"
    assert (error.status, error.retryable) == (200, False)


def test_an_http2_only_server_is_not_retried(environ: pytest.MonkeyPatch) -> None:
    settings = bytes.fromhex("000000040000000000")  # an empty SETTINGS frame
    goaway = bytes.fromhex("0000080700000000000000000000000001")  # PROTOCOL_ERROR
    with RawServer(lambda seen: settings + goaway) as raw:
        url = raw.url + "/v1/chat/completions"
        error = error_of(url)
    assert error.message.startswith(f"cannot ask {url}: the server does not answer in HTTP/1.1")
    assert not error.retryable


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/v1/chat/completions", "unsupported protocol 'ftp://'"),
        ("127.0.0.1:8000/v1", "missing an 'http://' or 'https://' protocol"),
    ],
)
def test_a_url_that_is_not_http(url: str, reason: str, environ: pytest.MonkeyPatch) -> None:
    error = error_of(url)
    assert error.message.startswith(f"cannot ask {url}: ")
    assert reason in error.message
    assert not error.retryable


def test_a_bad_header_is_named_but_not_shown(
    server: FakeOpenAI, environ: pytest.MonkeyPatch
) -> None:
    url = server.base_url + "/chat/completions"
    error = error_of(url, headers={"Authorization": "Bearer sk-secret\n"})
    assert error.message == (
        f"cannot ask {url}: not a valid HTTP/1.1 request: the Authorization header has"
        " a newline, a NUL or a space at either end"
    )
    assert "sk-secret" not in error.message
    assert not error.retryable
    assert server.total == 0


def test_get_sends_no_body_and_extra_headers_arrive(environ: pytest.MonkeyPatch) -> None:
    with RawServer(lambda seen: json_reply({"ok": True})) as raw:
        answer = ask(raw.url + "/api/tags", None, method="GET", headers={"X-Team": "evals"})
        posted = ask(raw.url + "/api/chat", {"a": 1})
    assert answer == posted == {"ok": True}
    got, sent = raw.seen
    assert (got.method, got.body, got.headers["X-Team"]) == ("GET", b"", "evals")
    assert "Content-Type" not in got.headers
    assert (sent.method, json.loads(sent.body)) == ("POST", {"a": 1})
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["User-Agent"].startswith("pytest-expertbench")


# ------------------------------------------------------------------ keep-alive and pooling


def test_sequential_requests_share_one_connection(
    server: FakeOpenAI, environ: pytest.MonkeyPatch
) -> None:
    url = server.base_url + "/chat/completions"

    async def many() -> list[Any]:
        async with HttpModelClient(4) as client:
            return [await client.request_json(url, CHAT) for _ in range(40)]

    answers = run(many())
    assert [content_of(answer) for answer in answers] == [ANSWER] * 40
    assert (server.total, server.connections) == (40, 1)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_connection_the_server_closed_while_idle_is_not_reused(
    environ: pytest.MonkeyPatch, request: pytest.FixtureRequest, tls: bool
) -> None:
    """The server's FIN arrives while the loop is idle: the next request must not fail."""
    fake = request.getfixturevalue("tls_server" if tls else "server")
    context = request.getfixturevalue("certificate").client_context() if tls else None
    url = fake.base_url + "/chat/completions"

    async def closed_between() -> list[Any]:
        answers = []
        async with HttpModelClient(1, ssl_context=context) as client:
            for _ in range(10):
                answers.append(await client.request_json(url, CHAT))
                fake.close_connections()  # no await until the next request
        return answers

    answers = run(closed_between())
    assert [content_of(answer) for answer in answers] == [ANSWER] * 10
    assert fake.connections == 10


def test_concurrent_requests_stay_within_the_pool(environ: pytest.MonkeyPatch) -> None:
    with FakeOpenAI(latency_s=0.02) as fake:
        url = fake.base_url + "/chat/completions"

        async def burst() -> list[Any]:
            async with HttpModelClient(4) as client:
                asks = (client.request_json(url, CHAT) for _ in range(50))
                return await asyncio.gather(*asks)

        answers = run(burst())
    assert [content_of(answer) for answer in answers] == [ANSWER] * 50
    assert fake.total == 50
    assert (fake.max_open, fake.connections) == (4, 4)
    assert 1 < fake.max_concurrent <= 4


def test_an_environment_read_racing_pytest_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest's thread deletes PYTEST_CURRENT_TEST while the engine's thread makes a
    client, which reads os.environ: a KeyError there must not fail the request."""
    made = httpx.AsyncClient
    failures = iter([KeyError("PYTEST_CURRENT_TEST"), KeyError("PYTEST_CURRENT_TEST")])

    def racing(*args: Any, **kwargs: Any) -> httpx.AsyncClient:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return made(*args, **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", racing)
    with FakeOpenAI() as server:

        async def ask() -> Any:
            async with HttpModelClient(1) as client:
                payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                return await client.request_json(f"{server.base_url}/chat/completions", payload)

        answer = run(ask())
    assert answer["choices"][0]["message"]["content"] == "ANSWER: hi"
