#!/usr/bin/python3
"""Independent HBONE peers for the pod lab (issue 11; reference/xds-hbone.md §3): things that
speak HBONE (HTTP/2 CONNECT over mTLS on 15008) and share no code with Outrigger.

Stand-ins for a remote ztunnel ("an ambient pod"), which terminate HBONE in a pod:

  NghttpxTerminator(pod, cert_dir, app_ports)   host-side helper: nghttpx (nghttp2-proxy) in
      forward-proxy mode (-s) with --verify-client, TLS 1.3 only, ALPN h2, the pod's SPIFFE
      certificate, on :15008, in front of tinyproxy on 127.0.0.1 which CONNECTs to the app in the
      same pod. nghttpx's access log records each CONNECT with the client certificate's SHA-256
      fingerprint and serial (nghttpx cannot read a URI SAN).
      What this stack cannot do faithfully (so there is a second stand-in): nghttpx does not
      check that :authority is this pod's IP (tinyproxy connects wherever its ConnectPort list
      allows: no 400), has no authorization (no 401), answers a refused app port with nghttpx's
      own error status (502/503 depending on where the failure is seen, not ztunnel's 503 always),
      does not check the client's trust domain (only the chain), offers TLS 1.3's ChaCha20
      suite too, and does not pass a half-close on: a client's END_STREAM does not reach the
      HTTP/1 backend (nor would tinyproxy pass a FIN), so such a tunnel ends only at nghttpx's
      --backend-read-timeout (1 min unless extra_args shortens it); ztunnel passes it. The request headers (forwarded, baggage, traceparent) reach tinyproxy as HTTP/1.1
      CONNECT headers, which tinyproxy drops: use `h1proxy` below instead of tinyproxy to see them.

  `terminator` (CLI, python3-h2): an HBONE server as ztunnel's inbound: TLS 1.3 only, ALPN h2,
      client certificate required and in the server certificate's trust domain, CONNECT only
      (else 400), :authority must be --pod-ip:port (else 400), 503 when the app refuses, 200 then
      bytes both ways. One JSON line a stream on --log: the client's SPIFFE ID, the authority,
      the request headers, the status.

  `h1proxy` (CLI): an HTTP/1.1 CONNECT proxy that logs each request's headers as JSON (the
      backend of nghttpx when a test wants to see what nghttpx passes on).

A stand-in for ztunnel as a client, toward our 15008:

  HConn (python3-h2): TLS 1.3 with a client certificate, ALPN h2, no SNI (as ztunnel), HTTP/2
      settings as ztunnel's client (4 MiB stream window, 16 MiB connection window, push off),
      CONNECT with :authority podIP:port and ztunnel's headers (forwarded, baggage, traceparent).
  `client` (CLI): scenarios run inside a pod, printing one JSON object:
      probe       one CONNECT, report the status (400/401/503 checks)
      echo        --streams N echo round trips on one connection, N streams open at once (as
                  many at once as the server's SETTINGS_MAX_CONCURRENT_STREAMS allows: batches)
      garbage     a healthy stream on connection A; on connection B, bytes that are not HTTP/2
      rst         on connection A, a second stream reset (RST_STREAM CANCEL) mid-stream
      noack       on connection B, a stream that reads a large reply and never sends WINDOW_UPDATE
      vanish      on connection B, a stream cut mid-stream by closing the socket (TCP RST)
      Every misbehaviour scenario keeps the healthy stream on A echoing throughout and reports
      its round trips and failures: the misbehaviour must harm only its own stream/connection.

Run the CLIs with /usr/bin/python3 (python3-h2 from Debian). Bounded: servers exit after
--max-seconds, clients after --timeout.
"""
import argparse
import json
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time

PYTHON = "/usr/bin/python3"
HERE = os.path.abspath(__file__)
HBONE_PORT = 15008

# ztunnel's client settings (reference §3.1)
CLIENT_STREAM_WINDOW = 4 << 20
CLIENT_CONN_WINDOW = 16 << 20
BAGGAGE = ("k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=ambient,"
           "service.name=ambient,service.version=v1")


def _h2():
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
    return h2


def uri_sans(cert):
    """URI SANs of a getpeercert() dict."""
    return [v for k, v in cert.get("subjectAltName", ()) if k == "URI"]


def trust_domain(spiffe):
    return spiffe[len("spiffe://"):].split("/", 1)[0] if spiffe.startswith("spiffe://") else None


