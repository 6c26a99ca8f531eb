"""Restarts with live workers (ipc, so the endpoints survive a restart).

  * a worker stopped with SIGTERM mid-job finishes that job first (its
    `done` is accepted), then exits 0;
  * hsqd SIGKILLed while a worker holds leases, restarted on the same data
    dir and socket paths: the worker notices, reconnects, and every task
    still succeeds (the old leases expire and are handed out again);
  * hsqd stopped cleanly (SIGTERM, exit 0) while a worker long-polls, then
    restarted: the worker reconnects and new work runs;
  * hsqd stopped cleanly right after a worker sent 64 dones: it exits 0,
    and after a restart every task whose done it acknowledged succeeded.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, tmo  # noqa: E402

SETS = {"lease": "2s", "heartbeat": "200ms", "backoff_base": "100ms", "backoff_max": "500ms",
        "max_attempts": "10"}
OUT = [{"width": 20, "height": 20, "format": "jpeg"}]


def main(h):
    d = h.start_hsqd(transport="ipc", extra_sets=SETS)
    c = h.client(d.client)
    img = harness.make_png(30, 30, seed=11)

    # -- graceful worker stop mid-job
    w = h.start_worker(d, name="graceful", max_batch=1, job_delay_ms=800)
    t = c.submit("gus", images=[img], outputs=OUT)["task"]
    leased = c.wait_state_change(t, "queued")
    check_eq(leased["state"], "leased", "task leased")
    # "leased" is hsqd's view; the worker holds the job once it heartbeats
    # it (a heartbeat rewrites the record: updated_ms moves).
    harness.poll_until(lambda: c.status(t)["updated_ms"] > leased["updated_ms"], tmo(10),
                       "a heartbeat for task %d" % t, interval=0.05)
    w.stop(timeout=tmo(15))  # asserts exit 0
    st = c.status(t)
    check_eq((st["state"], st["attempts"]), ("succeeded", 1),
             "task of a worker stopped with SIGTERM mid-job")

    # -- hsqd SIGKILLed while the worker holds leases
    w = h.start_worker(d, name="survivor", max_batch=2, job_delay_ms=700)
    ids = [c.submit("kim", images=[img], outputs=OUT)["task"] for _ in range(6)]
    check_eq(c.wait_state_change(ids[0], "queued")["state"], "leased", "first task leased")
    d.kill9()
    c.close()
    d = h.start_hsqd(transport="ipc", extra_sets=SETS, data_dir=d.data_dir)
    c = h.client(d.client)
    for t in ids:
        st = c.wait_terminal(t, timeout=tmo(60))
        check_eq(st["state"], "succeeded", "task %d after the hsqd crash (%r)"
                 % (t, st.get("err_msg")))
    check(w.alive(), "the worker exited when hsqd crashed")
    harness.wait_stats(c, lambda s: s["workers"] >= 1, tmo(10), "the worker to be back")

    # -- clean hsqd stop and restart under the same worker
    d.stop()
    c.close()
    d = h.start_hsqd(transport="ipc", extra_sets=SETS, data_dir=d.data_dir)
    c = h.client(d.client)
    t = c.submit("kim", images=[img], outputs=OUT)["task"]
    st = c.wait_terminal(t, timeout=tmo(60))
    check_eq((st["state"], st["attempts"]), ("succeeded", 1), "task after a clean restart")
    check(w.alive(), "the worker exited when hsqd stopped")
    files = harness.output_files(d.blob_dir)
    for t in ids:
        check(len(files.get(t, [])) >= 1, "task %d has no output file" % t)

    # -- clean stop while dones are in flight: hsqd checks their outputs off
    # its loop (slowed here to 500 ms a batch, so the checks are still away
    # when SIGTERM comes). It answers them before it exits 0, and every done
    # it acknowledged is recorded.
    w.stop(timeout=tmo(15))
    d.stop()
    c.close()
    os.environ["HSQ_FAULT"] = "check.run~500"
    try:
        d = h.start_hsqd(transport="ipc", extra_sets=SETS, data_dir=d.data_dir)
    finally:
        del os.environ["HSQ_FAULT"]
    c = h.client(d.client)
    fw = h.fake_worker(d.worker)
    fw.ready(name="pipelined", max_batch=16)
    n = 64
    ids = [c.submit("pat", images=[img], outputs=OUT)["task"] for _ in range(n)]
    jobs = []
    while len(jobs) < n:
        got, _frames = fw.lease(max=16, wait_ms=int(tmo(5) * 1000))
        jobs += got
    body = b"output bytes of a pipelined done"
    dones = []
    for j in jobs:
        key = j["out_prefix"] + "out-0.jpg"
        harness.write_blob(d.blob_dir, key, body)
        out = {"key": key, "size": len(body), "sha256": harness.sha256(body), "width": 20,
               "height": 20, "format": "jpeg"}
        dones.append((j["task"], {"task": j["task"], "token": j["token"], "outputs": [out]}))
    sent = {fw.send("done", body): task for task, body in dones}
    # Messages of one peer are handled in order, and checks leave for the
    # pool when their turn ends, before its replies are sent: once this
    # heartbeat is answered, every done above is being checked.
    fw.ok("heartbeat", {"leases": [{"task": jobs[0]["task"], "token": jobs[0]["token"]}]})
    d.stop()  # asserts exit 0
    check("stopping once output checks are back" in d.proc.stderr_text(),
          "hsqd stopped without waiting for the output checks in flight")
    acked = set()
    while True:
        r = fw.try_recv(0.5)
        if r is None:
            break
        if r.meta.get("re") == "done" and r.error is None and r.meta.get("rid") in sent:
            acked.add(sent[r.meta["rid"]])
    fw.close()
    c.close()
    harness.log("dones acknowledged before the stop: %d of %d" % (len(acked), n))
    check(len(acked) > 0, "no done was acknowledged before hsqd stopped")
    d = h.start_hsqd(transport="ipc", extra_sets=SETS, data_dir=d.data_dir)
    c = h.client(d.client)
    for t in ids:
        st = c.status(t)
        if t in acked:
            check_eq(st["state"], "succeeded", "task %d, whose done was acknowledged" % t)
        else:
            check(st["state"] in ("leased", "queued", "succeeded"),
                  "task %d, whose done was not acknowledged: %r" % (t, st))


harness.run(main)
