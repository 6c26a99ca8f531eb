#!/usr/bin/python3
"""bench/startup.py - hsqd's start after a crash, against the size of the blob store.

After a crash hsqd must find the uploads of submits that never committed, and
temp files of writes that died: a walk over every file of the blob store,
O(files). hsqd starts serving first and walks on its janitor thread
(daemon/janitor.h). This measures, for a store of N files, the time from
exec to readiness (endpoints on --ready-fd) after a SIGKILL, next to the
janitor's walk of the same tree in the same run (from its log line): the walk
is what a start that recovers before serving would wait for. While the walk
runs, a client submits at 1,000/s (bench-broker --attach, when built): the
ack latency during the walk and in the 3 s after it shows what the walk
costs the clients hsqd now serves meanwhile.

The tree: N output files (1 KiB each) under 256 user directories, as
finished tasks leave them. With root, the page cache is dropped before each
cold start.

Usage: bench/startup.py [--files N] [--build DIR] [--dir DIR]
"""
import argparse
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
import harness  # noqa: E402
import purge  # noqa: E402  (its CLoad: bench-broker --attach as a paced client)

USERS = 256


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def fill(blob_dir, files, first_id):
    """files outputs over USERS user dirs; ids from first_id."""
    t0 = time.monotonic()
    data = b"\xff" * 1024
    per = max(1, files // USERS)
    made = 0
    for u in range(USERS):
        udir = os.path.join(blob_dir, "u", "%032x" % (0x5eed0000 + u))
        for i in range(per):
            if made == files:
                break
            tid = first_id + made
            tdir = os.path.join(udir, str(tid))
            os.makedirs(tdir, exist_ok=True)
            with open(os.path.join(tdir, "out-0.jpg"), "wb") as f:
                f.write(data)
            made += 1
    os.sync()
    return made, time.monotonic() - t0


def walk_line(proc, timeout):
    """The janitor's first walk line: (objects, uploads removed, ms)."""
    pat = re.compile(r"janitor walk objects=(\d+) uploads_removed=(\d+) .* ms=(\d+)")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = pat.search(proc.stderr_text())
        if m:
            return tuple(int(x) for x in m.groups())
        time.sleep(0.05)
    raise SystemExit("no janitor walk line within %d s" % timeout)


def start_after_crash(h, data, cold, bb, lats):
    """Start after a crash; returns (ready ms, objects, uploads removed, walk
    ms), or None when the cache cannot be dropped. With bb (bench-broker),
    a paced load runs from readiness to 3 s after the walk; its acks go to
    lats[(phase)]."""
    if cold and not drop_caches():
        return None
    t0 = time.monotonic()
    d = h.start_hsqd(transport="ipc", data_dir=data,
                     extra_sets={"log_level": "notice", "max_queued_per_user": "1000000"},
                     ready_timeout=3600)
    t_ready = time.monotonic()
    ready_ms = (t_ready - t0) * 1000
    load = purge.CLoad(bb, d.client, 1000, h.path("acks")) if bb else None
    objects, removed, walk_ms = walk_line(d.proc, 3600)
    if load:
        t_walk = time.monotonic()
        time.sleep(3)
        load.phase("walk", t_ready, t_walk)
        load.phase("after", t_walk, time.monotonic())
        lats.update(load.finish())
    for ln in d.proc.stderr_text().splitlines():
        if "slow turn" in ln:
            print("  hsqd: " + ln[ln.index("slow turn"):])
    d.kill9()  # the next start is a start after a crash again
    return ready_ms, objects, removed, walk_ms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=200000)
    ap.add_argument("--build", default="build")
    ap.add_argument("--dir", default=os.environ.get("TMPDIR", "/var/tmp"),
                    help="where the data dir goes (the disk you care about)")
    a = ap.parse_args()
    harness.BUILD = os.path.abspath(a.build)
    os.environ["HSQ_BUILD"] = a.build
    os.environ["TMPDIR"] = a.dir
    if not harness.hsqd_path():
        raise SystemExit("no hsqd under %s (build it, or pass --build DIR)" % a.build)
    bb = os.path.join(a.build, "bench", "bench-broker")
    bb = bb if os.access(bb, os.X_OK) else None
    h = harness.Harness("bench-startup")
    rows = []
    lats = {}
    try:
        data = h.path("data")
        d = h.start_hsqd(transport="ipc", data_dir=data, extra_sets={"log_level": "notice"})
        c = h.client(d.client)
        first = c.submit("bench", images=[harness.make_png(8, 8)],
                         outputs=[{"width": 8, "height": 8, "format": "jpeg"}])["task"]
        blob_dir = d.blob_dir
        d.kill9()
        for files in (0, a.files):
            if files:
                made, secs = fill(blob_dir, files, first + 100000)
                print("made %d files in %.1f s" % (made, secs), flush=True)
            for cold in (True, False):
                r = start_after_crash(h, data, cold, bb if files and cold else None, lats)
                if r is None:
                    print("(no root: cold rows skipped)")
                    continue
                rows.append((files, "cold" if cold else "warm") + r)
                print("files %d %s: ready %.0f ms, walk %d ms" % (files, rows[-1][1], r[0], r[3]),
                      flush=True)
    finally:
        h.teardown()
    print()
    print("%-10s %-5s %10s %14s %10s %12s" % ("files", "cache", "ready ms", "walk ms (after)",
                                            "ready/walk", "walked"))
    for files, cache, ready, objects, removed, walk in rows:
        ratio = "%.3f" % (ready / walk) if files and walk else "-"
        print("%-10d %-5s %10.0f %14d %10s %12d" % (files, cache, ready, walk, ratio, objects))
    print("ready: exec to endpoints on --ready-fd after a SIGKILL; walk: the janitor's "
          "whole-tree walk of the same start, which a start that recovers first would wait for")
    if lats:
        print("\nsubmits at 1,000/s during the cold start's walk and in the 3 s after it:")
        print("%-8s %6s %8s %8s %8s" % ("phase", "acks", "p50 ms", "p99 ms", "max ms"))
        for name in ("walk", "after"):
            xs = lats.get(name, [])
            print("%-8s %6d %8.2f %8.2f %8.2f" % (name, len(xs), purge.pct(xs, 0.5),
                                                 purge.pct(xs, 0.99), max(xs) if xs else 0))


if __name__ == "__main__":
    main()
