#!/usr/bin/env python3
"""Sends MAIL FROM and RCPT TO arguments exactly as given (swaks always
wraps them in <...> and splits recipients at commas, so it cannot send a
source route or a comment outside the brackets).

Usage: rawsmtp.py PORT CLIENT_ADDR MAIL_ARG RCPT_ARG [MESSAGE_FILE]

Plays XCLIENT ADDR=CLIENT_ADDR (unless it is 127.0.0.1), then
"MAIL FROM:" + MAIL_ARG and "RCPT TO:" + RCPT_ARG byte for byte, and, when
the recipient was accepted and MESSAGE_FILE is given, DATA with that file.
Prints one line: the stage of the first reply that was not positive and that
reply ("rcpt<TAB>550 5.7.1 ..."), or "data<TAB>250 ..." when all were.
"""

import smtplib
import sys


def main() -> int:
    if len(sys.argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    port, client, mail_arg, rcpt_arg = sys.argv[1:5]
    message = None
    if len(sys.argv) == 6:
        with open(sys.argv[5], "rb") as f:
            message = f.read()
    s = smtplib.SMTP("127.0.0.1", int(port), timeout=20)
    try:
        s.ehlo("mx.example.net")
        if client != "127.0.0.1":
            code, text = s.docmd(f"XCLIENT ADDR={client} NAME=mx.example.net")
            if code != 220:
                print(f"xclient\t{code} {text.decode(errors='replace')}")
                return 0
            s.ehlo("mx.example.net")
        for stage, cmd in (("mail", "MAIL FROM:" + mail_arg), ("rcpt", "RCPT TO:" + rcpt_arg)):
            code, text = s.docmd(cmd)
            if code >= 300:
                print(f"{stage}\t{code} {text.decode(errors='replace')}")
                return 0
        if message is None:
            print("rcpt\t250 accepted")
            return 0
        try:
            code, text = s.data(message)
        except smtplib.SMTPDataError as e:
            code, text = e.smtp_code, e.smtp_error
        print(f"data\t{code} {text.decode(errors='replace')}")
        return 0
    except smtplib.SMTPException as e:
        print(f"error\t{e}")
        return 1
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass


if __name__ == "__main__":
    sys.exit(main())
