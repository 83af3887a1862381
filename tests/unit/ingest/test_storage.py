from __future__ import annotations

import pytest
from pydantic import SecretStr

from curation.settings import Settings
from curation.ingest.storage import AzureStorageConfig, LocalStorage, LocalStorageConfig, StorageError, open_storage


def test_local_storage_lists_recursively_with_prefix(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "top.jpg").write_bytes(b"1")
    (tmp_path / "a" / "b" / "deep.png").write_bytes(b"22")
    storage = LocalStorage(LocalStorageConfig(path=tmp_path))
    assert [(b.name, b.size) for b in storage.list_blobs()] == [("a/b/deep.png", 2), ("top.jpg", 1)]
    assert [b.name for b in LocalStorage(LocalStorageConfig(path=tmp_path, prefix="a/")).list_blobs()] == ["a/b/deep.png"]
    assert storage.sign_url("top.jpg", None).startswith("file://")  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        storage.read_bytes("../outside.jpg")


def test_missing_local_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        LocalStorage(LocalStorageConfig(path=tmp_path / "nope"))


def test_azure_needs_exactly_one_credential():
    two = AzureStorageConfig(container_name="c", account_name="a", account_key=SecretStr("k" * 20), sas_token=SecretStr("s=1"))
    with pytest.raises(StorageError, match="exactly one credential"):
        open_storage(two, Settings())
    with pytest.raises(StorageError, match="exactly one credential"):
        open_storage(AzureStorageConfig(container_name="c", account_name="a"), Settings())


def test_azure_credential_comes_from_settings_and_never_shows_in_repr_or_descriptor():
    key = "c2VjcmV0LWtleS1ub3QtcmVhbA=="
    settings = Settings(azure_account_key=SecretStr(key))
    config = AzureStorageConfig(container_name="c", account_name="acct", account_url="http://127.0.0.1:1/acct")
    storage = open_storage(config, settings)
    assert key not in repr(config.with_env_credentials(settings))
    assert key not in str(storage.descriptor())
    url = storage.sign_url("dir/a b#1.jpg", __import__("datetime").datetime(2030, 1, 1, tzinfo=__import__("datetime").UTC))
    assert url.startswith("http://127.0.0.1:1/acct/c/dir/a%20b%231.jpg?")
    assert "sp=r" in url and "sig=" in url and key not in url


def test_local_blob_paths_resolve_inside_the_folder_and_refuse_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "x.jpg").write_bytes(b"1")
    (tmp_path / "outside.jpg").write_bytes(b"2")
    (root / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / "inner.jpg").symlink_to(root / "a" / "b" / "x.jpg")
    (root / "dir").symlink_to(root / "a")
    storage = LocalStorage(LocalStorageConfig(path=root))
    for name in ["a/b/x.jpg", "a//b/./x.jpg", "a/b/../b/x.jpg", "inner.jpg", "dir/b/x.jpg", "missing.jpg"]:
        assert storage._path(name) == (root / name).resolve(), name
    assert storage.read_bytes("inner.jpg") == b"1" and storage.sign_url("a/b/x.jpg", None).startswith("file:///")
    for name in ["../outside.jpg", "a/../../outside.jpg", "link.jpg", str(tmp_path / "outside.jpg")]:
        with pytest.raises(StorageError, match="escapes the storage folder"):
            storage._path(name)


def test_a_symlink_out_of_the_folder_is_rejected_at_listing_not_the_dataset(tmp_path):
    """Issue #17: one such symlink used to pass listing and then fail the whole dataset at signing."""
    from curation.ingest.validation import validate_listing

    root = tmp_path / "root"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.jpg").write_bytes(b"jpeg")
    (tmp_path / "outside.jpg").write_bytes(b"secret")
    (root / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / "inner.jpg").symlink_to(root / "0.jpg")  # a symlink that stays inside is an ordinary image
    storage = LocalStorage(LocalStorageConfig(path=root))
    report = validate_listing(storage.list_blobs())
    assert [b.name for b in report.accepted] == ["0.jpg", "1.jpg", "2.jpg", "inner.jpg"]
    assert report.found == 5 and report.rejected == {"symlink leads out of the storage folder": 1}
    for blob in report.accepted:  # every accepted entry can be signed
        assert storage.sign_url(blob.name, None).startswith("file:///")


