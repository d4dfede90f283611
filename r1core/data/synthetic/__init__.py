"""Synthetic verifiable tasks for CPU runs of the whole pipeline.

    task = get_task("arithmetic", difficulty=0.3)
    train, test = split_problems(task, 2000, 200, seed=0)
    sft_text = prompt + task.solution_trace(problem, open_think=False)
    rewards = [task.verify(response, p.answer) for response, p in zip(responses, problems)]
"""

from r1core.data.synthetic.arithmetic import ArithmeticConfig, ArithmeticTask, solve_with_steps
from r1core.data.synthetic.base import SYNTHETIC_TASKS, SyntheticTask, format_trace, get_task, split_problems
from r1core.data.synthetic.countdown import CountdownConfig, CountdownTask, evaluate_expression, parse_gold

__all__ = [
    "SYNTHETIC_TASKS",
    "ArithmeticConfig",
    "ArithmeticTask",
    "CountdownConfig",
    "CountdownTask",
    "SyntheticTask",
    "evaluate_expression",
    "format_trace",
    "get_task",
    "parse_gold",
    "solve_with_steps",
    "split_problems",
]
