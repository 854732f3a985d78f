"""Live configuration end-to-end (issue 7 §4 and the signal/config items of §5): SIGHUP
re-reads the -c file and publishes a new snapshot to the workers of the real binary in the
pod lab; open connections keep the settings they started with, new ones get the new ones;
an invalid file keeps the running configuration; SIGUSR1/SIGUSR2/SIGALRM no longer kill the
proxy; strict parsing of files and command-line overrides (exit 2).

    app(client pod) -> VIP --nat OUTPUT--> client outrigger :15001 -> server pod -> echo
"""
import json
import os
import signal
import tempfile
import time

import pytest

from lab import wait_for
from test_foundation import _in_fresh_netns

VIP = "198.19.0.10"        # echo


def write_config(sc, cfg_text):
    """Replace the sidecar's -c file (raw text, so that invalid JSON can be written)."""
    assert sc.config_path, "the sidecar was started without -c"
    with open(sc.config_path, "w") as f:
        f.write(cfg_text)


def sighup_and_wait(sc, stat, value, timeout=5):
    sc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: sc.stats().get(stat) == value, timeout=timeout, interval=0.05,
             what="%s == %d after SIGHUP" % (stat, value))


def test_sighup_applies_live_settings_and_keeps_connections(mesh_factory):
    """Guards issue 7 §4 (workers_publish had no caller; SIGHUP killed the proxy): after
    SIGHUP with a shorter idleTimeout, a connection opened before keeps its snapshot (it
    survives being idle longer than the new timeout and still echoes), a new connection is
    closed by the new 1 s timeout, /config_dump shows generation 2 with the new value, and a
    changed port is logged as needing a restart and keeps its running value."""
    m = mesh_factory(client_config={"proxy": {"idleTimeout": "3600s"}})
    old = m.client.interactive(VIP, 80)
    new = None
    try:
        assert old.connected, old.hello
        assert old.cmd("echo 100") == "OK 100"
        t_old = time.monotonic()
        s0 = m.csc.stats()
        assert s0["server.config_generation"] == 1
        assert s0["server.config_reload_success"] == 0

        write_config(m.csc, json.dumps({"proxy": {"idleTimeout": "1s", "proxyListenPort": 15091}}))
        sighup_and_wait(m.csc, "server.config_generation", 2)
        assert m.csc.alive()
        s1 = m.csc.stats()
        assert s1["server.config_reload_success"] == 1
        assert s1["server.config_reload_failure"] == 0
        assert s1["server.config_restart_pending"] == 1
        dump = m.csc.config_dump()
        assert dump["generation"] == 2
        assert dump["config"]["proxy"]["idleTimeout"] == "1s"
        assert dump["config"]["proxy"]["proxyListenPort"] == 15001, "a port cannot change without a restart"
        code, prom, _ = m.csc._get("http://127.0.0.1:15000/stats/prometheus")
        assert code == 200
        assert "outrigger_server_config_generation 2\n" in prom
        assert "# TYPE outrigger_server_config_reload_success counter" in prom
        assert "outrigger_server_config_reload_success 1\n" in prom
        log = m.csc.log()
        assert "proxy.proxyListenPort changed but needs a restart" in log, log[-2000:]
        assert "applied as configuration generation 2" in log

        new = m.client.interactive(VIP, 80)
        assert new.connected, new.hello
        assert new.cmd("echo 100") == "OK 100"
        t0 = time.monotonic()
        r = new.cmd("recv 6", timeout=10)
        took = time.monotonic() - t0
        assert r == "EOF" or r.startswith("RESET"), "new connection not closed by the new idle timeout: %r" % r
        assert 0.5 < took < 4, "closed after %.1fs, want about 1s" % took
        st = m.csc.stats()
        assert st["listener.outbound.downstream_cx_idle_timeout"] == 1

        # The old connection has now been idle for longer than the new timeout.
        time.sleep(max(0.0, 2.5 - (time.monotonic() - t_old)))
        assert old.cmd("echo 1000") == "OK 1000", "a reload must not change an open connection's settings"
        assert m.csc.stats()["listener.outbound.downstream_cx_idle_timeout"] == 1
    finally:
        old.close()
        if new:
            new.close()
    assert m.csc.alive()


BAD_RELOADS = [
    ('{"proxy":{"idleTimeout":"1s","idleTimeout":"2s"}}', "proxy.idleTimeout: duplicate key"),
    ('{"proxy":{"idleTimeout":"1s"}}{"proxy":{"idleTimeout":"bad"}}', "unexpected data after the top-level value"),
    ('{"proxy":{"idleTimeout":"1 s"}}', "proxy.idleTimeout: expected a duration"),
    ('{"proxy":{"idleTimeout":', "not valid JSON"),
]


