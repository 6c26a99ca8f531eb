"""Retention, erasure, export and fsck against the real hsqd (issue 5).

Usage: test_retention.py classes|erase|export|crash|diskfull|offline

  classes   every retention class expires at its time and not a second
            before, with HSQ_FAKE_CLOCK_FILE jumps (a week in one step; a jump
            back resurrects nothing), checked through `hsq status` dates and
            the files in the blob tree;
  erase     erase-user with tasks queued, leased (a real worker with
            job_delay) and done: no trace of the user id or its blob path hash
            in `mdb_dump -a` of the LMDB environment or in the blob tree,
            except the audit line, which holds only the audit hash; other
            users untouched; idempotent;
  export    export-user archive holds the user's images byte-identical and
            nothing of another user; then erase; the Python module too;
  crash     SIGKILL of hsqd at injected points (erase.records: records
            deleted, not committed; erase.after_blobs: files gone, ledger
            entry not; turn.before_commit@N during an erase, sweep.entry@N
            during a purge, reap.deleted in the reaper thread,
            recover.deleted in the start-up recovery walk), restart:
            `hsq fsck` finds no orphans and no dangling records, the
            erasure completed, and the crash's lost uploads are gone;
  diskfull  purge on a full (tmpfs) disk still frees space and succeeds;
  offline   `hsq purge --data-dir` with hsqd stopped removes expired data.
"""
import json
import os
import subprocess
import sys
import tarfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, fail, make_png, sha256, tmo  # noqa: E402

sys.path.insert(0, harness.python_client_dir())

MODE = sys.argv[1] if len(sys.argv) > 1 else "classes"
DAY = 86400 * 1000
SETS = {"inline_max": "0"}  # every input is a file in the blob tree


# ---------------------------------------------------------------- fake clock

class Clock:
    """hsqd's wall clock = real time + the offset in the file."""

    def __init__(self, h):
        self.path = h.path("clock")
        self.offset = 0
        self.set(0)
        os.environ["HSQ_FAKE_CLOCK_FILE"] = self.path  # hsqd and hsq inherit it

    def set(self, offset_ms):
        self.offset = int(offset_ms)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % self.offset)
        os.rename(tmp, self.path)

    def at(self, wall_ms):
        """Jump so that hsqd's clock reads wall_ms now."""
        self.set(wall_ms - int(time.time() * 1000))


# ---------------------------------------------------------------- helpers

def files_under(root):
    out = []
    for dp, _dirs, fs in os.walk(root):
        for f in fs:
            out.append(os.path.relpath(os.path.join(dp, f), root))
    return sorted(out)


def task_files(d, task_key_prefix):
    """Files of one task (its in-*/out-* objects) under blob key prefix."""
    p = os.path.join(d.blob_dir, task_key_prefix)
    return sorted(os.listdir(p)) if os.path.isdir(p) else []


def status(h, d, task, expect_rc=0):
    rc, _, js = h.cli(d.client, "status", task, json_out=True, expect_rc=expect_rc)
    return js


def purge(h, d, *extra, expect_rc=0):
    # A turn takes the clock when it begins, so a request that arrives
    # during a turn begun before a fake-clock jump is handled before the
    # jump. A stats round trip first: the purge then arrives after that
    # turn ended, and the turn that handles it read the clock afterwards.
    if expect_rc == 0:
        h.cli(d.client, "stats")
    _, _, js = h.cli(d.client, "purge", *extra, json_out=True, expect_rc=expect_rc)
    return js


def fake_done(h, d, w, blob_dir, seed=0, nout=1):
    """Lease one task with the raw worker, store outputs, report done.
    Returns (task id, [output bytes])."""
    jobs, _ = w.lease(max=1, wait_ms=3000)
    check_eq(len(jobs), 1, "fake worker lease")
    job = jobs[0]
    outs, datas = [], []
    for i in range(nout):
        data = make_png(24 + i, 30, seed * 10 + i + 100)
        key = job["out_prefix"] + "out-%d.png" % i
        harness.write_blob(blob_dir, key, data)
        outs.append({"key": key, "size": len(data), "sha256": sha256(data), "width": 24 + i,
                     "height": 30, "format": "png"})
        datas.append(data)
    w.ok("done", {"task": job["task"], "token": job["token"], "outputs": outs})
    return job["task"], datas


def raw_submit(c, user, images, kinds, key=None):
    body = {"user": user,
            "inputs": [{"kind": k, "name": "%s-%d.png" % (k, i)} for i, k in enumerate(kinds)],
            "outputs": [{"width": 24, "height": 30, "format": "png"}]}
    if key:
        body["key"] = key
    r = c.ok("submit", body, images)
    return r["task"]


def blob_prefix_of(d, task_out_key):
    """'u/<hash>/' of an output key 'u/<hash>/<id>/out-0.png'."""
    parts = task_out_key.split("/")
    return "/".join(parts[:2]) + "/"


def mdb_dump(data_dir):
    """Every key and value in every database of the environment, as bytes."""
    r = subprocess.run(["mdb_dump", "-a", os.path.join(data_dir, "db")], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=tmo(60))
    if r.returncode != 0:
        fail("mdb_dump failed: %s" % r.stderr.decode("utf-8", "replace"))
    items = []
    for line in r.stdout.decode().splitlines():
        if line.startswith(" "):
            items.append(bytes.fromhex(line.strip()))
    return items


