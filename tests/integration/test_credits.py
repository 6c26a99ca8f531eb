"""Credits: the ledger balances exactly under concurrency, failures and cancels.

  * credits=on, credit_cost=2: a user without credits is refused with
    insufficient_credits, and the message names the balance and the cost;
  * grants go through all three clients: `hsq credits grant` (CLI), the
    Python module's credits() and the raw protocol; `hsq credits show`
    reads the balance back; a web-role-free ipc peer is an operator here,
    so the role check itself is covered by the unit test;
  * 1,000 submits from 4 client threads at once (each its own DEALER,
    pipelined 50 deep), spread over 5 users whose credits cover only part
    of them, asking for 1 or 2 output sizes (cost 2 or 4); meanwhile a raw
    fake worker fails some jobs for good, fails some retryably (a retry
    keeps the reservation), completes the rest, and a fifth thread cancels
    random tasks (queued or leased);
  * when every task is terminal, for each user: balance == granted -
    sum(cost of the user's succeeded tasks) and reserved == 0; every
    accepted task ended succeeded, failed or cancelled, and every kind of
    ending (and of refusal) happened at least once;
  * taking back more than the balance is refused (conflict) and changes
    nothing.
"""
import os
import random
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, fail, sha256, tmo  # noqa: E402

USERS = ["ana", "ben", "cat", "dan", "eve"]
GRANT = 200
COST = 2
N_SUBMITS = 1000
N_CLIENTS = 4


def fake_worker(h, d, stop, seen, rnd):
    """Lease and finish jobs until stop is set: ~20% fail for good, ~10%
    fail retryably, the rest succeed (unless cancelled meanwhile)."""
    w = harness.RawWorker(h.ctx, d.worker)
    w.ready(name="credits-fake", max_batch=8)
    img = harness.make_png(24, 24, seed=5)
    while not stop.is_set():
        jobs, _ = w.lease(max=8, wait_ms=200)
        for job in jobs:
            seen["leases"] += 1
            stop.wait(0.003)  # some work: gives cancels a chance at leased tasks
            x = rnd.random()
            if x < 0.2:
                r = w.call("fail", {"task": job["task"], "token": job["token"],
                                    "code": "no_face", "message": "no face (test)",
                                    "retryable": False})
            elif x < 0.3:
                r = w.call("fail", {"task": job["task"], "token": job["token"],
                                    "code": "worker_error", "message": "flaky (test)",
                                    "retryable": True})
            else:
                outs = []
                for i in range(len(job["outputs"])):
                    key = job["out_prefix"] + "out-%d.png" % i
                    harness.write_blob(d.blob_dir, key, img)
                    outs.append({"key": key, "size": len(img), "sha256": sha256(img),
                                 "width": 24, "height": 24, "format": "png", "spec": i})
                r = w.call("done", {"task": job["task"], "token": job["token"],
                                    "outputs": outs})
            # A cancel may have taken the lease away first.
            if r.error and r.code != "stale_lease":
                seen["errors"].append(r.meta)
    w.close()


