"""Settings: each service's own, built from the library's pieces; read once from the environment,
typed, validated, frozen."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from facade.settings import FacadeSettings
from logging_service.settings import LoggingSettings
from messages.settings import MessagesSettings
from resilience import SettingsError, downstream_policies
from resilience.policies.window import MAX_SLICES
from resilience.settings import at_least, between


def test_defaults_are_the_assignments() -> None:
    """With nothing set, the ports and URLs are the assignment's, bound to loopback."""
    facade, logging, messages = (cls.from_env({}) for cls in (FacadeSettings, LoggingSettings,
                                                               MessagesSettings))
    assert (facade.facade_port, logging.logging_port, messages.messages_port) == (5000, 5001, 5002)
    assert facade.logging_url == f"http://127.0.0.1:{logging.logging_port}"
    assert facade.messages_url == f"http://127.0.0.1:{messages.messages_port}"
    assert facade.host == logging.host == messages.host == "127.0.0.1"


def test_honchos_port_is_ignored() -> None:
    """honcho sets PORT for every process; the services keep their own ports."""
    assert FacadeSettings.from_env({"PORT": "5100"}).facade_port == 5000


def test_values_are_parsed_to_their_types() -> None:
    """Numbers arrive as numbers, strings as strings."""
    settings = FacadeSettings.from_env({"FACADE_PORT": "7000", "RETRY_DEADLINE": "2.5",
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
    ({"HOST": "999.1.1.1"}, "HOST must be an IP address or a host name, not '999.1.1.1'"),
    ({"HOST": ""}, "HOST must be an IP address or a host name"),
    # Zero or less means nothing for a count, a size or a duration; where zero means
    # something (a port the OS picks, no backoff), below it is still refused.
    ({"RETRY_DEADLINE": "0"}, "RETRY_DEADLINE must be positive, not 0.0"),
    ({"BODY_READ_TIMEOUT": "-1"}, "BODY_READ_TIMEOUT must be positive, not -1.0"),
    ({"MAX_IN_FLIGHT": "0"}, "MAX_IN_FLIGHT must be positive, not 0"),
    ({"MAX_PAGE_BYTES": "-5"}, "MAX_PAGE_BYTES must be positive, not -5"),
    ({"RETRY_BACKOFF_BASE": "-0.1"}, "RETRY_BACKOFF_BASE must be 0 or more, not -0.1"),
    ({"SHUTDOWN_TIMEOUT": "-1"}, "SHUTDOWN_TIMEOUT must be 0 or more"),
    ({"BREAKER_FAILURE_RATE": "0"}, "BREAKER_FAILURE_RATE must be above 0 and at most 1, not 0.0"),
    ({"BREAKER_SLOW_CALL_RATE": "1.5"}, "BREAKER_SLOW_CALL_RATE must be above 0 and at most 1"),
    ({"RETRY_BUDGET_FLOOR": "-1"}, "RETRY_BUDGET_FLOOR must be 0 or more"),
    ({"BREAKER_FAST_WINDOW": "20"}, "BREAKER_FAST_WINDOW must not exceed BREAKER_WINDOW"),
    # Numbers are ASCII: int() and float() would take other scripts' digits.
    ({"FACADE_PORT": "\u0661"}, "FACADE_PORT='\u0661' is not a valid int: write numbers in ASCII"),
    ({"RETRY_ATTEMPTS": "\uff11\uff10"}, "RETRY_ATTEMPTS='\uff11\uff10' is not a valid int: write"),
    ({"RPC_TIMEOUT": "\uff11.5"}, "RPC_TIMEOUT='\uff11.5' is not a valid float: write numbers in ASCII"),
    ({"RPC_TIMEOUT": "1\u00a0"}, "not a valid float: write numbers in ASCII"),
])
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str], says: str) -> None:
    """A bad value names its variable, so the one-line startup error says what to fix."""
    with pytest.raises(SettingsError, match=says):
        FacadeSettings.from_env(env)


