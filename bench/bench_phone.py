"""Phone normalisation: numbers per second, cold and with repeats, by written style."""

from __future__ import annotations

import random
import time

from bench import data
from bench.common import Figure
from contactsync import phone

N = 20_000


def _rate(items: list[tuple[str, str]]) -> float:
    t = time.perf_counter()
    for raw, region in items:
        phone.try_normalize(raw, region)
    return len(items) / (time.perf_counter() - t)


def run() -> list[Figure]:
    numbers = data.users(N, seed=11)
    rng = random.Random(3)
    e164 = [(n, "US") for n in numbers]
    written = [(data.written(rng, n, "US"), "US") for n in numbers]
    phone.cache_clear()
    cold_e164 = _rate(e164)
    phone.cache_clear()
    cold_written = _rate(written)
    warm = _rate(written)  # every one a repeat now
    return [
        Figure("normalise E.164, cold", cold_e164, "numbers/s"),
        Figure("normalise written forms, cold", cold_written, "numbers/s"),
        Figure.at_least("normalise, repeats (cache)", warm, "numbers/s", 1_000_000),
        Figure("cache speed-up over cold written", warm / cold_written, "x"),
    ]
