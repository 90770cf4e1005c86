"""JSON over keep-alive HTTP/1.1: what the engine's targets need of HTTP, and no more.

Requests go straight through httpcore, the transport under httpx, on asyncio's own
streams. Against a local server a request through ``httpx.AsyncClient`` costs about
1.3 ms of CPU, through httpcore's connection pool on its default (anyio) backend
0.7 ms, and on asyncio streams 0.5 ms: the client layer builds URL, cookie and
header models that a JSON API call never uses, and at a few thousand requests a run
that CPU is most of what the engine spends. What is kept from httpx's client: the proxy
environment variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``),
httpx's trust store (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, certifi), and gzip and
deflate answers.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import re
import select
import ssl
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpcore

from pytest_expertbench.records import TargetError, one_line

__all__ = ["JsonClient", "parse_retry_after"]

_PROXY_SCHEMES = ("http", "https")
_STATUS_LINE_START = b"HTTP/"
_HEADER_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")  # h11's rules (RFC 9110)
_HEADER_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
# TLS failures a new connection could get past: the peer hung up mid-handshake.
_TRANSIENT_TLS_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


@cache
def _user_agent() -> bytes:
    try:
        return f"pytest-expertbench/{version('pytest-expertbench')}".encode()
    except PackageNotFoundError:
        return b"pytest-expertbench"


class JsonClient:
    """Up to ``connections`` keep-alive connections, shared by every host asked.

    The engine gives each target's :meth:`Target.complete` one of these. It is
    bound to the event loop it was first used on, like any asyncio object.
    """

    def __init__(self, connections: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._connections = connections
        self._ssl = ssl_context
        self._pools: dict[str | None, httpcore.AsyncConnectionPool] = {}
        self._headers = [(b"Accept", b"application/json"), (b"User-Agent", _user_agent())]

    async def request_json(
        self,
        url: str,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> Any:
        """Send ``payload`` as JSON (no body for GET) and return the decoded answer.

        Raises a one-line :class:`TargetError` that says whether asking again could
        help: a timeout, a refused or dropped connection, 408, 429 and 5xx could;
        another status (501 and 505 too), a refused TLS handshake, a server that does
        not speak HTTP/1.1, a bad URL, proxy or header, or a body that is not JSON could not.
        """
        sent = [*self._headers, *((k.encode(), v.encode()) for k, v in (headers or {}).items())]
        body = b""
        if method != "GET":
            body = json.dumps(payload).encode()
            sent.append((b"Content-Type", b"application/json"))
        try:
            pool = self._pool(_proxy_for(url))
            response = await pool.request(method, url, headers=sent, content=body)
        except httpcore.TimeoutException as exc:
            raise TargetError(
                f"timed out waiting for {url} ({type(exc).__name__})",
                retryable=True,
                connection_failed=isinstance(exc, httpcore.ConnectTimeout),
            ) from None
        except (httpcore.UnsupportedProtocol, _TlsRefused, _NotHttp11) as exc:
            raise TargetError(f"cannot ask {url}: {one_line(str(exc))}") from None
        except httpcore.LocalProtocolError:  # its message would quote the header, secrets too
            raise TargetError(
                f"cannot ask {url}: not a valid HTTP/1.1 request{_bad_headers(sent)}"
            ) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError) as exc:
            reason = one_line(str(exc)) or type(exc).__name__
            raise TargetError(
                f"cannot reach {url}: {reason}",
                retryable=True,
                connection_failed=_is_connection_failure(exc),
            ) from None
        return _decoded(url, response)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()

    async def __aenter__(self) -> JsonClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _pool(self, proxy: str | None) -> httpcore.AsyncConnectionPool:
        pool = self._pools.get(proxy)
        if pool is None:
            pool = self._pools[proxy] = self._new_pool(proxy)
        return pool

    def _new_pool(self, proxy: str | None) -> httpcore.AsyncConnectionPool:
        limits: dict[str, Any] = {
            "ssl_context": self._ssl,
            "max_connections": self._connections,
            "max_keepalive_connections": self._connections,
            "network_backend": _AsyncioBackend(),
        }
        if proxy is None:
            return httpcore.AsyncConnectionPool(**limits)
        parts = urllib.parse.urlsplit(proxy)
        auth = None
        if parts.username is not None:
            auth = (
                urllib.parse.unquote(parts.username),
                urllib.parse.unquote(parts.password or ""),
            )
            proxy = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        return httpcore.AsyncHTTPProxy(proxy_url=proxy, proxy_auth=auth, **limits)


class _TlsRefused(httpcore.ConnectError):
    """A TLS handshake that failed for a reason asking again will not change."""


class _NotHttp11(httpcore.RemoteProtocolError):
    """A server that answered in another protocol (HTTP/2 only, TLS on an http:// URL)."""


class _AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection on asyncio's own streams.

    httpcore's default backend goes through anyio, whose socket wrapper, cancel
    scopes and attribute lookups cost a third of a request's CPU here. httpcore
    passes no timeouts (the engine bounds each attempt as a whole), so none are
    set up; an error is raised as the httpcore exception that anyio's backend
    would raise, so that httpcore and :meth:`JsonClient.request_json` see the same.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._answered = False
        self._socket = writer.get_extra_info("socket")
        self._poll = select.poll() if hasattr(select, "poll") else None  # not on Windows
        if self._poll is not None and self._socket is not None:  # made once: httpcore
            self._poll.register(self._socket.fileno(), select.POLLIN)  # asks every request

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                data = await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout("no answer in time") from None
        except OSError as exc:
            raise httpcore.ReadError(exc) from exc
        if not self._answered:
            self._check_first_answer(data)
        return data

    def _check_first_answer(self, data: bytes) -> None:
        """Tell a server that speaks another protocol from one that hung up.

        h11 reports both as a protocol error, which is worth retrying only in the
        second case; the first bytes of an HTTP/1.x answer are ``HTTP/``.
        """
        head = data.lstrip(b"\r\n")[: len(_STATUS_LINE_START)]
        if not head:
            return
        self._answered = True
        if not _STATUS_LINE_START.startswith(head):
            raise _NotHttp11(
                f"the server does not answer in HTTP/1.1 (it sent {head!r}…:"
                " a TLS or HTTP/2-only server?)"
            )

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout("could not send in time") from None
        except OSError as exc:
            raise httpcore.WriteError(exc) from exc

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError:
            raise httpcore.ConnectTimeout("no TLS handshake in time") from None
        except _TRANSIENT_TLS_ERRORS as exc:
            raise httpcore.ConnectError(exc) from exc
        except ssl.SSLError as exc:  # a certificate, protocol or cipher that will not change
            raise _TlsRefused(f"TLS handshake failed: {exc}") from exc
        except OSError as exc:
            raise httpcore.ConnectError(exc) from exc
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle keep-alive connection the server has closed
            return self._idle_is_readable()
        names = {"client_addr": "sockname", "server_addr": "peername"}
        return self._writer.get_extra_info(names.get(info, info))

    def _idle_is_readable(self) -> bool:
        """True when the server has closed (or written to) this idle connection.

        The stream learns of the server's FIN only once the event loop has run since
        it arrived, and httpcore asks just before it reuses a connection: the socket
        itself is asked too, as httpcore's own backends do.
        """
        if self._reader.at_eof() or self._writer.is_closing():
            return True
        if self._poll is not None:
            return bool(self._poll.poll(0))
        if self._socket is not None:
            return bool(select.select([self._socket], [], [], 0)[0])
        return False


class _AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"no connection to {host}:{port} in time") from None
        except OSError as exc:
            raise httpcore.ConnectError(exc) from exc
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _is_connection_failure(exc: Exception) -> bool:
    """True when the server was never reached or hung up at once: refused, reset, no
    such host. A server that answers in a broken way (a protocol error) was reached."""
    if isinstance(exc, httpcore.ConnectError):
        return True
    return isinstance(exc, httpcore.ReadError | httpcore.WriteError) and isinstance(
        exc.__cause__, ConnectionError
    )


