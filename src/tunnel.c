/* tunnel: one captured TCP connection carried to its original destination:
 * upstream connect, then bytes both ways with half-close, back-pressure,
 * connect and idle timeouts; splice(2) when both ends are plain sockets. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "conn.h"
#include "log.h"
#include "snapshot.h"
#include "sock.h"
#include "tunnel.h"
#include "worker-t.h"

/* A pipe holds 16 pages by default (pipe(7)); we never ask for more. */
#define PIPE_CAP 65536
/* Rounds of read+write per event and direction, so one busy connection cannot
 * starve the others of the worker (at most 8 x 64 KiB per wake-up). */
#define PUMP_ROUNDS 8
/* After both flows end, how long a side may linger before it is closed
 * anyway, and how often its send queue is looked at (see tunnel_end). */
#define LINGER_TIME 2.0
#define LINGER_TICK 0.02
/* A spliced read smaller than this ends bulk mode (see flow_fill). */
#define SPLICE_MIN 8192

/* Istio's inbound passthrough source: the capture rules RETURN traffic from
 * it on lo, so our connection to the app is not captured again. */
static const char passthrough_v4[] = "127.0.0.6";
static const char passthrough_v6[] = "::6";
/* TPROXY: replies to a foreign source carry the mark that routes them back to us. */
#define TPROXY_MARK 1337

static void tunnel_io_cb(struct ev_loop *loop, ev_io *io, int revents);
static void tunnel_timer_cb(struct ev_loop *loop, ev_timer *tm, int revents);

const char *
tunnel_state_str(enum tunnel_state s)
{
	switch (s) {
	case TUN_CONNECTING: return "connecting";
	case TUN_ESTABLISHED: return "established";
	case TUN_LINGER: return "linger";
	case TUN_CLOSED: return "closed";
	}
	return "?";
}

static inline uint64_t *
tstat(struct tunnel *t, enum listener_metric m)
{
	return &t->w->stats.lst[t->lst][m];
}

static void
flow_release(struct tunnel *t, struct flow *f, int dirty)
{
	if (f->pipe) {
		pool_pipe_put(&t->w->pool, f->pipe, dirty);
		f->pipe = NULL;
	}
	if (f->chunk) {
		pool_chunk_put(&t->w->pool, f->chunk);
		f->chunk = NULL;
	}
}

/* Drop what this direction still holds: its destination is gone. */
static void
flow_abort(struct tunnel *t, struct flow *f)
{
	flow_release(t, f, f->inflight > 0);
	f->inflight = 0;
	f->eof = f->done = true;
	f->full = false;
}

static void
tunnel_free(struct tunnel *t)
{
	struct worker *w = t->w;

	ev_timer_stop(w->loop, &t->timer);
	conn_want(w->loop, &t->ds, 0);
	conn_want(w->loop, &t->us, 0);
	flow_release(t, &t->d2u, t->d2u.inflight > 0);
	flow_release(t, &t->u2d, t->u2d.inflight > 0);
	if (t->prev)
		t->prev->next = t->next;
	else
		w->tunnels = t->next;
	if (t->next)
		t->next->prev = t->prev;
	clog_debug(t, "closed (was %s)", tunnel_state_str(t->state));
	if (t->snap)
		wsnap_done(t->snap);
	stat_add(tstat(t, LM_DOWNSTREAM_CX_DESTROY), 1);
	stat_sub(tstat(t, LM_DOWNSTREAM_CX_ACTIVE), 1);
	stat_sub(&w->stats.w[WM_SESSIONS_IN_USE], 1);
	free(t);
}

/* Close both ends. rst_ds: the client must see a reset (we could not reach
 * its destination, or its peer reset). */
static void
tunnel_close(struct tunnel *t, bool rst_ds)
{
	t->state = TUN_CLOSED;
	if (t->ds.fd >= 0) {
		conn_want(t->w->loop, &t->ds, 0);
		if (rst_ds)
			sock_close_rst(t->ds.fd);
		else
			close(t->ds.fd);
		t->ds.fd = -1;
	}
	if (t->us.fd >= 0) {
		conn_want(t->w->loop, &t->us, 0);
		close(t->us.fd);
		t->us.fd = -1;
	}
	tunnel_free(t);
}

/* A read from c failed (it was reset): deliver what was read from it, drop
 * what was headed to it, and reset the other side once that side has its
 * bytes, so a truncated stream is not taken for a complete one. */