def fsck(h, data_dir, repair=False):
    args = ["fsck", "--data-dir", data_dir] + (["--repair"] if repair else [])
    _, _, js = h.cli("ipc:///nonexistent", *args, json_out=True, expect_rc=None)
    check(js is not None and "orphans" in js, "fsck --json printed %r" % (js,))
    return js


# ---------------------------------------------------------------- classes

def mode_classes(h):
    clock = Clock(h)
    d = h.start_hsqd(extra_sets=SETS)
    c = h.client(d.client)
    w = h.fake_worker(d.worker)
    w.ready()
    portrait, cloth, bg = make_png(40, 50, 1), make_png(20, 20, 2), make_png(30, 30, 3)

    # A: succeeds (portrait + clothing + background); B: fails; C: never runs.
    a = raw_submit(c, "carol", [portrait, cloth, bg], ["portrait", "clothing", "background"])
    ta, outs = fake_done(h, d, w, d.blob_dir, seed=1)
    check_eq(ta, a, "leased task")
    b = raw_submit(c, "carol", [portrait], ["portrait"])
    jobs, _ = w.lease(max=1, wait_ms=3000)
    w.ok("fail", {"task": b, "token": jobs[0]["token"], "code": "no_face", "message": "x"})
    cc = raw_submit(c, "carol", [portrait], ["portrait"])

    sa, sb, sc = status(h, d, a), status(h, d, b), status(h, d, cc)
    check_eq(sb["state"], "failed", "B state")
    done_at = sa["updated_ms"]
    check_eq(sa["refs_expire_ms"], done_at + 1 * DAY, "A references date (1 day)")
    check_eq(sa["uploads_expire_ms"], done_at + 7 * DAY, "A uploads date (7 days)")
    check_eq(sa["expires_ms"], done_at + 30 * DAY, "A outputs date (30 days)")
    check_eq(sb["uploads_expire_ms"], sb["updated_ms"] + 1 * DAY, "B failed inputs date (1 day)")
    check_eq(sc["uploads_expire_ms"], sc["created_ms"] + 7 * DAY, "C pending date (7 days)")
    _, text, _ = h.cli(d.client, "status", a)
    check("uploads:" in text and "refs:" in text, "status text shows deletion dates: %r" % text)

    pa = blob_prefix_of(d, sa["outputs"][0]["blob"]) + "%d/" % a
    pb = blob_prefix_of(d, sa["outputs"][0]["blob"]) + "%d/" % b
    pc = blob_prefix_of(d, sa["outputs"][0]["blob"]) + "%d/" % cc
    check_eq(task_files(d, pa), ["in-0", "in-1", "in-2", "out-0.png"], "A files at first")

    def step(at_ms, what):
        clock.at(at_ms)
        purge(h, d)
        harness.log("%s: A=%r B=%r C=%r" % (what, task_files(d, pa), task_files(d, pb),
                                            task_files(d, pc)))

    # One second before the references' date: nothing goes.
    step(sa["refs_expire_ms"] - 1000, "refs-1s")
    check_eq(task_files(d, pa), ["in-0", "in-1", "in-2", "out-0.png"], "A files 1 s before refs")
    check_eq(task_files(d, pb), ["in-0"], "B files 1 s before its date")
    # At the date: references and the failed task's inputs go (B failed a
    # moment after A succeeded: its date is a moment later).
    check(sb["uploads_expire_ms"] - sa["refs_expire_ms"] < 1000, "B's date right after A's")
    step(max(sa["refs_expire_ms"], sb["uploads_expire_ms"]) + 50, "refs")
    check_eq(task_files(d, pa), ["in-0", "out-0.png"], "A files after refs date")
    check_eq(task_files(d, pb), [], "B files after failed-retention date")
    # A jump back resurrects nothing and changes no date.
    clock.set(0)
    purge(h, d)
    check_eq(task_files(d, pa), ["in-0", "out-0.png"], "A files after a jump back")
    check_eq(status(h, d, a)["uploads_expire_ms"], sa["uploads_expire_ms"], "date after jump back")
    # Portraits: a week forward in one step.
    step(sa["uploads_expire_ms"] - 1000, "uploads-1s")
    check_eq(task_files(d, pa), ["in-0", "out-0.png"], "A files 1 s before uploads date")
    check_eq(status(h, d, cc)["state"], "queued", "C 1 s before retention_pending")
    step(sc["uploads_expire_ms"] + 50, "uploads")
    check_eq(task_files(d, pa), ["out-0.png"], "A files after uploads date")
    sc2 = status(h, d, cc)
    check_eq(sc2["state"], "cancelled", "C after retention_pending")
    # retention_pending: "cancelled and its inputs deleted" (hsqd --help)
    if task_files(d, pc):
        h.fail_later("C was cancelled at retention_pending but its inputs %r stay until %d "
                     "(retention_failed later); the policy says they are deleted then"
                     % (task_files(d, pc), sc2["uploads_expire_ms"]))
    # Outputs: 30 days; the task becomes a tombstone.
    step(sa["expires_ms"] - 1000, "outputs-1s")
    check_eq(task_files(d, pa), ["out-0.png"], "A output 1 s before its date")
    check_eq(status(h, d, a)["state"], "succeeded", "A state 1 s before outputs date")
    step(sa["expires_ms"] + 50, "outputs")
    check_eq(task_files(d, pa), [], "A files after outputs date")
    st = status(h, d, a)
    check_eq((st["state"], st["outputs"], st["key"]), ("expired", [], None), "A tombstone")
    tomb = st["expires_ms"]
    check(tomb >= sa["expires_ms"] + 365 * DAY, "tombstone date %d" % tomb)
    clock.set(0)
    purge(h, d)
    check_eq(status(h, d, a)["state"], "expired", "tombstone after a jump back")
    step(tomb - 1000, "tomb-1s")
    check_eq(status(h, d, a)["state"], "expired", "tombstone 1 s before its date")
    step(tomb + 50, "tomb")
    status(h, d, a, expect_rc=3)
    check_eq(files_under(os.path.join(d.blob_dir, "u")), [], "blob tree empty at the end")
    js = fsck(h, d.data_dir)
    check_eq((js["orphans"], js["dangling"]), (0, 0), "fsck at the end")


