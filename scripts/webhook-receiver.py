#!/usr/bin/env python3
"""A webhook receiver for scripts/chaos: answers 204 to every POST and
appends `<webhook-id> <signature ok: 1|0> <body>` to a file, one line per
delivery (duplicates included).

Usage: webhook-receiver.py PORT OUT_FILE SECRET
"""
import base64
import hashlib
import hmac
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, OUT, SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3]
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        signed = f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.".encode() + body
        expected = "v1," + base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
        ok = any(hmac.compare_digest(expected, s) for s in self.headers.get("webhook-signature", "").split())
        with open(OUT, "a") as out:
            out.write(f"{self.headers['webhook-id']} {int(ok)} {body.decode()}\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
