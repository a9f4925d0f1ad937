"""The plant model: a YAML description of a plant, read into frozen dataclasses and validated.

A plant has one site with an area of lines; each line has work units and a list of production
orders it works through; products have routings over a line's units, a BOM (materials or other
products: a two-level BOM is a product whose BOM names another product) and inspection plans;
materials are received as lots; maintenance plans name a unit and a trigger. `defaults` gives the
behaviour every work unit starts from (failures, minor stops, scrap, process values), and each unit
may override any of it. Every error names the field it is about, as a path
(`lines[1].work_units[0].failures.mtbf_hours: must be a number > 0, got -2`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

PLANTS_DIR = Path(__file__).parent / "plants"
DEFAULT_PLANT = PLANTS_DIR / "default.yaml"
_ID = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
TRIGGER_KINDS = ("calendar", "runtime_hours", "cycles")
REPAIR_DISTRIBUTIONS = ("lognormal", "exponential", "fixed")
FAILURE_DISTRIBUTIONS = ("exponential", "weibull")


class PlantError(ValueError):
    """A plant description that breaks a rule; the message starts with the field's path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


# -- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Break:
    start: time
    end: time


@dataclass(frozen=True, slots=True)
class ShiftPlan:
    shift_id: str
    start: time
    end: time
    breaks: tuple[Break, ...] = ()


@dataclass(frozen=True, slots=True)
class Failures:
    mtbf_hours: float
    mttr_minutes: float
    distribution: str = "exponential"    # time between failures, in operating time
    weibull_shape: float = 1.5
    repair: str = "lognormal"            # time to repair
    repair_sigma: float = 0.5
    reasons: tuple[str, ...] = ("E-FAULT",)
    alarm_severity: str = "critical"


@dataclass(frozen=True, slots=True)
class MinorStops:
    per_hour: float
    mean_seconds: float
    reasons: tuple[str, ...] = ("JAM",)


@dataclass(frozen=True, slots=True)
class Interruptions:
    """Blocked and starved periods: the line around the unit, not the unit itself."""

    per_hour: float
    mean_minutes: float


@dataclass(frozen=True, slots=True)
class ProcessValue:
    parameter: str
    unit: str
    mean: float
    sd: float
    drift_per_hour: float = 0.0
    every_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class WorkUnit:
    unit_id: str
    name: str
    speed_factor: float            # actual cycle time / ideal cycle time
    reject_rate: float             # machine-counted rejects per part
    scrap_reports_per_hour: float  # operators' reports of parts counted good found bad later
    rework_share: float            # share of those reports that are rework
    runs_through_breaks: bool
    failures: Failures
    minor_stops: MinorStops
    blocked: Interruptions
    starved: Interruptions
    process_values: tuple[ProcessValue, ...]
    operator_id: str


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    product_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Line:
    line_id: str
    name: str
    work_units: tuple[WorkUnit, ...]
    orders: tuple[Order, ...]


@dataclass(frozen=True, slots=True)
class Step:
    operation: str
    work_unit: str
    ideal_cycle_time_s: float


@dataclass(frozen=True, slots=True)
class BomLine:
    material_id: str
    quantity_per_unit: float


@dataclass(frozen=True, slots=True)
class Characteristic:
    characteristic_id: str
    name: str
    kind: str                      # variable | attribute
    sample_size: int
    every_n_parts: int
    lsl: float | None = None
    usl: float | None = None
    target: float | None = None
    sigma: float | None = None
    unit: str | None = None
    drift_per_hour: float = 0.0    # variables: the process mean moves by this per hour of the shift
    fail_rate: float = 0.0         # attributes: share of failed checks


@dataclass(frozen=True, slots=True)
class InspectionPlan:
    plan_id: str
    operation: str
    characteristics: tuple[Characteristic, ...]


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    line: str
    setup_minutes: float
    routing: tuple[Step, ...]
    bom: tuple[BomLine, ...]
    inspection: InspectionPlan | None
    material_loaded: bool = False  # operators load lots for its orders (no backflush)


@dataclass(frozen=True, slots=True)
class Material:
    material_id: str
    unit: str
    location: str


