"""Access logs end to end (issue 12, "Access logs"): one line per connection, written by the
real sidecars for real connections, read back as Envoy's and Istio's users read them (JSON
lines with python's json, TEXT lines split on spaces).

    app(client pod) -> VIP --> client outrigger :15001 (outbound line)
        -> server pod --> server outrigger :15006 (inbound line) -> app
    openssl s_client (mesh cert) -> server :15006 / python3-h2 CONNECT -> server :15008

Covered: exactly one line per connection with the addresses, the bytes (N known bytes sent),
the identities and the flags; a refused upstream gives UF; an authorization denial gives
the policy name, the RBAC flag and the decision (15006 and HBONE's 401); the /logging
switch turns lines on and off (and JSON) live; a file destination, renamed then SIGHUP,
is reopened and the next lines go to the new file.
"""
import json
import os
import signal
import time

import pytest

import certs
import meshres
from lab import wait_for
from test_authz import CLIENT_ID, H2CLIENT, NS, SERVER_ID, Mesh as AuthzMesh, authz, one

SINK_VIP = "198.19.0.11"   # conftest's build_mesh: sink :8081 behind it
ECHO_VIP = "198.19.0.10"   # echo :8080
NOWHERE = "198.19.0.99"    # a VIP with no backend: the connect fails
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def al_dir(L):
    os.chmod(L.dir, 0o755)
    d = os.path.join(L.dir, "accesslog")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o777)       # the sidecars run as uid 1337
    return d


def read_lines(path):
    try:
        with open(path, errors="replace") as f:
            return [l for l in f.read().splitlines() if l.strip()]
    except FileNotFoundError:
        return []


def json_lines(path, n, timeout=10):
    """Wait for n lines in path, then parse every one as JSON (all must parse)."""
    wait_for(lambda: len(read_lines(path)) >= n, timeout=timeout, what="%d access log lines in %s" % (n, path))
    time.sleep(0.3)          # nothing more may follow
    return [json.loads(l) for l in read_lines(path)]


def mesh_cfg(path, enc="JSON"):
    return {"mesh": {"accessLogFile": path, "accessLogEncoding": enc}}


def admin(sc, method, query):
    r = sc.pod.run(["curl", "-sS", "-X", method, "-w", "\n%{http_code}",
                    "http://127.0.0.1:15000/logging" + query], check=False, timeout=10)
    body, _, code = r.stdout.rpartition("\n")
    return int(code) if code.strip().isdigit() else 0, body


def sink_reply_len(n):
    """The sink's reply to n bytes with --reply-bytes 0: "<n> <sha> 0 <sha of nothing>\\n"."""
    return len("%d %s 0 %s\n" % (n, "x" * 64, EMPTY_SHA))


def test_one_line_per_connection_both_sidecars(mesh_factory, pod_lab):
    """A connection through both sidecars gives exactly one JSON line on each, with the
    addresses, the N known bytes each way, no flag, the clusters and (inbound) the
    authorization decision; a connection to a VIP with no backend gives UF."""
    d = al_dir(pod_lab)
    cpath, spath = os.path.join(d, "client.log"), os.path.join(d, "server.log")
    m = mesh_factory(client_config=mesh_cfg(cpath), server_config=mesh_cfg(spath))
    n = 123457
    r, out = m.client.client(["send", "--host", SINK_VIP, "--port", 80, "--bytes", n, "--timeout", 20])
    assert out and out.get("server_count") == n, r.stdout + r.stderr
    reply = sink_reply_len(n)

    (c,) = json_lines(cpath, 1)
    assert c["direction"] == "outbound" and c["listener"] == "outbound"
    assert c["downstream_local_address"] == "%s:80" % SINK_VIP
    assert c["upstream_host"] == "%s:80" % SINK_VIP
    assert c["downstream_remote_address"].startswith(m.client.ip4 + ":")
    assert c["bytes_received"] == n and c["bytes_sent"] == reply
    assert c["response_flags"] == "-"
    assert c["upstream_cluster"] == "PassthroughCluster"
    assert c["source_principal"] is None and c["destination_principal"] is None
    assert c["authorization_decision"] is None
    assert c["start_time"].endswith("Z") and "T" in c["start_time"]
    assert isinstance(c["duration"], int) and 0 <= c["duration"] < 20000
    assert c["protocol"] is None and c["response_code"] == 0

    (s,) = json_lines(spath, 1)
    assert s["direction"] == "inbound" and s["listener"] == "inbound"
    assert s["downstream_local_address"] == "%s:8081" % m.server.ip4
    assert s["downstream_remote_address"].startswith(m.client.ip4 + ":")
    assert s["upstream_host"] == "%s:8081" % m.server.ip4
    assert s["upstream_cluster"] == "inbound|8081||"
    assert s["bytes_received"] == n and s["bytes_sent"] == reply
    assert s["response_flags"] == "-"
    assert s["authorization_decision"] == "allow" and s["authorization_policy"] is None

    # A refused upstream: UF, the host it tried.
    ia = m.client.interactive(NOWHERE, 80)
    try:
        if not ia.hello.startswith("RESET"):
            ia.cmd("recv 8", timeout=15)
    finally:
        ia.close()
    lines = json_lines(cpath, 2)
    assert len(lines) == 2
    assert lines[1]["response_flags"] == "UF"
    assert lines[1]["upstream_host"] == "%s:80" % NOWHERE
    assert lines[1]["bytes_received"] == 0 and lines[1]["bytes_sent"] == 0
    assert len(read_lines(spath)) == 1          # nothing reached the server
    assert m.csc.stats()["server.access_log_dropped"] == 0


