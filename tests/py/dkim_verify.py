#!/usr/bin/env python3
"""Verifies every DKIM signature of every message with dkimpy, an implementation
independent of blast's (mail-auth).

usage: dkim_verify.py KEYS.json MESSAGE.eml...
KEYS.json maps "selector._domainkey.domain." to the TXT record's value. Prints one JSON
line per message: {"file": ..., "signatures": [{"d":..,"s":..,"a":..,"h":[..],"ok":bool}]}.
"""
import json
import sys

import dkim  # dkimpy; Ed25519 needs pynacl

keys = json.load(open(sys.argv[1]))


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    if not name.endswith("."):
        name += "."
    return keys.get(name, "").encode()


for path in sys.argv[2:]:
    msg = open(path, "rb").read()
    d = dkim.DKIM(msg)
    sigs = []
    # One verify per signature, by index: a failure of one must not hide behind the other.
    headers = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
    for i, v in enumerate(headers):
        tags = dict(
            (t.split(b"=", 1)[0].strip().decode(), b"".join(t.split(b"=", 1)[1].split()).decode())
            for t in v.split(b";")
            if b"=" in t
        )
        ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
        sigs.append(
            {
                "d": tags.get("d"),
                "s": tags.get("s"),
                "a": tags.get("a"),
                "c": tags.get("c"),
                "l": tags.get("l"),
                "h": tags.get("h", "").split(":"),
                "ok": bool(ok),
            }
        )
    print(json.dumps({"file": path, "signatures": sigs}))
