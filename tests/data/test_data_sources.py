"""Training and evaluation data from files: gold formats, the field mapping, benchmark names,
held-out splits, and the ``data``/``eval`` sections' own checks (one ConfigError naming the
key before anything runs)."""

from __future__ import annotations

import json
import re

import pytest

from r1core.config import ConfigError, RunConfig, load_config
from r1core.data.golds import auto_gold, boxed_gold, gold_format, gsm8k_gold
from r1core.data.loaders import load_problems, read_rows
from r1core.data.records import DataFormatError
from r1core.data.sources import hold_out, load_source, load_sources


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_gold_formats():
    assert gsm8k_gold("She pays 3 * 4 = <<3*4=12>>12.\n#### 1,200") == "1200"
    assert boxed_gold(r"So $x = \boxed{\frac{1}{2}}$, not \boxed{3}... the answer is $\boxed{\dfrac{1}{2}}$.") == r"\dfrac{1}{2}"
    assert auto_gold("work\n#### 72") == "72"
    assert auto_gold(r"Hence \boxed{\left( 3, \frac{\pi}{2} \right)}.") == r"\left( 3, \frac{\pi}{2} \right)"
    assert auto_gold(27.0) == "27" and auto_gold(" 5 ") == "5"
    with pytest.raises(ValueError, match=r"no \\boxed"):
        boxed_gold("the answer is 5")
    with pytest.raises(ValueError, match="no '####'"):
        gsm8k_gold("the answer is 5")
    with pytest.raises(ValueError, match="unknown answer format 'latex'"):
        gold_format("latex")


def test_field_mapping_prompt_alias_system_and_detection(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [
        {"question": "What is 6*7?", "solution": "6*7=42\n#### 42", "sys": "Be brief.", "uid": "a"},
        {"question": "What is 1+1?", "solution": "#### 2", "sys": None, "uid": "b"},
    ])
    problems = load_problems(path, {"prompt": "question", "answer": "solution", "system": "sys", "id": "uid"},
                             answer_transform=gold_format("auto"))
    assert [(p.id, p.answer, p.system) for p in problems] == [("mine/a", "42", "Be brief."), ("mine/b", "2", None)]
    assert problems[0].meta == {}
    # Without a mapping for the problem, the first of problem/question/prompt present is used.
    detected = load_problems(path, {"answer": "solution"}, answer_transform=gold_format("gsm8k"))
    assert detected[1].problem == "What is 1+1?" and detected[1].meta["sys"] is None


@pytest.mark.parametrize(
    "rows,message",
    [
        ([], "the file holds no rows"),
        ([{"text": "q", "answer": "1"}], "no problem field: none of 'problem', 'question', 'prompt'"),
        ([{"problem": "q", "answer": "1"}, {"problem": "r"}], "missing field 'answer'"),
        ([{"problem": "q", "answer": "1", "system": 3}], "must be a string, got int"),
    ],
)
def test_bad_files_name_file_row_and_field(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataFormatError, match=re.escape(message)) as error:
        load_problems(path, {"system": "system"} if "system" in json.dumps(rows) else None)
    assert str(error.value).startswith(str(path))


def test_unknown_file_type_and_unknown_benchmark_are_data_errors(tmp_path):
    with pytest.raises(DataFormatError, match=r"unknown data file type '\.csv'"):
        read_rows(write_jsonl(tmp_path / "x.csv", [{"a": 1}]))
    with pytest.raises(DataFormatError, match="unknown benchmark 'gsm9k'"):
        load_source("gsm9k")
    with pytest.raises(DataFormatError, match="no split 'train'"):
        load_source("math500:train")


def test_sources_by_name_split_and_file(tmp_path):
    assert load_source("gsm8k", default_split="train")[0].id == "gsm8k/train/0"
    assert load_source("gsm8k")[0].id == "gsm8k/test/0"
    assert load_source("math500", default_split="train")[0].id.startswith("math500/test/")  # its only split
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_jsonl(tmp_path / "a" / "set.jsonl", [{"problem": "q1", "answer": "1"}])
    two = write_jsonl(tmp_path / "b" / "set.jsonl", [{"problem": "q2", "answer": r"so \boxed{2}"}])
    problems = load_sources([str(one), str(two), "amc23"])
    assert [p.id for p in problems[:2]] == ["0:set/0", "1:set/0"]  # same stem: told apart by position
    assert problems[1].answer == "2" and len(problems) == 42
    with pytest.raises(DataFormatError, match="also in amc23"):
        load_sources(["amc23", "amc23:test"])


def test_hold_out_is_seeded_disjoint_and_ordered():
    problems = load_source("amc23")
    train, held = hold_out(problems, 10, seed=3)
    assert len(train) == 30 and len(held) == 10 and not {p.id for p in train} & {p.id for p in held}
    assert held == hold_out(problems, 10, seed=3)[1] and held != hold_out(problems, 10, seed=4)[1]
    assert [p.id for p in train] == [p.id for p in problems if p not in held]
    with pytest.raises(DataFormatError, match="cannot hold out 40 of 40"):
        hold_out(problems, 40, seed=0)


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["data.train_files=[gsm9k]"], "data.train_files[0]: unknown benchmark 'gsm9k'"),
        (["data.train_files=[aime24:train]"], "has no split 'train'"),
        (["data.template=chatml"], "data.template must be one of"),
        (["data.fields={question: q}"], "data.fields: fields may map only"),
        (["data.answer_format=latex"], "data.answer_format must be one of"),
        (["data.system_prompt=hi"], "data.system_prompt is shown by the chat template only"),
        (["data.instruction=hi"], "data.instruction is not shown by the compact template"),
        (["data.eval_files=[gsm8k]"], "data.eval_files needs data.train_files"),
        (["data.task=sudoku"], "data.task must be one of"),
        (["data.max_prompt_tokens=-1"], "data.max_prompt_tokens must be >= 0"),
        (["eval.benchmark=mmlu"], "eval.benchmark: unknown benchmark 'mmlu'"),
        (["eval.k=0"], "eval.k must be >= 1"),
        (["eval.temperature=-1"], "eval.temperature must be >= 0"),
        (["eval.limit=-2"], "eval.limit must be >= 0"),
        (["sft.cold_start=always"], "sft.cold_start must be"),
        (["sft.cold_start=traces"], "sft.cold_start=traces needs sft.traces"),
        (["policy.lr_schedule=step"], "policy.lr_schedule must be one of"),
    ],
)
def test_data_and_eval_sections_are_checked_at_load(overrides, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(RunConfig, None, overrides)


def test_a_valid_dataset_configuration_loads():
    cfg = load_config(RunConfig, None, ["data.train_files=[gsm8k, /data/extra.parquet]", "data.eval_files=[gsm8k:test]",
                                        "data.template=chat", "data.system_prompt=Think.", "data.fields={prompt: q}",
                                        "eval.benchmark=math500", "eval.split=test"])
    assert cfg.data.train_files == ["gsm8k", "/data/extra.parquet"] and cfg.data.fields == {"prompt": "q"}
    assert cfg.eval.benchmark_entry() == "math500:test"
    assert load_config(RunConfig, None, ["eval.benchmark=gsm8k", "eval.split=train"]).eval.benchmark_entry() == "gsm8k:train"
