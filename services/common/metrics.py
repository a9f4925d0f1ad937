"""Prometheus metrics shared by every worker; names follow Prometheus conventions (base units, _total)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PROCESSED = Counter(
    "mom_events_processed_total", "Events applied to the projection, by type.", ["service", "event_type"])
EVENTS_FAILED = Counter(
    "mom_events_failed_total", "Events that could not be processed and went to dead_letters.",
    ["service", "event_type", "reason"])
EVENTS_DUPLICATE = Counter(
    "mom_events_duplicate_total", "Events dropped because their event_id was processed before.", ["service"])
EVENTS_SKIPPED = Counter(
    "mom_events_skipped_total", "Events on a subscribed topic that this service does not use.", ["service"])
BATCH_SIZE = Histogram(
    "mom_batch_size_events", "Events per committed batch.", ["service"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000))
BATCH_DURATION = Histogram(
    "mom_batch_duration_seconds", "Time from a batch's arrival to its commit.", ["service"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
EVENT_LATENCY = Histogram(
    "mom_event_latency_seconds", "From an event's occurred_at to the commit of its projection.", ["service"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
ARRIVAL_LATENCY = Histogram(
    "mom_arrival_latency_seconds", "From an event's recorded_at (accepted by ingest) to the commit of its projection.",
    ["service"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
CONSUMER_LAG = Gauge(
    "mom_consumer_lag_events", "High watermark minus stored position, per input partition.",
    ["service", "topic", "partition"])
OUTBOX_BACKLOG = Gauge("mom_outbox_backlog_events", "Derived events committed but not yet published.", ["service"])
OUTBOX_LEADER = Gauge(
    "mom_outbox_leader", "1 while this worker's relay leads (publishes) its service's outbox, else 0.", ["service"])
OUTBOX_PUBLISHED = Counter("mom_outbox_published_total", "Derived events published by the outbox relay.", ["service"])
PARTITION_REFETCHES = Counter(
    "mom_partition_refetches_total", "Times a partition known to lag delivered nothing for the starvation bound "
    "and was sought again (see docs/operations.md).", ["service", "topic", "partition"])
HELD_BY_OTHER_WORKERS = Gauge(
    "mom_held_by_other_workers", "1 while this worker's next events wait for an earlier one that another worker of its "
    "service holds and has not folded yet (see docs/operations.md), else 0.", ["service"])
WORKER_ACTIVE = Gauge(
    "mom_worker_active", "1 while this worker consumes, 0 while it stands by because another worker of its service "
    "consumes (a service with no input topic apart: see docs/operations.md).", ["service"])
STALE_BATCHES = Counter(
    "mom_stale_batches_total", "Batches refused because another worker had moved the position.", ["service"])
LAST_PROGRESS = Gauge(
    "mom_last_progress_timestamp_seconds", "Wall-clock time of the last committed batch or idle poll.", ["service"])
INGEST_EVENTS = Counter(
    "mom_ingest_events_total", "Events received by ingest, by outcome (accepted, rejected, or failed: Kafka did not acknowledge).", ["outcome"])
INGEST_REQUESTS = Counter("mom_ingest_requests_total", "HTTP requests to ingest, by status code.", ["status"])
INGEST_REQUEST_DURATION = Histogram(
    "mom_ingest_request_duration_seconds", "From request arrival to the answer, Kafka acknowledgements included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