def _cert_paths(cert_dir):
    return (os.path.join(cert_dir, "cert-chain.pem"), os.path.join(cert_dir, "key.pem"),
            os.path.join(cert_dir, "root-cert.pem"))


def cert_fingerprint(cert_dir):
    """SHA-256 fingerprint of the leaf in cert_dir, as nghttpx logs it (lower-case hex)."""
    r = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                        _cert_paths(cert_dir)[0]], capture_output=True, text=True, check=True)
    return r.stdout.strip().split("=", 1)[1].replace(":", "").lower()


def _own_spiffe(cert_file):
    r = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", cert_file],
                       capture_output=True, text=True, check=True)
    for part in r.stdout.replace("\n", ",").split(","):
        part = part.strip()
        if part.startswith("URI:spiffe://"):
            return part[4:]
    return None


# ------------------------------------------------------------------ the nghttpx stand-in

class NghttpxTerminator:
    """nghttpx -s --verify-client on pod:15008 in front of tinyproxy (or, backend="h1proxy",
    this file's header-logging CONNECT proxy) on 127.0.0.1:3128, in `pod` (a tests/lab Pod).
    app_ports: the ports tinyproxy may CONNECT to."""

    def __init__(self, pod, cert_dir, app_ports, port=HBONE_PORT, backend="tinyproxy",
                 proxy_port=3128, workers=1, extra_args=()):
        self.pod, self.port = pod, port
        d = os.path.join(pod.lab.dir, "%s-hbone-nghttpx" % pod.name)
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)
        self.dir = d
        self.access_log = os.path.join(d, "access.log")
        self.error_log = os.path.join(d, "error.log")
        self.proxy_log = os.path.join(d, "%s.log" % backend)
        cert, key, root = _cert_paths(cert_dir)
        if backend == "tinyproxy":
            conf = os.path.join(d, "tinyproxy.conf")
            with open(conf, "w") as f:
                f.write("Port %d\nListen 127.0.0.1\nTimeout 600\nMaxClients 4096\n"
                        "Allow 127.0.0.1\nDisableViaHeader Yes\nLogLevel Info\nLogFile \"%s\"\n"
                        "User nobody\nGroup nogroup\n" % (proxy_port, self.proxy_log))
                for p in app_ports:
                    f.write("ConnectPort %d\n" % p)
            open(self.proxy_log, "a").close()
            os.chmod(self.proxy_log, 0o666)
            self.proxy = pod.popen(["tinyproxy", "-d", "-c", conf], stdout=subprocess.DEVNULL,
                                   stderr=open(os.path.join(d, "tinyproxy.stderr"), "wb"))
        else:
            self.proxy = pod.popen([PYTHON, HERE, "h1proxy", "--port", proxy_port, "--log", self.proxy_log],
                                   stdout=subprocess.DEVNULL, stderr=open(self.proxy_log + ".stderr", "wb"))
        self._wait_listen(proxy_port)
        fmt = ('{"remote":"$remote_addr","port":"$remote_port","request":"$request","status":$status,'
               '"fp":"$tls_client_fingerprint_sha256","serial":"$tls_client_serial",'
               '"subject":"$tls_client_subject_name","tls":"$tls_protocol","alpn":"$alpn",'
               '"sent":$body_bytes_sent}')
        # --conf=/dev/null: Debian's /etc/nghttpx/nghttpx.conf adds a frontend and logs to syslog.
        argv = ["nghttpx", "--conf=/dev/null", "-s", "-f", "*,%d" % port, "-b", "127.0.0.1,%d" % proxy_port,
                "-n", str(workers), "--verify-client", "--verify-client-cacert=" + root,
                "--tls-min-proto-version=TLSv1.3", "--tls-max-proto-version=TLSv1.3",
                "--npn-list=h2", "--no-ocsp", "--no-via", "--no-server-push",
                "--frontend-http2-max-concurrent-streams=1000",
                "--frontend-http2-window-size=%d" % (4 << 20),
                "--frontend-http2-connection-window-size=%d" % (16 << 20),
                "--backend-connections-per-host=4096",
                "--accesslog-file=" + self.access_log, "--accesslog-format=" + fmt,
                "--errorlog-file=" + self.error_log, "--log-level=" + os.environ.get("HBONE_NGHTTPX_LOG", "NOTICE"),
                "--frontend-read-timeout=600s", "--stream-read-timeout=600s", "--stream-write-timeout=600s",
                key, cert] + list(extra_args)
        self.proc = pod.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_listen(port)
        # nghttpx listens before its worker threads run; a connection accepted before then is
        # closed at once.
        deadline = time.monotonic() + 10
        while self.errors().count("Created worker thread") < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("[%s] nghttpx workers not up: %s" % (pod.name, self.errors()))
            time.sleep(0.05)

    def _wait_listen(self, port):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.pod.run(["ss", "-Hltn", "sport = :%d" % port], check=False).stdout.strip():
                return
            time.sleep(0.05)
        raise RuntimeError("[%s] nothing listens on %d; nghttpx: %s" % (self.pod.name, port, self.errors()))

    def errors(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def accesses(self):
        """The access log, one dict a request (written when the stream ends)."""
        out = []
        try:
            with open(self.access_log, errors="replace") as f:
                for line in f:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        out.append({"raw": line})
        except OSError:
            pass
        return out

    def proxy_records(self):
        """tinyproxy's log lines, or h1proxy's JSON records."""
        try:
            with open(self.proxy_log, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            return []
        recs = []
        for line in lines:
            try:
                recs.append(json.loads(line))
            except ValueError:
                recs.append(line)
        return recs


# ------------------------------------------------------------------ h1proxy

def _relay(a, b, done):
    try:
        while True:
            d = a.recv(262144)
            if not d:
                break
            b.sendall(d)
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    except OSError:
        pass
    finally:
        done()


def _pair(a, b):
    left = [2]
    lock = threading.Lock()

    def done():
        with lock:
            left[0] -= 1
            last = left[0] == 0
        if last:
            a.close()
            b.close()
    threading.Thread(target=_relay, args=(a, b, done), daemon=True).start()
    threading.Thread(target=_relay, args=(b, a, done), daemon=True).start()


def app_h1proxy(a):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    ls.listen(4096)
    log = open(a.log, "a", buffering=1)
    lock = threading.Lock()
    print("READY %d" % a.port, flush=True)

    def handle(c):
        buf = b""
        while b"\r\n\r\n" not in buf and len(buf) < 65536:
            d = c.recv(4096)
            if not d:
                c.close()
                return
            buf += d
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hdrs.setdefault(k.strip().lower(), []).append(v.strip())
        parts = lines[0].split()
        rec = {"request": lines[0], "headers": hdrs}
        try:
            if parts[0] != "CONNECT":
                raise ValueError("not CONNECT")
            host, _, port = parts[1].rpartition(":")
            u = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
            u.settimeout(None)
            rec["status"] = 200
            c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                u.sendall(rest)
            _pair(c, u)
        except (OSError, ValueError, IndexError) as e:
            rec["status"], rec["error"] = 503, str(e)
            c.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            c.close()
        with lock:
            log.write(json.dumps(rec) + "\n")

    ls.settimeout(1.0)
    deadline = time.monotonic() + a.max_seconds
    while time.monotonic() < deadline:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(c,), daemon=True).start()
    return 0


# ------------------------------------------------------------------ the python3-h2 terminator

class _TermConn:
    """One accepted HBONE connection of the terminator: a reader thread (TLS -> h2 events), a
    thread a stream (app -> DATA, waiting for flow-control credit)."""

    def __init__(self, tls, peer_id, a, log, log_lock):
        h2 = _h2()
        self.h2mod = h2
        self.tls, self.peer_id, self.a, self.log, self.log_lock = tls, peer_id, a, log, log_lock
        # python3-h2 4.1 would reject a CONNECT without :scheme and :path (RFC 9113 §8.5
        # forbids them there): on_request validates instead.
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.lock = threading.Condition()
        self.ups = {}       # stream id -> upstream socket
        self.closed = False

    def flush(self):
        d = self.conn.data_to_send()
        if d:
            self.tls.sendall(d)

    def record(self, rec):
        rec["peer_id"] = self.peer_id
        with self.log_lock:
            self.log.write(json.dumps(rec) + "\n")
            self.log.flush()

    def run(self):
        h2 = self.h2mod
        with self.lock:
            S = h2.settings.SettingCodes
            self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
                S.MAX_CONCURRENT_STREAMS: 2000, S.INITIAL_WINDOW_SIZE: 4 << 20,
                S.MAX_HEADER_LIST_SIZE: 65536})
            self.conn.initiate_connection()
            self.conn.increment_flow_control_window((16 << 20) - 65535)
            self.flush()
        try:
            while True:
                d = self.tls.recv(262144)
                if not d:
                    break
                with self.lock:
                    try:
                        evs = self.conn.receive_data(d)
                    except h2.exceptions.ProtocolError as e:
                        self.record({"event": "protocol_error", "error": str(e)})
                        self.flush()
                        break
                    for ev in evs:
                        self.on_event(ev)
                    self.flush()
                    self.lock.notify_all()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self.lock:
                self.closed = True
                self.lock.notify_all()
                for u in list(self.ups.values()):
                    u.close()
            self.tls.close()

    def on_event(self, ev):
        h2 = self.h2mod
        E = h2.events
        if isinstance(ev, E.RequestReceived):
            self.on_request(ev.stream_id, ev.headers)
        elif isinstance(ev, E.DataReceived):
            u = self.ups.get(ev.stream_id)
            if u is not None and ev.data:
                try:
                    u.sendall(ev.data)
                except OSError:
                    pass
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, E.StreamEnded):
            u = self.ups.get(ev.stream_id)
            if u is not None:
                try:
                    u.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        elif isinstance(ev, E.StreamReset):
            u = self.ups.pop(ev.stream_id, None)
            if u is not None:
                u.close()

    def on_request(self, sid, headers):
        hd = {}
        for k, v in headers:
            hd.setdefault(k, []).append(v)
        auth = (hd.get(":authority") or [""])[0]
        rec = {"event": "stream", "stream": sid, "authority": auth,
               "headers": {k: v for k, v in hd.items()}}
        status = 200
        if (hd.get(":method") or [""])[0] != "CONNECT" or ":scheme" in hd or ":path" in hd:
            status = 400
        else:
            host, _, port = auth.rpartition(":")
            host = host.strip("[]")
            if host not in self.a.pod_ip or not port.isdigit():
                status = 400
        u = None
        if status == 200:
            try:
                u = socket.create_connection((host, int(port)), timeout=5)
                u.settimeout(None)
            except OSError as e:
                status, rec["error"] = 503, str(e)
        rec["status"] = status
        self.record(rec)
        if status != 200:
            self.conn.send_headers(sid, [(":status", str(status))], end_stream=True)
            return
        self.conn.send_headers(sid, [(":status", "200")])
        self.ups[sid] = u
        threading.Thread(target=self.pump_up, args=(sid, u), daemon=True).start()

    def pump_up(self, sid, u):
        """App -> DATA on sid, within the flow-control windows the client grants."""
        h2 = self.h2mod
        try:
            while True:
                d = u.recv(65536)
                if not d:
                    break
                mv = memoryview(d)
                while mv:
                    with self.lock:
                        while not self.closed and sid in self.ups and \
                                self.conn.local_flow_control_window(sid) <= 0:
                            self.lock.wait(1.0)
                        if self.closed or sid not in self.ups:
                            return
                        n = min(len(mv), self.conn.local_flow_control_window(sid),
                                self.conn.max_outbound_frame_size)
                        self.conn.send_data(sid, bytes(mv[:n]))
                        self.flush()
                    mv = mv[n:]
            with self.lock:
                if not self.closed and sid in self.ups:
                    self.conn.end_stream(sid)
                    self.flush()
        except (OSError, h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
            pass


def app_terminator(a):
    cert, key, root = _cert_paths(a.cert_dir)
    own = _own_spiffe(cert)
    td = trust_domain(own or "")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(root)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    ls = socket.socket(socket.AF_INET6 if ":" in a.pod_ip[0] else socket.AF_INET)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::" if ":" in a.pod_ip[0] else "0.0.0.0", a.port))
    ls.listen(1024)
    log = open(a.log, "a")
    log_lock = threading.Lock()
    print("READY %d" % a.port, flush=True)

    def handshake(c, addr):
        try:
            c.settimeout(10)
            tls = ctx.wrap_socket(c, server_side=True)
            tls.settimeout(None)
            ids = uri_sans(tls.getpeercert() or {})
            pid = ids[0] if ids else ""
            rec = {"event": "connection", "remote": addr[0], "peer_id": pid,
                   "tls": tls.version(), "alpn": tls.selected_alpn_protocol(), "cipher": tls.cipher()[0]}
            if tls.selected_alpn_protocol() != "h2" or trust_domain(pid) != td:
                rec["refused"] = "alpn or trust domain"
                with log_lock:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                tls.close()
                return
            with log_lock:
                log.write(json.dumps(rec) + "\n")
                log.flush()
            _TermConn(tls, pid, a, log, log_lock).run()
        except (OSError, ssl.SSLError) as e:
            with log_lock:
                log.write(json.dumps({"event": "handshake_failed", "remote": addr[0], "error": str(e)}) + "\n")
                log.flush()
            c.close()

    ls.settimeout(1.0)
    deadline = time.monotonic() + a.max_seconds
    while time.monotonic() < deadline:
        try:
            c, addr = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handshake, args=(c, addr), daemon=True).start()
    return 0


