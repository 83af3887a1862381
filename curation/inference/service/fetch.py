"""Fetching an image by URL for the service: timeouts, a size cap, bounded redirects, no SSRF."""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from curation.secrets import strip_query


class _NoQueryInHttpxLogs(logging.Filter):
    """httpx logs every request's full URL at INFO; a signed URL's query is its SAS: log the URL without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(strip_query(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


logging.getLogger("httpx").addFilter(_NoQueryInHttpxLogs())


class FetchError(RuntimeError):
    """The image could not be fetched; the message names the URL without its query (no SAS)."""


def _check_host(host: str, allow_private: bool) -> None:
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    for info in infos:
        if _non_public(ipaddress.ip_address(info[4][0])):
            raise FetchError(f"refused: host {host!r} resolves to a non-public address")


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


def fetch_bytes(
    url: str,
    client: httpx.Client,
    *,
    max_bytes: int,
    max_redirects: int,
    allow_file: bool,
    allow_private: bool,
) -> bytes:
    """Download url into memory, refusing oversize bodies, too many redirects and forbidden hosts."""
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
        _check_host(parts.hostname, allow_private)
        try:
            with client.stream("GET", url, follow_redirects=False) as response:
                if response.is_redirect:
                    url = urljoin(url, response.headers.get("location", ""))
                    continue
                if response.status_code in (401, 403):
                    code = response.headers.get("x-ms-error-code", "refused")
                    raise FetchError(
                        f"HTTP {response.status_code} ({code}) fetching {strip_query(url)}: the storage refused the "
                        "signed URL (expired SAS or no read permission)"
                    )
                if response.status_code != 200:
                    raise FetchError(f"HTTP {response.status_code} fetching {strip_query(url)}")
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
            raise FetchError(f"{type(exc).__name__} fetching {strip_query(url)}") from None
    raise FetchError(f"too many redirects (more than {max_redirects})")
