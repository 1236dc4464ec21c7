#!/usr/bin/env python3
"""Sends one very large bounce through Postfix for integration/run's
`big-body` check (fault D6 of TESTING.md): a DSN to a trace-mode list that returns our
own mail, followed by SIZE_MB of text in the MIME epilogue. XCLIENT plays
a foreign client, so listwarden must read the body for its trace check.

Usage: bigbody.py PORT CLIENT_IP RCPT TOKEN DSN_FILE SIZE_MB
Prints the final SMTP reply ("250 ..."); exit 0 when the server answered.
Standard library only.
"""

import smtplib
import sys


def main() -> int:
    port, client, rcpt, token, dsn_file, size_mb = sys.argv[1:7]
    with open(dsn_file, encoding="ascii") as f:
        dsn = f.read().replace("{token}", token)
    head = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n"
        f"To: {rcpt}\r\n"
        f"Subject: Undelivered Mail Returned to Sender {token}\r\n"
        f"Message-ID: <{token}@lw-it.test>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        '\tboundary="lwit-dsn-boundary"\r\n\r\n'
    )
    body = dsn.replace("\r\n", "\n").replace("\n", "\r\n")
    line = ("padding " + "x" * 68 + "\r\n").encode("ascii")
    lines = int(size_mb) * 1024 * 1024 // len(line)
    data = head.encode("ascii") + body.encode("ascii") + line * lines
    with smtplib.SMTP("127.0.0.1", int(port), timeout=120) as s:
        s.ehlo("mx.example.com")
        code, msg = s.docmd("XCLIENT", f"ADDR={client} NAME=mx.example.com")
        if code != 220:
            print(f"{code} {msg.decode(errors='replace')}")
            return 1
        s.ehlo("mx.example.com")
        s.mail("")
        code, msg = s.rcpt(rcpt)
        if code != 250:
            print(f"{code} {msg.decode(errors='replace')}")
            return 0
        code, msg = s.data(data)
        print(f"{code} {msg.decode(errors='replace')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
