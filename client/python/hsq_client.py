"""hsq_client - a small Python client for hsqd, over pyzmq and msgpack.

It speaks the wire format of schemas/PROTOCOL.md (the same one the C codec in
schemas/wire.c encodes): a request is a multipart message [meta, frames...]
where meta is a msgpack map {"v": 1, "rid": n, "op": name, ...body}, and the
reply carries the same rid with "re" instead of "op" (and "error" on failure).

    from hsq_client import Client, HsqError, HsqTimeout
    with Client("ipc:///run/hsq/client.sock", timeout_ms=10000) as c:
        t = c.submit("alice", photos=[(open("me.jpg", "rb").read(), "me.jpg")],
                     outputs=[{"width": 1024, "height": 1280, "format": "jpeg"}],
                     key="order-17")
        task, timed_out = c.wait(t["task"], timeout_ms=60000)
        if task["state"] == "succeeded":
            task, images = c.result(t["task"])

A Client is not thread-safe: use one per thread. Every call waits at most
timeout_ms (wait adds its own wait time); on a timeout the socket is closed
(linger 0) and reconnected, so a late reply is never taken for the answer to
the next request, and HsqTimeout is raised. A request that timed out may still
have been executed: submit with a key and resubmit to be safe.

Task dicts use the wire's field names, with the optional ones filled in:
id, user, key, state, prio, attempts, created_ms, updated_ms, expires_ms,
progress, stage, err_code (wire name or None), err_msg, n_inputs and
outputs (list of {key, size, sha256 (hex str), width, height, format}).
"""

import hashlib
import os
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1
DEFAULT_ENDPOINT = "ipc:///run/hsq/client.sock"
DEFAULT_EVENTS = "ipc:///run/hsq/events.sock"
ENDPOINT_ENV = "HSQ_ENDPOINT"
EVENTS_ENV = "HSQ_EVENTS_ENDPOINT"
DEFAULT_TIMEOUT_MS = 10000
MAX_WAIT_MS = 60000
MAX_INPUTS = 8
MAX_OUTPUTS = 16
MAX_LIST = 100
MAX_FRAME_BYTES = 50 * 1024 * 1024

STATES = ("queued", "leased", "succeeded", "failed", "cancelled", "expired")
TERMINAL = frozenset(("succeeded", "failed", "cancelled", "expired"))
PRIOS = ("high", "normal", "low")
BG_KINDS = ("solid", "gradient", "vignette", "reference")
MAX_BACKGROUNDS = 4
MAX_STYLES = 4
STYLE_KNOBS = ("retouch", "tone", "sharpen", "clothing")
FORMATS = ("jpeg", "png")


class HsqError(Exception):
    """An error reply from hsqd (code is the wire name, e.g. "not_found"),
    or a local failure with one of the same names."""

    def __init__(self, code, message):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message


class HsqTimeout(HsqError):
    """No reply within the timeout (the socket has been reset)."""

    def __init__(self, message, code="timeout"):
        super().__init__(code, message)


class HsqUnavailable(HsqTimeout):
    """The request could not be handed to hsqd in time (nothing listening)."""

    def __init__(self, message):
        super().__init__(message, code="unavailable")


def _task(t):
    """Normalise a wire task map: absent optional fields get their defaults."""
    out = dict(t)
    out.setdefault("key", "")
    out.setdefault("stage", "")
    out.setdefault("err_code", None)
    out.setdefault("err_msg", "")
    outs = []
    for o in out.get("outputs", []):
        o = dict(o)
        o["sha256"] = bytes(o["sha256"]).hex()
        outs.append(o)
    out["outputs"] = outs
    # settings and info travel as nested maps: msgpack hands them over decoded
    out["settings"] = dict(out.get("settings") or {})
    out["info"] = dict(out.get("info") or {})
    return out


def _rgb(v, what):
    if (not isinstance(v, (list, tuple)) or len(v) != 3
            or not all(isinstance(c, int) and 0 <= c <= 255 for c in v)):
        raise HsqError("invalid_argument", "%s must be [r, g, b], each 0..255" % what)
    return [int(c) for c in v]


