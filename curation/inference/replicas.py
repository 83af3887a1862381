"""The inference replicas a run talks to, with one client per replica opened when first needed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from pydantic import SecretStr

from curation.inference.client import InferenceClient, ServiceError
from curation.settings import Settings


class ServiceNotConfigured(ServiceError):
    """No inference service URL: start the embedded one (`service_for`) or set CURATION_SERVICE_URL."""


def public_url(url: str) -> str:
    """A base URL without user info, query or fragment: the name of a replica that is safe to store and log."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(userinfo=b"", query=None, fragment=None)).rstrip("/")


@dataclass(frozen=True)
class Replica:
    """One inference service. `name` (its URL without credentials) is what the job map and logs hold."""

    name: str
    url: str = field(repr=False)
    api_key: SecretStr = field(repr=False)


class Replicas:
    """The replicas of one run (CURATION_SERVICE_URL, comma-separated) and their clients.

    Building it has no side effect: it never starts a service. Clients open on first use and close with `close()`.
    It pickles without its clients, so a task in another process (Dask) reopens its own."""

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        urls = settings.service_urls
        if not urls:
            raise ServiceNotConfigured(
                "no inference service is configured: set CURATION_SERVICE_URL, or start the embedded service"
                " (curation.inference.service.server.service_for)"
            )
        if settings.api_key is None:
            raise ServiceError("CURATION_API_KEY is not set: the inference service needs an API key")
        self.settings = settings
        self.transport = transport
        self.all = [Replica(public_url(u), u, settings.api_key) for u in urls]
        self._clients: dict[str, InferenceClient] = {}
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Replica]:
        return iter(self.all)

    def __len__(self) -> int:
        return len(self.all)

    def get(self, name: str) -> Replica | None:
        """The configured replica of that name, or None when it is no longer configured."""
        return next((r for r in self.all if r.name == name), None)

    def client(self, replica: Replica | None = None) -> InferenceClient:
        """The client of a replica (default: the first), opened once."""
        chosen = replica or self.all[0]
        with self._lock:
            if chosen.name not in self._clients:
                self._clients[chosen.name] = InferenceClient(chosen.url, chosen.api_key, self.settings, self.transport)
            return self._clients[chosen.name]

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_clients", "_lock", "transport")}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state, _clients={}, _lock=threading.Lock(), transport=None)