@lru_cache(maxsize=256)
def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url``, as httpx's client would choose it."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    proxy_parts = urllib.parse.urlsplit(proxy)
    if proxy_parts.scheme not in _PROXY_SCHEMES:
        shown = f"{proxy_parts.scheme}://{proxy_parts.netloc.rpartition('@')[2]}"  # no password
        raise httpcore.UnsupportedProtocol(
            f"the proxy {shown} from the environment: only http:// and https:// proxies work"
        )
    return proxy


def _decoded(url: str, response: httpcore.Response) -> Any:
    content = _unzipped(response)
    if response.status >= 400:
        status = response.status
        raise TargetError(
            f"HTTP {status} from {url}: {_error_text(response, content)}",
            retryable=status in (408, 429) or (status >= 500 and status not in (501, 505)),
            retry_after=parse_retry_after(_header(response, b"retry-after")),
            status=status,
        )
    try:
        return json.loads(content)
    except ValueError:
        text = content.decode("utf-8", "replace")
        raise TargetError(
            f"malformed JSON from {url}: {one_line(text, 80)!r}", status=response.status
        ) from None


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _unzipped(response: httpcore.Response) -> bytes:
    """The body, decompressed when the server gzipped it although nobody asked."""
    encoding = (_header(response, b"content-encoding") or "").strip().lower()
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return response.content
    try:
        return zlib.decompress(response.content, zlib.MAX_WBITS | 32)  # gzip or zlib
    except zlib.error:
        pass
    try:  # "deflate" without its zlib header, as some servers send it
        return zlib.decompress(response.content, -zlib.MAX_WBITS)
    except zlib.error:
        return response.content


def _bad_headers(sent: Iterable[tuple[bytes, bytes]]) -> str:
    """The headers h11 refuses, named but never quoted: their values hold API keys."""
    names = [
        name.decode("latin-1")
        for name, value in sent
        if not (_HEADER_NAME.fullmatch(name) and _HEADER_VALUE.fullmatch(value))
    ]
    if not names:
        return ""
    return f": the {', '.join(names)} header has a newline, a NUL or a space at either end"


def _error_text(response: httpcore.Response, content: bytes) -> str:
    """The server's own error message when it gives one in JSON, else the body's start."""
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, Mapping):
            error = error.get("message", error)
        if isinstance(error, str) and error:
            return one_line(error)
    reason = response.extensions.get("reason_phrase", b"")
    reason_text = reason.decode("latin-1") if isinstance(reason, bytes) else ""
    return one_line(content.decode("utf-8", "replace")) or reason_text or "no body"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