@pytest.mark.parametrize(
    ("permissions", "refused"),
    [("rl", None), ("r", None), ("rwdl", "write, delete"), ("racwdl", "add, create, write, delete"), ("", "names no")],
)
def test_a_container_sas_that_grants_more_than_read_and_list_is_refused(permissions, refused):
    """Issue #17: the service receives a user's container SAS with every image URL; it must not be able to write."""
    from pydantic import SecretStr

    from curation.ingest.storage import AzureStorageConfig, open_storage
    from curation.settings import Settings

    token = "sv=2023-01-03&sr=c&se=2030-01-01T00%3A00%3A00Z&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"
    token += f"&sp={permissions}" if permissions else ""
    config = AzureStorageConfig(container_name="c", account_name="acct", sas_token=SecretStr(token))
    if refused is None:
        assert open_storage(config, Settings()).descriptor()["container_name"] == "c"
        return
    with pytest.raises(StorageError, match=refused) as raised:
        open_storage(config, Settings())
    assert "c2VjcmV0" not in str(raised.value) and "sig=" not in str(raised.value)


def test_hidden_files_in_a_folder_are_listed_and_rejected_with_their_reason(tmp_path):
    """Issue #17: the folder used to skip hidden files silently while a container listed them; now both list them
    and validation rejects them as "hidden file", counted like any other rejection."""
    from curation.ingest.validation import validate_listing

    (tmp_path / ".cache").mkdir()
    (tmp_path / "a").mkdir()
    for name in ["0.jpg", "1.jpg", ".DS_Store", ".hidden.jpg", ".cache/2.jpg", "a/.3.png", "a/4.png"]:
        (tmp_path / name).write_bytes(b"jpeg")
    storage = LocalStorage(LocalStorageConfig(path=tmp_path))
    assert {".DS_Store", ".hidden.jpg", ".cache/2.jpg", "a/.3.png"} <= {b.name for b in storage.list_blobs()}
    report = validate_listing(storage.list_blobs())
    assert [b.name for b in report.accepted] == ["0.jpg", "1.jpg", "a/4.png"]
    assert report.found == 7 and report.rejected == {"hidden file": 4}


# --- Azure AD: a per-blob read SAS signed with a user delegation key -------------------------------------------


class FakeTokenCredential:
    """A token credential that never talks to Azure AD (the signing choice is tested, not the sign-in)."""

    def get_token(self, *scopes: str, **kwargs: object):
        from azure.core.credentials import AccessToken

        return AccessToken("not-a-real-token", 4102444800)


class FakeDelegationService:
    """Stands in for BlobServiceClient.get_user_delegation_key: records each request, returns a fixed key."""

    def __init__(self) -> None:
        self.requests: list[tuple] = []

    def get_user_delegation_key(self, start, expiry):
        from azure.storage.blob import UserDelegationKey

        self.requests.append((start, expiry))
        key = UserDelegationKey()
        key.signed_oid, key.signed_tid = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
        key.signed_start, key.signed_expiry = start.strftime("%Y-%m-%dT%H:%M:%SZ"), expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_service, key.signed_version = "b", "2025-11-05"
        key.value = "ZGVsZWdhdGlvbi1rZXktbm90LXJlYWw="
        return key


def test_azure_ad_signs_a_read_only_blob_sas_with_one_user_delegation_key_per_validity():
    from datetime import UTC, datetime, timedelta
    from urllib.parse import parse_qs, urlsplit

    from curation.ingest.storage import DELEGATION_KEY_SPARE, AzureBlobStorage

    config = AzureStorageConfig(container_name="c", account_name="acct", account_url="https://127.0.0.1:1/acct", azure_ad=True)
    storage = AzureBlobStorage(config, token_credential=FakeTokenCredential())
    fake = FakeDelegationService()
    storage._service = fake
    expiry = datetime.now(UTC) + timedelta(hours=4)
    first, second = storage.sign_url("dir/a.jpg", expiry), storage.sign_url("b.jpg", expiry + timedelta(minutes=5))
    assert len(fake.requests) == 1  # one key signs every URL while it is valid past their expiry
    start, until = fake.requests[0]
    assert start <= datetime.now(UTC) and until >= expiry + DELEGATION_KEY_SPARE - timedelta(seconds=5)
    for url, blob in ((first, "dir/a.jpg"), (second, "b.jpg")):
        assert url.startswith(f"https://127.0.0.1:1/acct/c/{blob}?")
        query = parse_qs(urlsplit(url).query)
        # a read of this blob only (sr=b, sp=r), signed by the delegation key (skoid/sktid), never the account key
        assert query["sp"] == ["r"] and query["sr"] == ["b"] and "sig" in query
        assert query["skoid"] == ["11111111-2222-3333-4444-555555555555"] and query["skt"] and query["ske"]
    storage.sign_url("c.jpg", until + timedelta(minutes=1))  # a SAS that would outlive the key: a fresh one
    assert len(fake.requests) == 2 and fake.requests[1][1] > until
    assert storage.descriptor()["azure_ad"] is True


