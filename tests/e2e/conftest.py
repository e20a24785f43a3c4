import pytest

from harness import MockLLM
from mcp_world import mcp1_python, mcp_world  # noqa: F401  (session fixtures of the MCP tests)


@pytest.fixture(scope="session")
def mock():
    m = MockLLM()
    yield m
    m.stop()


@pytest.fixture
def fresh_mock(mock):
    mock.clear()
    return mock
