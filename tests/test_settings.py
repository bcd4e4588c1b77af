"""Settings: read once from the environment, typed, validated, frozen."""

from __future__ import annotations

import dataclasses

import pytest

from resilience import Settings, SettingsError


def test_defaults_are_the_assignments() -> None:
    """With nothing set, the ports and URLs are the assignment's, bound to loopback."""
    settings = Settings.from_env({})
    assert (settings.facade_port, settings.logging_port, settings.messages_port) == (5000, 5001, 5002)
    assert settings.logging_url == f"http://127.0.0.1:{settings.logging_port}"
    assert settings.messages_url == f"http://127.0.0.1:{settings.messages_port}"
    assert settings.host == "127.0.0.1"


def test_honchos_port_is_ignored() -> None:
    """honcho sets PORT for every process; the services keep their own ports."""
    assert Settings.from_env({"PORT": "5100"}).facade_port == 5000


def test_values_are_parsed_to_their_types() -> None:
    """Numbers arrive as numbers, strings as strings."""
    settings = Settings.from_env({"FACADE_PORT": "7000", "RETRY_DEADLINE": "2.5",
                                  "LOG_FORMAT": "json", "LOGGING_URL": "http://10.0.0.1:1"})
    assert settings.facade_port == 7000
    assert settings.retry_deadline == 2.5
    assert settings.log_format == "json"
    assert settings.logging_url == "http://10.0.0.1:1"


@pytest.mark.parametrize(("env", "says"), [
    ({"FACADE_PORT": "x"}, "FACADE_PORT='x' is not a valid int"),
    ({"FACADE_PORT": "70000"}, "between 0 and 65535"),
    ({"RETRY_ATTEMPTS": "0"}, "RETRY_ATTEMPTS must be positive"),
    ({"RPC_TIMEOUT": "soon"}, "not a valid float"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be debug, info, warning, error or critical, not 'loud'"),
    ({"LOGGING_URL": "127.0.0.1:8000"}, "http:// or https://"),
    ({"LOGGING_STORE": "redis"}, "LOGGING_STORE must be memory or a redis://"),
    ({"LOGGING_STORE": "http://127.0.0.1:6390"}, "LOGGING_STORE must be"),
    ({"LOGGING_STORE": "redis://127.0.0.1:port/0"}, "LOGGING_STORE must be"),
])
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str], says: str) -> None:
    """A bad value names its variable, so the one-line startup error says what to fix."""
    with pytest.raises(SettingsError, match=says):
        Settings.from_env(env)


@pytest.mark.parametrize("store", ["memory", "redis://127.0.0.1:6390/0", "rediss://u:p@cache:6380/1",
                                   "unix:///run/redis.sock?db=2"])
def test_logging_store_is_memory_or_a_redis_url(store: str) -> None:
    """LOGGING_STORE takes the in-memory store's name or a URL redis-py can open."""
    assert Settings.from_env({"LOGGING_STORE": store}).logging_store == store


def test_a_bad_logging_store_is_not_echoed() -> None:
    """The refusal does not repeat the value: a Redis URL may carry a password."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"LOGGING_STORE": "redis://user:s3cret@host:port"})
    assert "s3cret" not in str(refused.value)


def test_settings_are_frozen() -> None:
    """Read once, never changed afterwards."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().facade_port = 1  # type: ignore[misc]
