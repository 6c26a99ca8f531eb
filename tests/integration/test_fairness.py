"""Fair dispatch across users.

With no worker running, user alpha submits 500 jobs, then user beta submits
5. Then one worker with max_batch 1 starts. The completion order is read
from the events PUB socket ("succeeded" events, in publish order) and
cross-checked against updated_ms from status:

  * all of beta's jobs finish before alpha's 100th;
  * each user's jobs finish in submission order (FIFO within a user);
  * every job succeeds exactly once.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, fail, tmo  # noqa: E402

NA, NB = 500, 5


def main(h):
    d = h.start_hsqd(transport="tcp")
    c = h.client(d.client)
    sub = h.subscriber(d.events, ["alpha", "beta", "probe"])
    probes = harness.sync_subscriber(h, sub, c, "probe")
    for p in probes:
        c.ok("cancel", {"task": p})

    img = harness.make_png(16, 16, seed=7)
    out = [{"width": 8, "height": 8, "format": "png"}]

    def bodies(user, n):
        return [{"user": user, "inputs": [{"kind": "portrait"}], "outputs": out}] * n
    ra = c.pipeline("submit", bodies("alpha", NA), [[img]] * NA)
    rb = c.pipeline("submit", bodies("beta", NB), [[img]] * NB)
    a_ids = [r["task"] for r in ra]
    b_ids = [r["task"] for r in rb]
    check(all(r.error is None for r in ra + rb), "a submit was refused")
    check(max(a_ids) < min(b_ids), "beta's tasks were submitted after alpha's")

    h.start_worker(d, name="solo", max_batch=1)
    order = []  # (user, task) of succeeded events
    seen = set()
    deadline = time.monotonic() + tmo(120)
    while len(order) < NA + NB:
        left = deadline - time.monotonic()
        got = harness.recv_event(sub, max(0.0, min(left, tmo(15))))
        if got is None:
            fail("%d of %d succeeded events after %.0fs; stats %r"
                 % (len(order), NA + NB, tmo(120), c.stats()))
        topic, ev = got
        if topic not in ("alpha", "beta"):
            continue
        check(ev["state"] != "failed", "task %d failed: %r" % (ev["task"], ev))
        if ev["state"] == "succeeded":
            check(ev["task"] not in seen, "task %d succeeded twice" % ev["task"])
            seen.add(ev["task"])
            order.append((topic, ev["task"]))

    a_done = [t for u, t in order if u == "alpha"]
    b_done = [t for u, t in order if u == "beta"]
    check_eq(sorted(a_done), a_ids, "alpha's succeeded tasks")
    check_eq(sorted(b_done), b_ids, "beta's succeeded tasks")
    check_eq(a_done, a_ids, "alpha's completion order (FIFO within a user)")
    check_eq(b_done, b_ids, "beta's completion order (FIFO within a user)")
    pos_a100 = order.index(("alpha", a_ids[99]))
    last_b = max(order.index(("beta", t)) for t in b_ids)
    harness.log("beta's last at position %d, alpha's 100th at %d" % (last_b, pos_a100))
    check(last_b < pos_a100, "beta's last job finished at position %d, after alpha's 100th (%d); "
          "order head: %r" % (last_b, pos_a100, order[:20]))

    # Cross-check with the task records.
    a100 = c.status(a_ids[99])
    for t in b_ids:
        st = c.status(t)
        check_eq((st["state"], st["attempts"]), ("succeeded", 1), "beta task %d" % t)
        check(st["updated_ms"] <= a100["updated_ms"],
              "beta task %d updated at %d, after alpha's 100th (%d)"
              % (t, st["updated_ms"], a100["updated_ms"]))
    s = c.stats()
    check_eq((s["succeeded"], s["queued"], s["leased"]), (NA + NB, 0, 0), "final stats")


harness.run(main)
