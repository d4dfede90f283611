"""``python -m r1core.rewards sandbox-status [--python PATH]``: the isolation the code sandbox
gets on this machine (namespaces, host user, cgroups, seccomp) and its cost per run."""

from __future__ import annotations

import argparse
import json
import sys
import time

from r1core.rewards.sandbox import SandboxConfig, SandboxError, isolation_plan, run_program


def print_status(python_executable: str = "") -> None:
    """Print what isolation the sandbox gets here and its cost per run; exit 1 if unavailable."""
    config = SandboxConfig(python_executable=python_executable)
    try:
        plan = isolation_plan(config)
    except SandboxError as error:
        print(f"sandbox unavailable: {error}")
        sys.exit(1)
    status = {"python": plan.python, "read_only_paths": list(plan.read_only_paths), **plan.describe()}
    for runs in (1, 10):
        started = time.perf_counter()
        for _ in range(runs):
            run_program("pass", "", config)
        status[f"seconds per run ({runs} runs)"] = f"{(time.perf_counter() - started) / runs:.3f}"
    print(json.dumps(status, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m r1core.rewards", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("sandbox-status", help="isolation in force and cost per run")
    status.add_argument("--python", default="", help="interpreter of the programs (default: this one)")
    args = parser.parse_args()
    if args.command == "sandbox-status":
        print_status(args.python)


if __name__ == "__main__":
    main()
