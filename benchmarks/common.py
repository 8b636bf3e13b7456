"""Shared helpers: timing, percentiles, the anchor pathway, a scratch database."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event

ROOT = Path(__file__).resolve().parent.parent
ANCHOR = ROOT.parent / "shared" / "bench" / "anchor_pathway.bpmn"
ROLE_LANE = "Nurse"  # the anchor's lane "Staff" is not a role; the lint needs a real one


def anchor_xml(key: str = "anchor_pathway") -> str:
    path = Path(os.environ.get("HMS_BENCH_ANCHOR", ANCHOR))
    xml = path.read_text(encoding="utf-8").replace('name="Staff"', f'name="{ROLE_LANE}"')
    return xml if key == "anchor_pathway" else xml.replace('"anchor_pathway"', f'"{key}"')


def pct(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(samples_ms: list[float]) -> dict:
    return {"n": len(samples_ms), "p50": pct(samples_ms, 50), "p95": pct(samples_ms, 95),
            "mean": statistics.fmean(samples_ms) if samples_ms else float("nan")}


class Timer:
    def __init__(self):
        self.samples: list[float] = []

    @contextmanager
    def measure(self):
        t0 = time.perf_counter()
        yield
        self.samples.append((time.perf_counter() - t0) * 1000)


class StatementCounter:
    """Counts SQL statements sent through an engine (per measured block)."""

    def __init__(self, engine):
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *args, **kwargs):
        self.count += 1


def scratch_sqlite_url(name: str) -> str:
    path = Path(tempfile.mkdtemp(prefix="hms-bench-")) / f"{name}.db"
    return f"sqlite:///{path}"


def bench_database_url(name: str) -> str:
    """SQLite scratch file by default; HMS_BENCH_DATABASE_URL (PostgreSQL) when set."""
    return os.environ.get("HMS_BENCH_DATABASE_URL") or scratch_sqlite_url(name)
