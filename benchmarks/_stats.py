"""Small shared helpers: percentiles, a plain table, and PASS/FAIL target checks."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0 < p < 100), inclusive method; the value itself for n == 1."""
    if len(values) == 1:
        return float(values[0])
    cuts = statistics.quantiles(values, n=1000, method="inclusive")
    return cuts[round(p * 10) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, median, p95, p99, max in milliseconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": float(len(ms)),
        "median": statistics.median(ms),
        "p95": pct(ms, 95),
        "p99": pct(ms, 99),
        "max": max(ms),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


@dataclass
class Checks:
    """Targets a benchmark checks; prints `PASS <what>` / `FAIL <what>` lines."""

    name: str
    results: list[tuple[bool, str]] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        self.results.append((ok, what))
        print(f"{'PASS' if ok else 'FAIL'} [{self.name}] {what}", flush=True)
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for ok, _ in self.results)

    def exit_code(self) -> int:
        return 0 if self.ok else 1
