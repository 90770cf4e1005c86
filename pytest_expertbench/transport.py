"""JSON and streamed lines over HTTP, through httpx's public API.

:class:`HttpModelClient` is what the engine hands a target (the target sees it as a
:class:`pytest_expertbench.targets.ModelClient`): ``request_json`` for one JSON
answer, ``stream_lines`` for the lines of a streamed one (server-sent events,
NDJSON). httpx does the rest as it does for anyone: keep-alive, the proxy
environment variables (``trust_env``), gzip and deflate, its trust store. What this
module adds is the failure report the engine acts on: one line, whether asking
again could help (``retryable``), whether the server was reached at all
(``connection_failed``), the status and its Retry-After, and never a header value
(those hold API keys).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import re
import ssl
import time
from collections.abc import AsyncGenerator, Mapping
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

import httpx

from pytest_expertbench.records import TargetError, one_line

__all__ = ["HttpModelClient", "parse_retry_after"]

_HEADER_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")  # RFC 9110's token
_HEADER_VALUE = re.compile(r"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
# TLS failures a new connection could get past: the peer hung up mid-handshake.
_TRANSIENT_TLS_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
# h11's words for a first answer line that is not HTTP/1.x (an HTTP/2 frame, TLS bytes)
_NOT_HTTP11 = ("illegal status line", "illegal request line")
_ENVIRONMENT_READS = 5  # see _new_httpx


@cache
def _user_agent() -> str:
    try:
        return f"pytest-expertbench/{version('pytest-expertbench')}"
    except PackageNotFoundError:
        return "pytest-expertbench"


class HttpModelClient:
    """Up to ``connections`` keep-alive connections (one ``httpx.AsyncClient``).

    The httpx client is made at the first request, so that a proxy the environment
    names but httpx cannot use is reported as that request's error. Bound to the
    event loop it was first used on, like any asyncio object.
    """

    def __init__(self, connections: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._connections = connections
        self._ssl = ssl_context
        self._client: httpx.AsyncClient | None = None

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
        try:
            request = self._request(url, payload, headers, method)
            response = await self._httpx(url).send(request)
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeEncodeError) as exc:
            _raise_failure(url, exc, headers)
        if response.status_code >= 400:
            raise _status_error(url, response)
        try:
            return json.loads(response.content)
        except ValueError:
            text = response.content.decode("utf-8", "replace")
            raise TargetError(
                f"malformed JSON from {url}: {one_line(text, 80)!r}", status=response.status_code
            ) from None

    async def stream_lines(
        self, url: str, payload: Any, *, headers: Mapping[str, str] | None = None
    ) -> AsyncGenerator[str, None]:
        """POST ``payload`` as JSON and yield the answer's non-empty lines as they arrive.

        Fails as :meth:`request_json` does; a connection lost mid-answer is retryable.
        """
        try:
            request = self._request(url, payload, headers, "POST")
            response = await self._httpx(url).send(request, stream=True)
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise _status_error(url, response)
                async with contextlib.aclosing(_lines(response)) as lines:
                    async for line in lines:
                        yield line
            finally:
                await response.aclose()
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeEncodeError) as exc:
            _raise_failure(url, exc, headers)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> HttpModelClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _request(
        self, url: str, payload: Any, headers: Mapping[str, str] | None, method: str
    ) -> httpx.Request:
        sent = {**_DEFAULT_HEADERS, "User-Agent": _user_agent(), **(headers or {})}
        body = None
        if method != "GET":
            body = json.dumps(payload).encode()
            sent["Content-Type"] = "application/json"
        # Built here rather than by the client's build_request, from a URL parsed once:
        # parsing the same URL again cost a third of httpx's CPU per request. The client
        # adds nothing this request needs (no base URL, cookies, params or auth).
        return httpx.Request(method, _parsed(url), content=body, headers=sent)

    def _httpx(self, url: str) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=self._connections, max_keepalive_connections=self._connections
            )
            try:  # the engine bounds each attempt as a whole: httpx waits as long as it takes
                self._client = _new_httpx(self._ssl, limits)
            except (ImportError, ValueError) as exc:  # a SOCKS or unknown proxy scheme
                raise TargetError(
                    f"cannot ask {url}: the proxy from the environment: {_no_password(exc)}"
                ) from None
        return self._client


# What httpx's client would add to a request it builds: the answer may be compressed.
_DEFAULT_HEADERS = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate"}


@cache
def _parsed(url: str) -> httpx.URL:
    """A target's URL, parsed once: every request of a run goes to one of a few."""
    return httpx.URL(url)


