#!/usr/bin/env python3
"""The host's tests: `cargo test --workspace`, with its test binaries run side by side.

`cargo test` runs one test binary after another. Ours mostly wait on
PostgreSQL, the broker and child processes (the crash test is held to 30 s
by its load's rate), so running a few binaries at once on two cores takes a
fraction of the time. This builds exactly what `cargo test` builds (the same
command, `--no-run`), then runs every test binary cargo reports, as cargo
would (from its package's directory, no arguments), `--jobs` at a time, the
longest first by the last run's times, and the doc tests with `cargo test
--doc`. Each binary's output is printed whole when it ends, so outputs do not
interleave. cargo-nextest does this and more, but is not on a fresh Debian
machine, and building it would cost minutes of the first run.

Usage: host-tests.py [--jobs N] [-- extra cargo test arguments, e.g. --timings]
Exits non-zero if the build or any binary fails; prints each binary's time.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def durations_file():
    """The last run's seconds per binary, to start the longest first."""
    return target_dir() / "host-test-seconds.json"


def build(extra):
    """Builds the test binaries; returns (name, executable, package directory) for each."""
    command = ["cargo", "test", "--locked", "--workspace", "--no-run", "--message-format=json-render-diagnostics", *extra]
    with tempfile.TemporaryFile(mode="w+") as messages:
        # cargo's progress and diagnostics go to stderr (the terminal); its JSON messages to the file.
        if subprocess.run(command, cwd=ROOT, stdout=messages).returncode != 0:
            sys.exit("host tests: the build failed")
        messages.seek(0)
        binaries = []
        for line in messages:
            message = json.loads(line)
            if message.get("reason") != "compiler-artifact" or not message["profile"]["test"] or not message.get("executable"):
                continue
            target = message["target"]
            kind = "lib" if "lib" in target["kind"] else target["kind"][0]
            name = target["name"] if kind == "test" else f"{kind} {target['name']}"
            binaries.append((name, message["executable"], str(Path(message["manifest_path"]).parent)))
        return binaries


def run(name, command, cwd):
    started = time.monotonic()
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    return name, result.returncode, time.monotonic() - started, result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("HOST_TEST_JOBS", "3")), help="test binaries at once (default 3)")
    parser.add_argument("extra", nargs="*", help="more arguments for cargo test (the build)")
    args = parser.parse_args()

    started = time.monotonic()
    binaries = build(args.extra)
    built_s = time.monotonic() - started
    try:
        last = json.loads(durations_file().read_text())
    except (OSError, ValueError):
        last = {}
    jobs = [(name, [exe], cwd) for name, exe, cwd in binaries]
    jobs.append(("doc tests", ["cargo", "test", "--locked", "--workspace", "--doc"], str(ROOT)))
    # Longest first, so the last to start are short; unknown ones (new binaries) first of all.
    jobs.sort(key=lambda job: -last.get(job[0], float("inf")))

    print(f"host tests: built in {built_s:.0f} s; {len(jobs)} test binaries, {args.jobs} at a time", flush=True)
    started = time.monotonic()
    seconds, failed = {}, []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in as_completed([pool.submit(run, *job) for job in jobs]):
            name, code, elapsed, output = future.result()
            seconds[name] = round(elapsed, 1)
            summary = [line for line in output.splitlines() if line.startswith("test result:")]
            print(f"\n---- {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {elapsed:.1f} s", flush=True)
            if code == 0:
                print("\n".join(summary) or "(no tests)", flush=True)
            else:
                failed.append(name)
                print(output, flush=True)
    durations_file().parent.mkdir(parents=True, exist_ok=True)
    durations_file().write_text(json.dumps({**last, **seconds}, indent=1, sort_keys=True))

    print(f"\nhost tests: build {built_s:.0f} s, run {time.monotonic() - started:.0f} s; seconds per binary (side by side):")
    for name, elapsed in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"  {elapsed:6.1f} s  {name}")
    if failed:
        sys.exit(f"host tests failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
