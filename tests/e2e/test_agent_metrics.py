"""The merged metrics on the status port (issue 12: ":15020/stats/prometheus", pilot-agent's
metrics merge). A sidecar started with ISTIO_PROMETHEUS_ANNOTATIONS (what Istio's injector sets
from the pod's prometheus.io/* annotations) answers GET :15020/stats/prometheus with its own
families followed by the app's, scraped from a real python3 http.server on the pod's loopback;
every body is read by prometheus_client's text parser. App down, slow, malformed or huge: our
metrics are still served and the failure is counted; the control loop never waits for the app.

    curl (pod or node) -> :15020 outrigger --GET <path>--> 127.0.0.1:<port> python app
"""
import json
import os
import shutil
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import lab
from lab import LabError, wait_for

APP_PORT = 9100

# A metrics app: every path serves families named after it, so each target of a multi-target
# scrape is told apart; some paths misbehave on purpose.
APP = r'''
import http.server, socket, socketserver, sys, time, urllib.parse

def body(name):
    return ("# HELP app_%s_requests_total Requests the app served.\n"
            "# TYPE app_%s_requests_total counter\n"
            "app_%s_requests_total{code=\"200\"} 7.0\n"
            "# HELP app_%s_temperature_celsius A gauge.\n"
            "# TYPE app_%s_temperature_celsius gauge\n"
            "app_%s_temperature_celsius 21.5\n" % ((name,) * 6)).encode()

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def send(self, code, data, ctype="text/plain; version=0.0.4", length=True):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        u = urllib.parse.urlsplit(self.path)
        p, q = u.path.strip("/"), u.query
        if p == "metrics" or p == "plain":
            self.send(200, body(p))
        elif p == "seen":
            ua = self.headers.get("User-Agent", "").replace('"', "'")
            to = self.headers.get("X-Prometheus-Scrape-Timeout-Seconds", "")
            acc = self.headers.get("Accept", "").replace('"', "'")
            self.send(200, ('app_seen_info{ua="%s",timeout="%s",accept="%s"} 1\n' % (ua, to, acc)).encode())
        elif p == "nonl":
            self.send(200, body(p).rstrip(b"\n"))
        elif p == "chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            b = body(p)
            for part in (b[:10], b[10:50], b[50:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
        elif p == "close":
            # HTTP/1.0-style: no Content-Length, the body ends with the connection.
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
            self.wfile.write(body(p))
            self.close_connection = True
        elif p == "om":
            self.send(200, body(p) + b"# EOF\n", ctype="application/openmetrics-text; version=1.0.0")
        elif p == "slow":
            time.sleep(float(q or "5"))
            self.send(200, body(p))
        elif p == "huge":
            line = b"app_huge_filler_total 1\n"
            self.send(200, line * (11 * 1024 * 1024 // len(line) + 1))
        elif p == "nine":
            # 9 MiB: under the per-target cap; two of them are over the merged cap.
            line = b"# " + b"f" * 1021 + b"\n"
            self.send(200, line * (9 * 1024) + b"app_nine_total 1\n")
        elif p == "endless":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                while True:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass
        elif p == "bigheaders":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            try:
                for i in range(200000):
                    self.wfile.write(b"X-Filler-%d: %s\r\n" % (i, b"y" * 100))
            except OSError:
                pass
            self.close_connection = True
        elif p == "garbage":
            self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n\x00\x01\x02")
            self.close_connection = True
        elif p == "cut":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\napp_cut_total 1\n")
            self.close_connection = True
        elif p == "error":
            self.send(500, b"app_error_total 1\n")
        else:
            self.send(404, b"no\n")

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
if ":" in host:
    S.address_family = socket.AF_INET6
s = S((host, int(sys.argv[1])), H)
print("READY", flush=True)
s.serve_forever()
'''

CTYPE = "text/plain; version=0.0.4; charset=utf-8"


