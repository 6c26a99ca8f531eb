"""Priorities, retry/backoff, dead letters, requeue, and the stats counters.

  * dispatch order: priority class first (high, normal, low), FIFO within;
    stats.queued_by_prio and stats.oldest_queued_ms describe the queue;
  * a lease that expires goes back to the queue after its backoff (delayed,
    not leasable before), with attempts + 1 and err_code lease_expired;
  * after max_attempts the task fails and is dead-lettered (stats.dead);
    `hsq requeue` puts it back and a real worker then finishes it;
  * workers / workers_busy / submitted_total / completed_total /
    retries_total follow along.
A raw fake worker takes the leases, so every step is deterministic.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, tmo  # noqa: E402

OUT = [{"width": 12, "height": 12, "format": "png"}]


def priorities(h):
    d = h.start_hsqd(transport="ipc")
    c = h.client(d.client)
    img = harness.make_png(16, 16)
    order = [("low", "u1"), ("normal", "u1"), ("high", "u2"), ("low", "u2"), ("high", "u1"),
             ("normal", "u2")]
    ids = []
    for prio, user in order:
        r = c.submit(user, images=[img], outputs=OUT, prio=prio)
        check(r.error is None, "submit %s: %r" % (prio, r.meta))
        ids.append(r["task"])
    s = c.stats()
    check_eq(s["queued_by_prio"], {"high": 2, "normal": 2, "low": 2}, "stats.queued_by_prio")
    check_eq(s["queued"], 6, "stats.queued")
    oldest = c.status(ids[0])["created_ms"]
    check_eq(s["oldest_queued_ms"], oldest,
             "stats.oldest_queued_ms with 6 tasks queued (created_ms of task %d)" % ids[0])

    fw = h.fake_worker(d.worker)
    fw.ready()
    got = []
    for _ in range(len(ids)):
        jobs, _ = fw.lease(max=1, wait_ms=0)
        check_eq(len(jobs), 1, "one job per lease")
        got.append(jobs[0]["task"])
        check_eq(jobs[0]["prio"], order[ids.index(jobs[0]["task"])][0], "job prio")
    want = [ids[i] for i in (2, 4, 1, 5, 0, 3)]  # high (FIFO), normal, low
    check_eq(got, want, "dispatch order (high, high, normal, normal, low, low)")
    jobs, _ = fw.lease(max=1, wait_ms=0)
    check_eq(jobs, [], "lease with nothing queued")
    s = c.stats()
    check_eq((s["queued"], s["leased"], s["workers_busy"]), (0, 6, 1),
             "stats (queued, leased, workers_busy) with all leased")
    check_eq(s["oldest_queued_ms"], 0, "stats.oldest_queued_ms with nothing queued")


def retries(h):
    d = h.start_hsqd(transport="tcp", extra_sets={
        "lease": "400ms", "heartbeat": "100ms", "max_attempts": "2",
        "backoff_base": "1500ms", "backoff_max": "1500ms"})
    c = h.client(d.client)
    img = harness.make_png(16, 16, seed=3)
    fw = h.fake_worker(d.worker)
    fw.ready(name="flaky")
    t = c.submit("rita", images=[img], outputs=OUT)["task"]
    jobs, _ = fw.lease(max=1, wait_ms=int(tmo(5) * 1000))
    check_eq([(j["task"], j["attempt"]) for j in jobs], [(t, 1)], "first lease")
    s = c.stats()
    check_eq((s["workers"], s["workers_busy"], s["leased"]), (1, 1, 1),
             "stats (workers, workers_busy, leased) while leased")

    # Expiry 1: back to the queue, delayed by the backoff.
    st = c.wait_state_change(t, "leased", timeout=tmo(10))
    check_eq((st["state"], st["attempts"], st.get("err_code")), ("queued", 1, "lease_expired"),
             "after the first expiry")
    s = c.stats()
    check_eq((s["queued"], s["delayed"], s["leased"], s["retries_total"]), (1, 1, 0, 1),
             "stats (queued, delayed, leased, retries_total) during the backoff")
    jobs, _ = fw.lease(max=1, wait_ms=0)
    check_eq(jobs, [], "lease during the backoff")
    # After the backoff it is leased again, attempt 2.
    jobs, _ = fw.lease(max=1, wait_ms=int(tmo(10) * 1000))
    check_eq([(j["task"], j["attempt"]) for j in jobs], [(t, 2)], "second lease")
    token2 = jobs[0]["token"]

    # Expiry 2 = last attempt: failed, dead-lettered.
    st = c.wait_state_change(t, "leased", timeout=tmo(10))
    check_eq((st["state"], st["attempts"], st.get("err_code")), ("failed", 2, "lease_expired"),
             "after the last attempt")
    s = c.stats()
    check_eq((s["failed"], s["dead"], s["queued"], s["delayed"]), (1, 1, 0, 0),
             "stats (failed, dead, queued, delayed) after dead-lettering")
    fw.err("done", {"task": t, "token": token2, "outputs": [
        {"key": jobs[0]["out_prefix"] + "x.png", "size": 1, "sha256": b"\0" * 32,
         "width": 12, "height": 12, "format": "png"}]}, "stale_lease")

    # Requeue with the CLI; a real worker finishes it.
    _, _, rq = h.cli(d.client, "requeue", t, json_out=True)
    check_eq((rq["state"], rq["attempts"], rq["error"]), ("queued", 0, None), "requeue reply")
    s = c.stats()
    check_eq((s["dead"], s["failed"], s["queued"]), (0, 0, 1), "stats after requeue")
    h.cli(d.client, "requeue", t, expect_rc=1)  # not failed any more: conflict
    fw.close()
    h.start_worker(d, name="real")
    st = c.wait_terminal(t)
    check_eq((st["state"], st["attempts"]), ("succeeded", 1), "requeued task")
    s = c.stats()
    check_eq((s["succeeded"], s["submitted_total"], s["completed_total"]), (1, 1, 1),
             "stats (succeeded, submitted_total, completed_total)")
    check(s["uptime_s"] >= 0 and s["workers"] >= 1, "stats uptime/workers: %r" % s)


def main(h):
    retries(h)
    priorities(h)


harness.run(main)
