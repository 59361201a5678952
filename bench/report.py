"""Statistics, the printed table and the JSON document. Pure: numbers in, rows and text out.
`python -m bench.report RESULT.json` prints a result's figures as a markdown table (for the docs).

Percentiles interpolate linearly between order statistics (numpy's default); a p99 over fewer
than 100 samples is close to the maximum and is labelled with its sample count.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`; NaN for none."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p99": pct(values, 99),
        "min": min(values) if values else float("nan"),
        "max": max(values) if values else float("nan"),
        "mean": sum(values) / len(values) if values else float("nan"),
    }


def fmt_s(seconds: float | None) -> str:
    """Seconds as ms below 1 s (µs below 1 ms), else s; '-' for nothing."""
    if seconds is None or isinstance(seconds, float) and math.isnan(seconds):
        return "-"
    if abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if abs(seconds) < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def ratio(value: float, floor: float | None) -> str:
    if floor is None or not floor or math.isnan(value) or math.isnan(floor):
        return "-"
    return f"{value / floor:.0f}x" if value / floor >= 10 else f"{value / floor:.1f}x"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


@dataclass
class Row:
    id: str
    what: str
    n: str = ""
    p50: str = ""
    p99: str = ""
    extra: str = ""
    floor: str = ""
    vs_floor: str = ""
    target: str = ""
    verdict: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)


COLUMNS = (
    ("id", "id"),
    ("what", "figure"),
    ("n", "n"),
    ("p50", "p50"),
    ("p99", "p99"),
    ("extra", "also"),
    ("floor", "floor spawn/kernel"),
    ("vs_floor", "p50 / floor"),
    ("target", "target"),
    ("verdict", "verdict"),
)


def render(sections: list[Section]) -> str:
    rows = [r for s in sections for r in s.rows]
    widths = {k: max([len(h)] + [len(str(getattr(r, k))) for r in rows]) for k, h in COLUMNS}
    widths["what"] = min(widths["what"], 44)
    widths["extra"] = min(widths["extra"], 60)
    sep = "  "
    header = sep.join(h.ljust(widths[k]) for k, h in COLUMNS)
    out = [header, "-" * len(header)]
    for s in sections:
        out.append(f"# {s.title}")
        for r in s.rows:
            out.append(sep.join(str(getattr(r, k)).ljust(widths[k]) for k, _ in COLUMNS).rstrip())
    return "\n".join(out)


def to_json(sections: list[Section]) -> list[dict[str, Any]]:
    return [{"title": s.title, "rows": [asdict(r) for r in s.rows]} for s in sections]


def clean(obj: Any) -> Any:
    """JSON-safe: NaN and infinities become None, floats are rounded to microseconds."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else round(obj, 6)
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def markdown(figures: list[dict[str, Any]]) -> str:
    """The figures of a result JSON as a markdown table, one header row per section."""
    keys = ["id", "n", "p50", "p99", "extra", "floor", "vs_floor", "target", "verdict"]
    head = ["figure", "n", "p50", "p99", "also", "floor spawn / kernel", "p50 / floor", "target", ""]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for section in figures:
        out.append(f"| **{section['title']}** |" + " |" * (len(head) - 1))
        for row in section["rows"]:
            cells = [f"`{row['id']}`"] + [str(row[k] or "").replace("|", "/") for k in keys[1:]]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    import json
    import sys

    print(markdown(json.loads(open(sys.argv[1]).read())["figures"]))
