"""Resource limits end to end (issue 7 §5): a stderr nobody reads must not stop forwarding,
and at the open-files limit connections are refused and counted once each, the log does not
flood, the admin and health ports still answer, and forwarding resumes afterwards.

    app(client pod) -> VIP --nat OUTPUT--> client outrigger :15001 -> server pod (no sidecar)

The sidecar is started through a small wrapper (written into the lab directory) that sets
RLIMIT_NOFILE and/or points stderr at a pipe, then execs outrigger (same pid, so signals and
the lab's teardown checks work as for any sidecar).
"""
import json
import os
import re
import subprocess
import time

import lab
from lab import PYTHON, read_line, wait_for

ECHO_VIP = "198.19.0.10"
CLOSED_VIP = "198.19.0.20"

WRAPPER = r'''#!%(python)s
# Test wrapper: optional RLIMIT_NOFILE, optional stderr pipe with a reader that does not
# read until the file %(go)r exists (then copies the pipe to %(drained)r until EOF).
import fcntl, os, resource, sys, time
nofile = %(nofile)r
if nofile:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
if %(stderr_pipe)r:
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 4096)   # F_SETPIPE_SZ: the smallest pipe (one page)
    if os.fork() == 0:
        os.close(w)
        deadline = time.monotonic() + 300
        while not os.path.exists(%(go)r) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(%(drained)r, "wb") as out:
            while True:
                b = os.read(r, 65536)
                if not b:
                    break
                out.write(b)
                out.flush()
        os._exit(0)
    os.close(r)
    os.dup2(w, 2)
    os.close(w)
os.execv(%(bin)r, [%(bin)r] + sys.argv[1:])
'''


def _wrapper(L, monkeypatch, nofile=None, stderr_pipe=False):
    real = lab.proxy_bin()
    paths = {"go": os.path.join(L.dir, "stderr-go"), "drained": os.path.join(L.dir, "stderr-drained.log")}
    path = os.path.join(L.dir, "outrigger-wrapper")
    with open(path, "w") as f:
        f.write(WRAPPER % dict(python=PYTHON, nofile=nofile, stderr_pipe=stderr_pipe, bin=real, **paths))
    os.chmod(path, 0o755)
    monkeypatch.setattr(lab, "proxy_bin", lambda: path)
    # The drain file is written by the proxy's uid (1337): let it create files in the lab dir.
    os.chmod(L.dir, 0o777)
    return paths


def _pods(L):
    client = L.add_pod("client")
    server = L.add_pod("server")
    server.app(["echo", "--port", 8080])
    L.add_service(ECHO_VIP, 80, server, 8080)
    L.add_service(CLOSED_VIP, 80, server, 9999)     # nothing listens: the connect is refused
    return client, server


def _echo_ok(client, n):
    r, out = client.client(["echo-client", "--host", ECHO_VIP, "--port", 80, "--count", n,
                            "--bytes", 1000, "--timeout", 20], timeout=40)
    assert out is not None, r.stdout + r.stderr
    return out