static void
side_read_failed(struct tunnel *t, struct conn *c, int err)
{
	char a[SOCK_ADDR_STRLEN];
	bool is_ds = c == &t->ds;
	struct flow *from = is_ds ? &t->d2u : &t->u2d;
	struct flow *to = is_ds ? &t->u2d : &t->d2u;

	if (!c->wdead)
		stat_add(tstat(t, is_ds ? LM_DOWNSTREAM_CX_RESET : LM_UPSTREAM_CX_RESET), 1);
	clog_debug(t, "%s read (%s): %s", is_ds ? "downstream" : "upstream",
	    sock_addr_str(&t->dst, a, sizeof(a)), strerror(-err));
	c->rdead = c->wdead = true;
	(is_ds ? &t->us : &t->ds)->rst_on_close = true;
	from->eof = true;
	from->full = false;
	flow_abort(t, to);
}

/* A write to c failed: drop what was headed to it, but keep reading it: the
 * kernel still holds what c sent before it went away (a response sent just
 * before a reset, say), and the other side must get it. */
static void
side_write_failed(struct tunnel *t, struct conn *c, int err)
{
	char a[SOCK_ADDR_STRLEN];
	bool is_ds = c == &t->ds;

	if (!c->wdead)
		stat_add(tstat(t, is_ds ? LM_DOWNSTREAM_CX_RESET : LM_UPSTREAM_CX_RESET), 1);
	clog_debug(t, "%s write (%s): %s", is_ds ? "downstream" : "upstream",
	    sock_addr_str(&t->dst, a, sizeof(a)), strerror(-err));
	c->wdead = true;
	(is_ds ? &t->us : &t->ds)->rst_on_close = true;
	flow_abort(t, is_ds ? &t->u2d : &t->d2u);
}

/* Read into the flow's pipe or chunk. Returns bytes, 0 at end of stream, -errno.
 *
 * Which one: small messages (requests, responses) are cheaper to copy through
 * a chunk with recv/send than to move through a pipe with two splices, while
 * bulk transfers are cheaper spliced (the kernel moves pages, we copy
 * nothing). So a flow copies until a read fills a whole chunk, then splices
 * until a read comes back small (HAProxy's "splice-auto" idea). The choice is
 * made only when nothing is in flight, so bytes never sit in both at once and
 * stay in order. */
static ssize_t
flow_fill(struct tunnel *t, struct flow *f, struct conn *src, struct conn *dst, size_t *asked)
{
	struct worker *w = t->w;
	bool can_splice = !f->no_splice && src->ops->can_splice && dst->ops->can_splice;
	bool use_pipe = f->inflight ? f->pipe != NULL : can_splice && f->bulk;
	ssize_t n;

	if (f->inflight == 0) {
		/* Switch containers only when empty; keep the one still wanted. */
		if (use_pipe && f->chunk) {
			pool_chunk_put(&w->pool, f->chunk);
			f->chunk = NULL;
		} else if (!use_pipe && f->pipe) {
			pool_pipe_put(&w->pool, f->pipe, 0);
			f->pipe = NULL;
		}
	}
	if (use_pipe) {
		if (!f->pipe && !(f->pipe = pool_pipe_get(&w->pool))) {
			/* Out of descriptors for pipes: this flow copies instead. */
			f->no_splice = true;
			goto copy;
		}
		/* A full pipe: splice(len 0) would return 0, which reads as EOF. */
		if (f->inflight >= PIPE_CAP)
			return -EAGAIN;
		*asked = PIPE_CAP - f->inflight;
		n = splice(src->fd, NULL, f->pipe->wfd, NULL, *asked, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n < 0)
			return -errno;
		if (n > 0 && n < SPLICE_MIN)
			f->bulk = false;
		return n;
	}
copy:
	if (!f->chunk && !(f->chunk = pool_chunk_get(&w->pool)))
		return -ENOMEM;
	struct chunk *ck = f->chunk;
	if (ck->off && ck->off + ck->len == CHUNK_SIZE) {
		memmove(ck->data, ck->data + ck->off, ck->len);
		ck->off = 0;
	}
	*asked = CHUNK_SIZE - (ck->off + ck->len);
	if (*asked == 0)
		return -EAGAIN;
	n = src->ops->recv(src, ck->data + ck->off + ck->len, *asked);
	if (n > 0) {
		ck->len += (size_t)n;
		/* A full chunk's worth in one read: a bulk transfer is under way. */
		if ((size_t)n == CHUNK_SIZE && can_splice)
			f->bulk = true;
	}
	return n;
}