def test_sighup_invalid_file_keeps_running(mesh_factory):
    """Guards issue 7 §4: an invalid file on SIGHUP is logged with its JSON path, counted in
    server.config_reload_failure, and the running snapshot stays (generation and values);
    open and new connections keep working; a valid file afterwards still applies."""
    m = mesh_factory(client_config={"proxy": {"connectTimeout": "10s"}})
    ia = m.client.interactive(VIP, 80)
    try:
        assert ia.connected, ia.hello
        for i, (text, want) in enumerate(BAD_RELOADS, 1):
            write_config(m.csc, text)
            sighup_and_wait(m.csc, "server.config_reload_failure", i)
            assert m.csc.alive()
            assert want in m.csc.log(), "log does not say %r" % want
            st = m.csc.stats()
            assert st["server.config_generation"] == 1
            assert st["server.config_reload_success"] == 0
            assert m.csc.config_dump()["config"]["proxy"]["connectTimeout"] == "10s"
            assert ia.cmd("echo 100") == "OK 100"
        r, out = m.client.client(["echo-client", "--host", VIP, "--port", 80, "--count", 2, "--timeout", 5])
        assert out is not None and out["ok"] == 2, out

        write_config(m.csc, '{"proxy":{"connectTimeout":"3s"}}\n')
        sighup_and_wait(m.csc, "server.config_generation", 2)
        assert m.csc.config_dump()["config"]["proxy"]["connectTimeout"] == "3s"
        assert m.csc.stats()["server.config_reload_failure"] == len(BAD_RELOADS)
        assert ia.cmd("echo 100") == "OK 100"
    finally:
        ia.close()


def test_usr1_usr2_alrm_are_logged_and_ignored(mesh):
    """Guards issue 7 §5: SIGUSR1, SIGUSR2 and SIGALRM killed the proxy at once (no drain,
    every connection dropped). Now each is logged and ignored: the proxy stays ready, an
    open connection keeps working and the configuration generation does not move."""
    ia = mesh.client.interactive(VIP, 80)
    try:
        assert ia.connected, ia.hello
        for sig, name in ((signal.SIGUSR1, "SIGUSR1"), (signal.SIGUSR2, "SIGUSR2"), (signal.SIGALRM, "SIGALRM")):
            mesh.csc.proc.send_signal(sig)
            wait_for(lambda: "%s received: ignored" % name in mesh.csc.log(), timeout=5, interval=0.05,
                     what="log line for %s" % name)
            assert mesh.csc.alive(), "%s killed the proxy" % name
            assert mesh.csc.health() == 200
            assert ia.cmd("echo 100") == "OK 100"
        assert mesh.csc.stats()["server.config_generation"] == 1
    finally:
        ia.close()


STRICT_FILES = [
    ('{"proxy":{"concurrency":4}}{"proxy":{"concurrency":"bad"}}', "$: unexpected data after the top-level value"),
    ('{"proxy":{"concurrency":4,"concurrency":2}}', "proxy.concurrency: duplicate key"),
    ('{"proxy":{"concurrency\x00xyz":4}}', "$: NUL byte"),
    ('{"proxy":{"concurrency\\u0000xyz":4}}', "\\u0000"),
    ('{"proxy":{"concurrency":04}}', "$: malformed number at byte 24"),
]


@pytest.mark.parametrize("text,want", STRICT_FILES, ids=["trailing", "duplicate", "nul", "nul-escape", "leading-zero"])
def test_strict_config_file_refused(outrigger_bin, text, want):
    """Guards issue 7 §5: trailing data, duplicate keys and NUL bytes were accepted (and
    numbers such as 04 that cJSON's strtod takes, issue 8); each is now refused with exit 2 by --check-config and by a normal start, naming the problem."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "c.json")
        with open(path, "w") as f:
            f.write(text)
        for argv in ([outrigger_bin, "--check-config", "-c", path], [outrigger_bin, "-c", path]):
            r = _in_fresh_netns(argv)
            assert r.returncode == 2, "%s: rc=%d stderr=%r" % (argv, r.returncode, r.stderr)
            assert want in r.stderr, r.stderr


def test_strict_command_line_refused(outrigger_bin):
    """Guards issue 7 §5: --concurrency was formatted into JSON with %.40s, so a value over
    40 characters ending in junk read as 4. It is now parsed whole (exit 2), and a long but
    valid value is accepted."""
    junk = "0" * 44 + "4xyz"
    for v in (junk, " 4", "+4", "4 "):
        r = _in_fresh_netns([outrigger_bin, "--check-config", "--concurrency", v])
        assert r.returncode == 2, "--concurrency %r: rc=%d %r" % (v, r.returncode, r.stderr)
        assert "proxy.concurrency: expected an integer" in r.stderr, r.stderr
    r = _in_fresh_netns([outrigger_bin, "--dump-config", "--concurrency", "0" * 44 + "4"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["proxy"]["concurrency"] == 4
    r = _in_fresh_netns([outrigger_bin, "--check-config", "--log-level", "debug" + "x" * 40])
    assert r.returncode == 2 and "proxy.logLevel" in r.stderr, r.stderr
