"""pytest plugin (entry point ``pytest11``): fixtures the contracts share."""

from __future__ import annotations

import pytest

from lipkit.specs import DeviceInfo


@pytest.fixture
def cpu_device() -> DeviceInfo:
    """A CPU device description for loading implementations in tests."""
    return DeviceInfo(
        id="cpu", kind="cpu", name="conformance cpu", total_memory=8 << 30, free_memory=8 << 30
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``lipkit_contract`` marker every contract test carries."""
    config.addinivalue_line("markers", "lipkit_contract: a test from the lipkit conformance kit")
