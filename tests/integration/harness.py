"""harness - shared helpers for hsq's integration tests.

Every test file starts the real binaries (hsqd, hsq-worker, hsq) as child
processes on a private temp directory, talks to them over real ZeroMQ
sockets, and exits 0 (pass), 1 (fail, with a message on stderr) or 77
(skip). Use it as

    import harness
    def main(h):            # h is a Harness
        d = h.start_hsqd(transport="tcp")
        ...
    harness.run(main)

Rules it enforces (tests/STYLE "Tests"):
  * no fixed ports: hsqd binds tcp://127.0.0.1:* (or ipc:// paths in the temp
    dir) and reports its endpoints on --ready-fd; we read them from the pipe;
  * no sleeps for readiness: waiting is done by blocking on a socket or pipe
    with a timeout, or by a bounded polling loop on task state;
  * teardown sends SIGTERM, then SIGKILL after a timeout; a process stopped
    that way must exit 0 (SIGKILL means the test fails);
  * every child's stderr (and every CLI run's stderr) is scanned for
    sanitizer reports, which fail the test.

Environment: HSQ_BUILD (build dir, default <src>/build-it), HSQ_SRC (source
dir, default two levels up from this file), HSQ_HSQD / HSQ_WORKER / HSQ_CLI
(binaries; default under HSQ_BUILD), HSQ_IT_SLOW (multiplier for
every timeout, e.g. 3 under ASan/valgrind), HSQ_IT_KEEP=1 (keep the temp dir
and print its path), HSQ_IT_VERBOSE=1 (print progress).
"""

import hashlib
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib

import msgpack
import zmq

SRC = os.environ.get("HSQ_SRC") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
BUILD = os.environ.get("HSQ_BUILD") or os.path.join(SRC, "build-it")
SLOW = float(os.environ.get("HSQ_IT_SLOW", "1") or "1")
KEEP = os.environ.get("HSQ_IT_KEEP") == "1"
VERBOSE = os.environ.get("HSQ_IT_VERBOSE") == "1"

EXIT_SKIP = 77
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                     "ERROR: ThreadSanitizer", "WARNING: ThreadSanitizer",
                     "ERROR: MemorySanitizer")

TERMINAL = ("succeeded", "failed", "cancelled", "expired")


class TestFailure(Exception):
    """A check failed; the message says what was expected and observed."""


class Skip(Exception):
    pass


def skip(msg):
    sys.stderr.write("SKIP: %s\n" % msg)
    sys.exit(EXIT_SKIP)


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def check_eq(got, want, what):
    if got != want:
        raise TestFailure("%s: expected %r, got %r" % (what, want, got))


def log(msg):
    if VERBOSE:
        sys.stderr.write("[it %.3f] %s\n" % (time.monotonic(), msg))
        sys.stderr.flush()


def tmo(seconds):
    """A timeout in seconds, scaled for slow (sanitizer) builds."""
    return seconds * SLOW


def now_ms():
    return int(time.monotonic() * 1000)


# ---------------------------------------------------------------- binaries

