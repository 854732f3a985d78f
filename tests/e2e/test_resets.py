"""How connections end, with the real sidecar pair on the pod lab: resets are passed on as
resets (a truncated stream must never look complete), promptly, on both sides; the idle
timeout alone ends cleanly. Regression tests for the outside probes of issue 7 section 5.

    app(client pod) --interactive--> client outrigger :15001 -> server outrigger :15006
      -> 127.0.0.6 -> app(server pod) `peer` :8090 (behind VIP 198.19.0.30:80)

Both ends are driven by line commands (tests/lab/apps.py: `interactive` on the client side,
`peer` on the server side, sharing the probe commands of _probe_cmd), so each end reports
what it saw: RESET (ECONNRESET), EPIPE, EOF, the TCP state. Every wait is bounded and fails
when its bound is reached.
"""
import signal
import subprocess
import time

import pytest

from lab import read_line

PEER_VIP = "198.19.0.30"
PEER_PORT = 8090
MB = 1000 * 1000
TOTAL = 20 * MB       # the 20 MB upload
DRAIN = 2.0           # terminationDrainDuration in the drain tests
PROMPT = 2.0          # "at once": a reset must be passed on within this (the old code: 3,600 s)


class Peer:
    """The server pod's `peer` app: one accepted connection driven by line commands."""

    def __init__(self, proc, timeout=40):
        self.proc, self.timeout = proc, timeout

    def accepted(self, timeout=10):
        line = read_line(self.proc.stdout, timeout).decode().strip()
        assert line.startswith("ACCEPTED"), "peer app: no connection arrived: %r" % line
        return line

    def send(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def reply(self, timeout=None):
        return read_line(self.proc.stdout, timeout or self.timeout).decode().strip()

    def cmd(self, line, timeout=None):
        self.send(line)
        return self.reply(timeout)


def connect(mesh_factory, **kw):
    """The mesh, the peer app behind PEER_VIP, and one connection to it through both
    sidecars, accepted by the app. Returns (mesh, client end, server end). The app must
    accept before the client sends a byte, which the server sidecar's inbound only does for
    a client that sends nothing once mesh.protocolDetectionTimeout has passed (it waits for
    the first bytes to tell TLS from plaintext, issue 9): a short one is set."""
    server = dict(kw.pop("server_config", None) or {})
    server.setdefault("mesh", {}).setdefault("protocolDetectionTimeout", "0.05s")
    m = mesh_factory(server_config=server, **kw)
    proc = m.server.app(["peer", "--port", PEER_PORT, "--max-seconds", 300], stdin=subprocess.PIPE)
    m.lab.add_service(PEER_VIP, 80, m.server, PEER_PORT)
    peer = Peer(proc)
    ia = m.client.interactive(PEER_VIP, 80, timeout=10)
    assert ia.connected, ia.hello
    peer.accepted()
    return m, ia, peer


def field(resp, name):
    """The value of name=<v> in an answer line ("RESET n=123 t=0.5")."""
    for part in resp.split()[1:]:
        k, sep, v = part.partition("=")
        if sep and k == name:
            return float(v) if "." in v else int(v)
    raise AssertionError("no %s= in %r" % (name, resp))


def kind(resp):
    return resp.split()[0] if resp else "NO ANSWER"


def active(sc, listener):
    return sc.stats()["listener.%s.downstream_cx_active" % listener]


def wait_released(m, timeout=PROMPT, what="the connection"):
    """Both sidecars drop the connection and every buffer it held: downstream_cx_active,
    pipes_in_use and chunks_in_use back to 0 within timeout; fails with the last values."""
    deadline = time.monotonic() + timeout
    while True:
        c, s = m.csc.stats(), m.ssc.stats()
        vals = {"client outbound active": c["listener.outbound.downstream_cx_active"],
                "server inbound active": s["listener.inbound.downstream_cx_active"],
                "client pipes_in_use": c["server.pipes_in_use"],
                "server pipes_in_use": s["server.pipes_in_use"],
                "client chunks_in_use": c["server.chunks_in_use"],
                "server chunks_in_use": s["server.chunks_in_use"]}
        if not any(vals.values()):
            return
        assert time.monotonic() < deadline, "%s not released by both sidecars within %.1fs: %r" % (
            what, timeout, vals)
        time.sleep(0.05)


# ----------------------------------------------------------------------- drain end

@pytest.mark.parametrize("drained", ["server", "client"])
def test_drain_end_resets_upload(mesh_factory, drained):
    """Guards issue 7 §5 (probes): "At the end of the drain period, connections still open
    are closed with a clean FIN, in both directions: a 20 MB upload cut at 7.5 MB was taken
    as complete by the upstream. They must be reset." The client streams 20 MB at 4 MB/s
    (so it is still sending when the drain ends; unpaced, the buffers along the path take it
    all at once) to an app that reads 2 MB/s; one sidecar gets SIGTERM with a 2 s drain. The
    connection keeps
    working through the drain; at its end the app must get a reset (ECONNRESET after what
    was delivered), not a clean EOF, and the client a reset too."""
    cfg = {"proxy": {"terminationDrainDuration": "%ds" % DRAIN}}
    m, ia, peer = connect(mesh_factory, **{drained + "_config": cfg})
    sc = m.ssc if drained == "server" else m.csc
    try:
        peer.send("download %d 40" % (2 * MB))
        ia.send("upload %d %d 40" % (TOTAL, 4 * MB))
        time.sleep(0.5)
        t_term = time.monotonic()
        sc.proc.send_signal(signal.SIGTERM)
        app = peer.reply(timeout=DRAIN + 15)
        t_app = time.monotonic() - t_term
        cli = ia.reply(timeout=10)
        assert kind(app) == "RESET", \
            "the app must see a reset when the drain period ends, got %r (a clean end makes " \
            "the cut upload look complete)" % app
        assert field(app, "n") < TOTAL, "the upload finished before the drain ended: %r" % app
        assert t_app >= DRAIN - 0.5, "the connection was cut %.1fs after SIGTERM, before the " \
            "drain period (%.0fs) ended" % (t_app, DRAIN)
        assert kind(cli) == "RESET", "the uploading client must see a reset, got %r" % cli
        assert field(cli, "n") < TOTAL
        rc = sc.proc.wait(timeout=10)
        assert rc == 0, "exit status %d after the drain" % rc
    finally:
        ia.close()


@pytest.mark.parametrize("drained", ["server", "client"])
def test_drain_end_resets_download(mesh_factory, drained):
    """Guards issue 7 §5 (probes), the other direction of the drain end: the app streams
    20 MB at 2 MB/s to the client; when the drain period of the SIGTERMed sidecar ends, the
    client must get a reset after the bytes already relayed, not EOF (which would make the
    cut download look complete), and the app's sending must fail."""
    cfg = {"proxy": {"terminationDrainDuration": "%ds" % DRAIN}}
    m, ia, peer = connect(mesh_factory, **{drained + "_config": cfg})
    sc = m.ssc if drained == "server" else m.csc
    try:
        ia.send("download 0 40")
        peer.send("upload %d %d 40" % (TOTAL, 2 * MB))
        time.sleep(0.5)
        t_term = time.monotonic()
        sc.proc.send_signal(signal.SIGTERM)
        cli = ia.reply(timeout=DRAIN + 15)
        t_cli = time.monotonic() - t_term
        app = peer.reply(timeout=10)
        assert kind(cli) == "RESET", \
            "the client must see a reset when the drain period ends, got %r" % cli
        assert 0 < field(cli, "n") < TOTAL, "download not in flight at the drain end: %r" % cli
        assert t_cli >= DRAIN - 0.5, "cut %.1fs after SIGTERM, before the drain ended" % t_cli
        assert kind(app) in ("RESET", "EPIPE"), "the app's sending must fail, got %r" % app
        rc = sc.proc.wait(timeout=10)
        assert rc == 0, "exit status %d after the drain" % rc
    finally:
        ia.close()


def test_stop_mid_stream_resets_both_sides(mesh_factory):
    """Guards issue 7 §5: "An abort mid-stream (allocation failure, worker stop) resets the
    client but closes the upstream with a clean FIN ... Both sides must be reset." A second
    SIGTERM during the drain stops the client sidecar now, with an upload in flight: the app
    upstream must get a reset, not EOF, and so must the client."""
    m, ia, peer = connect(mesh_factory, client_config={"proxy": {"terminationDrainDuration": "30s"}})
    try:
        peer.send("download %d 40" % (2 * MB))
        ia.send("upload %d %d 40" % (TOTAL, 4 * MB))
        time.sleep(0.5)
        m.csc.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        m.csc.proc.send_signal(signal.SIGTERM)
        app = peer.reply(timeout=15)
        cli = ia.reply(timeout=10)
        assert kind(app) == "RESET", "a stop mid-stream must reset the upstream app, got %r" % app
        assert field(app, "n") < TOTAL
        assert kind(cli) == "RESET", "a stop mid-stream must reset the client, got %r" % cli
        rc = m.csc.proc.wait(timeout=10)
        assert rc == 0, "exit status %d after stop" % rc
    finally:
        ia.close()


# ----------------------------------------------------------------------- back-pressure

@pytest.mark.parametrize("resetter", ["client", "app"])
def test_reset_while_backpressured_is_passed_on(mesh_factory, resetter):
    """Guards issue 7 §5 (probes): "A client reset is not noticed while its direction is
    back-pressured (the upstream does not read): the tunnel stays up with a pipe held until
    the idle timeout (3,600 s by default), then closes the upstream cleanly. The reset must
    be seen at once and passed on as a reset." One end writes until the path is full (the
    other end does not read), then resets (SO_LINGER 0). Within 2 s the other end's socket
    must be reset (TCP state CLOSE, nothing read yet), its reads must then give what was
    buffered followed by ECONNRESET, and both sidecars must drop the connection and its
    buffers (active, pipes_in_use, chunks_in_use 0). With "app", the same with the roles
    swapped: the server app resets while the client is back-pressured."""
    m, ia, peer = connect(mesh_factory)
    writer, reader = (ia, peer) if resetter == "client" else (peer, ia)
    try:
        filled = writer.cmd("fill 20", timeout=30)
        assert kind(filled) == "FILLED", filled
        assert field(filled, "n") > 0
        c, s = m.csc.stats(), m.ssc.stats()
        assert c["listener.outbound.downstream_cx_active"] == 1
        assert s["listener.inbound.downstream_cx_active"] == 1
        assert writer.cmd("reset", timeout=5) == "OK"
        seen = reader.cmd("wait-reset %.1f" % PROMPT, timeout=PROMPT + 5)
        assert kind(seen) == "CLOSE", \
            "the %s's reset was not passed on within %.1fs: %r" % (resetter, PROMPT, seen)
        got = reader.cmd("download 0 20", timeout=25)
        assert kind(got) == "RESET", "after the buffered bytes the reader must get ECONNRESET, " \
            "got %r" % got
        assert field(got, "n") > 0, "the bytes buffered before the reset should still be read"
        wait_released(m)
    finally:
        ia.close()


# ----------------------------------------------------------------------- half-close

@pytest.mark.parametrize("closer", ["client", "app"])
def test_reset_after_half_close_is_passed_on(mesh_factory, closer):
    """Guards issue 7 §5: "The half-closed side is not watched for a later reset until the
    idle timeout." One end sends a request and its FIN (shutdown SHUT_WR); the other end
    reads both and keeps its side open; then the half-closed end resets. The other end must
    learn it at once: its socket is reset within 2 s and a send from it fails (EPIPE or
    ECONNRESET) instead of going into a tunnel nobody reads; both sidecars drop the
    connection."""
    m, ia, peer = connect(mesh_factory)
    closing, other = (ia, peer) if closer == "client" else (peer, ia)
    try:
        assert closing.cmd("send 100") == "OK 100"
        assert closing.cmd("shutdown") == "OK"
        got = other.cmd("download 0 5", timeout=10)
        assert got.startswith("EOF n=100 "), "request and FIN should arrive: %r" % got
        assert other.cmd("state") == "STATE CLOSE_WAIT"
        assert closing.cmd("reset", timeout=5) == "OK"
        seen = other.cmd("wait-reset %.1f" % PROMPT, timeout=PROMPT + 5)
        assert kind(seen) == "CLOSE", \
            "a reset of the half-closed %s was not passed on within %.1fs: %r" % (closer, PROMPT, seen)
        sent = other.cmd("send 1000", timeout=15)
        assert kind(sent) in ("RESET", "EPIPE"), "a send to the reset %s must fail, got %r" % (closer, sent)
        wait_released(m)
    finally:
        ia.close()


def test_half_closed_client_reset_while_response_backpressured(mesh_factory):
    """Guards issue 7 §5, the two probes together, as a user meets them: a client sends its
    request and FIN, the app answers with more than the path holds, the client stops reading
    and resets. The app, blocked sending, must learn at once (socket reset within 2 s, a
    send fails) and both sidecars drop the connection and its buffers. (The old code passed
    this one too: a side we are writing to sees the reset on its next write.)"""
    m, ia, peer = connect(mesh_factory)
    try:
        assert ia.cmd("send 100") == "OK 100"
        assert ia.cmd("shutdown") == "OK"
        got = peer.cmd("download 0 5", timeout=10)
        assert got.startswith("EOF n=100 "), got
        filled = peer.cmd("fill 20", timeout=30)
        assert kind(filled) == "FILLED", filled
        assert ia.cmd("reset", timeout=5) == "OK"
        seen = peer.cmd("wait-reset %.1f" % PROMPT, timeout=PROMPT + 5)
        assert kind(seen) == "CLOSE", "the client's reset was not passed on within %.1fs: %r" % (PROMPT, seen)
        sent = peer.cmd("send 1000", timeout=15)
        assert kind(sent) in ("RESET", "EPIPE"), "a send to the reset client must fail, got %r" % sent
        wait_released(m)
    finally:
        ia.close()


# ----------------------------------------------------------------------- idle timeout

def test_idle_timeout_closes_cleanly(mesh_factory):
    """Guards the intended exception to "pass on resets" (HACKING.md, relay_timer_cb): the
    idle timeout has nothing in flight to truncate, so it ends both sides with a clean FIN,
    not a reset; both ends read EOF and the timeout is counted. (Not a regression of the old
    code, which did the same: it keeps the reset fixes from overreaching.)"""
    m, ia, peer = connect(mesh_factory, client_config={"proxy": {"idleTimeout": "1s"}})
    try:
        c0 = m.csc.stats()
        assert ia.cmd("send 100") == "OK 100"
        assert peer.cmd("recv 5") == "DATA 100"
        cli = ia.cmd("recv 8", timeout=12)
        assert cli == "EOF", "the idle timeout must end the client's side cleanly, got %r" % cli
        app = peer.cmd("recv 5", timeout=10)
        assert app == "EOF", "the idle timeout must end the app's side cleanly, got %r" % app
        # The server sidecar's half of the connection ends when the app closes its side.
        assert peer.cmd("close") == "OK"
        wait_released(m, what="the idle connection")
        c1 = m.csc.stats()
        assert (c1["listener.outbound.downstream_cx_idle_timeout"]
                - c0["listener.outbound.downstream_cx_idle_timeout"]) == 1
        assert (c1["listener.outbound.downstream_cx_reset"]
                - c0["listener.outbound.downstream_cx_reset"]) == 0
    finally:
        ia.close()


def test_idle_timeout_with_bytes_in_flight_resets(mesh_factory):
    """Guards the idle timeout's premise ("nothing is in flight on an idle connection") and
    issue 7 §5's rule that a truncated stream must not look complete: an upload stalled by
    an app that stopped reading makes no progress, so the idle timeout (2 s here) ends it,
    with bytes still held by the sidecars and unread in their sockets. Those bytes are
    dropped, so the app must get a reset after what was delivered, not a clean EOF, and the
    client a reset too."""
    idle = {"proxy": {"idleTimeout": "2s"}}
    m, ia, peer = connect(mesh_factory, client_config=idle, server_config=idle)
    try:
        filled = ia.cmd("fill 20", timeout=30)
        assert kind(filled) == "FILLED", filled
        sent = field(filled, "n")
        seen = peer.cmd("wait-reset 6", timeout=12)
        got = peer.cmd("download 0 20", timeout=25)
        assert kind(got) == "RESET", "an idle timeout that drops bytes in flight must reset the " \
            "app, got %r after %r (%d bytes sent by the client)" % (got, seen, sent)
        assert field(got, "n") < sent
        cli = ia.cmd("recv 5", timeout=10)
        assert kind(cli) == "RESET", "the client's upload was cut: it must see a reset, got %r" % cli
        wait_released(m)
    finally:
        ia.close()
