"""Maintenance's settings: the shared worker settings plus the failure rules and condition limits."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import timedelta

from services.common.settings import Settings, SettingsError, env_float
from services.maintenance.model import DEFAULT_NON_TECHNICAL, SERVICE, ConditionLimit, Rules


def condition_limits(raw: str) -> tuple[ConditionLimit, ...]:
    """MOM_MAINTENANCE_CONDITION_LIMITS: a JSON list of
    {"parameter", "low"?, "high"?, "for_s"?, "equipment_prefix"?} objects."""
    try:
        items = json.loads(raw or "[]")
        if not isinstance(items, list):
            raise TypeError("not a list")
        limits = tuple(ConditionLimit(parameter=str(i["parameter"]),
                                      low=None if i.get("low") is None else float(i["low"]),
                                      high=None if i.get("high") is None else float(i["high"]),
                                      for_s=float(i.get("for_s", 0.0)),
                                      equipment_prefix=str(i.get("equipment_prefix", ""))) for i in items)
    except (ValueError, TypeError, KeyError) as exc:
        raise SettingsError(f"MOM_MAINTENANCE_CONDITION_LIMITS: must be a JSON list of objects with a "
                            f"parameter and a low and/or high limit ({exc})") from exc
    for limit in limits:
        if limit.low is None and limit.high is None:
            raise SettingsError(f"MOM_MAINTENANCE_CONDITION_LIMITS: {limit.parameter} needs a low or a high limit")
        if limit.for_s < 0:
            raise SettingsError(f"MOM_MAINTENANCE_CONDITION_LIMITS: {limit.parameter}.for_s must not be negative")
    return limits


def rules_from_env(env: Mapping[str, str] | None = None) -> Rules:
    env = os.environ if env is None else env
    reasons = env.get("MOM_MAINTENANCE_NON_TECHNICAL_REASONS")
    return Rules(
        minor_stop=timedelta(seconds=env_float(env, "MOM_MAINTENANCE_MINOR_STOP_S", 120.0)),
        non_technical_reasons=(DEFAULT_NON_TECHNICAL if reasons is None
                               else frozenset(r.strip().upper() for r in reasons.split(",") if r.strip())),
        condition_limits=condition_limits(env.get("MOM_MAINTENANCE_CONDITION_LIMITS", "[]")),
    )


def from_env() -> Settings:
    return Settings.from_env(SERVICE)
