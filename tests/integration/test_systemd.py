"""systemd integration. Usage: test_systemd.py verify|notify

verify: `systemd-analyze verify` on every unit this build configured
  (build/systemd/*.service and systemd/hsq-purge.timer), with ExecStart=
  pointed at this build's binaries in a temp copy (verify checks that the
  commands exist). Any diagnostic at all fails the test (verify only warns on
  unknown keys). Exit 77 when systemd-analyze is not installed.

notify: hsqd, with etc/hsqd.conf.example as its config (paths overridden),
  under a minimal sd_notify listener (an AF_UNIX datagram socket as
  NOTIFY_SOCKET, WATCHDOG_USEC set): READY=1 arrives once hsqd serves (a
  client request right after it succeeds, its ipc socket is already 0600 in
  a 0700 directory), WATCHDOG=1 keeps arriving from the loop, and SIGTERM
  brings STOPPING=1 and a clean exit.
"""
import os
import shutil
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Skip, check, check_eq, fail, tmo  # noqa: E402

UNITS = ("hsqd.service", "hsq-worker@.service", "hsq-purge.service")


def verify(h):
    tool = shutil.which("systemd-analyze")
    if not tool:
        raise Skip("systemd-analyze not installed")
    src = os.path.join(harness.BUILD, "systemd")
    d = h.path("units")
    os.makedirs(d)
    bins = {"hsqd": harness.hsqd_path(), "hsq-worker": harness.worker_path(),
            "hsq": harness.cli_path()}
    for u in UNITS:
        path = os.path.join(src, u)
        check(os.path.isfile(path), "%s was not configured (expected %s)" % (u, path))
        out = []
        with open(path) as f:
            for line in f:
                if line.startswith("ExecStart="):
                    cmd, _, rest = line[len("ExecStart="):].partition(" ")
                    name = os.path.basename(cmd)
                    check(name in bins, "%s: unexpected ExecStart %r" % (u, cmd))
                    line = "ExecStart=%s %s" % (bins[name], rest)
                out.append(line)
        with open(os.path.join(d, u), "w") as f:
            f.write("".join(out))
    shutil.copy(os.path.join(harness.SRC, "systemd", "hsq-purge.timer"), d)
    args = [os.path.join(d, n) for n in
            ("hsqd.service", "hsq-worker@0.service", "hsq-purge.service", "hsq-purge.timer")]
    r = subprocess.run([tool, "verify", "--man=no"] + args, cwd=d, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=tmo(60))
    out = (r.stdout + r.stderr).decode("utf-8", "replace").strip()
    check(r.returncode == 0 and out == "",
          "systemd-analyze verify (rc %d):\n%s" % (r.returncode, out))


def recv_notify(sock, want, timeout):
    """Datagrams until one has the line `want`; returns all lines seen."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("no %s from hsqd within %.0fs (got %r)" % (want, timeout, seen))
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            continue
        lines = data.decode().split("\n")
        seen += lines
        if want in lines:
            return seen


def notify(h):
    ns_path = h.path("notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(ns_path)
    data = h.path("data")
    rundir = h.path("run", "hsq")
    client_ep = "ipc://%s/client.sock" % rundir
    # The shipped example config (installed as a template next to the unit),
    # with the paths of this test: every key in it must be one hsqd takes.
    example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "etc",
                           "hsqd.conf.example")
    argv = [harness.require(harness.hsqd_path(), "hsqd"), "--config", example,
            "--data-dir", data,
            "--set", "client_endpoint=" + client_ep,
            "--set", "worker_endpoint=ipc://%s/worker.sock" % rundir,
            "--set", "events_endpoint=ipc://%s/events.sock" % rundir,
            "--set", "metrics_listen="]
    env = {"NOTIFY_SOCKET": ns_path, "WATCHDOG_USEC": str(int(tmo(0.8) * 1e6))}
    p = harness.Proc(h, "hsqd", argv, env=env, role="hsqd")
    h.procs.append(p)
    try:
        seen = recv_notify(ns, "READY=1", tmo(30))
        # Serving already: the socket is bound with its permissions, and a
        # request right now gets its answer.
        sock_file = os.path.join(rundir, "client.sock")
        check(os.path.exists(sock_file), "READY=1 before %s exists" % sock_file)
        check_eq(stat.S_IMODE(os.stat(sock_file).st_mode), 0o600, "client.sock mode")
        check_eq(stat.S_IMODE(os.stat(rundir).st_mode), 0o700, "runtime directory mode")
        c = h.client(client_ep)
        t0 = time.monotonic()
        st = c.stats()
        check("queued" in st, "stats right after READY: %r" % st)
        check(time.monotonic() - t0 < tmo(2), "stats right after READY took %.2fs"
              % (time.monotonic() - t0))
        recv_notify(ns, "WATCHDOG=1", tmo(5))
        recv_notify(ns, "WATCHDOG=1", tmo(5))
        p.term()
        recv_notify(ns, "STOPPING=1", tmo(15))
        p.stop()
    finally:
        ns.close()


def main(h):
    mode = sys.argv[1] if len(sys.argv) > 1 else "verify"
    if mode == "verify":
        verify(h)
    elif mode == "notify":
        notify(h)
    else:
        fail("usage: test_systemd.py verify|notify")


if __name__ == "__main__":
    harness.run(main)
