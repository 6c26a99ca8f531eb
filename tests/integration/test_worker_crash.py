"""A worker SIGKILLed mid-job: its task finishes on another worker once the
lease expires; and a late `done` (and heartbeat, progress, fail) carrying the
stale lease token is refused with stale_lease.

hsqd runs with a short lease (1 s), heartbeat 200 ms and backoff 100 ms.

  T2 (stale part): a raw-protocol fake worker leases T2 and never heartbeats.
  T1 (crash part): a real worker with job_delay leases T1 and is SIGKILLed.
  Both leases expire; a second real worker finishes both (attempts == 2).
  Then the fake worker reports T2 done with its old token, with a real
  output object under the task's prefix: refused with stale_lease, and T2
  keeps the outputs of the worker that really finished it.
  T3: the fake worker reports outputs that are not in the blob store, or
  not with the size it says: refused (hsqd checks off its loop), the lease
  kept; then the right done passes.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, sha256, tmo  # noqa: E402

SETS = {"lease": "1s", "heartbeat": "200ms", "backoff_base": "100ms", "backoff_max": "1s",
        "max_attempts": "5"}


def main(h):
    d = h.start_hsqd(transport="tcp", extra_sets=SETS)
    c = h.client(d.client)
    img = harness.make_png(40, 50, seed=1)
    spec = [{"width": 32, "height": 40, "format": "jpeg"}]

    # -- T2: leased by the fake worker, which then goes silent.
    fw = h.fake_worker(d.worker)
    rep = fw.ready(name="fake")
    check_eq((rep["lease_ms"], rep["heartbeat_ms"]), (1000, 200), "ready reply")
    t2 = c.submit("stale", images=[img], outputs=spec)["task"]
    jobs, _frames = fw.lease(max=1, wait_ms=int(tmo(5) * 1000))
    check_eq([j["task"] for j in jobs], [t2], "fake worker lease")
    job2 = jobs[0]
    check_eq(job2["attempt"], 1, "T2 first attempt")
    # A heartbeat with the current token works (and is the last one).
    hb = fw.ok("heartbeat", {"leases": [{"task": t2, "token": job2["token"]}]}).meta
    check_eq(hb.get("lost", []), [], "heartbeat of a held lease")

    # -- T1: leased by a real worker that is killed mid-job.
    # overlap off: the doomed worker holds exactly one job (with overlap it
    # would also take T2 once the fake worker's lease expires, as a second
    # batch decoded ahead; test_overlap.py covers that).
    w1 = h.start_worker(d, name="doomed", max_batch=1, job_delay_ms=int(tmo(60) * 1000),
                        extra={"overlap": "off"})
    t1 = c.submit("crash", images=[img], outputs=spec)["task"]
    t = c.wait_state_change(t1, "queued", timeout=tmo(20))
    check_eq(t["state"], "leased", "T1 state once it left the queue")
    check_eq(t["attempts"], 1, "T1 attempts while leased by the doomed worker")
    # The worker heartbeats while it pauses: the lease outlives 1 s.
    t, timed_out = c.wait(t1, timeout_ms=int(tmo(1.5) * 1000), since="leased")
    check(timed_out and t["state"] == "leased",
          "T1 should stay leased while its worker heartbeats, got %r" % t)
    w1.kill9()

    # -- Both leases expire and go back to the queue.
    for tid in (t1, t2):
        t = c.wait_state_change(tid, "leased", timeout=tmo(10))
        check(t["state"] in ("queued", "succeeded", "leased"),
              "task %d after its lease expired: %r" % (tid, t))
        check_eq(t.get("err_code"), "lease_expired", "task %d error after expiry" % tid)
    s = c.stats()
    check(s["retries_total"] >= 2, "retries_total after two expiries: %r" % s)

    # A heartbeat from the silent fake worker now reports the lease lost.
    hb = fw.ok("heartbeat", {"leases": [{"task": t2, "token": job2["token"]}]}).meta
    check_eq(hb.get("lost", []), [t2], "heartbeat of an expired lease")

    # -- Another real worker finishes both.
    rescuer = h.start_worker(d, name="rescuer")
    for tid in (t1, t2):
        t = c.wait_terminal(tid)
        check_eq(t["state"], "succeeded", "task %d final state (%r)" % (tid, t.get("err_msg")))
        check_eq(t["attempts"], 2, "task %d attempts" % tid)
    res2 = c.ok("result", {"task": t2})
    good = res2["task"]["outputs"][0]
    check_image_ok = harness.image_info(res2.frames[0])
    check_eq(check_image_ok, ("jpeg", 32, 40), "T2 output image")

    # -- The fake worker's late done, with a real object under the prefix.
    fake_key = job2["out_prefix"] + "out-0-late.jpg"
    fake = res2.frames[0][:-2] + b"\x00\x00\xff\xd9"  # different bytes, same size
    harness.write_blob(d.blob_dir, fake_key, fake)
    done = {"task": t2, "token": job2["token"],
            "outputs": [{"key": fake_key, "size": len(fake), "sha256": sha256(fake),
                         "width": 32, "height": 40, "format": "jpeg"}]}
    r = fw.err("done", done, "stale_lease")
    harness.log("late done refused: %r" % r.error)
    fw.err("progress", {"task": t2, "token": job2["token"], "pct": 50, "stage": "late"},
           "stale_lease")
    fw.err("fail", {"task": t2, "token": job2["token"], "code": "worker_error",
                    "message": "late", "retryable": True}, "stale_lease")
    # A made-up token is refused the same way.
    fw.err("done", dict(done, token=job2["token"] + 1000), "stale_lease")

    t = c.status(t2)
    check_eq(t["state"], "succeeded", "T2 state after the late done")
    check_eq(t["outputs"][0]["key"], good["key"], "T2 output key after the late done")
    check_eq(bytes(t["outputs"][0]["sha256"]), bytes(good["sha256"]),
             "T2 output sha256 after the late done")
    res = c.ok("result", {"task": t2})
    check_eq(sha256(res.frames[0]), bytes(good["sha256"]), "T2 result bytes after the late done")

    # The doomed worker wrote nothing for T1 (it died in its pause).
    files = harness.output_files(d.blob_dir)
    check_eq(len(files.get(t1, [])), 1, "output files of T1 (%r)" % files.get(t1))
    s = c.stats()
    check_eq((s["succeeded"], s["queued"], s["leased"], s["failed"]), (2, 0, 0, 0),
             "stats once T1 and T2 are done")

    # -- T3: hsqd confirms a done's outputs (off its loop) before recording
    # them. One that is not in the blob store, or is there with another
    # size, is refused and the lease stays; the right one then passes.
    rescuer.stop()
    t3 = c.submit("outs", images=[img], outputs=spec)["task"]
    jobs, _frames = fw.lease(max=1, wait_ms=int(tmo(5) * 1000))
    check_eq([j["task"] for j in jobs], [t3], "fake worker lease of T3")
    job3 = jobs[0]
    body = res2.frames[0]
    out = {"key": job3["out_prefix"] + "out-0.jpg", "size": len(body), "sha256": sha256(body),
           "width": 32, "height": 40, "format": "jpeg"}
    done3 = {"task": t3, "token": job3["token"], "outputs": [out]}
    r = fw.err("done", done3, "bad_request")
    check("not in the blob store" in r.error.get("message", ""),
          "done naming a missing output: %r" % r.error)
    harness.write_blob(d.blob_dir, out["key"], body)
    r = fw.err("done", dict(done3, outputs=[dict(out, size=len(body) + 1)]), "bad_request")
    check("not in the blob store" in r.error.get("message", ""),
          "done naming an output of another size: %r" % r.error)
    check_eq(c.status(t3)["state"], "leased", "T3 after the refused dones")
    fw.ok("done", done3)
    res3 = c.ok("result", {"task": t3})
    check_eq(res3["task"]["state"], "succeeded", "T3 after its done")
    check_eq(sha256(res3.frames[0]), sha256(body), "T3 result bytes")
    s = c.stats()
    check_eq((s["succeeded"], s["queued"], s["leased"], s["failed"]), (3, 0, 0, 0),
             "final stats")


harness.run(main)
