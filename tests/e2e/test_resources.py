"""Static mesh resources end-to-end (issue 8: "Static resources", "Live swap", "/stats
counts", "Bad input" on the config side): the -c file's "resources" list and "mesh" object
with the real binary. --check-config lists every refused resource by its JSON path and exits
2; a start with a refused resource logs it and runs with the rest; SIGHUP with a bad edit
keeps the running version of that resource; 200 reloads with changing resources while
traffic flows lose no byte.

    app(client pod) -> VIP --nat OUTPUT--> client outrigger :15001 -> server pod -> echo/sink
"""
import json
import os
import signal
import tempfile
import threading
import time

from lab import wait_for
from test_foundation import _in_fresh_netns

ECHO_VIP = "198.19.0.10"   # echo :8080
SINK_VIP = "198.19.0.11"   # sink :8081
ADDR_T = "type.googleapis.com/istio.workload.Address"


def b64_ip4(a, b, c, d):
    import base64
    return base64.b64encode(bytes([a, b, c, d])).decode()


def workload(name, addr_b64):
    return {"@type": ADDR_T,
            "workload": {"uid": "cluster1//Pod/default/%s" % name, "name": name, "namespace": "default",
                         "serviceAccount": "sa-%s" % name, "addresses": [addr_b64]}}


BAD_LEN = "CgAAAQE="       # 5 bytes: decodes, but no IPv4 or IPv6 address


def resources_file(path, resources, mesh=None):
    cfg = {"proxy": {"concurrency": 2}, "resources": resources}
    if mesh is not None:
        cfg["mesh"] = mesh
    with open(path, "w") as f:
        json.dump(cfg, f)


def dump_addresses(dump):
    """{workload uid: its addresses} from /config_dump's istio.workload.Address list."""
    out = {}
    for r in dump["resources"]["istio.workload.Address"]:
        assert r["resource"]["@type"] == ADDR_T, r
        wl = r["resource"].get("workload")
        if wl is not None:
            out[r["name"]] = wl.get("addresses", [])
    return out


