"""Fixtures of the HTTP tests that several of their modules use."""
from __future__ import annotations

import pytest

from helpers import client_for


@pytest.fixture(scope="module")
def client(mock_server):
    """The official OpenAI client on the shared mock server."""
    return client_for(mock_server)
