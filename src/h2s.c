/* h2s: HTTP/2 sessions in a worker's loop over a conn (nghttp2), and each
 * CONNECT stream as a conn the relay engine drives like a socket. See
 * HACKING.md, "HTTP/2 sessions".
 *
 * Nothing is done from inside nghttp2's callbacks but bookkeeping: they
 * record what changed on a stream (notify bits) and queue it; the session's
 * kick (a fed watcher, run by the loop in the same iteration) then calls the
 * streams' owners and flushes the session's output. So an owner never runs
 * inside nghttp2, and nghttp2 is never re-entered. */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "conn.h"
#include "h2s.h"
#include "pool.h"
#include "worker-t.h"

/* A queue of bytes in pool chunks (the worker's, so a stream holds memory
 * only while bytes wait in it: an idle stream holds none). */
struct bq {
	struct chunk *head, *tail;
	size_t len;
};

/* What one stream may hold of what its owner sent before nghttp2 takes it
 * (DATA frames leave only as the peer's window allows): the send queue. */
#define SBUF_CAP (128 * 1024)
/* What one flush coalesces into one transport write (fewer TLS records). */
#define OBUF_CAP (64 * 1024)
/* Reads from the transport per event, so one busy session cannot starve the
 * worker's other connections. */
#define READ_ROUNDS 8
#define READ_SIZE 16384
/* Frames that make no progress (PING, SETTINGS, RST_STREAM, PRIORITY, empty
 * DATA, WINDOW_UPDATE) a peer may send per second before its session is
 * ended with ENHANCE_YOUR_CALM: nghttp2 bounds the acks it queues, this bounds
 * the work. */
#define CTRL_PER_SEC 2000
/* Keep-alive (server, as Envoy's HBONE listener): a PING after
 * h2s_ka_interval without a frame from the peer, and the session ends if no
 * PING ACK comes back within h2s_ka_timeout (h2s.h; tests shorten them). */
ev_tstamp h2s_ka_interval = 10.0, h2s_ka_timeout = 20.0;

const struct h2s_settings h2s_client_defaults = {
	.max_concurrent_streams = 100,
	.stream_window = 4u << 20,
	.conn_window = 16u << 20,
	.max_frame = 1u << 20,
	.max_header_list = 16u << 10,
};

const struct h2s_settings h2s_server_defaults = {
	.max_concurrent_streams = 200,
	.stream_window = 4u << 20,
	.conn_window = 16u << 20,
	.max_frame = 1u << 20,
	.max_header_list = 64u << 10,
};

enum {
	N_RD = CONN_RD, N_WR = CONN_WR, N_HS = CONN_HS, N_HUP = CONN_HUP,
	N_REQ = 16,		/* server: the request is complete, call the handler */
};

struct h2s_stream {
	struct conn conn;	/* the storage the conn starts in */
	struct conn *c;		/* where its owner keeps it now (h2s_stream_move) */
	struct h2s *s;		/* NULL once the session is gone */
	int32_t id;
	struct h2s_stream *prev, *next;		/* the session's streams */
	struct h2s_stream *qnext;		/* the session's notify queue */
	unsigned notify;
	bool queued;

	/* Received DATA not yet read by the owner (bounded by our window: the
	 * window is given back only as the owner reads), and what the owner
	 * sent, not yet taken by nghttp2 (bounded by SBUF_CAP). */
	struct bq rq, sq;
	struct pool *pool;	/* the worker's (NULL: malloc), outlives the session */

	int status;		/* client: the response's :status */
	int err;		/* 0, or how the stream failed (-ECONNRESET) */
	bool client;
	bool hs_done;		/* client: the final response headers came */
	bool responded;		/* server: h2s_respond was called */
	bool eof_rx;		/* the peer's END_STREAM */
	bool eof_tx;		/* our END_STREAM is due after sbuf */
	bool eof_sent;
	bool deferred;		/* the data provider said DEFERRED: resume on send */
	bool has_data;		/* a data provider is attached (200, or the request) */
	bool h2_closed;		/* nghttp2 closed the stream */
	bool owner_closed;	/* the conn was closed (owned: ops->close) */
	bool taken;		/* server: the handler has it */

	/* Request headers (server), kept until the handler ran. */
	char *method, *authority;
	bool scheme_or_path, bad_hdr;
	struct h2s_hdr *hdrs;
	size_t nhdrs, hdr_bytes;
};

struct h2s {
	struct worker *w;
	struct ev_loop *loop;
	struct conn *t;
	nghttp2_session *ng;
	const struct h2s_handler *h;
	void *ud;
	struct h2s_settings st;
	bool server;
	bool dead;		/* failing: nothing more is read or sent */
	bool closing;		/* GOAWAY sent (graceful): end when no stream is left */
	bool backed;		/* the transport did not take all our output */
	unsigned nstreams;
	struct h2s_stream *streams;
	struct h2s_stream *qhead, *qtail;
	ev_timer kick;		/* never started: fed, so it runs from the loop */
	bool kicked;
	ev_timer ka;		/* keep-alive (server) */
	ev_tstamp last_rx, ping_at;
	ev_tstamp ctrl_start;
	unsigned ctrl_count;
	int in_kick;
	bool fail_due;
	int fail_err;
	int end_err;		/* why it ended (h2s_end_error) */
	bool goaway_err;	/* we sent a GOAWAY with an error code (nghttp2 found a protocol error) */

