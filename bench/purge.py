#!/usr/bin/python3
"""bench/purge.py - the retention sweeper under load (docs/bench.md).

N expired tasks (default 100000) are purged by hsqd's continuous sweeper
while a client submits at a steady rate (default 1000 jobs/s, open loop: one
submit every 1/rate s whatever the replies do). Prints tasks purged per
second and the submit-ack latency (p50, p99, max) during the purge; the
target is p99 <= 5 ms and no ack later than 50 ms (a loop stall).

How N expired tasks are made quickly: they are submitted (pipelined, inputs
inline in LMDB) with the sweeper off (sweep_batch=0). Scenario "done" (the
default, the usual purge): a raw worker then leases them all and reports each
done with one empty output file; hsqd is restarted with the sweeper on and a
fake clock (HSQ_FAKE_CLOCK_FILE) moved past retention_uploads (8 days: the
inputs go), past retention_outputs (31 days: outputs deleted, tasks reduced
to tombstones) and past retention_tombstone (records deleted). Scenario
"queued": the tasks stay queued; the clock moves past retention_pending (the
sweeper cancels them) and past retention_failed (their inputs go). A phase
ends when a dry-run purge of one entry finds nothing due (or, for the
cancel, when stats count them all).

The load generator is `bench-broker --attach` (C, one paced producer, the
same one bench-broker's paced row uses) when the build has it, else a
Python thread (--load py); the Python one's own scheduling noise shows in
its tails (compare the baseline rows).

With --by request the continuous sweeper stays off and each phase is driven
by purge requests instead (`hsq purge`, as cron sends them; each request
handles up to 2,000 entries in one turn, and the phase repeats it while the
reply says `more`): what a cron purge over a backlog costs the other clients.

Usage: bench/purge.py [--tasks N] [--rate R] [--batch B] [--build DIR]
                      [--load c|py] [--scenario done|queued] [--by sweeper|request]
"""
import argparse
import os
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
import harness  # noqa: E402

import zmq  # noqa: E402

DAY = 86400 * 1000


def submit_body(user):
    return {"user": user, "inputs": [{"kind": "portrait", "name": "p.png"}],
            "outputs": [{"width": 32, "height": 32, "format": "jpeg"}]}


class Load(threading.Thread):
    """Open-loop submits at `rate`/s on its own socket; records ack latency."""

    def __init__(self, ctx, endpoint, rate, image):
        super().__init__(daemon=True)
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.rate = rate
        self.image = image
        self.stop = threading.Event()
        self.mark = None       # (phase name) while measuring
        self.lat = {}          # phase -> [ms]
        self.sent = {}
        self.errors = 0
        self.rid = 0

    def run(self):
        period = 1.0 / self.rate
        nxt = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= nxt:
                self.rid += 1
                meta = harness.pack(dict(submit_body("load-%d" % (self.rid % 50)), v=1,
                                         rid=self.rid, op="submit"))
                self.sock.send_multipart([meta, self.image])
                self.sent[self.rid] = (now, self.mark)
                nxt += period
                if nxt < now - 1:  # fell far behind: do not burst
                    nxt = now
            timeout = max(0, int((nxt - time.monotonic()) * 1000))
            if self.sock.poll(timeout):
                while True:
                    try:
                        parts = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    t = time.monotonic()
                    m = harness.unpack(parts[0])
                    s = self.sent.pop(m.get("rid"), None)
                    if "error" in m:
                        self.errors += 1
                    if s and s[1]:
                        self.lat.setdefault(s[1], []).append((t - s[0]) * 1000)
        self.sock.close(0)


class CLoad:
    """bench-broker --attach as the load: acks land in a log, read at the
    end and cut into phases by send time (both sides use CLOCK_MONOTONIC)."""

    def __init__(self, exe, endpoint, rate, log):
        self.log = log
        self.marks = []  # (phase, t_from, t_to) in time.monotonic() seconds
        self.errors = 0
        self.proc = subprocess.Popen([exe, "--attach", endpoint, "--rate", str(rate),
                                      "--ack-log", log], stdout=subprocess.PIPE, text=True)

    def phase(self, name, t_from, t_to):
        self.marks.append((name, t_from, t_to))

    def finish(self):
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        m = out.split(" errors,")[0].rsplit(" ", 1)[-1] if " errors," in out else "0"
        self.errors = int(m) if m.isdigit() else 0
        lat = {}
        with open(self.log) as f:
            for line in f:
                ts, lt = line.split()
                t = int(ts) / 1e9
                for name, a, b in self.marks:
                    if a <= t < b:
                        lat.setdefault(name, []).append(int(lt) / 1e6)
        return lat


