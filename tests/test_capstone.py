"""The capstone's scenarios: one per student, reproducible, varied, and valid for the simulator."""
from __future__ import annotations

import pytest

from mlops_lab import capstone
from mlops_lab.simulator import CreditStream


def test_the_same_student_gets_the_same_scenario_and_a_new_salt_a_new_one():
    assert capstone.scenario("student-042") == capstone.scenario(" student-042 ")
    draws = {capstone.scenario("student-042", salt=f"term-{term}") for term in range(20)}
    assert len(draws) > 15, "another class, other scenarios"


def test_a_class_of_thirty_gets_varied_scenarios():
    scenarios = [capstone.scenario(f"s{n:03d}") for n in range(30)]
    assert len(set(scenarios)) == 30
    assert {s.kind for s in scenarios} == set(capstone.DRIFT_KINDS), "every kind of drift in a class of 30"
    assert len({(s.kind, s.cost_ratio, s.min_approval_rate) for s in scenarios}) > 15


@pytest.mark.parametrize("student", ["ada", "s017", "12345"])
def test_a_scenario_runs_in_the_simulator_and_its_brief_states_it(student):
    brief = capstone.scenario(student)
    stream = CreditStream(seed=brief.seed, rows_per_month=200, drift=brief.drift)
    month = stream.month(brief.drift.start_month + brief.drift.ramp_months)
    assert len(month) == 200 and getattr(brief.drift, brief.kind) in capstone.STRENGTHS
    text = brief.markdown()
    assert f"Drift({brief.kind}=" in text and f"{brief.p99_latency_ms} ms" in text and student in text


def test_a_scenario_needs_a_student():
    with pytest.raises(ValueError, match="student id"):
        capstone.scenario("  ")


def test_the_rubric_gives_a_hundred_points_and_says_what_full_marks_are():
    assert sum(points for _, points, _ in capstone.RUBRIC) == 100
    assert all(len(full_marks) > 40 for _, _, full_marks in capstone.RUBRIC)


def test_the_guide_shows_the_rubric_the_package_holds():
    from conftest import ROOT

    guide = (ROOT / "instructors" / "guide.md").read_text()
    for name, points, full_marks in capstone.RUBRIC:
        assert f"| {name} | {points} | {full_marks} |" in guide, f"the guide's rubric row for {name!r} is stale"
