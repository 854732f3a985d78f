"""Shared helpers of the benchmark harness (tests/bench): interception rules, process
accounting (/proc CPU and RSS), CPU pinning, and the context a scenario runs in.

Contenders (contenders/*.py) and scenarios (scenarios/*.py) import this module; the driver
is orbench.py. Python 3 stdlib only; run with /usr/bin/python3 as root.
"""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXY_UID = 1337
APP_PORT = 8080

# Istio's injector flags for istio-iptables (reference/interception.md §1.1), as lab.py uses.
INIT_ARGS = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
             "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020"]

# What istio-iptables installs for exactly those flags (interception.md §1.12, "basic"
# golden with the istio-init arguments): used when outrigger-init is not built yet, for
# every contender alike, so that all of them see the same interception.
GOLDEN_RULES = """*nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
"""

# Per-pod kernel settings, the same for every contender: the connect-per-request scenario
# opens tens of thousands of short connections to one destination, and each hop's active
# closer keeps TIME_WAIT. Both settings are per network namespace.
POD_SYSCTLS = {
    "net.ipv4.ip_local_port_range": "1024 65000",
    "net.ipv4.tcp_tw_reuse": "1",
}


class BenchError(RuntimeError):
    pass


def log(msg):
    print("[orbench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


# ------------------------------------------------------------------ interception

def init_binary():
    b = os.environ.get("OUTRIGGER_INIT_BIN", "")
    return b if b and os.access(b, os.X_OK) else None


def interception_kind():
    return "outrigger-init" if init_binary() else "iptables-restore (istio-iptables golden rules)"


def intercept(pod):
    """Install Istio's sidecar capture rules in pod: outrigger-init when it is built
    (OUTRIGGER_INIT_BIN), else the equivalent golden rule set through iptables-restore."""
    b = init_binary()
    if b:
        pod.run([b] + INIT_ARGS, timeout=60)
    else:
        pod.run(["iptables-restore", "--noflush"], input=GOLDEN_RULES, timeout=30)


# What a new network namespace (a real pod) starts with for the same settings.
KERNEL_DEFAULTS = {
    "net.ipv4.ip_local_port_range": "32768 60999",
    "net.ipv4.tcp_tw_reuse": "2",
}


def tune_pod(pod, values=None):
    pod.run(["sysctl", "-q", "-w"] + ["%s=%s" % kv for kv in (values or POD_SYSCTLS).items()])


def flush_time_wait(ctx):
    """Drop every TIME_WAIT socket in both pods (ss -K, SOCK_DESTROY), so that a churn
    phase starts from the same state for every contender: what an earlier scenario left
    behind lasts 60 s and depends on how many connections that contender carried and on
    which side it made close first."""
    for p in (ctx.env.client, ctx.env.server):
        p.run(["ss", "-K", "state", "time-wait"], check=False, timeout=30)


@contextlib.contextmanager
def kernel_defaults(ctx):
    """Run a scenario with the kernel's own TIME_WAIT settings in both pods (what a real
    pod has), then put POD_SYSCTLS back. POD_SYSCTLS hide a proxy that leaves TIME_WAIT
    on the app's tuples (issue 7 §1): tcp_tw_reuse=1 recycles them at once."""
    pods = (ctx.env.client, ctx.env.server)
    for p in pods:
        tune_pod(p, KERNEL_DEFAULTS)
    try:
        yield
    finally:
        for p in pods:
            tune_pod(p)


# ------------------------------------------------------------------ processes

def descendants(pids):
    """pids plus every live descendant (nginx workers under the master)."""
    children = {}
    for ent in os.listdir("/proc"):
        if not ent.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % ent) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(ent))
    out, todo = [], list(pids)
    while todo:
        p = todo.pop()
        if p in out or not os.path.exists("/proc/%d" % p):
            continue
        out.append(p)
        todo.extend(children.get(p, []))
    return sorted(out)