def start_app(pod, port=APP_PORT, host="127.0.0.1"):
    p = pod.popen([lab.PYTHON, "-c", APP, str(port), host], user="nobody", stdout=subprocess.PIPE,
                  stderr=subprocess.DEVNULL)
    line = lab.read_line(p.stdout, 10)
    assert line.startswith(b"READY"), line
    return p


def annotations(**kw):
    return {"ISTIO_PROMETHEUS_ANNOTATIONS": json.dumps(kw)}


def get(pod, path="/stats/prometheus", port=15020, headers=(), timeout=15, host="127.0.0.1"):
    """GET on the pod's loopback with curl: (status, content type, body, seconds)."""
    argv = ["curl", "-sS", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code} %{content_type}"]
    for h in headers:
        argv += ["-H", h]
    t0 = time.monotonic()
    r = pod.run(argv + ["http://%s:%d%s" % (host, port, path)], check=False, timeout=timeout + 5)
    dt = time.monotonic() - t0
    body, _, tail = r.stdout.rpartition("\n")
    code, _, ctype = tail.partition(" ")
    return (int(code) if code.isdigit() else 0), ctype, body + "\n" if body else body, dt


def families(text):
    """{family name: family} through prometheus_client's text-format parser (raises on bad text)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, family, sample=None, **labels):
    for s in fams[family].samples:
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((family, sample, labels))


def ours(fams):
    return "outrigger_server_config_generation" in fams and "outrigger_listener_downstream_cx_active" in fams


@pytest.fixture
def pod(pod_lab, outrigger_bin, init_bin):
    return pod_lab.add_pod("app")


def test_merged_body_has_ours_and_the_apps(pod):
    """Issue 12: with prometheus.io annotations (scrape, port, path) passed as pilot-agent
    reads them, :15020/stats/prometheus (and pilot-agent's other path, /metrics) serves our
    families, pilot-agent's istio_agent_* scrape counters and the app's families, in one text
    body a real Prometheus parser reads; /healthz/ready answers on 15020 too, and 15020 is on
    every address (reached here on the pod's IP from the node)."""
    start_app(pod)
    sc = pod.start_sidecar(env=annotations(scrape="true", port=str(APP_PORT), path="/metrics"))
    code, ctype, body, _ = get(pod)
    assert code == 200, body[:500]
    assert ctype == CTYPE
    fams = families(body)
    assert ours(fams), sorted(fams)[:20]
    assert value(fams, "app_metrics_requests", "app_metrics_requests_total", code="200") == 7.0
    assert value(fams, "app_metrics_temperature_celsius") == 21.5
    assert value(fams, "istio_agent_scrapes") == 1
    assert value(fams, "istio_agent_scrape_failures", type="application") == 0
    # Ours first, the app's last (pilot-agent's order).
    assert body.index("outrigger_server_config_generation") < body.index("app_metrics_requests_total")
    code, _, body2, _ = get(pod, "/metrics")
    assert code == 200 and "app_metrics_requests_total" in body2
    assert value(families(body2), "istio_agent_scrapes") == 2
    assert get(pod, "/healthz/ready")[0] == 200
    assert get(pod, "/nope")[0] == 404
    st = sc.stats()
    assert st["server.status_scrapes"] == 2
    assert st["server.app_scrape_failures"] == 0
    r = pod.lab.node_run(["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                          "http://%s:15020/healthz/ready" % pod.ip], check=False)
    assert r.stdout.strip() == "200", r.stderr


def test_app_on_ipv6_loopback_only(pod):
    """pilot-agent dials localhost, which Go tries as 127.0.0.1 and then ::1: an app listening
    on [::1] only is merged too (127.0.0.1 refuses, ::1 is tried next)."""
    start_app(pod, host="::1")
    pod.start_sidecar(env=annotations(port=str(APP_PORT)))
    code, _, body, _ = get(pod)
    assert code == 200
    fams = families(body)
    assert ours(fams) and value(fams, "app_metrics_temperature_celsius") == 21.5
    assert value(fams, "istio_agent_scrape_failures", type="application") == 0


def test_headers_forwarded_and_text_format_asked(pod):
    """pilot-agent passes the scraper's User-Agent and X-Prometheus-Scrape-Timeout-Seconds to
    the app; we do too, and ask the app for the text format (our body is text)."""
    start_app(pod)
    pod.start_sidecar(env=annotations(port=str(APP_PORT), path="/seen"))
    code, _, body, _ = get(pod, headers=("User-Agent: Prometheus/2.45.0",
                                         "X-Prometheus-Scrape-Timeout-Seconds: 3.5"))
    assert code == 200
    s = [x for x in families(body)["app_seen_info"].samples][0]
    assert s.labels["ua"] == "Prometheus/2.45.0"
    assert s.labels["timeout"] == "3.5"
    assert s.labels["accept"].startswith("text/plain;version=0.0.4")


def test_no_annotations_or_scrape_false_serves_ours_only(pod):
    """No ISTIO_PROMETHEUS_ANNOTATIONS (a pod without prometheus.io annotations), or
    "scrape": "false": 15020 serves ours alone, at once, and counts no failure."""
    start_app(pod)
    sc = pod.start_sidecar()
    code, ctype, body, _ = get(pod)
    assert code == 200 and ctype == CTYPE
    fams = families(body)
    assert ours(fams) and not any(n.startswith("app_") for n in fams)
    sc.stop()
    sc = pod.start_sidecar(env=annotations(scrape="false", port=str(APP_PORT)), run_init=False)
    code, _, body, _ = get(pod)
    fams = families(body)
    assert code == 200 and ours(fams) and not any(n.startswith("app_") for n in fams)
    assert value(fams, "istio_agent_scrape_failures", type="application") == 0


def test_app_down_ours_served_and_failure_counted(pod):
    """The app's port refuses: 15020 still answers 200 with ours, and each scrape counts one
    failure (outrigger_server_app_scrape_failures and pilot-agent's
    istio_agent_scrape_failures_total{type="application"})."""
    sc = pod.start_sidecar(env=annotations(scrape="true", port="9199"))
    for n in (1, 2):
        code, _, body, dt = get(pod)
        assert code == 200 and dt < 3
        fams = families(body)
        assert ours(fams)
        assert value(fams, "istio_agent_scrape_failures", type="application") == n
        assert value(fams, "outrigger_server_app_scrape_failures") == n
    assert sc.stats()["server.app_scrape_failures"] == 2
    assert "app metrics 127.0.0.1:9199/metrics" in sc.log()


def test_slow_app_times_out_and_the_loop_is_not_blocked(pod):
    """The app sleeps 6 s, past proxy.statusScrapeTimeout (1 s): 15020 answers after about 1 s
    with ours only and the failure counted; while it waits, the admin port and 15021 answer at
    once (the scrape is non-blocking on the control loop). A scraper's shorter
    X-Prometheus-Scrape-Timeout-Seconds (0.3) cuts the wait further."""
    start_app(pod)
    sc = pod.start_sidecar(config={"proxy": {"statusScrapeTimeout": "1s"}},
                           env=annotations(port=str(APP_PORT), path="/slow?6"))
    bg = pod.popen(["curl", "-sS", "-m", "15", "-o", "-", "-w", "\n%{http_code}",
                    "http://127.0.0.1:15020/stats/prometheus"], stdout=subprocess.PIPE)
    time.sleep(0.2)
    t0 = time.monotonic()
    assert sc.health() == 200
    code, body, _ = sc._get("http://127.0.0.1:15000/stats")
    assert code == 200 and time.monotonic() - t0 < 0.9, "admin blocked by the app scrape"
    out, _ = bg.communicate(timeout=15)
    dt = time.monotonic() - t0 + 0.2
    text, _, code = out.decode().rpartition("\n")
    assert code == "200"
    assert 0.7 < dt < 4, dt
    fams = families(text + "\n")
    assert ours(fams) and "app_slow_requests" not in fams
    assert value(fams, "istio_agent_scrape_failures", type="application") == 1
    code, _, body, dt = get(pod, headers=("X-Prometheus-Scrape-Timeout-Seconds: 0.3",))
    assert code == 200 and dt < 0.9, dt
    assert value(families(body), "istio_agent_scrape_failures", type="application") == 2


def test_concurrent_requests_share_one_scrape(pod):
    """Requests that arrive while the app is being scraped wait for the same scrape (one app
    request at a time), and each gets the app's families."""
    start_app(pod)
    pod.start_sidecar(env=annotations(port=str(APP_PORT), path="/slow?1"))
    procs = [pod.popen(["curl", "-sS", "-m", "10", "http://127.0.0.1:15020/stats/prometheus"],
                       stdout=subprocess.PIPE) for _ in range(4)]
    outs = [p.communicate(timeout=15)[0].decode() for p in procs]
    for o in outs:
        fams = families(o)
        assert ours(fams) and "app_slow_requests" in fams
    assert get(pod)[0] == 200


def test_body_forms_and_targets(pod):
    """Content-Length, chunked, close-delimited, no trailing newline and OpenMetrics ("# EOF"
    removed) bodies, as several prometheus.istio.io/scrape-targets: each is merged in target
    order, and a body without its last newline does not glue its last sample to the next
    family's line."""
    start_app(pod)
    targets = [{"port": str(APP_PORT), "path": "/" + p} for p in ("nonl", "chunked", "close", "om", "plain")]
    pod.start_sidecar(env=annotations(targets=targets))
    code, _, body, _ = get(pod)
    assert code == 200, body[:300]
    fams = families(body)
    assert ours(fams)
    for p in ("nonl", "chunked", "close", "om", "plain"):
        assert value(fams, "app_%s_temperature_celsius" % p) == 21.5, p
    assert "app_nonl_temperature_celsius 21.5\n# HELP app_chunked" in body
    assert "# EOF" not in body
    assert value(fams, "istio_agent_scrape_failures", type="application") == 0


def test_bad_app_responses_are_bounded(pod):
    """Untrusted app answers: garbage, a 500, a body cut short, a body over 10 MiB, an endless
    chunked body and endless headers each fail alone (counted once per target), the good target
    is still merged, our metrics are served, and the proxy stays up; nothing of a refused body
    leaks into the answer."""
    start_app(pod)
    bad = ("garbage", "error", "cut", "huge", "endless", "bigheaders")
    targets = [{"port": str(APP_PORT), "path": "/" + p} for p in bad + ("plain",)]
    sc = pod.start_sidecar(config={"proxy": {"statusScrapeTimeout": "5s"}}, env=annotations(targets=targets))
    for n in (1, 2):
        code, _, body, dt = get(pod, timeout=20)
        assert code == 200, body[:300]
        assert dt < 5.5, dt
        fams = families(body)
        assert ours(fams)
        assert value(fams, "app_plain_temperature_celsius") == 21.5
        assert not any(x in body for x in ("app_huge_filler", "app_error", "app_cut", "xxxx"))
        assert value(fams, "istio_agent_scrape_failures", type="application") == len(bad) * n
        assert len(body) < 1024 * 1024
    assert sc.alive()
    log = sc.log()
    for why in ("status 500", "larger than 10 MiB", "malformed HTTP response",
                "connection closed before the whole response"):
        assert why in log, why


def test_merged_bodies_capped(pod):
    """Two targets of 9 MiB each: each is under pilot-agent's 10 MiB per-target cap, but
    together over the 16 MiB merged cap (every waiting request gets a copy): the first is
    merged, the second dropped and counted."""
    start_app(pod)
    targets = [{"port": str(APP_PORT), "path": "/nine"}, {"port": str(APP_PORT), "path": "/nine?2"}]
    sc = pod.start_sidecar(env=annotations(targets=targets))
    code, _, body, _ = get(pod, timeout=20)
    assert code == 200
    assert body.count("app_nine_total 1") == 1
    assert 9 * 1024 * 1024 < len(body) < 10 * 1024 * 1024
    assert value(families(body), "istio_agent_scrape_failures", type="application") == 1
    assert "bodies together exceed 16 MiB" in sc.log()


@pytest.mark.parametrize("env,why", [
    ("{not json", "not JSON"),
    ('{"port": 8080}', "port: expected a string"),
    ('{"port": "15020"}', "status port itself"),
    ('{"port": "015090"}', "reserved"),
    ('{"port": "99999"}', "invalid port"),
    ('{"path": "metrics"}', "must start with '/'"),
    ('{"path": "/a b"}', "space or control byte"),
    ('{"targets": [{"port": "x"}]}', "targets[0].port: invalid port"),
])
def test_bad_annotations_refused_at_start(pod, env, why):
    """pilot-agent refuses to start with an unusable scrape configuration; so do we, naming
    the variable and the key."""
    with pytest.raises(LabError) as e:
        pod.start_sidecar(env={"ISTIO_PROMETHEUS_ANNOTATIONS": env}, ready_timeout=5)
    assert "ISTIO_PROMETHEUS_ANNOTATIONS" in str(e.value) and why in str(e.value), str(e.value)[-600:]
    pod.sidecar = None


def test_metrics_localhost_access_only(pod):
    """pilot-agent's METRICS_LOCALHOST_ACCESS_ONLY=true: the merged metrics answer 403 to a
    client off the loopback (the node, on the pod's IP) and 200 on the pod's loopback;
    /healthz/ready stays open to all."""
    start_app(pod)
    env = annotations(port=str(APP_PORT))
    env["METRICS_LOCALHOST_ACCESS_ONLY"] = "true"
    sc = pod.start_sidecar(env=env)

    def node_get(path):
        r = pod.lab.node_run(["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                              "http://%s:15020%s" % (pod.ip, path)], check=False)
        return r.stdout.strip()
    assert node_get("/stats/prometheus") == "403"
    assert node_get("/metrics") == "403"
    assert node_get("/healthz/ready") == "200"
    code, _, body, _ = get(pod)
    assert code == 200 and "app_metrics_requests_total" in body
    assert sc.stats()["server.status_scrapes"] == 1


def test_logging_not_on_public_ports(pod):
    """Regression (merging the status port with tele's 15090 and accesslog's /logging): POST
    /logging changed the log level and access log from any address through 15090 (0.0.0.0),
    and would have on 15020. Only the loopback admin port takes it; 15090, 15020 and 15021
    answer 405, and the level stays."""
    sc = pod.start_sidecar()
    for port in (15090, 15020, 15021):
        r = pod.lab.node_run(["curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                              "http://%s:%d/logging?level=trace&access_log=on" % (pod.ip, port)],
                             check=False)
        assert r.stdout.strip() in ("404", "405"), (port, r.stdout, r.stderr)
    r = pod.run(["curl", "-sS", "-m", "5", "http://127.0.0.1:15000/logging"], check=False)
    assert "outrigger: info" in r.stdout, r.stdout
    assert "access log: off" in r.stdout, r.stdout
    r = pod.run(["curl", "-sS", "-m", "5", "-X", "POST", "http://127.0.0.1:15000/logging?level=debug"], check=False)
    assert "outrigger: debug" in r.stdout, r.stdout


def test_status_port_off(pod):
    """proxy.statusPort 0: nothing listens on 15020."""
    pod.start_sidecar(config={"proxy": {"statusPort": 0}})
    assert get(pod, "/healthz/ready", timeout=2)[0] == 0


def prom_query(pod, q, listen="127.0.0.1:19090"):
    r = pod.run(["curl", "-sS", "-m", "5", "-G", "--data-urlencode", "query=" + q,
                 "http://%s/api/v1/query" % listen], check=False, timeout=10)
    try:
        d = json.loads(r.stdout)
    except ValueError:
        return None
    assert d.get("status") == "success", (q, d)
    return d["data"]["result"]


def test_real_prometheus_scrapes_the_merged_endpoint(pod):
    """A real Prometheus (Debian's) scraping :15020/stats/prometheus as the injector's
    prometheus.io annotations point it (it asks for OpenMetrics first and sends its scrape
    timeout): our series and the app's are both stored, and its scrapes succeed."""
    if not shutil.which("prometheus"):
        pytest.skip("prometheus (Debian package) not installed")
    start_app(pod)
    pod.start_sidecar(env=annotations(port=str(APP_PORT), path="/metrics"))
    d = os.path.join(pod.lab.dir, "prometheus")
    os.makedirs(os.path.join(d, "data"))
    with open(os.path.join(d, "prometheus.yml"), "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: merged\n    metrics_path: /stats/prometheus\n"
                "    static_configs:\n      - targets: ['127.0.0.1:15020']\n")
    for root, dirs, files in os.walk(d):
        os.chmod(root, 0o777)
    log = open(os.path.join(pod.lab.dir, "prometheus.log"), "wb")
    pod.popen(["prometheus", "--config.file=" + os.path.join(d, "prometheus.yml"),
               "--storage.tsdb.path=" + os.path.join(d, "data"),
               "--web.listen-address=127.0.0.1:19090"], user="nobody", stdout=log,
              stderr=subprocess.STDOUT)
    log.close()

    def scrapes():
        r = prom_query(pod, "sum_over_time(up[5m])")
        return bool(r) and float(r[0]["value"][1]) >= 2
    wait_for(scrapes, timeout=30, what="two successful scrapes of 15020")
    assert prom_query(pod, "app_metrics_requests_total")
    assert prom_query(pod, "outrigger_server_config_generation")
    assert prom_query(pod, 'istio_agent_scrape_failures_total{type="application"} == 0')
    assert prom_query(pod, "up == 1")


def test_istio_tcp_metrics_merged_with_the_apps(pod_lab, outrigger_bin, init_bin):
    """Issue 12: Istio's standard metrics "on :15090/stats/prometheus and merged on
    :15020/stats/prometheus": after a real mTLS connection through both sidecars (test_telemetry's
    mesh), the server's 15020 body has the istio_tcp_* families with reporter="destination",
    pilot-agent's istio_agent_* families and the app's, all read by prometheus_client."""
    from test_telemetry import ID_SERVER, SERVER_NS, Mesh
    m = Mesh(pod_lab)
    start_app(m.server)
    m.csc = m.client.start_sidecar(config=m.config(), proxy_args=("--cert-dir", m.client_certs))
    env = annotations(port=str(APP_PORT), path="/metrics")
    env["POD_NAMESPACE"] = SERVER_NS
    m.ssc = m.server.start_sidecar(config=m.config(), proxy_args=("--cert-dir", m.server_certs), env=env)
    for sc in (m.csc, m.ssc):
        wait_for(lambda: sc.stats().get("server.cert_updates", 0) >= 1, timeout=10,
                 what="the sidecar's certificate loaded")
    m.send(1000)
    wait_for(lambda: "istio_tcp_connections_closed_total{" in get(m.server)[2], timeout=10,
             what="the connection closed in the server's 15020 body")
    code, _, body, _ = get(m.server)
    assert code == 200
    fams = families(body)
    assert value(fams, "istio_tcp_connections_opened", reporter="destination",
                 destination_principal=ID_SERVER) >= 1
    assert value(fams, "istio_tcp_received_bytes", reporter="destination") >= 1000
    assert value(fams, "app_metrics_requests", "app_metrics_requests_total") == 7.0
    assert value(fams, "istio_agent_scrape_failures", type="application") == 0