def test_service_cluster_endpoint_and_uh(mesh_factory, pod_lab):
    """Through a service VIP in the mesh model: the original destination is the VIP, the
    upstream host the endpoint chosen, the cluster Istio's outbound|port||hostname; a service
    with no endpoint gives UH and no upstream host."""
    d = al_dir(pod_lab)
    cpath = os.path.join(d, "client.log")
    # The server pod's address is known only once the lab has it: build it, then restart
    # the client sidecar with the model (the lab's VIPs are not used here).
    m = mesh_factory()
    vip, empty = "198.19.0.30", "198.19.0.31"
    res = [meshres.service("sinksvc", [vip], [(80, 8081)]),
           meshres.service("empty", [empty], [(80, 8081)]),
           meshres.workload("Kubernetes//Pod/default/server", "server", [m.server.ip4],
                            {meshres.key("sinksvc"): [(80, 8081)]})]
    cfg = dict(mesh_cfg(cpath), resources=res)
    assert m.csc.stop() == 0
    m.csc = m.client.start_sidecar(config=cfg, run_init=False)   # the capture rules stay
    n = 5000
    r, out = m.client.client(["send", "--host", vip, "--port", 80, "--bytes", n, "--timeout", 20])
    assert out and out.get("server_count") == n, r.stdout + r.stderr
    (c,) = json_lines(cpath, 1)
    assert c["downstream_local_address"] == "%s:80" % vip
    assert c["upstream_host"] == "%s:8081" % m.server.ip4
    assert c["upstream_cluster"] == "outbound|80||sinksvc.default.svc.cluster.local"
    assert c["bytes_received"] == n and c["bytes_sent"] == sink_reply_len(n)
    assert c["response_flags"] == "-"

    ia = m.client.interactive(empty, 80)
    try:
        if not ia.hello.startswith("RESET"):
            ia.cmd("recv 8", timeout=15)
    finally:
        ia.close()
    lines = json_lines(cpath, 2)
    assert lines[1]["response_flags"] == "UH"
    assert lines[1]["upstream_host"] is None
    assert lines[1]["upstream_cluster"] == "outbound|80||empty.default.svc.cluster.local"
    assert lines[1]["downstream_local_address"] == "%s:80" % empty


@pytest.fixture
def amesh(pod_lab):
    return AuthzMesh(pod_lab)


