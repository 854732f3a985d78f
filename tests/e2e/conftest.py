"""Fixtures for the end-to-end tests: the pod lab (tests/lab) with the real outrigger-init
and outrigger as sidecars.

Run as root with /usr/bin/python3 -m pytest tests/e2e. Binaries come from the checkout
(./outrigger, ./outrigger-init) or from $OUTRIGGER_BIN / $OUTRIGGER_INIT_BIN. Tests that
need the lab skip, with the reason, when not root or when a binary is missing.
"""
import os
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


@pytest.fixture
def pod_lab(request, root):
    """A fresh Lab per test; on failure its logs are printed before teardown."""
    with lab.Lab() as L:
        yield L
        failed = any(getattr(request.node, "rep_" + w, None) is not None and
                     getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
        if failed:
            _dump(L)


class Mesh:
    """client and server pods, both with sidecars. Server apps (user nobody):
    echo :8080 behind VIP 198.19.0.10:80, sink :8081 behind 198.19.0.11:80, http :8082
    behind 198.19.0.12:80 (and fd00:198:19::10 / ::12 with ipv6=True)."""


def build_mesh(L, ipv6=False, client_init=None, server_init=None, client_config=None,
               server_config=None, sink_reply_bytes=0):
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
    m.ssc = m.server.start_sidecar(init_args=server_init, config=server_config)
    return m


@pytest.fixture
def mesh(pod_lab, outrigger_bin, init_bin):
    return build_mesh(pod_lab)


@pytest.fixture
def mesh_factory(pod_lab, outrigger_bin, init_bin):
    """Call with build_mesh keyword arguments (custom init flags, configs, IPv6)."""
    return lambda **kw: build_mesh(pod_lab, **kw)
