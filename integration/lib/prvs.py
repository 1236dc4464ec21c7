#!/usr/bin/env python3
"""BATV prvs tags computed independently of listwarden, for the harness.

The harness gets valid tags from `listwarden sign`; this helper makes the
ones listwarden would never hand out (expired, forged) and cross-checks
`listwarden sign` against a second implementation of the same rule:

    prvs=K DDD SSSSSS=local@domain
    DDD    = (day + validity_days) % 1000, day = unix_time // 86400
    SSSSSS = first 3 bytes (hex) of HMAC-SHA1(key, K + DDD + lower(local@domain))
    key    = the key file's bytes with surrounding whitespace trimmed

Usage:
    prvs.py sign KEYFILE ADDRESS [--key-id K] [--validity DAYS] [--days-ago N]
    prvs.py forge ADDRESS        (one hex digit of the tag changed)
"""

import argparse
import hashlib
import hmac
import sys
import time

PREFIX = "prvs="
# "prvs=" K DDD SSSSSS "=": the MAC's hex digits sit at [9, 15).
MAC_START, MAC_END = 9, 15


def sign(key: bytes, address: str, key_id: int, validity: int, days_ago: int) -> str:
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        raise ValueError(f"not an address: {address}")
    day = int(time.time()) // 86400 - days_ago
    key_and_day = f"{key_id}{(day + validity) % 1000:03d}"
    message = (key_and_day + local.lower() + "@" + domain.lower()).encode()
    mac = hmac.new(key, message, hashlib.sha1).hexdigest()[:6]
    return f"{PREFIX}{key_and_day}{mac}={local}@{domain}"


def forge(address: str) -> str:
    """Changes the last hex digit of the tag's MAC: same shape, wrong MAC."""
    if not address.lower().startswith(PREFIX) or len(address) <= MAC_END:
        raise ValueError(f"not a prvs address: {address}")
    digit = address[MAC_END - 1]
    replacement = "0" if digit != "0" else "1"
    return address[: MAC_END - 1] + replacement + address[MAC_END:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_sign = sub.add_parser("sign")
    p_sign.add_argument("keyfile")
    p_sign.add_argument("address")
    p_sign.add_argument("--key-id", type=int, default=1)
    p_sign.add_argument("--validity", type=int, default=7)
    p_sign.add_argument("--days-ago", type=int, default=0)
    p_forge = sub.add_parser("forge")
    p_forge.add_argument("address")
    args = parser.parse_args()
    try:
        if args.command == "sign":
            with open(args.keyfile, "rb") as f:
                key = f.read(4096).strip()
            print(sign(key, args.address, args.key_id, args.validity, args.days_ago))
        else:
            print(forge(args.address))
    except (OSError, ValueError) as e:
        print(f"prvs.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
