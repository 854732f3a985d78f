/* hbone_pool: the HBONE client's per-worker pool of mTLS HTTP/2 connections
 * to peers' 15008, one CONNECT stream per proxied connection (hbone.h;
 * HACKING.md, "HBONE client"). */
#include "autoconfig.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/rand.h>

#include "config.h"
#include "conn.h"
#include "hbone.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "snapshot.h"
#include "sock.h"
#include "worker-t.h"
#include "xtls.h"

struct hbone_pool {
	struct worker *w;
	struct ev_loop *loop;
	struct hbone_pool_opts o;
	struct hbpc *conns;		/* open or opening, with room or not */
	size_t nconns;
	size_t nalloc;			/* every hbpc, draining ones too */
	bool dying;
	char *baggage;			/* ours, made once (hbone_baggage) */
	hbone_dial_fn *dial;		/* tests: instead of TCP + TLS */
	void *dial_arg;
	struct hbone_pool_stats stats;
};

/* A pooled connection: the TLS transport (embedded: h2s takes it over by
 * pointer), its session once up, and every stream it carries or will. */
struct hbpc {
	struct hbone_pool *p;
	struct hbpc *next, *prev;	/* the pool's list, until the session ends */
	char *src_id, *dst_id;		/* the key, with addr */
	struct sockaddr_storage addr;
	enum { PC_CONNECTING, PC_READY, PC_DRAINING } state;
	bool listed;
	bool t_ours;			/* t is ours to close (h2s takes it over) */
	SSL_CTX *ctx;			/* a reference: for streams moved to a new connection */
	char **sans;			/* the service's SANs it was dialled with, likewise */
	size_t nsans;
	struct conn t;
	struct h2s *s;
	struct hbst *streams, *last;	/* waiting and open, ours, oldest first */
	unsigned nstreams;
	char *peer_id;			/* the server's verified SPIFFE ID */
	ev_timer timer;			/* the handshake's deadline, then idle release */
};

/* One stream as its owner sees it: the owner's conn (the tunnel's embedded
 * relay.us) has these ops and this as tx; inner is h2s's stream conn once
 * the session is up. The request waits here until then. */
struct hbst {
	struct conn *outer, *inner;	/* inner: &in once opened */
	struct conn in;			/* the h2s stream, moved here (h2s_stream_move) */
	struct hbpc *pc;
	struct hbst *next, *prev;
	int err;			/* the connection failed: the handshake's answer */
	char *peer_id;			/* a copy: the connection may go first */
	char *authority;
	struct h2s_hdr *hdrs;
	size_t nhdrs;
};

const struct hbone_pool_opts hbone_pool_defaults = {
	.max_streams = HBONE_POOL_MAX_STREAMS,
	.idle_s = HBONE_POOL_IDLE_S,
	.handshake_s = 10.0,
};

static void pc_free(struct hbpc *pc);

/* The worker's counters, when the pool has a worker (tests have none). */
static void
wstat(struct hbone_pool *p, enum worker_metric m, int64_t d)
{
	if (!p->w)
		return;
	if (d >= 0)
		stat_add(&p->w->stats.w[m], (uint64_t)d);
	else
		stat_sub(&p->w->stats.w[m], (uint64_t)-d);
}
static void pc_fail(struct hbpc *pc, int err);
static int st_open(struct hbst *st);
static int pool_place(struct hbone_pool *p, struct hbst *st, const struct hbone_dst *dst, struct hbpc *not);

/* ---- the stream's ops (the owner's conn) ---------------------------------- */

static int
st_handshake(struct conn *c)
{
	struct hbst *st = c->tx;

	if (st->err)
		return st->err;
	if (!st->inner)
		return -EAGAIN;
	return st->inner->ops->handshake(st->inner);
}

static ssize_t
st_recv(struct conn *c, void *buf, size_t len)
{
	struct hbst *st = c->tx;

	return st->inner ? st->inner->ops->recv(st->inner, buf, len) : (st->err ? st->err : -EAGAIN);
}

static ssize_t
st_send(struct conn *c, const void *buf, size_t len)
{
	struct hbst *st = c->tx;

	return st->inner ? st->inner->ops->send(st->inner, buf, len) : (st->err ? st->err : -EAGAIN);
}

