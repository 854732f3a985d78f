"""A real Prometheus server (Debian's `prometheus`) inside a test pod, scraping a sidecar's
metrics endpoint on the pod's loopback, and its HTTP query API: the tests evaluate the PromQL
that Istio's dashboards use against what Prometheus itself scraped and stored.

    p = Prometheus(pod, "127.0.0.1:15090", "/stats/prometheus")
    p.wait_scrapes(3)
    series = p.query('sum(istio_tcp_sent_bytes_total{reporter="destination"})')

Everything stays in the pod's network namespace (the lab's pods have no route out); the TSDB
lives in the lab directory and goes with it. Scrape and evaluation intervals are 1 s."""
import json
import os
import shutil
import subprocess
import urllib.parse

from lab import LabError, wait_for

LISTEN = "127.0.0.1:19090"


def available():
    return shutil.which("prometheus") is not None


class Prometheus:
    def __init__(self, pod, target, metrics_path, job="outrigger", listen=LISTEN):
        self.pod, self.listen = pod, listen
        d = os.path.join(pod.lab.dir, "prometheus-%s" % pod.name)
        os.makedirs(os.path.join(d, "data"), exist_ok=True)
        cfg = os.path.join(d, "prometheus.yml")
        # The YAML is written as JSON (a YAML subset); the lab's pods have no DNS, so the
        # target is an address.
        with open(cfg, "w") as f:
            json.dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                                  "scrape_timeout": "900ms"},
                       "scrape_configs": [{"job_name": job, "metrics_path": metrics_path,
                                           "static_configs": [{"targets": [target]}]}]}, f)
        self.log_path = os.path.join(d, "prometheus.log")
        log = open(self.log_path, "wb")
        self.proc = pod.popen(["prometheus", "--config.file=" + cfg,
                               "--storage.tsdb.path=" + os.path.join(d, "data"),
                               "--web.listen-address=" + listen,
                               "--log.level=warn"], stdout=log, stderr=log)
        log.close()
        wait_for(lambda: self._get("/-/ready")[0] == 200, timeout=30,
                 what="Prometheus ready (log: %s)" % self.log_path)

    def _get(self, path, timeout=5):
        r = self.pod.run(["curl", "-sS", "-m", timeout, "-w", "\n%{http_code}",
                          "http://%s%s" % (self.listen, path)], check=False, timeout=timeout + 5)
        body, _, code = r.stdout.rpartition("\n")
        return (int(code) if code.strip().isdigit() else 0), body

    def query(self, expr):
        """The instant vector or scalar of expr now: a list of {"metric": {...}, "value": [t, "v"]}."""
        code, body = self._get("/api/v1/query?query=" + urllib.parse.quote(expr, safe=""))
        if code != 200:
            raise LabError("Prometheus query %r -> %d %s" % (expr, code, body[:500]))
        res = json.loads(body)
        if res.get("status") != "success":
            raise LabError("Prometheus query %r: %s" % (expr, body[:500]))
        data = res["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def wait_scrapes(self, n, timeout=30):
        """Wait until the target was scraped successfully n times."""
        def done():
            r = self.query("sum_over_time(up[5m])")
            return bool(r) and float(r[0]["value"][1]) >= n
        wait_for(done, timeout=timeout, what="%d successful scrapes (log: %s)" % (n, self.log_path))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
