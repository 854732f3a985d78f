#!/usr/bin/python3
"""Small test apps for the pod lab: servers and clients that run inside a pod.

Run as `/usr/bin/python3 tests/lab/apps.py <app> [options]` (stdlib only, so any uid
can run it). Every app is bounded: servers exit after --max-seconds, clients after
--timeout. Servers print "READY <port>" on stdout once they listen; clients print one
JSON object (or, for `interactive`, one line per command).

Servers
  echo    --port P           echo every byte back; many connections (selector based)
  sink    --port P           read until EOF, then reply "<count> <sha256> <n> <reply_sha256>\\n"
                             followed by --reply-bytes N bytes of data (proves half-close)
  http    --port P           tiny HTTP/1.1 server: GET / -> "hello from <name>"
  peer    --port P           one connection at a time, driven by line commands on stdin
                             (probes of how a connection ends: resets, EOF, TCP state)
Clients
  send         --host H --port P --bytes N   stream N bytes to a sink, SHUT_WR, check the reply
  echo-client  --host H --port P --count C --bytes B   C sequential echo round-trips
                                                 (--threads T of them at once; --rst)
  conns        --host H --port P --count N --bytes B   N concurrent echo connections, one process
  interactive  --host H --port P             line commands on stdin (see app_interactive;
                                             the probe commands of _probe_cmd too)
"""
import argparse
import errno
import hashlib
import json
import random
import select
import selectors
import socket
import struct
import sys
import threading
import time

CHUNK = 256 * 1024


def _ready(port):
    sys.stdout.write("READY %d\n" % port)
    sys.stdout.flush()


def _listen(port, backlog=4096):
    """Listen on [::]:port dual-stack (v4-mapped too); 0.0.0.0 if IPv6 is unavailable."""
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
    except OSError:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
    s.listen(backlog)
    return s


def _recv_upto(s, n):
    """Read until n bytes or end of stream; returns what arrived."""
    got = bytearray()
    while len(got) < n:
        d = s.recv(65536)
        if not d:
            break
        got += d
    return got


def _connect(host, port, timeout):
    return socket.create_connection((host, port), timeout=timeout)


def _stream(seed, nbytes, chunk=CHUNK):
    """Deterministic pseudo-random data: yields chunks totalling nbytes."""
    rng = random.Random(seed)
    left = nbytes
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def _stream_sha(seed, nbytes):
    h = hashlib.sha256()
    for c in _stream(seed, nbytes):
        h.update(c)
    return h.hexdigest()


# ---------------------------------------------------------------- servers

def app_echo(a):
    """Echo server. Per connection at most 1 MiB is buffered; on EOF from the peer the
    pending bytes are flushed, then the write side is shut down and the socket closed."""
    ls = _listen(a.port)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    conns = {}  # sock -> [outbuf(bytearray), eof(bool)]
    deadline = time.monotonic() + a.max_seconds
    _ready(a.port)

    def update(s):
        st = conns[s]
        ev = 0
        if not st[1] and len(st[0]) < (1 << 20):
            ev |= selectors.EVENT_READ
        if st[0]:
            ev |= selectors.EVENT_WRITE
        if ev == 0:
            if st[1]:
                close(s)
            return
        sel.modify(s, ev, s)

    def close(s):
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        conns.pop(s, None)
        s.close()

    while time.monotonic() < deadline:
        for key, ev in sel.select(timeout=1.0):
            if key.data is None:
                for _ in range(256):
                    try:
                        c, _addr = ls.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        if e.errno in (errno.EMFILE, errno.ENFILE):
                            break
                        raise
                    c.setblocking(False)
                    conns[c] = [bytearray(), False]
                    sel.register(c, selectors.EVENT_READ, c)
                continue
            s = key.data
            st = conns.get(s)
            if st is None:
                continue
            try:
                if ev & selectors.EVENT_READ:
                    d = s.recv(65536)
                    if d:
                        st[0] += d
                    else:
                        st[1] = True
                if ev & selectors.EVENT_WRITE and st[0]:
                    n = s.send(st[0])
                    del st[0][:n]
                if st[1] and not st[0]:
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    close(s)
                    continue
                update(s)
            except (BlockingIOError, InterruptedError):
                update(s)
            except OSError:
                close(s)
    return 0