	/* Output: what nghttp2 gave us, coalesced, not yet written. */
	uint8_t obuf[OBUF_CAP];
	size_t ooff, olen;
	const uint8_t *pend;	/* a mem_send chunk larger than the room left */
	size_t pendlen;
};

static const struct conn_ops stream_ops;
static void kick_cb(struct ev_loop *loop, ev_timer *tm, int revents);
static void h2s_fail(struct h2s *s, int err);

/* --- small helpers ---------------------------------------------------------- */

static void
kick(struct h2s *s)
{
	if (s->kicked || s->dead)
		return;
	s->kicked = true;
	ev_feed_event(s->loop, &s->kick, EV_CUSTOM);
}

static void
notify(struct h2s_stream *st, unsigned bits)
{
	st->notify |= bits;
	if (!st->queued && st->s) {
		st->queued = true;
		st->qnext = NULL;
		if (st->s->qtail)
			st->s->qtail->qnext = st;
		else
			st->s->qhead = st;
		st->s->qtail = st;
	}
	if (st->s)
		kick(st->s);
}

static void
stream_unqueue(struct h2s_stream *st)
{
	struct h2s *s = st->s;

	if (!st->queued || !s)
		return;
	struct h2s_stream **pp = &s->qhead, *prev = NULL;
	while (*pp && *pp != st) {
		prev = *pp;
		pp = &(*pp)->qnext;
	}
	if (*pp) {
		*pp = st->qnext;
		if (s->qtail == st)
			s->qtail = prev;
	}
	st->queued = false;
}

static void
stream_unlink(struct h2s_stream *st)
{
	struct h2s *s = st->s;

	if (!s)
		return;
	stream_unqueue(st);
	if (st->prev)
		st->prev->next = st->next;
	else
		s->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	st->prev = st->next = NULL;
	s->nstreams--;
	if (st->id > 0 && !st->h2_closed)
		nghttp2_session_set_stream_user_data(s->ng, st->id, NULL);
	st->s = NULL;
}

static struct chunk *
chunk_get(struct pool *p)
{
	struct chunk *c = p ? pool_chunk_get(p) : malloc(sizeof(*c));

	if (c) {
		c->off = c->len = 0;
		c->next = NULL;
	}
	return c;
}

static void
chunk_put(struct pool *p, struct chunk *c)
{
	if (p)
		pool_chunk_put(p, c);
	else
		free(c);
}

/* Appends n bytes; false on OOM (nothing appended then is not promised:
 * the caller resets the stream). */
static bool
bq_put(struct bq *q, struct pool *p, const uint8_t *d, size_t n)
{
	while (n) {
		struct chunk *c = q->tail;
		if (!c || c->off + c->len == CHUNK_SIZE) {
			if (!(c = chunk_get(p)))
				return false;
			if (q->tail)
				q->tail->next = c;
			else
				q->head = c;
			q->tail = c;
		}
		size_t k = CHUNK_SIZE - (c->off + c->len);
		if (k > n)
			k = n;
		memcpy(c->data + c->off + c->len, d, k);
		c->len += k;
		q->len += k;
		d += k;
		n -= k;
	}
	return true;
}

static size_t
bq_get(struct bq *q, struct pool *p, uint8_t *d, size_t n)
{
	size_t got = 0;

	while (got < n && q->head) {
		struct chunk *c = q->head;
		size_t k = c->len < n - got ? c->len : n - got;
		memcpy(d + got, c->data + c->off, k);
		c->off += k;
		c->len -= k;
		q->len -= k;
		got += k;
		if (c->len == 0) {
			q->head = c->next;
			if (!q->head)
				q->tail = NULL;
			chunk_put(p, c);
		}
	}
	return got;
}

static void
bq_clear(struct bq *q, struct pool *p)
{
	while (q->head) {
		struct chunk *c = q->head;
		q->head = c->next;
		chunk_put(p, c);
	}
	q->tail = NULL;
	q->len = 0;
}

static void
stream_free(struct h2s_stream *st)
{
	stream_unlink(st);
	bq_clear(&st->rq, st->pool);
	bq_clear(&st->sq, st->pool);
	free(st->method);
	free(st->authority);
	for (size_t i = 0; i < st->nhdrs; i++) {
		free((char *)st->hdrs[i].name);
		free((char *)st->hdrs[i].value);
	}
	free(st->hdrs);
	free(st);
}

