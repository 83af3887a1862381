"""Keep secrets out of messages: redact known secret values and SAS signatures from any text."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import SecretStr

# A SAS query string carries its signature in `sig=`; any URL query may carry one, so drop it whole.
_SIG = re.compile(r"(?i)\bsig=[^&\s'\"]+")
_ACCOUNT_KEY = re.compile(r"(?i)(AccountKey=)[^;\s'\"]+")
_BEARER = re.compile(r"(?i)(Bearer\s+)[^\s'\"]+")


def redact(text: str, secrets: Iterable[SecretStr | str | None] = ()) -> str:
    """Return text with the given secret values, SAS signatures, account keys and bearer tokens masked."""
    for secret in secrets:
        value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    text = _SIG.sub("sig=***", text)
    text = _ACCOUNT_KEY.sub(r"\1***", text)
    return _BEARER.sub(r"\1***", text)


def strip_query(url: str) -> str:
    """A URL without its query string, for messages about a signed URL."""
    return url.split("?", 1)[0]