def test_stderr_pipe_nobody_reads(pod_lab, outrigger_bin, init_bin, monkeypatch):
    """Guards issue 7 §5 "when stderr is a pipe nobody reads, both workers block in the log
    write and forwarding stops": with stderr a one-page pipe that is never read, and debug
    logging plus rounds of 500 failing connects (each a warning), forwarding and /stats keep working;
    lines are dropped and counted, repeated warnings are suppressed, and once the pipe is
    read a "log lines dropped" line says so."""
    paths = _wrapper(pod_lab, monkeypatch, stderr_pipe=True)
    client, _ = _pods(pod_lab)
    sc = client.start_sidecar(proxy_args=["--log-level", "debug"])
    # Rounds of 500 failing connects until the log queue has overflowed (bounded: 6 rounds).
    fails = 0
    for _ in range(6):
        r, out = client.client(["conns", "--host", CLOSED_VIP, "--port", 80, "--count", 500,
                                "--bytes", 8, "--timeout", 30], timeout=60)
        assert "HOLDING ok=0 failed=500" in r.stdout, r.stdout + r.stderr
        fails += 500
        if sc.stats().get("server.log_lines_dropped", 0) > 0:
            break

    out = _echo_ok(client, 20)
    assert out["ok"] == 20 and out["failed"] == 0, "forwarding stopped behind a stuck stderr: %s" % out
    s = sc.stats()
    assert s["listener.outbound.upstream_cx_connect_fail"] >= fails
    assert s["server.log_lines_dropped"] > 0, "the pipe never filled: the test proves nothing"
    assert s["server.log_lines_suppressed"] > 0, "300 identical warnings were not rate-limited"
    assert sc.health() == 200

    # The consumer catches up: the lines that did not fit are reported.
    open(paths["go"], "w").close()
    _echo_ok(client, 1)     # a few more lines, so the log thread has something to write
    wait_for(lambda: os.path.exists(paths["drained"]) and
             "log lines dropped" in open(paths["drained"], errors="replace").read(),
             timeout=10, what="'log lines dropped' on the drained stderr")


def test_descriptor_limit(pod_lab, outrigger_bin, init_bin, monkeypatch):
    """Guards issue 7 §5 "at the descriptor limit": under RLIMIT_NOFILE 256 (2 workers) 200
    held connections are more than the workers' share; every connection beyond it is refused
    (reset at once) and counted once in downstream_cx_overflow, the log says so a bounded
    number of times, /stats and /healthz/ready answer while the connections are held, and
    forwarding resumes once they close."""
    _wrapper(pod_lab, monkeypatch, nofile=256)
    client, _ = _pods(pod_lab)
    sc = client.start_sidecar()
    s0 = sc.stats()
    budget = s0.get("server.fd_budget", 256)     # the workers' descriptor budget, summed
    n = 200
    t0 = time.monotonic()
    p = client.popen([PYTHON, pod_lab.apps, "conns", "--host", ECHO_VIP, "--port", 80, "--count", n,
                      "--bytes", 64, "--hold", "--timeout", 60], user="nobody",
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = read_line(p.stdout, 70).decode().strip()
        m = re.match(r"HOLDING ok=(\d+) failed=(\d+)$", line)
        assert m, "conns: %r" % line
        ok, failed = int(m.group(1)), int(m.group(2))
        assert ok + failed == n
        assert 0 < ok <= budget // 2, "ok=%d with a budget of %d descriptors" % (ok, budget)
        assert 0 < budget < 256, "descriptor budget %d under a limit of 256" % budget
        assert failed > 0
        # While every descriptor the workers may have is taken: admin and health answer.
        assert sc.health() == 200
        s1 = sc.stats()
        assert s1["listener.outbound.downstream_cx_active"] == ok
        assert s1["listener.outbound.downstream_cx_overflow"] - s0["listener.outbound.downstream_cx_overflow"] == failed, \
            "each refused connection counts once"
        assert s1["listener.outbound.upstream_cx_overflow"] == 0
        p.stdin.write(b"go\n")
        p.stdin.flush()
        summary = json.loads(read_line(p.stdout, 60).decode() or "null")
        assert summary is not None and summary["ok"] == ok, summary
        assert set(summary["errors"]) <= {"ECONNRESET", "EPIPE", "early-eof"}, summary
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    elapsed = time.monotonic() - t0

    wait_for(lambda: sc.stats()["listener.outbound.downstream_cx_active"] == 0, timeout=10,
             what="held connections closed")
    out = _echo_ok(client, 20)
    assert out["ok"] == 20 and out["failed"] == 0, "forwarding did not resume: %s" % out

    log = sc.log()
    refused = log.count("connection refused: descriptor budget used up")
    # At most 5 lines per second per worker and call site (2 workers), plus one summary each.
    assert 0 < refused <= 2 * 5 * (int(elapsed) + 2), "%d refusal lines for %d refusals" % (refused, failed)
    assert refused < failed
    assert log.count("pausing") <= 2 * 5 * (int(elapsed) + 2)
    assert sc.alive()
