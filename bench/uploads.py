#!/usr/bin/python3
"""bench/uploads.py - what large uploads cost the other clients (docs/bench.md).

hsqd writes a submit's large inputs to the blob store before it records the
task: on libuv's pool (staged), or with `staging_max = 0` in the loop's turn,
flushed before the turn's commit. This measures what those writes cost
everyone else, both ways in one run: one paced producer of small submits
(`bench-broker --attach`, default 500 submits/s, inputs inline in LMDB) runs
alone for --secs, then again while one client submits --mb MB photos back to
back (one in flight); first on an hsqd that stages, then on one with staging
off (each with its own data dir). It prints the small submits' ack latency
(p50, p99, max) in every phase, the ratios, and the uploads' rate.
--blob-dir puts the blob stores elsewhere (a tmpfs: what is left without
the uploads' fsync and disk traffic).

Usage: bench/uploads.py [--build DIR] [--rate R] [--secs S] [--mb N]
                        [--blob-dir DIR]
"""
import argparse
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from purge import CLoad  # noqa: E402


def pct(v, q):
    return v[min(len(v) - 1, int(len(v) * q))]


def measure(h, a, bb, label, extra):
    """One hsqd (its own data dir): small submits alone, then with the
    uploader. Returns ([(phase, acks, p50, p99, max)], uploads/s, refused,
    small-submit errors)."""
    size = a.mb << 20
    sets = {"max_queued": "10000000", "max_queued_per_user": "10000000",
            "log_level": "notice", "max_image_bytes": str(size + 1024)}
    sets.update(extra)
    tag = "staged" if not extra else "inline"
    if a.blob_dir:
        sets["blob_dir"] = os.path.join(a.blob_dir, tag)
    d = h.start_hsqd(extra_sets=sets, data_dir=h.path("data-" + tag), name="hsqd-" + tag)
    load = CLoad(bb, d.client, a.rate, h.path("acks-%s.log" % tag))
    time.sleep(1)  # the producer connects and settles
    t0 = time.monotonic()
    time.sleep(a.secs)
    t1 = time.monotonic()
    load.phase("%s: small submits alone" % label, t0, t1)

    photo = os.urandom(size)
    stop = threading.Event()
    done = [0, 0]  # uploads acknowledged, refused

    def uploader():
        c = h.client(d.client)
        while not stop.is_set():
            r = c.submit("uploader", images=[photo],
                         outputs=[{"width": 64, "height": 64, "format": "jpeg"}])
            done[0 if r.error is None else 1] += 1

    th = threading.Thread(target=uploader)
    th.start()
    time.sleep(1)
    n0, t2 = done[0], time.monotonic()
    time.sleep(a.secs)
    n1, t3 = done[0], time.monotonic()
    stop.set()
    th.join()
    load.phase("%s: with %d MB uploads" % (label, a.mb), t2, t3)
    lat = load.finish()
    d.stop()
    rows = []
    for name, _, _ in load.marks:
        v = sorted(lat.get(name, []))
        if not v:
            raise SystemExit("no acks in phase %r" % name)
        rows.append((name, len(v), pct(v, 0.5), pct(v, 0.99), v[-1]))
    return rows, (n1 - n0) / (t3 - t2), done[1], load.errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("HSQ_BUILD") or
                    os.path.join(os.path.dirname(HERE), "build"))
    ap.add_argument("--rate", type=int, default=500, help="small submits per second")
    ap.add_argument("--secs", type=float, default=6.0, help="length of each phase")
    ap.add_argument("--mb", type=int, default=2, help="size of each upload, MB")
    ap.add_argument("--blob-dir", default=None, help="hsqd's blob store (default: its data dir)")
    a = ap.parse_args()
    harness.BUILD = os.path.abspath(a.build)
    bb = os.path.join(a.build, "bench", "bench-broker")
    if not harness.hsqd_path() or not os.access(bb, os.X_OK):
        raise SystemExit("no hsqd or bench-broker under %s (build first)" % a.build)
    h = harness.Harness("bench-uploads")
    try:
        # The reference in the same run: the same hsqd with staging off
        # (staging_max 0), which writes the inputs in the loop's turn.
        modes = [("staged", {}), ("in the turn", {"staging_max": "0"})]
        res = [(label,) + measure(h, a, bb, label, extra) for label, extra in modes]
        print("hsqd %s, blob store %s, %d small submits/s, one uploader of %d MB photos"
              % (harness.hsqd_path(), a.blob_dir or "in the data dir", a.rate, a.mb))
        print("| phase | acks | p50 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|")
        for _label, rows, _rate, _refused, _errors in res:
            for name, n, p50, p99, mx in rows:
                print("| %s | %d | %.2f | %.2f | %.2f |" % (name, n, p50, p99, mx))
        for label, rows, rate, refused, errors in res:
            print("%s: with uploads / alone p50 %.2fx, p99 %.2fx; uploads %.1f/s (%.1f MB/s), "
                  "%d refused, small submit errors %d"
                  % (label, rows[1][2] / rows[0][2], rows[1][3] / rows[0][3], rate,
                     rate * a.mb, refused, errors))
        st, it = res[0][1][1], res[1][1][1]
        print("staged / in the turn, with uploads: p50 %.2fx, p99 %.2fx; uploads/s %.2fx"
              % (st[2] / it[2], st[3] / it[3], res[0][2] / res[1][2]))
    finally:
        h.teardown()


if __name__ == "__main__":
    main()
