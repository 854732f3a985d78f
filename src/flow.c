/* flow: the relay engine: bytes both ways between two conns of any transport,
 * with back-pressure, half-close, resets passed on, idle timeout and a
 * lingering close. See HACKING.md, "The data path". */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "conn.h"
#include "flow.h"
#include "log.h"
#include "metrics.h"

/* A pipe holds 16 pages by default (pipe(7)); we never ask for more. */
#define PIPE_CAP 65536
/* Rounds of read+write per event and direction, so one busy connection cannot
 * starve the others of the worker (at most 8 x 64 KiB per wake-up). */
#define PUMP_ROUNDS 8
/* After both flows end, how long a side may linger before it is closed
 * anyway, and how often its send queue is looked at (see relay_end). */
#define LINGER_TIME 2.0
#define LINGER_TICK 0.02
/* A side left unwatched (its end of stream read, or its reading paused) is
 * put in the hang-up watch only after this long (seconds; flow.h): most such sides are closed
 * sooner (the other side answers the FIN), and each registration is an
 * epoll_ctl(2) that the churn shapes would pay once per connection. */
ev_tstamp flow_hup_delay = 0.05;
/* A spliced read smaller than this ends bulk mode (see flow_fill). */
#define SPLICE_MIN 8192

static void relay_ready(struct conn *c, int what);
static void relay_timer_cb(struct ev_loop *loop, ev_timer *tm, int revents);

const char *
relay_state_str(enum relay_state s)
{
	switch (s) {
	case RELAY_IDLE: return "idle";
	case RELAY_FORWARDING: return "forwarding";
	case RELAY_LINGER: return "linger";
	case RELAY_DONE: return "done";
	}
	return "?";
}

static inline uint64_t *
rstat(struct relay *r, enum listener_metric m)
{
	return &r->stats[m];
}

static inline bool
is_ds(const struct relay *r, const struct conn *c)
{
	return c == &r->ds;
}

static void
flow_release(struct relay *r, struct flow *f, bool dirty)
{
	if (f->pipe) {
		pool_pipe_put(r->pool, f->pipe, dirty);
		f->pipe = NULL;
	}
	if (f->chunk) {
		pool_chunk_put(r->pool, f->chunk);
		f->chunk = NULL;
	}
}

/* Drop what this direction still holds: its destination is gone. */
static void
flow_abort(struct relay *r, struct flow *f)
{
	flow_release(r, f, f->inflight > 0);
	f->inflight = 0;
	f->eof = f->done = true;
	f->full = false;
}

/* c must see a reset now; everything to and from it is dropped. */
static void
side_reset(struct relay *r, struct conn *c)
{
	c->rdead = c->wdead = true;
	flow_abort(r, &r->d2u);
	flow_abort(r, &r->u2d);
	conn_close(c, CONN_ABORT);
}

/* A read from c failed (it was reset): deliver what was read from it, drop
 * what was headed to it, and reset the other side once that side has its
 * bytes, so a truncated stream is not taken for a complete one. When the
 * other side is not taking bytes (back-pressure), it is reset at once: it
 * would otherwise hold the connection until the idle timeout. */
static void
side_read_failed(struct relay *r, struct conn *c, int err)
{
	bool ds = is_ds(r, c);
	struct flow *from = ds ? &r->d2u : &r->u2d;
	struct flow *to = ds ? &r->u2d : &r->d2u;
	struct conn *other = ds ? &r->us : &r->ds;

	if (!c->wdead)
		stat_add(rstat(r, ds ? LM_DOWNSTREAM_CX_RESET : LM_UPSTREAM_CX_RESET), 1);
	r->ended |= ds ? RELAY_END_DS_RESET : RELAY_END_US_RESET;
	clog_debug(r, "%s read: %s", ds ? "downstream" : "upstream", strerror(-err));
	c->rdead = c->wdead = true;
	other->rst_on_close = true;
	flow_abort(r, to);
	if (from->full && conn_open(other)) {
		side_reset(r, other);
		return;
	}
	from->eof = true;
}

/* A write to c failed: drop what was headed to it, but keep reading it: the
 * kernel still holds what c sent before it went away (a response sent just
 * before a reset, say), and the other side must get it. */
