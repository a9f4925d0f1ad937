"""Wiring: which topics maintenance reads, which events it knows, and its projector."""
from __future__ import annotations

from services.common.avro import EventMapper
from services.common.catalogue import Catalogue
from services.common.loop import ServiceSpec
from services.common.settings import Settings
from services.maintenance.events import CONSUMED, EMITTED
from services.maintenance.model import SERVICE, Rules
from services.maintenance.projections import MaintenanceProjector
from services.maintenance.settings import rules_from_env


def build(settings: Settings, catalogue: Catalogue, rules: Rules | None = None) -> ServiceSpec:
    topics = tuple(sorted({catalogue.topic_for(cls.__name__).name for cls in CONSUMED}))
    return ServiceSpec(
        name=SERVICE,
        input_topics=topics,
        events=EventMapper(CONSUMED + EMITTED),
        projector=MaintenanceProjector(rules or rules_from_env()),
    )
