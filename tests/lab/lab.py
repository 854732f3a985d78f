"""The pod lab: Kubernetes-like pods as network namespaces on one machine (DESIGN.md §7).

    import lab
    with lab.Lab() as L:
        client = L.add_pod("client")
        server = L.add_pod("server", ipv6=True)
        L.add_service(vip="198.19.0.10", port=80, pod=server, target_port=8080)
        sc = client.start_sidecar()          # outrigger-init as root, outrigger as uid 1337
        client.run(["curl", "-s", "http://198.19.0.10/"], user="nobody")
        sc.stats()["listener.outbound.downstream_cx_total"]

Topology. A "node" namespace holds bridge br0; each pod is a namespace whose eth0 is one
end of a veth pair, the other end a port of br0. Nothing touches the host's namespace and
nothing routes out. Every pod has a /32 (and /128) address and `default via <gw> dev eth0
onlink`; the node has a /32 (/128) route per pod on br0. So every packet between pods is
routed by the node, never bridged pod to pod: the node's conntrack sees both directions
and un-NATs the replies of the kube-proxy-style DNAT that implements service VIPs (there is
no br_netfilter here, and we do not load kernel modules). VIP ranges not DNATed are
`unreachable` routes in the node: the sender gets an ICMP error at once.

Addresses: pods 198.18.0.0/16 and fd00:198:18::/64 (gateway .1 / ::1 on br0), VIPs
198.19.0.0/16 and fd00:198:19::/64. Names are `<prefix>-<pid>-<rand>-<role>`; namespaces
whose creating pid is dead are removed when a Lab starts. Teardown (kill every process in
the lab's namespaces, delete them) runs from __exit__, atexit and SIGTERM/SIGHUP.

Python 3.11 stdlib only. Run as root.
"""
import atexit
import contextlib
import ipaddress
import json
import os
import pwd
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
APPS = os.path.join(HERE, "apps.py")
PYTHON = "/usr/bin/python3"  # readable by every uid (DESIGN.md §7)

POD_NET4 = ipaddress.ip_network("198.18.0.0/16")
POD_NET6 = ipaddress.ip_network("fd00:198:18::/64")
VIP_NET4 = ipaddress.ip_network("198.19.0.0/16")
VIP_NET6 = ipaddress.ip_network("fd00:198:19::/64")
GW4 = "198.18.0.1"
GW6 = "fd00:198:18::1"

PROXY_UID = 1337
# The flags Istio's injector passes to istio-iptables (reference/interception.md §1.1).
DEFAULT_INIT_ARGS = ("-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
                     "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020")

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


class LabError(RuntimeError):
    pass


def proxy_bin():
    return os.environ.get("OUTRIGGER_BIN", os.path.join(REPO, "outrigger"))


def init_bin():
    return os.environ.get("OUTRIGGER_INIT_BIN", os.path.join(REPO, "outrigger-init"))


