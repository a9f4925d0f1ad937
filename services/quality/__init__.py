"""Quality: ISA-95 quality operations management.

Consumes inspection plans (plan topic), execution's OrderStarted and ProductionReported (sampling),
operators' InspectionRecorded, ScrapReported and LotDispositioned. Emits on its own topic:
InspectionDue, ControlLimitsChanged and SpcRuleViolated (SPC, I-MR and X-bar/R charts with the eight
Nelson rules), NonconformanceOpened/Closed, LotHeld and the ends of a hold (LotReleased, LotScrapped,
LotSentToRework), and QualityInputRefused for input it cannot use. Owns the `quality` schema (plans,
charts, versioned limits and points, capability statistics, nonconformances, holds, yield facts and
the analyst views) and the `kpi.quality` view.
"""