static ssize_t
flow_drain(struct flow *f, struct conn *dst)
{
	ssize_t n;

	if (f->pipe) {
		n = splice(f->pipe->rfd, NULL, dst->fd, NULL, f->inflight, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		return n < 0 ? -errno : n;
	}
	n = dst->ops->send(dst, f->chunk->data + f->chunk->off, f->chunk->len);
	if (n > 0) {
		f->chunk->off += (size_t)n;
		f->chunk->len -= (size_t)n;
		if (f->chunk->len == 0)
			f->chunk->off = 0;
	}
	return n;
}

/* Move what can be moved from src to dst now. Returns false when the tunnel
 * must be closed at once (out of memory). */
static bool
flow_pump(struct tunnel *t, struct flow *f, struct conn *src, struct conn *dst)
{
	bool from_ds = src == &t->ds;
	bool probed = false;

	for (int round = 0; round < PUMP_ROUNDS && !f->done; round++) {
		bool more = false;

		if (!f->eof && !f->full) {
			size_t asked = 0;
			ssize_t n = flow_fill(t, f, src, dst, &asked);
			if (n > 0) {
				f->inflight += (size_t)n;
				t->last_io = ev_now(t->w->loop);
				if (from_ds)
					stat_add(tstat(t, LM_DOWNSTREAM_CX_RX_BYTES_TOTAL), (uint64_t)n);
				/* A short read means the socket is empty, but for a FIN
				 * that may be queued behind the bytes: read once more
				 * (after delivering them) so that the FIN goes on with the
				 * last bytes instead of an event later. Otherwise an app
				 * that closes as soon as it has its answer closes first and
				 * keeps TIME_WAIT on (pod IP, port) -> destination, the
				 * tuples our own outbound connect() draws from: once they
				 * fill the port range (tcp_tw_reuse=2 reuses only loopback
				 * ones), every connect() walks them (issue 7 §1). */
				more = (size_t)n == asked || !probed;
				if ((size_t)n < asked)
					probed = true;
			} else if (n == 0) {
				f->eof = true;
				src->fin = true;
			} else if (n == -EAGAIN) {
				/* Empty socket, or a pipe whose slots are full of small segments. */
				if (f->inflight)
					f->full = true;
			} else if (n == -ENOMEM) {
				stat_add(tstat(t, LM_DOWNSTREAM_CX_OVERFLOW), 1);
				clog_warn(t, "out of memory for buffers: connection closed");
				return false;
			} else {
				side_read_failed(t, src, (int)n);
			}
		}
		if (f->inflight && !dst->wdead) {
			ssize_t n = flow_drain(f, dst);
			if (n > 0) {
				f->inflight -= (size_t)n;
				f->full = false;
				t->last_io = ev_now(t->w->loop);
				if (!from_ds)
					stat_add(tstat(t, LM_DOWNSTREAM_CX_TX_BYTES_TOTAL), (uint64_t)n);
			} else if (n != -EAGAIN) {
				side_write_failed(t, dst, n < 0 ? (int)n : -EPIPE);
			}
		}
		if (!more || f->inflight)
			break;
	}
	if (f->inflight == 0 && !f->done)
		flow_release(t, f, 0);
	return true;
}

/* A flow whose source ended and whose bytes are all delivered is done: the
 * destination gets our FIN (half-close; the other direction keeps flowing). */
static void
flow_finish(struct flow *f, struct conn *dst)
{
	if (f->done || !f->eof || f->inflight)
		return;
	/* Not after a reset: a FIN would make a truncated stream look complete;
	 * dst gets a reset instead once it has our bytes (tunnel_end). */
	if (!dst->wdead && !dst->rst_on_close)
		(void)dst->ops->shutdown_wr(dst);
	f->done = true;
}

static bool
flow_wants_read(const struct flow *f)
{
	return !f->eof && !f->full && !f->done;
}

static void tunnel_end(struct tunnel *t);

/* Arm both watchers for what the two flows need now, or end the tunnel when
 * both are done. Called after every event, so no flow is left waiting. */
static void
tunnel_rearm(struct tunnel *t)
{
	struct ev_loop *loop = t->w->loop;

	flow_finish(&t->d2u, &t->us);
	flow_finish(&t->u2d, &t->ds);
	if (t->d2u.done && t->u2d.done) {
		tunnel_end(t);
		return;
	}
	conn_want(loop, &t->ds, (flow_wants_read(&t->d2u) && !t->ds.rdead ? EV_READ : 0) |
	    (t->u2d.inflight && !t->ds.wdead ? EV_WRITE : 0));
	conn_want(loop, &t->us, (flow_wants_read(&t->u2d) && !t->us.rdead ? EV_READ : 0) |
	    (t->d2u.inflight && !t->us.wdead ? EV_WRITE : 0));
}

/* Bytes we wrote to fd that its peer has not acknowledged yet. */
static int
unacked(int fd)
{
	int n = 0;

	return ioctl(fd, SIOCOUTQ, &n) < 0 ? 0 : n;
}

/* Close one side for good, if closing now loses nothing: its peer has all
 * our bytes (or we read its FIN, so there is no unread input whose presence
 * would turn our close into a reset that drops them). A side that must pass
 * on a reset closes with one once its bytes are acknowledged. Returns true
 * when closed. */
static bool
side_try_close(struct tunnel *t, struct conn *c, bool force)
{
	if (c->fd < 0)
		return true;
	int outq = c->wdead ? 0 : unacked(c->fd);
	bool safe = c->rst_on_close ? outq == 0 : c->fin || c->rdead || outq == 0;
	if (!safe && !force)
		return false;
	conn_want(t->w->loop, c, 0);
	if (c->rst_on_close && !c->rdead)
		sock_close_rst(c->fd);
	else
		close(c->fd);
	c->fd = -1;
	c->lingering = false;
	return true;
}

/* Both flows are done. Usually both sides sent their FIN and we close at
 * once. Otherwise a side lingers (reading and dropping what it still sends)
 * until closing it is safe, at most LINGER_TIME: a close with unread input
 * makes the kernel reset, and a reset drops the bytes still queued for the
 * peer (the response we just relayed). */
static void
tunnel_end(struct tunnel *t)
{
	bool ds_closed = side_try_close(t, &t->ds, false);
	bool us_closed = side_try_close(t, &t->us, false);

	if (ds_closed && us_closed) {
		tunnel_free(t);
		return;
	}
	t->state = TUN_LINGER;
	t->linger_until = ev_now(t->w->loop) + LINGER_TIME;
	ev_timer_stop(t->w->loop, &t->timer);
	ev_timer_set(&t->timer, LINGER_TICK, 0.);
	ev_timer_start(t->w->loop, &t->timer);
	for (struct conn *c = &t->ds; c; c = c == &t->ds ? &t->us : NULL) {
		if (c->fd < 0)
			continue;
		c->lingering = true;
		conn_want(t->w->loop, c, c->rdead || c->fin ? 0 : EV_READ);
	}
}

/* TUN_LINGER: drop what a lingering side still sends; close it when safe. */
static void
tunnel_linger(struct tunnel *t, struct conn *c, bool timer)
{
	static char sink[4096];
	bool force = ev_now(t->w->loop) >= t->linger_until;

	if (c && c->fd >= 0 && !c->rdead && !c->fin) {
		for (int i = 0; i < 16; i++) {
			ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
			if (n > 0)
				continue;
			if (n == 0)
				c->fin = true;
			else if (errno != EAGAIN && errno != EINTR)
				c->rdead = c->wdead = true;
			break;
		}
		if (c->fin || c->rdead)
			conn_want(t->w->loop, c, 0);
	}
	bool ds_closed = side_try_close(t, &t->ds, force);
	bool us_closed = side_try_close(t, &t->us, force);
	if (ds_closed && us_closed) {
		tunnel_free(t);
		return;
	}
	if (timer) {
		ev_timer_set(&t->timer, LINGER_TICK, 0.);
		ev_timer_start(t->w->loop, &t->timer);
	}
}

static void
tunnel_fail_connect(struct tunnel *t, int err, bool timeout)
{
	char a[SOCK_ADDR_STRLEN];

	stat_add(tstat(t, timeout ? LM_UPSTREAM_CX_CONNECT_TIMEOUT : LM_UPSTREAM_CX_CONNECT_FAIL), 1);
	clog_warn(t, "%s upstream %s: %s", listener_names[t->lst], sock_addr_str(&t->dst, a, sizeof(a)),
	    timeout ? "connect timeout" : strerror(-err));
	tunnel_close(t, true);
}

static void
tunnel_established(struct tunnel *t)
{
	const struct config *cfg = &t->snap->s->cfg;

	t->state = TUN_ESTABLISHED;
	ev_timer_stop(t->w->loop, &t->timer);
	t->last_io = ev_now(t->w->loop);
	if (cfg->idle_timeout_ms) {
		ev_timer_set(&t->timer, cfg->idle_timeout_ms / 1000.0, 0.);
		ev_timer_start(t->w->loop, &t->timer);
	}
	clog_debug(t, "established");
	tunnel_rearm(t);
}

static void
tunnel_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct tunnel *t = io->data;
	bool is_ds = io == &t->ds.io;

	if (t->state == TUN_LINGER) {
		tunnel_linger(t, is_ds ? &t->ds : &t->us, false);
		return;
	}
	if (t->state == TUN_CONNECTING) {
		int err = sock_error(t->us.fd);
		if (err)
			tunnel_fail_connect(t, err, false);
		else
			tunnel_established(t);
		return;
	}
	/* Readable source: pump its flow. Writable destination: pump the flow into it. */
	if (revents & EV_READ) {
		if (!flow_pump(t, is_ds ? &t->d2u : &t->u2d, is_ds ? &t->ds : &t->us, is_ds ? &t->us : &t->ds))
			goto abort;
	}
	if (revents & EV_WRITE) {
		if (!flow_pump(t, is_ds ? &t->u2d : &t->d2u, is_ds ? &t->us : &t->ds, is_ds ? &t->ds : &t->us))
			goto abort;
	}
	tunnel_rearm(t);
	return;
abort:
	tunnel_close(t, true);
}

