"""Reliability KPIs of a work unit over a period (ISO 22400-2), from failures, operating time and work.

Pure: the `maintenance.reliability` view computes the same from the same stored elements; this module
states the formulas once in code and lets the unit tests check them by hand.

- MTBF = operating time in the period / failures that started in it (TBF is operating time, production
  and setup, between failures; summed over a period it is the period's operating time)
- MTTF = sum of TTF / failures that started in the period; TTF is the operating time from the previous
  restoration (or the unit's first event) to the failure
- MTTR = sum of TTR / failures restored, of those that started in the period; TTR = restoration - start
- corrective maintenance ratio = CMT / (CMT + PMT): work time of corrective orders over work time of all
  orders closed in the period (preventive and condition-triggered work is PMT)
A KPI whose denominator is zero is None.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

from services.maintenance.model import CORRECTIVE, Failure, WorkOrder


@dataclass(frozen=True, slots=True)
class Elements:
    operating_us: int = 0
    failures: int = 0
    restored: int = 0
    ttf_us: int = 0
    ttr_us: int = 0
    cmt_us: int = 0
    pmt_us: int = 0

    @property
    def mtbf_s(self) -> float | None:
        return self.operating_us / 1e6 / self.failures if self.failures else None

    @property
    def mttf_s(self) -> float | None:
        return self.ttf_us / 1e6 / self.failures if self.failures else None

    @property
    def mttr_s(self) -> float | None:
        return self.ttr_us / 1e6 / self.restored if self.restored else None

    @property
    def cm_ratio(self) -> float | None:
        total = self.cmt_us + self.pmt_us
        return self.cmt_us / total if total else None


def elements(start: datetime, end: datetime, *, failures: Iterable[Failure], operating: Mapping[date, int],
             orders: Iterable[WorkOrder] = ()) -> Elements:
    """A period's elements: [start, end) with whole UTC days for operating time."""
    in_period = [f for f in failures if start <= f.started_at < end]
    restored = [f for f in in_period if f.restored_at is not None]
    closed = [o for o in orders if o.completed_at is not None and start <= o.completed_at < end and o.work_us is not None]
    return Elements(
        operating_us=sum(us for day, us in operating.items() if start.date() <= day < end.date()),
        failures=len(in_period), restored=len(restored),
        ttf_us=sum(f.ttf_us for f in in_period), ttr_us=sum(f.ttr_us or 0 for f in restored),
        cmt_us=sum(o.work_us or 0 for o in closed if o.kind == CORRECTIVE),
        pmt_us=sum(o.work_us or 0 for o in closed if o.kind != CORRECTIVE))
