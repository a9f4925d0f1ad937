"""Quality's settings: the shared worker settings plus the SPC baseline and the machine study window."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.common.settings import Settings, env_int
from services.quality.model import DEFAULT_BASELINE, DEFAULT_MACHINE_STUDY_VALUES, SERVICE


@dataclass(frozen=True)
class QualitySettings:
    baseline: int = DEFAULT_BASELINE                          # subgroups whose limits start a chart without plan sigma
    machine_study_values: int = DEFAULT_MACHINE_STUDY_VALUES  # values of a period's machine study (Cm, Cmk)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QualitySettings:
        env = os.environ if env is None else env
        baseline = env_int(env, "MOM_QUALITY_BASELINE_SUBGROUPS", DEFAULT_BASELINE)
        window = env_int(env, "MOM_QUALITY_MACHINE_STUDY_VALUES", DEFAULT_MACHINE_STUDY_VALUES)
        if baseline < 2:
            raise ValueError(f"MOM_QUALITY_BASELINE_SUBGROUPS must be at least 2, got {baseline}")
        if window < 2:
            raise ValueError(f"MOM_QUALITY_MACHINE_STUDY_VALUES must be at least 2, got {window}")
        return cls(baseline=baseline, machine_study_values=window)


def from_env() -> Settings:
    return Settings.from_env(SERVICE)
