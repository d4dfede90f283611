"""Does ``r1core eval`` score what the model wrote? Its answers against transformers' own
``generate`` on the same prompts.

Reads the per-sample records (``samples.jsonl``) of a greedy ``r1core eval`` run, regenerates
the first ``--num`` prompts with transformers' ``generate`` (greedy, same token budget, same
stop tokens), decodes them with the same decoder, extracts each answer
(``r1core.rewards.extract.final_or_last_number``) and grades it with ``math_accuracy``, then
counts the problems whose extracted answer (and grade) equal r1core's::

    python -m perf.eval_vs_transformers runs/smollm2-gsm8k --num 50

Writes ``perf/results/eval_vs_transformers_<benchmark>_cpu_<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def load_records(run_dir: Path, num: int) -> tuple[list[dict], dict]:
    """The first ``num`` problems' first samples of a greedy eval run, and its configuration."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    if float(config["eval"]["temperature"]) != 0.0:
        raise SystemExit(f"{run_dir} was not evaluated greedily (eval.temperature={config['eval']['temperature']})")
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    firsts = [r for r in records if r["sample"] == 0][:num]
    if len(firsts) < num:
        raise SystemExit(f"{run_dir} has {len(firsts)} problems, fewer than --num {num}")
    return firsts, config


def transformers_responses(hf_dir: str, prompts: list[str], max_new_tokens: int, batch_size: int,
                           time_limit_s: float = 0.0) -> tuple[list[str], float]:
    """Greedy ``generate`` of the prompts (left-padded batches, fp32), decoded by r1core's
    response decoder; the seconds it took. With ``time_limit_s`` > 0 no batch starts after
    that many seconds, and only the prompts generated so far are returned (in order)."""
    from transformers import AutoModelForCausalLM

    from r1core.data.tokenizers import ResponseDecoder, load_tokenizer, stop_token_ids

    tokenizer = load_tokenizer(hf_dir)
    stop = stop_token_ids(tokenizer, hf_dir, chat=True)
    decode = ResponseDecoder(tokenizer, stop)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    out: list[str] = []
    start = time.perf_counter()
    for first in range(0, len(prompts), batch_size):
        if time_limit_s > 0 and time.perf_counter() - start > time_limit_s:
            break
        encoded = [tokenizer.encode(p, add_special_tokens=False) for p in prompts[first : first + batch_size]]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded])
        attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
        with torch.no_grad():
            generated = model.generate(input_ids=input_ids, attention_mask=attention, do_sample=False,
                                       max_new_tokens=max_new_tokens, eos_token_id=stop, pad_token_id=pad)
        for row in generated[:, width:].tolist():
            # Everything after the first stop token is padding.
            cut = next((i + 1 for i, token in enumerate(row) if token in stop), len(row))
            out.append(decode(row[:cut]))
        print(f"transformers: {len(out)}/{len(prompts)} prompts", file=sys.stderr, flush=True)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="folder of a greedy r1core eval run (config.yaml, samples.jsonl)")
    parser.add_argument("--num", type=int, default=50, help="problems compared")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--time-limit", type=float, default=0.0,
                        help="seconds after which no further batch starts; the report covers the problems done")
    args = parser.parse_args(argv)

    from r1core.rewards import get_reward
    from r1core.rewards.extract import final_or_last_number, normalize_answer

    records, config = load_records(args.run_dir, args.num)
    hf_dir = config["policy"]["hf_dir"]
    responses, seconds = transformers_responses(hf_dir, [r["prompt"] for r in records], int(config["eval"]["max_tokens"]),
                                                args.batch_size, args.time_limit)
    if not responses:
        raise SystemExit(f"no prompt was generated within --time-limit {args.time_limit} s")
    records = records[: len(responses)]
    reward = get_reward("math_accuracy")
    scores = reward(responses, [r["gold"] for r in records])
    rows = []
    for record, response, score in zip(records, responses, scores):
        answer = final_or_last_number(response)
        rows.append({"id": record["id"], "r1core_answer": record["answer"], "transformers_answer": answer,
                     "r1core_score": record["score"], "transformers_score": float(score),
                     "same_answer": normalize_answer(answer) == normalize_answer(record["answer"]),
                     "same_text": response == record["response"]})
    same_answer = sum(r["same_answer"] for r in rows)
    same_score = sum(r["r1core_score"] == r["transformers_score"] for r in rows)
    summary = {
        "benchmark": config["eval"]["benchmark"], "model": hf_dir, "num_problems": len(rows), "num_requested": args.num,
        "max_tokens": int(config["eval"]["max_tokens"]), "same_extracted_answer": same_answer,
        "same_score": same_score, "same_response_text": sum(r["same_text"] for r in rows),
        "r1core_accuracy": sum(r["r1core_score"] for r in rows) / len(rows),
        "transformers_accuracy": sum(r["transformers_score"] for r in rows) / len(rows),
        "transformers_seconds": seconds, "command": " ".join(["python -m perf.eval_vs_transformers", *sys.argv[1:]]),
        "date": _dt.date.today().isoformat(), "torch": torch.__version__,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    stem = f"eval_vs_transformers_{summary['benchmark'].split(':')[0]}_cpu_{summary['date']}"
    (RESULTS_DIR / f"{stem}.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    lines = [f"# r1core eval vs transformers generate: {summary['benchmark']}, {len(rows)} problems, greedy", "",
             *([f"Only {len(rows)} of the {args.num} problems asked for were generated within --time-limit "
                f"{args.time_limit:.0f} s.", ""] if len(rows) < args.num else []),
             f"Command: `{summary['command']}` (model {hf_dir}, {summary['max_tokens']} new tokens, fp32 both sides)", "",
             "| measure | value |", "| --- | --- |",
             f"| same extracted answer | {same_answer} / {len(rows)} |",
             f"| same math_accuracy score | {same_score} / {len(rows)} |",
             f"| same response text | {summary['same_response_text']} / {len(rows)} |",
             f"| accuracy (r1core eval) | {summary['r1core_accuracy']:.3f} |",
             f"| accuracy (transformers) | {summary['transformers_accuracy']:.3f} |", ""]
    differing = [r for r in rows if not r["same_answer"]]
    if differing:
        lines += ["Problems whose answers differ:", "", "| id | r1core | transformers |", "| --- | --- | --- |"]
        lines += [f"| {r['id']} | {r['r1core_answer']} | {r['transformers_answer']} |" for r in differing]
    (RESULTS_DIR / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
