"""Cancel (queued and leased), idempotent resubmit, and queue_full limits.

  * cancel a queued task: cancelled at once, never leased; a second cancel
    answers conflict;
  * cancel a task leased by a real worker (paused by job_delay): the cancel
    reply says cancelled, the worker drops the job (abort), the task stays
    cancelled past the time the job would have finished, and no output is
    stored for it; the worker then runs the next task normally;
  * the same with a raw fake worker, which must receive an `abort` for the
    lease, and whose late `done` is refused with stale_lease without
    flipping the task;
  * idempotent resubmit: same user + key -> same id, created false (also
    after the task finished or was cancelled); another user with the same
    key gets a new task;
  * queue_full at the per-user limit and at the global limit; an
    idempotent resubmit of an existing key is still answered while full;
    finishing a task frees room; past max_waits a long-poll is refused with
    unavailable, and those parked are answered; a max_waits of 0 or not a
    number, and a staging_max not a size or above 64 GiB, stop hsqd at start
    with exit 2 and a message naming the key.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, sha256, tmo  # noqa: E402

SPEC = [{"width": 24, "height": 24, "format": "png"}]
DELAY_MS = 2000


def cancel_part(h):
    d = h.start_hsqd(transport="ipc", extra_sets={"lease": "5s", "heartbeat": "500ms"})
    c = h.client(d.client)
    img = harness.make_png(30, 30, seed=2)

    # -- queued (no worker yet)
    tq = c.submit("ann", images=[img], outputs=SPEC)["task"]
    r = c.ok("cancel", {"task": tq}).meta["task"]
    check_eq(r["state"], "cancelled", "cancel reply of a queued task")
    check_eq(r.get("err_code"), "cancelled", "err_code of a cancelled task")
    check_eq(c.status(tq)["state"], "cancelled", "status after cancelling a queued task")
    c.err("cancel", {"task": tq}, "conflict")
    c.err("cancel", {"task": 987654}, "not_found")
    c.err("cancel", {"task": tq, "user": "someone-else"}, "not_found")
    c.err("result", {"task": tq}, "conflict")

    # -- leased by a real worker in its job_delay pause
    w = h.start_worker(d, name="slow", max_batch=1, job_delay_ms=DELAY_MS)
    tl = c.submit("ann", images=[img], outputs=SPEC)["task"]
    t = c.wait_state_change(tl, "queued", timeout=tmo(20))
    check_eq(t["state"], "leased", "task picked up by the slow worker")
    r = c.ok("cancel", {"task": tl}).meta["task"]
    check_eq(r["state"], "cancelled", "cancel reply of a leased task")
    # It must stay cancelled well past the end of the worker's pause.
    t, timed_out = c.wait(tl, timeout_ms=int((DELAY_MS + tmo(2) * 1000)), since="cancelled")
    check(timed_out and t["state"] == "cancelled",
          "leased task after cancel: expected to stay cancelled, got %r" % t)
    check_eq(t.get("outputs", []), [], "outputs of the cancelled task")
    check_eq(harness.output_files(d.blob_dir).get(tl, []), [],
             "output files of the cancelled task")
    # The worker is still useful: the next task succeeds on it.
    tn = c.submit("ann", images=[img], outputs=SPEC)["task"]
    t = c.wait_terminal(tn, timeout=tmo(30))
    check_eq(t["state"], "succeeded", "next task on the same worker")
    check_eq(c.status(tl)["state"], "cancelled", "cancelled task after the worker moved on")
    w.stop()

    # -- leased by a fake worker: abort command, late done refused
    fw = h.fake_worker(d.worker)
    fw.ready(name="fake")
    tf = c.submit("ann", images=[img], outputs=SPEC)["task"]
    jobs, _ = fw.lease(max=1, wait_ms=int(tmo(5) * 1000))
    check_eq([j["task"] for j in jobs], [tf], "fake worker lease")
    job = jobs[0]
    c.ok("cancel", {"task": tf})
    aborts = fw.poll_aborts(tmo(5))
    check_eq([(a.get("task"), a.get("token")) for a in aborts], [(tf, job["token"])],
             "abort commands received by the fake worker")
    key = job["out_prefix"] + "out-0-%d.png" % job["token"]
    data = harness.make_png(24, 24, seed=9)
    harness.write_blob(d.blob_dir, key, data)
    fw.err("done", {"task": tf, "token": job["token"],
                    "outputs": [{"key": key, "size": len(data), "sha256": sha256(data),
                                 "width": 24, "height": 24, "format": "png"}]}, "stale_lease")
    hb = fw.ok("heartbeat", {"leases": [{"task": tf, "token": job["token"]}]}).meta
    check_eq(hb.get("lost"), [tf], "heartbeat after cancel reports the lease lost")
    t = c.status(tf)
    check_eq(t["state"], "cancelled", "task after the fake worker's late done")
    check_eq(t.get("outputs", []), [], "outputs after the late done")

    s = c.stats()
    check_eq((s["cancelled"], s["succeeded"], s["queued"], s["leased"]), (3, 1, 0, 0),
             "stats after the cancels")


def idempotency_part(h):
    d = h.start_hsqd(transport="tcp")
    c = h.client(d.client)
    img = harness.make_png(30, 30, seed=4)
    r1 = c.submit("ida", images=[img], outputs=SPEC, key="order-1")
    check_eq((r1["state"], r1["created"]), ("queued", True), "first submit")
    r2 = c.submit("ida", images=[harness.make_png(10, 10)], outputs=SPEC, key="order-1")
    check_eq((r2["task"], r2["created"]), (r1["task"], False), "resubmit, same user and key")
    r3 = c.submit("ben", images=[img], outputs=SPEC, key="order-1")
    check(r3["task"] != r1["task"] and r3["created"], "same key, other user: %r" % r3.meta)
    r4 = c.submit("ida", images=[img], outputs=SPEC, key="order-2")
    check(r4["task"] not in (r1["task"], r3["task"]) and r4["created"], "new key: %r" % r4.meta)
    r5 = c.submit("ida", images=[img], outputs=SPEC)
    r6 = c.submit("ida", images=[img], outputs=SPEC)
    check(r5["task"] != r6["task"], "submits without a key are never merged")
    # After the task ends (cancelled here), the key still maps to it.
    c.ok("cancel", {"task": r1["task"]})
    r7 = c.submit("ida", images=[img], outputs=SPEC, key="order-1")
    check_eq((r7["task"], r7["state"], r7["created"]), (r1["task"], "cancelled", False),
             "resubmit after cancel")
    tasks = c.list_all("ida")
    check_eq(sorted(t["id"] for t in tasks),
             sorted({r1["task"], r4["task"], r5["task"], r6["task"]}), "ida's tasks")


def limits_part(h):
    d = h.start_hsqd(transport="tcp", extra_sets={"max_queued": "5",
                                                 "max_queued_per_user": "3",
                                                 "max_waits": "2"})
    c = h.client(d.client)
    img = harness.make_png(30, 30, seed=6)
    a = [c.submit("a", images=[img], outputs=SPEC, key="a%d" % i) for i in range(3)]
    for r in a:
        check(r.error is None, "user a within the limit: %r" % r.meta)
    r = c.submit("a", images=[img], outputs=SPEC, key="a3")
    check_eq(r.code, "queue_full", "4th task of user a (per-user limit 3)")
    # An existing key is answered even while the user is full.
    r = c.submit("a", images=[img], outputs=SPEC, key="a0")
    check_eq((r.code, r.get("task"), r.get("created")), (None, a[0]["task"], False),
             "idempotent resubmit while full")
    b = [c.submit("b", images=[img], outputs=SPEC) for _ in range(2)]
    for r in b:
        check(r.error is None, "user b within the limits: %r" % r.meta)
    r = c.submit("c", images=[img], outputs=SPEC)
    check_eq(r.code, "queue_full", "6th task overall (global limit 5)")
    r = c.submit("b", images=[img], outputs=SPEC)
    check_eq(r.code, "queue_full", "user b over the global limit")
    s = c.stats()
    check_eq(s["queued"], 5, "queued at the global limit")
    # Nothing half-made: the refused submits left no tasks.
    check_eq(len(c.list_all("c")), 0, "tasks of the refused user c")
    check_eq(len(c.list_all("a")), 3, "tasks of user a")

    # Cancelling frees a slot (global and per user).
    c.ok("cancel", {"task": a[1]["task"]})
    r = c.submit("a", images=[img], outputs=SPEC, key="a3")
    check(r.error is None and r["created"], "submit after a cancel freed room: %r" % r.meta)
    r = c.submit("c", images=[img], outputs=SPEC)
    check_eq(r.code, "queue_full", "global limit again")

    # max_waits: two long-polls park, a third is refused with unavailable.
    rids = [c.send("wait", {"task": a[0]["task"], "timeout_ms": 60000}) for _ in range(3)]
    r = c.recv_rid(rids[2])
    check_eq(r.code, "unavailable", "a third parked wait (max_waits 2)")
    check("max_waits" in r.error.get("message", ""), "the refusal names max_waits: %r" % r.error)

    # Finishing tasks frees room too: run them all.
    h.start_worker(d, name="w")
    harness.wait_stats(c, lambda s: s["queued"] + s["leased"] == 0, tmo(30), "the queue to drain")
    r = c.submit("c", images=[img], outputs=SPEC)
    check(r.error is None, "submit after the queue drained: %r" % r.meta)
    check_eq(c.wait_terminal(r["task"])["state"], "succeeded", "task after the limits")
    # The two parked waits were answered when their task finished.
    for rid in rids[:2]:
        r = c.recv_rid(rid)
        check(r.error is None and r["task"]["state"] == "succeeded",
              "a parked wait, answered: %r" % r.meta)


def bad_limit_part(h):
    """A max_waits or staging_max hsqd cannot use stops it before it serves,
    saying why."""
    exe = harness.require(harness.hsqd_path(), "hsqd")
    for key, value, why in (("max_waits", "0", "must be between 1 and"),
                            ("max_waits", "lots", "expected a whole number"),
                            ("staging_max", "lots", "expected a size"),
                            ("staging_max", "100G", "must be at most 64GiB")):
        p = subprocess.run([exe, "--data-dir", h.path("bad-limit"), "--set",
                            "%s=%s" % (key, value)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=tmo(10))
        check_eq(p.returncode, 2, "hsqd exit code with %s=%s" % (key, value))
        check(key in p.stderr and why in p.stderr,
              "hsqd's message for %s=%s: %r" % (key, value, p.stderr))


def main(h):
    bad_limit_part(h)
    cancel_part(h)
    idempotency_part(h)
    limits_part(h)


harness.run(main)