# ---------------------------------------------------------------- erase

def populate(h, d, user, other, with_leased=True):
    """user: T1 done (key), T2 leased by a real slow worker, T3 queued;
    other: O1 done, O2 queued. Returns dict of ids and the user's prefix."""
    c = h.client(d.client)
    w = h.fake_worker(d.worker)
    w.ready(name="fake")
    t1 = raw_submit(c, user, [make_png(40, 50, 1), make_png(20, 20, 2)], ["portrait", "clothing"],
                    key="order-%s" % user)
    fake_done(h, d, w, d.blob_dir, seed=1)
    o1 = raw_submit(c, other, [make_png(40, 50, 5)], ["portrait"])
    fake_done(h, d, w, d.blob_dir, seed=5)
    w.close()
    ids = {"t1": t1, "o1": o1}
    if with_leased:
        h.start_worker(d, name="slow", job_delay_ms=int(tmo(60) * 1000))
        t2 = raw_submit(c, user, [make_png(40, 50, 3)], ["portrait"])
        harness.poll_until(lambda: c.status(t2)["state"] == "leased", tmo(20), "T2 leased")
        ids["t2"] = t2
    ids["t3"] = raw_submit(c, user, [make_png(40, 50, 4)], ["portrait"])
    ids["o2"] = raw_submit(c, other, [make_png(40, 50, 6)], ["portrait"])
    st = c.status(t1)
    ids["prefix"] = blob_prefix_of(d, st["outputs"][0]["key"])
    ids["other_prefix"] = blob_prefix_of(d, c.status(o1)["outputs"][0]["key"])
    check(ids["prefix"] != ids["other_prefix"], "users have distinct blob prefixes")
    return ids


def check_no_trace(h, d, user, ids, subject):
    ph = ids["prefix"].split("/")[1].encode()
    uid = user.encode()
    audit_seen = 0
    for item in mdb_dump(d.data_dir):
        check(uid not in item, "LMDB still holds the user id: %r" % item[:200])
        check(ph not in item, "LMDB still holds the blob path hash: %r" % item[:200])
        if b"op=erase_user" in item and subject.encode() in item:
            audit_seen += 1
    check(audit_seen >= 1, "no audit line names subject %s" % subject)
    check(subject.encode() != ph, "audit subject equals the blob path hash")
    for f in files_under(d.blob_dir):
        check(ph.decode() not in f, "blob tree still has %s" % f)
        with open(os.path.join(d.blob_dir, f), "rb") as fh:
            check(uid not in fh.read(), "blob %s holds the user id" % f)


def mode_erase(h):
    d = h.start_hsqd(extra_sets=SETS)
    user, other = "alice-7f3c9e", "bob-2d41aa"
    ids = populate(h, d, user, other)
    before_other = files_under(os.path.join(d.blob_dir, ids["other_prefix"]))
    check(before_other, "other user's files exist")
    _, _, r = h.cli(d.client, "erase-user", user, json_out=True)
    check_eq((r["tasks"], r["active"]), (3, 2), "receipt tasks/active")
    check(r["bytes"] > 0 and len(r["subject"]) == 32, "receipt %r" % r)
    for k in ("t1", "t2", "t3"):
        status(h, d, ids[k], expect_rc=3)
    check(not os.path.exists(os.path.join(d.blob_dir, ids["prefix"])), "prefix dir gone")
    # Idempotent, same subject.
    _, _, r2 = h.cli(d.client, "erase-user", user, json_out=True)
    check_eq((r2["tasks"], r2["active"], r2["subject"]), (0, 0, r["subject"]), "second erase")
    # The leased task's worker was told to abort: stop it, then nothing of
    # the user may have come back (a late output is discarded).
    for p in h.procs:
        if p.role == "worker" and not p.stopped:
            p.stop()
    check(not os.path.exists(os.path.join(d.blob_dir, ids["prefix"])),
          "prefix dir came back after the worker stopped")
    # The other user is untouched.
    check_eq(status(h, d, ids["o1"])["state"], "succeeded", "other user's done task")
    # (the slow worker, freed by the abort, may have taken it meanwhile)
    check(status(h, d, ids["o2"])["state"] in ("queued", "leased"), "other user's queued task")
    check_eq(files_under(os.path.join(d.blob_dir, ids["other_prefix"])), before_other,
             "other user's files")
    check_no_trace(h, d, user, ids, r["subject"])
    d.stop()
    check_no_trace(h, d, user, ids, r["subject"])  # after a clean shutdown too
    js = fsck(h, d.data_dir)
    check_eq((js["orphans"], js["dangling"]), (0, 0), "fsck after erase")
    erase_slow(h)