def test_check_config_lists_refused_resources(outrigger_bin):
    """--check-config on a file with good resources says "valid" with the count by type
    (exit 0); on one with bad resources among good ones it prints each problem as
    "FILE: resources[i]...: why" on stderr and exits 2, so a typo is caught before a
    reload. A bad "mesh" value or a "resources" that is not a list is refused whole."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "r.json")
        good = [workload("a", b64_ip4(10, 0, 0, 1)), workload("b", b64_ip4(10, 0, 0, 2))]
        resources_file(path, good, mesh={"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})
        r = _in_fresh_netns([outrigger_bin, "--check-config", "-c", path])
        assert r.returncode == 0, r.stderr
        assert "is valid (2 resources)" in r.stdout, r.stdout
        assert "2 istio.workload.Address" in r.stdout, r.stdout

        bad = good + [workload("c", b64_ip4(10, 0, 0, 3)), workload("d", BAD_LEN),
                      workload("e", "$$$$"), {"@type": "type.googleapis.com/istio.workload.Nope"}]
        resources_file(path, bad)
        r = _in_fresh_netns([outrigger_bin, "--check-config", "-c", path])
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
        lines = [l for l in r.stderr.splitlines() if l.startswith(path + ": resources[")]
        assert len(lines) == 3, r.stderr
        assert lines[0].startswith(path + ": resources[3].workload.addresses[0]: "), lines
        assert lines[1].startswith(path + ": resources[4].workload.addresses[0]: not base64"), lines
        assert lines[2].startswith(path + ": resources[5].@type: "), lines
        assert "istio.workload.Nope" in lines[2]
        assert "3 of 6 resources refused" in r.stderr

        for cfg, want in (({"mesh": {"outboundTrafficPolicy": {"mode": "DENY"}}},
                           "mesh.outboundTrafficPolicy.mode: expected"),
                          ({"resources": {"@type": ADDR_T}}, "resources: expected a list"),
                          ({"resources": [workload("a", b64_ip4(10, 0, 0, 1)), 3]}, "resources[1]: expected an object")):
            with open(path, "w") as f:
                json.dump(cfg, f)
            r = _in_fresh_netns([outrigger_bin, "--check-config", "-c", path])
            assert r.returncode == 2 and want in r.stderr, (cfg, r.returncode, r.stderr)


def test_dump_and_help_config_show_mesh(outrigger_bin):
    """--dump-config shows mesh.outboundTrafficPolicy.mode (and its value from the file);
    --help-config lists it and "resources"."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.json")
        resources_file(path, [], mesh={"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})
        r = _in_fresh_netns([outrigger_bin, "--dump-config", "-c", path])
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["mesh"] == {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
                                                "protocolDetectionTimeout": "0s", "useWaypoints": False,
                                                "accessLogFile": "", "accessLogEncoding": "TEXT"}
        r = _in_fresh_netns([outrigger_bin, "--dump-config"])
        assert json.loads(r.stdout)["mesh"]["outboundTrafficPolicy"]["mode"] == "ALLOW_ANY"
        r = _in_fresh_netns([outrigger_bin, "--help-config"])
        assert "mesh.outboundTrafficPolicy.mode" in r.stdout and "ALLOW_ANY" in r.stdout, r.stdout
        assert "\n  resources " in r.stdout, r.stdout


def test_start_and_sighup_keep_good_resources(mesh_factory):
    """A start with a refused resource logs it with its path and runs with the others
    (server.resources_address counts them, server.resources_refused the refusal); SIGHUP
    with a bad edit of a running workload keeps its running version (the count does not
    drop; /config_dump still shows its old address), counts as an applied reload, and logs
    the refusal; an invalid "mesh" is a failed reload that keeps everything."""
    res = [workload("a", b64_ip4(10, 9, 0, 1)), workload("b", b64_ip4(10, 9, 0, 2)),
           workload("bad", BAD_LEN)]
    m = mesh_factory(client_config={"proxy": {"concurrency": 2}, "resources": res})
    st = m.csc.stats()
    assert st["server.model_builds"] == 1
    assert st["server.resources_address"] == 2
    assert st["server.resources_refused"] == 1
    assert st["server.resources_cluster"] == 0
    log = m.csc.log()
    assert "resource refused: resources[2].workload.addresses[0]: " in log, log[-3000:]
    assert set(dump_addresses(m.csc.config_dump())) == {"cluster1//Pod/default/a", "cluster1//Pod/default/b"}
    r, out = m.client.client(["echo-client", "--host", ECHO_VIP, "--port", 80, "--count", 2, "--timeout", 10])
    assert out is not None and out["ok"] == 2, out

    # a's address goes bad: a keeps its running version; c is new; b and "bad" are gone.
    resources_file(m.csc.config_path, [workload("a", BAD_LEN), workload("c", b64_ip4(10, 9, 0, 3))])
    m.csc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: m.csc.stats().get("server.config_generation") == 2, timeout=10, what="generation 2")
    st = m.csc.stats()
    assert st["server.config_reload_success"] == 1
    assert st["server.config_reload_failure"] == 0
    assert st["server.model_builds"] == 2
    assert st["server.resources_refused"] == 2
    assert st["server.resources_address"] == 2, "a (kept) and c"
    log = m.csc.log()
    assert "resources[0].workload.addresses[0]: " in log and "(the previous version stays)" in log, log[-3000:]
    code, prom, _ = m.csc._get("http://127.0.0.1:15000/stats/prometheus")
    assert "outrigger_server_resources_address 2\n" in prom
    assert "# TYPE outrigger_server_resources_refused counter" in prom
    assert "outrigger_server_model_builds 2\n" in prom
    dump = m.csc.config_dump()
    assert dump["config"]["mesh"]["outboundTrafficPolicy"]["mode"] == "ALLOW_ANY"
    # /config_dump shows the running version of a (its old address), the new c, no b.
    assert dump_addresses(dump) == {"cluster1//Pod/default/a": [b64_ip4(10, 9, 0, 1)],
                                    "cluster1//Pod/default/c": [b64_ip4(10, 9, 0, 3)]}, dump["resources"]

    # The file itself invalid: nothing changes.
    resources_file(m.csc.config_path, [workload("d", b64_ip4(10, 9, 0, 4))],
                   mesh={"outboundTrafficPolicy": {"mode": "DENY"}})
    m.csc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: m.csc.stats().get("server.config_reload_failure") == 1, timeout=10, what="failure 1")
    st = m.csc.stats()
    assert st["server.config_generation"] == 2
    assert st["server.model_builds"] == 2
    assert st["server.resources_address"] == 2
    assert "mesh.outboundTrafficPolicy.mode: expected" in m.csc.log()
    assert set(dump_addresses(m.csc.config_dump())) == {"cluster1//Pod/default/a", "cluster1//Pod/default/c"}

    resources_file(m.csc.config_path, [workload("d", b64_ip4(10, 9, 0, 4))],
                   mesh={"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}})
    m.csc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: m.csc.stats().get("server.config_generation") == 3, timeout=10, what="generation 3")
    assert m.csc.stats()["server.resources_address"] == 1
    dump = m.csc.config_dump()
    assert dump["config"]["mesh"]["outboundTrafficPolicy"]["mode"] == "REGISTRY_ONLY"
    assert dump_addresses(dump) == {"cluster1//Pod/default/d": [b64_ip4(10, 9, 0, 4)]}


NRELOADS = 200


def test_200_reloads_under_traffic_lose_no_byte(mesh_factory):
    """Issue 8 "Live swap": 200 SIGHUPs, each with other resources (workloads added,
    moved and removed, every 25th with a bad edit of w0, refused by the builder or by the
    decoder, that keeps its running version), while
    an open connection echoes a checked pattern after every reload and new connections
    stream 4 MB each to a sink that checks count and SHA-256. No byte is lost or changed,
    every reload applies, and the counts match the last file. Bounded: 200 reloads, at most
    ~120 s."""
    m = mesh_factory(client_config={"proxy": {"concurrency": 2},
                                    "resources": [workload("w0", b64_ip4(10, 8, 0, 1))]})
    ia = m.client.interactive(ECHO_VIP, 80, timeout=20)
    stop = threading.Event()
    sends = []

    def sender():
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            r, out = m.client.client(["send", "--host", SINK_VIP, "--port", 80, "--bytes", 4 << 20,
                                      "--seed", len(sends) + 1, "--timeout", 30], timeout=40)
            sends.append(out)

    th = threading.Thread(target=sender)
    refused = 0
    try:
        assert ia.connected, ia.hello
        th.start()
        t_end = time.monotonic() + 120
        for g in range(2, NRELOADS + 2):
            assert time.monotonic() < t_end, "200 reloads took over 120 s (at %d)" % g
            n = 1 + g % 4
            res = [workload("w%d" % i, b64_ip4(10, 8, g % 250, i + 1)) for i in range(n)]
            if g % 25 == 0:
                # w0 is in every file: its running version stays, whether the builder
                # (5 bytes) or the decoder (not base64) refuses the edit.
                res[0] = workload("w0", BAD_LEN if g % 50 else "$$$$")
                refused += 1
            resources_file(m.csc.config_path, res)
            m.csc.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: m.csc.stats().get("server.config_generation") == g, timeout=10, interval=0.02,
                     what="generation %d" % g)
            assert ia.cmd("echo 20000") == "OK 20000", "the open connection lost bytes at generation %d" % g
            if g % 25 == 0:
                assert m.csc.stats()["server.resources_address"] == n, "w0's running version was not kept"
        stop.set()
        th.join(timeout=60)
        assert not th.is_alive()
    finally:
        stop.set()
        ia.close()
    st = m.csc.stats()
    assert st["server.config_reload_success"] == NRELOADS
    assert st["server.config_reload_failure"] == 0
    assert st["server.model_builds"] == NRELOADS + 1
    assert st["server.resources_refused"] == refused
    assert st["server.resources_address"] == 1 + (NRELOADS + 1) % 4
    assert len(sends) >= 2, "the streams did not overlap the reloads: %r" % sends
    bad = [s for s in sends if not (s and s.get("ok"))]
    assert not bad, "streams lost or changed bytes: %r" % bad[:3]
    assert m.csc.alive()
