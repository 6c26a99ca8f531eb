"""hsqd SIGKILLed under a submit load, then restarted on the same data dir.

A raw client keeps up to WINDOW submits in flight, each with its own
idempotency key. Once ACK_BEFORE_KILL have been acknowledged, it sends a
burst more and hsqd is SIGKILLed while they are in flight. hsqd is
restarted and killed that way at least twice (more if no kill caught a
submit unanswered). After the last restart on the same data dir:

  * every acknowledged submit is there (status succeeds, same user and key);
  * no uploaded input is left in the blob store without its task;
  * no key exists twice (unacknowledged ones exist at most once), and a
    resubmit of each acknowledged key returns its task with created=false;
  * the counters agree with the task list;
  * with workers started, the queue drains: every task succeeds.

Run over ipc (the restart reuses the same socket paths) and tcp (new ports).
Usage: test_daemon_crash.py ipc|tcp.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, fail, tmo  # noqa: E402
import zmq  # noqa: E402

TRANSPORT = sys.argv[1] if len(sys.argv) > 1 else "ipc"
USER = "loadgen"
WINDOW = 64
ACK_BEFORE_KILL = 200
BURST = 256
MAX_RUNS = 5
SETS = {"max_queued_per_user": "100000", "inline_max": "1k"}


def load_and_kill(h, d, img, out, acked, unacked, first_key):
    """Keep WINDOW submits in flight until ACK_BEFORE_KILL were acked in this
    run, send one more burst, and SIGKILL hsqd. Adds to acked (key -> id)
    and unacked (keys never answered). Returns the next key number."""
    c = h.client(d.client)
    inflight = {}  # rid -> key
    n_acked = 0
    sent = first_key
    refused = {}
    deadline = time.monotonic() + tmo(60)

    def send_one():
        nonlocal sent
        key = "k%05d" % sent
        rid = c.send("submit", {"user": USER, "key": key, "inputs": [{"kind": "portrait"}],
                                "outputs": out}, [img])
        inflight[rid] = key
        sent += 1

    def take(r):
        nonlocal n_acked
        key = inflight.pop(r["rid"], None)
        if key is None:
            return
        if r.error:
            refused[key] = r.error
        else:
            acked[key] = r["task"]
            n_acked += 1

    while n_acked < ACK_BEFORE_KILL:
        if time.monotonic() > deadline:
            fail("load did not reach %d acks in time (acked %d)" % (ACK_BEFORE_KILL, n_acked))
        while len(inflight) < WINDOW:
            send_one()
        if not c.sock.poll(int(tmo(10) * 1000)):
            fail("no submit reply within 10s (acked %d)" % n_acked)
        while True:
            try:
                parts = c.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            take(harness.Reply(harness.unpack(parts[0]), parts[1:]))
    for _ in range(BURST):  # in flight at the moment of the kill
        send_one()
    d.kill9()
    # Replies already on their way before the kill are acks too.
    while True:
        r = c.try_recv(0.3)
        if r is None:
            break
        take(r)
    check(not refused, "submits refused under load: %r" % dict(list(refused.items())[:3]))
    unacked.update(inflight.values())
    harness.log("run: sent %d, acked %d, unacked %d"
                % (sent - first_key, n_acked, len(inflight)))
    c.close()
    return sent


def main(h):
    img = harness.make_png(20, 24, seed=5)
    out = [{"width": 16, "height": 16, "format": "jpeg"}]
    acked = {}     # key -> task id
    unacked = set()
    d = h.start_hsqd(transport=TRANSPORT, extra_sets=SETS)
    data_dir = d.data_dir
    next_key = 0
    # Crash until some submits were in flight, unanswered, at a kill (hsqd
    # may answer a whole burst before the signal lands); the invariants
    # are checked over every run.
    for run in range(MAX_RUNS):
        if run > 0:
            d = h.start_hsqd(transport=TRANSPORT, data_dir=data_dir, extra_sets=SETS)
        next_key = load_and_kill(h, d, img, out, acked, unacked, next_key)
        if unacked and run >= 1:
            break
    check(len(unacked) > 0, "in %d runs no kill left a submit unacknowledged" % MAX_RUNS)
    unacked = sorted(unacked)

    # -- restart on the same data dir
    d2 = h.start_hsqd(transport=TRANSPORT, data_dir=data_dir, extra_sets=SETS)
    c = h.client(d2.client)
    for key, tid in acked.items():
        t = c.status(tid)
        check_eq((t["user"], t.get("key")), (USER, key), "acked task %d after restart" % tid)
        check_eq(t["state"], "queued", "acked task %d state after restart" % tid)
    tasks = c.list_all(USER)
    # Uploaded photos of submits that never committed must not stay behind:
    # no task record means no retention date, so nothing would ever delete
    # them (DESIGN: retention, "no orphan files after a crash"). hsqd may
    # clean them up at start, so allow it a few seconds.
    present = set(t["id"] for t in tasks)
    orphans = []

    def no_orphans():
        inputs = harness.input_files(d2.blob_dir)
        orphans[:] = sorted(t for t in inputs if t not in present)
        return not orphans
    try:
        harness.poll_until(no_orphans, tmo(5), "orphan input blobs to go", interval=0.2)
    except harness.TestFailure:
        h.fail_later("after the restart, %d uploaded input(s) have no task record (orphans, "
                     "never deleted by retention): task ids %r under %s/u/*/<id>/in-*"
                     % (len(orphans), orphans[:10], d2.blob_dir))
    by_key = {}
    for t in tasks:
        check(t.get("key") not in by_key, "key %s exists twice (tasks %d and %d)"
              % (t.get("key"), by_key.get(t.get("key"), 0), t["id"]))
        by_key[t.get("key")] = t["id"]
    missing = [k for k in acked if k not in by_key]
    check(not missing, "acked keys missing after restart: %r" % missing[:5])
    extra = [k for k in by_key if k not in acked]
    check(all(k in unacked for k in extra), "unknown keys after restart: %r" % extra[:5])
    harness.log("present after restart: %d (%d of the unacked)" % (len(tasks), len(extra)))
    s = c.stats()
    check_eq((s["queued"], s["leased"]), (len(tasks), 0), "stats vs the task list after restart")

    # Resubmitting every key: acked ones return their task, unacked ones are
    # created now or (if they made it to disk) returned; never duplicated.
    bodies = [{"user": USER, "key": k, "inputs": [{"kind": "portrait"}], "outputs": out}
              for k in sorted(acked) + unacked]
    reps = c.pipeline("submit", bodies, [[img]] * len(bodies))
    for b, r in zip(bodies, reps):
        check(r.error is None, "resubmit %s: %r" % (b["key"], r.meta))
        if b["key"] in by_key:
            check_eq((r["task"], r["created"]), (by_key[b["key"]], False), "resubmit " + b["key"])
        else:
            check_eq(r["created"], True, "resubmit of lost key " + b["key"])
            by_key[b["key"]] = r["task"]
    total = len(by_key)

    # -- drain
    for i in range(2):
        h.start_worker(d2, name="drain%d" % i, max_batch=8)
    harness.wait_stats(c, lambda s: s["succeeded"] >= total or s["failed"] > 0, tmo(120),
                       "%d tasks to succeed after the restart" % total)
    s = c.stats()
    check_eq((s["succeeded"], s["failed"], s["queued"], s["leased"]), (total, 0, 0, 0),
             "stats after draining")
    for t in c.list_all(USER):
        check_eq(t["state"], "succeeded", "task %d after draining" % t["id"])


harness.run(main, name="daemon_crash_" + TRANSPORT)
