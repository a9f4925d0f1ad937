"""Inventory: ISA-95 inventory operations management.

Consumes material receipts (plan), moves, operator loadings and losses (operator), execution's
ProductionReported, MaterialConsumed and OrderStarted, and quality's lot holds, releases and
scraps. Emits on its own topic: LotCreated, LotConsumed, LotStatusChanged,
MaterialBelowReorderPoint and MaterialTransactionRefused. Owns the `inventory` schema (lots, stock
per location, the movement ledger, genealogy edges, reorder state, refusals, analyst views and the
`trace` function) and the `kpi.inventory` view.
"""
