"""Rewards that misbehave on purpose, importable by the pool's worker processes.

Each one misbehaves only on responses that ask for it (the response text names the fault), so
a batch can mix healthy and faulty samples and the tests can check that only the faulty ones
score 0.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time


def faulty(responses: list[str], golds: list[str]) -> list[float]:
    """1.0 for "ok"; "hang" sleeps forever, "exit" calls os._exit, "raise" raises,
    "segfault" dereferences NULL, "memory" allocates without bound, "nan" returns NaN,
    "spin" loops in pure Python forever."""
    scores = []
    for response in responses:
        if response == "hang":
            time.sleep(10**6)
        elif response == "exit":
            os._exit(3)
        elif response == "raise":
            raise ValueError("this reward always raises")
        elif response == "segfault":
            ctypes.string_at(0)
        elif response == "memory":
            hoard = []
            while True:
                hoard.append(bytearray(64 * 1024 * 1024))
        elif response == "nan":
            scores.append(float("nan"))
            continue
        elif response == "spin":
            while True:
                pass
        scores.append(1.0)
    return scores


def slow_ok(responses: list[str], golds: list[str]) -> list[float]:
    """1.0 after sleeping float(gold) seconds (a legitimately slow reward)."""
    for gold in golds:
        time.sleep(float(gold))
    return [1.0] * len(responses)


_SLEEP = "import time; time.sleep(300)"


def spawning(responses: list[str], golds: list[str]) -> list[float]:
    """Starts a sleeping interpreter carrying the gold as a marker in its arguments, then: "hang" sleeps
    forever; "daemon" leaves it behind as a double-forked, setsid daemon and returns 1.0;
    "child" leaves it as a plain child and returns 1.0."""
    for response, gold in zip(responses, golds):
        if response == "daemon":
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv(sys.executable, [sys.executable, "-c", _SLEEP, gold])
                os._exit(0)
            os.wait()
        else:
            subprocess.Popen([sys.executable, "-c", _SLEEP, gold], start_new_session=response == "hang-setsid")
        if response.startswith("hang"):
            time.sleep(10**6)
    return [1.0] * len(responses)
