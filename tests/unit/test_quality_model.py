"""Quality's pure core, Given/When/Then over events: sampling, SPC charts and limits versions,
nonconformances, holds and dispositions, refusals."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from services.quality import model
from services.quality.events import (
    Characteristic,
    ControlLimitsChanged,
    InspectionDue,
    InspectionPlanDefined,
    InspectionRecorded,
    LotDispositioned,
    LotHeld,
    LotReleased,
    LotScrapped,
    LotSentToRework,
    NonconformanceClosed,
    NonconformanceOpened,
    OrderStarted,
    ProductionReported,
    QualityInputRefused,
    SpcRuleViolated,
)
from services.quality.handlers import fold

T0 = datetime(2026, 11, 2, 6, tzinfo=UTC)
_ids = count()


def env(minutes: float = 0) -> dict:
    at = T0 + timedelta(minutes=minutes)
    return {"event_id": f"E-{next(_ids)}", "occurred_at": at, "recorded_at": at, "source": "test"}


def plan(*characteristics: Characteristic, plan_id: str = "IP-BRACKET-0010", minutes: float = 0) -> InspectionPlanDefined:
    return InspectionPlanDefined(**env(minutes), plan_id=plan_id, product_id="P-BRACKET", operation="0010",
                                 characteristics=characteristics)


def diameter(**overrides) -> Characteristic:
    fields = {"characteristic_id": "HOLE-DIA-1", "name": "Hole diameter", "kind": "variable", "lsl": 9.9, "usl": 10.1,
              "target": None, "sigma": None, "unit": "mm", "sample_size": 1, "every_n_parts": 100}
    return Characteristic(**{**fields, **overrides})


def burr(**overrides) -> Characteristic:
    return Characteristic(**{"characteristic_id": "BURR", "name": "Burr free", "kind": "attribute", "sample_size": 5,
                             "every_n_parts": 500, **overrides})


def produced(good: int, scrap: int = 0, lot: str = "LOT-WO-1042", minutes: float = 1) -> ProductionReported:
    return ProductionReported(**env(minutes), order_id="WO-1042", operation="0010", equipment_id="acme.press07",
                              product_id="P-BRACKET", lot_id=lot, good=good, scrap=scrap, final_operation=True)


def inspected(*values: float, passed: bool | None = None, char: str = "HOLE-DIA-1", lot: str | None = "LOT-WO-1042",
              minutes: float = 2) -> InspectionRecorded:
    return InspectionRecorded(**env(minutes), characteristic_id=char, plan_id="IP-BRACKET-0010",
                              equipment_id="acme.press07", order_id="WO-1042", lot_id=lot,
                              values=list(values) if values else None, passed=passed)


def disposition(decision: str, nc: str | None = None, lot: str = "LOT-WO-1042") -> LotDispositioned:
    return LotDispositioned(**env(30), lot_id=lot, disposition=decision, nonconformance_id=nc)


def run(*events, batch: model.BatchState | None = None) -> tuple[model.BatchState, list]:
    batch = batch or model.BatchState()
    return batch, fold(batch, events)


def of(derived, cls) -> list:
    return [e for e in derived if isinstance(e, cls)]


# -- sampling ------------------------------------------------------------------------------------------


def test_a_sample_is_due_every_n_parts_of_an_order():
    _, derived = run(plan(diameter(every_n_parts=100)), produced(60), produced(60), produced(250))
    dues = of(derived, InspectionDue)
    assert [d.parts_produced for d in dues] == [100, 200, 300]
    assert {d.reason for d in dues} == {"every_n_parts"} and {d.order_id for d in dues} == {"WO-1042"}


def test_due_ids_do_not_depend_on_how_the_parts_were_reported():
    _, one = run(plan(diameter(every_n_parts=100)), produced(300))
    _, many = run(plan(diameter(every_n_parts=100)), *[produced(30) for _ in range(10)])
    assert [d.event_id for d in of(one, InspectionDue)] == [d.event_id for d in of(many, InspectionDue)]


def test_a_per_lot_sample_is_due_once_per_lot_and_a_first_article_at_order_start():
    started = OrderStarted(**env(), order_id="WO-1042", product_id="P-BRACKET", quantity=1000, operation="0010",
                           equipment_id="acme.press07")
    _, derived = run(plan(diameter(sampling="per_lot"), burr(sampling="order_start")), started,
                     produced(10), produced(10), produced(10, lot="LOT-WO-1042-B"))
    dues = of(derived, InspectionDue)
    assert [(d.characteristic_id, d.reason, d.lot_id) for d in dues] == [
        ("BURR", "order_start", None), ("HOLE-DIA-1", "per_lot", "LOT-WO-1042"), ("HOLE-DIA-1", "per_lot", "LOT-WO-1042-B")]


def test_production_of_another_operation_makes_nothing_due():
    other = ProductionReported(**env(), order_id="WO-1042", operation="0020", equipment_id="acme.press08",
                               product_id="P-BRACKET", lot_id="LOT-WO-1042", good=500, scrap=0, final_operation=True)
    _, derived = run(plan(diameter(every_n_parts=100)), other)
    assert of(derived, InspectionDue) == []


# -- specification limits, holds and dispositions --------------------------------------------------------


def test_a_value_outside_the_specification_opens_a_nonconformance_and_holds_the_lot():
    batch, derived = run(plan(diameter()), inspected(10.0), inspected(10.2))
    (opened,) = of(derived, NonconformanceOpened)
    (held,) = of(derived, LotHeld)
    assert opened.values_outside == 1 and held.lot_id == "LOT-WO-1042" and held.nonconformance_id == opened.nonconformance_id
    assert batch.lots["LOT-WO-1042"].status == "HELD"


def test_a_failed_attribute_holds_the_lot_once_even_with_two_nonconformances():
    batch, derived = run(plan(burr()), inspected(passed=False, char="BURR"), inspected(passed=False, char="BURR"))
    assert len(of(derived, NonconformanceOpened)) == 2 and len(of(derived, LotHeld)) == 1
    assert batch.inspections[0].inspected == 5 and batch.inspections[0].good == 0


def test_release_closes_the_nonconformance_and_releases_the_lot():
    batch, derived = run(plan(diameter()), inspected(10.3))
    nc = of(derived, NonconformanceOpened)[0].nonconformance_id
    _, derived = run(disposition("RELEASE", nc), batch=batch)
    assert [type(e) for e in derived] == [NonconformanceClosed, LotReleased]
    assert batch.lots["LOT-WO-1042"].status == "RELEASED" and batch.holds_ended[0].outcome == "RELEASE"


def test_releasing_one_of_two_nonconformances_keeps_the_lot_held():
    batch, derived = run(plan(diameter()), inspected(10.3), inspected(9.5))
    first = of(derived, NonconformanceOpened)[0].nonconformance_id
    _, derived = run(disposition("RELEASE", first), batch=batch)
    assert of(derived, LotReleased) == [] and batch.lots["LOT-WO-1042"].status == "HELD"
    _, derived = run(disposition("RELEASE"), batch=batch)
    assert len(of(derived, LotReleased)) == 1


def test_scrap_and_rework_settle_every_open_nonconformance_of_the_lot():
    batch, _ = run(plan(diameter()), inspected(10.3), inspected(9.5))
    _, derived = run(disposition("SCRAP"), batch=batch)
    assert len(of(derived, NonconformanceClosed)) == 2 and len(of(derived, LotScrapped)) == 1
    batch, _ = run(plan(diameter()), inspected(10.3, lot="LOT-B"))
    _, derived = run(disposition("REWORK", lot="LOT-B"), batch=batch)
    assert len(of(derived, LotSentToRework)) == 1 and batch.lots["LOT-B"].reworked


def test_inspections_after_rework_are_not_first_pass():
    batch, _ = run(plan(diameter()), inspected(10.3), disposition("REWORK"), inspected(10.0))
    assert [i.first_pass for i in batch.inspections] == [True, False]


def test_a_disposition_without_an_open_nonconformance_is_refused():
    _, derived = run(disposition("RELEASE", lot="LOT-UNKNOWN"))
    (refused,) = of(derived, QualityInputRefused)
    assert refused.refused_type == "LotDispositioned" and "no open nonconformance" in refused.reason


# -- SPC -----------------------------------------------------------------------------------------------


def test_a_baseline_of_25_subgroups_gives_version_1_and_evaluates_the_baseline_again():
    values = [10.0 + 0.01 * ((i * 7) % 5 - 2) for i in range(30)]
    batch, derived = run(plan(diameter()), *[inspected(v) for v in values])
    (limits,) = of(derived, ControlLimitsChanged)
    assert limits.version == 1 and limits.limits_source == "baseline" and limits.baseline_subgroups == 25
    versions = [(p.point, p.version) for p in batch.points]
    assert versions[:25] == [(i, 0) for i in range(1, 26)]          # collected without limits
    assert versions[25:50] == [(i, 1) for i in range(1, 26)]        # the baseline evaluated under v1
    assert versions[50:] == [(i, 1) for i in range(26, 31)]         # later points under v1


def test_the_plans_target_and_sigma_set_the_limits_from_the_first_point():
    _, derived = run(plan(diameter(target=10.0, sigma=0.02)), inspected(10.0), inspected(10.1))
    (limits,) = of(derived, ControlLimitsChanged)
    assert (limits.limits_source, limits.centre, limits.ucl) == ("plan", 10.0, 10.06)
    violations = of(derived, SpcRuleViolated)
    assert [(v.chart, v.rule, v.point) for v in violations] == [("I", 1, 2), ("MR", 1, 2)]


def test_new_limits_from_a_redefined_plan_are_a_new_version_over_the_whole_history():
    batch, _ = run(plan(diameter(target=10.0, sigma=0.02)), *[inspected(10.0 + 0.001 * i) for i in range(5)])
    batch.charts[("IP-BRACKET-0010", "HOLE-DIA-1")].history = [s for _, _, s in batch.subgroups]  # as the projection loads it
    _, derived = run(plan(diameter(target=10.05, sigma=0.02), minutes=10), batch=batch)
    (limits,) = of(derived, ControlLimitsChanged)
    assert limits.version == 2
    assert [(p.point, p.version) for p in batch.points][-5:] == [(i, 2) for i in range(1, 6)]
    assert [(p.point, p.version) for p in batch.points][:5] == [(i, 1) for i in range(1, 6)]


def test_a_rule_violation_is_emitted_once_for_a_run():
    batch, derived = run(plan(diameter(target=10.0, sigma=0.02)), *[inspected(10.01) for _ in range(12)])
    assert [(v.rule, v.point) for v in of(derived, SpcRuleViolated)] == [(2, 9)]


def test_subgroups_chart_means_and_ranges():
    batch, derived = run(plan(diameter(sample_size=5, target=10.0, sigma=0.02)),
                         inspected(10.0, 10.01, 9.99, 10.02, 9.98))
    point = batch.points[-1]
    assert point.subgroup.mean == 10.0 and abs(point.subgroup.range - 0.04) < 1e-12 and point.version == 1


def test_bad_inspections_are_refused_and_change_nothing():
    batch, derived = run(plan(diameter(), burr()),
                         InspectionRecorded(**env(), characteristic_id="HOLE-DIA-1", plan_id="IP-BRACKET-0010"),
                         inspected(*[10.0] * 11), inspected(float("nan")), inspected(passed=True),
                         inspected(10.0, char="BURR"), inspected(10.0), inspected(10.0, 10.0))
    reasons = [e.reason for e in of(derived, QualityInputRefused)]
    assert len(reasons) == 6
    assert "exactly one of" in reasons[0] and "1 to 10" in reasons[1] and "finite" in reasons[2]
    assert "is a variable" in reasons[3] and "is an attribute" in reasons[4] and "subgroups of 1" in reasons[5]
    assert len(batch.inspections) == 1


def test_capability_statistics_are_kept_per_day_month_and_all_time():
    batch, _ = run(plan(diameter()), inspected(10.0), inspected(10.02, minutes=60 * 24))
    periods = sorted((k[2], k[3]) for k in batch.stats if batch.stats[k] is not None)
    assert [p for p, _ in periods] == ["all", "day", "day", "month"]
