"""Rewards that misbehave on purpose, importable by the pool's worker processes.

Each one misbehaves only on responses that ask for it (the response text names the fault), so
a batch can mix healthy and faulty samples and the tests can check that only the faulty ones
score 0.
"""

from __future__ import annotations

import ctypes
import os
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
