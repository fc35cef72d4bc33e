#!/usr/bin/python3
"""An SMTP server for the alert tests: Debian's aiosmtpd on 127.0.0.1, STARTTLS required
before anything else, AUTH required before mail, every message written to a directory as
it arrives, decoded by Python's own e-mail parser (one .eml file each: recipients, From,
To, Subject, then the text; renamed into place when complete)."""
import email
import email.policy
import argparse
import os
import ssl
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

p = argparse.ArgumentParser()
for flag in ("--port", "--cert", "--key", "--user", "--password", "--out"):
    p.add_argument(flag, required=True)
args = p.parse_args()


class Handler:
    async def handle_DATA(self, server, session, envelope):
        path = os.path.join(args.out, f"{time.time_ns()}.eml")
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(f"X-Rcpt: {', '.join(envelope.rcpt_tos)}\n")
            f.write(f"From: {msg['From']}\nTo: {msg['To']}\nSubject: {msg['Subject']}\n\n")
            f.write(msg.get_content())
        os.rename(path + ".tmp", path)
        return "250 OK"


def authenticate(server, session, envelope, mechanism, data):
    ok = (
        isinstance(data, LoginPassword)
        and data.login == args.user.encode()
        and data.password == args.password.encode()
    )
    print(f"auth {mechanism} {'ok' if ok else 'refused'}", flush=True)
    return AuthResult(success=ok)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(args.cert, args.key)
controller = Controller(
    Handler(),
    hostname="127.0.0.1",
    port=int(args.port),
    tls_context=context,
    require_starttls=True,
    authenticator=authenticate,
    auth_required=True,
    auth_require_tls=True,
)
controller.start()
print(f"listening on 127.0.0.1:{args.port}", flush=True)
threading.Event().wait()