def test_identities_and_authorization(amesh, pod_lab):
    """Istio mTLS on 15006 and HBONE on 15008 with development-CA identities: an allowed
    connection names the client as source and the server as destination; a denied one
    (15006 reset, HBONE 401) gives the RBAC flag, the deciding policy and "deny"."""
    m = amesh
    path = os.path.join(al_dir(pod_lab), "server.log")
    deny = authz("deny-other", "DENY", one(principals=[{"exact": "cluster.local/ns/default/sa/other"}]))
    m.start([deny], extra=mesh_cfg(path))
    assert m.mtls()
    (a,) = json_lines(path, 1)
    assert a["listener"] == "inbound"
    assert a["source_principal"] == CLIENT_ID
    assert a["destination_principal"] == SERVER_ID
    assert a["authorization_decision"] == "allow" and a["authorization_policy"] is None
    assert a["response_flags"] == "-" and a["bytes_sent"] > 0 and a["bytes_received"] > 0
    assert a["upstream_cluster"] == "inbound|8080||"

    assert m.hbone() == 200
    lines = json_lines(path, 2)
    h = lines[1]
    assert h["listener"] == "hbone" and h["direction"] == "inbound"
    assert h["source_principal"] == CLIENT_ID and h["destination_principal"] == SERVER_ID
    assert h["downstream_remote_address"].startswith(m.client.ip4 + ":")
    assert h["downstream_local_address"] == "%s:8080" % m.server.ip4
    assert h["bytes_received"] == 1      # --send x
    assert h["authorization_decision"] == "allow"

    deny_client = authz("deny-client", "DENY", one(principals=[{"exact": "cluster.local/ns/default/sa/client"}]))
    m.reload([deny_client], extra=mesh_cfg(path))
    assert not m.mtls()
    lines = json_lines(path, 3)
    x = lines[2]
    assert x["listener"] == "inbound"
    assert x["response_flags"] == "RBAC"
    assert x["authorization_decision"] == "deny"
    assert x["authorization_policy"] == "%s/deny-client" % NS
    assert x["connection_termination_details"] == "rbac_access_denied_matched_policy[%s/deny-client]" % NS
    assert x["source_principal"] == CLIENT_ID
    assert x["upstream_host"] is None and x["bytes_sent"] == 0

    assert m.hbone() == 401
    lines = json_lines(path, 4)
    y = lines[3]
    assert y["listener"] == "hbone" and y["response_flags"] == "RBAC"
    assert y["authorization_policy"] == "%s/deny-client" % NS and y["authorization_decision"] == "deny"
    assert y["source_principal"] == CLIENT_ID
    assert len(read_lines(path)) == 4

    # A CONNECT to an address that is not this pod's: 400, NR, the target asked for.
    argv = ["/usr/bin/python3", H2CLIENT, "client", "--host", m.server.ip4,
            "--authority", "192.0.2.7:8080", "--ca", os.path.join(m.server_dir, "root-cert.pem"),
            "--certs", m.client_dir, "--send", "x"]
    r = m.client.run(argv, check=False, timeout=40)
    assert json.loads(r.stdout.strip().splitlines()[-1]).get("status") == 400, r.stdout + r.stderr
    lines = json_lines(path, 5)
    z = lines[4]
    assert z["listener"] == "hbone" and z["response_flags"] == "NR"
    assert z["downstream_local_address"] == "192.0.2.7:8080"
    assert z["authorization_decision"] is None and z["source_principal"] == CLIENT_ID


def test_logging_switch_live(mesh_factory, pod_lab):
    """No access log configured (Istio's default): nothing. POST /logging?access_log=on:
    lines on the sidecar's stdout, TEXT; ?access_log_encoding=json: JSON; off: nothing
    more. A GET that would change state is 405; ?level=debug is Envoy's form."""
    m = mesh_factory()
    sc = m.csc

    def connect():
        r, out = m.client.client(["echo-client", "--host", ECHO_VIP, "--port", 80, "--count", 1,
                                  "--bytes", 100, "--timeout", 10])
        assert out and out["ok"] == 1, r.stdout + r.stderr

    def al_lines():
        return [l for l in sc.log().splitlines() if "PassthroughCluster" in l]

    connect()
    time.sleep(0.5)
    assert al_lines() == []
    code, body = admin(sc, "GET", "")
    assert code == 200 and "access log: off" in body, body
    assert admin(sc, "GET", "?access_log=on")[0] == 405
    code, body = admin(sc, "POST", "?access_log=on")
    assert code == 200 and "access log: on" in body and "/dev/stdout" in body, body
    connect()
    wait_for(lambda: len(al_lines()) == 1, timeout=5, what="one TEXT line on stdout")
    f = al_lines()[0].split()
    assert f[0].startswith("[") and f[4] == "0" and f[5] == "-"
    assert f[9] == "100" and f[10] == "100"        # bytes received / sent
    assert f[17] == '"%s:80"' % ECHO_VIP and f[18] == "PassthroughCluster"

    assert admin(sc, "POST", "?access_log_encoding=json")[0] == 200
    connect()
    wait_for(lambda: len(al_lines()) == 2, timeout=5, what="a JSON line")
    j = json.loads(al_lines()[1])
    assert j["bytes_received"] == 100 and j["upstream_host"] == "%s:80" % ECHO_VIP

    assert admin(sc, "POST", "?access_log=off")[0] == 200
    connect()
    time.sleep(0.5)
    assert len(al_lines()) == 2
    assert admin(sc, "POST", "?access_log=sometimes")[0] == 400
    code, body = admin(sc, "POST", "?level=debug")
    assert code == 200 and "outrigger: debug" in body
    assert admin(sc, "POST", "?level=info")[0] == 200