def app_sink(a):
    """Read each connection to EOF, then reply with what was received and, after that,
    --reply-bytes bytes of deterministic data: a reply at all proves the FIN arrived, a
    whole reply proves the other direction kept flowing after the half-close."""
    ls = _listen(a.port)
    slots = threading.BoundedSemaphore(a.max_conns)
    reply_n = a.reply_bytes
    reply_sha = _stream_sha(7, reply_n)
    deadline = time.monotonic() + a.max_seconds
    _ready(a.port)

    def handle(c):
        try:
            c.settimeout(a.io_timeout)
            h = hashlib.sha256()
            n = 0
            while True:
                d = c.recv(CHUNK)
                if not d:
                    break
                h.update(d)
                n += len(d)
            c.sendall(("%d %s %d %s\n" % (n, h.hexdigest(), reply_n, reply_sha)).encode())
            for chunk in _stream(7, reply_n):
                c.sendall(chunk)
            c.shutdown(socket.SHUT_WR)
            # Wait for the client's close so our FIN is not turned into a RST by unread data.
            c.settimeout(5)
            while c.recv(65536):
                pass
        except OSError as e:
            sys.stderr.write("sink: %r\n" % (e,))
        finally:
            c.close()
            slots.release()

    ls.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        slots.acquire()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
    return 0


def app_http(a):
    """Minimal HTTP/1.1 server (Connection: close), enough for curl."""
    ls = _listen(a.port)
    deadline = time.monotonic() + a.max_seconds
    _ready(a.port)
    ls.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            c, addr = ls.accept()
        except socket.timeout:
            continue
        try:
            c.settimeout(5)
            req = b""
            while b"\r\n\r\n" not in req and len(req) < 65536:
                d = c.recv(4096)
                if not d:
                    break
                req += d
            line = req.split(b"\r\n", 1)[0].decode("latin-1", "replace")
            parts = line.split()
            path = parts[1] if len(parts) > 1 else "/"
            peer = addr[0][7:] if addr[0].startswith("::ffff:") else addr[0]
            body = ("hello from %s (path %s, peer %s)\n" % (a.name, path, peer)).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n" % len(body) + body)
            c.shutdown(socket.SHUT_WR)
        except OSError as e:
            sys.stderr.write("http: %r\n" % (e,))
        finally:
            c.close()
    return 0


# ---------------------------------------------------------------- clients

def app_send(a):
    """Stream --bytes to a sink, half-close, read and check the sink's reply."""
    t0 = time.monotonic()
    out = {"sent": 0}
    s = _connect(a.host, a.port, a.timeout)
    s.settimeout(a.timeout)
    h = hashlib.sha256()
    try:
        for chunk in _stream(a.seed, a.bytes):
            s.sendall(chunk)
            h.update(chunk)
            out["sent"] += len(chunk)
        s.shutdown(socket.SHUT_WR)
        out["sent_sha"] = h.hexdigest()
        buf = b""
        while b"\n" not in buf:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        line, _, rest = buf.partition(b"\n")
        f = line.decode().split()
        if len(f) != 4:
            out["error"] = "bad reply header %r" % line[:200]
        else:
            out["server_count"], out["server_sha"] = int(f[0]), f[1]
            out["reply_expected"], out["reply_expected_sha"] = int(f[2]), f[3]
            rh = hashlib.sha256(rest)
            n = len(rest)
            while True:
                d = s.recv(CHUNK)
                if not d:
                    break
                rh.update(d)
                n += len(d)
            out["reply_bytes"], out["reply_sha"] = n, rh.hexdigest()
    except OSError as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        s.close()
    out["elapsed"] = round(time.monotonic() - t0, 3)
    out["ok"] = ("error" not in out and out.get("server_count") == out["sent"]
                 and out.get("server_sha") == out.get("sent_sha")
                 and out.get("reply_bytes") == out.get("reply_expected")
                 and out.get("reply_sha") == out.get("reply_expected_sha"))
    print(json.dumps(out))
    return 0 if out["ok"] else 1


