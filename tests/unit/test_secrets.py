from __future__ import annotations

from pydantic import SecretStr

from curation.secrets import redact, strip_query


def test_redact_masks_given_secrets_signatures_account_keys_and_bearer_tokens():
    text = (
        "key=abcd1234secret url=http://h/c/b.jpg?sv=1&sig=XYZ%2Fabc&se=2 "
        "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=Zm9vYmFy==;BlobEndpoint=x Bearer tok123"
    )
    out = redact(text, [SecretStr("abcd1234secret")])
    for secret in ("abcd1234secret", "XYZ%2Fabc", "Zm9vYmFy==", "tok123"):
        assert secret not in out
    assert "sig=***" in out and "AccountKey=***" in out


def test_strip_query():
    assert strip_query("http://h/c/b.jpg?sv=1&sig=x") == "http://h/c/b.jpg"