static void
tunnel_timer_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
	struct tunnel *t = tm->data;
	const struct config *cfg = &t->snap->s->cfg;

	if (t->state == TUN_CONNECTING) {
		tunnel_fail_connect(t, -ETIMEDOUT, true);
		return;
	}
	if (t->state == TUN_LINGER) {
		tunnel_linger(t, NULL, true);
		return;
	}
	/* Idle: the timer is not reset on every byte (libev's lazy idle timer);
	 * on expiry, look at the last activity and re-arm for what remains. */
	ev_tstamp idle = cfg->idle_timeout_ms / 1000.0;
	ev_tstamp left = t->last_io + idle - ev_now(loop);
	if (left > 0.001) {
		ev_timer_set(tm, left, 0.);
		ev_timer_start(loop, tm);
		return;
	}
	stat_add(tstat(t, LM_DOWNSTREAM_CX_IDLE_TIMEOUT), 1);
	clog_debug(t, "idle timeout");
	tunnel_close(t, false);
}

/* Where the upstream connection comes from. Outbound: anywhere. Inbound
 * REDIRECT: 127.0.0.6 / ::6, which the capture rules let through. Inbound
 * TPROXY: the client's own address, so that the app sees who called. */
static int
upstream_source(struct tunnel *t, int fd, const struct config *cfg, struct sockaddr_storage *src,
    bool *transparent)
{
	*transparent = false;
	if (t->lst != LST_INBOUND)
		return 0;
	if (cfg->mode == INTERCEPT_TPROXY) {
		socklen_t len = sizeof(*src);
		if (getpeername(fd, (struct sockaddr *)src, &len) < 0)
			return -errno;
		sock_addr_set_port(src, 0);
		*transparent = true;
		return 1;
	}
	return sock_addr_parse(t->dst.ss_family == AF_INET6 ? passthrough_v6 : passthrough_v4, 0, src) == 0 ? 1 : -EINVAL;
}