@pytest.mark.parametrize(("env", "says"), [
    ({"LOGGING_STORE": "redis"}, "LOGGING_STORE must be memory or a redis://"),
    ({"LOGGING_STORE": "http://127.0.0.1:6390"}, "LOGGING_STORE must be"),
    ({"LOGGING_STORE": "redis://127.0.0.1:port/0"}, "LOGGING_STORE must be"),
    ({"LOGGING_PORT": "-1"}, "LOGGING_PORT must be between 0 and 65535, not -1"),
    ({"HOST": ""}, "HOST must be an IP address or a host name"),
])
def test_logging_refuses_its_own_bad_values(env: dict[str, str], says: str) -> None:
    """logging's settings check its fields and the server piece's."""
    with pytest.raises(SettingsError, match=says):
        LoggingSettings.from_env(env)


def test_a_service_reads_only_its_own_variables() -> None:
    """messages has no call policy: a bad RPC_TIMEOUT is not its business; the facade refuses it."""
    assert MessagesSettings.from_env({"RPC_TIMEOUT": "nan"}).messages_port == 5002
    with pytest.raises(SettingsError, match="RPC_TIMEOUT"):
        FacadeSettings.from_env({"RPC_TIMEOUT": "nan"})


@pytest.mark.parametrize("store", ["memory", "redis://127.0.0.1:6390/0", "rediss://u:p@cache:6380/1",
                                   "unix:///run/redis.sock?db=2"])
def test_logging_store_is_memory_or_a_redis_url(store: str) -> None:
    """LOGGING_STORE takes the in-memory store's name or a URL redis-py can open."""
    assert LoggingSettings.from_env({"LOGGING_STORE": store}).logging_store == store


def test_a_bad_logging_store_is_not_echoed() -> None:
    """The refusal does not repeat the value: a Redis URL may carry a password."""
    with pytest.raises(SettingsError) as refused:
        LoggingSettings.from_env({"LOGGING_STORE": "redis://user:s3cret@host:port"})
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(("env", "says"), [
    ({"BREAKER_WINDOW": "1e300"}, "BREAKER_WINDOW must be at most 5000 times BREAKER_FAST_WINDOW "
                                  "(5000 s), not 1e+300"),
    ({"BREAKER_WINDOW": "1e6"}, "(5000 s), not 1e+06"),
    ({"BREAKER_WINDOW": "5000.5"}, "(5000 s), not 5000.5"),
    ({"BREAKER_WINDOW": "1e300", "BREAKER_FAST_WINDOW": "1e-300"}, "(5e-297 s), not 1e+300"),
    ({"BREAKER_FAST_WINDOW": "0.001"}, "(5 s), not 10"),
])
def test_a_breaker_window_of_too_many_slices_is_refused(env: dict[str, str], says: str) -> None:
    """The breaker allocates its window's slices (half BREAKER_FAST_WINDOW each) at start: a
    BREAKER_WINDOW of more than MAX_SLICES of them is refused, saying the cap."""
    with pytest.raises(SettingsError, match=re.escape(says)) as refused:
        FacadeSettings.from_env(env)
    assert f"at most {MAX_SLICES} of them" in str(refused.value)


def test_the_longest_breaker_window_accepted_builds_its_breakers() -> None:
    """FacadeSettings and the breaker agree on the cap: at exactly MAX_SLICES slices, the facade's
    policies are built."""
    settings = FacadeSettings.from_env({"BREAKER_WINDOW": str(MAX_SLICES / 2)})
    policies = downstream_policies("logging", [settings.logging_url], settings, ("write", "read"))
    assert [policy.breakers[0].rule.window for policy in policies.values()] == [MAX_SLICES / 2] * 2


def test_ascii_numbers_in_any_form_python_writes_them_are_read() -> None:
    """Only the script is checked: signs, exponents and surrounding spaces still parse."""
    settings = FacadeSettings.from_env({"RPC_TIMEOUT": " 1.5e0 ", "RETRY_ATTEMPTS": "+3"})
    assert (settings.rpc_timeout, settings.retry_attempts) == (1.5, 3)