def _settings(backgrounds, styles, dpi, has_background):
    """The submit's settings map, as schemas/PROTOCOL.md section 5 specifies;
    None when everything is the default (the key is then left out)."""
    st = {}
    if backgrounds:
        if len(backgrounds) > MAX_BACKGROUNDS:
            raise HsqError("invalid_argument", "at most %d backgrounds" % MAX_BACKGROUNDS)
        bgs = []
        for i, b in enumerate(backgrounds):
            kind = b.get("kind")
            if kind not in BG_KINDS:
                raise HsqError("invalid_argument", "backgrounds[%d].kind must be one of %s"
                               % (i, ", ".join(BG_KINDS)))
            m = {"kind": kind}
            if "color" in b:
                m["color"] = _rgb(b["color"], "backgrounds[%d].color" % i)
            if "color2" in b:
                m["color2"] = _rgb(b["color2"], "backgrounds[%d].color2" % i)
            if b.get("blur_px"):
                if not 0 <= int(b["blur_px"]) <= 64:
                    raise HsqError("invalid_argument", "backgrounds[%d].blur_px must be 0..64" % i)
                m["blur_px"] = int(b["blur_px"])
            if kind == "reference" and not has_background:
                raise HsqError("invalid_argument",
                               "a 'reference' background needs the background photo")
            bgs.append(m)
        st["backgrounds"] = bgs
    if styles:
        if len(styles) > MAX_STYLES:
            raise HsqError("invalid_argument", "at most %d styles" % MAX_STYLES)
        sts = []
        for i, y in enumerate(styles):
            m = {}
            if y.get("name"):
                name = str(y["name"])
                if len(name.encode()) > 32:
                    raise HsqError("invalid_argument", "styles[%d].name is over 32 bytes" % i)
                m["name"] = name
            for k in STYLE_KNOBS:
                v = int(y.get(k, 0) or 0)
                if not 0 <= v <= 100:
                    raise HsqError("invalid_argument", "styles[%d].%s must be 0..100" % (i, k))
                if v:
                    m[k] = v
            sts.append(m)
        st["styles"] = sts
    if dpi:
        if not 72 <= int(dpi) <= 1200:
            raise HsqError("invalid_argument", "dpi must be 0 or 72..1200")
        st["dpi"] = int(dpi)
    return st or None


def _curve(sock, curve):
    if curve:
        server_key, public_key, secret_key = curve
        sock.curve_serverkey = _b(server_key)
        sock.curve_publickey = _b(public_key)
        sock.curve_secretkey = _b(secret_key)


def _b(s):
    return s.encode() if isinstance(s, str) else s


def _image(item, kind, index):
    """(bytes, name) or bytes -> wire input map and frame."""
    if isinstance(item, (tuple, list)):
        data, name = item
    else:
        data, name = item, None
    data = bytes(data) if not isinstance(data, (bytes, memoryview)) else data
    if len(data) == 0:
        raise HsqError("invalid_argument", "%s image %d is empty" % (kind, index))
    if len(data) > MAX_FRAME_BYTES:
        raise HsqError("too_large", "%s image %d is %d bytes (limit %d)"
                       % (kind, index, len(data), MAX_FRAME_BYTES))
    m = {"kind": kind, "frame": index}
    if name:
        m["name"] = name
    return m, data


