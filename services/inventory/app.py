"""Wiring: which topics inventory reads, which events it knows, and its projector."""
from __future__ import annotations

from services.common.avro import EventMapper
from services.common.catalogue import Catalogue
from services.common.loop import ServiceSpec
from services.common.settings import Settings
from services.inventory.events import CONSUMED, EMITTED
from services.inventory.projections import InventoryProjector
from services.inventory.settings import SERVICE, InventorySettings


def build(settings: Settings, catalogue: Catalogue, domain: InventorySettings | None = None) -> ServiceSpec:
    domain = domain or InventorySettings.from_env()
    # Quality's lot events are read once quality publishes them: a consumed type the catalogue does
    # not list yet names no topic.
    known = set(catalogue.event_types)
    topics = tuple(sorted({catalogue.topic_for(cls.__name__).name for cls in CONSUMED if cls.__name__ in known}))
    return ServiceSpec(
        name=SERVICE,
        input_topics=topics,
        events=EventMapper(CONSUMED + EMITTED),
        projector=InventoryProjector(reorder_points=domain.reorder_points),
    )
