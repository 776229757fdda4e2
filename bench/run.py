"""Run the benchmarks and print one table of figures: `scripts/bench [NAME ...]`.

Each `bench/bench_NAME.py` has `run() -> list[Figure]`. Benchmarks print figures; they are not
tests and never fail a build, but a missed target shows as "MISSED" in the table.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import Figure

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(available())}")
        return 2
    console = Console()
    figures: list[tuple[str, Figure]] = []
    for name in names:
        console.print(f"[bold]running {name}…[/bold]")
        started = time.perf_counter()
        module = importlib.import_module(f"bench.bench_{name}")
        for figure in module.run():
            figures.append((name, figure))
            console.print(f"  {figure.name}: {fmt(figure.value)} {figure.unit}")
        console.print(f"  ({time.perf_counter() - started:.1f} s)")
    table = Table(title="contactsync benchmarks")
    for column in ("bench", "figure", "value", "unit", "target", ""):
        table.add_column(column)
    for bench, f in figures:
        verdict = "" if f.ok is None else ("ok" if f.ok else "MISSED")
        table.add_row(bench, f.name, fmt(f.value), f.unit, f.target, verdict)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
