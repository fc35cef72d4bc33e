#!/usr/bin/python3
"""A webhook receiver for the alert tests, and the check docs/OPERATIONS.md gives a
receiver: the signature is HMAC-SHA256 of "<X-Vigie-Timestamp>.<body>" with the shared
key. A verified call is written to the output directory and answered 204; any other is
answered 401 and counted in rejected.txt."""
import argparse
import hashlib
import hmac
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

p = argparse.ArgumentParser()
for flag in ("--port", "--key-file", "--out"):
    p.add_argument(flag, required=True)
args = p.parse_args()
with open(args.key_file, "rb") as f:
    KEY = f.read().rstrip()


def verified(headers, body: bytes) -> bool:
    timestamp = headers.get("X-Vigie-Timestamp", "")
    signature = headers.get("X-Vigie-Signature", "")
    expected = hmac.new(KEY, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(signature, "sha256=" + expected)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if verified(self.headers, body):
            path = os.path.join(args.out, f"{time.time_ns()}.json")
            with open(path + ".tmp", "wb") as f:
                f.write(body)
            os.rename(path + ".tmp", path)
            self.send_response(204)
        else:
            with open(os.path.join(args.out, "rejected.txt"), "a") as f:
                f.write("x\n")
            self.send_response(401)
        self.end_headers()


ThreadingHTTPServer(("127.0.0.1", int(args.port)), Handler).serve_forever()
