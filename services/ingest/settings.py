"""Ingest's frozen settings: the common ones plus bearer tokens and request limits, read once."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.settings import Settings, SettingsError, env_float, env_int

SERVICE = "ingest"
DEFAULT_CLIENT_NAME = "client"  # the name of a bare token in MOM_INGEST_TOKENS


@dataclass(frozen=True)
class ClientToken:
    name: str                               # becomes the `source` of what the client sends
    token: str = field(repr=False)          # never in logs or reprs


def parse_tokens(raw: str) -> tuple[ClientToken, ...]:
    """`name:token,name2:token2` (a bare `token` is named `client`); the first colon splits."""
    tokens = []
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, token = entry.partition(":")
        if not sep:
            name, token = DEFAULT_CLIENT_NAME, entry
        name, token = name.strip(), token.strip()
        if not name or not token:
            raise SettingsError("MOM_INGEST_TOKENS: each entry must be `name:token` or a bare token")
        tokens.append(ClientToken(name, token))
    return tuple(tokens)


@dataclass(frozen=True)
class IngestSettings:
    common: Settings
    tokens: tuple[ClientToken, ...] = field(repr=False)
    max_events: int = 10_000          # items per request (413 above)
    max_bytes: int = 10_485_760       # request body size (413 above)
    max_future_s: float = 300.0       # occurred_at may be this far ahead of arrival (clock skew)
    ack_timeout_s: float = 30.0       # wait for Kafka's acknowledgements before answering 503
    ready_timeout_s: float = 5.0      # /readyz: the broker must answer metadata within this
    ready_cache_s: float = 2.0        # /readyz: how long an answer is reused

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IngestSettings:
        env = os.environ if env is None else env
        tokens = parse_tokens(env.get("MOM_INGEST_TOKENS", ""))
        if not tokens:
            # Fail closed and loudly: an ingest that answers 401 to everyone looks healthy but is not.
            raise SettingsError("MOM_INGEST_TOKENS is empty: set `name:token` pairs (comma-separated)")
        return cls(
            common=Settings.from_env(SERVICE, env),
            tokens=tokens,
            max_events=env_int(env, "MOM_INGEST_MAX_EVENTS", 10_000, minimum=1),
            max_bytes=env_int(env, "MOM_INGEST_MAX_BYTES", 10_485_760, minimum=1),
            max_future_s=env_float(env, "MOM_INGEST_MAX_FUTURE_S", 300.0),
            ack_timeout_s=env_float(env, "MOM_INGEST_ACK_TIMEOUT_S", 30.0, minimum=0.001),
        )
