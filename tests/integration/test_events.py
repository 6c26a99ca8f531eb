"""Task events on hsqd's PUB socket.

A subscriber for user X (topic "xavier") sees queued -> leased -> succeeded
for X's task, in order, with non-decreasing at_ms, and nothing of user Y
("yolanda"); a subscriber for Y sees Y's task and nothing of X. SUB topics
match by prefix, so the raw X subscriber also gets "xavier2" (documented);
the Python module's Events("xavier") filters those out.

Subscriptions are confirmed before the test by submitting (and cancelling)
probe tasks until every subscriber has seen one; the end of the stream is
confirmed by a marker task whose events follow everything else on the same
connection.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, check_eq, fail, tmo  # noqa: E402


def collapse(states):
    out = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return out


class PyEvents:
    """Adapter: the Python module's Events with the recv_event interface."""

    def __init__(self, ev):
        self.ev = ev

    def recv(self, timeout):
        e = self.ev.recv(timeout_ms=int(timeout * 1000))
        return None if e is None else (e["user"], e)


class RawSub:
    def __init__(self, sock):
        self.sock = sock

    def recv(self, timeout):
        return harness.recv_event(self.sock, timeout)


def collect_until(sub, task, state, timeout, what):
    """Events from sub until (task, state) is seen; returns all of them."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        e = sub.recv(max(0.0, left))
        if e is None:
            fail("%s: no %s event for task %d within %.0fs; got %r"
                 % (what, state, task, timeout, got[-10:]))
        got.append(e)
        if e[1]["task"] == task and e[1]["state"] == state:
            return got


def sync(c, user, subs):
    """Submit+cancel probe tasks of `user` until every sub saw one event."""
    deadline = time.monotonic() + tmo(20)
    pending = set(range(len(subs)))
    probes = []
    while pending:
        if time.monotonic() > deadline:
            fail("subscriptions for %s not established within %.0fs" % (user, tmo(20)))
        r = c.submit(user, key="probe-%d" % len(probes))
        probes.append(r["task"])
        end = time.monotonic() + 0.2
        while pending and time.monotonic() < end:
            for i in list(pending):
                e = subs[i].recv(0.02)
                if e and e[0] == user:
                    pending.discard(i)
    for p in probes:
        c.ok("cancel", {"task": p})
    # Let every sub read past the probes' own events: a cancelled event for
    # the last probe is the last thing published for them.
    for s in subs:
        collect_until(s, probes[-1], "cancelled", tmo(10), "sync of %s" % user)
    return set(probes)


def main(h):
    sys.path.insert(0, harness.python_client_dir())
    import hsq_client

    d = h.start_hsqd(transport="tcp")
    c = h.client(d.client)
    sx = RawSub(h.subscriber(d.events, ["xavier"]))
    sy = RawSub(h.subscriber(d.events, ["yolanda"]))
    pev = hsq_client.Events("xavier", endpoint=d.events, context=h.ctx)
    h.sockets.append(pev)
    px = PyEvents(pev)
    probes = sync(c, "xavier", [sx, px])
    probes |= sync(c, "yolanda", [sy])

    img = harness.make_png(20, 20, seed=8)
    out = [{"width": 10, "height": 12, "format": "jpeg"}]
    ty = c.submit("yolanda", images=[img], outputs=out)["task"]
    tx2 = c.submit("xavier2", images=[img], outputs=out)["task"]
    tx = c.submit("xavier", images=[img], outputs=out)["task"]
    h.start_worker(d, name="w")
    for t in (ty, tx2, tx):
        check_eq(c.wait_terminal(t)["state"], "succeeded", "task %d" % t)
    # Marker: its events come after every event above on each connection.
    marker_x = c.submit("xavier", key="marker")["task"]
    marker_y = c.submit("yolanda", key="marker")["task"]

    ex = collect_until(sx, marker_x, "queued", tmo(20), "xavier raw")
    ep = collect_until(px, marker_x, "queued", tmo(20), "xavier python")
    ey = collect_until(sy, marker_y, "queued", tmo(20), "yolanda raw")

    def states_of(events, task):
        return [e["state"] for _, e in events if e["task"] == task]

    # X's subscriber: X's task queued -> leased -> succeeded, nothing of Y.
    for name, evs in (("raw", ex), ("python", ep)):
        check_eq(collapse(states_of(evs, tx)), ["queued", "leased", "succeeded"],
                 "%s subscriber: states of xavier's task %d" % (name, tx))
        at = [e["at_ms"] for _, e in evs if e["task"] == tx]
        check(at == sorted(at), "%s: at_ms not monotonic: %r" % (name, at))
        prog = [e["progress"] for _, e in evs if e["task"] == tx]
        check_eq(prog[-1], 100, "%s: progress of the succeeded event" % name)
        users = set(u for u, _ in evs)
        check("yolanda" not in users, "%s xavier subscriber received yolanda's events" % name)
        tasks = set(e["task"] for _, e in evs)
        check(ty not in tasks, "%s xavier subscriber saw yolanda's task" % name)
    check_eq(set(u for u, _ in ep), {"xavier"}, "users seen by the Python Events('xavier')")
    check_eq(set(u for u, _ in ex), {"xavier", "xavier2"},
             "users seen by the raw SUB on prefix 'xavier'")
    check_eq(collapse(states_of(ex, tx2)), ["queued", "leased", "succeeded"],
             "raw subscriber: states of xavier2's task")

    # Y's subscriber: Y's task, nothing of X.
    check_eq(collapse(states_of(ey, ty)), ["queued", "leased", "succeeded"],
             "yolanda subscriber: states of yolanda's task %d" % ty)
    check_eq(set(u for u, _ in ey), {"yolanda"}, "users seen by the yolanda subscriber")
    for _, e in ey:
        check(e["task"] in (ty, marker_y) or e["task"] in probes,
              "yolanda subscriber saw task %d" % e["task"])


harness.run(main)