static int
st_shutdown_wr(struct conn *c)
{
	struct hbst *st = c->tx;

	return st->inner ? st->inner->ops->shutdown_wr(st->inner) : -ENOTCONN;
}

/* No socket of ours: the inner stream is armed for what the owner wants
 * (once per conn_arm: on its lowest bit), and its session calls back. */
static int
st_want(struct conn *c, int what)
{
	struct hbst *st = c->tx;

	if (st->inner && what == (c->wants & -c->wants))
		conn_arm(st->inner, c->wants);
	return 0;
}

static size_t
st_pending(struct conn *c)
{
	struct hbst *st = c->tx;

	return st->inner ? st->inner->ops->pending(st->inner) : 0;
}

static size_t
st_unsent(struct conn *c)
{
	struct hbst *st = c->tx;

	return st->inner ? st->inner->ops->unsent(st->inner) : 0;
}

static int
st_error(struct conn *c)
{
	struct hbst *st = c->tx;

	if (st->err)
		return st->err;
	return st->inner ? st->inner->ops->error(st->inner) : 0;
}

static void
st_unlink(struct hbst *st)
{
	struct hbpc *pc = st->pc;

	if (!pc)
		return;
	if (st->prev)
		st->prev->next = st->next;
	else
		pc->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	else
		pc->last = st->prev;
	st->next = st->prev = NULL;
	st->pc = NULL;
	pc->nstreams--;
	/* The last stream gone: the connection idles until reused or released. */
	if (!pc->nstreams && pc->state == PC_READY) {
		ev_timer_stop(pc->p->loop, &pc->timer);
		ev_timer_set(&pc->timer, pc->p->o.idle_s, 0.);
		ev_timer_start(pc->p->loop, &pc->timer);
	}
}

static void
st_close(struct conn *c, enum conn_close how)
{
	struct hbst *st = c->tx;

	if (st->inner)
		conn_close(st->inner, how);
	st_unlink(st);
	free(st->peer_id);
	free(st);
	c->tx = NULL;
}

static const struct conn_ops hbst_ops = {
	.name = "hbone",
	.handshake = st_handshake,
	.recv = st_recv,
	.send = st_send,
	.shutdown_wr = st_shutdown_wr,
	.want = st_want,
	.pending = st_pending,
	.unsent = st_unsent,
	.error = st_error,
	.close = st_close,
	.can_splice = false,
};

/* The inner stream is ready: the owner hears what it armed for (and a hang-up). */
static void
st_inner_ready(struct conn *inner, int what)
{
	struct hbst *st = inner->owner;
	struct conn *c = st->outer;
	int pass = what & (c->wants | CONN_HUP);

	if (what & ~pass)
		conn_arm(inner, c->wants);
	if (pass)
		c->ready(c, pass);
}

/* Opens st's CONNECT on its connection's session. 0, or -EBUSY when the
 * session cannot take one more (the peer's limit, a GOAWAY). */
static int
st_open(struct hbst *st)
{
	struct conn *c = h2s_connect(st->pc->s, st->authority, st->hdrs, st->nhdrs), *in = &st->in;

	if (!c)
		return -EBUSY;
	/* Ours to keep: the stream's storage is freed by h2s only after the
	 * close that conn_close() still writes after. */
	h2s_stream_move(in, c);
	st->inner = in;
	in->owner = st;
	in->ready = st_inner_ready;
	if (st->pc->peer_id && !st->peer_id)
		st->peer_id = strdup(st->pc->peer_id);
	if (st->outer->wants)
		conn_arm(in, st->outer->wants);
	return 0;
}

/* Tells a waiting owner that its handshake can progress (or failed). */
static void
st_wake(struct hbst *st)
{
	struct conn *c = st->outer;

	if (c->wants & CONN_HS)
		c->ready(c, CONN_HS);
	else if (st->inner)
		conn_arm(st->inner, c->wants);
}

/* ---- pooled connections ------------------------------------------------ */

static void
pc_unlist(struct hbpc *pc)
{
	struct hbone_pool *p = pc->p;

	if (!pc->listed)
		return;
	if (pc->prev)
		pc->prev->next = pc->next;
	else
		p->conns = pc->next;
	if (pc->next)
		pc->next->prev = pc->prev;
	pc->next = pc->prev = NULL;
	pc->listed = false;
	p->nconns--;
}

