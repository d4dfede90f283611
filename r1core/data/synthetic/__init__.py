"""Synthetic verifiable tasks for CPU runs of the whole pipeline.

    task = get_task("arithmetic", difficulty=0.3)
    train, test = split_problems(task, 2000, 200, seed=0)
    sft_text = prompt + task.solution_trace(problem, open_think=False)
    rewards = batch_reward(task, responses, [p.answer for p in problems])
"""

from r1core.data.synthetic.arithmetic import ArithmeticConfig, ArithmeticTask, solve_with_steps
from r1core.data.synthetic.base import SYNTHETIC_TASKS, SyntheticTask, batch_reward, format_trace, get_task, sft_pairs, split_problems
from r1core.data.synthetic.countdown import CountdownConfig, CountdownTask, evaluate_expression, parse_gold
from r1core.data.synthetic.vocab import SPECIAL_TOKENS, SYNTHETIC_CHARS, TAG_TOKENS, CharTokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "SYNTHETIC_CHARS",
    "SYNTHETIC_TASKS",
    "TAG_TOKENS",
    "ArithmeticConfig",
    "ArithmeticTask",
    "CharTokenizer",
    "CountdownConfig",
    "CountdownTask",
    "SyntheticTask",
    "batch_reward",
    "evaluate_expression",
    "format_trace",
    "get_task",
    "parse_gold",
    "sft_pairs",
    "solve_with_steps",
    "split_problems",
]
