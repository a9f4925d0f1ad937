"""Inventory's settings: the shared worker settings plus the reorder points."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from services.common.settings import Settings, SettingsError

SERVICE = "inventory"
REORDER_POINTS_ENV = "MOM_INVENTORY_REORDER_POINTS"


def parse_reorder_points(text: str) -> Mapping[str, float]:
    """`MAT-A=100,MAT-B=20.5`: the AVAILABLE quantity below which a material is reported."""
    points: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        material_id, sep, value = item.rpartition("=")
        try:
            point = float(value)
        except ValueError:
            point = -1.0
        if not sep or not material_id.strip() or not point >= 0:
            raise SettingsError(f"{REORDER_POINTS_ENV}: {item!r} must be MATERIAL=QUANTITY with a quantity >= 0")
        points[material_id.strip()] = point
    return MappingProxyType(points)


@dataclass(frozen=True)
class InventorySettings:
    reorder_points: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InventorySettings:
        env = os.environ if env is None else env
        return cls(reorder_points=parse_reorder_points(env.get(REORDER_POINTS_ENV, "")))


def from_env() -> Settings:
    return Settings.from_env(SERVICE)
