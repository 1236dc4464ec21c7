#!/usr/bin/env python3
"""SMTP load for integration/redis-modes: bounces through several MX hosts.

  mxload.py rcpt PORT CLIENT_ADDR RCPT
      one bounce up to RCPT; prints the reply code.
  mxload.py wait PORT CLIENT_ADDR RCPT CODE TIMEOUT_S
      repeats `rcpt` every 20 ms until it answers CODE; prints the ms it took
      (or "timeout").
  mxload.py flood --ports P1,P2 --net 198.18.7 --rcpt R --count N --rate R --token T
      N bounces from CLIENT_ADDR net.1 (one network), spread over the ports in
      turn at about R per second per port (one thread per port); messages
      past RCPT are sent whole. Prints one JSON line: replies by class at RCPT
      and at end of DATA, 5xx count, connection errors, and RCPT latency
      p50/p99/max in ms (seen by the client, so an upper bound of the
      milter's decision time).
"""

import json
import smtplib
import sys
import threading
import time


def session(port, addr):
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo("mx.load.example")
    # XCLIENT plays the client address; the server greets again.
    code, _ = s.docmd("XCLIENT", f"ADDR={addr} NAME=mx.load.example")
    if code != 220:
        raise RuntimeError(f"XCLIENT refused: {code}")
    s.ehlo("mx.load.example")
    return s


def rcpt(port, addr, to):
    s = session(port, addr)
    try:
        s.docmd("MAIL FROM:<>")
        code, _ = s.docmd(f"RCPT TO:<{to}>")
        return code
    finally:
        try:
            s.quit()
        except Exception:
            pass


def one(port, addr, to, token, i, out, lock):
    started = time.monotonic()
    try:
        s = session(port, addr)
        s.docmd("MAIL FROM:<>")
        t0 = time.monotonic()
        code, _ = s.docmd(f"RCPT TO:<{to}>")
        took = (time.monotonic() - t0) * 1000
        data_code = None
        if code == 250:
            msg = (
                f"From: MAILER-DAEMON@mx.load.example\r\nTo: {to}\r\n"
                f"Subject: load {token} {i}\r\nMessage-ID: <{token}.{i}@mx.load.example>\r\n"
                f"\r\nload {token} {i}\r\n"
            )
            data_code, _ = s.data(msg.encode())
        try:
            s.quit()
        except Exception:
            pass
        with lock:
            out["lat"].append(took)
            out["rcpt"][str(code)[0] + "xx"] = out["rcpt"].get(str(code)[0] + "xx", 0) + 1
            if data_code is not None:
                k = str(data_code)[0] + "xx"
                out["data"][k] = out["data"].get(k, 0) + 1
            if code >= 500 or (data_code or 0) >= 500:
                out["rejected"] += 1
    except Exception as e:  # a broken session is not mail lost, but it is reported
        with lock:
            out["errors"] += 1
            out["error_samples"] = (out.get("error_samples", []) + [repr(e)])[:3]
    return time.monotonic() - started


def flood(ports, net, to, count, rate, token):
    out = {"rcpt": {}, "data": {}, "rejected": 0, "errors": 0, "lat": []}
    lock = threading.Lock()
    per_port = [list(range(k, count, len(ports))) for k in range(len(ports))]

    def worker(port, items):
        gap = 1.0 / rate
        next_at = time.monotonic()
        for i in items:
            now = time.monotonic()
            if next_at > now:
                time.sleep(next_at - now)
            next_at += gap
            one(port, f"{net}.1", to, token, i, out, lock)

    threads = [
        threading.Thread(target=worker, args=(p, items)) for p, items in zip(ports, per_port)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = sorted(out.pop("lat"))

    def pct(q):
        if not lat:
            return 0.0
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)

    out.update(
        seconds=round(time.monotonic() - started, 2),
        rcpt_ms_p50=pct(0.50),
        rcpt_ms_p99=pct(0.99),
        rcpt_ms_max=round(lat[-1], 2) if lat else 0.0,
    )
    print(json.dumps(out, sort_keys=True))


def main(argv):
    cmd = argv[1]
    if cmd == "rcpt":
        print(rcpt(int(argv[2]), argv[3], argv[4]))
    elif cmd == "wait":
        port, addr, to, want, timeout = int(argv[2]), argv[3], argv[4], int(argv[5]), float(argv[6])
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if rcpt(port, addr, to) == want:
                print(round((time.monotonic() - started) * 1000))
                return 0
            time.sleep(0.02)
        print("timeout")
        return 1
    elif cmd == "flood":
        args = dict(zip(argv[2::2], argv[3::2]))
        flood(
            [int(p) for p in args["--ports"].split(",")],
            args["--net"],
            args["--rcpt"],
            int(args["--count"]),
            float(args["--rate"]),
            args["--token"],
        )
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