static void
pc_free(struct hbpc *pc)
{
	struct hbone_pool *p = pc->p;

	pc_unlist(pc);
	ev_timer_stop(p->loop, &pc->timer);
	if (pc->t_ours)
		conn_close(&pc->t, CONN_ABORT);
	if (pc->ctx)
		SSL_CTX_free(pc->ctx);
	for (size_t i = 0; i < pc->nsans; i++)
		free(pc->sans[i]);
	free(pc->sans);
	free(pc->src_id);
	free(pc->dst_id);
	free(pc->peer_id);
	free(pc);
	wstat(p, WM_HBONE_CLIENT_CX_ACTIVE, -1);
	/* hbone_pool_free waits for the sessions it closed. */
	if (!--p->nalloc && p->dying)
		free(p);
}

/* The session ended (h2s: peer gone, GOAWAY drained, error, h2s_close):
 * its streams were reset (their owners saw it); waiting ones fail. */
static void
pc_closed(struct h2s *s, void *ud)
{
	struct hbpc *pc = ud;

	(void)s;
	pc->p->stats.closed++;
	pc->s = NULL;
	pc_unlist(pc);
	pc_fail(pc, -ECONNRESET);
}

static const struct h2s_handler pc_handler = {
	.request = NULL,
	.closed = pc_closed,
};

/* The connection failed or ended: only its own streams fail. Those still
 * waiting are told (each is then a connect failure of its tunnel, which
 * may try the service's next endpoint); open ones were reset by h2s. */
static void
pc_fail(struct hbpc *pc, int err)
{
	struct hbst *list = pc->streams, *st;

	pc_unlist(pc);
	pc->streams = pc->last = NULL;
	for (st = list; st; st = st->next) {
		st->pc = NULL;
		if (!st->inner)
			st->err = err;
	}
	pc->nstreams = 0;
	/* Owners may close their conns (st_close: unlinked already) and open
	 * others (on another connection): take each before waking it. */
	while ((st = list)) {
		list = st->next;
		st->next = st->prev = NULL;
		if (!st->inner)
			st_wake(st);
	}
	pc_free(pc);
}

/* The session is up: the waiting streams open on it; those it cannot take
 * (the peer's max_concurrent_streams below our limit) go to another
 * connection of the same key. */
static void
pc_up(struct hbpc *pc)
{
	struct hbone_pool *p = pc->p;
	struct hbst *st, *next, *wake = NULL;

	pc->state = PC_READY;
	ev_timer_stop(p->loop, &pc->timer);
	for (st = pc->streams; st; st = next) {
		next = st->next;
		if (st->inner)
			continue;
		if (st_open(st) == 0)
			continue;
		/* Moved: to a connection with room, or a new one. */
		struct hbone_dst d = { .src_id = pc->src_id, .dst_id = pc->dst_id, .addr = pc->addr,
			.ctx = pc->ctx, .sans = (const char *const *)pc->sans, .nsans = pc->nsans };
		st_unlink(st);
		if ((st->err = pool_place(p, st, &d, pc)) < 0) {
			st->next = wake;
			wake = st;
		}
	}
	if (!pc->nstreams) {
		ev_timer_set(&pc->timer, p->o.idle_s, 0.);
		ev_timer_start(p->loop, &pc->timer);
	}
	/* Each opened stream's owner is called when its response comes; the
	 * ones that found no room anywhere fail now. */
	while ((st = wake)) {
		wake = st->next;
		st->next = NULL;
		st_wake(st);
	}
}