def app_echo_client(a):
    """--count sequential connections (in each of --threads threads at once); connection i
    sends --bytes + i*--step bytes and expects them echoed back exactly, then half-closes
    and expects EOF (with --rst: closes with a reset once the echo is back)."""
    res = {"ok": 0, "failed": 0, "bytes": 0, "errors": []}
    deadline = time.monotonic() + a.timeout
    lock = threading.Lock()

    def one(i):
        n = a.bytes + i * a.step
        payload = random.Random(i + 1000 * a.seed).randbytes(n)
        tail = b""
        try:
            s = _connect(a.host, a.port, max(0.1, deadline - time.monotonic()))
            s.settimeout(max(0.1, deadline - time.monotonic()))
            s.sendall(payload)
            got = _recv_upto(s, n)
            if a.rst:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                s.shutdown(socket.SHUT_WR)
                tail = s.recv(1)
            s.close()
            err = None if bytes(got) == payload and tail == b"" else \
                "conn %d: got %d of %d bytes, tail %r" % (i, len(got), n, tail)
        except OSError as e:
            err = "conn %d: %s: %s" % (i, type(e).__name__, e)
        with lock:
            if err:
                res["failed"] += 1
                res["errors"].append(err)
            else:
                res["ok"] += 1
                res["bytes"] += n

    def loop():
        for i in range(a.count):
            one(i)

    threads = [threading.Thread(target=loop) for _ in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.1, deadline + 5 - time.monotonic()))
    print(json.dumps(res))
    return 0 if res["failed"] == 0 and res["ok"] == a.count * a.threads else 1


def app_conns(a):
    """Open --count connections at once from one process (selector based), send --bytes
    on each, wait for all echoes while keeping every connection open. Prints
    "HOLDING ok=<n> failed=<m>"; with --hold waits for a line on stdin (bounded by
    --timeout) before closing them all, then prints a JSON summary."""
    t0 = time.monotonic()
    deadline = t0 + a.timeout
    fam = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    sel = selectors.DefaultSelector()
    st = {}  # sock -> dict
    errors = {}
    failed = 0
    for i in range(a.count):
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex((a.host, a.port))
        if rc not in (0, errno.EINPROGRESS):
            failed += 1
            errors[errno.errorcode.get(rc, str(rc))] = errors.get(errno.errorcode.get(rc, str(rc)), 0) + 1
            s.close()
            continue
        msg = (b"%08d" % i) * max(1, a.bytes // 8)
        st[s] = {"msg": msg, "sent": 0, "got": bytearray(), "state": "connecting"}
        sel.register(s, selectors.EVENT_WRITE, s)
    ok = 0
    pending = len(st)

    def fail(s, why):
        nonlocal failed, pending
        failed += 1
        pending -= 1
        errors[why] = errors.get(why, 0) + 1
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        st[s]["state"] = "failed"

    while pending > 0 and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=0.5):
            s = key.data
            d = st[s]
            try:
                if d["state"] == "connecting":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(s, errno.errorcode.get(err, str(err)))
                        continue
                    d["state"] = "sending"
                if d["state"] == "sending" and ev & selectors.EVENT_WRITE:
                    d["sent"] += s.send(d["msg"][d["sent"]:])
                    if d["sent"] == len(d["msg"]):
                        d["state"] = "reading"
                        sel.modify(s, selectors.EVENT_READ, s)
                    continue
                if d["state"] == "reading" and ev & selectors.EVENT_READ:
                    r = s.recv(65536)
                    if not r:
                        fail(s, "early-eof")
                        continue
                    d["got"] += r
                    if len(d["got"]) >= len(d["msg"]):
                        sel.unregister(s)
                        if bytes(d["got"]) == d["msg"]:
                            d["state"] = "done"
                            ok += 1
                            pending -= 1
                        else:
                            fail(s, "mismatch")
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                fail(s, errno.errorcode.get(e.errno, type(e).__name__))
    if pending > 0:
        errors["timeout"] = pending
        failed += pending
    sys.stdout.write("HOLDING ok=%d failed=%d\n" % (ok, failed))
    sys.stdout.flush()
    if a.hold:
        r, _, _ = select.select([sys.stdin], [], [], max(0.0, deadline - time.monotonic()))
        if r:
            sys.stdin.readline()
    # Close all and confirm each done connection sees the server's EOF after our FIN.
    clean = 0
    for s, d in st.items():
        if d["state"] == "done":
            try:
                s.setblocking(True)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
    for s, d in st.items():
        if d["state"] == "done":
            try:
                s.settimeout(max(0.1, deadline + 30 - time.monotonic()))
                if s.recv(1) == b"":
                    clean += 1
            except OSError:
                pass
        s.close()
    out = {"ok": ok, "failed": failed, "clean_close": clean, "errors": errors,
           "elapsed": round(time.monotonic() - t0, 3)}
    print(json.dumps(out))
    sys.stdout.flush()
    return 0 if failed == 0 else 1