def find_binary(name, subdirs):
    for d in subdirs:
        p = os.path.join(BUILD, d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def hsqd_path():
    return os.environ.get("HSQ_HSQD") or find_binary("hsqd", ["daemon", "."])


def worker_path():
    return os.environ.get("HSQ_WORKER") or find_binary("hsq-worker", ["worker", "."])


def cli_path():
    return os.environ.get("HSQ_CLI") or find_binary("hsq", ["client", "."])


def python_client_dir():
    return os.path.join(SRC, "client", "python")


def require(path, name):
    """The binaries are part of the build: a missing one is a failure."""
    if not path:
        fail("%s not found under %s (build it first: ninja -C %s)" % (name, BUILD, BUILD))
    return path


# ---------------------------------------------------------------- images

def make_png(width, height, seed=0):
    """A small real PNG (8-bit RGB, a gradient with a pattern), stdlib only."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter: none
        for x in range(width):
            rows += bytes(((x * 255 // max(1, width - 1) + seed * 37) & 0xFF,
                           (y * 255 // max(1, height - 1) + seed * 11) & 0xFF,
                           ((x ^ y) * 7 + seed) & 0xFF))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b""))


def sample_portrait(seed=0):
    """samples/astronaut.png from the source tree (scripts/samples): a real
    face, for jobs that must succeed now that the worker runs a face detector
    (a synthetic make_png image has no face: the job fails with no_face).
    seed > 0 appends a private ancillary chunk so that uploads differ byte-wise
    while decoding to the same picture. Skips (77) when samples/ is missing."""
    path = os.path.join(SRC, "samples", "astronaut.png")
    if not os.path.exists(path):
        skip("samples/astronaut.png missing (run scripts/samples)")
    with open(path, "rb") as f:
        data = f.read()
    if seed:
        body = struct.pack(">I", seed)
        c = struct.pack(">I", len(body)) + b"hsQt" + body
        c += struct.pack(">I", zlib.crc32(b"hsQt" + body) & 0xFFFFFFFF)
        data = data[:33] + c + data[33:]  # after IHDR
    return data


def models_dir():
    """The models the worker needs (scripts/models); skips (77) without them."""
    d = os.path.join(SRC, "models")
    if not os.path.exists(os.path.join(d, "face_detection_short_range.tflite")):
        skip("models/ missing (run scripts/models)")
    return d


def png_size(data):
    if len(data) < 33 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", data[16:24])
    # The IHDR CRC must hold, and the stream must end with IEND.
    if struct.unpack(">I", data[29:33])[0] != zlib.crc32(data[12:29]) & 0xFFFFFFFF:
        return None
    if not data.endswith(b"IEND\xaeB`\x82"):
        return None
    return w, h


def jpeg_size(data):
    """(width, height) from the first SOFn marker, or None if not a JPEG."""
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seglen = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
                return None
            return w, h
        i += 2 + seglen
    return None


def image_info(data):
    """("png"|"jpeg", width, height), or None when the bytes are neither."""
    s = png_size(data)
    if s:
        return ("png",) + s
    s = jpeg_size(data)
    if s:
        return ("jpeg",) + s
    return None


def check_image(data, fmt, width, height, what):
    info = image_info(data)
    check(info is not None, "%s: not a valid PNG or JPEG (%d bytes, starts %r)"
          % (what, len(data), bytes(data[:8])))
    check_eq(info, (fmt, width, height), "%s: (format, width, height)" % what)


def sha256(data):
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------- processes

class Proc:
    """One child process with its stderr in a file."""

    def __init__(self, h, name, argv, pass_fds=(), env=None, role=None):
        self.h = h
        self.name = name
        self.role = role
        self.argv = argv
        self.err_path = os.path.join(h.logdir, "%s.stderr" % name)
        self.out_path = os.path.join(h.logdir, "%s.stdout" % name)
        self._err = open(self.err_path, "ab")
        self._out = open(self.out_path, "ab")
        e = dict(os.environ)
        if env:
            e.update(env)
        log("start %s: %s" % (name, " ".join(argv)))
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                  stderr=self._err, pass_fds=pass_fds, env=e,
                                  start_new_session=True)
        self.pid = self.p.pid
        self.expect_killed = False
        self.stopped = False
        self.termed = False

    def alive(self):
        return self.p.poll() is None

    def stderr_text(self):
        try:
            with open(self.err_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill9(self):
        """SIGKILL (part of a test: a crash). Waits for the process to die."""
        self.expect_killed = True
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.p.wait(timeout=tmo(10))
        self._close_files()
        self.stopped = True
        log("killed %s (pid %d)" % (self.name, self.pid))

    def term(self):
        """Send SIGTERM once (a second one means "exit now" to hsq-worker)."""
        if not self.termed and self.alive():
            self.termed = True
            os.kill(self.pid, signal.SIGTERM)

    def stop(self, timeout=None, expect_rc=0):
        """SIGTERM, then SIGKILL after timeout. Returns the exit code;
        raises TestFailure when it was not expect_rc (None: any)."""
        if self.stopped:
            return self.p.returncode
        timeout = tmo(15) if timeout is None else timeout
        killed = False
        if self.alive():
            self.term()
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(timeout=tmo(10))
                killed = True
        self._close_files()
        self.stopped = True
        rc = self.p.returncode
        log("stopped %s rc=%s" % (self.name, rc))
        if killed:
            fail("%s did not exit within %.0fs of SIGTERM (SIGKILLed)" % (self.name, timeout))
        if expect_rc is not None and rc != expect_rc:
            fail("%s exited with %s after SIGTERM, expected %s; stderr tail:\n%s"
                 % (self.name, rc, expect_rc, tail(self.stderr_text())))
        return rc

    def _close_files(self):
        for f in (self._err, self._out):
            try:
                f.close()
            except OSError:
                pass


def stop_all(procs, timeout=None):
    """SIGTERM every running process in procs at once, then stop() each
    (same checks as Proc.stop). Failures are raised together after all
    were stopped."""
    for p in procs:
        if not p.stopped:
            p.term()
    problems = []
    for p in procs:
        try:
            p.stop(timeout=timeout)
        except TestFailure as e:
            problems.append(str(e))
    if problems:
        raise TestFailure("\n".join(problems))


def tail(text, n=25):
    lines = text.rstrip("\n").split("\n")
    return "\n".join("    " + l for l in lines[-n:])


def scan_sanitizer(name, text):
    for m in SANITIZER_MARKERS:
        i = text.find(m)
        if i >= 0:
            start = text.rfind("\n", 0, max(0, i - 200)) + 1
            return "%s: sanitizer report (%s):\n%s" % (name, m, text[start:start + 3000])
    return None


class Hsqd:
    """A running hsqd. endpoints: {"client", "worker", "events"}."""

    def __init__(self, proc, data_dir, endpoints, sets):
        self.proc = proc
        self.data_dir = data_dir
        self.blob_dir = os.path.join(data_dir, "blobs")
        self.endpoints = endpoints
        self.sets = sets

    @property
    def client(self):
        return self.endpoints["client"]

    @property
    def worker(self):
        return self.endpoints["worker"]

    @property
    def events(self):
        return self.endpoints["events"]

    def stop(self, **kw):
        return self.proc.stop(**kw)

    def kill9(self):
        self.proc.kill9()


class Harness:
    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="hsq-it-%s-" % name)
        self.logdir = os.path.join(self.tmp, "logs")
        os.makedirs(self.logdir)
        self.procs = []
        self.ctx = zmq.Context()
        self.sockets = []
        self._n = {}
        self.extra_logs = []  # (name, text) of CLI runs, scanned at teardown
        self.deferred = []    # failures reported at the end (the test goes on)
        self._worker_help = None

    def fail_later(self, msg):
        """Record a failure but let the test continue with its other checks."""
        sys.stderr.write("FAIL (deferred): %s\n" % msg)
        self.deferred.append(msg)

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def _uniq(self, base):
        n = self._n.get(base, 0)
        self._n[base] = n + 1
        return base if n == 0 else "%s.%d" % (base, n)

    # -- hsqd --

    def start_hsqd(self, transport="tcp", extra_sets=None, data_dir=None, name="hsqd",
                   ready_timeout=None):
        """Start hsqd on data_dir (a new temp dir when None) and wait for it to
        report its endpoints on the ready fd. transport: "tcp" (127.0.0.1,
        kernel-chosen ports) or "ipc" (sockets under the data dir)."""
        exe = require(hsqd_path(), "hsqd")
        if data_dir is None:
            data_dir = self.path(self._uniq("data"))
        os.makedirs(data_dir, exist_ok=True)
        if transport == "tcp":
            eps = {k: "tcp://127.0.0.1:*" for k in ("client", "worker", "events")}
        elif transport == "ipc":
            sockdir = os.path.join(data_dir, "sock")
            eps = {k: "ipc://%s/%s.sock" % (sockdir, k) for k in ("client", "worker", "events")}
        else:
            raise ValueError(transport)
        sets = {"client_endpoint": eps["client"], "worker_endpoint": eps["worker"],
                "events_endpoint": eps["events"], "log_level": "info"}
        sets.update(extra_sets or {})
        rfd, wfd = os.pipe()
        argv = [exe, "--data-dir", data_dir, "--ready-fd", str(wfd)]
        if transport == "tcp" and "curve_secret_key_file" not in sets:
            argv.append("--insecure")  # plaintext tcp is refused without it
        for k, v in sets.items():
            argv += ["--set", "%s=%s" % (k, v)]
        try:
            proc = Proc(self, self._uniq(name), argv, pass_fds=(wfd,), role="hsqd")
        finally:
            os.close(wfd)
        self.procs.append(proc)
        data = b""
        deadline = time.monotonic() + (ready_timeout or tmo(30))
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    fail("%s did not report readiness within the timeout; stderr:\n%s"
                         % (proc.name, tail(proc.stderr_text())))
                r, _, _ = select.select([rfd], [], [], left)
                if not r:
                    continue
                chunk = os.read(rfd, 4096)
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(rfd)
        got = {}
        for line in data.decode().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                got[k] = v
        if not got.get("client") or not got.get("worker"):
            try:
                rc = proc.p.wait(timeout=tmo(2))
            except subprocess.TimeoutExpired:
                rc = None
            fail("%s closed its ready fd without endpoints (got %r, exit %r); stderr:\n%s"
                 % (proc.name, data, rc, tail(proc.stderr_text())))
        for k in ("client", "worker", "events"):
            check(":*" not in got.get(k, ""), "ready fd reported an unresolved endpoint %r" % got)
        log("%s ready: %r" % (proc.name, got))
        return Hsqd(proc, data_dir, got, sets)

    # -- hsq-worker --

    def worker_help(self):
        if self._worker_help is None:
            exe = require(worker_path(), "hsq-worker")
            r = subprocess.run([exe, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=tmo(30))
            self._worker_help = (r.stdout + r.stderr).decode("utf-8", "replace")
        return self._worker_help

    def start_worker(self, hsqd, name=None, max_batch=None, job_delay_ms=None,
                     extra=None, blob_dir=None, pipeline="resize"):
        """Start hsq-worker against hsqd's worker endpoint and blob store.
        Every setting goes through --set KEY=VALUE (see hsq-worker --help).
        Queue-level tests use the plain resize pipeline (real decode, crop,
        resize, encode; no models, so synthetic images work and 1,000 jobs
        take seconds); pipeline="headshot" runs the full pipeline, which
        needs models/ and a photo with a face."""
        exe = require(worker_path(), "hsq-worker")
        name = self._uniq(name or "worker")
        conf = {"endpoint": hsqd.worker, "blob_dir": blob_dir or hsqd.blob_dir, "name": name,
                "pipeline": pipeline,
                "stop_timeout": "%dms" % int(tmo(5) * 1000), "log_level": "info",
                "reconnect_min": "50ms", "reconnect_max": "500ms"}
        if pipeline == "headshot":
            conf["models_dir"] = models_dir()
        if max_batch is not None:
            conf["max_batch"] = str(max_batch)
        if job_delay_ms is not None:
            conf["job_delay"] = "%dms" % job_delay_ms
        conf.update(extra or {})
        argv = [exe]
        for k, v in conf.items():
            argv += ["--set", "%s=%s" % (k, v)]
        proc = Proc(self, name, argv, role="worker")
        self.procs.append(proc)
        return proc

    # -- hsq CLI --

    def cli(self, endpoint, *args, json_out=False, timeout=None, expect_rc=0):
        """Run `hsq -e endpoint [--json] args...`. Returns (rc, stdout str,
        parsed JSON or None). expect_rc (None: any) is checked."""
        import json
        exe = require(cli_path(), "hsq")
        argv = [exe, "-e", endpoint] + (["--json"] if json_out else []) + [str(a) for a in args]
        log("cli: %s" % " ".join(argv))
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout or tmo(60), stdin=subprocess.DEVNULL)
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        self.extra_logs.append(("hsq %s" % " ".join(str(a) for a in args), err))
        if expect_rc is not None and r.returncode != expect_rc:
            fail("`%s` exited %d, expected %d\nstdout:\n%s\nstderr:\n%s"
                 % (" ".join(argv), r.returncode, expect_rc, tail(out), tail(err)))
        parsed = None
        if json_out and out.strip():
            try:
                parsed = json.loads(out)
            except ValueError as e:
                fail("`%s` printed invalid JSON (%s): %r" % (" ".join(argv), e, out[:500]))
        return r.returncode, out, parsed

    # -- sockets --

    def client(self, endpoint):
        c = RawClient(self.ctx, endpoint)
        self.sockets.append(c)
        return c

    def fake_worker(self, endpoint):
        w = RawWorker(self.ctx, endpoint)
        self.sockets.append(w)
        return w

    def subscriber(self, endpoint, topics):
        s = self.ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 0)  # keep every event until the test reads it
        for t in topics:
            s.setsockopt(zmq.SUBSCRIBE, t.encode() if isinstance(t, str) else t)
        s.connect(endpoint)
        self.sockets.append(s)
        return s

    # -- teardown --

    def teardown(self):
        problems = []
        for s in self.sockets:
            try:
                s.close(linger=0)
            except TypeError:
                s.close()
            except Exception:
                pass
        # Workers first (all at once), then the daemons.
        try:
            stop_all([p for p in self.procs if not isinstance(p.role, str) or p.role != "hsqd"])
        except TestFailure as e:
            problems.append(str(e))
        for p in reversed(self.procs):
            if p.stopped:
                continue
            try:
                p.stop()
            except TestFailure as e:
                problems.append(str(e))
        for p in self.procs:
            msg = scan_sanitizer(p.name, p.stderr_text())
            if msg:
                problems.append(msg)
        for name, text in self.extra_logs:
            msg = scan_sanitizer(name, text)
            if msg:
                problems.append(msg)
        try:
            self.ctx.destroy(linger=0)  # never blocks on a socket left open
        except Exception:
            pass
        return problems

    def dump_logs(self):
        for p in self.procs:
            sys.stderr.write("---- %s (pid %d, rc %r) stderr tail:\n%s\n"
                             % (p.name, p.pid, p.p.returncode, tail(p.stderr_text(), 40)))


def run(main, name=None):
    """Run main(h) with a fresh Harness; exit 0/1/77."""
    name = name or os.path.splitext(os.path.basename(sys.argv[0]))[0]
    h = Harness(name)
    rc = 0
    t0 = time.monotonic()
    try:
        main(h)
    except Skip as e:
        sys.stderr.write("SKIP %s: %s\n" % (name, e))
        rc = EXIT_SKIP
    except TestFailure as e:
        sys.stderr.write("FAIL %s: %s\n" % (name, e))
        rc = 1
    except Exception:
        sys.stderr.write("FAIL %s: unexpected exception\n%s" % (name, traceback.format_exc()))
        rc = 1
    if h.deferred and rc != EXIT_SKIP:
        for m in h.deferred:
            sys.stderr.write("FAIL %s: %s\n" % (name, m))
        rc = 1
    problems = h.teardown()
    if problems:
        for p in problems:
            sys.stderr.write("FAIL %s (teardown): %s\n" % (name, p))
        rc = 1
    if rc == 1:
        h.dump_logs()
    if KEEP or rc == 1 and os.environ.get("HSQ_IT_KEEP_ON_FAIL") == "1":
        sys.stderr.write("kept %s\n" % h.tmp)
    else:
        shutil.rmtree(h.tmp, ignore_errors=True)
    if rc == 0:
        sys.stderr.write("PASS %s (%.1fs)\n" % (name, time.monotonic() - t0))
    sys.exit(rc)


# ---------------------------------------------------------------- raw protocol

class Reply:
    def __init__(self, meta, frames):
        self.meta = meta
        self.frames = frames

    @property
    def error(self):
        e = self.meta.get("error") if isinstance(self.meta, dict) else None
        return e

    @property
    def code(self):
        e = self.error
        return e.get("code") if e else None

    def __getitem__(self, k):
        return self.meta[k]

    def get(self, k, d=None):
        return self.meta.get(k, d)

    def __repr__(self):
        return "Reply(%r, %d frames)" % (self.meta, len(self.frames))


def pack(meta):
    return msgpack.packb(meta, use_bin_type=True)


def unpack(b):
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


class RawClient:
    """A DEALER speaking the wire protocol by hand (msgpack meta + frames)."""

    def __init__(self, ctx, endpoint):
        self.endpoint = endpoint
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.connect(endpoint)
        self.rid = 0
        self.stash = []  # messages received while looking for another rid

    def close(self, linger=0):
        self.sock.close(linger=linger)

    def next_rid(self):
        self.rid += 1
        return self.rid

    def send_parts(self, parts):
        self.sock.send_multipart([bytes(p) for p in parts])

    def send(self, op, body=None, frames=(), rid=None, v=1):
        rid = self.next_rid() if rid is None else rid
        meta = {"v": v, "rid": rid, "op": op}
        meta.update(body or {})
        self.send_parts([pack(meta)] + list(frames))
        return rid

    def recv(self, timeout=None):
        """Next message as a Reply; TestFailure on timeout."""
        if self.stash:
            return self.stash.pop(0)
        timeout = tmo(10) if timeout is None else timeout
        if not self.sock.poll(int(timeout * 1000)):
            fail("no message from hsqd at %s within %.1fs" % (self.endpoint, timeout))
        parts = self.sock.recv_multipart()
        try:
            meta = unpack(parts[0])
        except Exception as e:
            fail("hsqd sent undecodable msgpack (%s): %r" % (e, parts[0][:100]))
        return Reply(meta, parts[1:])

    def try_recv(self, timeout):
        """Next message or None when timeout (seconds) passes."""
        if self.stash:
            return self.stash.pop(0)
        if not self.sock.poll(int(timeout * 1000)):
            return None
        parts = self.sock.recv_multipart()
        return Reply(unpack(parts[0]), parts[1:])

    def recv_rid(self, rid, timeout=None):
        """The reply with this rid (others are stashed for later)."""
        timeout = tmo(10) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for i, m in enumerate(self.stash):
            if isinstance(m.meta, dict) and m.meta.get("rid") == rid and "re" in m.meta:
                return self.stash.pop(i)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                fail("no reply with rid %d from %s within %.1fs" % (rid, self.endpoint, timeout))
            parts = self.sock.recv_multipart()
            r = Reply(unpack(parts[0]), parts[1:])
            if isinstance(r.meta, dict) and r.meta.get("rid") == rid and "re" in r.meta:
                return r
            self.stash.append(r)

    def call(self, op, body=None, frames=(), timeout=None):
        """Request/reply; returns the Reply (error replies included)."""
        rid = self.send(op, body, frames)
        r = self.recv_rid(rid, timeout)
        check_eq(r.meta.get("v"), 1, "reply version to %s" % op)
        check_eq(r.meta.get("re"), op, "reply op to %s" % op)
        return r

    def ok(self, op, body=None, frames=(), timeout=None):
        """Request that must succeed; returns the reply meta."""
        r = self.call(op, body, frames, timeout)
        if r.error:
            fail("%s %r failed: %r" % (op, body, r.error))
        return r

    def err(self, op, body, code, frames=(), timeout=None):
        r = self.call(op, body, frames, timeout)
        check(r.error is not None, "%s %r: expected error %s, got success %r"
              % (op, body, code, r.meta))
        check_eq(r.code, code, "%s %r error code (message %r)"
                 % (op, body, r.error.get("message")))
        return r

    # -- client ops --

    def submit(self, user, images=None, outputs=None, key=None, prio=None, frames=None):
        images = images or [make_png(32, 40)]
        body = {"user": user,
                "inputs": [{"kind": "portrait", "name": "p%d.png" % i} for i in range(len(images))],
                "outputs": outputs or [{"width": 32, "height": 32, "format": "jpeg"}]}
        if key is not None:
            body["key"] = key
        if prio is not None:
            body["prio"] = prio
        return self.call("submit", body, images if frames is None else frames)

    def status(self, task):
        return self.ok("status", {"task": task}).meta["task"]

    def wait(self, task, timeout_ms=10000, since=None):
        body = {"task": task, "timeout_ms": timeout_ms}
        if since:
            body["since"] = since
        r = self.ok("wait", body, timeout=timeout_ms / 1000.0 + tmo(10))
        return r.meta["task"], r.meta["timed_out"]

    def wait_terminal(self, task, timeout=None):
        """Block (long-poll `wait`, in slices) until the task is terminal."""
        timeout = tmo(60) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                t = self.status(task)
                fail("task %d not terminal after %.0fs: %r" % (task, timeout, t))
            t, timed_out = self.wait(task, min(60000, max(1, int(left * 1000))))
            if not timed_out:
                return t

    def wait_state_change(self, task, since, timeout=None):
        """Block until the task's state is no longer `since`."""
        timeout = tmo(30) if timeout is None else timeout
        t, timed_out = self.wait(task, min(60000, int(timeout * 1000)), since=since)
        check(not timed_out, "task %d still %s after %.0fs" % (task, since, timeout))
        return t

    def stats(self):
        return self.ok("stats").meta

    def list_all(self, user):
        tasks, before = [], 0
        while True:
            body = {"user": user, "limit": 100}
            if before:
                body["before"] = before
            r = self.ok("list", body).meta
            tasks += r["tasks"]
            if not r["next"]:
                return tasks
            before = r["next"]

    def pipeline(self, op, bodies, frames_list=None, timeout=None, window=200):
        """Send many requests with at most `window` in flight; returns the
        replies in request order."""
        timeout = tmo(60) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        rids, out, pending = [], {}, set()
        i = 0
        n = len(bodies)
        while len(out) < n:
            while i < n and len(pending) < window:
                rid = self.send(op, bodies[i], frames_list[i] if frames_list else ())
                rids.append(rid)
                pending.add(rid)
                i += 1
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                fail("%s pipeline: %d of %d replies after %.0fs" % (op, len(out), n, timeout))
            while True:
                try:
                    parts = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                r = Reply(unpack(parts[0]), parts[1:])
                rid = r.meta.get("rid")
                if rid in pending:
                    pending.discard(rid)
                    out[rid] = r
                else:
                    self.stash.append(r)
        return [out[r] for r in rids]


class RawWorker(RawClient):
    """A fake worker on the worker socket: ready, lease, heartbeat, done, fail.
    Unsolicited `abort` commands are kept in self.aborts."""

    def __init__(self, ctx, endpoint):
        super().__init__(ctx, endpoint)
        self.aborts = []

    def _filter(self):
        keep = []
        for m in self.stash:
            if isinstance(m.meta, dict) and m.meta.get("op") == "abort":
                self.aborts.append(m.meta)
            else:
                keep.append(m)
        self.stash = keep

    def recv_rid(self, rid, timeout=None):
        r = super().recv_rid(rid, timeout)
        self._filter()
        return r

    def poll_aborts(self, timeout):
        """Collect abort commands arriving within timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self._filter()
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                return self.aborts
            parts = self.sock.recv_multipart()
            self.stash.append(Reply(unpack(parts[0]), parts[1:]))
            self._filter()
            if self.aborts:
                return self.aborts

    def ready(self, name="fake", max_batch=1):
        return self.ok("ready", {"name": name, "backend": "cpu", "max_batch": max_batch}).meta

    def lease(self, max=1, wait_ms=0, timeout=None):
        r = self.ok("lease", {"max": max, "wait_ms": wait_ms},
                    timeout=(timeout if timeout is not None else wait_ms / 1000.0 + tmo(10)))
        return r.meta.get("jobs", []), r.frames


def write_blob(blob_dir, key, data):
    """Store an object as a worker would (for fake-worker `done` messages)."""
    path = os.path.join(blob_dir, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp-it"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def output_files(blob_dir):
    """{task id: [output file names]} for every worker output in the store."""
    res = {}
    udir = os.path.join(blob_dir, "u")
    if not os.path.isdir(udir):
        return res
    for dirpath, _dirs, files in os.walk(udir):
        outs = [f for f in files if f.startswith("out-")]
        if outs:
            try:
                task = int(os.path.basename(dirpath))
            except ValueError:
                continue
            res.setdefault(task, []).extend(outs)
    return res


def input_files(blob_dir):
    """{task id: [input file names]} for every uploaded input in the store."""
    res = {}
    udir = os.path.join(blob_dir, "u")
    if not os.path.isdir(udir):
        return res
    for dirpath, _dirs, files in os.walk(udir):
        ins = [f for f in files if f.startswith("in-")]
        if ins:
            try:
                task = int(os.path.basename(dirpath))
            except ValueError:
                continue
            res.setdefault(task, []).extend(ins)
    return res


def poll_until(fn, timeout, what, interval=0.05):
    """Bounded polling loop: call fn() until it returns a true value."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= deadline:
            fail("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def wait_stats(c, pred, timeout, what):
    """Poll `stats` until pred(stats) holds (bounded)."""
    last = {}

    def probe():
        last["s"] = c.stats()
        return pred(last["s"])
    try:
        return poll_until(probe, timeout, what, interval=0.1)
    except TestFailure as e:
        fail("%s; last stats %r" % (e, last.get("s")))


def sync_subscriber(h, sub, c, probe_user, timeout=None):
    """Make sure the SUB socket's subscriptions reached hsqd's PUB socket:
    sub must subscribe to probe_user (after the topics the test cares about,
    so those are in place once the probe is seen). Submits tasks for
    probe_user until one of their events arrives; returns their ids (the
    caller may cancel them)."""
    timeout = tmo(20) if timeout is None else timeout
    deadline = time.monotonic() + timeout
    topic = probe_user.encode()
    probes = []
    while time.monotonic() < deadline:
        r = c.submit(probe_user)
        check(r.error is None, "probe submit failed: %r" % r.meta)
        probes.append(r["task"])
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            if sub.poll(50):
                parts = sub.recv_multipart()
                if parts[0] == topic:
                    return probes
    fail("event subscription not established within %.0fs" % timeout)


def recv_event(sub, timeout):
    """(topic str, event map) from a SUB socket, or None on timeout."""
    if not sub.poll(int(timeout * 1000)):
        return None
    parts = sub.recv_multipart()
    check_eq(len(parts), 2, "event frames (topic, meta)")
    ev = unpack(parts[1])
    check(isinstance(ev, dict) and ev.get("op") == "event", "event meta: %r" % (ev,))
    check_eq(ev.get("v"), 1, "event version")
    topic = parts[0].decode("utf-8", "replace")
    check_eq(ev.get("user"), topic, "event user vs its topic")
    return topic, ev