class Client:
    """Request/reply client for hsqd's client endpoint (ZeroMQ DEALER).

    endpoint: None -> $HSQ_ENDPOINT or DEFAULT_ENDPOINT. curve: optional
    (server_public, client_public, client_secret) Z85 keys for tcp://."""

    def __init__(self, endpoint=None, timeout_ms=DEFAULT_TIMEOUT_MS, curve=None, context=None):
        self.endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
        self.timeout_ms = timeout_ms if timeout_ms and timeout_ms > 0 else DEFAULT_TIMEOUT_MS
        self._curve = curve
        self._ctx = context or zmq.Context.instance()
        self._rid = 0
        self._sock = None
        self._open()

    def _open(self):
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        # Queue only to a completed connection, so "nobody there" is seen.
        s.setsockopt(zmq.IMMEDIATE, 1)
        _curve(s, self._curve)
        s.connect(self.endpoint)
        self._sock = s

    def _reset(self):
        if self._sock is not None:
            self._sock.close(linger=0)
        self._sock = None
        self._open()

    def close(self):
        """Close the socket; the client cannot be used afterwards."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, op, body, frames=(), extra_ms=0):
        """Send one request and return (reply meta dict, reply frames)."""
        if self._sock is None:
            raise HsqError("invalid_argument", "client is closed")
        self._rid += 1
        rid = self._rid
        parts = [pack_request(rid, op, body)] + list(frames)
        budget = self.timeout_ms + extra_ms
        deadline = _now_ms() + budget
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLOUT)
        if not poller.poll(max(0, deadline - _now_ms())):
            self._reset()
            raise HsqUnavailable("cannot reach hsqd at %s within %d ms (is it running?)"
                                 % (self.endpoint, self.timeout_ms))
        try:
            self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._reset()
            raise HsqUnavailable("cannot send to hsqd at %s" % self.endpoint) from None
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        while True:
            left = deadline - _now_ms()
            if left <= 0 or not poller.poll(left):
                self._reset()
                raise HsqTimeout("no reply from hsqd at %s within %d ms" % (self.endpoint, budget))
            got = parse_reply(self._sock.recv_multipart(), rid, op)
            if got is not None:
                return got

    # ---- operations ----

    def submit(self, user, photos, clothing=None, background=None, outputs=None, key=None,
               prio="normal", prompt=None, backgrounds=None, styles=None, dpi=0,
               keep_uploads_s=0, keep_outputs_s=0):
        """Queue a job. photos: list of (bytes, name) or bytes; clothing and
        background likewise (optional). outputs: list of {"width", "height",
        "format" ("jpeg"|"png"), "quality" (optional, 1-100)}; default one
        1024x1280 jpeg. backgrounds: up to 4 of {"kind": "solid" | "gradient"
        | "vignette" | "reference", "color": [r, g, b], "color2": [r, g, b],
        "blur_px": 0..64}; styles: up to 4 of {"name", "retouch", "tone",
        "sharpen", "clothing"} (each 0..100); dpi: 0 or 72..1200. Every
        background x style x output is one image, at most 16 (PROTOCOL.md
        section 5). keep_uploads_s / keep_outputs_s: shorter retention than
        the policy, in seconds after the task ends (0 = the policy; 1 = delete
        the photos as soon as the headshots are ready); never longer.
        Returns {"task": id, "state": str, "created": bool}."""
        if prio not in PRIOS:
            raise HsqError("invalid_argument", "prio must be one of %s" % ", ".join(PRIOS))
        images = [(p, "portrait") for p in photos]
        if clothing is not None:
            images.append((clothing, "clothing"))
        if background is not None:
            images.append((background, "background"))
        if not photos or len(images) > MAX_INPUTS:
            raise HsqError("invalid_argument", "a job needs 1 to %d images (at least one photo)"
                           % MAX_INPUTS)
        inputs, frames = [], []
        for i, (item, kind) in enumerate(images):
            m, data = _image(item, kind, i)
            inputs.append(m)
            frames.append(data)
        if outputs is None:
            outputs = [{"width": 1024, "height": 1280, "format": "jpeg"}]
        if not 1 <= len(outputs) <= MAX_OUTPUTS:
            raise HsqError("invalid_argument", "a job needs 1 to %d outputs" % MAX_OUTPUTS)
        outs = []
        for o in outputs:
            w = {"width": int(o["width"]), "height": int(o["height"]),
                 "format": o.get("format", "jpeg")}
            if o.get("quality"):
                w["quality"] = int(o["quality"])
            outs.append(w)
        body = {"user": user, "inputs": inputs, "outputs": outs}
        settings = _settings(backgrounds, styles, dpi, background is not None)
        if settings:
            combos = (max(1, len(settings.get("backgrounds", ())))
                      * max(1, len(settings.get("styles", ()))) * len(outs))
            if combos > MAX_OUTPUTS:
                raise HsqError("too_large", "%d outputs (backgrounds x styles x sizes); at most %d"
                               % (combos, MAX_OUTPUTS))
            body["settings"] = settings
        if key:
            body["key"] = key
        if prio != "normal":
            body["prio"] = prio
        if prompt:
            body["prompt"] = prompt
        for name, v in (("keep_uploads_s", keep_uploads_s), ("keep_outputs_s", keep_outputs_s)):
            if v:
                if not 0 < int(v) < 2**32:
                    raise HsqError("invalid_argument", "%s must be 1..2^32-1 seconds" % name)
                body[name] = int(v)
        rep, _ = self._call("submit", body, frames)
        return {"task": rep["task"], "state": rep["state"], "created": rep["created"]}

    def _task_op(self, op, task, user):
        body = {"task": int(task)}
        if user:
            body["user"] = user
        rep, _ = self._call(op, body)
        return _task(rep["task"])

    def status(self, task, user=None):
        """The task dict. With user, the task must be that user's (else not_found)."""
        return self._task_op("status", task, user)

    def wait(self, task, timeout_ms=30000, since=None, user=None):
        """Block until the task is terminal (or, with since=STATE, until its
        state differs from STATE), at most timeout_ms (<= 60000). Returns
        (task dict, timed_out)."""
        if not 0 <= timeout_ms <= MAX_WAIT_MS:
            raise HsqError("invalid_argument", "timeout_ms must be 0..%d" % MAX_WAIT_MS)
        body = {"task": int(task)}
        if user:
            body["user"] = user
        if timeout_ms:
            body["timeout_ms"] = int(timeout_ms)
        if since:
            if since not in STATES:
                raise HsqError("invalid_argument", "unknown state %r" % since)
            body["since"] = since
        rep, _ = self._call("wait", body, extra_ms=timeout_ms)
        return _task(rep["task"]), bool(rep["timed_out"])

    def result(self, task, user=None):
        """(task dict, [bytes per output]) of a succeeded task. Each output's
        size and sha256 are checked (HsqError "corrupt" on a mismatch)."""
        body = {"task": int(task)}
        if user:
            body["user"] = user
        rep, frames = self._call("result", body)
        t = _task(rep["task"])
        if len(frames) != len(t["outputs"]):
            raise HsqError("corrupt", "result lists %d outputs but carries %d frames"
                           % (len(t["outputs"]), len(frames)))
        data = [bytes(f) for f in frames]
        for i, (o, d) in enumerate(zip(t["outputs"], data)):
            if len(d) != o["size"] or hashlib.sha256(d).hexdigest() != o["sha256"]:
                raise HsqError("corrupt", "output %d of task %d does not match its metadata"
                               % (i, t["id"]))
        return t, data

    def cancel(self, task, user=None):
        """Cancel a task that has not finished; returns the task dict."""
        return self._task_op("cancel", task, user)

    def requeue(self, task, user=None):
        """Put a failed or cancelled task back in the queue; returns the task dict."""
        return self._task_op("requeue", task, user)

    def list(self, user, limit=20, before=0):
        """One page of user's tasks, newest first: {"tasks": [...], "next": id}
        (next 0 = no more; pass it as before= for the next page)."""
        if not 1 <= limit <= MAX_LIST:
            raise HsqError("invalid_argument", "limit must be 1..%d" % MAX_LIST)
        body = {"user": user}
        if limit != 20:
            body["limit"] = int(limit)
        if before:
            body["before"] = int(before)
        rep, _ = self._call("list", body)
        return {"tasks": [_task(t) for t in rep["tasks"]], "next": rep["next"]}

    def stats(self):
        """Queue and worker counters, as the wire's stats map."""
        rep, _ = self._call("stats", {})
        return {k: v for k, v in rep.items() if k not in ("v", "rid", "re")}

    # ---- retention and privacy (operators) ----

    SLOW_MS = 60000  # added to the timeout of purge and erase (they delete files)

    def purge(self, dry_run=False, limit=5000):
        """One retention pass now, repeated while hsqd says more entries are
        due (a dry run asks once, for up to 1000000 entries). Returns the
        summed counts: {inputs, outputs, tasks, tombstones, cancelled, bytes,
        errors, dry_run, more}."""
        if not 1 <= limit <= 1000000:
            raise HsqError("invalid_argument", "limit must be 1..1000000")
        keys = ("inputs", "outputs", "tasks", "tombstones", "cancelled", "bytes", "errors")
        total = dict.fromkeys(keys, 0)
        while True:
            body = {"limit": 1000000 if dry_run else int(limit)}
            if dry_run:
                body["dry_run"] = True
            rep, _ = self._call("purge", body, extra_ms=self.SLOW_MS)
            for k in keys:
                total[k] += rep[k]
            total["dry_run"] = bool(rep["dry_run"])
            total["more"] = bool(rep["more"])
            if dry_run or not rep["more"]:
                return total

    def erase_user(self, user):
        """Erase every task and image of user, queued and running tasks
        included; hsqd answers once it is done (ledger first, so a crash
        cannot lose the request). Idempotent. Returns the receipt {tasks,
        active, bytes, at_ms, subject}: subject is the keyed hash the audit
        log names, never the user id."""
        rep, _ = self._call("erase", {"user": user}, extra_ms=self.SLOW_MS)
        return {k: rep[k] for k in ("tasks", "active", "bytes", "at_ms", "subject")}

    def export_user(self, user):
        """Generator over user's tasks, oldest first, one request per task:
        yields (task dict, frames) where the task dict carries "prompt" and
        "inputs" ([{kind, name, size, data or None}]) and each output in
        task["outputs"] gains "data" (bytes, or None when retention deleted
        it); frames is the raw list of binary frames. Output sizes and
        sha256 are checked (HsqError "corrupt")."""
        after = 0
        while True:
            body = {"user": user}
            if after:
                body["after"] = after
            rep, frames = self._call("export", body)
            if not rep["has_task"]:
                return
            frames = [bytes(f) for f in frames]
            t = _task(rep["task"])
            t["prompt"] = rep.get("prompt", "")
            ins = []
            for i in rep.get("inputs", []):
                f = i.get("frame")
                d = frames[f] if f is not None and f < len(frames) else None
                if d is not None and len(d) != i["size"]:
                    raise HsqError("corrupt", "input of task %d has the wrong size" % t["id"])
                ins.append({"kind": i["kind"], "name": i.get("name", ""), "size": i["size"],
                            "data": d})
            t["inputs"] = ins
            out_frames = rep.get("out_frames", [])
            for k, o in enumerate(t["outputs"]):
                f = out_frames[k] if k < len(out_frames) else None
                d = frames[f] if f is not None and f < len(frames) else None
                if d is not None and (len(d) != o["size"] or
                                      hashlib.sha256(d).hexdigest() != o["sha256"]):
                    raise HsqError("corrupt", "output %d of task %d does not match its metadata"
                                   % (k, t["id"]))
                o["data"] = d
            yield t, frames
            after = rep.get("next", 0)
            if not after:
                return

    # ---- credits (operators) ----

    def credits(self, user, grant=0):
        """Add grant credits to user's balance (negative takes credits back,
        never below what unfinished tasks reserved: HsqError "conflict"), or
        with grant=0 only read it. Returns {user, balance, reserved}; what the
        user may still spend is balance - reserved."""
        body = {"user": user}
        if grant:
            body["grant"] = int(grant)
        rep, _ = self._call("credits", body)
        return {"user": rep["user"], "balance": rep["balance"], "reserved": rep["reserved"]}