def start_terminator(pod, cert_dir, port=HBONE_PORT):
    """Start the python3-h2 terminator in pod; returns (Popen, log path)."""
    log = os.path.join(pod.lab.dir, "%s-hbone-terminator-%d.jsonl" % (pod.name, len(pod._procs)))
    open(log, "a").close()
    ips = [ip for ip in (pod.ip4, pod.ip6) if ip]
    argv = [PYTHON, HERE, "terminator", "--cert-dir", cert_dir, "--port", port, "--log", log]
    for ip in ips:
        argv += ["--pod-ip", ip]
    p = pod.popen(argv, stdout=subprocess.PIPE, stderr=open(log + ".stderr", "wb"))
    import lab
    line = lab.read_line(p.stdout, 10)
    if not line.startswith(b"READY"):
        p.kill()
        raise RuntimeError("[%s] terminator did not start: %r" % (pod.name, line))
    return p, log


def read_jsonl(path):
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


# ------------------------------------------------------------------ the python3-h2 client

class HBoneError(RuntimeError):
    pass


class _St:
    __slots__ = ("status", "data", "ended", "reset", "headers")

    def __init__(self):
        self.status, self.data, self.ended, self.reset, self.headers = None, bytearray(), False, None, None


class HConn:
    """One HBONE client connection (ztunnel's way): see the module docstring. ack=False makes
    it a flow-control abuser: received DATA is never acknowledged (no WINDOW_UPDATE)."""

    def __init__(self, host, cert_dir, port=HBONE_PORT, timeout=10, ack=True, src="198.18.0.99:40000"):
        h2 = _h2()
        self.h2mod, self.ack, self.src = h2, ack, src
        cert, key, root = _cert_paths(cert_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(root)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = ctx.wrap_socket(raw)       # no server_hostname: no SNI, as ztunnel
        if self.tls.selected_alpn_protocol() != "h2":
            raise HBoneError("ALPN %r" % self.tls.selected_alpn_protocol())
        ids = uri_sans(self.tls.getpeercert() or {})
        self.peer_id = ids[0] if ids else ""
        self.tls_version = self.tls.version()
        # python3-h2 4.1 insists on :scheme and :path in every request, CONNECT too (RFC 9113
        # §8.5 says a CONNECT has neither): validate our own headers instead.
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        S = h2.settings.SettingCodes
        # In the connection preface's SETTINGS (update_settings would send a frame before it).
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            S.INITIAL_WINDOW_SIZE: CLIENT_STREAM_WINDOW, S.ENABLE_PUSH: 0, S.MAX_HEADER_LIST_SIZE: 16384})
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CLIENT_CONN_WINDOW - 65535)
        self.streams = {}
        self.goaway = None
        self.closed = False
        self.flush()
        self.got_settings = False
        self.read_error = None
        self.pump(timeout, until=lambda: self.got_settings)
        if not self.got_settings:
            raise HBoneError("no SETTINGS from the server (closed: %s %s)" % (self.closed, self.read_error))

    @property
    def max_streams(self):
        return self.conn.remote_settings.max_concurrent_streams

    def flush(self):
        d = self.conn.data_to_send()
        if d and not self.closed:
            try:
                self.tls.sendall(d)
            except OSError:
                self.closed = True

    def pump(self, timeout, until=None):
        """Process input for up to timeout seconds, or until until() is true."""
        E = self.h2mod.events
        deadline = time.monotonic() + timeout
        while not self.closed:
            if until is not None and until():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self.tls.pending():
                r, _, _ = select.select([self.tls], [], [], min(left, 0.2))
                if not r:
                    continue
            try:
                d = self.tls.recv(1 << 20)
            except ssl.SSLWantReadError:
                continue
            except (OSError, ssl.SSLError) as e:
                self.read_error = repr(e)
                d = b""
            if not d:
                self.closed = True
                break
            try:
                evs = self.conn.receive_data(d)
            except self.h2mod.exceptions.ProtocolError as e:
                self.goaway = ("client-protocol-error", str(e))
                self.closed = True
                break
            for ev in evs:
                st = self.streams.get(getattr(ev, "stream_id", None))
                if isinstance(ev, E.ResponseReceived) and st:
                    st.headers = dict(ev.headers)
                    st.status = int(st.headers.get(":status", 0))
                elif isinstance(ev, E.DataReceived) and st is not None:
                    st.data += ev.data
                    if self.ack:
                        self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, E.StreamEnded) and st:
                    st.ended = True
                elif isinstance(ev, E.StreamReset) and st:
                    st.reset = ev.error_code
                elif isinstance(ev, E.RemoteSettingsChanged):
                    self.got_settings = True
                elif isinstance(ev, E.ConnectionTerminated):
                    self.goaway = (int(ev.error_code), (ev.additional_data or b"").decode("latin-1"))
            self.flush()
        return until() if until is not None else False

    def connect(self, authority, extra=()):
        """Send a CONNECT for authority with ztunnel's headers; returns the stream id."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", "CONNECT"), (":authority", authority),
                ("forwarded", 'for="%s"' % self.src), ("baggage", BAGGAGE),
                ("traceparent", "00-%032x-%016x-01" % (int.from_bytes(os.urandom(16), "big"),
                                                       int.from_bytes(os.urandom(8), "big")))]
        hdrs += list(extra)
        self.conn.send_headers(sid, hdrs)
        self.streams[sid] = _St()
        self.flush()
        return sid

    def wait_status(self, sid, timeout=10):
        st = self.streams[sid]
        self.pump(timeout, until=lambda: st.status is not None or st.reset is not None)
        return st.status

    def send(self, sid, data, end=False, timeout=30):
        """Send data on sid within the flow-control windows (pumping for WINDOW_UPDATEs)."""
        mv = memoryview(data)
        deadline = time.monotonic() + timeout
        while mv:
            w = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if w <= 0:
                if time.monotonic() > deadline or self.closed:
                    raise HBoneError("no flow-control credit on stream %d" % sid)
                self.pump(0.05, until=lambda: self.conn.local_flow_control_window(sid) > 0)
                continue
            n = min(w, len(mv))
            self.conn.send_data(sid, bytes(mv[:n]))
            mv = mv[n:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def recv_until(self, sid, n, timeout=10):
        st = self.streams[sid]
        self.pump(timeout, until=lambda: len(st.data) >= n or st.ended or st.reset is not None)
        return bytes(st.data)

    def reset(self, sid, code=8):
        self.conn.reset_stream(sid, error_code=code)
        self.flush()

    def raw_send(self, data):
        self.tls.sendall(data)

    def close(self):
        try:
            self.conn.close_connection()
            self.flush()
        except Exception:
            pass
        self.closed = True
        self.tls.close()

    def vanish(self):
        """Close the TCP connection abruptly (RST, no TLS close_notify, no GOAWAY)."""
        import struct
        # wrap_socket took over raw's descriptor: the option goes on the TLS socket, whose
        # close() sends no close_notify.
        self.tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.closed = True
        self.tls.close()


class Healthy(threading.Thread):
    """A healthy stream on its own connection: an echo round trip every interval until
    stopped; counts round trips, failures and the slowest one."""

    def __init__(self, a):
        super().__init__(daemon=True)
        self.a = a
        self.c = HConn(a.host, a.cert_dir, a.port, timeout=a.timeout)
        self.sid = self.c.connect(a.authority)
        if self.c.wait_status(self.sid) != 200:
            raise HBoneError("healthy stream: status %r" % self.c.streams[self.sid].status)
        self.stop_ev = threading.Event()
        self.ok = self.fail = 0
        self.slowest = 0.0
        self.lock = threading.Lock()     # the rst scenario uses self.c from the main thread too
        self.err = None

    def round_trip(self, i):
        msg = b"healthy %d\n" % i
        st = self.c.streams[self.sid]
        t0 = time.monotonic()
        with self.lock:
            want = len(st.data) + len(msg)
            self.c.send(self.sid, msg)
            self.c.recv_until(self.sid, want, timeout=3)
            good = len(st.data) >= want and bytes(st.data[want - len(msg):want]) == msg
        dt = time.monotonic() - t0
        return good, dt

    def run(self):
        i = 0
        while not self.stop_ev.is_set():
            try:
                good, dt = self.round_trip(i)
            except Exception as e:  # a failed round trip is a result, not a crash
                good, dt, self.err = False, 3.0, repr(e)
            i += 1
            if good:
                self.ok += 1
            else:
                self.fail += 1
            self.slowest = max(self.slowest, dt)
            self.stop_ev.wait(self.a.interval)

    def finish(self):
        self.stop_ev.set()
        self.join(10)
        # one more after the misbehaviour, to prove the stream still works now
        good, _ = self.round_trip(10 ** 6)
        return {"ok": self.ok, "fail": self.fail, "slowest_s": round(self.slowest, 3),
                "after": good, "error": self.err}


def _scenario_probe(a, out):
    c = HConn(a.host, a.cert_dir, a.port, timeout=a.timeout)
    out["peer_id"], out["tls"] = c.peer_id, c.tls_version
    extra = [("x-test", "probe")]
    if a.method:
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, [(":method", a.method), (":scheme", "https"), (":path", "/"),
                                  (":authority", a.authority)], end_stream=True)
        c.streams[sid] = _St()
        c.flush()
    else:
        sid = c.connect(a.authority, extra)
    out["status"] = c.wait_status(sid, a.timeout)
    out["reset"] = c.streams[sid].reset
    out["goaway"] = c.goaway
    if out["status"] == 200 and a.payload:
        c.send(sid, a.payload.encode(), end=True)
        # Up to the payload's length (an echo app): tinyproxy does not pass a half-close on,
        # so waiting for the end of the stream would wait for its Timeout.
        want = (1 << 30) if a.read_to_end else len(a.payload)
        out["reply"] = c.recv_until(sid, want, timeout=a.timeout).decode("latin-1")
        out["ended"] = c.streams[sid].ended
    c.close()


def _scenario_echo(a, out):
    """a.streams streams on one connection, as many open at once as the server allows."""
    c = HConn(a.host, a.cert_dir, a.port, timeout=a.timeout)
    out["peer_id"], out["tls"], out["max_concurrent_streams"] = c.peer_id, c.tls_version, c.max_streams
    deadline = time.monotonic() + a.timeout
    done = bad = peak = 0
    statuses = {}
    left = a.streams
    while left > 0 and time.monotonic() < deadline and not c.closed:
        batch = min(left, c.max_streams or left, a.streams)
        sids = [c.connect(a.authority) for _ in range(batch)]
        c.pump(a.timeout, until=lambda: all(c.streams[s].status is not None or c.streams[s].reset is not None
                                            for s in sids))
        for s in sids:
            statuses[str(c.streams[s].status)] = statuses.get(str(c.streams[s].status), 0) + 1
        live = [s for s in sids if c.streams[s].status == 200]
        msgs = {s: b"stream %d says hello\n" % s for s in live}
        for s in live:
            c.send(s, msgs[s])
        c.pump(max(1.0, deadline - time.monotonic()),
               until=lambda: all(len(c.streams[s].data) >= len(msgs[s]) or c.streams[s].reset is not None
                                 for s in live))
        # every one of the batch was open and answered at the same time
        answered = [s for s in live if bytes(c.streams[s].data[:len(msgs[s])]) == msgs[s]]
        peak = max(peak, len(answered))
        for s in live:
            c.send(s, b"", end=True)
        c.pump(max(1.0, deadline - time.monotonic()),
               until=lambda: all(c.streams[s].ended or c.streams[s].reset is not None for s in live))
        done += len(answered)
        bad += batch - len(answered)
        left -= batch
    out.update({"answered": done, "failed": bad + left, "peak_concurrent": peak, "statuses": statuses,
                "goaway": c.goaway, "connections": 1})
    c.close()


def _scenario_misbehave(a, out):
    h = Healthy(a)
    out["peer_id"] = h.c.peer_id
    h.start()
    time.sleep(0.3)
    mis = {}
    t0 = time.monotonic()
    try:
        if a.scenario == "garbage":
            b = HConn(a.host, a.cert_dir, a.port, timeout=a.timeout)
            sid = b.connect(a.authority)
            mis["status"] = b.wait_status(sid)
            # A frame header announcing a 16 MiB DATA frame on stream 0, then noise: not HTTP/2.
            b.raw_send(b"\xff\xff\xff\x00\x00\x00\x00\x00\x00" + os.urandom(4096))
            b.pump(a.hold, until=lambda: b.closed)
            mis["closed_by_server"] = b.closed
            mis["goaway"] = b.goaway
        elif a.scenario == "rst":
            with h.lock:
                sid = h.c.connect(a.authority)
                mis["status"] = h.c.wait_status(sid)
                h.c.send(sid, b"x" * 100000)
                h.c.reset(sid, 8)
            time.sleep(a.hold)
            with h.lock:
                sid2 = h.c.connect(a.authority)
                mis["status_after"] = h.c.wait_status(sid2)
                h.c.send(sid2, b"after reset\n")
                mis["echo_after"] = h.c.recv_until(sid2, 12, timeout=5) == b"after reset\n"
            mis["goaway"] = h.c.goaway
        elif a.scenario == "noack":
            b = HConn(a.host, a.cert_dir, a.port, timeout=a.timeout, ack=False)
            sid = b.connect(a.noack_authority or a.authority)
            mis["status"] = b.wait_status(sid)
            # The app (a sink) answers after our EOF with --reply-bytes; we never open the window.
            b.send(sid, b"ping", end=True)
            b.pump(a.hold)
            mis["received"] = len(b.streams[sid].data)
            mis["window_bound"] = CLIENT_STREAM_WINDOW
            mis["closed_by_server"] = b.closed
            mis["goaway"] = b.goaway
        elif a.scenario == "vanish":
            b = HConn(a.host, a.cert_dir, a.port, timeout=a.timeout)
            sid = b.connect(a.authority)
            mis["status"] = b.wait_status(sid)
            b.send(sid, b"y" * 50000)
            b.pump(0.2)
            b.vanish()
            time.sleep(a.hold)
        else:
            raise HBoneError("unknown scenario %r" % a.scenario)
        # the healthy stream keeps going for the whole of --hold, however quick the misbehaviour
        time.sleep(max(0.0, a.hold - (time.monotonic() - t0)))
    finally:
        out["misbehaving"] = mis
        out["healthy"] = h.finish()


def app_client(a):
    out = {"scenario": a.scenario}
    t0 = time.monotonic()
    try:
        if a.scenario == "probe":
            _scenario_probe(a, out)
        elif a.scenario == "echo":
            _scenario_echo(a, out)
        else:
            _scenario_misbehave(a, out)
    except Exception as e:
        out["error"] = repr(e)
    out["seconds"] = round(time.monotonic() - t0, 3)
    print(json.dumps(out), flush=True)
    return 0 if "error" not in out else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("terminator")
    sp.add_argument("--cert-dir", required=True)
    sp.add_argument("--port", type=int, default=HBONE_PORT)
    sp.add_argument("--pod-ip", action="append", required=True)
    sp.add_argument("--log", required=True)
    sp.add_argument("--max-seconds", type=float, default=900)
    sp.set_defaults(fn=app_terminator)
    sp = sub.add_parser("h1proxy")
    sp.add_argument("--port", type=int, default=3128)
    sp.add_argument("--log", required=True)
    sp.add_argument("--max-seconds", type=float, default=900)
    sp.set_defaults(fn=app_h1proxy)
    sp = sub.add_parser("client")
    sp.add_argument("--host", required=True)
    sp.add_argument("--port", type=int, default=HBONE_PORT)
    sp.add_argument("--cert-dir", required=True)
    sp.add_argument("--authority", required=True)
    sp.add_argument("--scenario", default="probe",
                    choices=["probe", "echo", "garbage", "rst", "noack", "vanish"])
    sp.add_argument("--streams", type=int, default=1)
    sp.add_argument("--method", default=None, help="probe: send this method instead of CONNECT")
    sp.add_argument("--payload", default="", help="probe: send this after a 200, then EOF")
    sp.add_argument("--read-to-end", action="store_true", help="probe: read the reply to the stream's end")
    sp.add_argument("--noack-authority", default=None, help="noack: the app that sends a lot")
    sp.add_argument("--hold", type=float, default=2.0, help="seconds the misbehaviour lasts")
    sp.add_argument("--interval", type=float, default=0.05)
    sp.add_argument("--timeout", type=float, default=60)
    sp.set_defaults(fn=app_client)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
