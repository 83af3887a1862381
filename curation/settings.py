"""The one settings object. Every component reads its configuration from here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Pipeline settings, read from `CURATION_*` environment variables.

    Secrets are `SecretStr`, so they never print in a repr, a log line or a traceback.
    """

    model_config = SettingsConfigDict(env_prefix="CURATION_", extra="ignore")

    # Data root: every dataset, thumbnail and export lives under it.
    data_root: Path = Field(default=Path("data"))

    @field_validator("data_root")
    @classmethod
    def _absolute_root(cls, root: Path) -> Path:
        # Absolute from the start: a task on a Dask worker (another working directory) must find the same root.
        return Path(root).expanduser().absolute()

    # Validation: a dataset needs at least this many acceptable images (the spec: MORE than 30).
    min_images: int = 31

    # Inference service: one base URL or several replicas, comma-separated (shards go round-robin and fail over).
    # None means the embedded service, started in-process on a loopback port.
    service_url: str | None = None
    api_key: SecretStr | None = None
    api_key_block: str | None = None  # Prefect Secret block holding the API key, read when api_key is unset
    model: str = "cnn"  # cnn (EfficientNet-Lite0, the default), fast (weight-free descriptor; also "cpu") or clip
    # Where the CNN's ONNX file, made from the shipped checkpoint on first use, is kept.
    model_cache: Path = Field(default_factory=lambda: Path.home() / ".cache" / "curation" / "models")
    clip_weights: Path | None = None  # local open_clip checkpoint; never downloaded at run time
    clip_model: str = "ViT-B-32"

    # Tracking: poll interval, and how long transient failures may last before the run is Failed.
    poll_interval_s: float = 5.0
    transient_budget_s: float = 120.0
    request_timeout_s: float = 30.0
    # A run whose images failed for a transient reason (storage unreachable or throttled) in more than this share
    # ends Failed; `curation curate --resume ID` re-processes them.
    max_retryable_share: float = Field(default=0.05, ge=0, le=1)

    # Work is cut into shards; never one Prefect task per image.
    shard_size: int = 256
    thumbnail_size: int = 256
    task_workers: int = Field(default_factory=lambda: os.cpu_count() or 2)
    results_page_size: int = 1000
    # Worker processes for decoding, quality signals, thumbnails and model features (curation.inference.workpool);
    # None = one per core, 0 = in the calling thread.
    work_processes: int | None = None

    # Where shard tasks run: threads in the flow process, or Dask (an existing scheduler at dask_address, else a
    # LocalCluster of dask_workers processes started for the flow run).
    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = None
    dask_workers: int = 2

    # SAS: read-only, per blob, valid long enough to cover the job.
    sas_expiry_minutes: int = 240

    # Azure credentials from the environment (never flow parameters in plain text).
    azure_account_key: SecretStr | None = None
    azure_sas_token: SecretStr | None = None
    azure_connection_string: SecretStr | None = None
    # Azure AD: DefaultAzureCredential (CURATION_AZURE_AD=true), or a service principal; signs per-blob read SAS with
    # a user delegation key.
    azure_ad: bool = False
    azure_tenant_id: str | None = None
    azure_client_id: str | None = None
    azure_client_secret: SecretStr | None = None
    azure_list_page_size: int = 5000  # blobs per listing page (5000 is the service's maximum)

    # Publish every Completed dataset's Parquet to this fsspec URL (abfs://container/prefix, file:///dir, ...); the
    # Azure credential above is passed to adlfs as storage options, never logged.
    output_url: str | None = None

    # Service side.
    service_api_keys: SecretStr | None = None  # comma-separated keys the service accepts
    service_workers: int = Field(default_factory=lambda: os.cpu_count() or 2)
    fetch_timeout_s: float = 30.0
    # A fetch that meets a connection error, a timeout, 429 or 5xx is tried again with backoff (Retry-After
    # honoured) for this long; what still fails is recorded as retryable (docs/reliability.md).
    fetch_retry_budget_s: float = 60.0
    max_image_bytes: int = 64 * 1024 * 1024
    max_redirects: int = 3
    allow_file_urls: bool = False  # only the embedded service reads file:// URLs
    allow_private_hosts: bool = False  # loopback/private hosts only when explicitly allowed
    usage_path: Path | None = None  # where the service keeps its usage ledger; None = in memory
    service_job_retention_s: float = 24 * 3600  # finished jobs nobody released are forgotten after this
    service_state_dir: Path | None = None  # the service's job journal, so a restart finishes jobs; None = memory
    # What one request may make the service hold (docs/service-api.md): a job body's bytes and items (a job is one
    # shard, CURATION_SHARD_SIZE images, so this leaves ample headroom), and each API key's images queued or running,
    # past which a submission is answered 429 with Retry-After.
    service_max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    service_max_job_items: int = Field(default=100_000, ge=1)
    service_max_queued_images_per_key: int = Field(default=1_000_000, ge=1)

    @property
    def service_urls(self) -> list[str]:
        """The inference replicas' base URLs; empty means the embedded service."""
        return [u.strip().rstrip("/") for u in (self.service_url or "").split(",") if u.strip()]

    @property
    def usage_file(self) -> Path:
        """The usage ledger the embedded service writes and the viewer reads: usage_path, else the catalog's."""
        from curation.dataset.catalog import Catalog  # the catalog reads Parquet: not needed to read settings

        return self.usage_path or Catalog(self.data_root).usage_file


# A context variable, not a global: two SDK runs in two threads each see their own settings, and Prefect copies
# the context into the threads that run task calls.
_active: ContextVar[Settings | None] = ContextVar("curation_settings", default=None)


@lru_cache(maxsize=1)
def _from_environment() -> Settings:
    return Settings()


def get_settings() -> Settings:
    """The process-wide settings: those the SDK activated, else read once from the environment."""
    active = _active.get()
    return active if active is not None else _from_environment()


@contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """Make settings the process-wide ones for the duration (the SDK runs flows in-process under it)."""
    token = _active.set(settings)
    try:
        yield settings
    finally:
        _active.reset(token)
