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