static void
stream_free_later(int revents, void *arg)
{
	stream_free(arg);
}

/* The stream is done with on both sides: nghttp2's and its owner's. */
static void
stream_maybe_free(struct h2s_stream *st)
{
	if ((st->owner_closed || (!st->taken && !st->client)) && (st->h2_closed || !st->s))
		stream_free(st);
}

static struct h2s_stream *
stream_new(struct h2s *s, bool client)
{
	struct h2s_stream *st = calloc(1, sizeof(*st));

	if (!st)
		return NULL;
	st->s = s;
	st->pool = s->w ? &s->w->pool : NULL;
	st->client = client;
	st->c = &st->conn;
	conn_init(&st->conn, s->loop, -1, &stream_ops, NULL, NULL, -1);
	st->conn.tx = st;
	st->next = s->streams;
	if (s->streams)
		s->streams->prev = st;
	s->streams = st;
	s->nstreams++;
	return st;
}

static struct h2s_stream *
stream_of(struct conn *c)
{
	struct h2s_stream *st = c->tx;

	st->c = c;	/* the owner may have moved it (see h2s_stream_move) */
	return st;
}

/* --- the stream as a conn --------------------------------------------------- */

static int
stream_handshake(struct conn *c)
{
	struct h2s_stream *st = stream_of(c);

	if (!st->client)
		return 0;
	if (st->hs_done)
		return st->status >= 200 && st->status < 300 ? 0 : -ECONNREFUSED;
	if (st->err)
		return st->err;
	if (!st->s || st->h2_closed)
		return -ECONNRESET;
	return -EAGAIN;
}

static ssize_t
stream_recv(struct conn *c, void *buf, size_t len)
{
	struct h2s_stream *st = stream_of(c);

	if (st->rq.len) {
		size_t n = bq_get(&st->rq, st->pool, buf, len);
		/* The window comes back only as the owner reads: back-pressure. */
		if (st->s && !st->h2_closed) {
			nghttp2_session_consume(st->s->ng, st->id, n);
			kick(st->s);
		} else if (st->s) {
			nghttp2_session_consume_connection(st->s->ng, n);
			kick(st->s);
		}
		return (ssize_t)n;
	}
	if (st->eof_rx)
		return 0;
	if (st->err)
		return st->err;
	if (!st->s || st->h2_closed)
		return -ECONNRESET;
	return -EAGAIN;
}

static void
stream_resume(struct h2s_stream *st)
{
	if (!st->s || st->h2_closed || !st->has_data)
		return;
	if (st->deferred) {
		st->deferred = false;
		nghttp2_session_resume_data(st->s->ng, st->id);
	}
	kick(st->s);
}

static ssize_t
stream_send(struct conn *c, const void *buf, size_t len)
{
	struct h2s_stream *st = stream_of(c);

	if (st->err)
		return st->err;
	if (!st->s || st->h2_closed || st->eof_tx)
		return -EPIPE;
	size_t room = st->sq.len < SBUF_CAP ? SBUF_CAP - st->sq.len : 0;
	if (room == 0)
		return -EAGAIN;
	size_t n = len < room ? len : room;
	if (!bq_put(&st->sq, st->pool, buf, n))
		return -ENOMEM;
	stream_resume(st);
	return (ssize_t)n;
}

static int
stream_shutdown_wr(struct conn *c)
{
	struct h2s_stream *st = stream_of(c);

	if (!st->s || st->h2_closed)
		return st->err ? st->err : -ENOTCONN;
	st->eof_tx = true;
	stream_resume(st);
	return 0;
}

static bool
can_send(const struct h2s_stream *st)
{
	return st->err || !st->s || st->h2_closed || st->sq.len < SBUF_CAP;
}

static bool
can_recv(const struct h2s_stream *st)
{
	return st->rq.len || st->eof_rx || st->err || !st->s || st->h2_closed;
}

static bool
hs_over(const struct h2s_stream *st)
{
	return !st->client || st->hs_done || st->err || !st->s || st->h2_closed;
}

/* No socket: the session calls back. What is already possible is queued as
 * a socket would be level-triggered, so an owner arming late misses nothing. */
static int
stream_want(struct conn *c, int what)
{
	struct h2s_stream *st = stream_of(c);
	unsigned bits = 0;

	/* Bytes held: conn_arm feeds the call-back itself (pending()). */
	if ((what & CONN_RD) && can_recv(st) && !st->rq.len)
		bits |= N_RD;
	if ((what & CONN_WR) && can_send(st))
		bits |= N_WR;
	if ((what & CONN_HS) && hs_over(st))
		bits |= N_HS;
	if (bits && !(st->notify & bits) && st->s)
		notify(st, bits);
	else if ((bits & N_RD) && !st->s)
		/* The session is gone: no kick any more; the conn's own
		 * watcher calls back (conn_io_cb: CONN_RD), and recv tells. */
		ev_feed_event(c->loop, &c->io, EV_CUSTOM);
	return 0;
}

