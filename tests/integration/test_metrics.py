"""Prometheus metrics: hsqd with metrics_listen=127.0.0.1:0 reports the URL on
--ready-fd ("metrics=http://127.0.0.1:PORT"). Checks:
  * /metrics passes a strict text-format check here, and `promtool check
    metrics` when promtool is installed (Debian's prometheus package);
  * the values move with the queue: submits raise hsq_submitted_total, the
    queue depth, the oldest queued age and the submit-ack histogram; a real
    worker drains the queue and fills the queue-wait and run histograms;
  * /healthz and /readyz answer 200, unknown paths 404;
  * a submit whose input is being written off the loop shows in
    hsq_submits_staging(_bytes) until it is recorded; with staging_max 0
    no input is staged (a stage would kill that hsqd: HSQ_FAULT).
"""
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, fail, poll_until, tmo  # noqa: E402

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(r"^(%s)(\{(?:%s(?:,%s)*)?\})? (\S+)$" % (NAME, LABEL, LABEL))
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_float(s):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.match(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$", s):
        raise ValueError(s)
    return float(s)


def check_exposition(text):
    """Strict text format 0.0.4: HELP/TYPE once per family, before its
    samples; valid names, labels and values; no duplicate series; families
    contiguous; counters end in _total; histograms have cumulative buckets
    ending at +Inf equal to _count, and a _sum. Returns {series: value}."""
    check(text.endswith("\n"), "exposition must end with a newline")
    types, helps, series, seen_families = {}, {}, {}, []
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d %r" % (n, line)
        check(line.strip() != "" or False, "%s: empty line" % where)
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) (%s) (.*)$" % NAME, line)
            check(m is not None, "%s: bad comment" % where)
            kind, fam, rest = m.groups()
            if kind == "TYPE":
                check(rest in TYPES, "%s: unknown type" % where)
                check(fam not in types, "%s: second TYPE for %s" % (where, fam))
                types[fam] = rest
            else:
                check(fam not in helps, "%s: second HELP for %s" % (where, fam))
                check(rest.strip() != "", "%s: empty HELP" % where)
                helps[fam] = rest
            if fam != current:
                check(fam not in seen_families, "%s: family %s is not contiguous" % (where, fam))
                seen_families.append(fam)
                current = fam
            continue
        m = SAMPLE.match(line)
        check(m is not None, "%s: not a valid sample" % where)
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        try:
            v = parse_float(value)
        except ValueError:
            fail("%s: bad value" % where)
        fam = name
        for suf in ("_bucket", "_sum", "_count"):
            if name.endswith(suf) and types.get(name[: -len(suf)]) == "histogram":
                fam = name[: -len(suf)]
        check(fam in types and fam in helps, "%s: sample before HELP/TYPE of %s" % (where, fam))
        check(fam == current, "%s: sample outside its family block" % where)
        key = name + labels
        check(key not in series, "%s: duplicate series" % where)
        series[key] = v
    for fam, t in types.items():
        if t == "counter":
            check(fam.endswith("_total"), "counter %s must end in _total" % fam)
        if t == "histogram":
            buckets = [(k, v) for k, v in series.items() if k.startswith(fam + "_bucket{")]
            check(buckets, "histogram %s has no buckets" % fam)
            les = [parse_float(re.search(r'le="([^"]+)"', k).group(1)) for k, _ in buckets]
            vals = [v for _, v in buckets]
            check(les == sorted(les) and les[-1] == float("inf"),
                  "histogram %s: le bounds not increasing to +Inf: %r" % (fam, les))
            check(vals == sorted(vals), "histogram %s: buckets not cumulative" % fam)
            check_eq(vals[-1], series.get(fam + "_count"), "%s +Inf bucket vs _count" % fam)
            check(fam + "_sum" in series, "histogram %s has no _sum" % fam)
    return series