/* The TLS handshake progressed (the TCP connect first). */
static void
pc_ready(struct conn *t, int what)
{
	struct hbpc *pc = t->owner;
	int rc;

	(void)what;
	rc = t->ops->handshake(t);
	if (rc == -EAGAIN) {
		conn_arm(t, CONN_HS);
		return;
	}
	bool no_h2 = rc == 0 && t->ops == &xtls_ops && strcmp(xtls_alpn(t), "h2") != 0;

	if (no_h2)
		rc = -EPROTO;	/* ztunnel and Envoy HBONE speak h2 only */
	if (rc < 0) {
		char a[SOCK_ADDR_STRLEN], detail[256] = "";
		enum xtls_fail f = t->ops == &xtls_ops ? xtls_failure(t, detail, sizeof(detail)) : XTLS_FAIL_NONE;

		/* One line per connection, not per stream: each stream's tunnel
		 * logs its own connect failure. */
		log_warn("HBONE %s (expecting %s): %s%s%s", sock_addr_str(&pc->addr, a, sizeof(a)),
		    *pc->dst_id ? pc->dst_id : "an identity of the trust domain",
		    no_h2 ? "the server did not select ALPN h2" :
		    f != XTLS_FAIL_NONE ? xtls_fail_names[f] : strerror(-rc), *detail ? ": " : "", detail);
		pc->p->stats.handshake_fail++;
		wstat(pc->p, WM_HBONE_CLIENT_CX_FAIL, 1);
		pc_fail(pc, rc);
		return;
	}
	if (t->ops == &xtls_ops && *xtls_peer_id(t))
		pc->peer_id = strdup(xtls_peer_id(t));
	conn_arm(t, 0);
	pc->t_ours = false;	/* h2s takes it over, and closes it on failure */
	pc->s = h2s_client_new(pc->p->w, t, &h2s_client_defaults, &pc_handler, pc);
	if (!pc->s) {
		pc->p->stats.handshake_fail++;
		wstat(pc->p, WM_HBONE_CLIENT_CX_FAIL, 1);
		pc_fail(pc, -ENOMEM);
		return;
	}
	pc->p->stats.established++;
	pc_up(pc);
}

static void
pc_timer(struct ev_loop *loop, ev_timer *tm, int revents)
{
	struct hbpc *pc = tm->data;

	(void)loop;
	(void)revents;
	if (pc->state == PC_CONNECTING) {
		pc->p->stats.handshake_fail++;
		wstat(pc->p, WM_HBONE_CLIENT_CX_FAIL, 1);
		pc_fail(pc, -ETIMEDOUT);
		return;
	}
	if (pc->nstreams)
		return;
	/* Idle for the whole period: released (GOAWAY; the session's closed
	 * callback frees it, at once or when h2s is done). */
	char a[SOCK_ADDR_STRLEN];

	log_debug("HBONE %s: no stream for %.3gs, released", sock_addr_str(&pc->addr, a, sizeof(a)), pc->p->o.idle_s);
	pc->p->stats.idle_released++;
	wstat(pc->p, WM_HBONE_CLIENT_CX_IDLE_RELEASED, 1);
	pc->state = PC_DRAINING;	/* listed still (hbone_pool_free), never chosen */
	h2s_close(pc->s, CONN_GRACEFUL);
}

/* The real dial: a TCP connect to the peer's 15008, then a TLS 1.3 client
 * with AES-GCM only, ALPN h2, no SNI, no session resumption (as ztunnel),
 * the server's SPIFFE ID one of the expected. */
static int
pc_dial_tls(struct hbone_pool *p, struct hbpc *pc, const struct hbone_dst *dst)
{
	static const unsigned char alpn[] = { 2, 'h', '2' };
	const char *few[9], **sans = few;
	size_t n = 0;
	SSL *ssl;
	int fd, rc;

	if (!dst->ctx)
		return -ENOKEY;
	if ((fd = sock_connect(&dst->addr, NULL, false, 0)) < 0)
		return fd;
	conn_init(&pc->t, p->loop, fd, &raw_ops, pc_ready, pc, -1);
	pc->t.connecting = true;
	if (dst->nsans + 1 > sizeof(few) / sizeof(few[0]) && !(sans = calloc(dst->nsans + 1, sizeof(*sans)))) {
		conn_close(&pc->t, CONN_ABORT);
		return -ENOMEM;
	}
	if (dst->dst_id && *dst->dst_id)
		sans[n++] = dst->dst_id;
	for (size_t i = 0; i < dst->nsans; i++)
		sans[n++] = dst->sans[i];
	struct xtls_client_opts o = {
		.sni = NULL,
		.alpn = alpn, .alpn_len = sizeof(alpn),
		.sans = sans, .nsans = n,
		.sessions = NULL,
	};
	rc = xtls_start_client(&pc->t, dst->ctx, &o);
	if (sans != few)
		free(sans);
	if (rc < 0) {
		conn_close(&pc->t, CONN_ABORT);
		return rc;
	}
	/* The bundle's client context allows TLS 1.2 for Istio mTLS peers;
	 * HBONE is 1.3 with ztunnel's suites, and never resumes. */
	ssl = xtls_ssl(&pc->t);
	if (!ssl || !SSL_set_min_proto_version(ssl, TLS1_3_VERSION) ||
	    !SSL_set_ciphersuites(ssl, "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256")) {
		conn_close(&pc->t, CONN_ABORT);
		return -EINVAL;
	}
	SSL_set_options(ssl, SSL_OP_NO_TICKET);
	SSL_set_session_id_context(ssl, NULL, 0);
	return 0;
}

