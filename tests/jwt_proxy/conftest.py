"""Fixtures of the proxy's tests that several of their modules use."""
from __future__ import annotations

import pytest

from helpers import start_proxy
from net import free_port
from stub_upstream import start_stub


@pytest.fixture(scope="module")
def upstream():
    """A stand-in for the API behind a proxy under test (stub_upstream.py), one per module."""
    with start_stub(free_port()) as stub:
        yield stub


@pytest.fixture(scope="module")
def proxy_to_nowhere():
    """A proxy whose upstream port has nothing listening (health is 502, so wait on /metrics)."""
    with start_proxy(f"http://127.0.0.1:{free_port()}", health_path="/metrics") as server:
        yield server
