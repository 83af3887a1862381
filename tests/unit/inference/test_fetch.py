"""SSRF guards and limits of the service's image fetcher, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from curation.inference.service import fetch
from curation.inference.service.fetch import FetchError, _checked_address, fetch_bytes

SECRET = "s3cr3tS1gnature%2Bab%3D"
SIG = f"sv=2024-01-01&sp=r&sig={SECRET}"
CAP = 1000


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests: list[str] = []
    flaky_seen = 0

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, length: bool = True) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self.requests.append(self.path)
        path = self.path.split("?", 1)[0]
        if path == "/ok":
            self._send(200, b"x" * 100)
        elif path == "/loop":
            self._send(302, headers={"Location": f"/loop?{SIG}"})
        elif path.startswith("/chain/"):
            n = int(path.rsplit("/", 1)[1])
            if n == 0:
                self._send(200, b"end of chain")
            else:
                self._send(302, headers={"Location": f"/chain/{n - 1}?{SIG}"})
        elif path == "/big":
            self._send(200, b"y" * (CAP + 1))
        elif path == "/exact":
            self._send(200, b"y" * CAP)
        elif path == "/big-chunked":  # no Content-Length: the cap must hold while streaming
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(5):
                chunk = b"z" * 300
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/to-metadata":
            self._send(302, headers={"Location": f"http://169.254.169.254/latest/meta-data/?{SIG}"})
        elif path == "/to-private":
            self._send(302, headers={"Location": f"http://10.0.0.1/blob.jpg?{SIG}"})
        elif path == "/to-loopback6":
            self._send(302, headers={"Location": f"http://[::1]:{self.server.server_address[1]}/ok?{SIG}"})
        elif path == "/to-file":
            self._send(302, headers={"Location": "file:///etc/hostname"})
        elif path.startswith("/flaky/"):  # /flaky/<status>/<failures>: that many failures, then the body
            _, _, status, failures = path.split("/")
            Handler.flaky_seen += 1
            if Handler.flaky_seen <= int(failures):
                self._send(int(status), b"busy", headers={"Retry-After": "0"})
            else:
                self._send(200, b"at last")
        elif path == "/to-ftp":
            self._send(302, headers={"Location": f"ftp://example.com/x.jpg?{SIG}"})
        else:
            self._send(404, b"missing")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    Handler.requests, Handler.flaky_seen = [], 0
    with httpx.Client(timeout=5) as c:
        yield c


def get(url: str, client: httpx.Client, **kw) -> bytes:
    options = {"max_bytes": CAP, "max_redirects": 3, "allow_file": False, "allow_private": True} | kw
    return fetch_bytes(url, client, **options)


def refused(url: str, client: httpx.Client, match: str, **kw) -> FetchError:
    with pytest.raises(FetchError, match=match) as info:
        get(url, client, **kw)
    assert_no_secret(info.value)
    return info.value


def assert_no_secret(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))  # what a log line with the traceback would show
    assert "sig=" not in text and SECRET not in text and "s3cr3t" not in text, text
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


def only_loopback_test_server(real=_checked_address):
    """A host check that lets the test server (127.0.0.1) through and applies the real rules to any other host."""

    def check(host: str, allow_private: bool) -> None:
        if host != "127.0.0.1":
            real(host, allow_private)

    return check


# --- host checks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1", "127.1", "2130706433", "localhost", "0.0.0.0", "10.0.0.1", "172.16.5.4", "192.168.1.1",
        "169.254.169.254", "::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "fd00::1", "fe80::1",
        "100.100.100.200",  # shared address space (RFC 6598): Alibaba Cloud's metadata service lives here
        "100.64.0.1", "224.0.0.1",
        # IPv6 forms that embed a non-public IPv4 address (issue #17): 6to4, NAT64, IPv4-compatible, Teredo
        "2002:7f00:1::1", "2002:a9fe:a9fe::1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "::127.0.0.1",
        "2001:0:4136:e378:8000:63bf:80ff:fffe",
    ],
)
def test_non_public_hosts_are_refused(host, monkeypatch):
    monkeypatch.setattr(socket, "socket", _no_sockets)
    with pytest.raises(FetchError, match="non-public address"):
        _checked_address(host, allow_private=False)
    _checked_address(host, allow_private=True)  # explicitly allowed: no check at all


@pytest.mark.parametrize("host", ["8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "2002:808:808::1"])
def test_public_literals_are_accepted_without_any_connection(host, monkeypatch):
    monkeypatch.setattr(socket, "socket", _no_sockets)  # resolving a literal opens no socket
    _checked_address(host, allow_private=False)


def _no_sockets(*args: object, **kwargs: object):
    raise AssertionError("the host check must not open a socket")


def test_a_private_first_host_is_refused_before_any_request(server, client):
    refused(f"{server}/ok?{SIG}", client, "non-public address", allow_private=False)
    assert Handler.requests == []


# --- redirects -------------------------------------------------------------------------------------------


def test_redirect_loop_stops_after_max_redirects(server, client):
    refused(f"{server}/loop?{SIG}", client, r"too many redirects \(more than 3\)")
    assert len(Handler.requests) == 4  # the first request and 3 redirects followed, no more


def test_exactly_max_redirects_is_fine_and_one_more_is_not(server, client):
    assert get(f"{server}/chain/3?{SIG}", client) == b"end of chain"
    Handler.requests = []
    refused(f"{server}/chain/4?{SIG}", client, "too many redirects")
    assert get(f"{server}/chain/1", client, max_redirects=1) == b"end of chain"
    refused(f"{server}/chain/1", client, "too many redirects", max_redirects=0)


@pytest.mark.parametrize("route", ["/to-metadata", "/to-private", "/to-loopback6"])
def test_redirect_to_a_private_host_is_refused(route, server, client, monkeypatch):
    monkeypatch.setattr(fetch, "_checked_address", only_loopback_test_server())
    refused(f"{server}{route}?{SIG}", client, "non-public address", allow_private=False)
    assert len(Handler.requests) == 1  # the redirect target was never contacted (it is not this server)


def test_redirect_to_file_is_refused_even_when_file_urls_are_allowed(server, client):
    refused(f"{server}/to-file?{SIG}", client, "file://", allow_file=False)
    # The embedded service may read file:// URLs it is given, but a web server must not redirect it to one.
    refused(f"{server}/to-file?{SIG}", client, "redirect to a file:// URL", allow_file=True)


def test_redirect_to_another_scheme_is_refused(server, client):
    refused(f"{server}/to-ftp?{SIG}", client, "unsupported URL")


# --- size cap --------------------------------------------------------------------------------------------


def test_body_over_the_cap_with_content_length(server, client):
    refused(f"{server}/big?{SIG}", client, f"larger than the {CAP}-byte cap")
    assert get(f"{server}/exact", client) == b"y" * CAP  # at the cap is fine


def test_body_over_the_cap_without_content_length(server, client):
    refused(f"{server}/big-chunked?{SIG}", client, f"larger than the {CAP}-byte cap")
    assert get(f"{server}/big-chunked", client, max_bytes=1500) == b"z" * 1500


# --- file:// ---------------------------------------------------------------------------------------------


def test_file_urls_only_when_allowed(tmp_path, client):
    image = tmp_path / "dir with space#and?odd%chars" / "img.jpg"
    image.parent.mkdir()
    image.write_bytes(b"\xff\xd8" + b"a" * 50)
    url = image.as_uri()
    refused(url, client, "only read by the embedded service", allow_file=False)
    assert get(url, client, allow_file=True) == image.read_bytes()
    refused(url, client, "larger than the 10-byte cap", allow_file=True, max_bytes=10)
    refused(f"{(tmp_path / 'missing.jpg').as_uri()}?{SIG}", client, "no such file", allow_file=True)


# --- messages never carry the query string ----------------------------------------------------------------


def test_errors_name_the_url_without_its_query(server, client):
    error = refused(f"{server}/missing?{SIG}", client, "HTTP 404")
    assert f"{server}/missing" in str(error)
    refused(f"gopher://127.0.0.1/x?{SIG}", client, "unsupported URL")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused(f"http://127.0.0.1:{port}/x.jpg?{SIG}", client, "ConnectError fetching")


def test_success_is_the_body(server, client):
    assert get(f"{server}/ok?{SIG}", client) == b"x" * 100


def test_httpx_request_logs_carry_no_query(server, client):
    import logging

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger, handler = logging.getLogger("httpx"), Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        get(f"{server}/chain/1?{SIG}", client)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert any("/chain/1" in line for line in lines), lines  # httpx did log the requests...
    assert not any("sig=" in line or "s3cr3t" in line for line in lines), lines  # ...without their query


# --- transient failures are retried; what still fails is marked transient --------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retried_honouring_retry_after(status, server, client):
    assert get(f"{server}/flaky/{status}/2?{SIG}", client, retry_budget_s=30) == b"at last"
    assert len(Handler.requests) == 3


def test_a_fetch_that_keeps_failing_is_transient_with_its_attempts(server, client):
    error = refused(f"{server}/flaky/503/1000?{SIG}", client, r"HTTP 503 fetching .* \(tried \d+ times\)",
                    retry_budget_s=0.3)
    assert error.transient and len(Handler.requests) >= 2


def test_without_a_budget_a_fetch_is_tried_once(server, client):
    error = refused(f"{server}/flaky/503/1?{SIG}", client, "HTTP 503")
    assert error.transient and len(Handler.requests) == 1


@pytest.mark.parametrize("route", ["/missing", "/big"])
def test_permanent_failures_are_not_retried(route, server, client):
    error = refused(f"{server}{route}?{SIG}", client, "HTTP 404|cap", retry_budget_s=30)
    assert not error.transient and len(Handler.requests) == 1


def test_connection_refused_is_transient(client):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = refused(f"http://127.0.0.1:{port}/x.jpg?{SIG}", client, "ConnectError", retry_budget_s=0.2)
    assert error.transient


# --- the connection goes to the checked address (no DNS rebinding) ----------------------------------------


def test_the_request_goes_to_the_address_that_was_checked(monkeypatch):
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # a rebinding resolver: public first, loopback next
    lookups = []

    def resolver(host, *args, **kwargs):
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0)) for a in next(answers)]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"pixels")

    with httpx.Client(transport=httpx.MockTransport(handler)) as mock:
        body = get(f"https://images.example.com:8443/a/b.jpg?{SIG}", mock, allow_private=False)
    assert body == b"pixels" and lookups == ["images.example.com"]  # resolved once
    (request,) = seen
    assert request.url.host == "93.184.216.34" and request.url.port == 8443
    assert request.headers["host"] == "images.example.com:8443"
    assert request.extensions["sni_hostname"] == "images.example.com"  # TLS checks the certificate of the name
    assert request.url.path == "/a/b.jpg" and "sig=" in str(request.url.query)
