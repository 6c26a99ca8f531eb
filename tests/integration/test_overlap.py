"""hsq-worker's overlap (on by default): while one batch runs, the next one
is leased and decoded, so a worker holds up to two batches.

A worker with max_batch 1 and a long job_delay (the testing aid, which
pauses each job before it is decoded) holds two of three tasks, the third
stays queued; the same worker with overlap off holds one. Killed, its leases
expire (lease 1 s) and a plain worker finishes all three.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, tmo  # noqa: E402

SETS = {"lease": "1s", "heartbeat": "200ms", "backoff_base": "100ms", "backoff_max": "1s",
        "max_attempts": "5"}


def held_by_slow_worker(h, d, c, overlap):
    img = harness.make_png(40, 50, seed=3)
    spec = [{"width": 32, "height": 40, "format": "jpeg"}]
    tasks = [c.submit("ov-%s" % overlap, images=[img], outputs=spec)["task"] for _ in range(3)]
    w = h.start_worker(d, name="slow", max_batch=1, job_delay_ms=int(tmo(60) * 1000),
                       extra={"overlap": overlap})
    want = 2 if overlap == "on" else 1
    for tid in tasks[:want]:
        t = c.wait_state_change(tid, "queued", timeout=tmo(20))
        check_eq(t["state"], "leased", "task %d with overlap %s" % (tid, overlap))
    # The rest stays queued while the worker heartbeats what it holds.
    for tid in tasks[want:]:
        t, timed_out = c.wait(tid, timeout_ms=int(tmo(1.5) * 1000), since="queued")
        check(timed_out and t["state"] == "queued",
              "task %d should stay queued (overlap %s), got %r" % (tid, overlap, t))
    s = c.stats()
    check_eq(s["leased"], want, "leased tasks with overlap %s" % overlap)
    w.kill9()
    # Its leases expire; a plain worker finishes the three before the next
    # case starts.
    f = h.start_worker(d, name="finisher")
    for tid in tasks:
        t = c.wait_terminal(tid)
        check_eq(t["state"], "succeeded", "task %d (%r)" % (tid, t.get("err_msg")))
    f.stop()


def main(h):
    d = h.start_hsqd(transport="ipc", extra_sets=SETS)
    c = h.client(d.client)
    held_by_slow_worker(h, d, c, "on")
    held_by_slow_worker(h, d, c, "off")
    s = c.stats()
    check_eq((s["succeeded"], s["queued"], s["leased"]), (6, 0, 0), "final stats")


harness.run(main)