def _sh(argv, check=True, timeout=30, **kw):
    """Run a host-side administrative command (ip, sysctl...) and capture its output."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise LabError("%s -> %d: %s" % (" ".join(argv), r.returncode, (r.stderr or r.stdout).strip()))
    return r


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value (returned) or raise LabError at timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise LabError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(interval)


def _user_prefix(user):
    """argv prefix that runs a command as `user`: None (root), an int uid (gid the same), a
    (uid, gid) pair, or a user name."""
    if user is None:
        return []
    if isinstance(user, tuple):
        uid, gid = user
    elif isinstance(user, int):
        uid = gid = user
    else:
        pw = pwd.getpwnam(user)
        uid, gid = pw.pw_uid, pw.pw_gid
    return ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--clear-groups", "--"]


def _pid_alive(pid):
    return os.path.exists("/proc/%d" % pid)


def list_netns():
    r = _sh(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def _netns_pids(ns):
    r = _sh(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in r.stdout.split() if x.isdigit()]


def _kill_netns(ns):
    """SIGKILL every process in namespace ns, then delete it."""
    for _ in range(3):
        pids = _netns_pids(ns)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    _sh(["ip", "netns", "del", ns], check=False)


def cleanup_stale(prefix="orlab"):
    """Remove `<prefix>-<pid>-...` namespaces whose creating pid is dead. Returns their names."""
    pat = re.compile(r"^%s-(\d+)-[0-9a-f]+-" % re.escape(prefix))
    gone = []
    for ns in list_netns():
        m = pat.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            _kill_netns(ns)
            gone.append(ns)
    tmp = tempfile.gettempdir()
    for ent in os.listdir(tmp):
        m = pat.match(ent)
        if m and not _pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(tmp, ent), ignore_errors=True)
    return gone


# ------------------------------------------------------------------ teardown plumbing

_live_labs = set()
_live_lock = threading.Lock()
_handlers_installed = False


def _teardown_all():
    with _live_lock:
        labs = list(_live_labs)
    for L in labs:
        with contextlib.suppress(Exception):
            L.close()


def _on_signal(signum, frame):
    _teardown_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers():
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_teardown_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            # Do not take over a handler someone else installed (pytest, the caller).
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)


# ------------------------------------------------------------------ the lab

class Lab:
    """A node namespace with a bridge, plus pods and services. Use as a context manager."""

    def __init__(self, prefix="orlab", keep_dir=None):
        if os.geteuid() != 0:
            raise LabError("the pod lab needs root (network namespaces, iptables)")
        if not _NAME_RE.match(prefix):
            raise LabError("bad prefix %r" % prefix)
        self.prefix = prefix
        self.id = "%s-%d-%s" % (prefix, os.getpid(), secrets.token_hex(3))
        self.node = self.id + "-node"
        self.pods = {}
        self.services = []
        self.keep_dir = (os.environ.get("ORLAB_KEEP") == "1") if keep_dir is None else keep_dir
        self.dir = None
        self._closed = False
        self._started = False

    # -- lifecycle
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def start(self):
        if self._started:
            return self
        _install_handlers()
        cleanup_stale(self.prefix)
        with _live_lock:
            _live_labs.add(self)
        self._started = True
        self.dir = tempfile.mkdtemp(prefix=self.id + "-")
        os.chmod(self.dir, 0o755)
        # Apps are copied where any uid can read them, whatever the checkout's permissions.
        self.apps = os.path.join(self.dir, "apps.py")
        shutil.copyfile(APPS, self.apps)
        os.chmod(self.apps, 0o644)
        try:
            self._make_node()
        except Exception:
            self.close()
            raise
        return self

    def close(self):
        """Kill every process, delete every namespace of this lab. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for p in list(self.pods.values()):
            p._kill_tracked()
        for p in list(self.pods.values()):
            _kill_netns(p.netns)
        if self._started:
            _kill_netns(self.node)
        if self.dir and not self.keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        with _live_lock:
            _live_labs.discard(self)

    def _make_node(self):
        n = self.node
        _sh(["ip", "netns", "add", n])
        self._sysctl(n, {
            "net.ipv4.ip_forward": 1,
            "net.ipv6.conf.all.forwarding": 1,
            # Pods are reached through the bridge they came in on: no ICMP redirects, which
            # would make pods talk directly and bypass the DNAT's reverse translation.
            "net.ipv4.conf.all.send_redirects": 0,
            "net.ipv4.conf.default.send_redirects": 0,
            "net.ipv6.conf.default.accept_dad": 0,
            "net.ipv6.conf.all.accept_dad": 0,
        })
        ipn = ["ip", "-n", n]
        _sh(ipn + ["link", "set", "lo", "up"])
        _sh(ipn + ["link", "add", "br0", "type", "bridge", "stp_state", "0",
                   "forward_delay", "0", "mcast_snooping", "0"])
        _sh(ipn + ["addr", "add", GW4 + "/32", "dev", "br0"])
        _sh(ipn + ["addr", "add", GW6 + "/128", "dev", "br0", "nodad"])
        _sh(ipn + ["link", "set", "br0", "up"])
        _sh(ipn + ["route", "add", "unreachable", str(VIP_NET4)])
        _sh(ipn + ["-6", "route", "add", "unreachable", str(VIP_NET6)])

    @staticmethod
    def _sysctl(ns, kv):
        args = ["%s=%s" % (k, v) for k, v in kv.items()]
        _sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w"] + args)

    # -- pods and services
    def add_pod(self, name, ipv6=False, ipv4=True):
        """Create pod `name`: IPv4 198.18.0.N/32, plus fd00:198:18::N/128 if ipv6 (ipv4=False: v6 only)."""
        if self._closed or not self._started:
            raise LabError("lab not running")
        if not _NAME_RE.match(name) or name == "node" or name in self.pods:
            raise LabError("bad or duplicate pod name %r" % name)
        if not ipv4 and not ipv6:
            raise LabError("a pod needs ipv4 or ipv6")
        idx = len(self.pods) + 10
        if idx > 250:
            raise LabError("too many pods")
        pod = Pod(self, name, idx,
                  str(POD_NET4.network_address + idx) if ipv4 else None,
                  str(POD_NET6.network_address + idx) if ipv6 else None)
        self.pods[name] = pod
        pod._create()
        return pod

    def add_service(self, vip, port, pod, target_port):
        """kube-proxy style: DNAT vip:port -> pod:target_port in the node (iptables or ip6tables)."""
        v = ipaddress.ip_address(vip)
        if v.version == 4:
            if v not in VIP_NET4:
                raise LabError("v4 VIPs live in %s" % VIP_NET4)
            if not pod.ip4:
                raise LabError("pod %s has no IPv4 address" % pod.name)
            tool, dest = "iptables", "%s:%d" % (pod.ip4, target_port)
        else:
            if v not in VIP_NET6:
                raise LabError("v6 VIPs live in %s" % VIP_NET6)
            if not pod.ip6:
                raise LabError("pod %s has no IPv6 address" % pod.name)
            tool, dest = "ip6tables", "[%s]:%d" % (pod.ip6, target_port)
        rule = ["-d", str(v), "-p", "tcp", "--dport", str(port), "-j", "DNAT", "--to-destination", dest]
        _sh(["ip", "netns", "exec", self.node, tool, "-w", "-t", "nat", "-A", "PREROUTING"] + rule)
        svc = Service(self, str(v), port, pod, target_port, tool, rule)
        self.services.append(svc)
        return svc

    def node_run(self, argv, check=True, timeout=30):
        """Run a root command in the node namespace (diagnostics)."""
        return _sh(["ip", "netns", "exec", self.node] + list(argv), check=check, timeout=timeout)