def test_file_reopened_on_sighup(mesh_factory, pod_lab):
    """logrotate's way: the file is renamed, SIGHUP, and the next line goes to a new file of
    the configured name while the renamed one keeps the old lines."""
    d = al_dir(pod_lab)
    path = os.path.join(d, "client.log")
    m = mesh_factory(client_config=mesh_cfg(path, "TEXT"))

    def connect():
        r, out = m.client.client(["echo-client", "--host", ECHO_VIP, "--port", 80, "--count", 1,
                                  "--bytes", 10, "--timeout", 10])
        assert out and out["ok"] == 1, r.stdout + r.stderr

    connect()
    wait_for(lambda: len(read_lines(path)) == 1, timeout=5, what="the first line")
    os.rename(path, path + ".1")
    before = m.csc.stats().get("server.config_reload_success", 0)
    m.csc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: m.csc.stats().get("server.config_reload_success", 0) > before, timeout=10,
             what="the reload")
    connect()
    wait_for(lambda: len(read_lines(path)) == 1, timeout=5, what="a line in the new file")
    assert len(read_lines(path + ".1")) == 1
    assert read_lines(path)[0].split()[9] == "10"


def test_outbound_mtls_identities(pod_lab, outrigger_bin, init_bin):
    """Outbound Istio mTLS (the server pod's Workload says LEGACY_ISTIO_MTLS): this proxy is the
    source principal and the verified server the destination; the cluster is the service's."""
    import test_outbound_mtls as om
    d = os.path.join(pod_lab.dir, "pki-al")
    ca = certs.CA(os.path.join(d, "ca"))
    ca.issue(os.path.join(d, "client"), om.ID_CLIENT)
    ca.issue(os.path.join(d, "server"), om.ID_SERVER)
    for root, dirs, files in os.walk(d):
        os.chmod(root, 0o755)
    path = os.path.join(al_dir(pod_lab), "client.log")
    client, server = om._pods(pod_lab)
    ss = om.SServer(pod_lab, server, os.path.join(d, "server"), ca.cert)
    cfg = meshres.config(om._wds(server), proxy={"logLevel": "debug"})
    cfg.update(mesh_cfg(path))
    client.start_sidecar(config=cfg, proxy_args=("--cert-dir", os.path.join(d, "client")))
    code, body = client.curl("http://%s/" % om.VIP, user="nobody")
    assert code == 200 and "s_server" in body, body
    ss.text()
    (c,) = json_lines(path, 1)
    assert c["source_principal"] == om.ID_CLIENT
    assert c["destination_principal"] == om.ID_SERVER
    assert c["upstream_cluster"] == om.SNI_SVC
    assert c["upstream_host"] == "%s:%d" % (server.ip4, om.TARGET)
    assert c["downstream_local_address"] == "%s:%d" % (om.VIP, om.PORT)
    assert c["bytes_sent"] > len(body.encode())        # the page and its headers
    assert c["bytes_received"] > 0                     # curl's request
    assert c["response_flags"] == "-"


def test_closed_stdout_is_not_reused(pod_lab, outrigger_bin):
    """Started with stdout closed (a service manager's `>&-`), the first descriptor the proxy
    opens would be 1, and access log lines meant for /dev/stdout would go into it (an epoll,
    a connection). Descriptors 0-2 are held on /dev/null at start instead (outsider review)."""
    pod = pod_lab.add_pod("solo")
    d = al_dir(pod_lab)
    cfg = os.path.join(d, "cfg.json")
    with open(cfg, "w") as f:
        json.dump({"proxy": {"concurrency": 1}, "mesh": {"accessLogFile": "/dev/stdout"}}, f)
    log = open(os.path.join(d, "solo-stderr.log"), "wb")
    p = pod.popen(["sh", "-c", 'exec "$0" -c "$1" >&- <&-', outrigger_bin, cfg], stderr=log)
    log.close()
    wait_for(lambda: pod.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              "http://127.0.0.1:15021/healthz/ready"], check=False).stdout == "200",
             timeout=10, what="the proxy ready")
    for fd in (0, 1):
        assert os.readlink("/proc/%d/fd/%d" % (p.pid, fd)) == "/dev/null", fd
    p.terminate()
    p.wait(timeout=10)