def get(url, expect=200):
    try:
        with urllib.request.urlopen(url, timeout=tmo(5)) as r:
            code, body, ctype = r.status, r.read().decode(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        code, body, ctype = e.code, e.read().decode(), ""
    check_eq(code, expect, "HTTP status of %s (body %r)" % (url, body[:200]))
    return body, ctype


def scrape(base):
    body, ctype = get(base + "/metrics")
    check(ctype.startswith("text/plain") and "version=0.0.4" in ctype,
          "metrics Content-Type: %r" % ctype)
    return check_exposition(body), body


def promtool(h, body):
    tool = shutil.which("promtool")
    if not tool:
        harness.log("promtool not installed: strict checker only")
        return False
    r = subprocess.run([tool, "check", "metrics"], input=body.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=tmo(30))
    out = (r.stdout + r.stderr).decode()
    check(r.returncode == 0 and out.strip() == "",
          "promtool check metrics failed (rc %d):\n%s" % (r.returncode, out))
    return True


def wait_metric(base, pred, what):
    last = {}

    def probe():
        last["s"] = scrape(base)[0]
        return pred(last["s"])
    try:
        poll_until(probe, tmo(10), what, interval=0.1)
        return last["s"]
    except harness.TestFailure as e:
        fail("%s; last scrape: %r" % (e, {k: v for k, v in last.get("s", {}).items()
                                           if "bucket" not in k}))


def main(h):
    d = h.start_hsqd(transport="tcp", extra_sets={"metrics_listen": "127.0.0.1:0",
                                                 "max_waits": "1"})
    base = d.endpoints.get("metrics")
    check(base and re.match(r"^http://127\.0\.0\.1:\d+$", base) and not base.endswith(":0"),
          "ready fd should report metrics=http://127.0.0.1:PORT, got %r" % d.endpoints)

    s, body = scrape(base)
    used_promtool = promtool(h, body)
    check_eq(s.get('hsq_build_info{version="0.1.0",protocol="1"}'), 1.0, "build info")
    check_eq(s["hsq_submitted_total"], 0.0, "submitted at start")
    check(s["hsq_lmdb_map_size_bytes"] > 0 and s["hsq_lmdb_map_used_bytes"] > 0,
          "LMDB map metrics: %r" % s)
    get(base + "/healthz")
    get(base + "/readyz")
    get(base + "/nope", expect=404)
    # The janitor walks the (empty) blob store once hsqd is ready; a new
    # store has nothing to recover.
    s = wait_metric(base, lambda s: s["hsq_janitor_walks_total"] >= 1, "the janitor's first walk")
    check_eq(s["hsq_recovery_pending"], 0.0, "recovery pending on a new store")
    check_eq((s["hsq_scrub_pending"], s["hsq_scrub_pages_total"]), (0.0, 0.0), "no scrub yet")
    check_eq(s['hsq_janitor_removed_total{kind="tmp"}'], 0.0, "temp files removed")
    check(s["hsq_janitor_last_walk_seconds"] >= 0, "last walk seconds: %r" % s)

    n = 7
    c = h.client(d.client)
    ids = []
    for i in range(n):
        r = c.submit("u%d" % (i % 3))
        check(r.error is None, "submit: %r" % r.meta)
        ids.append(r["task"])
    s = wait_metric(base, lambda s: s["hsq_submitted_total"] == n, "hsq_submitted_total == %d" % n)
    check_eq(s['hsq_queue_depth{class="normal"}'], float(n), "normal queue depth")
    check_eq(s['hsq_tasks{state="queued"}'], float(n), "queued tasks")
    check_eq(s["hsq_submit_ack_seconds_count"], float(n), "submit-ack observations")
    s = wait_metric(base, lambda s: s["hsq_oldest_queued_age_seconds"] > 0,
                    "oldest queued age > 0")

    h.start_worker(d, name="w1")
    for t in ids:
        check_eq(c.wait_terminal(t)["state"], "succeeded", "task %d" % t)
    s = wait_metric(base, lambda s: s["hsq_completed_total"] == n and
                    s['hsq_tasks{state="succeeded"}'] == n, "completed == %d" % n)
    check_eq(s['hsq_queue_depth{class="normal"}'], 0.0, "depth after the drain")
    check_eq(s["hsq_oldest_queued_age_seconds"], 0.0, "oldest age after the drain")
    check_eq(s["hsq_queue_wait_seconds_count"], float(n), "queue-wait observations")
    check_eq(s["hsq_run_seconds_count"], float(n), "run observations")
    check(s["hsq_run_seconds_sum"] >= 0 and s["hsq_queue_wait_seconds_sum"] > 0,
          "histogram sums: %r" % s)
    check_eq(s['hsq_workers{state="idle"}'] + s['hsq_workers{state="busy"}'], 1.0,
             "one worker connected")
    # Nobody subscribed: every event was counted (the histograms above saw
    # them) and none was encoded or sent.
    check_eq(s['hsq_events_total{delivery="published"}'], 0.0, "events published unwatched")
    check(s['hsq_events_total{delivery="unwatched"}'] >= 3 * n,
          "unwatched events: %r" % s['hsq_events_total{delivery="unwatched"}'])
    check_eq(s["hsq_event_subscriptions"], 0.0, "subscriptions at start")
    # A subscriber for u1: its events are published, u2's still are not.
    sub = h.subscriber(d.events, ["u1"])
    s = wait_metric(base, lambda s: s["hsq_event_subscriptions"] == 1, "the u1 subscription")
    unwatched0 = s['hsq_events_total{delivery="unwatched"}']
    t1 = c.submit("u1")["task"]
    t2 = c.submit("u2")["task"]
    for t in (t1, t2):
        check_eq(c.wait_terminal(t)["state"], "succeeded", "task %d" % t)
    seen = []

    def got_u1_done():
        while sub.poll(0):
            seen.append(sub.recv_multipart())
        return any(f[0] == b"u1" and b"succeeded" in f[1] for f in seen)
    poll_until(got_u1_done, tmo(10), "u1's succeeded event on the subscriber")
    check(all(f[0] == b"u1" for f in seen), "the u1 subscriber got: %r" % [f[0] for f in seen])
    s = wait_metric(base, lambda s: s['hsq_events_total{delivery="published"}'] >= 3,
                    "u1's events published")
    check(s['hsq_events_total{delivery="unwatched"}'] >= unwatched0 + 3,
          "u2's events unwatched: %r -> %r" % (unwatched0, s['hsq_events_total{delivery="unwatched"}']))
    # Long-polls: one parks (waiting for a change of a finished task), the
    # next is refused at max_waits 1; neither gauge counts a check in flight.
    check_eq(s["hsq_waits_parked"], 0.0, "waits parked at start")
    check_eq(s["hsq_output_checks_inflight"], 0.0, "output checks in flight when idle")
    w1 = c.send("wait", {"task": t1, "since": "succeeded", "timeout_ms": 60000})
    s = wait_metric(base, lambda s: s["hsq_waits_parked"] == 1, "one wait parked")
    check_eq(c.err("wait", {"task": t2, "since": "succeeded", "timeout_ms": 60000},
                   "unavailable").code, "unavailable", "a second wait at max_waits 1")
    wait_metric(base, lambda s: s["hsq_waits_refused_total"] == 1, "the refusal counted")
    harness.log("parked wait rid %d left to time out" % w1)
    # The subscriber leaves: libzmq passes the unsubscription up.
    h.sockets.remove(sub)
    sub.close(0)
    wait_metric(base, lambda s: s["hsq_event_subscriptions"] == 0, "the subscription dropped")
    # An erasure frees LMDB pages; the scrub that follows zeroes them.
    h.cli(d.client, "erase-user", "u0", json_out=True)
    s = wait_metric(base, lambda s: s["hsq_scrub_pending"] == 0 and s["hsq_scrub_pages_total"] > 0,
                    "the free-page scrub after an erasure")
    _, body = scrape(base)
    promtool(h, body)
    get(base + "/healthz")
    harness.log("promtool used: %s" % used_promtool)
    d.stop()
    staging(h)


def start_faulty(h, fault, sets):
    os.environ["HSQ_FAULT"] = fault
    try:
        return h.start_hsqd(transport="tcp", extra_sets=sets)
    finally:
        del os.environ["HSQ_FAULT"]


def staging(h):
    sets = {"metrics_listen": "127.0.0.1:0", "inline_max": "1KiB"}
    img = harness.make_png(64, 64, seed=3)
    check(len(img) > 1024, "the test image is above inline_max")
    body = {"user": "st", "inputs": [{"kind": "portrait", "name": "p.png"}],
            "outputs": [{"width": 32, "height": 32, "format": "jpeg"}]}
    # Held on the pool for 1.5 s once written.
    d = start_faulty(h, "stage.run~1500", sets)
    base = d.endpoints["metrics"]
    c = h.client(d.client)
    rid = c.send("submit", body, [img])
    s = wait_metric(base, lambda s: s["hsq_submits_staging"] == 1, "one submit staging")
    check(s["hsq_submits_staging_bytes"] > len(img), "staging bytes: %r" % s)
    check_eq(s["hsq_tasks{state=\"queued\"}"], 0.0, "queued tasks while the input is written")
    r = c.recv_rid(rid, timeout=tmo(10))
    check(r.error is None and r.meta.get("created"), "the staged submit: %r" % (r.meta,))
    s = wait_metric(base, lambda s: s["hsq_submits_staging"] == 0, "the stage back")
    check_eq(s["hsq_submits_staging_bytes"], 0.0, "staging bytes once recorded")
    c.close()
    d.stop()
    # staging_max 0: written in the turn; a stage would SIGKILL this hsqd.
    d = start_faulty(h, "stage.run", dict(sets, staging_max="0"))
    c = h.client(d.client)
    r = c.ok("submit", body, [img])
    check(r.meta.get("created"), "a submit with staging_max 0: %r" % (r.meta,))
    check_eq(c.status(r.meta["task"])["state"], "queued", "its task")
    c.close()
    d.stop()


if __name__ == "__main__":
    harness.run(main)
