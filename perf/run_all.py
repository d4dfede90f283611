"""Run every benchmark in perf/ (each ``perf/bench_*.py``) with its defaults for this device.

    python -m perf.run_all                 # all benchmarks
    python -m perf.run_all fused_logprobs  # only those whose name contains a pattern

Each benchmark writes ``perf/results/<op>_<device>_<date>.{json,md}``; this runner prints
which ran, how long each took, and exits non-zero if any failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

PERF_DIR = Path(__file__).resolve().parent


def discover(patterns: list[str]) -> list[str]:
    names = sorted(p.stem for p in PERF_DIR.glob("bench_*.py"))
    if patterns:
        names = [n for n in names if any(pat in n for pat in patterns)]
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("patterns", nargs="*", help="run only benchmarks whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    names = discover(args.patterns)
    if args.list or not names:
        print("\n".join(names) if names else "no benchmark matched")
        return 0 if names or args.list else 1
    repo = PERF_DIR.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    failures = []
    for name in names:
        print(f"=== {name}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"perf.{name}"], cwd=repo, env=env)
        print(f"=== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - start:.1f} s\n", flush=True)
        if code:
            failures.append(name)
    print(f"{len(names) - len(failures)} of {len(names)} benchmarks ran; results in {PERF_DIR / 'results'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
