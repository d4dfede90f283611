"""Problems for training and evaluation: benchmark loaders, generic jsonl/parquet loaders,
prompt templates and synthetic verifiable tasks.

    from r1core.data import load_benchmark, get_template
    problems = load_benchmark("gsm8k", "test")
    prompts = [get_template("r1-zero")(p.problem) for p in problems]
"""

from r1core.data.benchmarks import BENCHMARKS, data_dir, gsm8k_gold, load_benchmark
from r1core.data.loaders import answer_to_string, load_jsonl, load_parquet, load_problems
from r1core.data.records import DataFormatError, Problem
from r1core.data.templates import (
    R1_ZERO_TEMPLATE,
    TEMPLATES,
    ChatTemplate,
    CompactTemplate,
    R1ZeroTemplate,
    get_template,
)

__all__ = [
    "BENCHMARKS",
    "R1_ZERO_TEMPLATE",
    "TEMPLATES",
    "ChatTemplate",
    "CompactTemplate",
    "DataFormatError",
    "Problem",
    "R1ZeroTemplate",
    "answer_to_string",
    "data_dir",
    "get_template",
    "gsm8k_gold",
    "load_benchmark",
    "load_jsonl",
    "load_parquet",
    "load_problems",
]