static bool
pc_matches(const struct hbpc *pc, const struct hbone_dst *dst)
{
	return strcmp(pc->src_id, dst->src_id ? dst->src_id : "") == 0 &&
	    strcmp(pc->dst_id, dst->dst_id ? dst->dst_id : "") == 0 && sock_addr_equal(&pc->addr, &dst->addr);
}

/* Whether pc can carry one more stream: under our limit, and a session up
 * that may open one (or one still coming: it is shared). */
static bool
pc_room(const struct hbpc *pc, unsigned max)
{
	if (pc->nstreams >= max)
		return false;
	return pc->state == PC_CONNECTING || (pc->state == PC_READY && h2s_can_open(pc->s));
}

/* Puts st on a connection of dst's key with room (not `not`), else a new
 * one. Opens its stream at once on a session that is up. 0 or -errno. */
static int
pool_place(struct hbone_pool *p, struct hbst *st, const struct hbone_dst *dst, struct hbpc *not)
{
	struct hbpc *pc, *coming = NULL;
	int rc;

	/* A session that is up first (the stream opens at once), else one
	 * still being established (its handshake is shared). */
	for (pc = p->conns; pc; pc = pc->next) {
		if (pc == not || !pc_matches(pc, dst) || !pc_room(pc, p->o.max_streams))
			continue;
		if (pc->state == PC_READY)
			break;
		if (!coming)
			coming = pc;
	}
	if (!pc)
		pc = coming;
	if (!pc) {
		if (!(pc = calloc(1, sizeof(*pc))))
			return -ENOMEM;
		pc->p = p;
		pc->addr = dst->addr;
		ev_init(&pc->timer, pc_timer);
		pc->timer.data = pc;
		if (!(pc->src_id = strdup(dst->src_id ? dst->src_id : "")) ||
		    !(pc->dst_id = strdup(dst->dst_id ? dst->dst_id : ""))) {
			free(pc->src_id);
			free(pc);
			return -ENOMEM;
		}
		rc = p->dial ? p->dial(p, &pc->t, dst, p->dial_arg) : pc_dial_tls(p, pc, dst);
		if (rc < 0) {
			p->stats.handshake_fail++;
			wstat(p, WM_HBONE_CLIENT_CX_FAIL, 1);
			free(pc->src_id);
			free(pc->dst_id);
			free(pc);
			return rc;
		}
		if (p->dial) {
			pc->t.ready = pc_ready;
			pc->t.owner = pc;
		}
		pc->t_ours = true;
		if (dst->ctx && SSL_CTX_up_ref(dst->ctx))
			pc->ctx = dst->ctx;
		/* Best effort: without the copy a moved stream expects the
		 * workload identity only. */
		if (dst->nsans && (pc->sans = calloc(dst->nsans, sizeof(*pc->sans))))
			for (size_t i = 0; i < dst->nsans; i++)
				if ((pc->sans[pc->nsans] = strdup(dst->sans[i])))
					pc->nsans++;
		p->nalloc++;
		p->stats.opened++;
		wstat(p, WM_HBONE_CLIENT_CX_TOTAL, 1);
		wstat(p, WM_HBONE_CLIENT_CX_ACTIVE, 1);
		pc->state = PC_CONNECTING;
		pc->next = p->conns;
		if (p->conns)
			p->conns->prev = pc;
		p->conns = pc;
		pc->listed = true;
		p->nconns++;
		ev_timer_set(&pc->timer, p->o.handshake_s, 0.);
		ev_timer_start(p->loop, &pc->timer);
		conn_arm(&pc->t, CONN_HS);
	} else if (pc->state == PC_READY && !pc->nstreams)
		ev_timer_stop(p->loop, &pc->timer);	/* reused before its release */
	/* Appended: the waiting streams open in the order they came. */
	st->pc = pc;
	st->next = NULL;
	st->prev = pc->last;
	if (pc->last)
		pc->last->next = st;
	else
		pc->streams = st;
	pc->last = st;
	pc->nstreams++;
	if (pc->state == PC_READY && (rc = st_open(st)) < 0) {
		st_unlink(st);
		return rc;
	}
	return 0;
}

