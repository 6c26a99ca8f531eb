"""Python half of tests/unit/test_cli_wire.c: hsq_client against the C codec.

    wire_compat.py requests        print the requests hsq_client sends, one per
                                   line: "<op> <nframes> <meta hex>"; the C test
                                   decodes each with the strict hsq_wire_decode.
    wire_compat.py replies FILE    FILE holds replies encoded by the C codec,
                                   one per line: "<op> <rid> <meta hex> [<frame
                                   hex>...]"; each is fed through the Client
                                   method for that op and the result printed
                                   as one JSON line for the C test to check.

No sockets: Client._call is replaced by a capture that packs with the module's
own pack_request and parses with its own parse_reply.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hsq_client import Client, HsqError, pack_request, parse_reply  # noqa: E402


class _Stop(Exception):
    pass


class Capture(Client):
    def __init__(self):  # no socket, no context
        self._rid = 0
        self.sent = []
        self.reply = None  # (rid, parts) for the next call

    def _call(self, op, body, frames=(), extra_ms=0):
        self._rid += 1
        self.sent.append((op, pack_request(self._rid, op, body), len(frames)))
        if self.reply is None:
            raise _Stop()
        rid, parts = self.reply
        self.reply = None
        got = parse_reply(parts, rid, op)
        if got is None:
            raise HsqError("internal", "reply not recognised")
        return got


def requests():
    c = Capture()
    calls = [
        lambda: c.submit("alice", photos=[(b"\xff\xd8one", "one.jpg"), b"two"],
                         clothing=(b"cloth", "suit.png"), background=b"bg",
                         outputs=[{"width": 1024, "height": 1280, "format": "jpeg", "quality": 85},
                                  {"width": 512, "height": 512, "format": "png"}],
                         key="order-17", prio="high", prompt="navy suit, grey backdrop"),
        lambda: c.submit("bob", photos=[b"x"]),
        lambda: c.status(42),
        lambda: c.status(42, user="alice"),
        lambda: c.wait(42, timeout_ms=1500, since="queued", user="alice"),
        lambda: c.wait(42, timeout_ms=0),
        lambda: c.result(42, user="alice"),
        lambda: c.cancel(42),
        lambda: c.requeue(42, user="alice"),
        lambda: c.list("alice"),
        lambda: c.list("alice", limit=5, before=100),
        lambda: c.stats(),
        lambda: c.submit("carol", photos=[b"p"], background=(b"bg", "beach.jpg"),
                         outputs=[{"width": 600, "height": 600, "format": "png"}],
                         backgrounds=[{"kind": "solid", "color": [255, 255, 255]},
                                      {"kind": "gradient", "color": [10, 20, 30],
                                       "color2": [200, 210, 220]},
                                      {"kind": "reference", "blur_px": 12}],
                         styles=[{"name": "natural", "retouch": 30, "tone": 50, "sharpen": 30},
                                 {"name": "suit", "clothing": 80}],
                         dpi=300),
    ]
    for call in calls:
        try:
            call()
        except _Stop:
            pass
    for op, meta, nframes in c.sent:
        print(op, nframes, meta.hex())


def _jsonable(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    raise TypeError(type(v))


def replies(path):
    c = Capture()
    with open(path) as f:
        for line in f:
            w = line.split()
            if not w:
                continue
            op, rid = w[0], int(w[1])
            c.reply = (rid, [bytes.fromhex(x) for x in w[2:]])
            try:
                if op == "submit":
                    out = c.submit("u", photos=[b"x"])
                elif op in ("status", "cancel", "requeue"):
                    out = getattr(c, op)(1)
                elif op == "wait":
                    task, timed_out = c.wait(1, timeout_ms=10)
                    out = {"task": task, "timed_out": timed_out}
                elif op == "result":
                    task, data = c.result(1)
                    out = {"task": task, "data": data}
                elif op == "list":
                    out = c.list("u")
                elif op == "stats":
                    out = c.stats()
                else:
                    out = {"unknown": op}
            except HsqError as e:
                out = {"error": e.code, "message": e.message}
            print(op, json.dumps(out, sort_keys=True, default=_jsonable))


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "requests":
        requests()
    elif len(sys.argv) == 3 and sys.argv[1] == "replies":
        replies(sys.argv[2])
    else:
        sys.exit("usage: wire_compat.py requests | replies FILE")