class Events:
    """Task events of one user from hsqd's events (XPUB) socket.

    endpoint: None -> $HSQ_EVENTS_ENDPOINT or DEFAULT_EVENTS. Events are
    best-effort: dropped when a subscriber is slow, and not even encoded
    until hsqd has read the subscription (a turn or so after connecting).
    Use them to refresh a page, and Client.status/wait for the truth."""

    def __init__(self, user, endpoint=None, curve=None, context=None):
        self.user = user
        self._topic = user.encode()
        self.endpoint = endpoint or os.environ.get(EVENTS_ENV) or DEFAULT_EVENTS
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        _curve(self._sock, curve)
        self._sock.setsockopt(zmq.SUBSCRIBE, self._topic)
        self._sock.connect(self.endpoint)

    def recv(self, timeout_ms=None):
        """The next event dict (task, user, state, progress, stage, at_ms), or
        None when timeout_ms passes first (None: wait forever)."""
        deadline = None if timeout_ms is None else _now_ms() + timeout_ms
        while True:
            left = None if deadline is None else max(0, deadline - _now_ms())
            if not self._sock.poll(left):
                return None
            msg = self._sock.recv_multipart()
            # SUB matches by prefix: "bob" also receives "bobby"'s events.
            if len(msg) != 2 or msg[0] != self._topic:
                continue
            try:
                ev = msgpack.unpackb(msg[1], raw=False)
            except Exception:
                continue
            if not isinstance(ev, dict) or ev.get("op") != "event" or ev.get("user") != self.user:
                continue
            ev = {k: v for k, v in ev.items() if k not in ("v", "rid", "op")}
            ev.setdefault("stage", "")
            return ev

    def __iter__(self):
        while True:
            yield self.recv()

    def close(self):
        self._sock.close(linger=0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def pack_request(rid, op, body):
    """The meta frame of a request: body (a dict of wire fields) plus the
    envelope. Optional fields are left out rather than sent as defaults."""
    meta = {"v": PROTOCOL_VERSION, "rid": rid, "op": op}
    meta.update(body)
    return msgpack.packb(meta, use_bin_type=True)


def parse_reply(parts, rid, op):
    """(reply meta dict, binary frames) for the reply to request rid/op, None
    when the message is not that reply (another rid, or undecodable), and
    HsqError for an error reply or a reply that breaks the protocol."""
    try:
        rep = msgpack.unpackb(parts[0], raw=False)
    except Exception:
        return None
    if not isinstance(rep, dict) or rep.get("rid") != rid:
        return None  # a reply to an abandoned request
    if rep.get("v") != PROTOCOL_VERSION:
        raise HsqError("bad_version", "reply has protocol version %r" % rep.get("v"))
    err = rep.get("error")
    if err is not None:
        raise HsqError(err.get("code", "internal"), err.get("message", ""))
    if rep.get("re") != op:
        raise HsqError("bad_request", "hsqd answered %s with %r" % (op, rep.get("re")))
    return rep, parts[1:]


def _now_ms():
    return int(time.monotonic() * 1000)