static size_t
stream_pending(struct conn *c)
{
	return stream_of(c)->rq.len;
}

static size_t
stream_unsent(struct conn *c)
{
	struct h2s_stream *st = stream_of(c);

	return st->s && !st->h2_closed ? st->sq.len : 0;
}

static int
stream_error(struct conn *c)
{
	struct h2s_stream *st = stream_of(c);

	if (st->err)
		return st->err;
	return (!st->s || st->h2_closed) && !st->eof_rx ? -ECONNRESET : 0;
}

static void
stream_close(struct conn *c, enum conn_close how)
{
	struct h2s_stream *st = stream_of(c);
	struct h2s *s = st->s;

	st->owner_closed = true;
	st->c = &st->conn;
	/* What was received and not read goes back to the window: the
	 * connection's window must not shrink with a stream's leftovers. */
	if (s && st->rq.len) {
		if (!st->h2_closed)
			nghttp2_session_consume(s->ng, st->id, st->rq.len);
		else
			nghttp2_session_consume_connection(s->ng, st->rq.len);
	}
	bq_clear(&st->rq, st->pool);
	if (s && !s->dead && !st->h2_closed && st->id > 0) {
		bool graceful = how == CONN_GRACEFUL && (st->client || st->responded);
		if (!graceful) {
			nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
		} else if (!st->eof_tx || !st->has_data) {
			st->eof_tx = true;
			if (st->has_data)
				stream_resume(st);
		}
		/* After our END_STREAM, a peer still sending is told to stop
		 * (RST_STREAM NO_ERROR, on_frame_send): nobody reads it now. */
		if (graceful && st->eof_sent && !st->eof_rx)
			nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
		kick(s);
	}
	stream_unqueue(st);
	/* conn_close() still writes to c after this returns: a conn never
	 * moved out of the stream (an owner that closed it at once, say after
	 * a 400) is freed from the loop, not here. */
	if (c == &st->conn) {
		if ((st->owner_closed || (!st->taken && !st->client)) && (st->h2_closed || !st->s)) {
			stream_unlink(st);
			ev_once(c->loop, -1, 0, 0., stream_free_later, st);
		}
		return;
	}
	stream_maybe_free(st);
}

static const struct conn_ops stream_ops = {
	.name = "h2",
	.handshake = stream_handshake,
	.recv = stream_recv,
	.send = stream_send,
	.shutdown_wr = stream_shutdown_wr,
	.want = stream_want,
	.pending = stream_pending,
	.unsent = stream_unsent,
	.error = stream_error,
	.close = stream_close,
	.can_splice = false,
};

void
h2s_stream_move(struct conn *dst, struct conn *src)
{
	struct h2s_stream *st = src->tx;

	ev_clear_pending(src->loop, &src->io);
	*dst = *src;
	dst->io.data = dst;
	st->c = dst;
}

bool
h2s_is_stream(const struct conn *c)
{
	return c->ops == &stream_ops;
}

/* --- nghttp2 callbacks ------------------------------------------------------ */

static ssize_t
data_read_cb(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
    nghttp2_data_source *src, void *ud)
{
	struct h2s_stream *st = src->ptr;
	bool was_full = st->sq.len >= SBUF_CAP;
	size_t n = bq_get(&st->sq, st->pool, buf, length);

	if (n && was_full)
		notify(st, N_WR);
	if (st->sq.len == 0 && st->eof_tx) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		return (ssize_t)n;
	}
	if (n == 0) {
		st->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	return (ssize_t)n;
}

/* A peer busy with frames that move nothing: its session ends. */
static int
ctrl_frame(struct h2s *s)
{
	ev_tstamp now = ev_now(s->loop);

	if (now - s->ctrl_start >= 1.0) {
		s->ctrl_start = now;
		s->ctrl_count = 0;
	}
	if (++s->ctrl_count > CTRL_PER_SEC) {
		nghttp2_session_terminate_session(s->ng, NGHTTP2_ENHANCE_YOUR_CALM);
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	return 0;
}

static int
on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct h2s *s = ud;

	if (!s->server || f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	struct h2s_stream *st = stream_new(s, false);
	if (!st) {
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	st->id = f->hd.stream_id;
	nghttp2_session_set_stream_user_data(ng, st->id, st);
	return 0;
}

static char *
dupn(const uint8_t *p, size_t n)
{
	char *d = malloc(n + 1);

	if (d) {
		memcpy(d, p, n);
		d[n] = 0;
	}
	return d;
}

static int
on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
    const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	struct h2s *s = ud;
	struct h2s_stream *st = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);

	if (!st || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	st->hdr_bytes += namelen + valuelen + 32;
	if (st->hdr_bytes > s->st.max_header_list) {
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	if (st->client) {
		if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
			int v = 0;
			for (size_t i = 0; i < valuelen && i < 4; i++)
				v = v * 10 + (value[i] - '0');
			st->status = valuelen == 3 ? v : 0;
		}
		return 0;
	}
	if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
		free(st->method);
		st->method = dupn(value, valuelen);
	} else if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
		free(st->authority);
		st->authority = dupn(value, valuelen);
	} else if ((namelen == 7 && memcmp(name, ":scheme", 7) == 0) ||
	    (namelen == 5 && memcmp(name, ":path", 5) == 0)) {
		st->scheme_or_path = true;
	} else if (namelen && name[0] == ':') {
		st->bad_hdr = true;	/* :protocol (extended CONNECT) or unknown */
	} else if (st->nhdrs < 64) {
		struct h2s_hdr *h = realloc(st->hdrs, (st->nhdrs + 1) * sizeof(*h));
		if (!h)
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		st->hdrs = h;
		h[st->nhdrs].name = dupn(name, namelen);
		h[st->nhdrs].value = dupn(value, valuelen);
		if (!h[st->nhdrs].name || !h[st->nhdrs].value) {
			free((char *)h[st->nhdrs].name);
			free((char *)h[st->nhdrs].value);
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
		st->nhdrs++;
	}
	return 0;
}

