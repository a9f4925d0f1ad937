"""Wiring: which topics execution reads, which events it knows, and its projector."""
from __future__ import annotations

from services.common.avro import EventMapper
from services.common.catalogue import Catalogue
from services.common.loop import ServiceSpec
from services.common.settings import Settings
from services.execution.events import CONSUMED, EMITTED
from services.execution.projections import ExecutionProjector
from services.execution.settings import SERVICE, ExecutionSettings


def build(settings: Settings, catalogue: Catalogue, domain: ExecutionSettings | None = None) -> ServiceSpec:
    domain = domain or ExecutionSettings.from_env()
    topics = tuple(sorted({catalogue.topic_for(cls.__name__).name for cls in CONSUMED}))
    return ServiceSpec(
        name=SERVICE,
        input_topics=topics,
        events=EventMapper(CONSUMED + EMITTED),
        projector=ExecutionProjector(lateness=domain.lateness, minor_stop=domain.minor_stop),
        # A unit's machine facts decide its own timeline, periods and running operations only; what they
        # read of orders and products, machine facts never change (docs/architecture.md, "Several workers")
        partitions_apart=(catalogue.topic_for("PartsProduced").name,),
    )
