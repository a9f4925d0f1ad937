"""Wiring: which topics quality reads, which events it knows, and its projector."""
from __future__ import annotations

from services.common.avro import EventMapper
from services.common.catalogue import Catalogue
from services.common.loop import ServiceSpec
from services.common.settings import Settings
from services.quality.events import CONSUMED, EMITTED
from services.quality.projections import QualityProjector
from services.quality.settings import SERVICE, QualitySettings


def build(settings: Settings, catalogue: Catalogue, domain: QualitySettings | None = None) -> ServiceSpec:
    domain = domain or QualitySettings.from_env()
    topics = tuple(sorted({catalogue.topic_for(cls.__name__).name for cls in CONSUMED}))
    return ServiceSpec(
        name=SERVICE,
        input_topics=topics,
        events=EventMapper(CONSUMED + EMITTED),
        projector=QualityProjector(baseline=domain.baseline, machine_study_values=domain.machine_study_values),
    )
