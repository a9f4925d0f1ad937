"""Execution: ISA-95 production operations management.

Consumes machine events (`MachineStateChanged`, `PartsProduced`) from the catalogue's machine topic.
Emits `DowntimeStarted` and `DowntimeEnded` on its own topic through the outbox.
Owns the `execution` schema: `equipment_status` and `part_counts_hourly` tables, analyst views
`equipment_state` and `hourly_counts`, and the shared plumbing tables (positions, outbox, ...).
"""