static void
side_write_failed(struct relay *r, struct conn *c, int err)
{
	bool ds = is_ds(r, c);

	if (!c->wdead)
		stat_add(rstat(r, ds ? LM_DOWNSTREAM_CX_RESET : LM_UPSTREAM_CX_RESET), 1);
	r->ended |= ds ? RELAY_END_DS_RESET : RELAY_END_US_RESET;
	clog_debug(r, "%s write: %s", ds ? "downstream" : "upstream", strerror(-err));
	c->wdead = true;
	(ds ? &r->us : &r->ds)->rst_on_close = true;
	flow_abort(r, ds ? &r->u2d : &r->d2u);
}

/* Read into the flow's pipe or chunk. Returns bytes, 0 at end of stream, -errno.
 *
 * Which one: small messages (requests, responses) are cheaper to copy through
 * a chunk with recv/send than to move through a pipe with two splices, while
 * bulk transfers are cheaper spliced (the kernel moves pages, we copy
 * nothing). So a flow copies until a read fills a whole chunk, then splices
 * until a read comes back small (HAProxy's "splice-auto" idea). The choice is
 * made only when nothing is in flight, so bytes never sit in both at once and
 * stay in order. Splicing is the one place where the relay uses descriptors:
 * only transports that say can_splice (a plain socket) take part. */
