"""Restarts with live workers (ipc, so the endpoints survive a restart).

  * a worker stopped with SIGTERM mid-job finishes that job first (its
    `done` is accepted), then exits 0;
  * hsqd SIGKILLed while a worker holds leases, restarted on the same data
    dir and socket paths: the worker notices, reconnects, and every task
    still succeeds (the old leases expire and are handed out again);
  * hsqd stopped cleanly (SIGTERM, exit 0) while a worker long-polls, then
    restarted: the worker reconnects and new work runs;
  * hsqd stopped cleanly right after a worker sent 64 dones: it exits 0,
    and after a restart every task whose done it acknowledged succeeded;
  * hsqd stopped cleanly while 16 submits' inputs are being written off its
    loop: it acknowledges all 16 before it exits 0, each task is there after
    a restart with its input under its key, and no staged file is left;
  * hsqd SIGKILLed with submits staged: none was acknowledged, none is
    there after a restart, and their staged files are temp files, which no
    walk lists (`hsq fsck` finds nothing) and which erase-user removes;
  * hsqd SIGKILLed after a lease left but before the turn that made it
    committed (leases go before the commit): the task it carries was
    submitted in that turn and never acknowledged. After a restart it does
    not exist, the worker's done for it is refused and its output goes,
    the next task has another id, the next lease a token 2^32 further, and
    `hsq fsck` finds nothing.
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
    d = start_faulty(h, "check.run~500", SETS, d.data_dir)
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
    check("stopping once output checks" in d.proc.stderr_text(),
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

    # -- clean stop while submits are staged: with inline_max 0 every input
    # is written off the loop (slowed to 500 ms a batch), and the ack comes
    # a turn after the write. SIGTERM waits for them and acknowledges all.
    c.close()
    d.stop()
    staged_sets = dict(SETS, inline_max="0")
    d = start_faulty(h, "stage.run~500", staged_sets, d.data_dir)
    c = h.client(d.client)
    before = c.stats()
    n = 16
    imgs = [harness.make_png(40, 40, seed=100 + i) for i in range(n)]
    body = {"user": "sid", "inputs": [{"kind": "portrait", "name": "p.png"}], "outputs": OUT}
    rids = {c.send("submit", body, [imgs[i]]): i for i in range(n)}
    # One peer's requests are handled in order and stages leave when their
    # turn ends, before its replies: once this stats reply is here, all 16
    # are being written.
    mid = c.stats()
    check_eq(mid["queued"], before["queued"], "queued count while the submits are staged")
    d.stop()  # asserts exit 0
    check("staged inputs are back" in d.proc.stderr_text(),
          "hsqd stopped without waiting for the staged submits")
    tasks = {}
    for rid, i in rids.items():
        r = c.recv_rid(rid, timeout=tmo(5))
        check(r.error is None, "staged submit %d refused at the stop: %r" % (i, r.error))
        check_eq(r.meta.get("created"), True, "staged submit %d created" % i)
        tasks[r.meta["task"]] = imgs[i]
    check_eq(len(tasks), n, "distinct tasks of the staged submits")
    c.close()
    d = h.start_hsqd(transport="ipc", extra_sets=SETS, data_dir=d.data_dir)
    c = h.client(d.client)
    paths = input_paths(d.blob_dir)
    for t, img in tasks.items():
        st = c.status(t)
        check_eq(st["state"], "queued", "staged task %d after the restart" % t)
        check(t in paths, "staged task %d has no input file" % t)
        with open(paths.get(t, "/dev/null"), "rb") as f:
            check(f.read() == img, "staged task %d: its input is not the bytes submitted" % t)
    check_eq(staged_files(d.blob_dir), [], "staged files after a clean stop")

    # -- SIGKILL while submits are staged: nothing was acknowledged, and
    # nothing of them is a task or an object after the restart.
    c.close()
    d.stop()
    fsck_before = fsck(h, d.data_dir)  # the dones above left outputs without records
    d = start_faulty(h, "stage.run~2000", staged_sets, d.data_dir)
    c = h.client(d.client)
    before = c.stats()
    for i in range(4):
        c.send("submit", dict(body, user="kit"), [imgs[i]])
    # Written, and held on the pool for 2 s before they go back.
    harness.poll_until(lambda: len(staged_files(d.blob_dir)) == 4, tmo(10),
                       "4 staged files", interval=0.02)
    d.kill9()
    check(c.try_recv(0.2) is None, "a staged submit was answered before the crash")
    c.close()
    d = h.start_hsqd(transport="ipc", extra_sets=SETS, data_dir=d.data_dir)
    c = h.client(d.client)
    after = c.stats()
    check_eq(after["queued"], before["queued"], "queued tasks after a crash with staged submits")
    check_eq(c.list_all("kit"), [], "tasks of the crashed submits' user")
    check_eq(len(staged_files(d.blob_dir)), 4, "staged files the crash left (temp files)")
    h.cli(d.client, "erase-user", "kit", json_out=True)
    check_eq(staged_files(d.blob_dir), [], "staged files after erase-user")
    c.close()
    d.stop()
    js = fsck(h, d.data_dir)
    check_eq((js["orphans"], js["dangling"]), (fsck_before["orphans"], fsck_before["dangling"]),
             "fsck's orphans and dangling records, after against before the crash")

    lease_before_lost_commit(h, img)


def lease_before_lost_commit(h, img):
    """A lease that left before its turn's commit, which a crash lost."""
    # The turn that sends a lease holds 10 s before its commit: long
    # enough to see the lease arrive and kill hsqd before the commit.
    d = start_faulty(h, "turn.leases_sent~10000", SETS, h.path("early-lease"))
    c = h.client(d.client)
    fw = h.fake_worker(d.worker)
    fw.ready(name="early")
    lease_rid = fw.send("lease", {"max": 1, "wait_ms": int(tmo(30) * 1000)})
    # A round trip on the same socket: the lease request is parked by now.
    fw.ok("heartbeat", {"leases": [{"task": 999999, "token": 1}]})
    c.send("submit", {"user": "eve", "inputs": [{"kind": "portrait", "name": "p.png"}],
                      "outputs": OUT}, [img])
    r = fw.recv_rid(lease_rid, timeout=tmo(10))
    jobs = r.meta.get("jobs", [])
    check_eq(len(jobs), 1, "jobs in the lease that left before the commit")
    job = jobs[0]
    check(c.try_recv(0.2) is None, "the submit was acknowledged before its commit")
    d.kill9()
    c.close()
    d = h.start_hsqd(transport="ipc", extra_sets=SETS, data_dir=d.data_dir)
    c = h.client(d.client)
    check_eq(c.call("status", {"task": job["task"]}).code, "not_found",
             "the task of the lost turn after the restart")
    # The worker writes an output after the first recovery walk and dies
    # before its `done`: the second walk, 2 x lease later, deletes it.
    log_has = lambda text: text in open(d.proc.err_path, errors="replace").read()
    harness.poll_until(lambda: log_has("recovery_pass=1"), tmo(10), "the first recovery walk")
    stray = job["out_prefix"] + "out-1.jpg"
    harness.write_blob(d.blob_dir, stray, harness.make_png(20, 20, seed=4))
    check(not log_has("recovery_pass=2"), "the second walk came before the settle time")
    harness.poll_until(lambda: not os.path.exists(os.path.join(d.blob_dir, stray)), tmo(20),
                       "the output written after the first walk deleted", interval=0.05)
    check(log_has("recovery_pass=2"), "the second recovery walk logged")
    # The worker finishes the job and reports it to the new hsqd.
    key = job["out_prefix"] + "out-0.jpg"
    data = harness.make_png(20, 20, seed=3)
    harness.write_blob(d.blob_dir, key, data)
    fw.err("done", {"task": job["task"], "token": job["token"],
                    "outputs": [{"key": key, "size": len(data), "sha256": harness.sha256(data),
                                 "width": 20, "height": 20, "format": "jpeg"}]},
           "stale_lease", timeout=tmo(20))
    out_dir = os.path.join(d.blob_dir, job["out_prefix"])
    harness.poll_until(lambda: not os.path.exists(out_dir), tmo(10),
                       "the late result's directory deleted", interval=0.02)
    t = c.submit("eve", images=[img], outputs=OUT)["task"]
    check(t > job["task"], "a new task's id %d after the lost one %d" % (t, job["task"]))
    jobs, _ = fw.lease(max=1, wait_ms=int(tmo(10) * 1000))
    check_eq([j["task"] for j in jobs], [t], "the new task leased")
    check(jobs[0]["token"] >= job["token"] + (1 << 32),
          "the new lease's token %d against the lost one's %d" % (jobs[0]["token"], job["token"]))
    c.close()
    d.stop()
    js = fsck(h, d.data_dir)
    check_eq((js["orphans"], js["dangling"]), (0, 0),
             "fsck's orphans and dangling records after the lost commit")


def start_faulty(h, fault, sets, data_dir):
    """hsqd with HSQ_FAULT set (common/fault.h), on the same data dir."""
    os.environ["HSQ_FAULT"] = fault
    try:
        return h.start_hsqd(transport="ipc", extra_sets=sets, data_dir=data_dir)
    finally:
        del os.environ["HSQ_FAULT"]


def fsck(h, data_dir):
    _, _, js = h.cli("ipc:///nonexistent", "fsck", "--data-dir", data_dir, json_out=True,
                     expect_rc=None)
    check(js is not None and "orphans" in js, "fsck --json printed %r" % (js,))
    return js


def staged_files(blob_dir):
    return [f for _, _, fs in os.walk(blob_dir) for f in fs if f.startswith(".tmp.stage")]


def input_paths(blob_dir):
    """{task id: path of its first input} for every uploaded input."""
    res = {}
    for dirpath, _dirs, files in os.walk(blob_dir):
        if "in-0" in files and os.path.basename(dirpath).isdigit():
            res[int(os.path.basename(dirpath))] = os.path.join(dirpath, "in-0")
    return res


harness.run(main)
