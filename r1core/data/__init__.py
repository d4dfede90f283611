"""Problems for training and evaluation: the shipped benchmarks, jsonl/parquet loaders with a
field mapping and gold formats, prompt templates, the length budgets of a run, stop tokens
and the response decoder, and synthetic verifiable tasks.

    from r1core.data import build_template, load_benchmark, load_tokenizer
    problems = load_benchmark("gsm8k", "test")
    template = build_template("chat", tokenizer=load_tokenizer(ckpt),
                              instruction="Put your final answer within \\boxed{}.")
    prompts = [template(p.problem) for p in problems]
"""

from r1core.data.benchmarks import BENCHMARKS, data_dir, gsm8k_gold, load_benchmark, parse_benchmark_name
from r1core.data.golds import GOLD_FORMATS, boxed_gold, gold_format
from r1core.data.loaders import answer_to_string, load_jsonl, load_parquet, load_problems, read_rows
from r1core.data.prompts import EncodedProblems, LengthPlan, encode_problems, plan_lengths
from r1core.data.records import DataFormatError, Problem
from r1core.data.sources import hold_out, load_source, load_sources
from r1core.data.templates import (
    R1_ZERO_TEMPLATE,
    TEMPLATES,
    ChatTemplate,
    CompactTemplate,
    R1ZeroTemplate,
    RawTemplate,
    build_template,
    get_template,
)
from r1core.data.tokenizers import ResponseDecoder, end_of_turn_id, load_tokenizer, stop_token_ids

__all__ = [
    "BENCHMARKS",
    "GOLD_FORMATS",
    "R1_ZERO_TEMPLATE",
    "TEMPLATES",
    "ChatTemplate",
    "CompactTemplate",
    "DataFormatError",
    "EncodedProblems",
    "LengthPlan",
    "Problem",
    "R1ZeroTemplate",
    "RawTemplate",
    "ResponseDecoder",
    "answer_to_string",
    "boxed_gold",
    "build_template",
    "data_dir",
    "encode_problems",
    "end_of_turn_id",
    "get_template",
    "gold_format",
    "gsm8k_gold",
    "hold_out",
    "load_benchmark",
    "load_jsonl",
    "load_parquet",
    "load_problems",
    "load_source",
    "load_sources",
    "load_tokenizer",
    "parse_benchmark_name",
    "plan_lengths",
    "read_rows",
    "stop_token_ids",
]
