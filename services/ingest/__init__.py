"""ingest: the only door from outside (ARCHITECTURE.md §1).

Consumes: HTTP `POST /v1/events` (JSON array or NDJSON of flat event objects), nothing from Kafka.
Emits: the canonical input events onto the topics the catalogue gives it as writer (plan, machine,
operator events), and one `EventRejected` per refused item onto the rejected (dead-letter) topic.
Owns: no tables; its state is the producer's in-flight messages only.
"""
