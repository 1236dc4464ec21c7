#!/usr/bin/env python3
"""Independent test vectors for listwarden's prvs and signed-VERP tags.

Written from the format descriptions in crates/core/src/address/prvs.rs and verp.rs using only the
Python standard library. Prints Rust tuple rows; paste them into PRVS_VECTORS in
prvs.rs and VERP_VECTORS in verp.rs (tests modules).

    python3 tests/prvs_vectors.py
"""
import base64
import hashlib
import hmac
import struct


def prvs(secret, key_id, today, validity, local, domain):
    ddd = (today + validity) % 1000
    head = f"{key_id}{ddd:03d}".encode()
    # Local part ASCII-lowercased (bytes.lower touches ASCII only), domain lowercased.
    msg = head + local.encode().lower() + b"@" + domain.lower().encode()
    mac = hmac.new(secret.encode(), msg, hashlib.sha1).digest()
    return f"prvs={head.decode()}{mac[:3].hex()}={local}"


def field(data):
    return struct.pack(">H", len(data)) + data


def verp(secret, key_id, today, bounce_local, list_domain, member_local, member_domain):
    head = f"{key_id}{today % 10000:04d}".encode()
    msg = (b"listwarden-verp-v1\x00" + head
           + field(bounce_local.encode().lower()) + field(list_domain.lower().encode())
           + field(member_local.encode().lower()) + field(member_domain.lower().encode()))
    mac = hmac.new(secret.encode(), msg, hashlib.sha256).digest()
    tag = base64.b32encode(mac[:10]).decode().lower()
    return f"{bounce_local}+lw-{head.decode()}{tag}={member_local}={member_domain.lower()}"


KEY1 = "listwarden-test-key-one"
KEY2 = "0123456789abcdef0123456789abcdef"

PRVS_CASES = [
    (KEY1, 0, 19000, 7, "bounces", "lists.example.org"),
    (KEY1, 3, 20999, 7, "bounces", "lists.example.org"),   # DDD wraps to 006
    (KEY2, 0, 19993, 7, "owner-list", "example.net"),      # DDD = 000
    (KEY2, 9, 19500, 30, "Bob.Smith", "example.com"),      # mixed case signed lowercased
    (KEY1, 1, 0, 1, "a+b=c", "x.org"),
    (KEY2, 5, 123456, 14, "list-bounces", "bücher.example"),
    (KEY1, 2, 19999, 365, "jöhn", "例子.广告"),
]

VERP_CASES = [
    (KEY1, 0, 19000, "list-bounces", "lists.example.org", "alice", "example.com"),
    (KEY1, 4, 29999, "list-bounces", "lists.example.org", "Alice.Smith", "example.com"),
    (KEY2, 7, 20000, "b", "l.example", "a+b=c", "x.org"),
    (KEY2, 9, 123456, "sympa-bounce", "bücher.example", "jöhn", "例子.广告"),
]

print("        // PRVS_VECTORS")
for secret, key_id, today, validity, local, domain in PRVS_CASES:
    tagged = prvs(secret, key_id, today, validity, local, domain)
    print(f'        ("{secret}", {key_id}, {today}, {validity}, "{local}", "{domain}", "{tagged}"),')
print("        // VERP_VECTORS")
for secret, key_id, today, bl, ld, ml, md in VERP_CASES:
    signed = verp(secret, key_id, today, bl, ld, ml, md)
    print(f'        ("{secret}", {key_id}, {today}, "{bl}@{ld}", "{ml}@{md}", "{signed}"),')