/* ---- the pool -------------------------------------------------------------- */

struct hbone_pool *
hbone_pool_new(struct worker *w, struct ev_loop *loop, const struct hbone_pool_opts *o)
{
	struct hbone_pool *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->w = w;
	p->loop = loop;
	p->o = o ? *o : hbone_pool_defaults;
	if (!p->o.max_streams)
		p->o.max_streams = HBONE_POOL_MAX_STREAMS;
	return p;
}

void
hbone_pool_free(struct hbone_pool *p)
{
	if (!p)
		return;
	p->nalloc++;	/* not freed under our feet */
	while (p->conns) {
		struct hbpc *pc = p->conns;

		if (pc->s) {
			pc_unlist(pc);
			pc->state = PC_DRAINING;
			h2s_close(pc->s, CONN_ABORT);	/* pc_closed frees it */
		} else
			pc_fail(pc, -ECONNABORTED);
	}
	p->dying = true;
	free(p->baggage);
	p->baggage = NULL;
	if (!--p->nalloc)
		free(p);
}

const struct hbone_pool_stats *
hbone_pool_stats(const struct hbone_pool *p)
{
	return &p->stats;
}

void
hbone_pool_set_dial(struct hbone_pool *p, hbone_dial_fn *dial, void *arg)
{
	p->dial = dial;
	p->dial_arg = arg;
}

int
hbone_pool_open(struct hbone_pool *p, struct conn *c, const struct hbone_dst *dst, const char *authority,
    const struct h2s_hdr *hdrs, size_t n, conn_ready_fn *ready, void *owner)
{
	size_t need = sizeof(struct hbst) + n * sizeof(struct h2s_hdr) + strlen(authority) + 1;
	struct hbst *st;
	char *q;
	int rc;

	for (size_t i = 0; i < n; i++)
		need += strlen(hdrs[i].name) + strlen(hdrs[i].value) + 2;
	/* One block: the request waits with the stream when its connection
	 * is not up yet. */
	if (!(st = calloc(1, need)))
		return -ENOMEM;
	st->hdrs = (struct h2s_hdr *)(st + 1);
	q = (char *)(st->hdrs + n);
	st->authority = strcpy(q, authority);
	q += strlen(authority) + 1;
	for (size_t i = 0; i < n; i++) {
		st->hdrs[i].name = strcpy(q, hdrs[i].name);
		q += strlen(q) + 1;
		st->hdrs[i].value = strcpy(q, hdrs[i].value);
		q += strlen(q) + 1;
	}
	st->nhdrs = n;
	conn_init(c, p->loop, -1, &hbst_ops, ready, owner, -1);
	c->tx = st;
	st->outer = c;
	if ((rc = pool_place(p, st, dst, NULL)) < 0) {
		free(st);
		c->ops = NULL;
		c->tx = NULL;
		return rc;
	}
	p->stats.streams++;
	return 0;
}

int
hbone_pool_connect(struct worker *w, struct conn *c, const struct hbone_dst *dst, const char *authority,
    const struct h2s_hdr *hdrs, size_t n, conn_ready_fn *ready, void *owner)
{
	if (!w->hbone && !(w->hbone = hbone_pool_new(w, w->loop, &hbone_pool_defaults)))
		return -ENOMEM;
	/* proxy.hbonePoolIdleTimeout is live: the worker's configuration now
	 * (a connection's timer keeps the period it was started with). */
	if (w->snap)
		w->hbone->o.idle_s = w->snap->s->cfg.hbone_pool_idle_ms / 1000.0;
	return hbone_pool_open(w->hbone, c, dst, authority, hdrs, n, ready, owner);
}

const char *
hbone_stream_peer_id(const struct conn *c)
{
	const struct hbst *st = c->ops == &hbst_ops ? c->tx : NULL;

	return st && st->peer_id ? st->peer_id : "";
}

int
hbone_stream_status(const struct conn *c)
{
	const struct hbst *st = c->ops == &hbst_ops ? c->tx : NULL;

	return st && st->inner ? h2s_status(st->inner) : 0;
}

bool
hbone_is_stream(const struct conn *c)
{
	return c->ops == &hbst_ops;
}