EMPTY_SHA256 = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def finish_all(h, d):
    """Lease every queued task with a raw worker and report it done with one
    empty output file under its prefix (written without fsync: this is set-up,
    not the measurement). Returns how many were finished."""
    w = h.fake_worker(d.worker)
    w.ok("ready", {"name": "bench-finisher", "backend": "cpu", "max_batch": 64})
    n = 0
    while True:
        jobs, _ = w.lease(max=64, wait_ms=0)
        if not jobs:
            return n
        bodies = []
        for j in jobs:
            key = j["out_prefix"] + "out-0.jpg"
            path = os.path.join(d.blob_dir, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()
            bodies.append({"task": j["task"], "token": j["token"],
                           "outputs": [{"key": key, "size": 0, "sha256": EMPTY_SHA256,
                                        "width": 32, "height": 32, "format": "jpeg"}]})
        for r in w.pipeline("done", bodies, timeout=600, window=64):
            if r.error:
                raise SystemExit("done failed: %r" % r.meta)
        n += len(jobs)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def lmdb_free(db):
    """LMDB's free list (mdb_stat -f): reclaimable pages, and how many
    freelist records hold them (each commit rewrites what it consumed)."""
    try:
        out = subprocess.run(["mdb_stat", "-f", db], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return "mdb_stat failed: %s" % e
    keep = [ln.strip() for ln in out.splitlines()
            if "Free pages" in ln or "Entries" in ln or "Page size" in ln]
    return "; ".join(keep[:4])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=100000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64, help="hsqd sweep_batch during the purge")
    ap.add_argument("--build", default=os.environ.get("HSQ_BUILD") or
                    os.path.join(os.path.dirname(HERE), "build"))
    ap.add_argument("--load", choices=("c", "py"), default=None,
                    help="load generator (default: c when the build has bench-broker)")
    ap.add_argument("--scenario", choices=("done", "queued", "erase"), default="done",
                    help="done: finished tasks whose uploads, outputs and tombstones expire; "
                    "queued: tasks still queued past retention_pending (cancelled, then "
                    "their inputs deleted); erase: all N finished tasks belong to one user, "
                    "who is erased (hsq erase-user)")
    ap.add_argument("--by", choices=("sweeper", "request"), default="sweeper",
                    help="sweeper: the continuous sweeper purges; request: purge requests "
                    "(as `hsq purge` from cron), the sweeper off")
    ap.add_argument("--slow-turn-ms", type=int, default=50,
                    help="hsqd logs turns this long with their phases; the worst are printed")
    a = ap.parse_args()
    # harness read HSQ_BUILD when it was imported: point it at --build now
    # (setting the variable alone left it on its default build dir).
    harness.BUILD = os.path.abspath(a.build)
    hsqd = harness.hsqd_path()
    if not hsqd:
        raise SystemExit("no hsqd under %s (build it, or pass --build DIR)" % a.build)
    print("hsqd: %s" % hsqd)
    bb = os.path.join(a.build, "bench", "bench-broker")
    if a.load is None:
        a.load = "c" if os.access(bb, os.X_OK) else "py"
    os.environ["HSQ_BUILD"] = a.build
    h = harness.Harness("bench-purge")
    clock = os.path.join(h.tmp, "clock")
    with open(clock, "w") as f:
        f.write("0\n")
    os.environ["HSQ_FAKE_CLOCK_FILE"] = clock
    sets = {"max_queued": "10000000", "max_queued_per_user": "10000000", "log_level": "notice"}
    image = harness.make_png(16, 16)
    try:
        data = h.path("data")
        d = h.start_hsqd(extra_sets=dict(sets, sweep_batch="0"), data_dir=data)
        c = h.client(d.client)
        t0 = time.monotonic()
        step = 5000
        for i in range(0, a.tasks, step):
            n = min(step, a.tasks - i)
            users = ["heavy" if a.scenario == "erase" else "u%d" % ((i + k) % 1000)
                     for k in range(n)]
            rs = c.pipeline("submit", [submit_body(u) for u in users],
                            [[image]] * n, timeout=600, window=500)
            bad = [r for r in rs if r.error]
            if bad:
                raise SystemExit("submit failed: %r" % bad[0].meta)
        print("made %d queued tasks in %.1f s" % (a.tasks, time.monotonic() - t0))
        if a.scenario in ("done", "erase"):
            t0 = time.monotonic()
            n = finish_all(h, d)
            print("finished %d tasks (empty outputs) in %.1f s" % (n, time.monotonic() - t0))
        d.stop()
        # Making the tasks created 100,000s of files a moment ago; let their
        # writeback finish so it does not land in the measured phases (a
        # real purge runs over data written days before).
        t0 = time.monotonic()
        os.sync()
        print("sync after making them: %.1f s" % (time.monotonic() - t0))

        def set_clock(ms):
            with open(clock + ".tmp", "w") as f:
                f.write("%d\n" % ms)
            os.rename(clock + ".tmp", clock)

        disk = None
        if os.access(bb, os.X_OK):
            # The disk alone, same pacing, in the data dir: what one durable
            # ack costs at least (a 4 KiB write, fdatasync, a meta write).
            r = subprocess.run([bb, "--disk-probe", "1", "--dir", data, "--rate", str(a.rate),
                                "--paced-secs", "3"], stdout=subprocess.PIPE, text=True)
            disk = r.stdout.strip() if r.returncode == 0 else None
            print("reference, %s" % disk)
        batch = a.batch if a.by == "sweeper" else 0
        d = h.start_hsqd(extra_sets=dict(sets, sweep_batch=str(batch),
                                         slow_turn_ms=str(a.slow_turn_ms)), data_dir=data)
        c = h.client(d.client)
        if a.load == "c":
            load = CLoad(bb, d.client, a.rate, h.path("acks"))
            time.sleep(0.5)  # connected and paced
            tb = time.monotonic()
            time.sleep(3)
            load.phase("baseline", tb, time.monotonic())
        else:
            load = Load(h.ctx, d.client, a.rate, image)
            load.mark = "baseline"
            load.start()
            time.sleep(3)
        results = []
        if a.scenario == "queued":
            phases = (("cancel (retention_pending)", 8 * DAY,
                       lambda s: s["cancelled"] >= a.tasks),
                      ("delete inputs (retention_failed)", 10 * DAY, None))
        elif a.scenario == "erase":
            phases = (("erase-user of the one user", 0, "erase"),)
        else:
            phases = (("delete uploads (retention_uploads)", 8 * DAY, None),
                      ("outputs -> tombstones (retention_outputs)", 31 * DAY, None),
                      ("delete tombstones (retention_tombstone)", 31 * DAY + 366 * DAY, None))
        # Last, what a finished purge request (cron's) starts: the rewrite of
        # every live page (README, "Known limits"), with the load going on.
        phases = phases + (("rewrite after the cron purge", None, "rewrite"),)
        for phase, jump, done in phases:
            before = c.stats()
            if a.load == "py":
                load.mark = phase
            if jump is not None:
                set_clock(jump)
            t0 = time.monotonic()
            if done == "rewrite":
                log0 = d.proc.stderr_text()
                c.ok("purge", {}, timeout=600)
                while "page rewrite done" not in d.proc.stderr_text()[len(log0):]:
                    time.sleep(0.05)
                tail = d.proc.stderr_text()[len(log0):]
                while "free-page scrub done" not in tail[tail.index("page rewrite done"):]:
                    time.sleep(0.05)
                    tail = d.proc.stderr_text()[len(log0):]
                ln = [x for x in tail.splitlines() if "page rewrite done" in x][-1]
                print("rewrite: %s" % ln[ln.index("page rewrite done"):])
            elif done == "erase":
                r = c.ok("erase", {"user": "heavy"}, timeout=600).meta
                print("erase receipt: tasks %d, bytes %d" % (r["tasks"], r["bytes"]))
            elif a.by == "request":
                # Like `hsq purge`: ask again while the reply says more.
                while c.ok("purge", {}, timeout=600).meta["more"]:
                    pass
            elif done:
                while not done(c.stats()):
                    time.sleep(0.05)
            else:
                # Done when no index entry is due: a dry run over at most one
                # entry (a cheap probe; a large dry run would itself stall
                # the loop for the length of its scan).
                while c.ok("purge", {"dry_run": True, "limit": 1}, timeout=120).meta["more"]:
                    time.sleep(0.05)
            dt = time.monotonic() - t0
            if a.load == "py":
                load.mark = "after"
            else:
                load.phase(phase, t0, t0 + dt)
            results.append((phase, dt, before))
            print("after %s: %s" % (phase, lmdb_free(os.path.join(data, "db"))))
            time.sleep(1)
        if a.load == "py":
            load.stop.set()
            load.join(10)
            lat = load.lat
        else:
            lat = load.finish()
        print("\nscenario %s, purged by %s, sweep_batch=%d, load %d submits/s (open loop, %s), "
              "%d tasks\n" % (a.scenario, a.by, batch, a.rate,
               "bench-broker --attach" if a.load == "c" else "Python thread", a.tasks))
        print("| phase | time s | tasks/s | acks | p50 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        if disk:
            w = disk.split()
            print("| disk alone: 4 KiB write, fdatasync, meta (%s/s) | - | - | %s | %s | %s | %s |"
                  % (a.rate, w[4], w[6], w[8], w[10]))
        for name in ["baseline"] + [p for p, _, _ in results]:
            xs = lat.get(name, [])
            dt = next((r[1] for r in results if r[0] == name), None)
            print("| %s | %s | %s | %d | %.2f | %.2f | %.2f |" % (
                name, "%.2f" % dt if dt else "-",
                "%.0f" % (a.tasks / dt) if dt and not name.startswith("rewrite") else "-",
                len(xs), pct(xs, 0.5), pct(xs, 0.99), max(xs) if xs else float("nan")))
        print("\nsubmit errors: %d" % load.errors)
        # hsqd logs every turn over 50 ms with its phases: show the worst.
        slow = [ln for ln in d.proc.stderr_text().splitlines() if "slow turn" in ln]
        print("hsqd slow turns (>= %d ms): %d" % (a.slow_turn_ms, len(slow)))

        def turn_ms(ln):
            for w in ln.split():
                if w.startswith("ms="):
                    return float(w[3:])
            return 0.0
        for ln in sorted(slow, key=turn_ms, reverse=True)[:8]:
            print("  " + ln[ln.index("slow turn"):])
    finally:
        problems = h.teardown()
        for p in problems:
            print("teardown: %s" % p)
        import shutil
        shutil.rmtree(h.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
