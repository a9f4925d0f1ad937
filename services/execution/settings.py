"""Execution's settings: the shared worker settings plus the lateness and the minor-stop threshold."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from services.common.settings import Settings, env_float

SERVICE = "execution"


@dataclass(frozen=True)
class ExecutionSettings:
    lateness: timedelta = timedelta(hours=24)     # events later than this behind a unit's clock revise nothing
    minor_stop: timedelta = timedelta(seconds=120)  # an unplanned stop shorter than this is a minor stop

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ExecutionSettings:
        env = os.environ if env is None else env
        return cls(
            lateness=timedelta(seconds=env_float(env, "MOM_EXECUTION_LATENESS_S", 86400.0)),
            minor_stop=timedelta(seconds=env_float(env, "MOM_EXECUTION_MINOR_STOP_S", 120.0)),
        )


def from_env() -> Settings:
    return Settings.from_env(SERVICE)
