#!/usr/bin/env python3
"""A provider that pushes back, for the throttle replay.

An SMTP sink on 127.0.0.1:PORT that behaves like Yahoo under complaint
pressure: once a client has tried more than LIMIT transactions (MAIL FROM)
in the last WINDOW seconds, every further MAIL FROM gets

    421 4.7.0 [TS01] Messages from 127.0.0.1 temporarily deferred due to user complaints

and the connection is closed. Refused attempts count toward the window
too (hammering keeps you deferred). Accepted messages are not stored;
each recipient of an accepted message counts as one copy. Counts are
written as JSON to STATS every half second and at exit (SIGTERM).
"""

import argparse
import asyncio
import collections
import json
import os
import signal
import time


class Sink:
    def __init__(self, limit, window, stats):
        self.limit, self.window, self.stats_path = limit, window, stats
        self.attempts = collections.deque()  # times of MAIL FROM
        self.copies = collections.Counter()  # recipient -> accepted copies
        self.n = dict(attempts=0, refused=0, accepted_tx=0, copies=0)
        self.first = self.last = None
        self.dirty = True

    def admit(self, now):
        while self.attempts and self.attempts[0] <= now - self.window:
            self.attempts.popleft()
        over = len(self.attempts) >= self.limit
        self.attempts.append(now)
        self.n["attempts"] += 1
        if over:
            self.n["refused"] += 1
        self.dirty = True
        return not over

    def accepted(self, rcpts, now):
        self.n["accepted_tx"] += 1
        for r in rcpts:
            self.copies[r] += 1
        self.n["copies"] += len(rcpts)
        self.first = self.first or now
        self.last = now
        self.dirty = True

    def write(self):
        if not self.dirty:
            return
        self.dirty = False
        out = dict(self.n)
        out.update(
            unique=len(self.copies),
            duplicated=sum(1 for c in self.copies.values() if c > 1),
            first_copy=self.first,
            last_copy=self.last,
        )
        tmp = self.stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, self.stats_path)

    async def session(self, reader, writer):
        async def say(line):
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        rcpts, in_tx = [], False
        try:
            await say("220 pushback-sink ESMTP")
            while True:
                line = await reader.readline()
                if not line:
                    break
                cmd = line.decode("latin-1").strip()
                verb = cmd[:4].upper()
                if verb in ("EHLO", "HELO"):
                    await say("250-pushback-sink\r\n250-PIPELINING\r\n250 8BITMIME")
                elif verb == "MAIL":
                    if not self.admit(time.time()):
                        await say("421 4.7.0 [TS01] Messages from 127.0.0.1 temporarily deferred due to user complaints")
                        break
                    rcpts, in_tx = [], True
                    await say("250 2.1.0 ok")
                elif verb == "RCPT" and in_tx:
                    addr = cmd[8:].strip().split(">")[0].lstrip("<").lower()
                    rcpts.append(addr)
                    await say("250 2.1.5 ok")
                elif verb == "DATA" and rcpts:
                    await say("354 go ahead")
                    while True:
                        body = await reader.readline()
                        if not body or body in (b".\r\n", b".\n"):
                            break
                    if not body:
                        break
                    self.accepted(rcpts, time.time())
                    rcpts, in_tx = [], False
                    await say("250 2.0.0 ok")
                elif verb == "RSET":
                    rcpts, in_tx = [], False
                    await say("250 2.0.0 ok")
                elif verb == "QUIT":
                    await say("221 2.0.0 bye")
                    break
                elif verb == "NOOP":
                    await say("250 2.0.0 ok")
                else:
                    await say("503 5.5.1 bad sequence")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--limit", type=int, required=True, help="transactions per window")
    ap.add_argument("--window", type=float, default=60.0, help="seconds")
    ap.add_argument("--stats", required=True)
    a = ap.parse_args()
    sink = Sink(a.limit, a.window, a.stats)
    server = await asyncio.start_server(sink.session, "127.0.0.1", a.port, limit=1 << 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    async with server:
        while not stop.is_set():
            sink.write()
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
    sink.dirty = True
    sink.write()


if __name__ == "__main__":
    asyncio.run(main())