size_t
hbone_pool_conns(const struct hbone_pool *p, const struct hbone_dst *dst)
{
	size_t n = 0;

	for (const struct hbpc *pc = p->conns; pc; pc = pc->next)
		if (pc->state != PC_DRAINING && (!dst || pc_matches(pc, dst)))
			n++;
	return n;
}

/* ---- the request's headers -------------------------------------------------- */

static const char *
label(const cJSON *labels, const char *const *keys, size_t n)
{
	for (size_t i = 0; labels && i < n; i++) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(labels, keys[i]);

		if (cJSON_IsString(v) && *v->valuestring)
			return v->valuestring;
	}
	return NULL;
}

static void
bag_put(char *out, size_t len, const char *key, const char *v)
{
	size_t at = strlen(out);

	/* A value with a separator or a space would break the list; W3C
	 * baggage would percent-encode it, and Kubernetes names have none. */
	if (!v || !*v || strpbrk(v, ",;= \t\"") || at >= len)
		return;
	snprintf(out + at, len - at, "%s%s=%s", at ? "," : "", key, v);
}

int
hbone_baggage_build(char *out, size_t len, const char *cluster_id)
{
	static const char *const name_keys[] = { "service.istio.io/canonical-name", "app.kubernetes.io/name", "app" };
	static const char *const rev_keys[] = { "service.istio.io/canonical-revision", "app.kubernetes.io/version",
		"version" };
	const char *ns = getenv("POD_NAMESPACE"), *pod = getenv("POD_NAME");
	const char *wl = getenv("ISTIO_META_WORKLOAD_NAME"), *js = getenv("ISTIO_METAJSON_LABELS");
	const char *svc, *rev;
	cJSON *labels = NULL;
	char err[64];

	if (!len)
		return -EINVAL;
	*out = 0;
	if (js && *js && (labels = json_parse_strict(js, strlen(js), err, sizeof(err))) && !cJSON_IsObject(labels)) {
		cJSON_Delete(labels);
		labels = NULL;
	}
	svc = label(labels, name_keys, 3);
	rev = label(labels, rev_keys, 3);
	/* ztunnel's order and keys (reference xds-hbone.md §3.2): the
	 * workload's kind is a Deployment when the injector named one (its
	 * ISTIO_META_WORKLOAD_NAME), else the pod alone. */
	bag_put(out, len, "k8s.cluster.name", cluster_id && *cluster_id ? cluster_id : "Kubernetes");
	bag_put(out, len, "k8s.namespace.name", ns);
	if (wl && *wl)
		bag_put(out, len, "k8s.deployment.name", wl);
	else
		bag_put(out, len, "k8s.pod.name", pod);
	bag_put(out, len, "service.name", svc ? svc : wl && *wl ? wl : pod);
	bag_put(out, len, "service.version", rev ? rev : "latest");
	cJSON_Delete(labels);
	return 0;
}

const char *
hbone_baggage(struct worker *w, const struct config *cfg)
{
	char buf[1024];

	if (!w->hbone && !(w->hbone = hbone_pool_new(w, w->loop, &hbone_pool_defaults)))
		return NULL;
	if (!w->hbone->baggage && hbone_baggage_build(buf, sizeof(buf), cfg->cluster_id) == 0)
		w->hbone->baggage = strdup(buf);
	return w->hbone->baggage;
}

int
hbone_traceparent(char *out, size_t len)
{
	unsigned char r[24];
	static const char hex[] = "0123456789abcdef";
	char *q;

	/* version 00, a 16-byte trace id, an 8-byte parent id, flags 00; all
	 * zero ids are invalid (W3C), so are redrawn. */
	if (len < 56)
		return -ENOSPC;
	do {
		if (RAND_bytes(r, sizeof(r)) != 1)
			return -EIO;
	} while (!memcmp(r, (const unsigned char[16]){ 0 }, 16) || !memcmp(r + 16, (const unsigned char[8]){ 0 }, 8));
	q = out;
	*q++ = '0';
	*q++ = '0';
	*q++ = '-';
	for (size_t i = 0; i < 24; i++) {
		if (i == 16)
			*q++ = '-';
		*q++ = hex[r[i] >> 4];
		*q++ = hex[r[i] & 15];
	}
	memcpy(q, "-00", 4);
	return 0;
}