@dataclass(frozen=True, slots=True)
class MaintenancePlan:
    plan_id: str
    work_unit: str
    task: str
    kind: str
    interval_hours: float | None = None
    hours: float | None = None
    cycles: int | None = None
    perform_minutes: float | None = None  # calendar plans: the technician does the work when due


@dataclass(frozen=True, slots=True)
class Plant:
    name: str
    enterprise: str
    site: str
    site_name: str
    time_zone: str
    area: str
    day: date
    shifts: tuple[ShiftPlan, ...]
    lines: tuple[Line, ...]
    products: tuple[Product, ...]
    materials: tuple[Material, ...]
    maintenance_plans: tuple[MaintenancePlan, ...]
    technicians: tuple[str, ...] = ("TECH-01",)
    source: str = field(default="", compare=False)

    @property
    def work_units(self) -> tuple[WorkUnit, ...]:
        return tuple(u for line in self.lines for u in line.work_units)

    def product(self, product_id: str) -> Product:
        return next(p for p in self.products if p.product_id == product_id)

    def line_of(self, unit_id: str) -> Line:
        return next(line for line in self.lines if any(u.unit_id == unit_id for u in line.work_units))


# -- reading and validating ------------------------------------------------------------------------


class _Reader:
    """Typed access to one mapping of the YAML, each failure naming its path."""

    def __init__(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise PlantError(path or "(plant)", f"must be a mapping, got {type(value).__name__}")
        self.value, self.path = value, path
        self.used: set[str] = set()

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.value and self.value[key] is not None

    def raw(self, key: str, default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.value or self.value[key] is None:
            if default is ...:
                raise PlantError(self.at(key), "is required")
            return default
        return self.value[key]

    def text(self, key: str, default: Any = ..., pattern: re.Pattern[str] | None = None) -> str:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise PlantError(self.at(key), f"must be a string, got {value!r}")
        value = str(value)
        if not value:
            raise PlantError(self.at(key), "must not be empty")
        if pattern is not None and not pattern.match(value):
            raise PlantError(self.at(key), f"must match {pattern.pattern}, got {value!r}")
        return value

    def number(self, key: str, default: Any = ..., *, minimum: float = 0.0, exclusive: bool = False,
               maximum: float | None = None) -> float:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PlantError(self.at(key), f"must be a number, got {value!r}")
        if value < minimum or (exclusive and value == minimum):
            raise PlantError(self.at(key), f"must be a number {'>' if exclusive else '>='} {minimum:g}, got {value!r}")
        if maximum is not None and value > maximum:
            raise PlantError(self.at(key), f"must be a number <= {maximum:g}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: Any = ..., *, minimum: int = 1) -> int:
        value = self.raw(key, default)
        if value is default and default is not ...:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise PlantError(self.at(key), f"must be an integer >= {minimum}, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise PlantError(self.at(key), f"must be true or false, got {value!r}")
        return value

    def clock(self, key: str) -> time:
        value = self.raw(key)
        if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 06:00 as 360 (sexagesimal)
            value = f"{value // 60:02d}:{value % 60:02d}"
        try:
            return time.fromisoformat(str(value))
        except ValueError:
            raise PlantError(self.at(key), f"must be a time of day like \"06:00\", got {value!r}") from None

    def items(self, key: str, default: Any = ...) -> list[Any]:
        value = self.raw(key, default)
        if not isinstance(value, list):
            raise PlantError(self.at(key), f"must be a list, got {type(value).__name__}")
        return value

    def child(self, key: str, default: Any = ...) -> _Reader:
        return _Reader(self.raw(key, default), self.at(key))

    def codes(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        values = self.items(key, list(default))
        if not values:
            raise PlantError(self.at(key), "must name at least one code")
        for i, v in enumerate(values):
            if not isinstance(v, str) or not _CODE.match(v):
                raise PlantError(f"{self.at(key)}[{i}]", f"must be a code like E-HYD-12, got {v!r}")
        return tuple(values)

    def done(self) -> None:
        unknown = sorted(set(self.value) - self.used)
        if unknown:
            raise PlantError(self.at(unknown[0]), "is not a known field")


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def _failures(r: _Reader) -> Failures:
    f = Failures(mtbf_hours=r.number("mtbf_hours", minimum=0, exclusive=True),
                 mttr_minutes=r.number("mttr_minutes", minimum=0, exclusive=True),
                 distribution=r.text("distribution", "exponential"),
                 weibull_shape=r.number("weibull_shape", 1.5, minimum=0, exclusive=True),
                 repair=r.text("repair", "lognormal"), repair_sigma=r.number("repair_sigma", 0.5),
                 reasons=r.codes("reasons", ("E-FAULT",)), alarm_severity=r.text("alarm_severity", "critical"))
    if f.distribution not in FAILURE_DISTRIBUTIONS:
        raise PlantError(r.at("distribution"), f"must be one of {', '.join(FAILURE_DISTRIBUTIONS)}, got {f.distribution!r}")
    if f.repair not in REPAIR_DISTRIBUTIONS:
        raise PlantError(r.at("repair"), f"must be one of {', '.join(REPAIR_DISTRIBUTIONS)}, got {f.repair!r}")
    r.done()
    return f


def _work_unit(r: _Reader) -> WorkUnit:
    unit_id = r.text("id", pattern=_ID)
    minor = r.child("minor_stops")
    minor_stops = MinorStops(minor.number("per_hour"), minor.number("mean_seconds", minimum=1, maximum=110),
                             minor.codes("reasons", ("JAM",)))
    minor.done()
    interruptions = {}
    for key in ("blocked", "starved"):
        c = r.child(key, {"per_hour": 0, "mean_minutes": 1})
        interruptions[key] = Interruptions(c.number("per_hour"), c.number("mean_minutes", minimum=0, exclusive=True))
        c.done()
    values = []
    for i, raw in enumerate(r.items("process_values", [])):
        p = _Reader(raw, f"{r.at('process_values')}[{i}]")
        values.append(ProcessValue(p.text("parameter", pattern=re.compile(r"[a-z][a-z0-9_]*\Z")), p.text("unit"),
                                   p.number("mean", minimum=float("-inf")), p.number("sd"),
                                   p.number("drift_per_hour", 0.0, minimum=float("-inf")),
                                   p.number("every_seconds", 300.0, minimum=1)))
        p.done()
    unit = WorkUnit(
        unit_id=unit_id, name=r.text("name", unit_id.capitalize()),
        speed_factor=r.number("speed_factor", 1.0, minimum=0, exclusive=True),
        reject_rate=r.number("reject_rate", 0.0, maximum=1), scrap_reports_per_hour=r.number("scrap_reports_per_hour", 0.0),
        rework_share=r.number("rework_share", 0.0, maximum=1),
        runs_through_breaks=r.flag("runs_through_breaks", False),
        failures=_failures(r.child("failures")), minor_stops=minor_stops,
        blocked=interruptions["blocked"], starved=interruptions["starved"], process_values=tuple(values),
        operator_id=r.text("operator", f"OP-{unit_id.upper()}"))
    r.done()
    return unit


def _characteristic(r: _Reader) -> Characteristic:
    kind = r.text("kind")
    if kind not in ("variable", "attribute"):
        raise PlantError(r.at("kind"), f"must be variable or attribute, got {kind!r}")
    c = Characteristic(
        characteristic_id=r.text("id", pattern=_CODE), name=r.text("name"), kind=kind,
        sample_size=r.integer("sample_size", 1), every_n_parts=r.integer("every_n_parts"),
        lsl=r.number("lsl", None, minimum=float("-inf")), usl=r.number("usl", None, minimum=float("-inf")),
        target=r.number("target", None, minimum=float("-inf")), sigma=r.number("sigma", None, minimum=0, exclusive=True),
        unit=r.text("unit", None), drift_per_hour=r.number("drift_per_hour", 0.0, minimum=float("-inf")),
        fail_rate=r.number("fail_rate", 0.0, maximum=1))
    if kind == "variable":
        for key in ("lsl", "usl", "target", "sigma"):
            if getattr(c, key) is None:
                raise PlantError(r.at(key), "is required for a variable characteristic")
        if not c.lsl < c.target < c.usl:  # type: ignore[operator]
            raise PlantError(r.at("target"), f"must lie between lsl {c.lsl:g} and usl {c.usl:g}, got {c.target:g}")
        if not 1 <= c.sample_size <= 10:
            raise PlantError(r.at("sample_size"), f"must be 1 to 10 for a variable (SPC subgroups), got {c.sample_size}")
    r.done()
    return c


def load(path: str | Path = DEFAULT_PLANT) -> Plant:
    """Read and validate a plant; raises PlantError naming the field that breaks a rule."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise PlantError(str(path), f"is not valid YAML: {error}") from None
    return parse(document, source=str(path))


def parse(document: Any, source: str = "") -> Plant:
    """Validate a plant given as the parsed YAML document (a dict)."""
    root = _Reader(document, "")
    site = root.child("plant")
    time_zone = site.text("time_zone", "UTC")
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PlantError(site.at("time_zone"), f"must be an IANA time zone like Europe/Berlin, got {time_zone!r}") from None
    day = site.raw("date")
    if not isinstance(day, date):
        try:
            day = date.fromisoformat(str(day))
        except ValueError:
            raise PlantError(site.at("date"), f"must be a date like 2026-11-03, got {day!r}") from None
    header = dict(name=site.text("name", "plant"), enterprise=site.text("enterprise", pattern=_ID),
                  site=site.text("site", pattern=_ID), site_name=site.text("site_name", "Plant"),
                  time_zone=time_zone, area=site.text("area", "assembly", pattern=_ID), day=day)
    technicians = tuple(site.items("technicians", ["TECH-01"]))
    site.done()

    shifts = []
    for i, raw in enumerate(root.items("shifts")):
        s = _Reader(raw, f"shifts[{i}]")
        breaks = []
        for j, b in enumerate(s.items("breaks", [])):
            br = _Reader(b, f"shifts[{i}].breaks[{j}]")
            breaks.append(Break(br.clock("start"), br.clock("end")))
            br.done()
        shifts.append(ShiftPlan(s.text("id", pattern=_CODE), s.clock("start"), s.clock("end"), tuple(breaks)))
        s.done()
    if not shifts:
        raise PlantError("shifts", "must name at least one shift")

    materials = []
    for i, raw in enumerate(root.items("materials", [])):
        m = _Reader(raw, f"materials[{i}]")
        materials.append(Material(m.text("id", pattern=_CODE), m.text("unit", "kg"), m.text("location", "STORES", pattern=_CODE)))
        m.done()

    defaults = root.raw("defaults", {})
    if not isinstance(defaults, dict):
        raise PlantError("defaults", "must be a mapping")
    lines = []
    unit_ids: set[str] = set()
    for i, raw in enumerate(root.items("lines")):
        r = _Reader(raw, f"lines[{i}]")
        units = []
        for j, u in enumerate(r.items("work_units")):
            if not isinstance(u, dict):
                raise PlantError(f"lines[{i}].work_units[{j}]", "must be a mapping")
            unit = _work_unit(_Reader(_merge(defaults, u), f"lines[{i}].work_units[{j}]"))
            if unit.unit_id in unit_ids:
                raise PlantError(f"lines[{i}].work_units[{j}].id", f"{unit.unit_id!r} is used twice")
            unit_ids.add(unit.unit_id)
            units.append(unit)
        if not units:
            raise PlantError(f"lines[{i}].work_units", "must name at least one work unit")
        orders = []
        for j, o in enumerate(r.items("orders", [])):
            o_r = _Reader(o, f"lines[{i}].orders[{j}]")
            orders.append(Order(o_r.text("id", pattern=_CODE), o_r.text("product"), o_r.integer("quantity")))
            o_r.done()
        lines.append(Line(r.text("id", pattern=_ID), r.text("name", f"Line {i + 1}"), tuple(units), tuple(orders)))
        r.done()

    products = []
    for i, raw in enumerate(root.items("products")):
        r = _Reader(raw, f"products[{i}]")
        product_id, line_id = r.text("id", pattern=_CODE), r.text("line")
        line = next((x for x in lines if x.line_id == line_id), None)
        if line is None:
            raise PlantError(r.at("line"), f"names no line of the plant: {line_id!r}")
        routing = []
        for j, s in enumerate(r.items("routing")):
            st = _Reader(s, f"products[{i}].routing[{j}]")
            step = Step(st.text("operation", pattern=_CODE), st.text("work_unit"),
                        st.number("ideal_cycle_time_s", minimum=0, exclusive=True))
            if not any(u.unit_id == step.work_unit for u in line.work_units):
                raise PlantError(st.at("work_unit"), f"{step.work_unit!r} is not a work unit of line {line_id!r}")
            st.done()
            routing.append(step)
        if not routing:
            raise PlantError(r.at("routing"), "must have at least one step")
        bom = []
        for j, b in enumerate(r.items("bom", [])):
            bl = _Reader(b, f"products[{i}].bom[{j}]")
            bom.append(BomLine(bl.text("material"), bl.number("quantity_per_unit", minimum=0, exclusive=True)))
            bl.done()
        inspection = None
        if r.has("inspection"):
            ins = r.child("inspection")
            operation = ins.text("operation")
            if operation not in {s.operation for s in routing}:
                raise PlantError(ins.at("operation"), f"{operation!r} is not an operation of the routing")
            chars = tuple(_characteristic(_Reader(c, f"products[{i}].inspection.characteristics[{k}]"))
                          for k, c in enumerate(ins.items("characteristics")))
            inspection = InspectionPlan(ins.text("id", f"IP-{product_id}", pattern=_CODE), operation, chars)
            ins.done()
        products.append(Product(product_id, r.text("name", product_id), line_id,
                                r.number("setup_minutes", 10.0), tuple(routing), tuple(bom), inspection,
                                r.flag("material_loaded", False)))
        r.done()
    known = {p.product_id for p in products} | {m.material_id for m in materials}
    for i, product in enumerate(products):
        for j, line_ in enumerate(product.bom):
            if line_.material_id not in known:
                raise PlantError(f"products[{i}].bom[{j}].material", f"names no material or product: {line_.material_id!r}")
            if line_.material_id == product.product_id:
                raise PlantError(f"products[{i}].bom[{j}].material", "a product cannot consume itself")
    for i, line in enumerate(lines):
        for j, order in enumerate(line.orders):
            if order.product_id not in {p.product_id for p in products if p.line == line.line_id}:
                raise PlantError(f"lines[{i}].orders[{j}].product", f"{order.product_id!r} is not a product of this line")

    plans = []
    for i, raw in enumerate(root.items("maintenance_plans", [])):
        r = _Reader(raw, f"maintenance_plans[{i}]")
        trigger = r.child("trigger")
        kind = trigger.text("kind")
        if kind not in TRIGGER_KINDS:
            raise PlantError(trigger.at("kind"), f"must be one of {', '.join(TRIGGER_KINDS)}, got {kind!r}")
        plan = MaintenancePlan(
            plan_id=r.text("id", pattern=_CODE), work_unit=r.text("work_unit"), task=r.text("task"), kind=kind,
            interval_hours=trigger.number("interval_hours", None, minimum=0, exclusive=True),
            hours=trigger.number("hours", None, minimum=0, exclusive=True), cycles=trigger.integer("cycles", None),
            perform_minutes=r.number("perform_minutes", None, minimum=0, exclusive=True))
        required = {"calendar": "interval_hours", "runtime_hours": "hours", "cycles": "cycles"}[kind]
        if getattr(plan, required) is None:
            raise PlantError(trigger.at(required), f"is required for a {kind} trigger")
        if plan.work_unit not in unit_ids:
            raise PlantError(r.at("work_unit"), f"names no work unit of the plant: {plan.work_unit!r}")
        trigger.done()
        r.done()
        plans.append(plan)
    root.done()
    return Plant(**header, shifts=tuple(shifts), lines=tuple(lines), products=tuple(products),
                 materials=tuple(materials), maintenance_plans=tuple(plans), technicians=technicians, source=source)
