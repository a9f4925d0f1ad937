"""Maintenance's pure core, Given/When/Then over events: failures, work orders, dues, conditions, KPIs."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.maintenance import model, reliability
from services.maintenance.events import (
    AlarmCleared,
    AlarmRaised,
    EquipmentLockedOut,
    EquipmentReleased,
    MachineStateChanged,
    MaintenanceInputRefused,
    MaintenancePlanDefined,
    MaintenanceTrigger,
    MaintenanceWorkReported,
    PreventiveMaintenanceDue,
    ProcessValueMeasured,
    RuntimeAccumulated,
    WorkOrderClosed,
    WorkOrderOpened,
)
from services.maintenance.handlers import fold

PRESS = "acme.berlin.assembly.line1.press07"
DAY = datetime(2026, 11, 2, tzinfo=UTC)


def at(hhmm: str) -> datetime:
    parts = [int(p) for p in hhmm.split(":")]
    hour, minute, second = (parts + [0, 0])[:3]
    return DAY.replace(hour=hour, minute=minute, second=second)


_seq = iter(range(10**9))


def env(when: datetime) -> dict:
    return {"event_id": f"e{next(_seq)}", "occurred_at": when, "recorded_at": when, "source": "test"}


def state(hhmm: str, s: str, reason: str | None = None, unit: str = PRESS) -> MachineStateChanged:
    return MachineStateChanged(**env(at(hhmm)), equipment_id=unit, state=s, reason_code=reason)


def alarm(hhmm: str, code: str, severity: str = "critical") -> AlarmRaised:
    return AlarmRaised(**env(at(hhmm)), equipment_id=PRESS, alarm_code=code, severity=severity, text="Hydraulic pressure low")


def work(order_id: str, status: str, hhmm: str, technician: str = "TECH-07") -> MaintenanceWorkReported:
    return MaintenanceWorkReported(**env(at(hhmm)), work_order_id=order_id, status=status, technician_id=technician)


def runtime(hour: int, total_h: float, cycles: int = 0, total_cycles: int = 0) -> RuntimeAccumulated:
    start = DAY + timedelta(hours=hour)
    return RuntimeAccumulated(**env(start + timedelta(hours=1)), equipment_id=PRESS, period_start=start,
                              period_end=start + timedelta(hours=1), runtime_s=3600.0, cycles=cycles,
                              total_runtime_s=total_h * 3600, total_cycles=total_cycles)


def plan(kind: str, when: str = "00:00", plan_id: str = "MP-PRESS07-LUBE", **amount) -> MaintenancePlanDefined:
    return MaintenancePlanDefined(**env(at(when)), plan_id=plan_id, equipment_id=PRESS, task="Lubricate main bearing",
                                  trigger=MaintenanceTrigger(kind=kind, **amount))


# The known failure sequence of the hand computation in docs/maintenance.md.
SHIFT = [
    state("06:00", "RUNNING"),
    state("07:00", "DOWN", "E-HYD-12"),      # failure 1: technical reason
    state("07:30", "RUNNING"),               # restored: TTR 1800 s, TTF 3600 s (06:00-07:00)
    state("08:00", "SETUP", "CHANGEOVER"),   # setup is operating time
    state("08:20", "RUNNING"),
    state("09:00", "DOWN", "JAM"),           # 60 s: a minor stop, not a failure
    state("09:01", "RUNNING"),
    state("10:00", "IDLE"),                  # idle is not operating time
    state("10:30", "RUNNING"),
    state("11:00", "DOWN"),                  # no reason yet ...
    alarm("11:00:30", "A-0815"),             # ... a critical alarm makes it failure 2
    state("11:20", "BLOCKED", "CONVEYOR-FULL"),  # a failure lasts until RUNNING, IDLE or SETUP
    AlarmCleared(**env(at("11:35")), equipment_id=PRESS, alarm_code="A-0815"),
    state("11:40", "RUNNING"),               # restored: TTR 2400 s; TTF 07:30-11:00 less the idle and the minor stop
    state("12:00", "DOWN", "BREAK"),         # a non-technical reason: not a failure
    state("12:10", "RUNNING"),
    state("13:00", "OFFLINE", "END-OF-SHIFT"),
]


def test_failures_of_a_known_shift_and_their_reliability_by_hand():
    # Given a shift with two failures, a minor stop, an idle spell and a non-technical stop
    batch = model.BatchState()
    # When it is folded
    derived = fold(batch, SHIFT)
    # Then two failures are recorded, with their times to failure and to restoration
    failures = sorted(batch.failures.values(), key=lambda f: f.started_at)
    assert [(f.started_at, f.restored_at, f.reason_code, f.alarm_code) for f in failures] == [
        (at("07:00"), at("07:30"), "E-HYD-12", None), (at("11:00"), at("11:40"), None, "A-0815")]
    assert [f.ttr_us / 1e6 for f in failures] == [1800.0, 2400.0]
    assert [f.ttf_us / 1e6 for f in failures] == [3600.0, (149 + 30) * 60.0]
    # And one corrective work order per failure, carrying its reason and alarm
    opened = [e for e in derived if isinstance(e, WorkOrderOpened)]
    assert [(e.kind, e.failure_id, e.reason_code, e.alarm_code) for e in opened] == [
        ("corrective", failures[0].failure_id, "E-HYD-12", None), ("corrective", failures[1].failure_id, None, "A-0815")]
    # And MTBF, MTTF and MTTR equal the hand computation
    operating = {d: us for (_, d), us in batch.operating.items()}
    assert sum(operating.values()) / 1e6 == (60 + 90 + 59 + 30 + 20 + 50) * 60
    kpis = reliability.elements(DAY, DAY + timedelta(days=1), failures=failures, operating=operating)
    assert (kpis.failures, kpis.restored) == (2, 2)
    assert kpis.mtbf_s == 18540 / 2 == 9270.0
    assert kpis.mttf_s == (3600 + 10740) / 2 == 7170.0
    assert kpis.mttr_s == (1800 + 2400) / 2 == 2100.0


def test_a_period_without_failures_has_null_mtbf_mttf_mttr():
    kpis = reliability.elements(DAY, DAY + timedelta(days=1), failures=[], operating={DAY.date(): 3_600_000_000})
    assert (kpis.mtbf_s, kpis.mttf_s, kpis.mttr_s, kpis.cm_ratio) == (None, None, None, None)


def test_the_minor_stop_threshold_is_configurable():
    # Given a threshold of 30 s, the 60 s jam of the shift is a failure too
    batch = model.BatchState(rules=model.Rules(minor_stop=timedelta(seconds=30)))
    fold(batch, SHIFT)
    assert sorted(f.started_at for f in batch.failures.values()) == [at("07:00"), at("09:00"), at("11:00")]


def test_a_long_stop_is_confirmed_by_a_later_machine_event_before_it_ends():
    batch = model.BatchState()
    fold(batch, [state("06:00", "RUNNING"), state("07:00", "DOWN", "E-HYD-12")])
    assert batch.failures == {}
    # When a process value arrives 150 s into the stop
    derived = fold(batch, [ProcessValueMeasured(**env(at("07:02:30")), equipment_id=PRESS, parameter="oil_temp", value=40.0)])
    # Then the failure is confirmed and its work order opened then, still unrestored
    [opened] = derived
    assert isinstance(opened, WorkOrderOpened) and opened.occurred_at == at("07:02:30")
    [failure] = batch.failures.values()
    assert failure.restored_at is None
    # And restoring it later opens nothing more
    assert fold(batch, [state("07:30", "RUNNING")]) == []
    assert batch.failures[failure.failure_id].restored_at == at("07:30")


def test_a_critical_alarm_active_before_the_stop_makes_it_a_failure_and_a_cleared_one_does_not():
    batch = model.BatchState()
    fold(batch, [state("06:00", "RUNNING"), alarm("06:10", "A-1"), AlarmCleared(**env(at("06:20")), equipment_id=PRESS,
                                                                                   alarm_code="A-1"),
                 state("06:30", "DOWN"), state("06:40", "RUNNING")])
    assert batch.failures == {}
    fold(batch, [alarm("06:50", "A-2"), state("07:00", "DOWN"), state("07:10", "RUNNING")])
    assert [f.alarm_code for f in batch.failures.values()] == ["A-2"]


def test_a_warning_alarm_does_not_make_a_failure():
    batch = model.BatchState()
    fold(batch, [state("06:00", "RUNNING"), state("07:00", "DOWN"), alarm("07:01", "W-1", "warning"), state("07:30", "RUNNING")])
    assert batch.failures == {}


def test_a_late_machine_event_changes_nothing():
    batch = model.BatchState()
    fold(batch, [state("06:00", "RUNNING"), state("07:00", "DOWN", "E-1")])
    assert fold(batch, [state("06:30", "RUNNING")]) == []
    assert len(batch.late) == 1 and batch.units[PRESS].state == "DOWN"


# -- work orders --------------------------------------------------------------------------------------


def failed_batch() -> tuple[model.BatchState, str]:
    batch = model.BatchState()
    [opened] = fold(batch, [state("06:00", "RUNNING"), state("07:00", "DOWN", "E-HYD-12"), state("07:30", "RUNNING")])
    return batch, opened.work_order_id


def test_a_corrective_order_is_started_and_completed_without_a_lockout():
    batch, order_id = failed_batch()
    assert fold(batch, [work(order_id, "STARTED", "07:05")]) == []
    [closed] = fold(batch, [work(order_id, "COMPLETED", "07:25")])
    assert isinstance(closed, WorkOrderClosed)
    assert (closed.kind, closed.work_duration_s, closed.technician_id) == ("corrective", 1200.0, "TECH-07")
    assert batch.work_orders[order_id].status == "CLOSED"


def test_impossible_work_reports_are_refused_with_a_reason():
    batch, order_id = failed_batch()
    [unknown] = fold(batch, [work("MWO-NOPE", "STARTED", "08:00")])
    assert isinstance(unknown, MaintenanceInputRefused) and "no such work order" in unknown.reason
    fold(batch, [work(order_id, "STARTED", "08:00")])
    [twice] = fold(batch, [work(order_id, "STARTED", "08:05")])
    assert isinstance(twice, MaintenanceInputRefused) and "was started" in twice.reason
    [backwards] = fold(batch, [work(order_id, "COMPLETED", "07:59")])
    assert "before the work started" in backwards.reason
    fold(batch, [work(order_id, "COMPLETED", "08:30")])
    [closed] = fold(batch, [work(order_id, "COMPLETED", "08:40")])
    assert "already closed" in closed.reason
    assert batch.work_orders[order_id].completed_at == at("08:30")


def test_completed_without_started_closes_with_no_work_time():
    batch, order_id = failed_batch()
    [closed] = fold(batch, [work(order_id, "COMPLETED", "08:00")])
    assert closed.started_at is None and closed.work_duration_s is None


# -- preventive maintenance ---------------------------------------------------------------------------


def test_a_runtime_plan_falls_due_once_per_threshold_and_locks_the_unit_out_while_worked_on():
    batch = model.BatchState()
    fold(batch, [plan("runtime_hours", hours=2.0)])
    assert fold(batch, [runtime(0, 1.0)]) == []
    derived = fold(batch, [runtime(1, 2.0)])
    due, opened = derived
    assert isinstance(due, PreventiveMaintenanceDue) and (due.event_id, due.due_index, due.due_runtime_h) == (
        "MP-PRESS07-LUBE:r1:due:1", 1, 2.0)
    assert isinstance(opened, WorkOrderOpened) and opened.kind == "preventive" and opened.work_order_id == due.work_order_id
    # the same hour again (a redelivery under a new id) and the next hour cross nothing new
    assert fold(batch, [runtime(1, 2.0), runtime(2, 3.0)]) == []
    assert [type(e) for e in fold(batch, [runtime(3, 4.0)])] == [PreventiveMaintenanceDue, WorkOrderOpened]
    # planned work locks out at STARTED and releases at COMPLETED
    [locked] = fold(batch, [work(due.work_order_id, "STARTED", "05:00")])
    assert isinstance(locked, EquipmentLockedOut) and locked.plan_id == "MP-PRESS07-LUBE"
    closed, released = fold(batch, [work(due.work_order_id, "COMPLETED", "05:45")])
    assert isinstance(closed, WorkOrderClosed) and isinstance(released, EquipmentReleased)
    assert closed.work_duration_s == 2700.0


def test_a_runtime_plan_counts_from_the_runtime_known_at_its_definition():
    batch = model.BatchState()
    fold(batch, [runtime(0, 10.0), plan("runtime_hours", when="01:30", hours=2.0)])
    assert fold(batch, [runtime(1, 11.5)]) == []
    [due, _] = fold(batch, [runtime(2, 12.0)])
    assert due.due_runtime_h == 12.0


def test_a_jump_past_two_thresholds_emits_both():
    batch = model.BatchState()
    fold(batch, [plan("cycles", cycles=1000)])
    derived = fold(batch, [runtime(0, 1.0, 2500, 2500)])
    assert [e.due_cycles for e in derived if isinstance(e, PreventiveMaintenanceDue)] == [1000, 2000]


def test_a_calendar_plan_falls_due_by_the_units_machine_clock():
    batch = model.BatchState()
    fold(batch, [plan("calendar", when="00:00", interval_s=8 * 3600)])
    assert fold(batch, [state("07:59", "RUNNING")]) == []
    [due, _] = fold(batch, [state("08:00", "IDLE")])
    assert due.due_at == at("08:00") and due.occurred_at == at("08:00")
    assert fold(batch, [state("15:00", "RUNNING")]) == []


def test_a_redefined_plan_starts_a_new_revision_and_an_older_definition_is_ignored():
    batch = model.BatchState()
    fold(batch, [plan("cycles", when="01:00", cycles=100), runtime(1, 1.0, 100, 100)])
    fold(batch, [plan("cycles", when="03:00", cycles=50)])
    assert fold(batch, [plan("cycles", when="02:00", cycles=10)]) == []
    assert batch.plans["MP-PRESS07-LUBE"].revision == 2
    [due, _] = fold(batch, [runtime(3, 2.0, 50, 150)])
    assert due.event_id == "MP-PRESS07-LUBE:r2:due:1"


def test_an_invalid_plan_is_refused():
    batch = model.BatchState()
    [refused] = fold(batch, [plan("runtime_hours", interval_s=60.0)])
    assert isinstance(refused, MaintenanceInputRefused) and "trigger.hours" in refused.reason
    [refused] = fold(batch, [plan("weekly")])
    assert "trigger.kind" in refused.reason
    assert batch.plans == {}


# -- condition triggers -------------------------------------------------------------------------------


def pressure(hhmm: str, value: float) -> ProcessValueMeasured:
    return ProcessValueMeasured(**env(at(hhmm)), equipment_id=PRESS, parameter="hydraulic_pressure", value=value, unit="bar")


CONDITION_RULES = model.Rules(condition_limits=(model.ConditionLimit("hydraulic_pressure", low=80, high=200, for_s=60),))


def test_a_process_value_beyond_its_limit_for_the_duration_opens_one_request_per_excursion():
    batch = model.BatchState(rules=CONDITION_RULES)
    assert fold(batch, [pressure("06:00", 150), pressure("06:01", 210), pressure("06:01:30", 230)]) == []
    [opened] = fold(batch, [pressure("06:02", 220)])
    assert opened.kind == "condition" and opened.reason_code == "hydraulic_pressure:above" and "worst 230" in opened.description
    assert fold(batch, [pressure("06:05", 240)]) == []
    # back inside the limits, then a new excursion below: a second request
    fold(batch, [pressure("06:10", 150), pressure("06:20", 70)])
    [second] = fold(batch, [pressure("06:21", 60)])
    assert second.work_order_id != opened.work_order_id and second.reason_code == "hydraulic_pressure:below"


def test_a_short_excursion_opens_nothing_and_unconfigured_parameters_are_ignored():
    batch = model.BatchState(rules=CONDITION_RULES)
    assert fold(batch, [pressure("06:00", 210), pressure("06:00:59", 210), pressure("06:01:10", 150)]) == []
    assert fold(batch, [ProcessValueMeasured(**env(at("07:00")), equipment_id=PRESS, parameter="energy_kwh", value=1e9)]) == []


def test_condition_work_locks_the_unit_out():
    batch = model.BatchState(rules=model.Rules(condition_limits=(model.ConditionLimit("t", high=1.0),)))
    [opened] = fold(batch, [ProcessValueMeasured(**env(at("06:00")), equipment_id=PRESS, parameter="t", value=2.0)])
    [locked] = fold(batch, [work(opened.work_order_id, "STARTED", "06:30")])
    assert isinstance(locked, EquipmentLockedOut)


# -- properties ---------------------------------------------------------------------------------------

STATES = ["RUNNING", "IDLE", "SETUP", "DOWN", "BLOCKED", "STARVED", "OFFLINE"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 900), st.sampled_from(STATES), st.sampled_from([None, "E-1", "BREAK"])),
                min_size=1, max_size=40))
def test_operating_time_is_running_and_setup_time_and_every_failure_outlasts_the_threshold(steps):
    events, t = [], DAY
    for seconds, s, reason in steps:
        t += timedelta(seconds=seconds)
        events.append(MachineStateChanged(**env(t), equipment_id=PRESS, state=s, reason_code=reason))
    batch = model.BatchState()
    fold(batch, events)
    expected = sum(((b.occurred_at - a.occurred_at) // model.US for a, b in zip(events, events[1:], strict=False)
                    if a.state in model.OPERATING), 0)
    assert sum(batch.operating.values()) == batch.units[PRESS].operating_us == expected
    for failure in batch.failures.values():
        assert failure.ttf_us >= 0
        assert failure.restored_at is None or failure.ttr_us >= model.DEFAULT_MINOR_STOP // model.US


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 7200), min_size=1, max_size=30), st.integers(1, 5))
def test_dues_are_emitted_exactly_once_whatever_the_batching(hour_runtimes, split):
    totals, runtimes, total = [], [], 0
    for i, seconds in enumerate(hour_runtimes):
        total += seconds
        totals.append(total)
        start = DAY + timedelta(hours=i)
        runtimes.append(RuntimeAccumulated(**env(start + timedelta(hours=1)), equipment_id=PRESS, period_start=start,
                                           period_end=start + timedelta(hours=1), runtime_s=seconds, cycles=0,
                                           total_runtime_s=float(total), total_cycles=0))
    batch = model.BatchState()
    fold(batch, [plan("runtime_hours", when="00:00", hours=1.0)])
    dues = []
    for i in range(0, len(runtimes), split):
        dues += [e.due_index for e in fold(batch, runtimes[i:i + split]) if isinstance(e, PreventiveMaintenanceDue)]
    assert dues == list(range(1, total // 3600 + 1))


# -- independence of how topics interleave ---------------------------------------------------------


def test_a_plan_folded_after_the_hours_that_follow_its_definition_falls_due_alike():
    # Given a runtime plan defined at 01:30 and hours that end at 01:00, 02:00 and 03:00
    hours = [runtime(0, 10.0), runtime(1, 11.0), runtime(2, 12.0)]
    definition = plan("runtime_hours", when="01:30", hours=2.0)
    # When the plan is folded first, or after the hours (execution's topic ran ahead of the plan topic)
    in_order = model.BatchState()
    first = fold(in_order, [hours[0], definition, *hours[1:]])
    late = model.BatchState(history={PRESS: []})
    fold(late, hours)
    second = fold(late, [definition])
    # Then the same due falls due at the same instant, with the same base
    assert [(e.event_id, e.occurred_at, e.due_runtime_h) for e in first if isinstance(e, PreventiveMaintenanceDue)] == [
        ("MP-PRESS07-LUBE:r1:due:1", at("03:00"), 12.0)]
    assert [(e.event_id, e.occurred_at, e.due_runtime_h) for e in second if isinstance(e, PreventiveMaintenanceDue)] == [
        ("MP-PRESS07-LUBE:r1:due:1", at("03:00"), 12.0)]
    assert in_order.plans == late.plans


def test_an_hour_before_the_definition_folded_after_it_moves_the_base():
    batch = model.BatchState()
    fold(batch, [plan("runtime_hours", when="01:30", hours=2.0), runtime(0, 10.0)])
    assert batch.plans["MP-PRESS07-LUBE"].base_runtime_us == 10 * 3600 * 10**6
    assert fold(batch, [runtime(1, 11.0)]) == []


def test_a_report_folded_before_its_order_opens_is_kept_and_applied_when_it_opens():
    batch = model.BatchState()
    order_id = model.corrective_order_id(PRESS, at("07:00"))
    [refused] = fold(batch, [work(order_id, "STARTED", "07:35")])
    assert isinstance(refused, MaintenanceInputRefused) and [r.work_order_id for r in batch.parked] == [order_id]
    fold(batch, [state("06:00", "RUNNING"), state("07:00", "DOWN", "E-HYD-12"), state("07:30", "RUNNING")])
    assert batch.opened == [order_id]
    assert model.apply_parked(batch, batch.parked) == []
    assert batch.work_orders[order_id].status == "IN_PROGRESS" and batch.work_orders[order_id].started_at == at("07:35")
