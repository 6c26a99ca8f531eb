#!/usr/bin/env python3
"""Clients against the real daemon: hsq_client.py and the `hsq` CLI.

usage: test_client_py.py HSQD HSQ_WORKER HSQ

Starts hsqd on a temp data dir with tcp://127.0.0.1:* endpoints and learns the
bound endpoints from --ready-fd (no fixed ports, no sleeps); starts one
hsq-worker only for the tests that need outputs. Teardown sends TERM, then
KILL after a timeout, and fails on sanitizer reports in either stderr.
Exits 77 (skip) when this Python lacks pyzmq or msgpack.
"""

import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "client", "python"))
try:
    from hsq_client import Client, Events, HsqError, HsqTimeout, HsqUnavailable
except ImportError as e:  # pyzmq or msgpack missing
    print("skip: %s" % e)
    sys.exit(77)


def png(width, height):
    """A small RGB gradient PNG (no imaging library needed)."""
    rows = b"".join(b"\0" + b"".join(bytes((x * 255 // width, y * 255 // height, 128))
                                      for x in range(width))
                    for y in range(height))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class Proc:
    def __init__(self, argv, stderr_path, **kw):
        self.stderr_path = stderr_path
        self.err = open(stderr_path, "wb")
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.err, **kw)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()
        with open(self.stderr_path, "rb") as f:
            text = f.read().decode(errors="replace")
        bad = [l for l in text.splitlines() if "AddressSanitizer" in l or "runtime error:" in l
               or "LeakSanitizer" in l]
        return bad, text


class Env:
    def __init__(self, hsqd, worker, hsq):
        self.tmp = tempfile.TemporaryDirectory(prefix="hsq-it-")
        self.dir = self.tmp.name
        self.worker_bin = worker
        self.hsq = hsq
        self.worker = None
        r, w = os.pipe()
        self.daemon = Proc([hsqd, "--data-dir", os.path.join(self.dir, "data"),
                            "--insecure",
                            "--set", "client_endpoint=tcp://127.0.0.1:*",
                            "--set", "worker_endpoint=tcp://127.0.0.1:*",
                            "--set", "events_endpoint=tcp://127.0.0.1:*",
                            "--ready-fd", str(w)],
                           os.path.join(self.dir, "hsqd.err"), pass_fds=(w,))
        os.close(w)
        buf = b""
        while True:  # until hsqd closes the fd (or dies)
            ready, _, _ = select.select([r], [], [], 20)
            if not ready:
                raise RuntimeError("hsqd did not report readiness in 20 s")
            chunk = os.read(r, 4096)
            if not chunk:
                break
            buf += chunk
        os.close(r)
        eps = dict(line.split("=", 1) for line in buf.decode().split())
        if "client" not in eps:
            raise RuntimeError("hsqd exited before it was ready:\n" + open(self.daemon.stderr_path).read())
        self.client_ep, self.worker_ep, self.events_ep = eps["client"], eps["worker"], eps.get("events")

    def start_worker(self):
        if self.worker is None:
            self.worker = Proc([self.worker_bin, "--set", "endpoint=" + self.worker_ep,
                                "--set", "blob_dir=" + os.path.join(self.dir, "data", "blobs"),
                                "--set", "lease_wait=1s", "--set", "pipeline=resize"],
                               os.path.join(self.dir, "worker.err"))

    def cli(self, *args):
        r = subprocess.run([self.hsq, "-e", self.client_ep, "--timeout", "5000"] + list(args),
                           capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    def stop(self):
        bad = []
        for name, p in (("hsq-worker", self.worker), ("hsqd", self.daemon)):
            if p is not None:
                b, text = p.stop()
                if b:
                    bad.append("%s stderr:\n%s" % (name, text))
        self.tmp.cleanup()
        return bad


def expect_error(code, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except HsqError as e:
        assert e.code == code, "want %s, got %s: %s" % (code, e.code, e.message)
        return e
    raise AssertionError("want HsqError %s, got success" % code)


IMG = png(96, 120)


def job(c, user, key=None, outputs=None):
    return c.submit(user, photos=[(IMG, "me.png")], key=key,
                    outputs=outputs or [{"width": 48, "height": 60, "format": "jpeg"}])


# ---- tests (each gets a fresh Client on the shared daemon) ----

def test_submit_idempotent(env, c):
    a = job(c, "alice", key="order-1")
    assert a["created"] and a["state"] == "queued", a
    b = job(c, "alice", key="order-1")
    assert b == {"task": a["task"], "state": "queued", "created": False}, b
    t = c.status(a["task"], user="alice")
    assert t["user"] == "alice" and t["key"] == "order-1" and t["n_inputs"] == 1, t
    expect_error("not_found", c.status, a["task"], user="mallory")
    expect_error("not_found", c.status, 10 ** 12)


def test_bad_requests(env, c):
    expect_error("invalid_argument", c.submit, "u", photos=[])
    expect_error("invalid_argument", c.list, "u", limit=0)
    e = expect_error("bad_request", c.submit, "u", photos=[IMG],
                     outputs=[{"width": 0, "height": 10, "format": "jpeg"}])
    assert "width" in e.message, e.message


def test_wait_timeout_cancel_requeue(env, c):
    # Runs before any worker is started (see TESTS), so the task stays queued.
    t = job(c, "bob")["task"]
    task, timed_out = c.wait(t, timeout_ms=100, since="queued")
    assert timed_out and task["state"] == "queued", (task, timed_out)
    expect_error("conflict", c.result, t)
    assert c.cancel(t)["state"] == "cancelled"
    expect_error("conflict", c.cancel, t)
    task, timed_out = c.wait(t, timeout_ms=100)
    assert not timed_out and task["state"] == "cancelled"
    assert c.requeue(t)["state"] == "queued"
    assert c.cancel(t, user="bob")["state"] == "cancelled"


def test_list_pages(env, c):
    ids = [job(c, "pager")["task"] for _ in range(3)]
    p1 = c.list("pager", limit=2)
    assert [x["id"] for x in p1["tasks"]] == ids[::-1][:2], p1
    assert p1["next"] != 0
    p2 = c.list("pager", limit=2, before=p1["next"])
    assert [x["id"] for x in p2["tasks"]] == ids[:1] and p2["next"] == 0, p2


def test_stats(env, c):
    s = c.stats()
    for k in ("queued", "leased", "succeeded", "workers", "queued_by_prio", "uptime_s"):
        assert k in s, s


def test_events(env, c):
    if not env.events_ep:
        return
    with Events("evan", endpoint=env.events_ep) as ev:
        # PUB drops until the subscription has propagated: retry a bounded
        # number of submits, each followed by a bounded wait for its event.
        for _ in range(40):
            t = job(c, "evan")["task"]
            got = ev.recv(250)
            if got:
                assert got["user"] == "evan" and got["task"] <= t, got
                return
    raise AssertionError("no event for evan")


def test_timeout_resets_socket(env, c):
    t = job(c, "tim")["task"]
    c.timeout_ms = 300
    env.daemon.p.send_signal(signal.SIGSTOP)
    try:
        expect_error("timeout", c.status, t)
    finally:
        env.daemon.p.send_signal(signal.SIGCONT)
    c.timeout_ms = 5000
    # The stale reply went to the closed socket; this one is ours.
    assert c.status(t)["id"] == t
    assert c.list("tim")["tasks"][0]["id"] == t


def test_unavailable(env, c):
    with Client("ipc://" + os.path.join(env.dir, "nobody.sock"), timeout_ms=200) as d:
        e = expect_error("unavailable", d.stats)
        assert isinstance(e, HsqUnavailable) and isinstance(e, HsqTimeout)


def test_outputs_python(env, c):
    env.start_worker()
    r = job(c, "carol", outputs=[{"width": 64, "height": 80, "format": "jpeg", "quality": 80},
                                 {"width": 32, "height": 32, "format": "png"}])
    task = None
    for _ in range(6):  # up to 6 x 10 s
        task, timed_out = c.wait(r["task"], timeout_ms=10000)
        if not timed_out:
            break
    assert task["state"] == "succeeded", task
    t, data = c.result(r["task"], user="carol")
    assert [(o["width"], o["height"], o["format"]) for o in t["outputs"]] == \
        [(64, 80, "jpeg"), (32, 32, "png")], t["outputs"]
    assert data[0][:3] == b"\xff\xd8\xff" and data[1][:8] == b"\x89PNG\r\n\x1a\n"


def test_cli(env, c):
    env.start_worker()
    photo = os.path.join(env.dir, "me.png")
    with open(photo, "wb") as f:
        f.write(IMG)
    rc, out, err = env.cli("--json", "submit", "--user", "dave", "--size", "40x50",
                           "--size", "20x20:png", photo)
    assert rc == 0, (rc, err)
    sub = json.loads(out)
    tid = str(sub["task"])
    rc, out, err = env.cli("wait", tid, "--timeout-s", "60", "--json")
    assert rc == 0, (rc, out, err)
    assert json.loads(out)["state"] == "succeeded"
    outdir = os.path.join(env.dir, "out")
    rc, out, err = env.cli("result", tid, "-o", outdir, "--user", "dave")
    assert rc == 0, (rc, err)
    paths = out.split()
    assert [os.path.basename(p) for p in paths] == ["%s-0.jpg" % tid, "%s-1.png" % tid], paths
    assert all(os.path.getsize(p) > 0 for p in paths)
    assert not [n for n in os.listdir(outdir) if n.startswith(".")]  # no temp files left
    rc, out, err = env.cli("status", "999999999")
    assert rc == 3 and err.startswith("hsq: not_found: "), (rc, err)
    rc, out, err = env.cli("--json", "status", "999999999")
    assert rc == 3 and json.loads(out)["error"]["code"] == "not_found"
    # a task that ends cancelled: wait exits 6
    rc, out, err = env.cli("--json", "submit", "--user", "dave", "--prio", "low", photo)
    tid = str(json.loads(out)["task"])
    rc, out, err = env.cli("cancel", tid)
    if rc == 0:
        rc, out, err = env.cli("wait", tid, "--timeout-s", "5")
        assert rc == 6, (rc, out, err)
    rc, out, err = env.cli("list", "--user", "dave", "--json")
    assert rc == 0 and len(json.loads(out)["tasks"]) == 2
    rc, out, err = env.cli("stats")
    assert rc == 0 and "workers" in out


TESTS = [test_submit_idempotent, test_bad_requests, test_wait_timeout_cancel_requeue,
         test_list_pages, test_stats, test_events, test_timeout_resets_socket, test_unavailable,
         test_outputs_python, test_cli]


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: test_client_py.py HSQD HSQ_WORKER HSQ")
    env = Env(*sys.argv[1:4])
    failed = 0
    try:
        for t in TESTS:
            c = Client(env.client_ep, timeout_ms=5000)
            try:
                t(env, c)
                print("ok   %s" % t.__name__)
            except Exception as e:  # report and go on
                failed += 1
                print("FAIL %s: %s: %s" % (t.__name__, type(e).__name__, e))
            finally:
                c.close()
    finally:
        bad = env.stop()
    for b in bad:
        failed += 1
        print("FAIL sanitizer report in %s" % b)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