static ssize_t
flow_fill(struct relay *r, struct flow *f, struct conn *src, struct conn *dst, size_t *asked)
{
	bool can_splice = !f->no_splice && src->ops->can_splice && dst->ops->can_splice;
	bool use_pipe = f->inflight ? f->pipe != NULL : can_splice && f->bulk;
	ssize_t n;

	if (f->inflight == 0) {
		/* Switch containers only when empty; keep the one still wanted. */
		if (use_pipe && f->chunk) {
			pool_chunk_put(r->pool, f->chunk);
			f->chunk = NULL;
		} else if (!use_pipe && f->pipe) {
			pool_pipe_put(r->pool, f->pipe, 0);
			f->pipe = NULL;
		}
	}
	if (use_pipe) {
		if (!f->pipe && !(f->pipe = pool_pipe_get(r->pool))) {
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
	if (!f->chunk && !(f->chunk = pool_chunk_get(r->pool)))
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

/* n bytes read into f from its source. */
static void
flow_took(struct relay *r, struct flow *f, bool from_ds, size_t n)
{
	f->inflight += n;
	r->last_io = ev_now(r->loop);
	if (from_ds) {
		stat_add(rstat(r, LM_DOWNSTREAM_CX_RX_BYTES_TOTAL), (uint64_t)n);
		r->rx_bytes += (uint64_t)n;
	}
}

/* n bytes of f delivered to its destination. */
static void
flow_gave(struct relay *r, struct flow *f, bool from_ds, size_t n)
{
	f->inflight -= n;
	f->full = false;
	r->last_io = ev_now(r->loop);
	if (!from_ds) {
		stat_add(rstat(r, LM_DOWNSTREAM_CX_TX_BYTES_TOTAL), (uint64_t)n);
		r->tx_bytes += (uint64_t)n;
	}
}

/* Deliver what f holds to dst, as far as dst takes it now. Returns false
 * when dst was reset (its source is gone and dst takes no more). */
static bool
flow_push(struct relay *r, struct flow *f, struct conn *src, struct conn *dst)
{
	if (!f->inflight || dst->wdead)
		return true;
	ssize_t n = flow_drain(f, dst);
	if (n > 0) {
		flow_gave(r, f, is_ds(r, src), (size_t)n);
	} else if (n != -EAGAIN) {
		side_write_failed(r, dst, n < 0 ? (int)n : -EPIPE);
	} else if (src->rdead) {
		/* The source was reset and dst is not taking the rest
		 * (back-pressure not flagged yet: no read saw the pipe full):
		 * as in side_read_failed, reset dst now rather than hold it
		 * until the idle timeout. */
		side_reset(r, dst);
		return false;
	}
	return true;
}

/* Move what can be moved from src to dst now. Returns false when the relay
 * must be aborted (out of memory). */
static bool
flow_pump(struct relay *r, struct flow *f, struct conn *src, struct conn *dst)
{
	bool from_ds = is_ds(r, src);
	bool probed = false;

	for (int round = 0; round < PUMP_ROUNDS && !f->done; round++) {
		bool more = false;

		if (!f->eof && !f->full && !src->rdead) {
			size_t asked = 0;
			ssize_t n = flow_fill(r, f, src, dst, &asked);
			if (n > 0) {
				flow_took(r, f, from_ds, (size_t)n);
				/* A short read means the socket is empty, unless the
				 * transport holds more (a TLS record read whole), or for
				 * a FIN queued behind the bytes: from the upstream (the
				 * server's answer), read once more (after delivering
				 * them) so that the FIN goes on with the last bytes, not
				 * an event later. Otherwise an app that closes as soon as
				 * it has its answer closes first and keeps TIME_WAIT on
				 * (pod IP, port) -> destination, the very tuples our own
				 * outbound connect() draws from: once they fill the port
				 * range, every connect() walks them and the sidecar's
				 * core goes to __inet_hash_connect (issue 7 §1: 624 ->
				 * 7,489 req/s at 64 connections closing first). A
				 * client's FIN behind its request has no such cost an
				 * event later, and the probe (a recv that finds nothing)
				 * would be paid on every request of every keep-alive
				 * connection. */
				more = (size_t)n == asked || src->ops->pending(src) > 0 || (!probed && !from_ds);
				if ((size_t)n < asked)
					probed = true;
			} else if (n == 0) {
				f->eof = true;
				src->fin = true;
			} else if (n == -EAGAIN) {
				/* Nothing to read now, or a pipe whose slots are full
				 * of small segments: wait for the output to drain. */
				if (f->inflight)
					f->full = true;
			} else if (n == -ENOMEM) {
				stat_add(rstat(r, LM_DOWNSTREAM_CX_OVERFLOW), 1);
				clog_warn(r, "out of memory for buffers: connection reset");
				return false;
			} else {
				side_read_failed(r, src, (int)n);
				if (f->done)
					break;
			}
		}
		if (!flow_push(r, f, src, dst))
			break;
		if (!more || f->inflight)
			break;
	}
	if (f->inflight == 0 && !f->done)
		flow_release(r, f, false);
	return true;
}

static bool
flow_ending(const struct flow *f)
{
	return f->done || (f->eof && !f->inflight);
}

/* A flow whose source ended and whose bytes are all delivered is done: the
 * destination gets our end of stream (half-close; the other direction keeps
 * flowing). closing: the relay ends now and dst, whose own end of stream was
 * read, is closed gracefully at once (relay_end: nothing unread, so safe), a
 * close that ends the stream as a shutdown would: then the shutdown(2) is
 * left out (one syscall of the ~28 a connection costs each sidecar, in the
 * churn shapes where every connection ends this way). */
static void
flow_finish(struct flow *f, struct conn *dst, bool closing)
{
	if (f->done || !f->eof || f->inflight)
		return;
	/* Not after a reset: a FIN would make a truncated stream look complete;
	 * dst gets a reset instead once it has our bytes (relay_end). */
	if (conn_open(dst) && !dst->wdead && !dst->rst_on_close && !(closing && dst->fin))
		(void)dst->ops->shutdown_wr(dst);
	f->done = true;
}

static bool
flow_wants_read(const struct flow *f)
{
	return !f->eof && !f->full && !f->done;
}

/* Whether side c is neither read nor written now (its reading paused by
 * back-pressure, or its end of stream already read) and so needs the
 * hang-up watch for a reset, which must not wait for the idle timeout. */
static bool
side_unwatched(const struct conn *c)
{
	return conn_open(c) && !c->wants && !c->rdead && !c->hup_watched;
}

/* Arm side c for what its two flows need. An unwatched side goes into the
 * hang-up watch HUP_DELAY later (relay_timer_cb), if it is still open and
 * unwatched then. */
static void
side_arm(struct relay *r, struct conn *c, const struct flow *out, const struct flow *in)
{
	int wants = (flow_wants_read(out) && !c->rdead ? CONN_RD : 0) |
	    (in->inflight && !c->wdead ? CONN_WR : 0);

	conn_arm(c, wants);
	if (side_unwatched(c) && !r->hup_due) {
		r->hup_due = true;
		/* The idle timer is lazy (re-armed on expiry for what is
		 * left): bringing it forward costs no syscall. */
		if (!ev_is_active(&r->timer) || ev_timer_remaining(r->loop, &r->timer) > flow_hup_delay) {
			ev_timer_stop(r->loop, &r->timer);
			ev_timer_set(&r->timer, flow_hup_delay, 0.);
			ev_timer_start(r->loop, &r->timer);
		}
	}
}

static bool relay_end(struct relay *r);

/* Arm both sides for what the two flows need now, or end when both are done.
 * Called after every event, so no flow is left waiting on a stopped watcher.
 * Returns false when the relay is over (and r is gone). */
static bool
relay_rearm(struct relay *r)
{
	bool closing = flow_ending(&r->d2u) && flow_ending(&r->u2d);

	flow_finish(&r->d2u, &r->us, closing);
	flow_finish(&r->u2d, &r->ds, closing);
	if (r->d2u.done && r->u2d.done)
		return relay_end(r);
	side_arm(r, &r->ds, &r->d2u, &r->u2d);
	side_arm(r, &r->us, &r->u2d, &r->d2u);
	return true;
}

/* Close one side for good, if closing now loses nothing: its peer has all
 * our bytes (or we read its FIN, so there is no unread input whose presence
 * would turn our close into a reset that drops them). A side that must pass
 * on a reset closes with one once its bytes are acknowledged. Returns true
 * when closed. */
static bool
side_try_close(struct conn *c, bool force)
{
	if (!conn_open(c))
		return true;
	/* unsent() is a syscall (SIOCOUTQ): asked only when the answer matters,
	 * not for the usual end where the peer's FIN was read. */
	bool safe = c->rst_on_close ? (c->wdead || c->ops->unsent(c) == 0) :
	    c->fin || c->rdead || c->wdead || c->ops->unsent(c) == 0;
	if (!safe && !force)
		return false;
	conn_close(c, c->rst_on_close && !c->rdead ? CONN_ABORT : CONN_GRACEFUL);
	return true;
}

static void
relay_finish(struct relay *r)
{
	r->state = RELAY_DONE;
	ev_timer_stop(r->loop, &r->timer);
	flow_release(r, &r->d2u, r->d2u.inflight > 0);
	flow_release(r, &r->u2d, r->u2d.inflight > 0);
	r->done(r);
}

/* Both flows are done. Usually both sides sent their FIN and we close at
 * once. Otherwise a side lingers (reading and dropping what it still sends)
 * until closing it is safe, at most LINGER_TIME: a close with unread input
 * makes the kernel reset, and a reset drops the bytes still queued for the
 * peer (the response we just relayed). */
static bool
relay_end(struct relay *r)
{
	bool ds_closed = side_try_close(&r->ds, false);
	bool us_closed = side_try_close(&r->us, false);

	if (ds_closed && us_closed) {
		relay_finish(r);
		return false;
	}
	r->state = RELAY_LINGER;
	r->linger_until = ev_now(r->loop) + LINGER_TIME;
	ev_timer_stop(r->loop, &r->timer);
	ev_timer_set(&r->timer, LINGER_TICK, 0.);
	ev_timer_start(r->loop, &r->timer);
	for (struct conn *c = &r->ds; c; c = c == &r->ds ? &r->us : NULL)
		if (conn_open(c))
			conn_arm(c, c->rdead || c->fin ? 0 : CONN_RD);
	return true;
}

/* RELAY_LINGER: drop what a lingering side still sends; close it when safe. */
static void
relay_linger(struct relay *r, struct conn *c, bool timer)
{
	bool force = ev_now(r->loop) >= r->linger_until;

	if (c && conn_open(c) && !c->rdead && !c->fin) {
		char sink[4096];
		for (int i = 0; i < 16; i++) {
			ssize_t n = c->ops->recv(c, sink, sizeof(sink));
			if (n > 0)
				continue;
			if (n == 0)
				c->fin = true;
			else if (n != -EAGAIN && n != -EINTR)
				c->rdead = c->wdead = true;
			break;
		}
		if (c->fin || c->rdead)
			conn_arm(c, 0);
	}
	bool ds_closed = side_try_close(&r->ds, force);
	bool us_closed = side_try_close(&r->us, force);
	if (ds_closed && us_closed) {
		relay_finish(r);
		return;
	}
	if (timer) {
		ev_timer_set(&r->timer, LINGER_TICK, 0.);
		ev_timer_start(r->loop, &r->timer);
	}
}

static void
relay_ready(struct conn *c, int what)
{
	struct relay *r = c->owner;
	bool ds = is_ds(r, c);
	struct conn *other = ds ? &r->us : &r->ds;

	if (r->state == RELAY_LINGER) {
		relay_linger(r, c, false);
		return;
	}
	if (what & CONN_HUP) {
		/* A reset on a side we were not reading; a clean hang-up needs
		 * nothing: reading, when it resumes, finds the end of stream. */
		int err = c->ops->error(c);
		if (err)
			side_read_failed(r, c, err);
	}
	/* Readable source: pump its flow. Writable destination: pump the flow into it.
	 * After a hang-up, pump c's flow too: a reset source whose bytes still
	 * wait for the other side must find out now whether that side takes them. */
	if ((what & (CONN_RD | CONN_HUP)) && conn_open(c) && conn_open(other)) {
		if (!flow_pump(r, ds ? &r->d2u : &r->u2d, c, other))
			goto abort;
	}
	if ((what & CONN_WR) && conn_open(c) && conn_open(other)) {
		if (!flow_pump(r, ds ? &r->u2d : &r->d2u, other, c))
			goto abort;
	}
	(void)relay_rearm(r);
	return;
abort:
	relay_abort(r);
}

static void
relay_timer_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
	struct relay *r = tm->data;

	if (r->state == RELAY_LINGER) {
		relay_linger(r, NULL, true);
		return;
	}
	if (r->hup_due) {
		r->hup_due = false;
		for (struct conn *c = &r->ds; c; c = c == &r->ds ? &r->us : NULL)
			if (side_unwatched(c))
				conn_watch_hup(c);
		if (r->idle <= 0)
			return;
	}
	/* Idle: the timer is not reset on every byte (libev's lazy idle timer);
	 * on expiry, look at the last activity and re-arm for what remains. */
	ev_tstamp left = r->last_io + r->idle - ev_now(loop);
	if (left > 0.001) {
		ev_timer_set(tm, left, 0.);
		ev_timer_start(loop, tm);
		return;
	}
	stat_add(rstat(r, LM_DOWNSTREAM_CX_IDLE_TIMEOUT), 1);
	r->ended |= RELAY_END_IDLE;
	/* A quiet connection (keep-alive) gets a clean end on both sides. One
	 * that went quiet because a side stopped reading still holds bytes (in
	 * our pipe or chunk, or unread in the source socket): a FIN after them
	 * would make the truncated stream look complete, so both are reset. */
	bool cut = r->d2u.inflight || r->u2d.inflight || r->d2u.full || r->u2d.full;
	clog_debug(r, "idle timeout%s", cut ? " with bytes in flight: reset" : "");
	if (cut) {
		relay_abort(r);
		return;
	}
	conn_close(&r->ds, CONN_GRACEFUL);
	conn_close(&r->us, CONN_GRACEFUL);
	relay_finish(r);
}

void
relay_init(struct relay *r, struct ev_loop *loop, struct pool *pool, uint64_t *stats,
    relay_done_fn *done)
{
	r->state = RELAY_IDLE;
	r->loop = loop;
	r->pool = pool;
	r->stats = stats;
	r->done = done;
	ev_init(&r->timer, relay_timer_cb);
	r->timer.data = r;
}

ssize_t
relay_prefetch(struct relay *r)
{
	struct flow *f = &r->d2u;
	size_t asked = 0;
	ssize_t n;

	if (f->inflight || f->eof)
		return -EAGAIN;
	/* The upstream has no transport yet: the downstream's own says
	 * whether the bytes may be spliced later. */
	n = flow_fill(r, f, &r->ds, &r->ds, &asked);
	if (n > 0) {
		flow_took(r, f, true, (size_t)n);
	} else if (n == 0) {
		f->eof = true;
		r->ds.fin = true;
	}
	if (f->inflight == 0)
		flow_release(r, f, false);
	return n;
}

ssize_t
relay_push(struct relay *r)
{
	struct flow *f = &r->d2u;
	ssize_t n;

	if (!f->inflight)
		return -EAGAIN;
	n = flow_drain(f, &r->us);
	if (n > 0)
		flow_gave(r, f, true, (size_t)n);
	return n == 0 ? -EPIPE : n;
}

bool
relay_start(struct relay *r, ev_tstamp idle)
{
	r->state = RELAY_FORWARDING;
	r->idle = idle;
	r->last_io = ev_now(r->loop);
	for (struct conn *c = &r->ds; c; c = c == &r->ds ? &r->us : NULL) {
		c->ready = relay_ready;
		c->owner = r;
	}
	ev_timer_stop(r->loop, &r->timer);
	if (idle > 0) {
		ev_timer_set(&r->timer, idle, 0.);
		ev_timer_start(r->loop, &r->timer);
	}
	/* What the client sent before the upstream was connected
	 * (relay_prefetch): the upstream was just found writable, so it goes
	 * now rather than an event later. */
	if (r->d2u.inflight && flow_push(r, &r->d2u, &r->ds, &r->us) && !r->d2u.inflight)
		flow_release(r, &r->d2u, false);
	return relay_rearm(r);
}

void
relay_abort(struct relay *r)
{
	if (r->state == RELAY_DONE)
		return;
	conn_close(&r->ds, CONN_ABORT);
	conn_close(&r->us, CONN_ABORT);
	relay_finish(r);
}
