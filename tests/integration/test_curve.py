"""Transport security: CURVE with a ZAP allowlist and per-operation roles.

Keys are made by `hsq keygen`; hsqd runs on tcp://127.0.0.1:* with its
secret key and a clients_file that gives each public key a role. Checks:
  * keygen writes PREFIX.key 0600 and PREFIX.pub, never overwriting;
  * hsqd refuses a tcp endpoint without keys, and --insecure starts it with a
    warning (<4>) in the log;
  * an unknown CURVE key gets no reply (ZAP answers 400), nor does a
    plaintext peer;
  * roles: a worker key cannot submit, a web key cannot requeue, a web key
    cannot lease on the worker endpoint, an operator key may do all client
    operations; the CLI works with the HSQ_CURVE_* variables;
  * events over CURVE reach a web key's subscriber;
  * a real hsq-worker with a worker key completes a job.
"""
import os
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, fail, tmo  # noqa: E402

import zmq  # noqa: E402


def keygen(h, prefix):
    h.cli("unused", "keygen", "-o", prefix)
    with open(prefix + ".pub") as f:
        pub = f.read().strip()
    with open(prefix + ".key") as f:
        sec = f.read().strip()
    check_eq(len(pub), 40, "public key length")
    check_eq(len(sec), 40, "secret key length")
    check_eq(stat.S_IMODE(os.stat(prefix + ".key").st_mode), 0o600, prefix + ".key mode")
    return pub, sec


def curve_sock(h, kind, endpoint, server_pub, keys):
    """A RawClient/RawWorker whose DEALER uses CURVE (keys = (pub, sec))."""
    obj = kind.__new__(kind)
    obj.endpoint = endpoint
    obj.rid = 0
    obj.stash = []
    obj.aborts = []
    s = h.ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if keys:
        s.curve_serverkey = server_pub.encode()
        s.curve_publickey = keys[0].encode()
        s.curve_secretkey = keys[1].encode()
    s.connect(endpoint)
    obj.sock = s
    h.sockets.append(obj)
    return obj


def no_reply(c, what):
    c.send("stats")
    r = c.try_recv(tmo(1.5))
    check(r is None, "%s got a reply: %r" % (what, r))


def refuses_plain_tcp(h):
    exe = harness.hsqd_path()
    argv = [exe, "--data-dir", h.path("refuse"), "--set", "client_endpoint=tcp://127.0.0.1:*",
            "--set", "worker_endpoint=tcp://127.0.0.1:*", "--set", "events_endpoint="]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=tmo(30))
    err = r.stderr.decode("utf-8", "replace")
    h.extra_logs.append(("hsqd without keys", err))
    check_eq(r.returncode, 2, "hsqd exit code with tcp and no keys (stderr %r)" % err)
    check("refusing to start" in err and "--insecure" in err,
          "hsqd's refusal should name --insecure: %r" % err)
    # Half a configuration is refused too.
    r = subprocess.run(argv + ["--set", "clients_file=" + h.path("nothing")],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=tmo(30))
    h.extra_logs.append(("hsqd half keys", r.stderr.decode("utf-8", "replace")))
    check_eq(r.returncode, 2, "hsqd exit code with clients_file but no key")

    d = h.start_hsqd(transport="tcp", name="insecure")  # harness adds --insecure
    err = d.proc.stderr_text()
    check("<4>hsqd INSECURE" in err, "--insecure must log a warning at start: %r" % err[:500])
    c = h.client(d.client)
    c.stats()
    d.stop()


