#!/usr/bin/env python3
"""SMTP load client for integration/replay: plays a plan of messages with
XCLIENT (so each message can come from any client address), PIPELINING
(MAIL, RCPT and DATA in one write) and several sessions in parallel
threads. smtp-source cannot do XCLIENT and swaks starts one process per
message, too slow for 100,000 messages.

Plan (TSV, one message a line):  ID  CLIENT_IP  MAIL_FROM  RCPT  BODY
  BODY is `plain` (a small bounce-like text) or `file:PATH` (a raw message,
  e.g. a DSN fixture, whose top-level Message-ID is replaced).
  Consecutive lines with the same CLIENT_IP share one SMTP session (at most
  --per-session messages).
Every message gets `Message-ID: <ID@replay.test>`.

Results (TSV, one line per message):  ID  OUTCOME  REPLY  T_MS
  OUTCOME: accepted (250 after the data), {mail,rcpt,data}-{reject,tempfail},
  error (connection failed before the message's data was sent: never
  queued) or unknown (the connection failed after the final dot: Postfix
  may or may not have queued it). T_MS: milliseconds from the start.

Usage: replay-smtp.py HOST PORT PLAN RESULTS [--threads N] [--per-session K]
Standard library only.
"""

import argparse
import queue
import socket
import sys
import threading
import time

MAX_LINE = 4096          # longest reply line kept
SOCKET_TIMEOUT = 60.0    # seconds per read or write
MAX_MESSAGE_BYTES = 1 << 20


class SmtpError(Exception):
    pass


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        """Reads one (possibly multi-line) reply; returns (code, first line)."""
        first = None
        while True:
            line = self.file.readline(MAX_LINE)
            if not line:
                raise SmtpError("connection closed")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if first is None:
                first = text
            if len(text) < 4 or text[3] != "-":
                break
        try:
            code = int(first[:3])
        except ValueError:
            raise SmtpError("bad reply " + first)
        return code, first

    def close(self):
        try:
            self.send(b"QUIT\r\n")
            self.reply()
        except Exception:
            pass
        try:
            self.sock.close()
        except Exception:
            pass


_cache = {}
_cache_lock = threading.Lock()


def raw_file(path):
    with _cache_lock:
        if path not in _cache:
            with open(path, "rb") as f:
                _cache[path] = f.read(MAX_MESSAGE_BYTES).replace(b"\r\n", b"\n")
        return _cache[path]


def message(mid, mail_from, rcpt, body):
    msgid = ("Message-ID: <%s@replay.test>" % mid).encode()
    if body.startswith("file:"):
        raw = raw_file(body[5:])
        head, sep, rest = raw.partition(b"\n\n")
        lines, skip = [], False
        for line in head.split(b"\n"):
            if skip and line[:1] in (b" ", b"\t"):
                continue
            skip = line.lower().startswith(b"message-id:")
            if not skip:
                lines.append(line)
        lines.append(msgid)
        text = b"\n".join(lines) + b"\n\n" + rest
    else:
        sender = mail_from or "MAILER-DAEMON@mx.example.net"
        text = (
            "From: Mail Delivery System <%s>\nTo: <%s>\nSubject: replay %s\n"
            "Date: Thu, 27 Nov 2025 10:00:00 +0000\n%s\n\n"
            "This is the mail system at host mx.example.net.\n\n"
            "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients.\n\n"
            "<gone@example.net>: host mx.example.net said: 550 5.1.1 User unknown\n"
            % (sender, rcpt, mid, msgid.decode())
        ).encode()
    out = []
    for line in text.split(b"\n"):
        if line.startswith(b"."):
            line = b"." + line
        out.append(line)
    return b"\r\n".join(out).rstrip(b"\r\n") + b"\r\n.\r\n"


def outcome(stage, code):
    return "%s-%s" % (stage, "reject" if code >= 500 else "tempfail")


def session(host, port, client, msgs, emit, t0):
    """Plays msgs (list of (id, from, rcpt, body)) in one session."""
    current, dot_sent = None, False
    conn = None
    try:
        conn = Conn(host, port)
        code, line = conn.reply()
        if code != 220:
            raise SmtpError("greeting " + line)
        conn.send(b"EHLO mx.replay.example\r\n")
        conn.reply()
        if client != "127.0.0.1":
            conn.send(("XCLIENT ADDR=%s NAME=mx.replay.example\r\n" % client).encode())
            code, line = conn.reply()
            if code != 220:
                raise SmtpError("XCLIENT " + line)
            conn.send(b"EHLO mx.replay.example\r\n")
            conn.reply()
        for mid, mail_from, rcpt, body in msgs:
            current, dot_sent = mid, False
            data = message(mid, mail_from, rcpt, body)
            conn.send(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (mail_from, rcpt)).encode())
            mcode, mline = conn.reply()
            rcode, rline = conn.reply()
            dcode, dline = conn.reply()
            if dcode == 354:
                conn.send(data)
                dot_sent = True  # from here on, a failure leaves the outcome unknown
                code, line = conn.reply()
                res = ("accepted", line) if code == 250 else (outcome("data", code), line)
            else:
                if mcode >= 400:
                    res = (outcome("mail", mcode), mline)
                elif rcode >= 400:
                    res = (outcome("rcpt", rcode), rline)
                else:
                    res = (outcome("data", dcode), dline)
                emit(mid, res[0], res[1], t0)
                conn.send(b"RSET\r\n")
                conn.reply()
                continue
            emit(mid, res[0], res[1], t0)
        conn.close()
    except (OSError, SmtpError) as e:
        if conn is not None:
            try:
                conn.sock.close()
            except Exception:
                pass
        # emit() ignores messages whose outcome is already recorded.
        for m in msgs:
            if m[0] == current and dot_sent:
                emit(m[0], "unknown", str(e), t0)
            else:
                emit(m[0], "error", str(e), t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("plan")
    ap.add_argument("results")
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--per-session", type=int, default=20)
    a = ap.parse_args()

    sessions = []
    with open(a.plan) as f:
        cur_client, cur = None, []
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 5:
                continue
            mid, client, mail_from, rcpt, body = parts
            if client != cur_client or len(cur) >= a.per_session:
                if cur:
                    sessions.append((cur_client, cur))
                cur_client, cur = client, []
            cur.append((mid, mail_from, rcpt, body))
        if cur:
            sessions.append((cur_client, cur))

    work = queue.Queue()
    for s in sessions:
        work.put(s)
    out = open(a.results, "w")
    lock = threading.Lock()
    emitted = set()

    def emit(mid, res, reply, t0):
        with lock:
            if mid in emitted:
                return
            emitted.add(mid)
            out.write("%s\t%s\t%s\t%d\n" % (mid, res, reply.replace("\t", " "),
                                            (time.monotonic() - t0) * 1000))

    t0 = time.monotonic()

    def worker():
        while True:
            try:
                client, msgs = work.get_nowait()
            except queue.Empty:
                return
            session(a.host, a.port, client, msgs, emit, t0)

    threads = [threading.Thread(target=worker) for _ in range(max(1, a.threads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