def _classify(e):
    if isinstance(e, ConnectionResetError):
        return "RESET"
    if isinstance(e, BrokenPipeError):
        return "EPIPE"
    if isinstance(e, socket.timeout):
        return "TIMEOUT"
    if isinstance(e, ConnectionRefusedError):
        return "REFUSED"
    return "ERROR %s" % errno.errorcode.get(getattr(e, "errno", None) or 0, type(e).__name__)


def app_interactive(a):
    """One connection driven by line commands on stdin; one answer line per command.
      (start)        -> "CONNECTED <local addr>" or "<RESET|REFUSED|TIMEOUT|ERROR x> ..."
      echo N         -> send N bytes, expect them back: "OK N" / "EOF got=<k>" / "RESET ..." / "TIMEOUT ..."
      recv T         -> wait up to T s: "DATA n" / "EOF" / "RESET" / "TIMEOUT"
      stream T       -> send and read continuously for up to T s: "EOF t=<s>" / "RESET t=<s>" /
                        "EPIPE t=<s>" / "TIMEOUT" (t = seconds since the command started)
      shutdown       -> SHUT_WR: "OK"
      close          -> "OK", then exit
    Every wait is bounded by --timeout; stdin EOF exits."""
    out = sys.stdout
    try:
        s = _connect(a.host, a.port, a.timeout)
        out.write("CONNECTED %s\n" % (s.getsockname()[0],))
    except OSError as e:
        out.write("%s %s\n" % (_classify(e), e))
        out.flush()
        return 1
    out.flush()
    seq = 0
    end = time.monotonic() + a.max_seconds
    while time.monotonic() < end:
        r, _, _ = select.select([sys.stdin], [], [], 1.0)
        if not r:
            continue
        line = sys.stdin.readline()
        if not line:
            break
        cmd = line.split()
        if not cmd:
            continue
        t0 = time.monotonic()
        try:
            if cmd[0] == "echo":
                n = int(cmd[1])
                seq += 1
                payload = random.Random(seq).randbytes(n)
                s.settimeout(a.timeout)
                s.sendall(payload)
                got = _recv_upto(s, n)
                if len(got) < n:
                    resp = "EOF got=%d" % len(got)
                elif bytes(got) != payload:
                    resp = "MISMATCH"
                else:
                    resp = "OK %d" % n
            elif cmd[0] == "recv":
                s.settimeout(float(cmd[1]))
                d = s.recv(65536)
                resp = "DATA %d" % len(d) if d else "EOF"
            elif cmd[0] == "stream":
                limit = t0 + float(cmd[1])
                s.setblocking(False)
                blob = b"x" * 16384
                resp = "TIMEOUT"
                while time.monotonic() < limit:
                    rr, ww, _ = select.select([s], [s], [], 0.05)
                    if rr:
                        d = s.recv(65536)
                        if not d:
                            resp = "EOF"
                            break
                    if ww:
                        try:
                            s.send(blob)
                        except BlockingIOError:
                            pass
                    time.sleep(0.002)
                if resp != "TIMEOUT":
                    resp += " t=%.3f" % (time.monotonic() - t0)
            elif cmd[0] == "shutdown":
                s.shutdown(socket.SHUT_WR)
                resp = "OK"
            elif cmd[0] == "close":
                s.close()
                out.write("OK\n")
                out.flush()
                return 0
            else:
                resp = _probe_cmd(s, cmd)
                if resp is None:
                    resp = "ERROR unknown command"
        except (OSError, ValueError, IndexError) as e:
            resp = _classify(e) if isinstance(e, OSError) else "ERROR %s" % e
            if cmd and cmd[0] == "stream":
                resp += " t=%.3f" % (time.monotonic() - t0)
        out.write(resp + "\n")
        out.flush()
    s.close()
    return 0