static int
on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data, size_t len, void *ud)
{
	struct h2s *s = ud;
	struct h2s_stream *st = nghttp2_session_get_stream_user_data(ng, id);

	if (!st || st->owner_closed) {
		/* Nobody reads it: give the window back at once. */
		nghttp2_session_consume(ng, id, len);
		return 0;
	}
	/* Never more than the window we gave: nghttp2 enforces it, this
	 * makes sure of it. */
	if (st->rq.len + len > s->st.stream_window) {
		nghttp2_session_consume(ng, id, len);
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_FLOW_CONTROL_ERROR);
		return 0;
	}
	size_t before = st->rq.len;
	if (!bq_put(&st->rq, st->pool, data, len)) {
		/* Out of memory: the stream goes, and all it holds with it. */
		bq_clear(&st->rq, st->pool);
		nghttp2_session_consume(ng, id, before + len);
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
		return 0;
	}
	notify(st, N_RD);
	return 0;
}

static int
on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct h2s *s = ud;
	struct h2s_stream *st = f->hd.stream_id ? nghttp2_session_get_stream_user_data(ng, f->hd.stream_id) : NULL;

	s->last_rx = ev_now(s->loop);
	switch (f->hd.type) {
	case NGHTTP2_PING:
	case NGHTTP2_SETTINGS:
	case NGHTTP2_RST_STREAM:
	case NGHTTP2_PRIORITY:
	case NGHTTP2_WINDOW_UPDATE:
		if (!(f->hd.flags & NGHTTP2_FLAG_ACK) && ctrl_frame(s))
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK))
			s->ping_at = 0;
		break;
	case NGHTTP2_DATA:
		if (f->hd.length == 0 && !(f->hd.flags & NGHTTP2_FLAG_END_STREAM) && ctrl_frame(s))
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		break;
	case NGHTTP2_GOAWAY:
		s->closing = true;
		break;
	}
	if (!st)
		return 0;
	if (f->hd.type == NGHTTP2_HEADERS) {
		if (st->client) {
			if (st->status >= 200 && !st->hs_done) {
				st->hs_done = true;
				notify(st, N_HS);
			} else if (st->status < 100) {
				nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_PROTOCOL_ERROR);
			}
		} else if (f->headers.cat == NGHTTP2_HCAT_REQUEST && !st->taken) {
			notify(st, N_REQ);
		}
	}
	if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
	    (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
		st->eof_rx = true;
		notify(st, N_RD);
	}
	return 0;
}

static int
on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct h2s *s = ud;
	struct h2s_stream *st = f->hd.stream_id ? nghttp2_session_get_stream_user_data(ng, f->hd.stream_id) : NULL;

	if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR)
		s->goaway_err = true;

	if (!st || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	if (f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS)
		return 0;
	st->eof_sent = true;
	if (st->owner_closed && !st->eof_rx)
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
	return 0;
}

static int
on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
	struct h2s_stream *st = nghttp2_session_get_stream_user_data(ng, id);

	if (!st)
		return 0;
	st->h2_closed = true;
	if (st->owner_closed || (!st->taken && !st->client)) {
		/* Unread bytes go back to the connection's window. */
		if (st->rq.len)
			nghttp2_session_consume_connection(ng, st->rq.len);
		stream_free(st);
		return 0;
	}
	/* A stream that ended without the peer's END_STREAM, or with an error
	 * code, was reset: its owner must see a reset, not an end. */
	if (!st->err && (code != NGHTTP2_NO_ERROR || !st->eof_rx))
		st->err = code == NGHTTP2_REFUSED_STREAM ? -ECONNREFUSED : -ECONNRESET;
	bq_clear(&st->sq, st->pool);
	notify(st, N_RD | N_WR | N_HS | N_HUP);
	return 0;
}