class Service:
    def __init__(self, lab, vip, port, pod, target_port, tool, rule):
        self.lab, self.vip, self.port, self.pod, self.target_port = lab, vip, port, pod, target_port
        self._tool, self._rule = tool, rule

    @property
    def addr(self):
        return (self.vip, self.port)

    def remove(self):
        _sh(["ip", "netns", "exec", self.lab.node, self._tool, "-w", "-t", "nat", "-D", "PREROUTING"] + self._rule)
        self.lab.services.remove(self)


class Pod:
    """One pod: a network namespace with eth0 on the node's bridge."""

    def __init__(self, lab, name, idx, ip4, ip6):
        self.lab, self.name, self.idx = lab, name, idx
        self.ip4, self.ip6 = ip4, ip6
        self.netns = "%s-%s" % (lab.id, name)
        self.veth = "veth%d" % idx
        self._procs = []
        self.sidecar = None

    @property
    def ip(self):
        return self.ip4 or self.ip6

    def __repr__(self):
        return "<Pod %s %s %s>" % (self.name, self.ip4, self.ip6)

    def _create(self):
        ns, node = self.netns, self.lab.node
        _sh(["ip", "netns", "add", ns])
        Lab._sysctl(ns, {
            "net.ipv4.conf.all.accept_redirects": 0,
            "net.ipv4.conf.default.accept_redirects": 0,
            "net.ipv6.conf.all.accept_redirects": 0,
            "net.ipv6.conf.default.accept_redirects": 0,
            "net.ipv6.conf.all.accept_dad": 0,
            "net.ipv6.conf.default.accept_dad": 0,
        })
        _sh(["ip", "-n", node, "link", "add", self.veth, "type", "veth",
             "peer", "name", "eth0", "netns", ns])
        _sh(["ip", "-n", node, "link", "set", self.veth, "master", "br0", "up"])
        ipp = ["ip", "-n", ns]
        _sh(ipp + ["link", "set", "lo", "up"])
        _sh(ipp + ["link", "set", "eth0", "up"])
        if self.ip4:
            _sh(ipp + ["addr", "add", self.ip4 + "/32", "dev", "eth0"])
            _sh(ipp + ["route", "add", "default", "via", GW4, "dev", "eth0", "onlink"])
            _sh(["ip", "-n", node, "route", "add", self.ip4 + "/32", "dev", "br0"])
        if self.ip6:
            _sh(ipp + ["addr", "add", self.ip6 + "/128", "dev", "eth0", "nodad"])
            _sh(ipp + ["-6", "route", "add", "default", "via", GW6, "dev", "eth0", "onlink"])
            _sh(["ip", "-n", node, "-6", "route", "add", self.ip6 + "/128", "dev", "br0"])

    def _argv(self, argv, user):
        return ["ip", "netns", "exec", self.netns] + _user_prefix(user) + [str(a) for a in argv]

    def run(self, argv, user=None, check=True, timeout=30, input=None, env=None):
        """Run argv in the pod (as root, or `user`: a name or a uid/gid number); text, captured."""
        r = subprocess.run(self._argv(argv, user), capture_output=True, text=True, timeout=timeout,
                           input=input, cwd="/", env=env)
        if check and r.returncode != 0:
            raise LabError("[%s] %s -> %d\nstdout: %s\nstderr: %s" % (
                self.name, " ".join(map(str, argv)), r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        return r

    def popen(self, argv, user=None, **kw):
        """Start argv in the pod; the process is killed at teardown. `ip netns exec` and
        setpriv exec, so the Popen's pid is the program's own pid (signals reach it)."""
        kw.setdefault("cwd", "/")
        p = subprocess.Popen(self._argv(argv, user), **kw)
        self._procs.append(p)
        return p

    def app(self, args, user="nobody", ready_timeout=10, **kw):
        """Start a server from apps.py (e.g. ["echo", "--port", 8080]) and wait for READY."""
        log = open(os.path.join(self.lab.dir, "%s-%s-%d.log" % (self.name, args[0], len(self._procs))), "wb")
        p = self.popen([PYTHON, self.lab.apps] + [str(a) for a in args], user=user,
                       stdout=subprocess.PIPE, stderr=log, **kw)
        log.close()
        line = read_line(p.stdout, ready_timeout)
        if not line.startswith(b"READY"):
            p.kill()
            raise LabError("[%s] app %s did not start: %r" % (self.name, args, line))
        return p

    def client(self, args, user="nobody", timeout=60, check=False):
        """Run an apps.py client to completion; returns (CompletedProcess, parsed last JSON line or None)."""
        r = self.run([PYTHON, self.lab.apps] + [str(a) for a in args], user=user, check=check, timeout=timeout)
        out = None
        for line in reversed(r.stdout.strip().splitlines()):
            with contextlib.suppress(ValueError):
                out = json.loads(line)
                break
        return r, out

    def interactive(self, host, port, user="nobody", timeout=10):
        """An Interactive (apps.py interactive) connection from this pod to host:port."""
        p = self.popen([PYTHON, self.lab.apps, "interactive", "--host", host, "--port", port,
                        "--timeout", timeout], user=user, stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return Interactive(p, timeout + 5)

    def curl(self, url, timeout=5, user=None):
        """HTTP GET from inside the pod; returns (status code or 0, body)."""
        r = self.run(["curl", "-sS", "-m", timeout, "-o", "-", "-w", "\n%{http_code}", url],
                     user=user, check=False, timeout=timeout + 5)
        body, _, code = r.stdout.rpartition("\n")
        return (int(code) if code.strip().isdigit() else 0), body

    def _kill_tracked(self):
        for p in self._procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        for p in self._procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    with contextlib.suppress(Exception):
                        f.close()

    # -- the sidecar
    def start_sidecar(self, init_args=None, proxy_args=(), config=None, env=None, ready_timeout=10,
                      run_init=True, user=PROXY_UID):
        """Run outrigger-init (root) then outrigger (as `user`: uid/gid 1337 by default; for
        TPROXY, (0, 1337) as Istio's injector runs it: root for transparent sockets, group 1337
        so that the capture rules let its traffic through) in this pod; wait for readiness."""
        ib, pb = init_bin(), proxy_bin()
        for b in (ib, pb) if run_init else (pb,):
            if not os.access(b, os.X_OK):
                raise LabError("binary missing or not executable: %s" % b)
        n = 0 if self.sidecar is None else self.sidecar.n + 1
        init_res = None
        if run_init:
            args = list(DEFAULT_INIT_ARGS if init_args is None else init_args)
            init_res = self.run([ib] + args, check=False, timeout=60)
            with open(os.path.join(self.lab.dir, "%s-init-%d.log" % (self.name, n)), "w") as f:
                f.write("$ %s %s\nrc=%d\n--- stdout\n%s\n--- stderr\n%s\n" % (
                    ib, " ".join(repr(a) for a in args), init_res.returncode, init_res.stdout, init_res.stderr))
            if init_res.returncode != 0:
                raise LabError("[%s] outrigger-init %s -> %d\n%s%s" % (
                    self.name, args, init_res.returncode, init_res.stdout[-3000:], init_res.stderr[-3000:]))
        argv = [pb]
        cfg_path = None
        if config is not None:
            cfg_path = os.path.join(self.lab.dir, "%s-config-%d.json" % (self.name, n))
            with open(cfg_path, "w") as f:
                json.dump(config, f, indent=2)
            os.chmod(cfg_path, 0o644)
            argv += ["-c", cfg_path]
        argv += list(proxy_args)
        penv = dict(os.environ)
        penv.update(env or {})
        log_path = os.path.join(self.lab.dir, "%s-outrigger-%d.log" % (self.name, n))
        with open(log_path, "wb") as log:
            proc = self.popen(argv, user=user, stdout=log, stderr=subprocess.STDOUT, env=penv)
        sc = Sidecar(self, proc, log_path, cfg_path, init_res, n)
        self.sidecar = sc
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise LabError("[%s] outrigger exited with %d before ready; log:\n%s" % (
                    self.name, proc.returncode, sc.log()[-4000:]))
            if sc.health() == 200:
                return sc
            if time.monotonic() > deadline:
                raise LabError("[%s] outrigger not ready after %ss; log:\n%s" % (
                    self.name, ready_timeout, sc.log()[-4000:]))
            time.sleep(0.1)


class Sidecar:
    """A running outrigger in a pod (started by Pod.start_sidecar)."""

    def __init__(self, pod, proc, log_path, config_path, init_result, n):
        self.pod, self.proc, self.log_path, self.config_path = pod, proc, log_path, config_path
        self.init_result, self.n = init_result, n

    def _get(self, url, timeout=5):
        r = self.pod.run(["curl", "-sS", "-m", timeout, "-w", "\n%{http_code}", url],
                         check=False, timeout=timeout + 5)
        body, _, code = r.stdout.rpartition("\n")
        code = int(code) if code.strip().isdigit() else 0
        return code, body, r.stderr

    def health(self):
        """HTTP status of GET :15021/healthz/ready (0 when nothing answers)."""
        return self._get("http://127.0.0.1:15021/healthz/ready", timeout=2)[0]

    def stats(self):
        """GET :15000/stats as {name: int}; lines whose value is not an integer are skipped."""
        code, body, err = self._get("http://127.0.0.1:15000/stats")
        if code != 200:
            raise LabError("[%s] /stats -> %d %s %s" % (self.pod.name, code, body[:200], err))
        out = {}
        for line in body.splitlines():
            k, sep, v = line.partition(":")
            if sep:
                with contextlib.suppress(ValueError):
                    out[k.strip()] = int(v.strip())
        return out

    def config_dump(self):
        code, body, err = self._get("http://127.0.0.1:15000/config_dump")
        if code != 200:
            raise LabError("[%s] /config_dump -> %d %s %s" % (self.pod.name, code, body[:200], err))
        return json.loads(body)

    def certs(self):
        """GET :15000/certs (the certificate in use, Envoy's /certs shape) as JSON."""
        code, body, err = self._get("http://127.0.0.1:15000/certs")
        if code != 200:
            raise LabError("[%s] /certs -> %d %s %s" % (self.pod.name, code, body[:200], err))
        return json.loads(body)

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Send sig and wait for exit; returns the exit code (negative: killed by a signal).
        Raises LabError (after SIGKILL) if it does not exit within timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise LabError("[%s] outrigger did not exit within %ss of signal %d" % (
                    self.pod.name, timeout, sig))
        return self.proc.returncode


def read_line(f, timeout):
    """Read one line from a binary pipe within timeout; b"" on EOF or timeout."""
    fd = f.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        c = os.read(fd, 1)
        if not c:
            break
        buf += c
    return buf


class Interactive:
    """Drives apps.py interactive: cmd("echo 100") -> "OK 100" (see apps.py)."""

    def __init__(self, proc, timeout):
        self.proc, self.timeout = proc, timeout
        self.hello = read_line(proc.stdout, timeout).decode().strip()

    @property
    def connected(self):
        return self.hello.startswith("CONNECTED")

    def send(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def reply(self, timeout=None):
        return read_line(self.proc.stdout, timeout or self.timeout).decode().strip()

    def cmd(self, line, timeout=None):
        self.send(line)
        return self.reply(timeout)

    def close(self):
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                self.cmd("close", timeout=5)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
