"""Verifies the DKIM signatures of smtp-sink dump files with dkimpy, an
implementation independent of the signer (opendkim). The public key comes
from the TXT record file opendkim-genkey wrote, not from DNS.

Usage: dkimcheck.py TXTFILE DOMAIN SELECTOR FILE...

Prints one line per file, "ok FILE present=NAMES" (which of the COVERED
fields the copy carries) or "bad FILE: what", then "control ok|bad: what"
for two forgeries made from the first good copy (a second
List-Unsubscribe added above the signature, a changed Feedback-ID): the
verifier must refuse both, or its "ok" lines mean nothing. A copy without
Feedback-ID (a list manager's own) gets "control skip" for the second.
"""

import re
import sys

import dkim

# Fields the signature must cover; the ones also listed in OVERSIGNED must
# appear in h= more often than in the message, so none can be added.
COVERED = ["from", "list-id", "list-unsubscribe", "list-unsubscribe-post", "feedback-id"]
OVERSIGNED = COVERED


def txt_record(path):
    """The TXT value of an opendkim-genkey .txt file: its quoted strings."""
    with open(path, encoding="ascii") as f:
        return "".join(re.findall(r'"([^"]*)"', f.read())).encode("ascii")


def crlf(raw):
    return re.sub(rb"\r?\n", b"\r\n", raw)


def field_names(raw):
    """Lowercased names of the header fields, in order."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    return [
        line.split(b":", 1)[0].strip().lower().decode("ascii", "replace")
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t") and b":" in line
    ]


def check(raw, domain, selector, dnsfunc):
    """None when raw carries one valid signature of ours covering COVERED;
    otherwise what is wrong."""
    d = dkim.DKIM(raw, minkey=1024)
    sigs = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
    if len(sigs) != 1:
        return f"{len(sigs)} DKIM-Signature fields"
    try:
        valid = d.verify(idx=0, dnsfunc=dnsfunc)
    except dkim.DKIMException as e:
        return f"verifier error: {e}"
    tags = d.signature_fields
    if tags.get(b"d", b"").decode().lower() != domain or tags.get(b"s", b"").decode() != selector:
        return f"d={tags.get(b'd')} s={tags.get(b's')}"
    if not valid:
        return "signature does not verify"
    h = [x.lower() for x in d.include_headers]
    h = [x.decode() if isinstance(x, bytes) else x for x in h]
    names = field_names(raw)
    missing = [n for n in COVERED if n not in h]
    if missing:
        return "h= lacks " + ",".join(missing)
    under = [n for n in OVERSIGNED if h.count(n) <= names.count(n)]
    if under:
        return "not oversigned: " + ",".join(under)
    return None


def forgeries(raw):
    """(name, forged copy) pairs a signature must not survive."""
    head, body = raw.split(b"\r\n\r\n", 1)
    extra = b"List-Unsubscribe: <https://evil.example/u>\r\n"
    yield "second List-Unsubscribe", extra + raw
    changed = re.sub(rb"(?im)^(Feedback-ID:[^\r]*)listwarden", rb"\1mallory", head, count=1)
    if changed != head:
        yield "changed Feedback-ID", changed + b"\r\n\r\n" + body


def main(argv):
    txt, domain, selector, files = argv[1], argv[2].lower(), argv[3], argv[4:]
    record = txt_record(txt)
    name = f"{selector}._domainkey.{domain}."

    def dnsfunc(qname, timeout=5):
        q = qname.decode() if isinstance(qname, bytes) else qname
        return record if q.rstrip(".").lower() == name.rstrip(".").lower() else None

    control = None
    for path in files:
        with open(path, "rb") as f:
            raw = crlf(f.read())
        problem = check(raw, domain, selector, dnsfunc)
        if problem is None:
            present = [n for n in COVERED if n in field_names(raw)]
            print(f"ok {path} present={','.join(present) or '-'}")
        else:
            print(f"bad {path}: {problem}")
        if problem is None and control is None:
            control = raw
    if control is None:
        print("control bad: no valid copy to forge")
        return
    tried = 0
    for what, forged in forgeries(control):
        tried += 1
        if check(forged, domain, selector, dnsfunc) is None:
            print(f"control bad: the {what} still verifies")
        else:
            print(f"control ok: the {what} fails")
    if tried < 2:
        print("control skip: no Feedback-ID to change")


if __name__ == "__main__":
    main(sys.argv)
