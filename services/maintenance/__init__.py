"""Maintenance: ISA-95 maintenance operations management.

Consumes machine events (states, alarms, process values), execution's classified downtime and
runtime totals, maintenance plans, and technicians' work reports. Emits on its own topic:
WorkOrderOpened (corrective on a failure, preventive on a due plan, condition-triggered requests),
WorkOrderClosed, PreventiveMaintenanceDue, EquipmentLockedOut / EquipmentReleased for planned work,
and MaintenanceInputRefused for input it cannot apply. Owns the `maintenance` schema (unit state,
alarms, failures, work orders, plans and dues, operating time, analyst views) and `kpi.reliability`.
"""