def test_settings_are_frozen() -> None:
    """Read once, never changed afterwards."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        FacadeSettings().facade_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(("value", "shown"), [("nan", "nan"), ("NaN", "nan"), ("inf", "inf"),
                                              ("-inf", "-inf"), ("Infinity", "inf")])
def test_a_float_setting_must_be_finite(value: str, shown: str) -> None:
    """NaN and the infinities parse as floats, but no duration or rate means them: refused."""
    with pytest.raises(SettingsError, match=f"RPC_TIMEOUT must be a finite number, not {shown}$"):
        FacadeSettings.from_env({"RPC_TIMEOUT": value})


@pytest.mark.parametrize("name", [field.name.upper() for field in dataclasses.fields(FacadeSettings)
                                  if field.type == "float"])
def test_every_float_setting_refuses_nan(name: str) -> None:
    """No float setting lets NaN through, whichever it is (none is checked by name)."""
    with pytest.raises(SettingsError, match=f"{name} must be a finite number"):
        FacadeSettings.from_env({name: "nan"})


def test_zero_is_accepted_where_it_means_something() -> None:
    """No backoff, no shutdown grace, a port the OS picks, no retries beyond the floor: zero is a
    real choice for these."""
    settings = FacadeSettings.from_env({"RETRY_BACKOFF_BASE": "0", "RETRY_BACKOFF_MAX": "0",
                                  "SHUTDOWN_TIMEOUT": "0", "FACADE_PORT": "0",
                                  "RETRY_BUDGET_RATIO": "0"})
    assert (settings.retry_backoff_base, settings.shutdown_timeout, settings.facade_port) == (0, 0, 0)


def test_a_new_numeric_field_is_checked_without_being_listed() -> None:
    """Checks follow the field's type and metadata, so a field added later is checked for free."""

    @dataclasses.dataclass(frozen=True, slots=True)
    class Extended(FacadeSettings):
        window: float = 10.0
        share: float = between(0.5, 0, 1)
        spare: int = at_least(0, 0)

    assert Extended.from_env({"WINDOW": "2.5", "SPARE": "0"}).window == 2.5
    for env, says in [({"WINDOW": "inf"}, "WINDOW must be a finite number"),
                      ({"WINDOW": "0"}, "WINDOW must be positive"),
                      ({"SHARE": "1.5"}, "SHARE must be between 0 and 1"),
                      ({"SPARE": "-1"}, "SPARE must be 0 or more")]:
        with pytest.raises(SettingsError, match=says):
            Extended.from_env(env)


def test_secrets_stay_out_of_the_repr() -> None:
    """A settings object printed or logged never shows RPC_SECRET or IDEMPOTENCY_SECRET."""
    text = repr(FacadeSettings.from_env({"RPC_SECRET": "hunter2", "IDEMPOTENCY_SECRET": "swordfish"}))
    assert "hunter2" not in text
    assert "swordfish" not in text


@pytest.mark.parametrize(("service", "env", "says"), [
    ("messages", {"HOST": "999.1.1.1"}, "HOST must be an IP address or a host name, not '999.1.1.1' "
                                        "(0.0.0.0 binds every IPv4 interface)"),
    ("messages", {"BODY_READ_TIMEOUT": "nan"}, "BODY_READ_TIMEOUT must be a finite number, not nan"),
    ("messages", {"MESSAGES_PORT": "\u0661"}, "MESSAGES_PORT='\u0661' is not a valid int: write numbers "
                                              "in ASCII digits"),
    # The facade is what builds breakers: without the cap it would start allocating.
    ("facade", {"BREAKER_WINDOW": "1e300"}, "BREAKER_WINDOW must be at most 5000 times "
                                            "BREAKER_FAST_WINDOW (5000 s), not 1e+300: the breaker "
                                            "counts calls in slices of half BREAKER_FAST_WINDOW and "
                                            f"keeps at most {MAX_SLICES} of them"),
])
def test_a_bad_value_stops_the_process_with_one_line(service: str, env: dict[str, str], says: str) -> None:
    """The real process prints one line naming the variable, logs nothing, and exits 2."""
    done = subprocess.run([sys.executable, "-m", service], env={f"{service.upper()}_PORT": "0", **env},
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"{service}: configuration error: {says}\n"