# ---------------------------------------------------------------- connection probes
# Commands shared by `peer` (server side) and `interactive` (client side) to look at how a
# connection ends: a reset (ECONNRESET, TCP state CLOSE) or a clean end of stream (EOF,
# CLOSE_WAIT). Every command is bounded by its T (seconds).

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}


def _tcp_state(s):
    """The socket's TCP state (TCP_INFO), without consuming data or a pending error."""
    try:
        return TCP_STATES.get(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0], "?")
    except OSError:
        return "GONE"


def _probe_cmd(s, cmd):
    """Run one probe command on socket s; returns the answer line, or None if cmd is not one.
      state             -> "STATE <tcp state>"
      wait-reset T      -> poll the TCP state until CLOSE (a reset arrived; nothing read):
                           "CLOSE t=<s>" / "TIMEOUT state=<tcp state>"
      fill T            -> send without reading until nothing more is taken for 0.5 s (the
                           path is back-pressured): "FILLED n=<bytes>" / "<RESET|EPIPE> n=.."
      upload N RATE T   -> send N bytes, RATE bytes/s (0: as fast as taken):
                           "DONE n=N t=" / "<RESET|EPIPE|TIMEOUT> n=<sent> t="
      download RATE T   -> read to the end, RATE bytes/s (0: at once; once the TCP state is
                           no longer ESTABLISHED the rest is read at once):
                           "<EOF|RESET|TIMEOUT> n=<bytes> t="
      send N            -> send N bytes: "OK N" / "<RESET|EPIPE|TIMEOUT>"
      recv T            -> wait up to T s for data: "DATA n" / "EOF" / "<RESET|TIMEOUT>"
      shutdown          -> SHUT_WR (our FIN): "OK"
      reset             -> close with SO_LINGER 0 (the kernel sends a RST): "OK"
    t is seconds since the command started."""
    name = cmd[0]
    t0 = time.monotonic()
    el = lambda: "t=%.3f" % (time.monotonic() - t0)  # noqa: E731
    if name == "state":
        return "STATE " + _tcp_state(s)
    if name == "wait-reset":
        limit = t0 + float(cmd[1])
        while time.monotonic() < limit:
            if _tcp_state(s) == "CLOSE":
                return "CLOSE " + el()
            time.sleep(0.01)
        return "TIMEOUT state=" + _tcp_state(s)
    if name == "shutdown":
        s.shutdown(socket.SHUT_WR)
        return "OK"
    if name == "recv":
        s.settimeout(float(cmd[1]))
        try:
            d = s.recv(65536)
        except OSError as e:
            return _classify(e)
        return "DATA %d" % len(d) if d else "EOF"
    if name == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        return "OK"
    if name == "send":
        n = int(cmd[1])
        try:
            s.settimeout(10)
            s.sendall(b"s" * n)
            return "OK %d" % n
        except OSError as e:
            return _classify(e)
    if name == "fill":
        limit = t0 + float(cmd[1])
        sent = 0
        blob = b"f" * 65536
        s.setblocking(False)
        last = time.monotonic()
        try:
            while time.monotonic() < limit:
                try:
                    sent += s.send(blob)
                    last = time.monotonic()
                except BlockingIOError:
                    if time.monotonic() - last >= 0.5:
                        return "FILLED n=%d" % sent
                    select.select([], [s], [], 0.05)
            return "TIMEOUT n=%d" % sent
        except OSError as e:
            return "%s n=%d" % (_classify(e), sent)
    if name == "upload":
        total, rate, limit = int(cmd[1]), float(cmd[2]), t0 + float(cmd[3])
        sent = 0
        try:
            for chunk in _stream(3, total, 65536):
                if rate > 0:
                    ahead = t0 + sent / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                left = limit - time.monotonic()
                if left <= 0:
                    return "TIMEOUT n=%d %s" % (sent, el())
                s.settimeout(left)
                s.sendall(chunk)
                sent += len(chunk)
            return "DONE n=%d %s" % (sent, el())
        except OSError as e:
            return "%s n=%d %s" % (_classify(e), sent, el())
    if name == "download":
        rate, limit = float(cmd[1]), t0 + float(cmd[2])
        got = 0
        try:
            while True:
                left = limit - time.monotonic()
                if left <= 0:
                    return "TIMEOUT n=%d %s" % (got, el())
                if rate > 0 and _tcp_state(s) == "ESTABLISHED":
                    ahead = t0 + got / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(min(ahead, 0.05))
                        continue
                s.settimeout(left)
                d = s.recv(65536 if rate <= 0 else 16384)
                if not d:
                    return "EOF n=%d %s" % (got, el())
                got += len(d)
        except OSError as e:
            return "%s n=%d %s" % (_classify(e), got, el())
    return None


