"""Maintenance's configuration: the failure rules and condition limits read from the environment."""
from __future__ import annotations

from datetime import timedelta

import pytest

from services.common.settings import SettingsError
from services.maintenance.model import DEFAULT_NON_TECHNICAL, ConditionLimit
from services.maintenance.settings import rules_from_env


def test_defaults():
    rules = rules_from_env({})
    assert rules.minor_stop == timedelta(seconds=120)
    assert rules.non_technical_reasons == DEFAULT_NON_TECHNICAL
    assert rules.condition_limits == ()
    assert rules.is_technical("E-HYD-12") and rules.is_technical("jam")
    assert not rules.is_technical(None) and not rules.is_technical(" ") and not rules.is_technical("break")


def test_every_rule_is_configurable():
    rules = rules_from_env({
        "MOM_MAINTENANCE_MINOR_STOP_S": "300",
        "MOM_MAINTENANCE_NON_TECHNICAL_REASONS": "jam, no-material",
        "MOM_MAINTENANCE_CONDITION_LIMITS": '[{"parameter": "oil_temp", "high": 90, "for_s": 120},'
                                            ' {"parameter": "oil_temp", "high": 80, "equipment_prefix": "acme.berlin."}]',
    })
    assert rules.minor_stop == timedelta(seconds=300)
    assert not rules.is_technical("JAM") and rules.is_technical("BREAK")
    assert rules.limit_for("acme.berlin.line1.press07", "oil_temp") == ConditionLimit("oil_temp", high=80.0,
                                                                                       equipment_prefix="acme.berlin.")
    assert rules.limit_for("acme.paris.line1.press07", "oil_temp") == ConditionLimit("oil_temp", high=90.0, for_s=120.0)
    assert rules.limit_for("acme.paris.line1.press07", "pressure") is None


@pytest.mark.parametrize("raw, message", [
    ("{", "JSON list"),
    ('{"parameter": "x"}', "JSON list"),
    ('[{"high": 1}]', "JSON list"),
    ('[{"parameter": "x"}]', "needs a low or a high"),
    ('[{"parameter": "x", "low": 1, "for_s": -1}]', "must not be negative"),
])
def test_bad_condition_limits_are_refused_at_start_with_a_reason(raw, message):
    with pytest.raises(SettingsError, match=message):
        rules_from_env({"MOM_MAINTENANCE_CONDITION_LIMITS": raw})
