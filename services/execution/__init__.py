"""Execution: ISA-95 production operations management.

Consumes plan events (equipment, shifts, products, orders), machine events (states, part counts),
operator events (operations, sign-in/out, downtime reasons, scrap, material loading) and
maintenance's lockouts. Emits on its own topic: classified DowntimeStarted/DowntimeEnded, order
progress (OrderStarted, OrderCompleted, TransitionRefused), ProductionReported, backflushed
MaterialConsumed, PeriodClosed/PeriodRevised with the ISO 22400 elements, RuntimeAccumulated.
Owns the `execution` schema (facts, orders and WIP, KPI periods and versions, analyst views) and
the `kpi.oee*` views.
"""