static nghttp2_session_callbacks *callbacks;

static nghttp2_session_callbacks *
get_callbacks(void)
{
	if (callbacks)
		return callbacks;
	nghttp2_session_callbacks *cb;
	if (nghttp2_session_callbacks_new(&cb))
		return NULL;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	/* Racy only in the benign way: two workers may each build one; the
	 * loser's is leaked once. Built before the workers start in practice. */
	callbacks = cb;
	return cb;
}

/* --- the session's I/O ------------------------------------------------------ */

/* Write what nghttp2 has for the transport, until it is all out or the
 * transport is full (then we wait for it before reading more: the output
 * queue stays bounded by OBUF_CAP plus nghttp2's own). 0 or -errno. */
static int
flush(struct h2s *s)
{
	for (;;) {
		/* Fill obuf from nghttp2. */
		while (s->ooff + s->olen < OBUF_CAP) {
			if (!s->pendlen) {
				const uint8_t *p;
				ssize_t n = nghttp2_session_mem_send(s->ng, &p);
				if (n < 0)
					return -EPROTO;
				if (n == 0)
					break;
				s->pend = p;
				s->pendlen = (size_t)n;
			}
			size_t room = OBUF_CAP - (s->ooff + s->olen);
			size_t k = s->pendlen < room ? s->pendlen : room;
			memcpy(s->obuf + s->ooff + s->olen, s->pend, k);
			s->olen += k;
			s->pend += k;
			s->pendlen -= k;
		}
		if (!s->olen) {
			s->backed = false;
			return 0;
		}
		ssize_t n = s->t->ops->send(s->t, s->obuf + s->ooff, s->olen);
		if (n == -EAGAIN) {
			s->backed = true;
			return 0;
		}
		if (n <= 0)
			return n < 0 ? (int)n : -EPIPE;
		s->ooff += (size_t)n;
		s->olen -= (size_t)n;
		if (s->olen == 0)
			s->ooff = 0;
		else if (s->ooff + s->olen == OBUF_CAP && s->ooff) {
			/* TLS retries with the same bytes: move only when whole
			 * writes went out (a partial write took what it reported). */
			memmove(s->obuf, s->obuf + s->ooff, s->olen);
			s->ooff = 0;
		}
	}
}

static void
rearm(struct h2s *s)
{
	int wants = 0;

	if (s->dead)
		return;
	/* Reading goes on while our output backs up: two peers that both
	 * stopped reading until their writes drain would wait on each other
	 * forever. What reading makes us send is bounded all the same: DATA
	 * only from the streams' send buffers, each within SBUF_CAP, and acks
	 * (SETTINGS, PING) by nghttp2's max_outbound_ack, past which the peer's
	 * session ends as a flood. */
	if (nghttp2_session_want_read(s->ng))
		wants |= CONN_RD;
	if (s->backed)
		wants |= CONN_WR;
	if (!wants && !nghttp2_session_want_write(s->ng) && s->olen == 0) {
		/* Nothing to read or write: the session is over (after our
		 * GOAWAY for a protocol error nghttp2 found, a failure). */
		h2s_fail(s, s->goaway_err ? -EPROTO : 0);
		return;
	}
	conn_arm(s->t, wants);
}

/* Call the owners of the streams whose state changed. */
static void
dispatch(struct h2s *s)
{
	while (s->qhead && !s->dead && !s->fail_due) {
		struct h2s_stream *st = s->qhead;
		s->qhead = st->qnext;
		if (!s->qhead)
			s->qtail = NULL;
		st->queued = false;
		unsigned bits = st->notify;
		st->notify = 0;
		if ((bits & N_REQ) && !st->client && !st->taken && !st->h2_closed) {
			struct h2s_req req = {
				.method = st->method ? st->method : "",
				.authority = st->authority ? st->authority : "",
				.has_scheme_or_path = st->scheme_or_path || st->bad_hdr,
				.hdrs = st->hdrs,
				.nhdrs = st->nhdrs,
			};
			st->taken = true;
			s->h->request(s, s->ud, st->c, &req);
			continue;	/* the handler armed it (or closed it) */
		}
		if (st->owner_closed || !st->c->ready)
			continue;
		struct conn *c = st->c;
		int what = (int)bits & c->wants & (CONN_RD | CONN_WR | CONN_HS);
		if ((bits & N_HUP) && !(c->wants & CONN_RD))
			what |= CONN_HUP;
		if (what)
			c->ready(c, what);
	}
}

static void
session_run(struct h2s *s)
{
	int rc;

	s->in_kick++;
	dispatch(s);
	if (!s->dead && !s->fail_due && (rc = flush(s)) < 0) {
		s->in_kick--;
		h2s_fail(s, rc);
		return;
	}
	/* Flushing may have queued notifications (a send buffer drained). */
	dispatch(s);
	s->in_kick--;
	if (s->fail_due) {
		s->fail_due = false;
		h2s_fail(s, s->fail_err);
		return;
	}
	if (s->dead)
		return;
	if (s->closing && s->nstreams == 0 && !s->olen && !nghttp2_session_want_write(s->ng)) {
		h2s_fail(s, s->goaway_err ? -EPROTO : 0);
		return;
	}
	rearm(s);
}