def _new_httpx(ssl_context: ssl.SSLContext | None, limits: httpx.Limits) -> httpx.AsyncClient:
    """An httpx client, reading the proxy variables of the environment as it is made.

    It is made on the engine's thread while pytest's thread sets and deletes
    ``PYTEST_CURRENT_TEST`` around every item: reading ``os.environ`` then now and then
    finds a key gone (KeyError; one item in about 1319 failed with it). The variables
    httpx reads are not the ones pytest changes, so reading again is the right answer.
    """
    verify: ssl.SSLContext | bool = ssl_context or True
    for _ in range(_ENVIRONMENT_READS - 1):
        try:
            return httpx.AsyncClient(verify=verify, limits=limits, timeout=None, trust_env=True)
        except KeyError:
            continue
    return httpx.AsyncClient(verify=verify, limits=limits, timeout=None, trust_env=True)


async def _lines(response: httpx.Response) -> AsyncGenerator[str, None]:
    """The body's non-empty lines (LF or CRLF), split from the decoded bytes as they come
    (one layer fewer than httpx's ``aiter_lines``, which decodes text chunk by chunk)."""
    rest = b""
    async with contextlib.aclosing(response.aiter_bytes()) as chunks:  # type: ignore[type-var]
        async for chunk in chunks:
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                if line := line.rstrip(b"\r"):
                    yield line.decode("utf-8", "replace")
    if rest := rest.rstrip(b"\r"):
        yield rest.decode("utf-8", "replace")


def _raise_failure(url: str, exc: Exception, headers: Mapping[str, str] | None) -> NoReturn:
    """The one-line TargetError for a request httpx could not make or finish."""
    if isinstance(exc, httpx.TimeoutException):
        raise TargetError(
            f"timed out waiting for {url} ({type(exc).__name__})",
            retryable=True,
            connection_failed=isinstance(exc, httpx.ConnectTimeout),
        ) from None
    if isinstance(exc, httpx.LocalProtocolError | UnicodeEncodeError):
        # its message would quote the header, secrets too
        raise TargetError(
            f"cannot ask {url}: not a valid HTTP/1.1 request{_bad_headers(headers)}"
        ) from None
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        raise TargetError(f"cannot ask {url}: {one_line(str(exc))}") from None
    tls = _tls_refusal(exc)
    if tls is not None:
        raise TargetError(f"cannot ask {url}: TLS handshake failed: {one_line(str(tls))}") from None
    if isinstance(exc, httpx.RemoteProtocolError) and str(exc).startswith(_NOT_HTTP11):
        raise TargetError(
            f"cannot ask {url}: the server does not answer in HTTP/1.1"
            " (a TLS or HTTP/2-only server?)"
        ) from None
    reason = one_line(str(exc)) or type(exc).__name__
    # Reaching the server failed, not a connection it had accepted: a reset of a
    # kept-alive connection (a server's parser crashed on a 500) is an answer of sorts,
    # and must neither open the breaker on a server that is up nor read as unreachable.
    unreachable = isinstance(exc, httpx.ConnectError) or _caused_by(exc, ConnectionRefusedError)
    said = f"cannot reach {url}" if unreachable else f"the connection to {url} was dropped"
    raise TargetError(f"{said}: {reason}", retryable=True, connection_failed=unreachable) from None


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from (httpx wraps httpcore wraps the OS)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(cause, kind) for cause in _causes(exc))


def _tls_refusal(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` when asking again will not change it (a certificate)."""
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, _TRANSIENT_TLS_ERRORS):
            return cause
    return None


def _status_error(url: str, response: httpx.Response) -> TargetError:
    status = response.status_code
    return TargetError(
        f"HTTP {status} from {url}: {_error_text(response)}",
        retryable=status in (408, 429) or (status >= 500 and status not in (501, 505)),
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        status=status,
    )


def _bad_headers(headers: Mapping[str, str] | None) -> str:
    """The headers HTTP/1.1 refuses, named but never quoted: their values hold API keys."""
    names = [
        name
        for name, value in (headers or {}).items()
        if not (_HEADER_NAME.fullmatch(name) and _HEADER_VALUE.fullmatch(value))
    ]
    if not names:
        return ""
    return f": the {', '.join(names)} header has a newline, a NUL or a space at either end"


def _no_password(exc: Exception) -> str:
    """httpx's message about a proxy, with any ``user:password@`` taken out."""
    return one_line(re.sub(r"//[^/@\s]*@", "//", str(exc)))


def _error_text(response: httpx.Response) -> str:
    """The server's own error message when it gives one in JSON, else the body's start."""
    content = response.content
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
    text = one_line(content.decode("utf-8", "replace"))
    return text or response.reason_phrase or "no body"


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