/* A tunnel for accepted socket fd, counted and listed; NULL (fd closed) on OOM. */
static struct tunnel *
tunnel_new(struct worker *w, enum listener_kind kind, int fd)
{
	struct tunnel *t;
	int one = 1;

	stat_add(&w->stats.lst[kind][LM_DOWNSTREAM_CX_TOTAL], 1);
	t = calloc(1, sizeof(*t));
	if (!t) {
		stat_add(&w->stats.lst[kind][LM_DOWNSTREAM_CX_OVERFLOW], 1);
		stat_add(&w->stats.lst[kind][LM_DOWNSTREAM_CX_DESTROY], 1);
		sock_close_rst(fd);
		return NULL;
	}
	t->w = w;
	t->worker_id = w->id;
	t->id = ++w->next_id;
	t->lst = kind;
	t->state = TUN_CONNECTING;
	t->snap = wsnap_use(w->snap);
	t->ds = (struct conn){ .fd = fd, .ops = &raw_ops };
	t->us = (struct conn){ .fd = -1, .ops = &raw_ops };
	ev_init(&t->ds.io, tunnel_io_cb);
	ev_init(&t->us.io, tunnel_io_cb);
	t->ds.io.data = t->us.io.data = t;
	ev_init(&t->timer, tunnel_timer_cb);
	t->timer.data = t;
	t->next = w->tunnels;
	if (w->tunnels)
		w->tunnels->prev = t;
	w->tunnels = t;
	stat_add(tstat(t, LM_DOWNSTREAM_CX_ACTIVE), 1);
	stat_add(&w->stats.w[WM_SESSIONS_IN_USE], 1);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return t;
}