def erase_slow(h):
    """An erasure that outlasts one request's wait (the reaper stalls 1.5 s
    per batch; a request waits 0.3 s + HSQ_CLIENT_SLOW_MS 0.2 s): erase-user
    keeps its request pending while hsqd answers pings, and prints the
    receipt (a request sent again lost the receipt when the erasure ended
    between two: 1 run in 4 under load); with --timeout-s
    it gives up with exit 4 and says the ledger finishes the job."""
    d = start_faulty(h, h.path("slow"), "reap.deleted~1500")
    user, other = "hana-51c0", "ivan-8e22"
    ids = populate(h, d, user, other, with_leased=False)
    os.environ["HSQ_CLIENT_SLOW_MS"] = "200"
    try:
        _, _, r = h.cli(d.client, "--timeout", "300", "erase-user", user, json_out=True)
        check_eq(r["tasks"], 2, "receipt after asking again")
        h.cli(d.client, "--timeout", "300", "erase-user", user)  # nothing left: still a pass
        check("erasure still running" in h.extra_logs[-1][1],
              "no word of a long erasure: %r" % h.extra_logs[-1][1])
        rc, _, js = h.cli(d.client, "--timeout", "300", "erase-user", other, "--timeout-s", "1",
                          json_out=True, expect_rc=4)
        check_eq(js["error"]["code"], "timeout", "bounded wait")
        check("run erase-user again" in js["error"]["message"], "message %r" % js)
    finally:
        del os.environ["HSQ_CLIENT_SLOW_MS"]
    for k in ("t1", "t3"):
        status(h, d, ids[k], expect_rc=3)
    check(not os.path.exists(os.path.join(d.blob_dir, ids["prefix"])), "prefix gone")
    # The erasure the client gave up on completes by itself.
    harness.poll_until(lambda: not os.path.exists(os.path.join(d.blob_dir, ids["other_prefix"])),
                       tmo(20), "abandoned erasure completed")
    d.stop()


# ---------------------------------------------------------------- export

def mode_export(h):
    d = h.start_hsqd(extra_sets=SETS)
    c = h.client(d.client)
    w = h.fake_worker(d.worker)
    w.ready()
    user, other = "dana-91ab", "erin-55cd"
    p1, cl, bgimg = make_png(40, 50, 11), make_png(20, 20, 12), make_png(30, 30, 13)
    t1 = raw_submit(c, user, [p1, cl], ["portrait", "clothing"])
    _, outs1 = fake_done(h, d, w, d.blob_dir, seed=11, nout=2)
    po = make_png(40, 50, 21)
    o1 = raw_submit(c, other, [po], ["portrait"])
    _, outs_o = fake_done(h, d, w, d.blob_dir, seed=21)
    t2 = raw_submit(c, user, [make_png(40, 50, 14), bgimg], ["portrait", "background"])
    want = {t1: ([p1, cl], outs1), t2: ([make_png(40, 50, 14), bgimg], [])}

    tar_path = h.path("dana.tar")
    _, _, r = h.cli(d.client, "export-user", user, "-o", tar_path, json_out=True)
    check_eq((r["tasks"], r["images"]), (2, 6), "export counts")
    check(not os.path.exists(tar_path + ".tmp"), "temp archive left behind")
    with tarfile.open(tar_path) as tf:
        names = tf.getnames()
        check_eq(names[-1], "manifest.json", "manifest comes last")
        man = json.loads(tf.extractfile("manifest.json").read())
        blobs = {n: tf.extractfile(n).read() for n in names if n != "manifest.json"}
    check_eq(man["user"], user, "manifest user")
    check_eq(sorted(t["id"] for t in man["tasks"]), sorted(want), "manifest task ids")
    for t in man["tasks"]:
        ins, outs = want[t["id"]]
        check_eq(len(t["inputs"]), len(ins), "inputs of %d" % t["id"])
        for i, (mi, data) in enumerate(zip(t["inputs"], ins)):
            check_eq(blobs[mi["file"]], data, "input %d of task %d bytes" % (i, t["id"]))
            check(mi["file"].endswith("-%s.png" % mi["kind"]), "input file name %s" % mi["file"])
        check_eq(len(t["outputs"]), len(outs), "outputs of %d" % t["id"])
        for i, (mo, data) in enumerate(zip(t["outputs"], outs)):
            check_eq(blobs[mo["file"]], data, "output %d of task %d bytes" % (i, t["id"]))
            check_eq(mo["sha256"], sha256(data).hex(), "output sha256 in manifest")
        check("retention" in t and "uploads" in t["retention"], "retention dates in manifest")
    everything = open(tar_path, "rb").read()
    for data in [po] + outs_o:
        check(data not in everything, "the archive holds another user's image")
    check(other.encode() not in everything, "the archive names another user")
    check(str(o1).encode() + b"/" not in everything, "the archive names another user's task")

    # The Python module yields the same.
    import hsq_client
    with hsq_client.Client(d.client, timeout_ms=int(tmo(10) * 1000)) as pc:
        got = list(pc.export_user(user))
        check_eq(sorted(t["id"] for t, _ in got), sorted(want), "python export ids")
        for t, _frames in got:
            ins, outs = want[t["id"]]
            check_eq([i["data"] for i in t["inputs"]], ins, "python export inputs")
            check_eq([o["data"] for o in t["outputs"]], outs, "python export outputs")
        rec = pc.erase_user(user)
        check_eq(rec["tasks"], 2, "python erase receipt")
        check_eq(list(pc.export_user(user)), [], "export after erase")
        p = pc.purge(dry_run=True)
        check_eq(p["dry_run"], True, "python purge dry run")
    _, _, r = h.cli(d.client, "export-user", user, "-o", tar_path, json_out=True)
    check_eq(r["tasks"], 0, "CLI export after erase")
    check_eq(status(h, d, o1)["state"], "succeeded", "other user after erase")


