"""Bad input over the wire never takes hsqd (or a worker) down.

Each bad message gets a clear error reply (code checked, rid echoed where it
could be read), and is followed by a valid request on the same socket that
must still succeed. At the end, every valid submit is run by a real worker,
the bad ones left nothing behind, and images the worker cannot decode fail
their task (non-retryable, with an image_* code) without hurting the worker.
Usage: test_bad_input.py tcp|ipc.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, pack, tmo  # noqa: E402

TRANSPORT = sys.argv[1] if len(sys.argv) > 1 else "tcp"
MAX_IMAGE = 16 * 1024
OUT = [{"width": 16, "height": 16, "format": "jpeg"}]


def meta(op="submit", rid=None, v=1, **body):
    m = {"v": v, "op": op}
    if rid is not None:
        m["rid"] = rid
    m.update(body)
    return m


def submit_meta(rid, user="eve", n_inputs=1, **kw):
    m = meta("submit", rid, user=user,
             inputs=[{"kind": "portrait", "name": "x%d.png" % i} for i in range(n_inputs)],
             outputs=OUT)
    m.update(kw)
    return m


class Checker:
    def __init__(self, h, c, img):
        self.h, self.c, self.img = h, c, img
        self.valid = []  # task ids of the valid submits
        self.n = 0

    def expect(self, what, parts, code, rid=None, op=None):
        """Send raw parts; the next message must be an error `code`."""
        self.n += 1
        self.c.send_parts(parts)
        r = self.c.recv(timeout=tmo(10))
        check(isinstance(r.meta, dict), "%s: reply is not a map: %r" % (what, r.meta))
        check(r.error is not None, "%s: expected error %s, got %r" % (what, code, r.meta))
        check_eq(r.code, code, "%s: error code (message %r)" % (what, r.error.get("message")))
        check(isinstance(r.error.get("message"), str) and r.error["message"],
              "%s: error without a message" % what)
        check_eq(r.meta.get("v"), 1, "%s: reply version" % what)
        if rid is not None:
            check_eq(r.meta.get("rid"), rid, "%s: rid echoed" % what)
        if op is not None:
            check_eq(r.meta.get("re"), op, "%s: re" % what)
        check_eq(r.frames, [], "%s: frames in the error reply" % what)
        harness.log("%s -> %s: %s" % (what, r.code, r.error.get("message")))
        self.follow_up(what)

    def follow_up(self, what):
        r = self.c.submit("valid", images=[self.img], outputs=OUT)
        check(r.error is None, "valid submit after %s failed: %r" % (what, r.meta))
        self.valid.append(r["task"])


def client_socket_cases(ck, d):
    img = ck.img
    big = b"\x89PNG" + b"\x00" * (MAX_IMAGE + 1 - 4)
    cases = [
        ("malformed msgpack", [b"\xc1"], "bad_request", None),
        ("truncated msgpack", [pack(submit_meta(7))[:-3], img], "bad_request", None),
        ("meta is an array", [pack([1, "rid", 2])], "bad_request", None),
        ("meta is a string", [pack("hello")], "bad_request", None),
        ("meta is an int", [pack(5)], "bad_request", None),
        ("empty meta frame", [b""], "bad_request", None),
        ("unknown op", [pack(meta("frobnicate", 11))], "unknown_op", 11),
        ("op not a string", [pack(meta(12, 12))], "bad_request", 12),
        ("missing v", [pack({"rid": 13, "op": "stats"})], "bad_request", 13),
        ("missing rid", [pack({"v": 1, "op": "stats"})], "bad_request", None),
        ("rid is a string", [pack({"v": 1, "rid": "x", "op": "stats"})], "bad_request", None),
        ("version 2", [pack(meta("stats", 14, v=2))], "bad_version", 14),
        ("version 0", [pack(meta("stats", 15, v=0))], "bad_version", 15),
        ("version as string", [pack(meta("stats", 16, v="1"))], "bad_request", 16),
        ("user is an int", [pack(submit_meta(17, user=123)), img], "bad_request", 17),
        ("task is a string", [pack(meta("status", 18, task="one"))], "bad_request", 18),
        ("task is negative", [pack(meta("status", 19, task=-1))], "bad_request", 19),
        ("task is zero", [pack(meta("status", 20, task=0))], "bad_request", 20),
        ("task is a float", [pack(meta("status", 21, task=1.5))], "bad_request", 21),
        ("inputs is a map", [pack(submit_meta(22, inputs={"kind": "portrait"})), img],
         "bad_request", 22),
        ("width is a string", [pack(submit_meta(23, outputs=[{"width": "16", "height": 16,
                                                              "format": "jpeg"}])), img],
         "bad_request", 23),
        ("width 0", [pack(submit_meta(24, outputs=[{"width": 0, "height": 16,
                                                    "format": "jpeg"}])), img],
         "bad_request", 24),
        ("width 100000", [pack(submit_meta(25, outputs=[{"width": 100000, "height": 16,
                                                         "format": "jpeg"}])), img],
         "bad_request", 25),
        ("format gif", [pack(submit_meta(26, outputs=[{"width": 16, "height": 16,
                                                       "format": "gif"}])), img],
         "bad_request", 26),
        ("unknown field", [pack(submit_meta(27, colour="blue")), img], "bad_request", 27),
        ("missing outputs", [pack(meta("submit", 28, user="eve",
                                       inputs=[{"kind": "portrait"}])), img], "bad_request", 28),
        ("no portrait input", [pack(submit_meta(29, inputs=[{"kind": "clothing"}])), img],
         "bad_request", 29),
        ("input kind unknown", [pack(submit_meta(30, inputs=[{"kind": "selfie"}])), img],
         "bad_request", 30),
        ("2 inputs, 1 frame", [pack(submit_meta(31, n_inputs=2)), img], "bad_request", 31),
        ("1 input, 2 frames", [pack(submit_meta(32)), img, img], "bad_request", 32),
        ("1 input, 0 frames", [pack(submit_meta(33))], "bad_request", 33),
        ("empty image frame", [pack(submit_meta(34)), b""], "bad_request", 34),
        ("image frame over max_image_bytes", [pack(submit_meta(35)), big], "too_large", 35),
        ("too many frames", [pack(submit_meta(36))] + [img] * 12, "too_large", None),
        ("user too long", [pack(submit_meta(37, user="u" * 129)), img], "too_large", 37),
        ("empty user", [pack(submit_meta(38, user="")), img], "bad_request", 38),
        ("user not UTF-8", [pack(submit_meta(39, user=b"\xff\xfe".decode("latin-1")))[:0] +
                            pack(submit_meta(39)).replace(b"\xa3eve", b"\xa3\xff\xfee"), img],
         "bad_request", 39),
        ("prompt too long", [pack(submit_meta(40, prompt="p" * 5000)), img], "too_large", 40),
        ("duplicate key", [b"\x84\xa1v\x01\xa3rid\x29\xa2op\xa5stats\xa1v\x01"],
         "bad_request", None),
        ("trailing bytes", [pack(meta("stats", 42)) + b"\x00"], "bad_request", None),
        ("array of 2^32-1 declared", [b"\x83\xa1v\x01\xa3rid\x2b\xa2op\xdd\xff\xff\xff\xff"],
         "bad_request", None),
        ("nesting 100 deep", [b"\x91" * 100 + b"\x00"], "bad_request", None),
        ("meta over 64 KiB", [pack(meta("stats", 44, pad="x" * 70000))], "too_large", None),
        ("reply sent as request", [pack({"v": 1, "rid": 45, "re": "stats"})], "bad_request",
         None),
        ("both op and re", [pack({"v": 1, "rid": 46, "op": "stats", "re": "stats"})],
         "bad_request", None),
        ("stats with a frame", [pack(meta("stats", 47)), img], "bad_request", 47),
        ("list limit 0", [pack(meta("list", 48, user="eve", limit=0))], "bad_request", 48),
        ("wait timeout too long", [pack(meta("wait", 49, task=1, timeout_ms=10 ** 7))],
         "bad_request", 49),
        ("wait since unknown", [pack(meta("wait", 50, task=1, since="sleeping"))],
         "bad_request", 50),
        # worker ops on the client socket
        ("lease on the client socket", [pack(meta("lease", 51, max=1))], "forbidden", 51),
        ("ready on the client socket", [pack(meta("ready", 52, name="x", backend="cpu",
                                                  max_batch=1))], "forbidden", 52),
        ("done on the client socket",
         [pack(meta("done", 53, task=1, token=1,
                    outputs=[{"key": "u/x/1/o", "size": 1, "sha256": b"\x00" * 32,
                              "width": 1, "height": 1, "format": "png"}]))], "forbidden", 53),
        ("event on the client socket",
         [pack(meta("event", 54, task=1, user="eve", state="queued", progress=0, at_ms=1))],
         "bad_request", 54),
    ]
    for what, parts, code, rid in cases:
        ck.expect(what, parts, code, rid=rid)
    # The other user's task looks missing, not forbidden.
    ck.c.err("status", {"task": ck.valid[0], "user": "someone"}, "not_found")
    ck.c.err("status", {"task": 10 ** 12}, "not_found")
    ck.follow_up("not_found")


def transport_limit_case(h, d, ck):
    """A frame larger than the socket's ZMQ_MAXMSGSIZE: libzmq drops the
    connection (no reply is possible); hsqd must stay up."""
    c = h.client(d.client)
    huge = b"\x00" * (8 * MAX_IMAGE + 128 * 1024)
    c.send_parts([pack(submit_meta(60)), huge])
    r = c.try_recv(tmo(1))
    harness.log("frame beyond the transport limit -> %r" % (r,))
    if r is not None:
        check_eq(r.code, "too_large", "frame beyond the transport limit")
    c.close()
    ck.follow_up("a frame beyond the transport limit")
    check(d.proc.alive(), "hsqd died after a frame beyond the transport limit")


def worker_socket_cases(h, d):
    w = h.fake_worker(d.worker)
    cases = [
        ("malformed msgpack", [b"\xc1"], "bad_request"),
        ("empty meta", [b""], "bad_request"),
        ("unknown op", [pack(meta("explode", 3))], "unknown_op"),
        ("ready with max_batch 0", [pack(meta("ready", 4, name="w", backend="cpu",
                                              max_batch=0))], "bad_request"),
        ("ready with backend tpu", [pack(meta("ready", 5, name="w", backend="tpu",
                                              max_batch=1))], "bad_request"),
        ("lease max 1000", [pack(meta("lease", 6, max=1000))], "bad_request"),
        ("version 9", [pack(meta("lease", 7, v=9, max=1))], "bad_version"),
        ("submit on the worker socket", [pack(submit_meta(8)), b"\x89PNG"], "forbidden"),
        ("stats on the worker socket", [pack(meta("stats", 9))], "forbidden"),
        ("done for a task never leased",
         [pack(meta("done", 10, task=1, token=12345,
                    outputs=[{"key": "u/x/1/o", "size": 1, "sha256": b"\x00" * 32,
                              "width": 1, "height": 1, "format": "png"}]))], "stale_lease"),
        ("done with a short sha256",
         [pack(meta("done", 11, task=1, token=1,
                    outputs=[{"key": "u/x/1/o", "size": 1, "sha256": b"\x00" * 31,
                              "width": 1, "height": 1, "format": "png"}]))], "bad_request"),
        # (an unknown code *name* is accepted as "internal", by design: newer
        # workers may know codes this hsqd does not)
        ("fail with a numeric code",
         [pack(meta("fail", 12, task=1, token=1, code=-1008))], "bad_request"),
        ("heartbeat with no leases", [pack(meta("heartbeat", 13, leases=[]))], "bad_request"),
    ]
    for what, parts, code in cases:
        w.send_parts(parts)
        r = w.recv(timeout=tmo(10))
        check(r.error is not None, "worker socket, %s: expected %s, got %r" % (what, code, r.meta))
        check_eq(r.code, code, "worker socket, %s (message %r)" % (what, r.error.get("message")))
        rep = w.ready(name="fake-after-%d" % len(what))
        check(rep["lease_ms"] > 0, "ready after %s" % what)
    w.close()


def bad_image_cases(ck):
    """Submits hsqd accepts (it does not decode) but the worker cannot run."""
    png = harness.make_png(20, 20)
    huge_dims = bytearray(png)
    huge_dims[16:24] = (100000).to_bytes(4, "big") + (100000).to_bytes(4, "big")
    # keep the IHDR CRC valid so the decoder gets to the dimensions
    import zlib
    huge_dims[29:33] = (zlib.crc32(bytes(huge_dims[12:29])) & 0xFFFFFFFF).to_bytes(4, "big")
    cases = {
        "garbage": b"this is not an image at all" * 10,
        "truncated png": png[:len(png) // 2],
        "png 100000x100000": bytes(huge_dims),
        "jpeg header only": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    }
    ids = {}
    for what, data in cases.items():
        r = ck.c.submit("badimg", images=[data], outputs=OUT)
        check(r.error is None, "submit of %s: %r" % (what, r.meta))
        ids[what] = r["task"]
    return ids


def main(h):
    d = h.start_hsqd(transport=TRANSPORT,
                     extra_sets={"max_image_bytes": str(MAX_IMAGE), "max_attempts": "3",
                                 "backoff_base": "100ms", "lease": "5s", "heartbeat": "500ms"})
    c = h.client(d.client)
    img = harness.make_png(24, 24, seed=1)
    ck = Checker(h, c, img)
    ck.follow_up("start")
    client_socket_cases(ck, d)
    worker_socket_cases(h, d)
    transport_limit_case(h, d, ck)
    bad_ids = bad_image_cases(ck)

    s = c.stats()
    check_eq(s["queued"], len(ck.valid) + len(bad_ids),
             "queued tasks: only the valid submits (%d cases sent)" % ck.n)
    check_eq(c.list_all("eve"), [], "tasks created by the bad submits")

    w = h.start_worker(d, name="w")
    for t in ck.valid:
        check_eq(c.wait_terminal(t)["state"], "succeeded", "valid task %d" % t)
    for what, t in bad_ids.items():
        st = c.wait_terminal(t)
        check_eq(st["state"], "failed", "task with a %s image" % what)
        check(str(st.get("err_code", "")).startswith("image_"),
              "task with a %s image: err_code %r (%r)" % (what, st.get("err_code"),
                                                           st.get("err_msg")))
        check_eq(st["attempts"], 1, "attempts of the %s task (not retryable)" % what)
    # The worker is still there and working.
    r = c.submit("valid", images=[img], outputs=OUT)
    check_eq(c.wait_terminal(r["task"])["state"], "succeeded", "task after the bad images")
    check(w.alive() and d.proc.alive(), "a process died")
    s = c.stats()
    check_eq((s["failed"], s["dead"]), (len(bad_ids), 0), "failed / dead-lettered counts")


harness.run(main, name="bad_input_" + TRANSPORT)