def main(h):
    refuses_plain_tcp(h)

    kdir = h.path("keys")
    os.makedirs(kdir)
    srv_pub, _ = keygen(h, os.path.join(kdir, "hsqd"))
    web = keygen(h, os.path.join(kdir, "web"))
    wrk = keygen(h, os.path.join(kdir, "worker"))
    ops = keygen(h, os.path.join(kdir, "ops"))
    stranger = keygen(h, os.path.join(kdir, "stranger"))
    rc, _, _ = h.cli("unused", "keygen", "-o", os.path.join(kdir, "web"), expect_rc=5)

    clients = os.path.join(kdir, "clients")
    with open(clients, "w") as f:
        f.write("# hsq clients: key role [name]\n\n")
        f.write("%s web frontend-1\n" % web[0])
        f.write("%s worker gpu0   # the first GPU\n" % wrk[0])
        f.write("%s operator\n" % ops[0])

    d = h.start_hsqd(transport="tcp", extra_sets={
        "curve_secret_key_file": os.path.join(kdir, "hsqd.key"),
        "clients_file": clients})
    check("security=curve" in d.proc.stderr_text(), "hsqd should log CURVE sockets")

    # Unknown key and plaintext: no answer at all.
    no_reply(curve_sock(h, harness.RawClient, d.client, srv_pub, stranger), "unknown CURVE key")
    no_reply(curve_sock(h, harness.RawClient, d.client, srv_pub, None), "plaintext client")
    no_reply(curve_sock(h, harness.RawWorker, d.worker, srv_pub, stranger),
             "unknown key on the worker endpoint")

    wc = curve_sock(h, harness.RawClient, d.client, srv_pub, web)
    kc = curve_sock(h, harness.RawClient, d.client, srv_pub, wrk)
    oc = curve_sock(h, harness.RawClient, d.client, srv_pub, ops)
    ww = curve_sock(h, harness.RawWorker, d.worker, srv_pub, web)

    r = wc.submit("alice")
    check(r.error is None, "web submit: %r" % r.meta)
    task = r["task"]
    wc.stats()
    check_eq(kc.submit("alice").code, "forbidden", "worker key submits")
    wc.err("requeue", {"task": task}, "forbidden")
    ww.err("lease", {"max": 1, "wait_ms": 0}, "forbidden")
    ww.err("ready", {"name": "x", "backend": "cpu", "max_batch": 1}, "forbidden")

    # Operator: every client operation, requeue included.
    r = oc.submit("bob")
    check(r.error is None, "operator submit: %r" % r.meta)
    t2 = r["task"]
    oc.ok("cancel", {"task": t2})
    t = oc.ok("requeue", {"task": t2}).meta["task"]
    check_eq(t["state"], "queued", "operator requeue")
    oc.stats()

    # The CLI with its environment variables.
    env_keys = {"HSQ_CURVE_SERVERKEY": srv_pub, "HSQ_CURVE_PUBLICKEY": ops[0],
                "HSQ_CURVE_SECRETKEY": ops[1]}
    saved = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    try:
        _, _, st = h.cli(d.client, "stats", json_out=True)
        check(st["submitted_total"] >= 2, "CLI stats over CURVE: %r" % st)
        h.cli(d.client, "top", "--once")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    # Events over CURVE.
    sub = h.ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.curve_serverkey = srv_pub.encode()
    sub.curve_publickey = web[0].encode()
    sub.curve_secretkey = web[1].encode()
    sub.setsockopt(zmq.SUBSCRIBE, b"probe")
    sub.connect(d.events)
    h.sockets.append(sub)
    probes = harness.sync_subscriber(h, sub, wc, "probe")
    for p in probes:
        wc.ok("cancel", {"task": p})

    # A real worker with a worker key completes the queued tasks.
    h.start_worker(d, name="curve-worker", extra={
        "curve_server_key": srv_pub, "curve_public_key": wrk[0], "curve_secret_key": wrk[1]})
    done = wc.wait_terminal(task)
    check_eq(done["state"], "succeeded", "task %d via a CURVE worker (%r)" % (task, done))
    done = oc.wait_terminal(t2)
    check_eq(done["state"], "succeeded", "requeued task %d via a CURVE worker" % t2)
    r = wc.call("result", {"task": task})
    check(r.error is None and len(r.frames) == 1, "result over CURVE: %r" % r)

    # Per-key submit limit: one web-tier instance (its CURVE key) gets a
    # bucket across all its users; another key is not affected.
    d2 = h.start_hsqd(transport="tcp", name="keylimit", extra_sets={
        "curve_secret_key_file": os.path.join(kdir, "hsqd.key"),
        "clients_file": clients, "key_submit_rate": "1", "key_submit_burst": "3"})
    wc2 = curve_sock(h, harness.RawClient, d2.client, srv_pub, web)
    oc2 = curve_sock(h, harness.RawClient, d2.client, srv_pub, ops)
    for i in range(3):
        r = wc2.submit("user-%d" % i)
        check(r.error is None, "submit %d within the key's burst: %r" % (i, r.meta))
    r = wc2.submit("user-9")
    check_eq(r.code, "rate_limited", "the 4th submit from one key at once")
    check("web:frontend-1" in r.meta["error"]["message"] and "retry after" in
          r.meta["error"]["message"], "the message names the key and the wait: %r" % r.meta)
    r = oc2.submit("user-9")
    check(r.error is None, "another key has its own bucket: %r" % r.meta)


if __name__ == "__main__":
    harness.run(main)
