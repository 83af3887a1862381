from collections.abc import Iterator

import pytest

from tests.azurite import AzuriteEndpoint, run_azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteEndpoint]:
    """One Azurite blob emulator for the whole test session (fresh data dir)."""
    with run_azurite(tmp_path_factory.mktemp("azurite")) as endpoint:
        yield endpoint
