"""Benchmark loaders on the real shared files, generic loaders on malformed temp files."""

import json
import re

import pytest

from r1core.data import DataFormatError, gsm8k_gold, load_benchmark, load_jsonl, load_parquet, load_problems

ROW_COUNTS = [("gsm8k", "train", 7473), ("gsm8k", "test", 1319), ("math500", "test", 500), ("aime24", "test", 30), ("amc23", "test", 40)]


@pytest.mark.parametrize("name,split,rows", ROW_COUNTS)
def test_benchmark_row_counts_and_records(shared_data, name, split, rows):
    problems = load_benchmark(name, split, root=shared_data)
    assert len(problems) == rows
    assert len({p.id for p in problems}) == rows
    assert all(p.id.startswith(f"{name}/{split}/") for p in problems)
    assert all(p.problem.strip() and p.answer for p in problems)


def test_gsm8k_gold_is_the_number_after_the_marker(shared_data):
    problems = load_benchmark("gsm8k", "test", root=shared_data)
    assert problems[0].answer == "18"  # Janet's ducks
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", p.answer) for p in problems)
    assert problems[0].meta["solution"].rstrip().endswith("#### 18")
    rows = [json.loads(line) for line in open(shared_data / "gsm8k" / "train.jsonl")]
    with_commas = [r for r in rows if "," in r["answer"].rsplit("####", 1)[1]]
    assert with_commas, "the training split has thousands separators after ####"
    assert "," not in gsm8k_gold(with_commas[0]["answer"])


def test_math500_aime_amc_golds(shared_data):
    math500 = load_benchmark("math500", root=shared_data)
    assert math500[0].answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert math500[0].meta["level"] == 2 and "solution" in math500[0].meta
    aime = {p.id: p.answer for p in load_benchmark("aime24", root=shared_data)}
    raw = {json.loads(line)["id"]: json.loads(line)["answer"] for line in open(shared_data / "aime24" / "test.jsonl")}
    padded = [i for i, a in raw.items() if a.startswith("0")]
    assert padded and all(aime[f"aime24/test/{i}"] == str(int(raw[i])) for i in raw)
    amc = load_benchmark("amc23", root=shared_data)
    assert amc[0].answer == "27" and all("." not in p.answer for p in amc)


def test_benchmark_errors(shared_data):
    with pytest.raises(KeyError, match="valid: aime24, amc23, gsm8k, math500"):
        load_benchmark("mmlu")
    with pytest.raises(ValueError, match="no split 'train'"):
        load_benchmark("aime24", "train", root=shared_data)


def write(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_generic_jsonl_with_field_mapping(tmp_path):
    path = write(tmp_path, ['{"q": "1+1?", "a": 2, "src": "x"}', "", '{"q": "2+2?", "a": "4"}'])
    problems = load_jsonl(path, {"problem": "q", "answer": "a"})
    assert [(p.id, p.problem, p.answer) for p in problems] == [("data/0", "1+1?", "2"), ("data/2", "2+2?", "4")]
    assert problems[0].meta == {"src": "x"}
    assert load_problems(path, {"problem": "q", "answer": "a"}, id_prefix="")[1].id == "2"


@pytest.mark.parametrize(
    "lines,line,message",
    [
        (['{"problem": "a", "answer": "1"}', '{"problem": "b", "answer": '], 2, "invalid JSON"),
        (['{"problem": "a", "answer": "1"}', '{"problem": "b"}'], 2, "missing field 'answer'"),
        (['{"problem": 5, "answer": "1"}'], 1, "must be a non-empty string"),
        (['{"problem": "a", "answer": [1]}'], 1, "expected a string or a number, got list"),
        (['[1, 2]'], 1, "expected a JSON object"),
        (['{"problem": "a", "answer": "1", "id": 1}', '{"problem": "b", "answer": "2", "id": 1}'], 2, "duplicate id"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, lines, line, message):
    path = write(tmp_path, lines)
    fields = {"id": "id"} if "duplicate" in message else None
    with pytest.raises(DataFormatError, match=re.escape(f"{path}:{line}: ") + ".*" + re.escape(message)) as error:
        load_jsonl(path, fields)
    assert error.value.line == line and error.value.path == str(path)


def test_gsm8k_row_without_marker_is_reported(tmp_path):
    path = write(tmp_path, ['{"question": "q", "answer": "no final answer"}'], name="train.jsonl")
    (tmp_path / "gsm8k").mkdir()
    path.rename(tmp_path / "gsm8k" / "train.jsonl")
    with pytest.raises(DataFormatError, match=r"train.jsonl:1: .*no '####'"):
        load_benchmark("gsm8k", "train", root=tmp_path)


def test_parquet_roundtrip_and_errors(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "set.parquet"
    pq.write_table(pa.table({"question": ["x?", "y?"], "gold": [3.0, 4.5]}), path)
    problems = load_parquet(path, {"problem": "question", "answer": "gold"})
    assert [(p.id, p.answer) for p in problems] == [("set/0", "3"), ("set/1", "4.5")]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"question": ["x?", None], "gold": [1, 2]}), bad)
    with pytest.raises(DataFormatError, match=r"bad.parquet:2: missing field 'question'"):
        load_parquet(bad, {"problem": "question", "answer": "gold"})
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet")
    with pytest.raises(DataFormatError, match="not a readable parquet file"):
        load_parquet(garbage)
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "missing.jsonl")