def cpu_seconds(pid):
    """utime + stime of a whole process (all threads), seconds; 0 if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return 0.0
    fields = st[st.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_io(pid):
    """/proc/<pid>/io as a dict (rchar, wchar, syscr, syscw...)."""
    out = {}
    with contextlib.suppress(OSError):
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = int(v)
    return out


def pin(pids, cpus):
    """Pin every thread of every process in pids (and their descendants) to cpus."""
    for p in descendants(pids):
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(p)], capture_output=True, check=False)


def wait_tcp(pod, port, timeout=10.0):
    """Wait until something listens on 0.0.0.0:port (or any address) in pod."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = pod.run(["ss", "-Htln", "sport = :%d" % port], check=False, timeout=10)
        if r.stdout.strip():
            return
        time.sleep(0.1)
    raise BenchError("[%s] nothing listening on port %d after %.0fs" % (pod.name, port, timeout))


def unix_query(path, cmd, timeout=5.0):
    """Send one command to a Unix stream socket (HAProxy's stats socket); return the answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(cmd.encode() + b"\n")
        buf = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        return buf.decode(errors="replace")
    finally:
        s.close()


# ------------------------------------------------------------------ the run context

class Env:
    """What a contender is started in: the lab, its two pods, binaries, the CPU layout."""

    def __init__(self, lab, client, server, opts, bins, workdir):
        self.lab, self.client, self.server = lab, client, server
        self.opts, self.bins, self.workdir = opts, bins, workdir
        self.workers = opts.workers
        self.cpu_load = opts.cpu_load      # load generator and backend
        self.cpu_proxy = opts.cpu_proxy    # both sidecars
        self.app_port = APP_PORT

    def piddir(self, name):
        """A directory the proxy uid can write to (configs, sockets, logs)."""
        d = os.path.join(self.workdir, name)
        os.makedirs(d, exist_ok=True)
        os.chown(d, PROXY_UID, PROXY_UID)
        os.chmod(d, 0o755)
        return d


class RssSampler(threading.Thread):
    """Samples VmRSS of each side's processes every interval; keeps the maximum."""

    def __init__(self, pid_fn, interval=0.2):
        super().__init__(daemon=True)
        self.pid_fn, self.interval = pid_fn, interval
        self.max = {}
        self._halt = threading.Event()

    def sample(self):
        for side, pids in self.pid_fn().items():
            v = sum(rss_kib(p) for p in pids)
            if v > self.max.get(side, 0):
                self.max[side] = v

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()
        self.sample()
        return dict(self.max)