/* Start the upstream connect to t->dst. Returns false when t was closed. */
static bool
tunnel_connect(struct tunnel *t)
{
	const struct config *cfg = &t->snap->s->cfg;
	struct sockaddr_storage src;
	bool transparent;
	char a[SOCK_ADDR_STRLEN];
	int rc;

	rc = upstream_source(t, t->ds.fd, cfg, &src, &transparent);
	if (rc >= 0)
		rc = sock_connect(&t->dst, rc ? &src : NULL, transparent, transparent ? TPROXY_MARK : 0);
	if (rc < 0) {
		if (rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS || rc == -ENOMEM) {
			stat_add(tstat(t, LM_DOWNSTREAM_CX_OVERFLOW), 1);
			clog_warn(t, "%s upstream %s: %s", listener_names[t->lst],
			    sock_addr_str(&t->dst, a, sizeof(a)), strerror(-rc));
			tunnel_close(t, true);
		} else {
			tunnel_fail_connect(t, rc, false);
		}
		return false;
	}
	t->us.fd = rc;
	clog_debug(t, "%s to %s", listener_names[t->lst], sock_addr_str(&t->dst, a, sizeof(a)));
	ev_timer_set(&t->timer, cfg->connect_timeout_ms / 1000.0, 0.);
	ev_timer_start(t->w->loop, &t->timer);
	conn_want(t->w->loop, &t->us, EV_WRITE);
	return true;
}

void
tunnel_accept(struct worker *w, enum listener_kind kind, int fd)
{
	const struct config *cfg = &w->snap->s->cfg;
	struct tunnel *t = tunnel_new(w, kind, fd);
	int rc;

	if (!t)
		return;
	rc = sock_original_dst(fd, kind == LST_INBOUND && cfg->mode == INTERCEPT_TPROXY, &t->dst);
	if (rc < 0) {
		stat_add(tstat(t, LM_DOWNSTREAM_CX_NO_ORIGINAL_DST), 1);
		clog_warn(t, "%s: no original destination (%s): refused", listener_names[kind],
		    rc == -ENOENT ? "connection was not redirected to us" : strerror(-rc));
		tunnel_close(t, true);
		return;
	}
	/* Loop guard for TPROXY, whose original destination is never the listener
	 * itself: a connection to our own capture port would be carried to that
	 * port again, and again (Envoy black-holes 15006 the same way). */
	uint16_t port = sock_addr_port(&t->dst);
	if (kind == LST_INBOUND && (port == cfg->inbound_port || port == cfg->outbound_port)) {
		stat_add(tstat(t, LM_DOWNSTREAM_CX_NO_ORIGINAL_DST), 1);
		clog_warn(t, "inbound: destination port %u is the proxy's own capture port: refused", port);
		tunnel_close(t, true);
		return;
	}
	tunnel_connect(t);
}

struct tunnel *
tunnel_start(struct worker *w, enum listener_kind kind, int fd, const struct sockaddr_storage *dst)
{
	struct tunnel *t = tunnel_new(w, kind, fd);

	if (!t)
		return NULL;
	t->dst = *dst;
	return tunnel_connect(t) ? t : NULL;
}

void
tunnel_close_all(struct worker *w)
{
	while (w->tunnels) {
		struct tunnel *t = w->tunnels;
		if (t->state != TUN_CLOSED)
			stat_add(tstat(t, LM_DOWNSTREAM_CX_DRAINED), 1);
		tunnel_close(t, false);
	}
}
