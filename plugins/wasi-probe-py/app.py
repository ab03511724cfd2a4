"""Test fixture: a validator that reports what the engine's WASI gives it.

It rejects every transfer with code `probe` and, as the message, a JSON
object of what it saw: the wall clock, random bytes, the environment and
arguments, what opening a file, listing the root, opening a socket and
resolving a name did, and the monotonic clock around a long sleep. It also
prints a line to stdout and one to stderr. tests/plugin_parity.rs reads it.

Built by plugins/build.sh with componentize-py, the default way (WASI
imported, not stubbed).
"""

import json
import os
import random
import socket
import sys
import time

import wit_world
from wit_world.imports import types


def _attempt(action):
    try:
        action()
        return "allowed"
    except Exception as e:  # noqa: BLE001 - any refusal is what is probed
        return type(e).__name__


class WitWorld(wit_world.WitWorld):
    def configure(self, config):
        return types.Needs(accounts=False, velocity_windows_seconds=[])

    def validate(self, transfer, context):
        print(f"probing {transfer.id}")
        print("a line on stderr", file=sys.stderr)
        before = time.monotonic_ns()
        time.sleep(3600)
        slept_ns = time.monotonic_ns() - before
        seen = {
            "time_ms": time.time_ns() // 1_000_000,
            "random_hex": os.urandom(8).hex(),
            "random_module": random.SystemRandom().getrandbits(32),
            "env": dict(os.environ),
            "argv": sys.argv[1:],
            "open_file": _attempt(lambda: open("/etc/passwd").read()),
            "list_root": _attempt(lambda: os.listdir("/")),
            "socket": _attempt(lambda: socket.create_connection(("127.0.0.1", 5432), timeout=1)),
            "resolve": _attempt(lambda: socket.getaddrinfo("localhost", 80)),
            "slept_ns": slept_ns,
        }
        return wit_world.Verdict_Reject(types.Rejection(code="probe", message=json.dumps(seen, sort_keys=True)))
