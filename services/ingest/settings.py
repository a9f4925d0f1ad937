"""Ingest's frozen settings: the common ones plus bearer tokens and request limits, read once."""
from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.settings import Settings, SettingsError, env_float, env_int

SERVICE = "ingest"
DEFAULT_CLIENT_NAME = "client"  # the name of a bare token in MOM_INGEST_TOKENS
HASH_PREFIX = "sha256:"           # a token kept as the hex SHA-256 of the token, not the token itself
_HASHED = re.compile(r"sha256:[0-9a-f]{64}\Z")
_MIN_TOKEN_LENGTH = 16            # a shorter (plain) token is refused: guessable


@dataclass(frozen=True)
class ClientToken:
    name: str                               # becomes the `source` of what the client sends
    token: str = field(repr=False)          # never in logs or reprs; empty when only the hash is known
    sha256: bytes = field(default=b"", repr=False)  # the token's SHA-256 digest when configured hashed

    @property
    def hashed(self) -> bool:
        return bool(self.sha256)


def hash_token(token: str) -> str:
    """The `sha256:<hex>` form of a token, as MOM_INGEST_TOKENS accepts it."""
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _client_token(name: str, secret: str) -> ClientToken:
    if _HASHED.match(secret):
        return ClientToken(name, "", bytes.fromhex(secret[len(HASH_PREFIX):]))
    if secret.startswith(HASH_PREFIX):
        raise SettingsError(f"MOM_INGEST_TOKENS: the token of {name!r} starts with {HASH_PREFIX} but is not "
                            "64 lower-case hex digits (make one with `mom token hash`)")
    if len(secret) < _MIN_TOKEN_LENGTH:
        raise SettingsError(f"MOM_INGEST_TOKENS: the token of {name!r} has fewer than {_MIN_TOKEN_LENGTH} "
                            "characters (make one with `mom token hash`)")
    return ClientToken(name, secret)


def parse_tokens(raw: str) -> tuple[ClientToken, ...]:
    """`name:token,name2:sha256:<hex>` (a bare `token` or `sha256:<hex>` is named `client`).

    The first colon splits the name from the token. A token written `sha256:<64 hex digits>` is the
    SHA-256 of the real token (`mom token hash` prints both), so the configuration holds no secret.
    """
    tokens = []
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        if _HASHED.match(entry):
            name, token = DEFAULT_CLIENT_NAME, entry
        else:
            name, sep, token = entry.partition(":")
            if not sep:
                name, token = DEFAULT_CLIENT_NAME, entry
        name, token = name.strip(), token.strip()
        if not name or not token:
            raise SettingsError("MOM_INGEST_TOKENS: each entry must be `name:token`, `name:sha256:<hex>` "
                                "or a bare token")
        tokens.append(_client_token(name, token))
    return tuple(tokens)


@dataclass(frozen=True)
class IngestSettings:
    common: Settings
    tokens: tuple[ClientToken, ...] = field(repr=False)
    max_events: int = 10_000          # items per request (413 above)
    max_bytes: int = 10_485_760       # request body size (413 above)
    max_string_length: int = 1024     # longest string in an event's body fields (the item is refused above)
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
            max_string_length=env_int(env, "MOM_INGEST_MAX_STRING_LENGTH", 1024, minimum=1),
            max_future_s=env_float(env, "MOM_INGEST_MAX_FUTURE_S", 300.0),
            ack_timeout_s=env_float(env, "MOM_INGEST_ACK_TIMEOUT_S", 30.0, minimum=0.001),
        )