def test_azure_ad_service_principal_and_environment_choose_the_credential():
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    from curation.ingest.storage import AzureBlobStorage, azure_ad_credential

    secret = "c2VydmljZS1wcmluY2lwYWwtc2VjcmV0"
    principal = AzureStorageConfig(
        container_name="c", account_name="acct", tenant_id="t-1", client_id="app-1", client_secret=SecretStr(secret)
    )
    assert principal.uses_azure_ad() and isinstance(azure_ad_credential(principal), ClientSecretCredential)
    storage = open_storage(principal, Settings())
    assert isinstance(storage, AzureBlobStorage) and storage._service is not None and storage._key is None
    assert secret not in repr(principal) and secret not in principal.model_dump_json() and secret not in str(storage.descriptor())
    assert isinstance(azure_ad_credential(AzureStorageConfig(container_name="c", azure_ad=True)), DefaultAzureCredential)
    with pytest.raises(StorageError, match="tenant_id and client_id"):
        azure_ad_credential(AzureStorageConfig(container_name="c", client_secret=SecretStr(secret)))

    # From the environment: CURATION_AZURE_AD, or a service principal; never with a key beside it.
    bare = AzureStorageConfig(container_name="c", account_name="acct")
    assert bare.with_env_credentials(Settings(azure_ad=True)).uses_azure_ad()
    filled = bare.with_env_credentials(
        Settings(azure_tenant_id="t-2", azure_client_id="app-2", azure_client_secret=SecretStr(secret))
    )
    assert (filled.tenant_id, filled.client_id, filled.client_secret.get_secret_value()) == ("t-2", "app-2", secret)
    with pytest.raises(StorageError, match="exactly one credential"):
        open_storage(bare, Settings(azure_ad=True, azure_account_key=SecretStr("k" * 20)))
    asked = AzureStorageConfig(container_name="c", account_name="acct", azure_ad=True)
    assert asked.with_env_credentials(Settings(azure_account_key=SecretStr("k" * 20))).account_key is None


def test_a_storage_descriptor_rebuilds_the_azure_ad_config_without_its_secret():
    from curation.dataset.registry import DatasetRecord
    from curation.ingest.steps import storage_of

    config = AzureStorageConfig(
        container_name="c", account_name="acct", tenant_id="t", client_id="app", client_secret=SecretStr("s" * 20)
    )
    descriptor = open_storage(config, Settings()).descriptor()
    rebuilt = storage_of(DatasetRecord.model_construct(storage=descriptor))
    assert (rebuilt.tenant_id, rebuilt.client_id, rebuilt.client_secret) == ("t", "app", None)


# --- An unreachable endpoint is reported within ~30 s; a 503 is still retried ----------------------------------

KEY = "c2VjcmV0LWtleS1ub3QtcmVhbA=="


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _azure(port: int) -> AzureStorageConfig:
    return AzureStorageConfig(
        container_name="drives", account_name="acct", account_key=SecretStr(KEY), account_url=f"http://127.0.0.1:{port}/acct"
    )


def test_the_azure_clients_retries_and_timeouts_bound_an_unreachable_endpoint_to_30_s():
    """Issue #17: the SDK's defaults took 327 s to report a down endpoint. The bound is computed from the policy the
    client really carries, never timed."""
    storage = open_storage(_azure(_closed_port()), Settings())
    policy = storage.container._config.retry_policy  # type: ignore[attr-defined]
    connect_timeout = storage.container._pipeline._transport.connection_config.timeout  # type: ignore[attr-defined]
    attempts = 1 + min(policy.total_retries, policy.connect_retries)
    backoffs = sum(
        policy.initial_backoff + (0 if n == 0 else policy.increment_base**n) + policy.random_jitter_range
        for n in range(attempts - 1)
    )
    assert attempts * connect_timeout + backoffs <= 30, (attempts, connect_timeout, backoffs)
    assert policy.status_retries >= 3 and policy.total_retries >= 3  # a 503 mid-run still gets retries


