"""Synthetic tasks: generators, verifiers, SFT traces, difficulty knob."""

import pytest

from r1core.data import get_template
from r1core.rewards.format import R1FormatConfig, format_ok
from r1core.data.synthetic import (
    SYNTHETIC_TASKS,
    ArithmeticConfig,
    ArithmeticTask,
    CountdownConfig,
    CountdownTask,
    evaluate_expression,
    get_task,
    solve_with_steps,
    split_problems,
)


def test_registry():
    assert SYNTHETIC_TASKS.names() == ["arithmetic", "countdown"]
    with pytest.raises(KeyError, match="valid: arithmetic, countdown"):
        get_task("sudoku")


def test_arithmetic_precedence_and_steps():
    value, steps = solve_with_steps([3, "+", 4, "*", 2, "-", 5])
    assert value == 6
    assert steps == ["4*2=8, 3+8-5", "3+8=11, 11-5", "11-5=6"]
    assert solve_with_steps([2, "-", 9, "+", 1])[0] == -6


@pytest.mark.parametrize("task", [ArithmeticTask(difficulty=0.6), CountdownTask(difficulty=0.6)], ids=["arithmetic", "countdown"])
def test_generation_is_seeded_and_traces_verify(task):
    problems = task.generate(200, seed=3)
    assert problems == task.generate(200, seed=3)
    assert [p.problem for p in problems] != [p.problem for p in task.generate(200, seed=4)]
    traces = [task.solution_trace(p) for p in problems]
    assert all(format_ok(t, R1FormatConfig()) for t in traces)
    assert [task.verify(t, p.answer) for t, p in zip(traces, problems)] == [1.0] * 200
    # Without the opening tag, for prompts that end with it.
    compact = get_template("compact")
    for problem, trace in zip(problems[:20], traces):
        completion = task.solution_trace(problem, open_think=False)
        assert "<think>" + completion == trace
        assert compact(problem.problem) + completion == problem.problem.strip() + "\n" + trace


def test_arithmetic_verifier_rejects_wrong_and_malformed():
    task = ArithmeticTask()
    assert task.verify("<think>..</think><answer>-12</answer>", "-12") == 1.0
    assert task.verify("<think>..</think><answer>12</answer>", "-12") == 0.0
    assert task.verify("<think>..</think><answer>12.0</answer>", "12") == 0.0
    assert task.verify("the answer is 12", "12") == 0.0
    assert task.verify("<answer></answer>", "12") == 0.0


def test_countdown_verifier():
    task = CountdownTask(CountdownConfig(use_all=True))
    gold = "7:3,4,5"
    assert task.verify("<answer>(3*4)-5</answer>", gold) == 1.0
    assert task.verify("<answer>3*4-5</answer>", gold) == 1.0
    assert task.verify("<answer>4+3</answer>", gold) == 0.0  # 5 unused
    assert task.verify("<answer>(4+3)*5/5</answer>", gold) == 0.0  # 5 used twice
    assert task.verify("<answer>7</answer>", gold) == 0.0
    assert task.verify("<answer>3**2-2</answer>", "7:3,2") == 0.0
    assert task.verify("<answer>__import__('os')</answer>", gold) == 0.0
    assert task.verify("<answer>(5-4)/(3-3)</answer>", "1:5,4,3,3") == 0.0
    assert CountdownTask(CountdownConfig(use_all=False)).verify("<answer>4+3</answer>", gold) == 1.0
    assert evaluate_expression("12/8*2") == (3, [12, 8, 2])


def test_difficulty_knob_is_monotone_and_fine_grained():
    def mean_steps(difficulty):
        task = ArithmeticTask(difficulty=difficulty)
        problems = task.generate(400, seed=0)
        return sum(task.solution_trace(p).count("=") for p in problems) / len(problems)

    levels = [0.0, 0.1, 0.2, 0.4, 0.7, 1.0]
    steps = [mean_steps(d) for d in levels]
    assert steps == sorted(steps) and steps[0] == 1.0 and steps[-1] > 3.5
    # A step of 0.1 in difficulty moves the mean number of operations by about 0.3.
    assert 0.15 < steps[1] - steps[0] < 0.45
    assert ArithmeticConfig.from_difficulty(0.0) == ArithmeticConfig(num_terms=2.0, max_operand=9, mul_prob=0.0)
    hard = CountdownConfig.from_difficulty(1.0)
    assert hard.num_numbers == 5 and hard.max_number == 50
    with pytest.raises(ValueError, match="difficulty"):
        ArithmeticConfig.from_difficulty(1.5)


def test_split_problems_are_disjoint():
    task = ArithmeticTask(difficulty=0.2)
    train, test = split_problems(task, 500, 100, seed=0)
    assert len(test) == 100 and not {p.problem for p in train} & {p.problem for p in test}
    assert [p.id for p in test[:2]] == ["arithmetic/test/0", "arithmetic/test/1"]
    tiny = ArithmeticTask(ArithmeticConfig(num_terms=2, max_operand=1, mul_prob=0.0))
    with pytest.raises(ValueError, match="held-out"):
        split_problems(tiny, 100, 10, seed=0)


def test_arithmetic_max_terms_mixes_problem_sizes():
    task = ArithmeticTask(ArithmeticConfig(num_terms=2, max_terms=6, max_operand=5))
    problems = task.generate(600, seed=0)
    counts = [len(p.meta["tokens"]) // 2 + 1 for p in problems]
    # Every count from 2 to 6, about equally often, and each answer is still the exact value.
    assert set(counts) == {2, 3, 4, 5, 6}
    assert all(80 <= counts.count(n) <= 160 for n in range(2, 7))
    assert all(task.verify(task.solution_trace(p), p.answer) == 1.0 for p in problems[:50])
    lengths = [len(task.solution_trace(p)) for p in problems]
    assert max(lengths) > 3 * min(lengths)
    # Without max_terms the stream of problems is the one num_terms alone gives.
    assert ArithmeticTask(ArithmeticConfig(num_terms=3, max_operand=5)).generate(5, seed=1) == \
        ArithmeticTask(ArithmeticConfig(num_terms=3, max_operand=5, max_terms=0)).generate(5, seed=1)
    with pytest.raises(ValueError, match="max_terms"):
        ArithmeticConfig(num_terms=4, max_terms=3)
