"""``python -m r1core.rewards sandbox-status [--python PATH]``: the isolation the code sandbox
gets on this machine (namespaces, host user, cgroups, seccomp) and its cost per run."""

from __future__ import annotations

import argparse

from r1core.rewards.sandbox import print_status


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