class Ctx:
    """What a scenario gets: run the load client, measure the proxies, know the mode."""

    def __init__(self, env, contender, handle, smoke):
        self.env, self.contender, self.handle, self.smoke = env, contender, handle, smoke
        self.target = (env.server.ip4, env.app_port)
        self.raw = []          # every load-client result, for results.json

    @property
    def name(self):
        return self.contender.NAME

    def pick(self, full, smoke):
        return smoke if self.smoke else full

    def proxy_pids(self):
        """{"client": [pids], "server": [pids]} with descendants; {} for no proxy."""
        return {side: descendants(p) for side, p in self.handle.pids().items()}

    def cpu(self):
        return {side: sum(cpu_seconds(p) for p in pids) for side, pids in self.proxy_pids().items()}

    def rss(self):
        return {side: sum(rss_kib(p) for p in pids) for side, pids in self.proxy_pids().items()}

    def _load_argv(self, mode, kw):
        argv = ["taskset", "-c", self.env.cpu_load, self.env.bins["load"], "--mode", mode,
                "--host", self.target[0], "--port", str(self.target[1])]
        for k, v in kw.items():
            argv += ["--" + k.replace("_", "-"), str(v)]
        return argv

    def load(self, mode, **kw):
        """Run orbench-load in the client pod (as nobody, on the load CPU); its JSON result."""
        bound = float(kw.get("duration", 5)) + float(kw.get("drain", 3)) + float(kw.get("hold", 0)) + 30
        r = self.env.client.run(self._load_argv(mode, kw), user="nobody", check=False, timeout=bound)
        res = None
        for line in reversed(r.stdout.strip().splitlines()):
            with contextlib.suppress(ValueError):
                res = json.loads(line)
                break
        if r.returncode != 0 or res is None:
            raise BenchError("orbench-load %s %s -> rc %d\nstdout: %s\nstderr: %s" % (
                mode, kw, r.returncode, r.stdout[-1000:], r.stderr[-1000:]))
        res["args"] = dict(kw)
        self.raw.append(res)
        return res

    def load_hold(self, on_holding, **kw):
        """Idle mode: start orbench-load, call on_holding(ok, failed) while it holds its
        connections open, then wait for its JSON result."""
        bound = float(kw.get("duration", 30)) + float(kw.get("hold", 5)) + 60
        p = self.env.client.popen(self._load_argv("idle", kw), user="nobody",
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        extra = None
        if line.startswith("HOLDING"):
            _, ok, failed = line.split()
            extra = on_holding(int(ok), int(failed))
        try:
            out, err = p.communicate(timeout=bound)
        except subprocess.TimeoutExpired:
            p.kill()
            raise BenchError("orbench-load idle did not finish within %.0fs" % bound)
        res = None
        for l in reversed(out.strip().splitlines()):
            with contextlib.suppress(ValueError):
                res = json.loads(l)
                break
        if p.returncode != 0 or res is None:
            raise BenchError("orbench-load idle %s -> rc %s\nfirst line: %s\nstdout: %s\nstderr: %s" % (
                kw, p.returncode, line, out[-1000:], err[-1000:]))
        res["args"] = dict(kw)
        self.raw.append(res)
        return res, extra

    def measured(self, fn):
        """Run fn() while accounting the proxies: returns (fn's result, m) where m has
        cpu_s per side (utime+stime delta), rss_max_kib per side, wall_s."""
        sampler = RssSampler(self.proxy_pids)
        c0, t0 = self.cpu(), time.monotonic()
        sampler.start()
        try:
            res = fn()
        finally:
            rss = sampler.stop()
        c1, t1 = self.cpu(), time.monotonic()
        cpu = {side: c1.get(side, 0) - c0.get(side, 0) for side in c1}
        return res, {"cpu_s": cpu, "rss_max_kib": rss, "wall_s": t1 - t0}


def per_1k(cpu_s, ops):
    """CPU-milliseconds per 1,000 operations."""
    return cpu_s * 1000.0 / ops * 1000.0 if ops else None


def cpu_figures(prefix, m, ops):
    """{prefix_cpu_ms_1k: both sidecars, prefix_cpu_ms_1k_client/_server} for m (measured())."""
    out = {}
    cpu = m["cpu_s"]
    if not cpu:
        return out
    out[prefix + "cpu_ms_1k"] = per_1k(sum(cpu.values()), ops)
    for side, v in cpu.items():
        out["%scpu_ms_1k_%s" % (prefix, side)] = per_1k(v, ops)
    return out


def max_rss(m):
    v = m["rss_max_kib"]
    return max(v.values()) if v else None


def add_rate_figures(out, k, res, m):
    """Record one open-loop phase's figures under prefix k (e.g. "r1000_"): latency
    percentiles (None when nothing completed, never 0), achieved rate, late sends, errors,
    proxy CPU per 1,000 operations and peak RSS; and add to the run's totals."""
    for p in ("p50", "p90", "p99", "p999", "max", "mean"):
        out[k + p] = res["lat_us"][p] if res["lat_us"]["n"] else None
    out[k + "ops_per_s"] = res["ops_per_s"]
    out[k + "late_sends"] = res["late_sends"]
    out[k + "errors"] = res["errors"]
    out.update(cpu_figures(k, m, res["ops"]))
    out[k + "rss_kib"] = max_rss(m)
    out["errors"] += res["errors"]
    out["ops_total"] += res["ops"]


def stop_procs(procs):
    """SIGTERM each process still running (a fast shutdown for haproxy and nginx masters
    and their workers); SIGKILL what has not exited 5 s later."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except Exception:
                p.kill()


# ------------------------------------------------------------------ HTTP: nginx backend, wrk

HTTP_PORT = 8081
HTTP_BODY = 1024

NGINX_BACKEND_CONF = """worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    keepalive_requests 1000000;
    server {{
        listen {port} reuseport backlog=4096;
        root {dir}/www;
        location / {{ }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_backend(ctx, port=HTTP_PORT):
    """A real HTTP server in the server pod (nginx, one worker, as nobody, on the load CPU)
    serving /1k (1,024 bytes) on port; stopped on exit. nginx closes first when the request
    says `Connection: close`, which is what most HTTP/1.1 servers do."""
    env = ctx.env
    d = os.path.join(env.workdir, "nginx-backend")
    os.makedirs(os.path.join(d, "www"), exist_ok=True)
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    with open(os.path.join(d, "www", "1k"), "wb") as f:
        f.write(b"x" * HTTP_BODY)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_BACKEND_CONF.format(dir=d, port=port))
    subprocess.run(["chown", "-R", "nobody:nogroup", d], check=True)
    p = env.server.popen(["taskset", "-c", env.cpu_load, "/usr/sbin/nginx", "-p", d, "-c", conf],
                         user="nobody", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_tcp(env.server, port)
        yield (env.server.ip4, port)
    finally:
        stop_procs([p])


def _wrk_us(v):
    """wrk's latency figure ("1.23ms", "850.00us", "2.00s") in microseconds."""
    for unit, mul in (("us", 1), ("ms", 1000), ("s", 1000000)):
        if v.endswith(unit) and v[:-len(unit)].replace(".", "", 1).isdigit():
            return float(v[:-len(unit)]) * mul
    raise ValueError(v)


def wrk(ctx, url, conns, duration, headers=()):
    """wrk (closed loop, one thread) in the client pod as nobody on the load CPU. Returns
    {"ops", "ops_per_s", "errors", "lat_us": {"n", "p50", "p90", "p99", "mean"}, "args"}.
    wrk's percentiles are of closed-loop requests: fine for a stall that hits a fraction
    of the connections (it shows as a tail), not for open-loop latency."""
    if not shutil.which("wrk"):
        raise BenchError("wrk is not installed (Debian package wrk; run.sh installs it)")
    argv = ["taskset", "-c", ctx.env.cpu_load, "wrk", "-t1", "-c%d" % conns, "-d%ds" % duration,
            "--latency", "--timeout", "5s"]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    r = ctx.env.client.run(argv, user="nobody", check=False, timeout=duration + 30)
    out = r.stdout
    res = {"ops": 0, "ops_per_s": 0.0, "errors": 0, "lat_us": {"n": 0},
           "args": {"tool": "wrk", "conns": conns, "duration": duration, "headers": list(headers),
                    "url": url}}
    lat = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) == 2 and f[0] in ("50%", "75%", "90%", "99%"):
            lat["p" + f[0][:-1]] = _wrk_us(f[1])
        elif len(f) >= 2 and f[0] == "Latency" and not lat.get("mean"):
            lat["mean"] = _wrk_us(f[1])
        elif "requests in" in line:
            res["ops"] = int(f[0])
        elif line.startswith("Requests/sec:"):
            res["ops_per_s"] = float(f[1])
        elif line.strip().startswith("Socket errors:"):
            # "Socket errors: connect 0, read 0, write 0, timeout 0"
            res["errors"] += sum(int(x.strip(",")) for x in f[3::2])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            res["errors"] += int(f[-1])
    if r.returncode != 0 or not res["ops"]:
        raise BenchError("wrk %s -> rc %d\nstdout: %s\nstderr: %s" % (
            " ".join(argv), r.returncode, out[-1500:], r.stderr[-1000:]))
    lat["n"] = res["ops"]
    res["lat_us"] = lat
    res["raw"] = out
    ctx.raw.append(res)
    return res
