"""Execution's settings: the shared worker settings; execution adds none of its own yet."""
from __future__ import annotations

from services.common.settings import Settings

SERVICE = "execution"


def from_env() -> Settings:
    return Settings.from_env(SERVICE)
