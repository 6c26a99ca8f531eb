"""submit -> done -> result end to end, with a real hsq-worker, three ways:
the `hsq` CLI (libhsq), the Python module client/python/hsq_client.py, and
the raw wire protocol. Usage: test_e2e.py tcp|ipc.

Every output is checked to be a real image of the requested format and size
(PNG IHDR / JPEG SOF parsed here) whose sha256 and size match the task's
metadata, and whose bytes equal the object in the blob store.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, check_image, fail, sha256, tmo  # noqa: E402

TRANSPORT = sys.argv[1] if len(sys.argv) > 1 else "tcp"


def check_outputs(h, d, task, blobs, specs, what):
    """task: wire task map (sha256 as bytes) or CLI/Python dict (hex);
    blobs: the output bytes in order."""
    outs = task["outputs"]
    check_eq(len(outs), len(specs), "%s: number of outputs" % what)
    check_eq(len(blobs), len(specs), "%s: number of output images" % what)
    for i, (o, data, spec) in enumerate(zip(outs, blobs, specs)):
        w, hh, fmt = spec
        label = "%s output %d" % (what, i)
        check_image(data, fmt, w, hh, label)
        digest = o["sha256"]
        if isinstance(digest, str):
            digest = bytes.fromhex(digest)
        check_eq(sha256(data), bytes(digest), "%s sha256 vs metadata" % label)
        check_eq(len(data), o["size"], "%s size vs metadata" % label)
        check_eq((o["width"], o["height"], o["format"]), (w, hh, fmt), "%s metadata" % label)
        key = o.get("key") or o.get("blob")
        if key:
            with open(os.path.join(d.blob_dir, key), "rb") as f:
                check(f.read() == data, "%s differs from the blob store object %s" % (label, key))


def via_cli(h, d, photo):
    ep = d.client
    specs = [(64, 80, "jpeg"), (48, 48, "png")]
    _, _, sub = h.cli(ep, "submit", "--user", "alice", "--key", "cli-1", "--size", "64x80:jpeg",
                      "--size", "48x48:png", "--prompt", "studio portrait", photo, json_out=True)
    check(sub and isinstance(sub.get("task"), int), "submit --json printed %r" % sub)
    check_eq(sub["state"], "queued", "cli submit state")
    check_eq(sub["created"], True, "cli submit created")
    task = sub["task"]

    # The same key again: the same task, not created.
    _, _, again = h.cli(ep, "submit", "--user", "alice", "--key", "cli-1", photo, json_out=True)
    check_eq((again["task"], again["created"]), (task, False), "cli idempotent resubmit")

    _, _, w = h.cli(ep, "wait", task, "--timeout-s", str(int(tmo(60))), json_out=True)
    check_eq(w["state"], "succeeded", "cli wait state (error %r)" % (w.get("error"),))
    check_eq(w["timed_out"], False, "cli wait timed_out")

    outdir = h.path("cli-out")
    _, _, res = h.cli(ep, "result", task, "-o", outdir, json_out=True)
    files = res["files"]
    check_eq(len(files), 2, "cli result files")
    blobs = []
    for f in files:
        check(os.path.dirname(f["path"]) == outdir, "result path %r not in %s" % (f["path"], outdir))
        with open(f["path"], "rb") as fh:
            blobs.append(fh.read())
    _, _, st = h.cli(ep, "status", task, json_out=True)
    check_eq(st["state"], "succeeded", "cli status state")
    check_eq(st["attempts"], 1, "cli status attempts")
    check_eq(st["user"], "alice", "cli status user")
    check_eq(st["key"], "cli-1", "cli status key")
    check_outputs(h, d, st, blobs, specs, "cli")
    for f, data in zip(files, blobs):
        check_eq(f["sha256"], sha256(data).hex(), "cli result sha256 of %s" % f["path"])

    # Text output too (exit 0 and the essentials present).
    _, text, _ = h.cli(ep, "status", task)
    check("succeeded" in text and str(task) in text, "cli status text: %r" % text)
    _, text, _ = h.cli(ep, "result", task, "-o", h.path("cli-out2"))
    check(len(text.strip().splitlines()) == 2, "cli result text: %r" % text)

    _, _, lst = h.cli(ep, "list", "--user", "alice", json_out=True)
    ids = [t["id"] for t in lst["tasks"]]
    check(task in ids, "cli list --user alice: task %d missing from %r" % (task, ids))
    _, _, lst = h.cli(ep, "list", "--user", "nobody", json_out=True)
    check_eq(lst["tasks"], [], "cli list of a user without tasks")
    _, text, _ = h.cli(ep, "list", "--user", "alice")
    check(str(task) in text, "cli list text: %r" % text)

    _, _, stats = h.cli(ep, "stats", json_out=True)
    check(stats["succeeded"] >= 1, "cli stats succeeded: %r" % stats)
    check(stats["workers"] >= 1, "cli stats workers: %r" % stats)
    _, text, _ = h.cli(ep, "stats")
    check("succeeded" in text, "cli stats text: %r" % text)

    # Errors map to the documented exit codes.
    h.cli(ep, "status", 999999, expect_rc=3)
    h.cli(ep, "status", task, "--user", "mallory", expect_rc=3)
    return task


def via_python(h, d, img):
    sys.path.insert(0, harness.python_client_dir())
    import hsq_client
    specs = [(40, 56, "jpeg"), (20, 20, "png"), (33, 17, "png")]
    with hsq_client.Client(d.client, timeout_ms=int(tmo(10) * 1000)) as c:
        r = c.submit("bob", photos=[(img, "bob.png")], key="py-1",
                     outputs=[{"width": w, "height": hh, "format": f, "quality": 80}
                              if f == "jpeg" else {"width": w, "height": hh, "format": f}
                              for (w, hh, f) in specs])
        check_eq((r["state"], r["created"]), ("queued", True), "python submit")
        r2 = c.submit("bob", photos=[img], key="py-1")
        check_eq((r2["task"], r2["created"]), (r["task"], False), "python idempotent resubmit")
        t, timed_out = c.wait(r["task"], timeout_ms=int(min(60000, tmo(60) * 1000)))
        check(not timed_out and t["state"] == "succeeded", "python wait: %r" % t)
        t2, images = c.result(r["task"])
        check_outputs(h, d, t2, images, specs, "python")
        check_eq(c.status(r["task"], user="bob")["state"], "succeeded", "python status")
        try:
            c.status(r["task"], user="eve")
            fail("status with another user's id succeeded")
        except hsq_client.HsqError as e:
            check_eq(e.code, "not_found", "python status of another user's task")
        page = c.list("bob")
        check(r["task"] in [x["id"] for x in page["tasks"]], "python list: %r" % page)
        s = c.stats()
        check(s["succeeded"] >= 2, "python stats: %r" % s)
    return r["task"]


def via_raw(h, d, img):
    c = h.client(d.client)
    specs = [(96, 120, "jpeg"), (8, 8, "png")]
    r = c.submit("carol", images=[img], key="raw-1",
                 outputs=[{"width": w, "height": hh, "format": f} for (w, hh, f) in specs])
    check(r.error is None, "raw submit: %r" % r.meta)
    check_eq((r["state"], r["created"]), ("queued", True), "raw submit reply")
    task = r["task"]
    t = c.wait_terminal(task)
    check_eq(t["state"], "succeeded", "raw wait state (err %r)" % t.get("err_msg"))
    res = c.ok("result", {"task": task})
    check_outputs(h, d, res["task"], res.frames, specs, "raw")
    check_eq(res["task"]["attempts"], 1, "raw attempts")
    # result before success / of a missing task
    check_eq(c.err("result", {"task": 424242}, "not_found").code, "not_found", "raw result 404")
    return task


def main(h):
    d = h.start_hsqd(transport=TRANSPORT)
    check(d.client.startswith(TRANSPORT + "://"), "endpoint %r is not %s" % (d.client, TRANSPORT))
    h.start_worker(d, name="w1", pipeline="headshot")
    img = harness.sample_portrait(seed=3)  # a real face: the worker detects it
    photo = h.path("portrait.png")
    with open(photo, "wb") as f:
        f.write(img)
    t1 = via_cli(h, d, photo)
    t2 = via_python(h, d, img)
    t3 = via_raw(h, d, img)
    c = h.client(d.client)
    s = c.stats()
    check_eq((s["succeeded"], s["queued"], s["leased"], s["failed"]), (3, 0, 0, 0),
             "stats after three jobs (tasks %d %d %d)" % (t1, t2, t3))


harness.run(main, name="e2e_" + TRANSPORT)
