"""The simulation: a plant's shift in accelerated time, as ingest wire events plus the facts behind them.

Deterministic for a seed: each work unit draws from its own `random.Random` seeded with the seed and
the unit's id, and event ids are counters, so the same plant, seed and tag give the same events.
Each unit works through its line's orders one after another (a setup, then running until the
order's quantity is good), and while running it meets failures (MTBF in operating time, MTTR from
the repair distribution, with alarms and a corrective work order reported by a technician), minor
stops, blocked and starved spells, machine rejects, operators' scrap and rework reports, process
values with drift, and inspections per the plan's sampling. Breaks stop a unit (unless it runs
through them); a performed calendar maintenance plan stops it under a lockout. Material lots are
received before the shift in quantities the shift needs, one kit is moved to the line and loaded
for a kitted order, and one loss is reported.

`simulate` returns a `Simulation`: `events` in sending order (master data first, then by event
time) and `facts`, the timeline from which `simulator.truth` derives the ground truth on its own.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from simulator.plant import MaintenancePlan, Plant, Product, WorkUnit

US_PER_S = 1_000_000
MINUTE_US = 60 * US_PER_S
MINOR_STOP_LIMIT_S = 110          # minor stops stay below execution's and maintenance's 120 s threshold
FAILURE_MIN_S = 180               # failures last at least this (they are failures, not minor stops)
LONG_STOP_ALARM_S = 121           # the "stop longer than 2 min" warning that confirms a failure
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def wire(us: int) -> str:
    return at(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def ms(seconds: float) -> int:
    """A duration in seconds as whole milliseconds, in microseconds."""
    return max(1, round(seconds * 1000)) * 1000


# -- facts: what happened, for the ground truth ---------------------------------------------------


@dataclass
class Facts:
    """The simulated timeline, in microseconds since the epoch, per work unit (equipment id)."""

    time_zone: str
    shifts: list[tuple[str, int, int, tuple[tuple[int, int], ...]]] = field(default_factory=list)
    states: dict[str, list[tuple[int, str, str | None]]] = field(default_factory=lambda: defaultdict(list))
    lockouts: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    orders: dict[str, list[tuple[str, int, int | None]]] = field(default_factory=lambda: defaultdict(list))
    attendance: dict[str, list[tuple[str, int, int]]] = field(default_factory=lambda: defaultdict(list))
    production: dict[str, list[tuple[int, int, int, float]]] = field(default_factory=lambda: defaultdict(list))
    scrap: dict[str, list[tuple[int, int, bool]]] = field(default_factory=lambda: defaultdict(list))
    failures: dict[str, list[tuple[int, int, str]]] = field(default_factory=lambda: defaultdict(list))
    inspections: list[dict] = field(default_factory=list)
    stock: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    consumption: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    produced_lots: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # lot -> material, location, good
    work_orders: list[dict] = field(default_factory=list)
    lines: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Simulation:
    plant: Plant
    seed: int
    tag: str
    events: list[dict]
    facts: Facts
    ids: Ids
    barriers: frozenset[str] = frozenset()  # event ids that must wait until what was sent before is applied

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for event in self.events:
            counts[event["type"]] += 1
        return dict(sorted(counts.items()))


# -- naming -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ids:
    """Every id the simulation sends, namespaced by a tag so that runs on shared topics never collide."""

    plant: Plant
    tag: str = ""

    def name(self, value: str) -> str:
        return f"{value}-{self.tag.upper()}" if self.tag else value

    @property
    def enterprise(self) -> str:
        return f"{self.plant.enterprise}{self.tag.lower()}"

    @property
    def site(self) -> str:
        return f"{self.enterprise}.{self.plant.site}"

    @property
    def area(self) -> str:
        return f"{self.site}.{self.plant.area}"

    def line(self, line_id: str) -> str:
        return f"{self.area}.{line_id}"

    def unit(self, unit_id: str) -> str:
        return f"{self.line(self.plant.line_of(unit_id).line_id)}.{unit_id}"

    def lot_of_order(self, order_id: str) -> str:
        return f"LOT-{self.name(order_id)}"  # execution and inventory name an order's output lot so


def compact(us: int) -> str:
    return at(us).strftime("%Y%m%dT%H%M%S.%fZ")


# -- the work units ---------------------------------------------------------------------------------


@dataclass
class Window:
    start: int
    end: int
    state: str
    reason: str
    plan: MaintenancePlan | None = None


class UnitRun:
    """One work unit over the day's shifts: emits its events and records its facts."""

    def __init__(self, sim: Simulator, unit: WorkUnit, windows: list[Window]) -> None:
        self.sim, self.unit = sim, unit
        self.eq = sim.ids.unit(unit.unit_id)
        self.rng = random.Random(f"{sim.seed}:{unit.unit_id}")
        self.windows = windows
        self.seq = 0
        self.state: str | None = None
        self.t = 0
        self.pending_good = self.pending_reject = 0
        self.report_order: str | None = None
        self.phase = 0
        self.op_parts: dict[str, int] = defaultdict(int)   # order -> parts of this unit's operation
        self.to_failure = self._draw_failure()
        self.to_minor = self._draw_rate(unit.minor_stops.per_hour)
        self.to_blocked = self._draw_rate(unit.blocked.per_hour)
        self.to_starved = self._draw_rate(unit.starved.per_hour)
        self.to_scrap = self._draw_rate(unit.scrap_reports_per_hour)
        self.drift_origin = sim.facts.shifts[0][1]  # process means drift from the start of the day's first shift

    # random draws, in microseconds of running time -----------------------------------------------
    def _draw_rate(self, per_hour: float) -> float:
        return math.inf if per_hour <= 0 else self.rng.expovariate(per_hour / 3600.0) * US_PER_S

    def _draw_failure(self) -> float:
        f = self.unit.failures
        if f.distribution == "weibull":
            scale = f.mtbf_hours * 3600 / math.gamma(1 + 1 / f.weibull_shape)
            return self.rng.weibullvariate(scale, f.weibull_shape) * US_PER_S
        return self.rng.expovariate(1 / (f.mtbf_hours * 3600)) * US_PER_S

    def _repair_s(self) -> float:
        f = self.unit.failures
        mean = f.mttr_minutes * 60
        if f.repair == "fixed":
            value = mean
        elif f.repair == "exponential":
            value = self.rng.expovariate(1 / mean)
        else:
            mu = math.log(mean) - f.repair_sigma ** 2 / 2
            value = self.rng.lognormvariate(mu, f.repair_sigma)
        return max(FAILURE_MIN_S, value)

    # emitting ---------------------------------------------------------------------------------------
    def emit(self, event_type: str, when: int, barrier: bool = False, **body) -> dict:
        self.seq += 1
        event = {"type": event_type, "event_id": f"{self.eq}-{self.seq:06d}", "occurred_at": wire(when), **body}
        self.sim.floor.append((when, self.sim.next_order(), event))
        if barrier:
            self.sim.barriers.add(event["event_id"])
        return event

    def set_state(self, state: str, reason: str | None = None) -> None:
        if state == self.state:
            return
        self.flush()
        self.state = state
        body = {"equipment_id": self.eq, "state": state}
        if reason:
            body["reason_code"] = reason
        self.emit("MachineStateChanged", self.t, **body)
        self.sim.facts.states[self.eq].append((self.t, state, reason))

    def flush(self) -> None:
        """Report the parts counted since the last report (at the current instant)."""
        if self.pending_good + self.pending_reject == 0:
            return
        order = self.report_order
        first, self.first_count = self.first_count, False
        self.emit("PartsProduced", self.t, barrier=first, equipment_id=self.eq, good=self.pending_good, reject=self.pending_reject,
                  order_id=self.sim.ids.name(order))
        self.sim.facts.production[self.eq].append((self.t, self.pending_good, self.pending_reject, self.pru))
        self.sim.on_parts(self, order, self.pending_good, self.pending_reject, self.t)
        self.pending_good = self.pending_reject = 0

    # windows (breaks and planned maintenance) -------------------------------------------------------
    def window_at(self, t: int) -> Window | None:
        return next((w for w in self.windows if w.start <= t < w.end), None)

    def next_window_start(self, t: int) -> int:
        return min((w.start for w in self.windows if w.start > t), default=math.inf)  # type: ignore[return-value]

    def sit_out(self, window: Window) -> None:
        """Spend a break or a planned maintenance window in its state, then return."""
        self.flush()
        self.set_state(window.state, window.reason)
        if window.plan is not None:
            self.sim.perform_pm(self, window, self.t)
        self.t = window.end

    def hold(self, state: str, reason: str | None, duration: int, end: int) -> bool:
        """Stay in a state for `duration` of its own time, around windows; False when the shift ended."""
        remaining = duration
        while remaining > 0:
            if self.t >= end:
                return False
            window = self.window_at(self.t)
            if window is not None:
                self.sit_out(window)
                continue
            self.set_state(state, reason)
            step = min(remaining, self.next_window_start(self.t) - self.t, end - self.t)
            self.t += step
            remaining -= step
        return True

    def wait_until(self, target: int, state: str, reason: str, end: int) -> bool:
        """Stay in a state until an instant (windows keep their own state); False when the shift ended first."""
        while self.t < min(target, end):
            window = self.window_at(self.t)
            if window is not None:
                self.sit_out(window)
                continue
            self.set_state(state, reason)
            self.t = min(target, self.next_window_start(self.t), end)
        return self.t >= target

    def upstream(self, order_id: str) -> str | None:
        """The unit of the routing step before this unit's, for the order's product."""
        routing = self.sim.plant.product(self.sim.order_products[order_id]).routing
        mine = next(i for i, s in enumerate(routing) if s.work_unit == self.unit.unit_id)
        return routing[mine - 1].work_unit if mine else None

    # the main loop ---------------------------------------------------------------------------------------
    def run_shift(self, start: int, end: int, orders: list) -> None:
        self.t = start
        while self.t < end:
            if self.order is None:
                if not orders:
                    self.hold("IDLE", "NO-ORDER", end - self.t, end)
                    break
                # flow: a unit starts an order a minute after the unit before it in the routing did
                up = self.upstream(orders[0].order_id)
                if up is not None:
                    ready = self.sim.started.get((orders[0].order_id, up))
                    if ready is None or not self.wait_until(ready + MINUTE_US, "STARVED", "NO-MATERIAL", end):
                        break
                self.start_order(orders.pop(0))
                setup = ms(self.product.setup_minutes * 60 * self.rng.uniform(0.8, 1.3))
                if not self.hold("SETUP", "CHANGEOVER", setup, end):
                    break
            self.run_until_event(end)
        self.flush()

    order: str | None = None
    first_count: bool = False
    product: Product | None = None
    pru: float = 0.0
    quantity: int = 0
    good: int = 0

    def start_order(self, order) -> None:
        self.flush()
        self.order, self.product, self.quantity, self.good = order.order_id, self.sim.plant.product(order.product_id), \
            order.quantity, 0
        step = next(s for s in self.product.routing if s.work_unit == self.unit.unit_id)
        self.operation, self.pru = step.operation, step.ideal_cycle_time_s
        self.cycle = ms(step.ideal_cycle_time_s * self.unit.speed_factor)
        self.report_order = self.order
        self.phase = 0
        self.op_start = self.t
        self.first_count = True  # the operation must be applied before its first count (another topic)
        self.emit("OperationStarted", self.t, order_id=self.sim.ids.name(self.order), operation=self.operation,
                  equipment_id=self.eq, operator_id=self.sim.ids.name(self.unit.operator_id))
        self.sim.on_operation_started(self, self.order, self.t)
        self.sim.started[(self.order, self.unit.unit_id)] = self.t

    def complete_order(self) -> None:
        self.flush()
        self.t += 1000  # a millisecond after its last count
        self.emit("OperationCompleted", self.t, barrier=True, order_id=self.sim.ids.name(self.order), operation=self.operation,
                  equipment_id=self.eq, operator_id=self.sim.ids.name(self.unit.operator_id))
        self.sim.facts.orders[self.eq].append((self.order, self.op_start, self.t))
        self.sim.completed[(self.order, self.unit.unit_id)] = self.t
        self.t += 1000
        self.order = None

    def close_open_order(self) -> None:
        if self.order is not None:
            self.sim.facts.orders[self.eq].append((self.order, self.op_start, None))

    def run_until_event(self, end: int) -> None:
        """Run the current order until something stops it: a part finishing the order, a stop, a
        window, the shift end."""
        while True:
            if self.t >= end:
                return
            window = self.window_at(self.t)
            if window is not None:
                self.sit_out(window)
                continue
            self.set_state("RUNNING")
            next_minute = (self.t // MINUTE_US + 1) * MINUTE_US
            to_part = self.cycle - self.phase
            # a unit back from a stop runs at least a millisecond before the next one
            dt = min(to_part, *(max(c, 1000) for c in (self.to_failure, self.to_minor, self.to_blocked,
                                                          self.to_starved, self.to_scrap)),
                     self.next_window_start(self.t) - self.t, end - self.t, next_minute - self.t)
            dt = max(int(math.ceil(dt)), 0)
            self.t += dt
            self.phase += dt
            for name in ("to_failure", "to_minor", "to_blocked", "to_starved", "to_scrap"):
                setattr(self, name, getattr(self, name) - dt)
            if self.phase >= self.cycle:
                self.phase = 0
                if self.rng.random() < self.unit.reject_rate:
                    self.pending_reject += 1
                else:
                    self.pending_good += 1
                    self.good += 1
                self.op_parts[self.order] += 1
                self.sim.maybe_inspect(self, self.order, self.op_parts[self.order])
                if self.good >= self.quantity:
                    # flow: a unit completes an order a minute after the unit before it did, not before
                    up = self.upstream(self.order)
                    if up is not None:
                        self.flush()
                        done = self.sim.completed.get((self.order, up))
                        if done is None or not self.wait_until(done + MINUTE_US, "STARVED", "NO-MATERIAL", end):
                            self.t = max(self.t, end)
                            return
                    self.complete_order()
                    return
            if self.t >= next_minute:
                self.flush()
            if self.to_scrap <= 0:
                self.to_scrap = self._draw_rate(self.unit.scrap_reports_per_hour)
                self.report_scrap()
            if self.to_failure <= 0:
                self.to_failure = self._draw_failure()
                if end - self.t > 2 * FAILURE_MIN_S * US_PER_S:  # a failure needs time to be one before the end
                    self.fail(end)
                    return
            if self.to_minor <= 0:
                self.to_minor = self._draw_rate(self.unit.minor_stops.per_hour)
                seconds = min(MINOR_STOP_LIMIT_S, self.rng.expovariate(1 / self.unit.minor_stops.mean_seconds) + 5)
                self.hold("DOWN", self.rng.choice(self.unit.minor_stops.reasons), ms(seconds), end)
                return
            for name, state, reason, spec in (("to_blocked", "BLOCKED", "CONVEYOR-FULL", self.unit.blocked),
                                              ("to_starved", "STARVED", "NO-MATERIAL", self.unit.starved)):
                if getattr(self, name) <= 0:
                    setattr(self, name, self._draw_rate(spec.per_hour))
                    self.hold(state, reason, ms(self.rng.expovariate(1 / (spec.mean_minutes * 60)) + 20), end)
                    return

    def report_scrap(self) -> None:
        quantity = self.rng.randint(1, 4)
        rework = self.rng.random() < self.unit.rework_share
        self.emit("ScrapReported", self.t, equipment_id=self.eq, order_id=self.sim.ids.name(self.order),
                  quantity=quantity, reason_code="REWORK-BURR" if rework else "SCRATCHES", rework=rework)
        self.sim.facts.scrap[self.eq].append((self.t, quantity, rework))

    def fail(self, end: int) -> None:
        f = self.unit.failures
        reason = self.rng.choice(f.reasons)
        repair = ms(self._repair_s())
        start = self.t
        self.set_state("DOWN", reason)
        alarm = f"ALM-{reason}"
        self.emit("AlarmRaised", start, equipment_id=self.eq, alarm_code=alarm, severity=f.alarm_severity,
                  text=f"{self.unit.name}: {reason}")
        self.emit("AlarmRaised", start + LONG_STOP_ALARM_S * US_PER_S, equipment_id=self.eq, alarm_code="ALM-LONG-STOP",
                  severity="warning", text=f"{self.unit.name} stopped for more than 2 minutes")
        technician = self.sim.plant.technicians[self.rng.randrange(len(self.sim.plant.technicians))]
        work_order = f"CM-{self.eq}-{compact(start)}"  # maintenance's corrective order id for a failure
        self.emit("MaintenanceWorkReported", start + (LONG_STOP_ALARM_S + 4) * US_PER_S, barrier=True,
                  work_order_id=work_order,
                  status="STARTED", technician_id=self.sim.ids.name(technician))
        self.t = start + repair
        if self.t > end:  # restored by the end-of-shift state at the latest
            self.t = end
        restored = self.t
        self.emit("AlarmCleared", restored, equipment_id=self.eq, alarm_code=alarm, severity=f.alarm_severity)
        self.emit("AlarmCleared", restored, equipment_id=self.eq, alarm_code="ALM-LONG-STOP", severity="warning")
        self.emit("MaintenanceWorkReported", restored, work_order_id=work_order, status="COMPLETED",
                  technician_id=self.sim.ids.name(technician))
        self.sim.facts.failures[self.eq].append((start, restored, reason))
        self.sim.facts.work_orders.append({"work_order_id": work_order, "kind": "corrective", "equipment_id": self.eq,
                                           "started_at": start, "completed_at": restored})
        # the state after the repair is set by whoever runs next (RUNNING, a window, the shift end)

    def process_values(self, start: int, end: int) -> None:
        for pv in self.unit.process_values:
            step = int(pv.every_seconds * US_PER_S)
            t = start + step
            while t < end:
                hours = (t - start) / 3600 / US_PER_S
                value = self.rng.gauss(pv.mean + pv.drift_per_hour * hours, pv.sd)
                self.emit("ProcessValueMeasured", t, equipment_id=self.eq, parameter=pv.parameter,
                          value=round(value, 3), unit=pv.unit)
                t += step


class Simulator:
    def __init__(self, plant: Plant, seed: int, tag: str) -> None:
        self.plant, self.seed, self.tag = plant, seed, tag
        self.ids = Ids(plant, tag)
        self.facts = Facts(time_zone=plant.time_zone)
        self.floor: list[tuple[int, int, dict]] = []
        self.barriers: set[str] = set()
        self._order = 0
        self.rng = random.Random(f"{seed}:plant")
        self.order_products = {o.order_id: o.product_id for line in plant.lines for o in line.orders}
        self.final_units = {p.product_id: p.routing[-1].work_unit for p in plant.products}
        self.order_start: dict[str, tuple[int, UnitRun]] = {}
        self.started: dict[tuple[str, str], int] = {}    # (order, unit) -> when the unit started it
        self.completed: dict[tuple[str, str], int] = {}  # (order, unit) -> when the unit completed it

    def next_order(self) -> int:
        self._order += 1
        return self._order

    def local(self, clock) -> int:
        zone = ZoneInfo(self.plant.time_zone)
        return micros(datetime.combine(self.plant.day, clock, tzinfo=zone).astimezone(UTC))

    # callbacks from the units -----------------------------------------------------------------
    def on_parts(self, run: UnitRun, order: str, good: int, reject: int, when: int) -> None:
        product = self.order_products[order]
        if self.final_units[product] == run.unit.unit_id and good > 0:
            lot = self.ids.lot_of_order(order)
            material, location, total = self.facts.produced_lots.get(lot, (self.ids.name(product), run.eq, 0))
            self.facts.produced_lots[lot] = (material, location, total + good)
            self.facts.stock[(material, location)] += good
            if not self.plant.product(product).material_loaded:
                for line in self.plant.product(product).bom:
                    self.facts.consumption[line.material_id] += line.quantity_per_unit * good

    def on_operation_started(self, run: UnitRun, order: str, when: int) -> None:
        first = self.order_start.get(order)
        if first is None or when < first[0]:
            self.order_start[order] = (when, run)

    def kitted_orders(self) -> list[tuple[str, UnitRun, int]]:
        """Kitted orders with the unit that starts them first: its operator loads the kit just before."""
        return sorted(((order, run, when) for order, (when, run) in self.order_start.items()
                       if self.plant.product(self.order_products[order]).material_loaded), key=lambda k: k[2])

    def maybe_inspect(self, run: UnitRun, order: str, parts: int) -> None:
        product = self.plant.product(self.order_products[order])
        plan = product.inspection
        if plan is None or run.operation != plan.operation:
            return
        for c in plan.characteristics:
            if parts % c.every_n_parts:
                continue
            when = run.t + 20 * US_PER_S
            body = {"characteristic_id": self.ids.name(c.characteristic_id), "plan_id": self.ids.name(plan.plan_id),
                    "equipment_id": run.eq, "order_id": self.ids.name(order), "lot_id": self.ids.lot_of_order(order)}
            if c.kind == "variable":
                hours = (run.t - run.drift_origin) / 3600 / US_PER_S
                centre = c.target + c.drift_per_hour * hours  # type: ignore[operator]
                values = [round(run.rng.gauss(centre, c.sigma), 4) for _ in range(c.sample_size)]  # type: ignore[arg-type]
                body["values"] = values
                outside = sum(1 for v in values if not c.lsl <= v <= c.usl)  # type: ignore[operator]
            else:
                body["passed"] = run.rng.random() >= c.fail_rate
                outside = 0 if body["passed"] else 1
            run.emit("InspectionRecorded", when, **body)
            self.facts.inspections.append({"characteristic_id": body["characteristic_id"], "at": when,
                                           "order_id": body["order_id"], "outside": outside})

    def perform_pm(self, run: UnitRun, window: Window, start: int) -> None:
        plan = window.plan
        assert plan is not None
        work_order = f"PM-{self.ids.name(plan.plan_id)}-r1-{window.due_index}"  # type: ignore[attr-defined]
        technician = self.ids.name(self.plant.technicians[0])
        run.emit("MaintenanceWorkReported", start, barrier=True, work_order_id=work_order, status="STARTED",
                 technician_id=technician)
        run.emit("MaintenanceWorkReported", window.end, work_order_id=work_order, status="COMPLETED",
                 technician_id=technician)
        self.facts.lockouts[run.eq].append((start, window.end))
        self.facts.work_orders.append({"work_order_id": work_order, "kind": "preventive", "equipment_id": run.eq,
                                       "started_at": start, "completed_at": window.end})

    # the run ----------------------------------------------------------------------------------------
    def shift_windows(self) -> list[tuple[str, int, int, tuple[tuple[int, int], ...]]]:
        shifts = []
        for s in self.plant.shifts:
            start, end = self.local(s.start), self.local(s.end)
            if end <= start:
                end += 24 * 3600 * US_PER_S
            breaks = []
            for b in s.breaks:
                bs, be = self.local(b.start), self.local(b.end)
                while bs < start:
                    bs += 24 * 3600 * US_PER_S
                while be <= bs:
                    be += 24 * 3600 * US_PER_S
                breaks.append((bs, be))
            shifts.append((self.ids.name(s.shift_id), start, end, tuple(breaks)))
        return sorted(shifts, key=lambda s: s[1])

    def plans_defined_at(self) -> int:
        return self.facts.shifts[0][1] - 3600 * US_PER_S  # master data: an hour before the first shift

    def pm_windows(self, unit_id: str) -> list[Window]:
        windows = []
        defined = self.plans_defined_at()
        last_end = self.facts.shifts[-1][2]
        for plan in self.plant.maintenance_plans:
            if plan.work_unit != unit_id or plan.kind != "calendar" or plan.perform_minutes is None:
                continue
            k = 1
            while True:
                due = defined + k * int(plan.interval_hours * 3600 * US_PER_S)  # type: ignore[operator]
                if due >= last_end:
                    break
                start = due + 5 * MINUTE_US
                window = Window(start, start + ms(plan.perform_minutes * 60), "MAINTENANCE", "PLANNED", plan)
                window.due_index = k  # type: ignore[attr-defined]
                windows.append(window)
                k += 1
        return windows

    def run(self) -> Simulation:
        self.facts.shifts = self.shift_windows()
        for line in self.plant.lines:
            self.facts.lines[self.ids.line(line.line_id)] = [self.ids.unit(u.unit_id) for u in line.work_units]
        runs = []
        for line in self.plant.lines:
            def position(unit: WorkUnit) -> int:  # units in routing order, so upstream units run first
                return min((i for p in self.plant.products for i, s in enumerate(p.routing) if s.work_unit == unit.unit_id),
                           default=0)
            for unit in sorted(line.work_units, key=position):
                windows = sorted(self.pm_windows(unit.unit_id), key=lambda w: w.start)
                if not unit.runs_through_breaks:
                    windows += [Window(bs, be, "IDLE", "BREAK") for _, _, _, breaks in self.facts.shifts
                                for bs, be in breaks]
                windows = sorted(windows, key=lambda w: w.start)
                run = UnitRun(self, unit, self._clip(windows))
                runs.append(run)
                orders = [o for o in line.orders if any(s.work_unit == unit.unit_id
                                                        for s in self.plant.product(o.product_id).routing)]
                for _shift_id, start, end, _ in self.facts.shifts:
                    run.run_shift(start, end, orders)
                    run.process_values(start, end)
                self._end_of_day(run)
        for run in runs:
            self._operators(run)
        self.kits = self.kitted_orders()
        plan_events = self._plan()
        floor = [e for _, _, e in sorted(self.floor, key=lambda x: (x[0], x[1]))]
        if floor:
            self.barriers.add(floor[0]["event_id"])  # master data and plans are applied before the floor
        return Simulation(self.plant, self.seed, self.tag, plan_events + floor, self.facts, self.ids,
                          frozenset(self.barriers))

    @staticmethod
    def _clip(windows: list[Window]) -> list[Window]:
        """Windows that overlap (a maintenance window in a break) merge into the earlier one."""
        merged: list[Window] = []
        for w in windows:
            if merged and w.start < merged[-1].end:
                if w.end > merged[-1].end:
                    merged.append(Window(merged[-1].end, w.end, w.state, w.reason, w.plan))
                    if w.plan is not None:
                        merged[-1].due_index = w.due_index  # type: ignore[attr-defined]
                continue
            merged.append(w)
        return merged

    def _end_of_day(self, run: UnitRun) -> None:
        end = self.facts.shifts[-1][2]
        run.t = max(run.t, end)
        run.flush()
        run.close_open_order()
        run.t = max(end, run.t)
        run.set_state("IDLE", "END-OF-SHIFT")
        run.t = end + 2 * MINUTE_US
        run.set_state("OFFLINE", "END-OF-SHIFT")

    def _operators(self, run: UnitRun) -> None:
        operator = self.ids.name(run.unit.operator_id)
        for _, start, end, _ in self.facts.shifts:
            signed_in, signed_out = start - 10 * MINUTE_US, end + 5 * MINUTE_US
            run.emit("OperatorSignedIn", signed_in, operator_id=operator, equipment_id=run.eq)
            run.emit("OperatorSignedOut", signed_out, operator_id=operator, equipment_id=run.eq)
            self.facts.attendance[run.eq].append((operator, signed_in, signed_out))

    # master data, plans and material ---------------------------------------------------------------
    def _plan(self) -> list[dict]:
        ids, plant = self.ids, self.plant
        defined = self.plans_defined_at()
        n = iter(range(1, 1_000_000))
        events: list[dict] = []

        def event(event_type: str, when: int, **body) -> None:
            events.append({"type": event_type, "event_id": f"{ids.site}-plan-{next(n):05d}",
                           "occurred_at": wire(when), **body})

        master = defined - 11 * 3600 * US_PER_S
        event("EquipmentRegistered", master, equipment_id=ids.enterprise, name=plant.enterprise.upper(),
              level="enterprise")
        event("EquipmentRegistered", master, equipment_id=ids.site, name=plant.site_name, level="site",
              parent_id=ids.enterprise, time_zone=plant.time_zone)
        event("EquipmentRegistered", master, equipment_id=ids.area, name=plant.area.capitalize(), level="area",
              parent_id=ids.site)
        for line in plant.lines:
            event("EquipmentRegistered", master, equipment_id=ids.line(line.line_id), name=line.name,
                  level="work_center", parent_id=ids.area)
            for unit in line.work_units:
                event("EquipmentRegistered", master, equipment_id=ids.unit(unit.unit_id), name=unit.name,
                      level="work_unit", parent_id=ids.line(line.line_id))
        for shift_id, start, end, breaks in self.facts.shifts:
            event("ShiftScheduled", master, shift_id=shift_id, equipment_id=ids.site, starts_at=wire(start),
                  ends_at=wire(end), breaks=[{"starts_at": wire(s), "ends_at": wire(e)} for s, e in breaks])
        for product in plant.products:
            event("ProductDefined", master, product_id=ids.name(product.product_id), name=product.name,
                  unit="pcs", ideal_cycle_time_s=max(s.ideal_cycle_time_s for s in product.routing),
                  bom=[{"material_id": ids.name(b.material_id), "quantity_per_unit": b.quantity_per_unit}
                       for b in product.bom],
                  routing=[{"operation": s.operation, "equipment_id": ids.unit(s.work_unit),
                            "ideal_cycle_time_s": s.ideal_cycle_time_s} for s in product.routing])
            if product.inspection is not None:
                plan = product.inspection
                event("InspectionPlanDefined", master, plan_id=ids.name(plan.plan_id),
                      product_id=ids.name(product.product_id), operation=plan.operation,
                      characteristics=[{
                          "characteristic_id": ids.name(c.characteristic_id), "name": c.name, "kind": c.kind,
                          "lsl": c.lsl, "usl": c.usl, "target": c.target, "sigma": c.sigma, "unit": c.unit,
                          "sample_size": c.sample_size, "every_n_parts": c.every_n_parts} for c in plan.characteristics])
        for plan in plant.maintenance_plans:
            trigger = {"kind": plan.kind}
            if plan.kind == "calendar":
                trigger["interval_s"] = plan.interval_hours * 3600  # type: ignore[operator]
            elif plan.kind == "runtime_hours":
                trigger["hours"] = plan.hours
            else:
                trigger["cycles"] = plan.cycles
            event("MaintenancePlanDefined", defined, plan_id=ids.name(plan.plan_id),
                  equipment_id=ids.unit(plan.work_unit), task=plan.task, trigger=trigger)
        for line in plant.lines:
            for order in line.orders:
                event("ProductionOrderReleased", master, order_id=ids.name(order.order_id),
                      product_id=ids.name(order.product_id), quantity=order.quantity,
                      due_at=wire(self.facts.shifts[-1][2] + 2 * 3600 * US_PER_S))
        events.extend(self._material(master + 3600 * US_PER_S))
        return events

    def _material(self, received_at: int) -> list[dict]:
        """Receipts sized to the shift's needs (so no consumption is ever refused), a kit moved to the
        line and loaded for each kitted order, and one loss in storage."""
        ids, plant, facts = self.ids, self.plant, self.facts
        events: list[dict] = []
        n = iter(range(1, 1_000_000))

        def receipt(lot: str, material: str, quantity: float, unit: str, location: str, when: int) -> None:
            events.append({"type": "MaterialLotReceived", "event_id": f"{ids.site}-receipt-{next(n):03d}",
                           "occurred_at": wire(when), "lot_id": lot, "material_id": ids.name(material),
                           "quantity": quantity, "unit": unit, "location_id": location})
            facts.stock[(ids.name(material), location)] += quantity

        kit_needs: dict[str, float] = defaultdict(float)
        for order, _, _ in self.kits:
            product = plant.product(self.order_products[order])
            quantity = next(o.quantity for line in plant.lines for o in line.orders if o.order_id == order)
            for b in product.bom:
                kit_needs[b.material_id] += b.quantity_per_unit * quantity
        units = {m.material_id: (m.unit, m.location) for m in plant.materials}
        for p in plant.products:
            units.setdefault(p.product_id, ("pcs", "BUFFER-" + p.product_id))
        consumed = sorted(set(facts.consumption) | set(kit_needs))
        lots: dict[str, str] = {}
        loss_material = next((m for m in consumed if m in {x.material_id for x in plant.materials}), None)
        for i, material in enumerate(consumed):
            unit, location = units[material]
            location = ids.name(location)
            need = facts.consumption.get(material, 0.0)
            quantity = float(math.ceil(need * 1.25 + 20))
            receipt(f"LOT-{ids.name(material)}-A", material, quantity, unit, location, received_at + i * US_PER_S)
            extra = kit_needs.get(material, 0.0) + (40.0 if material == loss_material else 0.0)
            if extra:
                lots[material] = f"LOT-{ids.name(material)}-B"
                receipt(lots[material], material, float(math.ceil(extra + 10)), unit, location,
                        received_at + (100 + i) * US_PER_S)
        kanban = ids.name("LINE-KANBAN")
        for order, run, when in self.kits:
            product = plant.product(self.order_products[order])
            quantity = next(o.quantity for line in plant.lines for o in line.orders if o.order_id == order)
            for b in product.bom:
                amount = round(b.quantity_per_unit * quantity, 6)
                material = ids.name(b.material_id)
                location = ids.name(units[b.material_id][1])
                run.emit("MaterialMoved", when - 10 * MINUTE_US, lot_id=lots[b.material_id], from_location=location,
                         to_location=kanban, quantity=amount)
                run.emit("MaterialLoaded", when - 1000, barrier=True, equipment_id=run.eq, order_id=ids.name(order),
                         lot_id=lots[b.material_id], quantity=amount)
                facts.stock[(material, location)] -= amount
                facts.stock[(material, kanban)] += amount - amount  # moved in, then loaded out
        if loss_material is not None:
            unit, location = units[loss_material]
            when = facts.shifts[0][1] + 2 * 3600 * US_PER_S + 17 * MINUTE_US
            self.floor.append((when, self.next_order(), {
                "type": "MaterialLost", "event_id": f"{ids.site}-loss-001", "occurred_at": wire(when),
                "lot_id": lots[loss_material], "quantity": 25.0, "kind": "storage_and_transport",
                "location_id": ids.name(location), "reason_code": "DAMAGED-IN-TRANSPORT"}))
            facts.stock[(ids.name(loss_material), ids.name(location))] -= 25.0
        for material, need in facts.consumption.items():
            facts.stock[(ids.name(material), ids.name(units[material][1]))] -= need
        return events


def simulate(plant: Plant, seed: int = 1, tag: str = "") -> Simulation:
    """One simulated day of the plant's shifts; deterministic for (plant, seed, tag)."""
    return Simulator(plant, seed, tag).run()
