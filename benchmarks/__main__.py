"""`make bench`: run every benchmark and print one table with the ratios.

Sizes: BENCH_ARGS="--quick" for a fast smoke run. PostgreSQL: set HMS_BENCH_DATABASE_URL
to a scratch database (it is emptied).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from benchmarks import http_bench, longrun, queue_bench, raw_spiff, service, ward_week


def _row(name, s, unit="ms"):
    return f"{name:<52} {s['p50']:>9.2f} {s['p95']:>9.2f} {s['mean']:>9.2f} {s['n']:>7} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--only", choices=["raw", "service", "http", "queue", "longrun", "ward"], action="append")
    args = parser.parse_args()
    quick = args.quick
    want = set(args.only or ["raw", "service", "http", "queue", "longrun", "ward"])
    results: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                     "database": "postgresql" if os.environ.get("HMS_BENCH_DATABASE_URL") else "sqlite"}
    if "raw" in want:
        results["raw"] = raw_spiff.run(100 if quick else 500)
    if "service" in want:
        results["service"] = service.run(30 if quick else 200)
    if "http" in want:
        results["http"] = http_bench.run(15 if quick else 100)
    if "queue" in want:
        results["queue"] = (queue_bench.run(10_000, 100_000, 100) if quick else queue_bench.run())
    if "longrun" in want:
        results["longrun"] = longrun.run(305)
    if "ward" in want:
        results["ward"] = ward_week.run(7 if quick else 30)
    print_table(results)
    out = Path(".bench")
    out.mkdir(exist_ok=True)
    (out / f"results-{results['database']}.json").write_text(json.dumps(results, indent=2, default=str))


def print_table(r: dict) -> None:
    print(f"\nHMS benchmarks on {r['machine']}, database: {r['database']}")
    print(f"{'measure':<52} {'p50':>9} {'p95':>9} {'mean':>9} {'n':>7}")
    raw = r.get("raw")
    if raw:
        print(_row("(a) raw SpiffWorkflow, in memory, per instance", raw["instance"]))
        print(_row("(a) raw stateless step (deser, run, ser)", raw["step"]))
    svc = r.get("service")
    if svc:
        print(_row("(b) hms.workflow task completion (service layer)", svc["completion"]))
        print(_row("(b) hms.workflow per instance (start + 7-8 tasks)", svc["instance"]))
        print(f"    SQL statements per completion: {svc['statements_per_completion']:.1f}; commits: 1; "
              f"state row {svc['state_bytes']} bytes")
    http = r.get("http")
    if http:
        print(_row("(c) HTTP API task completion (gunicorn)", http["completion"]))
        print(_row("(c) HTTP API per instance", http["instance"]))
    q = r.get("queue")
    if q:
        print(_row(f"(d) queue query ({q['open']:,} open / {q['completed']:,} done)", q["query"]))
    lr = r.get("longrun")
    if lr:
        m, n = lr["modelled"], lr["naive"]
        print(_row("(e) round as child instance: step 10", m["e10"]))
        print(_row("(e) round as child instance: step 300", m["e300"]))
        print(_row("(e') naive loop in one instance: step 10", n["e10"]))
        print(_row("(e') naive loop in one instance: step 300", n["e300"]))
    ward = r.get("ward")
    if ward:
        print(_row("(f) ward stay: record a dose/round, day 2", ward["record_day2"]))
        print(_row(f"(f) ward stay: record a dose/round, day {ward['days']}", ward["record_last"]))
        print(_row(f"(f) ward stay: nursing scheduler tick, day {ward['days']}", ward["schedule_last"]))
        print(f"    {ward['doses_given']} doses and {ward['rounds_done']} rounds recorded; largest instance state "
              f"{ward['largest_state_bytes']} bytes")
    print("\nratios (p50):")
    if raw and svc:
        print(f"  b/a (service completion / raw stateless step) = {svc['completion']['p50'] / raw['step']['p50']:.2f}")
    if raw and http:
        print(f"  c/a (HTTP completion / raw stateless step)    = {http['completion']['p50'] / raw['step']['p50']:.2f}")
    if ward:
        print(f"  f(day {ward['days']})/f(day 2) (ward stay recording)     = {ward['ratio']:.2f}")
    if lr:
        print(f"  e300/e10 (modelled)                            = {lr['modelled']['ratio']:.2f}"
              f"   (naive loop: {lr['naive']['ratio']:.2f}, its state {lr['naive']['state_bytes']:,} bytes"
              f" vs parent stay {lr['modelled']['parent_state_bytes']:,})")
    targets = []
    if svc:
        targets.append(("service completion p95 <= 10 ms", svc["completion"]["p95"] <= 10))
    if http:
        targets.append(("HTTP completion p95 <= 15 ms", http["completion"]["p95"] <= 15))
    if q:
        targets.append(("queue query p95 <= 20 ms", q["query"]["p95"] <= 20))
    if lr:
        targets.append(("e300/e10 <= 1.5", lr["modelled"]["ratio"] <= 1.5))
    if ward:
        targets.append(("ward stay: last day / day 2 <= 1.5", ward["ratio"] <= 1.5))
    print("\ntargets:")
    for name, ok in targets:
        print(f"  {'met   ' if ok else 'MISSED'} {name}")


if __name__ == "__main__":
    main()