def app_peer(a):
    """Server for one connection at a time driven by line commands on stdin, as
    `interactive` is on the client side: prints "ACCEPTED <peer addr>" (or "TIMEOUT") once
    a connection arrives, then answers the probe commands (see _probe_cmd) and `close`
    ("OK"; the next connection is then accepted). Exits on stdin EOF or after --max-seconds."""
    ls = _listen(a.port)
    end = time.monotonic() + a.max_seconds
    _ready(a.port)
    out = sys.stdout
    while time.monotonic() < end:
        ls.settimeout(max(0.1, min(a.accept_timeout, end - time.monotonic())))
        try:
            s, addr = ls.accept()
        except socket.timeout:
            out.write("TIMEOUT\n")
            out.flush()
            continue
        out.write("ACCEPTED %s\n" % (addr[0],))
        out.flush()
        while time.monotonic() < end:
            r, _, _ = select.select([sys.stdin], [], [], 1.0)
            if not r:
                continue
            line = sys.stdin.readline()
            if not line:
                s.close()
                return 0
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "close":
                s.close()
                out.write("OK\n")
                out.flush()
                break
            try:
                resp = _probe_cmd(s, cmd)
            except (OSError, ValueError, IndexError) as e:
                resp = _classify(e) if isinstance(e, OSError) else "ERROR %s" % e
            out.write((resp if resp is not None else "ERROR unknown command") + "\n")
            out.flush()
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="app", required=True)

    def server(name, fn, **extra):
        sp = sub.add_parser(name)
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--max-seconds", type=float, default=900)
        sp.set_defaults(fn=fn)
        return sp

    def client(name, fn):
        sp = sub.add_parser(name)
        sp.add_argument("--host", required=True)
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--timeout", type=float, default=30)
        sp.set_defaults(fn=fn)
        return sp

    server("echo", app_echo)
    sp = server("sink", app_sink)
    sp.add_argument("--reply-bytes", type=int, default=0)
    sp.add_argument("--max-conns", type=int, default=64)
    sp.add_argument("--io-timeout", type=float, default=120)
    sp = server("http", app_http)
    sp.add_argument("--name", default=socket.gethostname())
    sp = server("peer", app_peer)
    sp.add_argument("--accept-timeout", type=float, default=30)

    sp = client("send", app_send)
    sp.add_argument("--bytes", type=int, required=True)
    sp.add_argument("--seed", type=int, default=1)
    sp = client("echo-client", app_echo_client)
    sp.add_argument("--count", type=int, default=1)
    sp.add_argument("--bytes", type=int, default=1000)
    sp.add_argument("--step", type=int, default=0)
    sp.add_argument("--seed", type=int, default=1)
    sp.add_argument("--threads", type=int, default=1)
    sp.add_argument("--rst", action="store_true")
    sp = client("conns", app_conns)
    sp.add_argument("--count", type=int, default=1000)
    sp.add_argument("--bytes", type=int, default=64)
    sp.add_argument("--hold", action="store_true")
    sp = client("interactive", app_interactive)
    sp.add_argument("--max-seconds", type=float, default=300)

    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
