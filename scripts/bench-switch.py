#!/usr/bin/env python3
"""How soon every engine follows an admin change (scripts/bench, scenario 11).

Alternately activates versions 1 and 2 of `limits` through one engine's admin
API, and after each call polls every engine's /metrics until its
`transfer_engine_plugin_generation` passes the one it showed before: that is
the plugin set its processor decides the next batch with. Reports, per
change, the time from sending the admin call to the last engine following.
"""
import argparse
import json
import time
import urllib.request

POLL_S = 0.002
TIMEOUT_S = 30


def generation(engine):
    with urllib.request.urlopen(f"{engine}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("transfer_engine_plugin_generation "):
                return int(float(line.split()[1]))
    raise SystemExit(f"{engine} shows no transfer_engine_plugin_generation")


def activate(admin, token, version):
    body = json.dumps({"version": version}).encode()
    request = urllib.request.Request(f"{admin}/v1/admin/plugins/limits/activate", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        if r.status != 204:
            raise SystemExit(f"activate answered {r.status}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--admin", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--engines", nargs="+", required=True)
    p.add_argument("--switches", type=int, default=40)
    p.add_argument("--json", required=True)
    args = p.parse_args()
    followed_ms, call_ms = [], []
    for i in range(args.switches):
        before = {e: generation(e) for e in args.engines}
        started = time.perf_counter()
        activate(args.admin, args.token, 1 if i % 2 == 0 else 2)
        call_ms.append((time.perf_counter() - started) * 1000)
        waiting = set(args.engines)
        while waiting:
            for e in list(waiting):
                if generation(e) > before[e]:
                    waiting.discard(e)
            if time.perf_counter() - started > TIMEOUT_S:
                raise SystemExit(f"{sorted(waiting)} did not follow change {i} within {TIMEOUT_S} s")
            if waiting:
                time.sleep(POLL_S)
        followed_ms.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)
    ordered = sorted(followed_ms)
    report = {
        "switches": args.switches,
        "engines": len(args.engines),
        "followed_ms": followed_ms,
        "p50_ms": ordered[(len(ordered) - 1) // 2],
        "max_ms": ordered[-1],
        "call_p50_ms": sorted(call_ms)[(len(call_ms) - 1) // 2],
    }
    with open(args.json, "w") as f:
        json.dump(report, f)
    print(f"{args.switches} changes, {len(args.engines)} engines: every engine followed in p50 {report['p50_ms']:.1f} ms, "
          f"max {report['max_ms']:.1f} ms (the admin call itself: p50 {report['call_p50_ms']:.1f} ms)")


if __name__ == "__main__":
    main()