def submitter(c, idx, rnd, accepted, refused, errors, lock):
    bodies, frames = [], []
    img = harness.make_png(32, 40, seed=idx)
    for i in range(N_SUBMITS // N_CLIENTS):
        nsizes = 1 if rnd.random() < 0.5 else 2
        user = USERS[(idx + i) % len(USERS)]
        outs = [{"width": 32 + k, "height": 32, "format": "png"} for k in range(nsizes)]
        bodies.append({"user": user, "inputs": [{"kind": "portrait", "name": "p.png"}],
                       "outputs": outs})
        frames.append([img])
    replies = c.pipeline("submit", bodies, frames, timeout=tmo(120), window=50)
    with lock:
        for b, r in zip(bodies, replies):
            if r.error is None:
                accepted[r["task"]] = (b["user"], COST * len(b["outputs"]))
            elif r.code == "insufficient_credits":
                refused.append(b["user"])
            else:
                errors.append(r.meta)


def canceller(c, stop, rnd, accepted, lock, cancelled):
    while not stop.is_set():
        with lock:
            ids = list(accepted)[-40:]  # the newest: most likely still queued or leased
        if not ids:
            stop.wait(0.005)
            continue
        t = rnd.choice(ids)
        r = c.call("cancel", {"task": t})
        if r.error is None:
            cancelled.add(t)
        elif r.code != "conflict":
            fail("cancel %d: %r" % (t, r.meta))


def main(h):
    d = h.start_hsqd(transport="ipc", extra_sets={
        "credits": "on", "credit_cost": str(COST), "max_attempts": "2",
        "backoff_base": "10ms", "backoff_max": "50ms", "lease": "10s", "heartbeat": "2s",
        "max_queued_per_user": "100000"})
    op = h.client(d.client)
    rnd = random.Random(int(os.environ.get("HSQ_IT_SEED", "4242")))

    # -- refused before any grant, with balance and cost in the message
    r = op.submit("ana", outputs=[{"width": 32, "height": 32, "format": "png"}] * 2)
    check_eq(r.code, "insufficient_credits", "submit without credits")
    msg = r.error.get("message", "")
    check("balance is 0" in msg and "costs 4" in msg, "refusal message: %r" % msg)

    # -- grants through the CLI, the Python module and the raw protocol
    _, _, js = h.cli(d.client, "credits", "grant", "ana", GRANT, json_out=True)
    check_eq((js["balance"], js["reserved"]), (GRANT, 0), "hsq credits grant ana")
    sys.path.insert(0, harness.python_client_dir())
    from hsq_client import Client, HsqError
    with Client(d.client, timeout_ms=int(tmo(10) * 1000)) as pc:
        got = pc.credits("ben", GRANT)
        check_eq((got["balance"], got["reserved"]), (GRANT, 0), "Client.credits grant")
        check_eq(pc.credits("ben")["balance"], GRANT, "Client.credits show")
        try:
            pc.credits("ben", -(GRANT + 1))
            fail("taking back more than the balance succeeded")
        except HsqError as e:
            check_eq(e.code, "conflict", "taking back more than the balance")
    for u in USERS[2:]:
        m = op.ok("credits", {"user": u, "grant": GRANT}).meta
        check_eq((m["user"], m["balance"], m["reserved"]), (u, GRANT, 0), "raw grant " + u)
    _, _, js = h.cli(d.client, "credits", "show", "ben", json_out=True)
    check_eq(js["balance"], GRANT, "hsq credits show ben")
    h.cli(d.client, "credits", "grant", "zed", 5)
    _, _, js = h.cli(d.client, "credits", "grant", "zed", "--", "-2", json_out=True)
    check_eq((js["balance"], js["available"]), (3, 3), "hsq credits grant zed -- -2")
    _, out, _ = h.cli(d.client, "credits", "show", "zed")
    check("balance    3" in out, "hsq credits show text: %r" % out)
    h.cli(d.client, "credits", "grant", "zed", "--", "-4", expect_rc=1)
    h.cli(d.client, "credits", "grant", "zed", "x", expect_rc=2)

    # -- the storm
    lock = threading.Lock()
    accepted, refused, errors, cancelled = {}, [], [], set()
    seen = {"leases": 0, "errors": []}
    stop_worker, stop_cancel = threading.Event(), threading.Event()
    clients = [h.client(d.client) for _ in range(N_CLIENTS)]
    cc = h.client(d.client)
    wt = threading.Thread(target=fake_worker,
                          args=(h, d, stop_worker, seen, random.Random(rnd.random())))
    ct = threading.Thread(target=canceller, args=(cc, stop_cancel, random.Random(rnd.random()),
                                                  accepted, lock, cancelled))
    sts = [threading.Thread(target=submitter,
                            args=(clients[i], i, random.Random(rnd.random()), accepted, refused,
                                  errors, lock)) for i in range(N_CLIENTS)]
    wt.start()
    ct.start()
    for t in sts:
        t.start()
    for t in sts:
        t.join(tmo(180))
        check(not t.is_alive(), "a submitter thread did not finish")
    check(not errors, "unexpected submit errors: %r" % errors[:3])
    check_eq(len(accepted) + len(refused), N_SUBMITS, "submits answered")
    harness.wait_stats(op, lambda s: s["queued"] == 0 and s["leased"] == 0, tmo(120),
                       "every accepted task terminal")
    stop_cancel.set()
    ct.join(tmo(30))
    check(not ct.is_alive(), "canceller did not stop")
    stop_worker.set()
    wt.join(tmo(30))
    check(not wt.is_alive(), "fake worker did not stop")
    check(not seen["errors"], "fake worker errors: %r" % seen["errors"][:3])

    # -- the ledger balances exactly
    states = {}
    for u in USERS:
        for t in op.list_all(u):
            states[t["id"]] = t["state"]
    ends = {"succeeded": 0, "failed": 0, "cancelled": 0}
    for u in USERS:
        spent = 0
        for tid, (owner, cost) in accepted.items():
            if owner != u:
                continue
            st = states.get(tid)
            check(st in ends, "task %d ended %r" % (tid, st))
            ends[st] += 1
            if st == "succeeded":
                spent += cost
        m = op.ok("credits", {"user": u}).meta
        check_eq(m["reserved"], 0, "%s: reserved once everything is terminal" % u)
        check_eq(m["balance"], GRANT - spent, "%s: balance == granted - succeeded cost" % u)
        check(m["balance"] >= 0, "%s: balance went negative (double spend)" % u)
    harness.log("accepted %d refused %d ends %r cancels %d leases %d"
                % (len(accepted), len(refused), ends, len(cancelled), seen["leases"]))
    check(len(refused) > 0, "no submit was refused for credits (grants too large?)")
    for k, v in ends.items():
        check(v > 0, "no task ended %s" % k)
    check_eq(sum(ends.values()), len(accepted), "accepted tasks accounted for")


harness.run(main)