static void
kick_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
	struct h2s *s = tm->data;

	s->kicked = false;
	session_run(s);
}

static void
transport_ready(struct conn *c, int what)
{
	struct h2s *s = c->owner;
	uint8_t buf[READ_SIZE];

	if (what & CONN_WR) {
		int rc = flush(s);
		if (rc < 0) {
			h2s_fail(s, rc);
			return;
		}
	}
	if (what & (CONN_RD | CONN_HUP)) {
		for (int i = 0; i < READ_ROUNDS; i++) {
			ssize_t n = c->ops->recv(c, buf, sizeof(buf));
			if (n == -EAGAIN)
				break;
			if (n <= 0) {
				h2s_fail(s, n == 0 ? (s->goaway_err ? -EPROTO : 0) : (int)n);
				return;
			}
			ssize_t r = nghttp2_session_mem_recv(s->ng, buf, (size_t)n);
			if (r < 0) {
				/* A protocol error: nghttp2 queued a GOAWAY when it
				 * could; one last flush tries to send it. */
				(void)flush(s);
				h2s_fail(s, -EPROTO);
				return;
			}
			if ((size_t)n < sizeof(buf) && !c->ops->pending(c))
				break;
			if (flush(s) < 0) {
				h2s_fail(s, -EPIPE);
				return;
			}
		}
	}
	session_run(s);
}

static void
ka_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
	struct h2s *s = tm->data;
	ev_tstamp now = ev_now(loop);

	if (s->ping_at && now - s->ping_at >= h2s_ka_timeout) {
		h2s_fail(s, -ETIMEDOUT);
		return;
	}
	if (!s->ping_at && now - s->last_rx >= h2s_ka_interval) {
		s->ping_at = now;
		nghttp2_submit_ping(s->ng, NGHTTP2_FLAG_NONE, NULL);
		kick(s);
	}
	ev_timer_again(loop, tm);
}

/* The session ends: every stream still open sees a reset (or its clean end,
 * when both END_STREAMs passed), the transport is closed, the handler told. */
static void
h2s_fail(struct h2s *s, int err)
{
	if (s->dead)
		return;
	if (s->in_kick) {
		/* Inside dispatch (an owner's call): end once it is over. */
		if (!s->fail_due)
			s->fail_err = err;
		s->fail_due = true;
		return;
	}
	s->dead = true;
	s->end_err = err;
	ev_clear_pending(s->loop, &s->kick);
	ev_timer_stop(s->loop, &s->ka);
	conn_close(s->t, err ? CONN_ABORT : CONN_GRACEFUL);
	while (s->streams) {
		struct h2s_stream *st = s->streams;
		bool clean = st->eof_rx && (st->eof_sent || !st->has_data);
		stream_unlink(st);
		if (!clean && !st->err)
			st->err = -ECONNRESET;
		bq_clear(&st->sq, st->pool);
		if (!st->owner_closed && (st->taken || st->client) && st->c->ready) {
			struct conn *c = st->c;
			int what = c->wants & (CONN_RD | CONN_WR | CONN_HS);
			if (!(c->wants & CONN_RD))
				what |= CONN_HUP;
			c->ready(c, what);
		} else if (!st->taken && !st->client) {
			stream_free(st);
		} else if (st->owner_closed) {
			stream_free(st);
		}
	}
	nghttp2_session_del(s->ng);
	s->ng = NULL;
	if (s->h->closed)
		s->h->closed(s, s->ud);
	free(s);
}

static struct h2s *
session_new(struct worker *w, struct conn *t, const struct h2s_settings *st, const struct h2s_handler *h,
    void *ud, bool server)
{
	struct ev_loop *loop = w ? w->loop : t->loop;
	nghttp2_session_callbacks *cb = get_callbacks();
	nghttp2_option *opt = NULL;
	struct h2s *s = calloc(1, sizeof(*s));
	int rc;

	if (!s || !cb || nghttp2_option_new(&opt))
		goto fail;
	nghttp2_option_set_no_auto_window_update(opt, 1);
	nghttp2_option_set_max_outbound_ack(opt, 1000);
	nghttp2_option_set_max_settings(opt, 32);
	nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
	rc = server ? nghttp2_session_server_new2(&s->ng, cb, s, opt) : nghttp2_session_client_new2(&s->ng, cb, s, opt);
	nghttp2_option_del(opt);
	opt = NULL;
	if (rc)
		goto fail;
	s->w = w;
	s->loop = loop;
	s->t = t;
	s->h = h;
	s->ud = ud;
	s->st = *st;
	s->server = server;
	s->last_rx = ev_now(loop);
	ev_init(&s->kick, kick_cb);
	s->kick.data = s;
	nghttp2_settings_entry set[] = {
		{ NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, st->max_concurrent_streams },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, st->stream_window },
		{ NGHTTP2_SETTINGS_MAX_FRAME_SIZE, st->max_frame },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, st->max_header_list },
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
	};
	size_t nset = sizeof(set) / sizeof(set[0]) - (server ? 1 : 0);
	if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, set, nset) ||
	    nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, (int32_t)st->conn_window))
		goto fail;
	t->ready = transport_ready;
	t->owner = s;
	if (server) {
		ev_init(&s->ka, ka_cb);
		s->ka.data = s;
		s->ka.repeat = h2s_ka_interval / 2;
		ev_timer_again(loop, &s->ka);
	}
	kick(s);
	return s;
