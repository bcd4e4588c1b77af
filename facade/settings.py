"""The facade's settings: the server and call-policy pieces, and where its downstreams are."""

from __future__ import annotations

from dataclasses import dataclass, field

from resilience import CallPolicySettings, EventSettings, ServerSettings, SettingsError, between, is_http_url


@dataclass(frozen=True)
class FacadeSettings(EventSettings, CallPolicySettings, ServerSettings):
    """Everything the facade reads from the environment (see the README's configuration table).

    honcho's ``PORT`` is deliberately not read, so the assignment's ports hold under ``honcho start``.
    With ``NATS_URLS`` each message is also published as an event, and reads list the messages
    service's messages.
    """

    facade_port: int = between(5000, 0, 65535)
    logging_url: str = "http://127.0.0.1:5001"
    messages_url: str = "http://127.0.0.1:5002"
    # Replicas of logging, comma-separated; when set, LOGGING_URL is not used.
    logging_urls: str = ""
    # Instances of messages, comma-separated; when set, MESSAGES_URL is not used.
    messages_urls: str = ""
    # The longest message and the largest page (logging's contract; the same on both sides).
    max_msg_chars: int = 10_000
    max_page_bytes: int = 1024 * 1024
    # The facade answers 503 at once past this many requests in flight...
    max_in_flight: int = 256
    # ... and while its event loop has been more than this many seconds behind for a second.
    max_loop_lag: float = 0.5
    # Replies being written to clients: at most this many bytes at once (past it, a large reply
    # is refused 503), each sent within this many seconds (past it, its connection is cut).
    max_reply_bytes: int = 64 * 1024 * 1024
    reply_send_timeout: float = 10.0
    # Maps Idempotency-Keys to UUIDs; empty: derived from rpc_secret (see facade/ids.py).
    idempotency_secret: str = field(default="", repr=False)

    def validate(self) -> None:
        super().validate()
        for name in ("logging_url", "messages_url"):
            if not is_http_url(getattr(self, name)):
                raise SettingsError(f"{name.upper()} must be an http:// or https:// URL")
        for name, replicas in (("LOGGING_URLS", self.logging_replicas()),
                               ("MESSAGES_URLS", self.messages_replicas())):
            if not all(is_http_url(url) for url in replicas):
                raise SettingsError(f"{name} must be a comma-separated list of http:// or https:// URLs")
            if len(set(replicas)) != len(replicas):
                raise SettingsError(f"{name} names a replica twice")

    def logging_replicas(self) -> tuple[str, ...]:
        """The logging replicas the facade balances over: ``LOGGING_URLS``, else ``LOGGING_URL``."""
        return _replicas(self.logging_urls, self.logging_url)

    def messages_replicas(self) -> tuple[str, ...]:
        """The messages instances the facade balances over: ``MESSAGES_URLS``, else ``MESSAGES_URL``."""
        return _replicas(self.messages_urls, self.messages_url)


def _replicas(listed: str, single: str) -> tuple[str, ...]:
    urls = tuple(url.strip().rstrip("/") for url in listed.split(",") if url.strip())
    return urls or (single.rstrip("/"),)
