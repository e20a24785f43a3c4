import pytest

from harness import MockLLM


@pytest.fixture(scope="session")
def mock():
    m = MockLLM()
    yield m
    m.stop()


@pytest.fixture
def fresh_mock(mock):
    mock.clear()
    return mock
