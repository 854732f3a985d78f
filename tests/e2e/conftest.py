"""Fixtures for the end-to-end tests: the pod lab (tests/lab) with the real outrigger-init
and outrigger as sidecars.

Run as root with /usr/bin/python3 -m pytest tests/e2e. Binaries come from the checkout
(./outrigger, ./outrigger-init) or from $OUTRIGGER_BIN / $OUTRIGGER_INIT_BIN. Tests that
need the lab skip, with the reason, when not root or when a binary is missing.
"""
import os
import signal
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))

import lab  # noqa: E402


@pytest.fixture(scope="session")
def repo():
    return REPO


def _need_exec(path, what):
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.skip("%s not built: %s missing (build with ./autogen.sh && ./configure && make, "
                    "or set %s)" % (what, path,
                                    "OUTRIGGER_BIN" if what == "outrigger" else "OUTRIGGER_INIT_BIN"))


@pytest.fixture(scope="session")
def outrigger_bin():
    p = lab.proxy_bin()
    _need_exec(p, "outrigger")
    return p


@pytest.fixture(scope="session")
def init_bin():
    p = lab.init_bin()
    _need_exec(p, "outrigger-init")
    return p


@pytest.fixture(scope="session")
def root():
    if os.geteuid() != 0:
        pytest.skip("the pod lab needs root (network namespaces and iptables)")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _dump(L):
    """Print every sidecar/init/app log of the lab (shown by pytest for failed tests)."""
    for name in sorted(os.listdir(L.dir)):
        if name.endswith(".log"):
            path = os.path.join(L.dir, name)
            with open(path, errors="replace") as f:
                text = f.read()
            print("===== %s (%d bytes, last 6000) =====" % (name, len(text)))
            print(text[-6000:])


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer")


def _stop_sidecars_and_check(L):
    """Stop every sidecar still running (SIGTERM, then a second SIGTERM: "stop now") so that
    LeakSanitizer runs at exit, and return the problems found: a non-zero exit, or a
    sanitizer report in any proxy log (the suite runs ASan+UBSan builds in CI)."""
    problems = []
    for pod in list(L.pods.values()):
        sc = getattr(pod, "sidecar", None)
        if sc is None or not sc.alive():
            continue
        sc.proc.send_signal(signal.SIGTERM)
        try:
            sc.proc.wait(timeout=0.3)
        except subprocess.TimeoutExpired:
            sc.proc.send_signal(signal.SIGTERM)
        try:
            rc = sc.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            sc.proc.kill()
            rc = "hung"
        if rc != 0:
            problems.append("%s: outrigger exit status %s at teardown" % (pod.name, rc))
    for name in sorted(os.listdir(L.dir)):
        if "outrigger" in name and name.endswith(".log"):
            with open(os.path.join(L.dir, name), errors="replace") as f:
                text = f.read()
            for mark in SANITIZER_MARKS:
                if mark in text:
                    i = text.index(mark)
                    problems.append("%s: %s\n%s" % (name, mark, text[max(0, i - 200):i + 3000]))
                    break
    return problems


@pytest.fixture
def pod_lab(request, root):
    """A fresh Lab per test; on failure its logs are printed before teardown. At the end every
    sidecar must exit 0 and no proxy log may hold a sanitizer report."""
    with lab.Lab() as L:
        yield L
        problems = _stop_sidecars_and_check(L)
        failed = any(getattr(request.node, "rep_" + w, None) is not None and
                     getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
        if failed or problems:
            _dump(L)
        if problems:
            pytest.fail("sidecar check at teardown:\n" + "\n".join(problems), pytrace=False)


class Mesh:
    """client and server pods, both with sidecars. Server apps (user nobody):
    echo :8080 behind VIP 198.19.0.10:80, sink :8081 behind 198.19.0.11:80, http :8082
    behind 198.19.0.12:80 (and fd00:198:19::10 / ::12 with ipv6=True)."""


def build_mesh(L, ipv6=False, client_init=None, server_init=None, client_config=None,
               server_config=None, sink_reply_bytes=0, server_user=lab.PROXY_UID):
    m = Mesh()
    m.lab = L
    m.client = L.add_pod("client", ipv6=ipv6)
    m.server = L.add_pod("server", ipv6=ipv6)
    m.echo = m.server.app(["echo", "--port", 8080])
    m.sink = m.server.app(["sink", "--port", 8081, "--reply-bytes", sink_reply_bytes])
    m.http = m.server.app(["http", "--port", 8082, "--name", "server"])
    m.echo_svc = L.add_service("198.19.0.10", 80, m.server, 8080)
    m.sink_svc = L.add_service("198.19.0.11", 80, m.server, 8081)
    m.http_svc = L.add_service("198.19.0.12", 80, m.server, 8082)
    if ipv6:
        m.echo_svc6 = L.add_service("fd00:198:19::10", 80, m.server, 8080)
        m.http_svc6 = L.add_service("fd00:198:19::12", 80, m.server, 8082)
    m.csc = m.client.start_sidecar(init_args=client_init, config=client_config)
    m.ssc = m.server.start_sidecar(init_args=server_init, config=server_config, user=server_user)
    return m


@pytest.fixture
def mesh(pod_lab, outrigger_bin, init_bin):
    return build_mesh(pod_lab)


@pytest.fixture
def mesh_factory(pod_lab, outrigger_bin, init_bin):
    """Call with build_mesh keyword arguments (custom init flags, configs, IPv6)."""
    return lambda **kw: build_mesh(pod_lab, **kw)
