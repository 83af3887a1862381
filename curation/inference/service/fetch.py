"""Fetching an image by URL for the service: timeouts, a size cap, bounded redirects, no SSRF, retries.

A host is resolved once and every address it resolves to is checked; the connection then goes to the checked address
(the URL's host travels in the Host header and as the TLS server name), so a second lookup cannot rebind it. A fetch
that meets connection trouble, a timeout, 408, 429 or 5xx is tried again with backoff (tenacity; Retry-After
honoured) within a time budget; what still fails raises a `FetchError` marked transient.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_before_delay, wait_exponential_jitter

from curation.secrets import strip_query


class _NoQueryInHttpxLogs(logging.Filter):
    """httpx logs every request's full URL at INFO; a signed URL's query is its SAS: log the URL without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(strip_query(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


logging.getLogger("httpx").addFilter(_NoQueryInHttpxLogs())


class FetchError(RuntimeError):
    """The image could not be fetched; the message names the URL without its query (no SAS).

    `transient`: the cause may heal (connection trouble, a timeout, 408, 429, 5xx), so a later run may succeed."""

    def __init__(self, message: str, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.transient, self.retry_after = transient, retry_after


TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 30.0  # a longer Retry-After is waited this long at most (within the budget)


def _checked_address(host: str, allow_private: bool) -> str | None:
    """The address to connect to, after checking every address the host resolves to; None when the URL's host is
    used as it is (private hosts allowed, or the host is itself an address, checked here)."""
    if allow_private:
        return None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if _non_public(literal):
            raise FetchError(f"refused: host {host!r} is a non-public address")
        return None
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:  # EAI_AGAIN: the resolver could not answer now
        raise FetchError(f"cannot resolve host {host!r}: {exc.strerror}", transient=exc.errno == socket.EAI_AGAIN) from None
    addresses = [info[4][0] for info in infos]
    for address in addresses:
        if _non_public(ipaddress.ip_address(address)):
            raise FetchError(f"refused: host {host!r} resolves to a non-public address")
    if not addresses:
        raise FetchError(f"cannot resolve host {host!r}")
    return addresses[0]


@dataclass(frozen=True)
class _Target:
    """Where one request goes: the URL (its host replaced by the checked address), the Host header and TLS name."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, object]


def _target(url: str, address: str | None) -> _Target:
    if address is None:
        return _Target(url, {}, {})
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    original = parts.netloc.rpartition("@")[2]
    extensions: dict[str, object] = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return _Target(urlunsplit(parts._replace(netloc=netloc)), {"Host": original}, extensions)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix: the last 32 bits are an IPv4 address
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible addresses, ::a.b.c.d


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (6to4, Teredo, IPv4-mapped, NAT64, IPv4-compatible), which a
    relay or the host's stack may route to."""
    found = [ip.sixtofour, ip.ipv4_mapped, *(ip.teredo or ())]
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [a for a in found if a is not None]


def _non_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Not a public address, or an IPv6 address that embeds one that is not. `not is_global` also covers what is
    neither private nor public, e.g. 100.64.0.0/10 (cloud metadata there)."""
    if not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
        return True
    return isinstance(ip, ipaddress.IPv6Address) and any(_non_public(v4) for v4 in _embedded_ipv4(ip))


def _read_file(url: str, max_bytes: int) -> bytes:
    path = Path(unquote(urlsplit(url).path))
    if not path.is_file():
        raise FetchError(f"no such file: {path}")
    if path.stat().st_size > max_bytes:
        raise FetchError(f"image is larger than the {max_bytes}-byte cap")
    return path.read_bytes()


@dataclass(frozen=True)
class _Redirect:
    location: str


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _get(url: str, address: str | None, client: httpx.Client, max_bytes: int) -> bytes | _Redirect:
    """One GET of url at the checked address: the bytes, or where it redirects. Raises FetchError."""
    target = _target(url, address)
    try:
        with client.stream("GET", target.url, headers=target.headers, extensions=target.extensions,
                           follow_redirects=False) as response:
            if response.is_redirect:
                return _Redirect(urljoin(url, response.headers.get("location", "")))
            if response.status_code in (401, 403):
                code = response.headers.get("x-ms-error-code", "refused")
                raise FetchError(
                    f"HTTP {response.status_code} ({code}) fetching {strip_query(url)}: the storage refused the "
                    "signed URL (expired SAS or no read permission)"
                )
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code} fetching {strip_query(url)}",
                                 transient=response.status_code in TRANSIENT_STATUS,
                                 retry_after=_retry_after(response))
            declared = int(response.headers.get("content-length") or 0)
            if declared > max_bytes:
                raise FetchError(f"image is larger than the {max_bytes}-byte cap")
            chunks, total = [], 0
            for chunk in response.iter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise FetchError(f"image is larger than the {max_bytes}-byte cap")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.HTTPError as exc:
        transient = isinstance(exc, httpx.TransportError) and not isinstance(
            exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
        )
        raise FetchError(f"{type(exc).__name__} fetching {strip_query(url)}", transient=transient) from None


def _wait(state: RetryCallState) -> float:
    """Exponential backoff with jitter, or the server's Retry-After when it gave one."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, FetchError) and exc.retry_after is not None:
        return min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER_S)
    return wait_exponential_jitter(initial=0.5, max=10.0)(state)


def _get_retrying(url: str, address: str | None, client: httpx.Client, max_bytes: int, budget_s: float) -> bytes | _Redirect:
    """`_get`, tried again on a transient failure while the next wait still fits in budget_s."""
    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, FetchError) and e.transient),
        wait=_wait,
        stop=stop_before_delay(budget_s),
        reraise=True,
    )
    try:
        return retrying(_get, url, address, client, max_bytes)
    except FetchError as exc:
        attempts = retrying.statistics.get("attempt_number", 1)
        if exc.transient and attempts > 1:
            raise FetchError(f"{exc} (tried {attempts} times)", transient=True) from None
        raise


def fetch_bytes(
    url: str,
    client: httpx.Client,
    *,
    max_bytes: int,
    max_redirects: int,
    allow_file: bool,
    allow_private: bool,
    retry_budget_s: float = 0.0,
) -> bytes:
    """Download url into memory, refusing oversize bodies, too many redirects and forbidden hosts; a transient
    failure is tried again within retry_budget_s (0: once)."""
    for hop in range(max_redirects + 1):
        parts = urlsplit(url)
        if parts.scheme == "file":
            if hop > 0:  # a web server must never point the service at a local file
                raise FetchError("refused: redirect to a file:// URL")
            if not allow_file:
                raise FetchError("refused: file:// URLs are only read by the embedded service")
            return _read_file(url, max_bytes)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"refused: unsupported URL {strip_query(url)!r}")
        address = _checked_address(parts.hostname, allow_private)
        got = _get_retrying(url, address, client, max_bytes, retry_budget_s)
        if isinstance(got, _Redirect):
            url = got.location
            continue
        return got
    raise FetchError(f"too many redirects (more than {max_redirects})")
