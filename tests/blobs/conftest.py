"""A SeaweedFS of this package's tests (module scope: one server per test module that asks for it)."""

from __future__ import annotations

import pytest

from servers import PrivateSeaweedFS


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    with PrivateSeaweedFS(tmp_path_factory.mktemp("seaweed"), buckets=("emotionq",)) as server:
        yield server
