"""The part of a unit's state changes each period is computed from: the same elements as from all of them."""
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.execution import kpi
from services.execution.projections import _Timeline

T0 = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
STATES = sorted(kpi.STATES)

rows = st.lists(st.tuples(st.integers(0, 40), st.sampled_from(STATES), st.integers(0, 60)), max_size=40).map(
    lambda changes: [(T0 + timedelta(minutes=at), state, None, T0 + timedelta(minutes=at + late))
                     for at, state, late in changes])


def elements(window: kpi.Window, changes: list[kpi.StateChange]) -> kpi.Elements:
    shift = kpi.Shift("A", T0, T0 + timedelta(minutes=45), ((T0 + timedelta(minutes=20), T0 + timedelta(minutes=25)),))
    return kpi.compute(window, window.end, states=changes, shifts=[shift])


@settings(max_examples=300, deadline=None)
@given(rows, st.integers(0, 40), st.integers(1, 20), st.one_of(st.none(), st.integers(0, 100)))
def test_a_window_computed_from_its_part_of_the_timeline_equals_one_computed_from_all_of_it(history, start, length, cut):
    window = kpi.Window(T0 + timedelta(minutes=start), T0 + timedelta(minutes=start + length))
    cutoff = None if cut is None else T0 + timedelta(minutes=cut)
    known = [row for row in history if cutoff is None or row[3] <= cutoff]
    everything = [kpi.StateChange(at, state, reason) for at, state, reason, _ in known]
    part = _Timeline(history).window(window.start, window.end, cutoff)
    assert elements(window, part) == elements(window, everything)
    assert len(part) <= len(everything)


def test_of_changes_at_one_instant_before_the_window_the_last_read_wins_and_earlier_ones_are_left_out():
    at = T0 + timedelta(minutes=5)
    history = [(T0, "RUNNING", None, T0), (at, "DOWN", "E-HYD-12", at), (at, "SETUP", None, at),
               (T0 + timedelta(minutes=30), "RUNNING", None, T0 + timedelta(minutes=30))]
    part = _Timeline(history).window(T0 + timedelta(minutes=10), T0 + timedelta(minutes=20))
    assert [(c.at, c.state) for c in part] == [(at, "DOWN"), (at, "SETUP")]


def test_a_change_recorded_after_the_cutoff_is_not_the_state_a_version_starts_in():
    late = T0 + timedelta(hours=2)
    history = [(T0, "RUNNING", None, T0), (T0 + timedelta(minutes=5), "DOWN", None, late)]
    part = _Timeline(history).window(T0 + timedelta(minutes=10), T0 + timedelta(minutes=20), cutoff=T0 + timedelta(hours=1))
    assert [c.state for c in part] == ["RUNNING"]