def test_a_closed_port_is_a_one_line_unreachable_error_after_three_connection_attempts(monkeypatch):
    from types import SimpleNamespace

    import urllib3.util.connection as connection

    from curation.ingest import storage
    from curation.tasks.curation_tasks import _worth_listing_again

    attempts: list[object] = []
    real = connection.create_connection

    def counting(address, *args, **kwargs):  # every TCP connection the Azure client opens
        attempts.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(connection, "create_connection", counting)
    monkeypatch.setattr(storage, "AZURE_CLIENT_KWARGS", {"initial_backoff": 0, "increment_base": 0, "random_jitter_range": 0})
    port = _closed_port()
    with pytest.raises(StorageError) as raised:
        list(open_storage(_azure(port), Settings()).list_blobs())
    error = raised.value
    assert str(error) == f"cannot list container 'drives': could not reach http://127.0.0.1:{port} (Connection refused)"
    assert error.unreachable and error.transient and KEY not in str(error)
    assert len(attempts) == 1 + storage.AZURE_RETRIES_AND_TIMEOUTS["retry_connect"] == 3
    # The list-images task does not try again: the client's attempts are the whole bound.
    assert not _worth_listing_again(None, None, SimpleNamespace(data=error))


def test_a_503_is_retried_by_the_client_and_then_by_the_listing_task(monkeypatch):
    import http.server
    import threading
    from types import SimpleNamespace

    from curation.ingest import storage
    from curation.tasks.curation_tasks import _worth_listing_again

    class Busy(http.server.BaseHTTPRequestHandler):
        requests = 0

        def do_GET(self) -> None:
            type(self).requests += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(storage, "AZURE_CLIENT_KWARGS", {"initial_backoff": 0, "increment_base": 0, "random_jitter_range": 0})
    try:
        with pytest.raises(StorageError) as raised:
            list(open_storage(_azure(server.server_port), Settings()).list_blobs())
    finally:
        server.shutdown()
    error = raised.value
    assert Busy.requests == 1 + storage.AZURE_RETRIES_AND_TIMEOUTS["retry_status"] == 4
    assert error.transient and not error.unreachable and KEY not in str(error)
    assert _worth_listing_again(None, None, SimpleNamespace(data=error))


class _NoToken:
    """An Azure AD credential that finds no sign-in, as DefaultAzureCredential does on a machine with none."""

    def get_token(self, *scopes, **kwargs):
        from azure.identity import CredentialUnavailableError

        raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
                                         "Attempted credentials:\n\tEnvironmentCredential: unavailable.")

    get_token_info = get_token


def test_azure_ad_without_a_sign_in_is_one_line_saying_how_to_sign_in():
    from curation.ingest.storage import AzureBlobStorage

    config = AzureStorageConfig(container_name="c", account_name="acct", account_url="https://127.0.0.1:1/acct", azure_ad=True)
    storage = AzureBlobStorage(config, token_credential=_NoToken())
    with pytest.raises(StorageError) as raised:
        list(storage.list_blobs())
    message = str(raised.value)
    assert message == ("cannot list container 'c': Azure AD sign-in failed (DefaultAzureCredential failed to retrieve a "
                       "token from the included credentials): sign in with `az login`, run where a managed identity is "
                       "assigned, or set CURATION_AZURE_TENANT_ID, CURATION_AZURE_CLIENT_ID and "
                       "CURATION_AZURE_CLIENT_SECRET for a service principal; or use an account key or SAS instead of "
                       "Azure AD")
    assert not raised.value.transient


def test_a_refused_azure_ad_token_names_the_roles_it_needs():
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

    from curation.ingest.storage import azure_ad_failure

    refused = ClientAuthenticationError("This request is not authorized to perform this operation using this permission.\nRequestId:1")
    refused.status_code = 403
    assert azure_ad_failure(refused) == (
        "the storage refused the Azure AD token (HTTP 403: This request is not authorized to perform this operation "
        "using this permission); the identity needs the Storage Blob Data Reader role on the container, and Storage "
        "Blob Delegator on the account to sign image URLs")
    assert azure_ad_failure(HttpResponseError("500")) is None


def test_cli_azure_ad_goes_with_a_container_only(tmp_path):
    from typer.testing import CliRunner

    from curation import cli

    result = CliRunner().invoke(cli.app, ["curate", "--name", "x", "--local", str(tmp_path), "--azure-ad"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --azure-ad signs in to Azure Storage: use it with --container, not --local"