# ---------------------------------------------------------------- crash

def wait_dead(proc, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not proc.alive():
            return True
        time.sleep(0.02)
    return False


def cli_bg(h, endpoint, *args):
    """Start `hsq` without waiting for it (its daemon is about to die)."""
    return subprocess.Popen([harness.cli_path(), "-e", endpoint] + list(args),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)


def cli_bg_end(p):
    if p.poll() is None:
        p.kill()
    p.wait()


def start_faulty(h, data_dir, fault, sets=None):
    os.environ["HSQ_FAULT"] = fault
    try:
        return h.start_hsqd(extra_sets=dict(SETS, **(sets or {})), data_dir=data_dir,
                            name="hsqd-fault")
    finally:
        del os.environ["HSQ_FAULT"]


def crash_erase(h, fault, n):
    data = h.path("crash-%d" % n)
    d = h.start_hsqd(extra_sets=SETS, data_dir=data)
    user, other = "frank-%d" % n, "gina-%d" % n
    ids = populate(h, d, user, other, with_leased=False)
    d.stop()
    d = start_faulty(h, data, fault)
    p = cli_bg(h, d.client, "erase-user", user)
    died = wait_dead(d.proc, tmo(5))
    cli_bg_end(p)
    if died:
        d.kill9()
    else:  # the point may come in the shutdown's last turn instead
        died = d.proc.stop(expect_rc=None) == -9
    d = h.start_hsqd(extra_sets=SETS, data_dir=data)
    gone = os.path.exists(os.path.join(d.blob_dir, ids["prefix"]))
    if fault in ("erase.after_blobs", "erase.records"):
        check(died, "hsqd did not die at %s" % fault)
        # The ledger finishes the erasure on restart, without a new request:
        # records first, then (the reaper, a turn or more later) the files.
        harness.poll_until(lambda: h.cli(d.client, "status", ids["t1"], expect_rc=None)[0] == 3,
                           tmo(10), "erasure completed after restart")
        harness.poll_until(lambda: not os.path.exists(os.path.join(d.blob_dir, ids["prefix"])),
                           tmo(10), "prefix gone after restart")
    js = fsck(h, data)
    check_eq((js["orphans"], js["dangling"]), (0, 0),
             "fsck after SIGKILL at %s (died=%s, prefix there=%s)" % (fault, died, gone))
    # The client would ask again: the erasure is then complete either way.
    h.cli(d.client, "erase-user", user, json_out=True)
    for k in ("t1", "t3"):
        status(h, d, ids[k], expect_rc=3)
    check(not os.path.exists(os.path.join(d.blob_dir, ids["prefix"])), "prefix gone")
    check_eq(status(h, d, ids["o1"])["state"], "succeeded", "other user intact")
    d.stop()
    return died


def mode_crash(h):
    Clock(h)
    n = 0
    crash_erase(h, "erase.after_blobs", n)
    n += 1
    crash_erase(h, "erase.records", n)
    kills = 0
    for k in range(2, 6):  # @1 is the first turn, at startup
        n += 1
        kills += crash_erase(h, "turn.before_commit@%d" % k, n)
    check(kills >= 1, "turn.before_commit never fired during an erase")

    for k in (1, 3, 8):
        crash_purge(h, k)
    crash_reap(h)
    crash_recovery(h)


def six_finished(h, data, user):
    """Six finished tasks of `user` (a portrait and a clothing reference
    each, one output) in a fresh data dir; hsqd stopped after. Their ids."""
    d = h.start_hsqd(extra_sets=SETS, data_dir=data)
    c = h.client(d.client)
    w = h.fake_worker(d.worker)
    w.ready()
    tasks = []
    for i in range(6):
        tasks.append(raw_submit(c, user, [make_png(40, 50, i), make_png(20, 20, i)],
                                ["portrait", "clothing"]))
        fake_done(h, d, w, d.blob_dir, seed=i)
    w.close()
    d.stop()
    return tasks


def restart_purge_check(h, data, tasks, what):
    """Restart hsqd on data after a crash, purge (the reply waits for the
    reaper), then: no orphans or dangling records, every task a tombstone,
    the blob tree empty."""
    d = h.start_hsqd(extra_sets=SETS, data_dir=data)
    purge(h, d)
    js = fsck(h, data)
    check_eq((js["orphans"], js["dangling"]), (0, 0), "fsck after %s and a restart" % what)
    for t in tasks:
        check_eq(status(h, d, t)["state"], "expired", "task %d after %s" % (t, what))
    check_eq(files_under(os.path.join(d.blob_dir, "u")), [], "blob tree after %s" % what)
    d.stop()


def crash_purge(h, k):
    """SIGKILL at sweep.entry@k during a purge of six expired tasks."""
    clock = Clock(h)
    data = h.path("crash-purge-%d" % k)
    tasks = six_finished(h, data, "hal")
    clock.set(31 * DAY)
    # The continuous sweeper off: the purge request is what sweeps.
    d = start_faulty(h, data, "sweep.entry@%d" % k, {"sweep_batch": "0"})
    p = cli_bg(h, d.client, "purge")
    died = wait_dead(d.proc, tmo(5))
    cli_bg_end(p)
    check(died, "hsqd did not die at sweep.entry@%d" % k)
    d.kill9()
    # Files go before their records' commit: right after the kill, records
    # may name files that are gone while their index entry is still due;
    # the first pass after the restart deletes again and commits.
    before = fsck(h, data)
    harness.log("fsck right after SIGKILL at sweep.entry@%d: %r" % (k, before))
    restart_purge_check(h, data, tasks, "SIGKILL at sweep.entry@%d" % k)
    clock.set(0)


def crash_reap(h):
    """SIGKILL in hsqd's reaper thread, after it deleted a batch's files and
    before their directories were synced or the records changed."""
    clock = Clock(h)
    data = h.path("crash-reap")
    tasks = six_finished(h, data, "ivy")
    # The continuous sweeper on (the default): it hands the files to the
    # reaper, which dies once it has deleted them. Ready first, then the
    # clock moves and a request makes the turn that sweeps.
    d = start_faulty(h, data, "reap.deleted")
    clock.set(31 * DAY)
    p = cli_bg(h, d.client, "stats")
    died = wait_dead(d.proc, tmo(5))
    cli_bg_end(p)
    check(died, "hsqd did not die at reap.deleted")
    d.kill9()
    before = fsck(h, data)
    harness.log("fsck right after SIGKILL at reap.deleted: %r" % before)
    check_eq(before["orphans"], 0, "orphans right after SIGKILL in the reaper")
    restart_purge_check(h, data, tasks, "SIGKILL at reap.deleted")
    clock.set(0)


def crash_recovery(h):
    """Uploads of submits that never committed (hsqd writes a submit's
    photos before the transaction that records it) are found after a crash
    by the janitor's walk, which runs while hsqd serves: SIGKILL inside that
    walk, restart, and every such upload goes, nothing committed does, and a
    purge waits for the walk. A clean stop leaves no gap in the task ids."""
    data = h.path("crash-recovery")
    d = h.start_hsqd(extra_sets=SETS, data_dir=data)
    c = h.client(d.client)
    a = raw_submit(c, "jo", [make_png(30, 30, 1)], ["portrait"])
    d.kill9()
    [a_key] = [k for k in files_under(os.path.join(d.blob_dir, "u")) if k.split("/")[1] == str(a)]
    user_dir = os.path.join(d.blob_dir, "u", a_key.split("/")[0])
    # What a crash leaves: uploads of the next ids, never recorded.
    orphans = [os.path.join(user_dir, str(a + i), "in-0") for i in (1, 2, 3)]
    for i, path in enumerate(orphans):
        harness.write_blob(d.blob_dir, os.path.relpath(path, d.blob_dir), make_png(9, 9, i))
    # SIGKILL in the janitor, after its first deletion (it starts once hsqd
    # is ready, so readiness does not wait for the walk).
    d = start_faulty(h, data, "recover.deleted")
    check(wait_dead(d.proc, tmo(10)), "hsqd did not die at recover.deleted")
    d.kill9()
    left = [p for p in orphans if os.path.exists(p)]
    check_eq(len(left), 2, "uploads left after SIGKILL at recover.deleted")
    # The range set aside before that walk is still recorded: this start
    # finishes it; a purge answers only after the walk (it counts the
    # uploads when it had to wait for them).
    d = h.start_hsqd(extra_sets=SETS, data_dir=data)
    purge(h, d)
    check_eq([p for p in orphans if os.path.exists(p)], [], "uploads after the restart")
    c = h.client(d.client)
    check_eq(c.status(a)["state"], "queued", "the committed task")
    check(os.path.exists(os.path.join(d.blob_dir, "u", a_key)), "the committed task's photo")
    b = raw_submit(c, "jo", [make_png(30, 30, 2)], ["portrait"])
    check(b > a + 3, "task %d took an id of the recovery range (after %d)" % (b, a))
    js = fsck(h, data)
    check_eq((js["orphans"], js["dangling"]), (0, 0), "fsck after recovery")
    d.stop()
    d = h.start_hsqd(extra_sets=SETS, data_dir=data)
    c = h.client(d.client)
    t = raw_submit(c, "jo", [make_png(30, 30, 3)], ["portrait"])
    check_eq(t, b + 1, "first id after a clean stop")
    d.stop()


# ---------------------------------------------------------------- diskfull

def mode_diskfull(h):
    clock = Clock(h)
    mnt = h.path("small")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise harness.Skip("cannot mount a small tmpfs (%s): no way to fill a disk here"
                           % r.stderr.decode().strip())
    try:
        data = os.path.join(mnt, "data")
        # sweep_batch 0: the continuous sweeper would otherwise race the
        # purge request for the due entries (any loop turn sweeps).
        # (journal: two 2 MiB files, preallocated, so they fit the 24 MiB)
        # (inline_max: the small submits below keep their inputs in LMDB)
        d = h.start_hsqd(extra_sets=dict(SETS, map_size="16MiB", map_max="16MiB",
                                         sweep_batch="0", journal="2MiB", inline_max="16KiB"),
                         data_dir=data)
        c = h.client(d.client)
        w = h.fake_worker(d.worker)
        w.ready()
        big = os.urandom(512 * 1024)
        n = 0
        for i in range(6):
            raw_submit(c, "ivy", [make_png(40, 50, i) + big], ["portrait"])
            fake_done(h, d, w, d.blob_dir, seed=i)
            n += 1
        # Fill what is left.
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        try:
            with open(filler, "ab") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        st = os.statvfs(mnt)
        check(st.f_bavail * st.f_frsize < 64 * 1024, "disk not full: %d bytes free"
              % (st.f_bavail * st.f_frsize))
        r = c.call("submit", {"user": "ivy", "inputs": [{"kind": "portrait"}],
                              "outputs": [{"width": 24, "height": 30, "format": "png"}]},
                   [make_png(40, 50, 99) + big])
        check(r.error is not None, "a submit on a full disk was accepted")
        # Its input was written off the loop (staged) and failed there: the
        # error is the disk's, and no temp file is left.
        check_eq(r.code, "disk_full", "a submit on a full disk (%r)" % (r.error,))
        check_eq([f for f in files_under(d.blob_dir) if ".tmp." in f], [],
                 "temp files after a submit on a full disk")
        # Small inputs stay inline in LMDB. hsqd acknowledges them after the
        # journal append and LMDB writes their pages later, so data.mdb keeps
        # room allocated ahead: a submit that room cannot cover is refused
        # (disk_full) before its ack, and hsqd goes on serving.
        acked, codes = [], {}
        for i in range(3000):
            r = c.call("submit", {"user": "zed%d" % (i % 7), "inputs": [{"kind": "portrait"}],
                                  "outputs": [{"width": 24, "height": 30, "format": "png"}]},
                       [make_png(40, 50, 1000 + i) + os.urandom(6000)])
            if r.error is None:
                acked.append(r["task"])
            else:
                codes[r.code] = codes.get(r.code, 0) + 1
                if sum(codes.values()) >= 20:
                    break
        harness.log("small submits on a full disk: %d acked, refused %r" % (len(acked), codes))
        check(set(codes) <= {"disk_full"}, "small submits on a full disk: %r" % codes)
        check(codes.get("disk_full", 0) > 0, "3000 small submits all fit a full disk")
        h.cli(d.client, "stats")
        for t in acked:
            check_eq(c.status(t)["state"], "queued", "an acknowledged submit on a full disk")
        clock.set(8 * DAY)
        harness.log("before purge: free=%d files=%r" % (st.f_bavail * st.f_frsize,
                                                         files_under(d.blob_dir)))
        js = purge(h, d)
        harness.log("after purge: %r free=%d files=%r" % (js, os.statvfs(mnt).f_bavail * st.f_frsize,
                                                           files_under(d.blob_dir)))
        check(js["inputs"] >= n and js["bytes"] > n * len(big), "purge on a full disk: %r" % js)
        st2 = os.statvfs(mnt)
        check(st2.f_bavail > st.f_bavail, "purge freed no space")
        # With space again, data.mdb gets its room back: submits go through.
        r = c.call("submit", {"user": "zed0", "inputs": [{"kind": "portrait"}],
                              "outputs": [{"width": 24, "height": 30, "format": "png"}]},
                   [make_png(40, 50, 5000)])
        check(r.error is None, "a small submit after the purge freed space: %r" % (r.error,))
        w.close()
        d.stop()
    finally:
        subprocess.run(["umount", "-l", mnt])


# ---------------------------------------------------------------- offline

def mode_offline(h):
    clock = Clock(h)
    d = h.start_hsqd(extra_sets=SETS)
    c = h.client(d.client)
    w = h.fake_worker(d.worker)
    w.ready()
    t = raw_submit(c, "jack", [make_png(40, 50, 1), make_png(20, 20, 2)], ["portrait", "clothing"])
    fake_done(h, d, w, d.blob_dir)
    prefix = blob_prefix_of(d, c.status(t)["outputs"][0]["key"]) + "%d/" % t
    w.close()
    ep = d.client
    d.stop()
    # Without a data dir, an unreachable daemon is an error (exit 4).
    h.cli(ep, "--timeout", "500", "purge", expect_rc=4)
    clock.set(31 * DAY)
    _, out, _ = h.cli(ep, "purge", "--data-dir", d.data_dir)
    check("hsqd not running: purged %s directly" % d.data_dir in out, "offline notice: %r" % out)
    check_eq(task_files(d, prefix), [], "files after an offline purge")
    # Idempotent, and --json says offline.
    _, _, js = h.cli(ep, "purge", "--data-dir", d.data_dir, json_out=True)
    check_eq((js["offline"], js["tasks"]), (True, 0), "second offline purge")
    js = fsck(h, d.data_dir)
    check_eq((js["orphans"], js["dangling"]), (0, 0), "fsck after offline purge")
    d2 = h.start_hsqd(extra_sets=SETS, data_dir=d.data_dir)
    check_eq(status(h, d2, t)["state"], "expired", "task after offline purge")
    # While hsqd runs, its store is read-only to others (it holds the
    # journal's lock): fsck reads, fsck --repair is refused and says why.
    js = fsck(h, d.data_dir)
    check_eq((js["orphans"], js["dangling"]), (0, 0), "fsck while hsqd runs")
    rc, _, _ = h.cli("ipc:///nonexistent", "fsck", "--data-dir", d.data_dir, "--repair",
                     expect_rc=1)
    err = h.extra_logs[-1][1] if h.extra_logs else ""
    check("hsqd is running on it" in err, "fsck --repair while hsqd runs said %r" % err[-300:])
    d2.stop()
    corrupt_recovery_record(h, d.data_dir)


def corrupt_recovery_record(h, data):
    """A corrupt start-up recovery record (written with mdb_load): hsqd will
    not start and says what to run; hsq fsck --repair deletes the upload it
    stood for as an orphan, then the record; hsqd starts again."""
    rec = h.path("recover.txt")
    with open(rec, "w") as f:
        f.write("VERSION=3\nformat=print\ntype=btree\nHEADER=END\n recover\n short\nDATA=END\n")
    subprocess.run(["mdb_load", "-s", "meta", "-f", rec, os.path.join(data, "db")], check=True)
    lost = "u/%s/999999/in-0" % ("f" * 32)
    harness.write_blob(os.path.join(data, "blobs"), lost, make_png(9, 9, 1))
    r = subprocess.run([harness.hsqd_path(), "--data-dir", data, "--insecure",
                        "--set", "client_endpoint=tcp://127.0.0.1:*",
                        "--set", "worker_endpoint=tcp://127.0.0.1:*",
                        "--set", "events_endpoint=tcp://127.0.0.1:*"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=tmo(20),
                       stdin=subprocess.DEVNULL)
    err = r.stderr.decode("utf-8", "replace")
    check(r.returncode != 0, "hsqd started on a corrupt recovery record")
    check("recovery record" in err and "hsq fsck --data-dir %s --repair" % data in err,
          "hsqd's message: %r" % err[-600:])
    js = fsck(h, data)
    check_eq((js["recover_corrupt"], js["orphans"]), (True, 1), "fsck on the corrupt record")
    js = fsck(h, data, repair=True)
    check_eq(js["repaired"], 2, "fsck --repair: the orphan and the record")
    check(not os.path.exists(os.path.join(data, "blobs", lost)), "lost upload still there")
    js = fsck(h, data)
    check_eq((js["recover_corrupt"], js["clean"]), (False, True), "fsck after the repair")
    d = h.start_hsqd(extra_sets=SETS, data_dir=data)
    d.stop()


# ---------------------------------------------------------------- asked

def mode_asked(h):
    """A submit asks for shorter retention through the CLI and the Python
    module; hsqd keeps min(policy, asked): shorter works, longer is capped."""
    clock = Clock(h)
    d = h.start_hsqd(extra_sets=SETS)
    w = h.fake_worker(d.worker)
    w.ready()
    photo = h.path("me.png")
    with open(photo, "wb") as f:
        f.write(make_png(40, 50, 7))
    _, _, js = h.cli(d.client, "submit", "--user", "dora", "--keep-uploads", "1s",
                     "--keep-outputs", "1h", photo, json_out=True)
    ta, _ = fake_done(h, d, w, d.blob_dir, seed=7)
    check_eq(ta, js["task"], "CLI task leased")
    sa = status(h, d, ta)
    end = sa["updated_ms"]
    check_eq(sa["uploads_expire_ms"], end + 1000, "asked: photos a second after the end")
    check_eq(sa["expires_ms"], end + 3600 * 1000, "asked: outputs an hour after the end")

    sys.path.insert(0, os.path.join(harness.SRC, "client", "python"))
    import hsq_client
    py = hsq_client.Client(d.client, timeout_ms=int(tmo(10) * 1000))
    r = py.submit("dora", photos=[(make_png(40, 50, 8), "me2.png")],
                  outputs=[{"width": 24, "height": 30, "format": "png"}],
                  keep_outputs_s=100 * 86400)
    tb, _ = fake_done(h, d, w, d.blob_dir, seed=8)
    check_eq(tb, r["task"], "Python task leased")
    sb = status(h, d, tb)
    check_eq(sb["expires_ms"], sb["updated_ms"] + 30 * DAY, "asked longer: capped at the policy")
    check_eq(sb["uploads_expire_ms"], sb["updated_ms"] + 7 * DAY, "not asked: the policy")
    py.close()

    # The sweeper deletes A's photo a second after the end, not before.
    prefix = blob_prefix_of(d, sa["outputs"][0]["blob"]) + "%d/" % ta
    clock.at(end + 2000)
    purge(h, d)
    check([f for f in task_files(d, prefix) if "/in-" in f] == [],
          "A's photo gone after its asked second: %r" % task_files(d, prefix))


MODES = {"classes": mode_classes, "erase": mode_erase, "export": mode_export,
         "crash": mode_crash, "diskfull": mode_diskfull, "offline": mode_offline,
         "asked": mode_asked}

if __name__ == "__main__":
    if MODE not in MODES:
        sys.stderr.write("usage: test_retention.py %s\n" % "|".join(MODES))
        sys.exit(2)
    harness.run(MODES[MODE], name="retention_" + MODE)