fail:
	if (opt)
		nghttp2_option_del(opt);
	if (s && s->ng)
		nghttp2_session_del(s->ng);
	free(s);
	conn_close(t, CONN_ABORT);
	return NULL;
}

struct h2s *
h2s_server_new(struct worker *w, struct conn *t, const struct h2s_settings *st, const struct h2s_handler *h,
    void *ud)
{
	return session_new(w, t, st, h, ud, true);
}

struct h2s *
h2s_client_new(struct worker *w, struct conn *t, const struct h2s_settings *st, const struct h2s_handler *h,
    void *ud)
{
	return session_new(w, t, st, h, ud, false);
}

/* --- requests and responses ------------------------------------------------- */

static nghttp2_nv
nv(const char *name, const char *value)
{
	return (nghttp2_nv){ (uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
	    NGHTTP2_NV_FLAG_NONE };
}

int
h2s_respond(struct conn *stream, int status, const struct h2s_hdr *hdrs, size_t n)
{
	struct h2s_stream *st = stream_of(stream);
	struct h2s *s = st->s;
	char code[8];
	nghttp2_nv nva[1 + 32];

	if (st->client || st->responded)
		return -EINVAL;
	if (!s || st->h2_closed)
		return st->err ? st->err : -ECONNRESET;
	if (n > 32)
		n = 32;
	snprintf(code, sizeof(code), "%d", status);
	nva[0] = nv(":status", code);
	for (size_t i = 0; i < n; i++)
		nva[1 + i] = nv(hdrs[i].name, hdrs[i].value);
	st->responded = true;
	bool ok = status >= 200 && status < 300;
	nghttp2_data_provider prd = { .source.ptr = st, .read_callback = data_read_cb };
	if (ok)
		st->has_data = true;
	else
		st->eof_tx = true;
	if (nghttp2_submit_response(s->ng, st->id, nva, 1 + n, ok ? &prd : NULL))
		return -ENOMEM;
	kick(s);
	return 0;
}

struct conn *
h2s_connect(struct h2s *s, const char *authority, const struct h2s_hdr *hdrs, size_t n)
{
	nghttp2_nv nva[2 + 32];

	if (!h2s_can_open(s))
		return NULL;
	if (n > 32)
		n = 32;
	nva[0] = nv(":method", "CONNECT");
	nva[1] = nv(":authority", authority);
	for (size_t i = 0; i < n; i++)
		nva[2 + i] = nv(hdrs[i].name, hdrs[i].value);
	struct h2s_stream *st = stream_new(s, true);
	if (!st)
		return NULL;
	st->has_data = true;
	nghttp2_data_provider prd = { .source.ptr = st, .read_callback = data_read_cb };
	int32_t id = nghttp2_submit_request(s->ng, NULL, nva, 2 + n, &prd, st);
	if (id < 0) {
		stream_unlink(st);
		free(st);
		return NULL;
	}
	st->id = id;
	kick(s);
	return &st->conn;
}

int
h2s_status(const struct conn *stream)
{
	const struct h2s_stream *st = stream->tx;

	return st->hs_done ? st->status : 0;
}

unsigned
h2s_streams(const struct h2s *s)
{
	return s->nstreams;
}

bool
h2s_can_open(const struct h2s *s)
{
	if (s->dead || s->closing || s->server)
		return false;
	uint32_t peer = nghttp2_session_get_remote_settings(s->ng, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	uint32_t lim = peer < s->st.max_concurrent_streams ? peer : s->st.max_concurrent_streams;
	return s->nstreams < lim && nghttp2_session_check_request_allowed(s->ng);
}

void
h2s_close(struct h2s *s, enum conn_close how)
{
	if (s->dead)
		return;
	if (how == CONN_ABORT) {
		h2s_fail(s, -ECONNABORTED);
		return;
	}
	s->closing = true;
	nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s->ng),
	    NGHTTP2_NO_ERROR, NULL, 0);
	kick(s);
}

struct conn *
h2s_transport(struct h2s *s)
{
	return s->t;
}

int
h2s_end_error(const struct h2s *s)
{
	return s->end_err;
}
