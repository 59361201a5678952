"""One experiment's timeline: a lane per target, a mark per apply/recover event its record holds,
on one time axis. Pure; `html` turns it into SVG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chaosbus.common.objects import parse_rfc3339

Obj = dict[str, Any]
LANE_H = 28
LABEL_W = 220
PLOT_W = 640
MARGIN = 10


@dataclass
class Mark:
    at: float
    x: int
    operation: str  # Apply | Recover
    type: str  # Succeeded | Failed
    message: str = ""


@dataclass
class Lane:
    target: str
    phase: str
    y: int
    marks: list[Mark] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # x ranges while the fault was in force


@dataclass
class Timeline:
    start: float
    end: float
    lanes: list[Lane]
    width: int = LABEL_W + PLOT_W + 2 * MARGIN
    height: int = 0

    def events(self) -> list[tuple[float, str, Mark]]:
        """Every mark, oldest first, with its target: the table under the drawing."""
        return sorted(((m.at, lane.target, m) for lane in self.lanes for m in lane.marks), key=lambda e: e[0])


def _when(value: object) -> float | None:
    try:
        return parse_rfc3339(str(value)) if value else None
    except ValueError:
        return None


def build(records: list[Obj], now: float) -> Timeline:
    """Lanes in record order; the axis runs from the first event to `now` (at least one second)."""
    parsed = []
    for r in records:
        evs = [(t, e) for e in r.get("events") or [] if isinstance(e, dict) and (t := _when(e.get("timestamp")))]
        parsed.append((r, sorted(evs, key=lambda te: te[0])))
    times = [t for _, evs in parsed for t, _ in evs]
    start = min(times) if times else now
    end = max([now, *times, start + 1.0])

    def x(t: float) -> int:
        return LABEL_W + MARGIN + int((t - start) / (end - start) * (PLOT_W - 2 * MARGIN))

    lanes = []
    for i, (r, evs) in enumerate(parsed):
        lane = Lane(target=str(r.get("id", "")), phase=str(r.get("phase", "")), y=MARGIN + i * LANE_H)
        opened: float | None = None
        for t, e in evs:
            op, kind = str(e.get("operation", "")), str(e.get("type", ""))
            lane.marks.append(Mark(at=t, x=x(t), operation=op, type=kind, message=str(e.get("message", ""))))
            if op == "Apply" and kind == "Succeeded" and opened is None:
                opened = t
            elif op == "Recover" and kind == "Succeeded" and opened is not None:
                lane.spans.append((x(opened), x(t)))
                opened = None
        if opened is not None and lane.phase == "Injected":
            lane.spans.append((x(opened), x(end)))
        lanes.append(lane)
    return Timeline(start=start, end=end, lanes=lanes, height=2 * MARGIN + max(1, len(lanes)) * LANE_H + 16)
