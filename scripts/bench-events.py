#!/usr/bin/env python3
"""Times events from their commit to their arrival: reads `transfer-engine
events tail` on stdin (one JSON event per line), stamps each line as it
arrives, and on end of input writes the lag of each final-status event
(arrival less its `occurred_at`, which is the commit's start) as a summary.

Usage: transfer-engine events tail | bench-events.py OUT.json
"""
import json
import sys
import time
from datetime import datetime

FINAL = ("completed", "rejected", "failed")


def nearest_rank(values, q):
    return values[min(len(values) - 1, max(0, int(round(q * len(values) + 0.5)) - 1))] if values else 0.0


def main():
    out = sys.argv[1]
    lags_ms, events, ids = [], 0, set()
    for line in sys.stdin:
        arrived = time.time()
        events += 1
        event = json.loads(line)
        ids.add(event["event_id"])
        if event["status"] in FINAL:
            occurred = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00")).timestamp()
            lags_ms.append((arrived - occurred) * 1000)
    lags_ms.sort()
    summary = {
        "events": events,
        "distinct_event_ids": len(ids),
        "final_events": len(lags_ms),
        "p50_ms": nearest_rank(lags_ms, 0.50),
        "p90_ms": nearest_rank(lags_ms, 0.90),
        "p99_ms": nearest_rank(lags_ms, 0.99),
        "max_ms": lags_ms[-1] if lags_ms else 0.0,
    }
    json.dump(summary, open(out, "w"))
    print(f"events: {events:,} ({len(ids):,} distinct ids); commit to arrival, final statuses: "
          f"p50 {summary['p50_ms']:.1f} / p90 {summary['p90_ms']:.1f} / p99 {summary['p99_ms']:.1f} / max {summary['max_ms']:.0f} ms")


if __name__ == "__main__":
    main()
