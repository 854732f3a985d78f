/* Unit tests for src/hbone_pool.c: the HBONE client pool's keying, the
 * stream limit (ours and the peer's) opening another connection, a
 * connection being established shared by the streams waiting for it, idle
 * release and reuse, a failed connection failing only its own streams, the
 * CONNECT as asked (authority, headers), and the request headers' forms.
 *
 * The pool's connections are dialled by the test (hbone_pool_set_dial: a
 * transport whose handshake the test completes or fails) and its sessions
 * are the test's (h2s_* wrapped at link time, -Wl,--wrap): the pool's own
 * logic is under test, with every session event (a response, the peer's
 * limit, a session's end) in the test's hands. The real h2s under TLS is
 * exercised by tests/e2e/test_hbone_client.py against nghttpx. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "hbone.h"
#include "sock.h"

/* ---- the test's sessions (h2s.h, wrapped) ----------------------------------- */

struct fsess;

struct fstream {
	struct conn c;
	struct conn *live;	/* where the owner keeps it (h2s_stream_move) */
	struct fsess *s;
	int status;		/* 0: no response yet */
	bool reset;
	char authority[64];
	char hdrs[512];		/* "name: value\n"... */
};

struct fsess {
	struct conn *t;
	const struct h2s_handler *h;
	void *ud;
	unsigned limit;		/* the peer's max_concurrent_streams */
	unsigned open;
	bool closed_called, goaway;
	struct fstream *streams[256];
	unsigned nstreams;
};

static struct fsess *sessions[64];
static unsigned nsessions;

static int
fs_handshake(struct conn *c)
{
	struct fstream *f = c->tx;

	if (f->reset)
		return -ECONNRESET;
	if (!f->status)
		return -EAGAIN;
	return f->status >= 200 && f->status < 300 ? 0 : -ECONNREFUSED;
}

static ssize_t
fs_io(struct conn *c, const void *b, size_t l)
{
	(void)c;
	(void)b;
	(void)l;
	return -EAGAIN;
}

static ssize_t
fs_recv(struct conn *c, void *b, size_t l)
{
	return fs_io(c, b, l);
}

static int
fs_int(struct conn *c)
{
	(void)c;
	return 0;
}

static int
fs_want(struct conn *c, int what)
{
	(void)c;
	(void)what;
	return 0;
}

static size_t
fs_size(struct conn *c)
{
	(void)c;
	return 0;
}

/* Closed streams are freed by the next test's setup: conn_close() still
 * writes to the conn after its close op (h2s must defer its free too). */
static struct fstream *dead[1024];
static unsigned ndead;

static void
fs_close(struct conn *c, enum conn_close how)
{
	struct fstream *f = c->tx;

	(void)how;
	if (f->s) {
		f->s->open--;
		for (unsigned i = 0; i < f->s->nstreams; i++)
			if (f->s->streams[i] == f)
				f->s->streams[i] = NULL;
	}
	assert_true(ndead < 1024);
	dead[ndead++] = f;
}

static const struct conn_ops fs_ops = {
	.name = "fake-h2", .handshake = fs_handshake, .recv = fs_recv, .send = fs_io,
	.shutdown_wr = fs_int, .want = fs_want, .pending = fs_size, .unsent = fs_size,
	.error = fs_int, .close = fs_close,
};

static unsigned next_limit = 1000;

/* The wrappers (the linker's --wrap names for h2s.h's client side). */
struct h2s *__wrap_h2s_client_new(struct worker *w, struct conn *t, const struct h2s_settings *st,
    const struct h2s_handler *h, void *ud);
struct conn *__wrap_h2s_connect(struct h2s *hs, const char *authority, const struct h2s_hdr *hdrs, size_t n);
int __wrap_h2s_status(const struct conn *c);
bool __wrap_h2s_can_open(const struct h2s *hs);
unsigned __wrap_h2s_streams(const struct h2s *hs);
void __wrap_h2s_close(struct h2s *hs, enum conn_close how);
void __wrap_h2s_stream_move(struct conn *dst, struct conn *src);

void
__wrap_h2s_stream_move(struct conn *dst, struct conn *src)
{
	struct fstream *f = src->tx;

	*dst = *src;
	dst->io.data = dst;
	f->live = dst;
}

struct h2s *
__wrap_h2s_client_new(struct worker *w, struct conn *t, const struct h2s_settings *st, const struct h2s_handler *h,
    void *ud)
{
	struct fsess *s = calloc(1, sizeof(*s));

	(void)w;
	(void)st;
	assert_non_null(s);
	s->t = t;
	s->h = h;
	s->ud = ud;
	s->limit = next_limit;
	assert_true(nsessions < 64);
	sessions[nsessions++] = s;
	return (struct h2s *)s;
}

struct conn *
__wrap_h2s_connect(struct h2s *hs, const char *authority, const struct h2s_hdr *hdrs, size_t n)
{
	struct fsess *s = (struct fsess *)hs;
	struct fstream *f;

	if (s->goaway || s->open >= s->limit || s->nstreams >= 256)
		return NULL;
	assert_non_null(f = calloc(1, sizeof(*f)));
	f->s = s;
	snprintf(f->authority, sizeof(f->authority), "%s", authority);
	for (size_t i = 0; i < n; i++)
		snprintf(f->hdrs + strlen(f->hdrs), sizeof(f->hdrs) - strlen(f->hdrs), "%s: %s\n", hdrs[i].name,
		    hdrs[i].value);
	conn_init(&f->c, ev_default_loop(0), -1, &fs_ops, NULL, NULL, -1);
	f->c.tx = f;
	f->live = &f->c;
	s->open++;
	s->streams[s->nstreams++] = f;
	return &f->c;
}

int
__wrap_h2s_status(const struct conn *c)
{
	return ((const struct fstream *)c->tx)->status;
}

bool
__wrap_h2s_can_open(const struct h2s *hs)
{
	const struct fsess *s = (const struct fsess *)hs;

	return !s->goaway && s->open < s->limit;
}

unsigned
__wrap_h2s_streams(const struct h2s *hs)
{
	return ((const struct fsess *)hs)->open;
}

/* The session ends (as h2s would: open streams reset, then closed). */
static void
fsess_end(struct fsess *s)
{
	for (unsigned i = 0; i < s->nstreams; i++) {
		struct fstream *f = s->streams[i];

		if (!f)
			continue;
		f->reset = true;
		f->s = NULL;
		s->streams[i] = NULL;
		s->open--;
		if (f->live->ready && (f->live->wants & CONN_HS))
			f->live->ready(f->live, CONN_HS);
	}
	s->closed_called = true;
	conn_close(s->t, CONN_ABORT);	/* the session owned its transport */
	s->h->closed((struct h2s *)s, s->ud);
}

void
__wrap_h2s_close(struct h2s *hs, enum conn_close how)
{
	struct fsess *s = (struct fsess *)hs;

	(void)how;
	s->goaway = true;
	fsess_end(s);
}

/* The response to stream f. */
static void
respond(struct fstream *f, int status)
{
	f->status = status;
	if (f->live->ready && (f->live->wants & CONN_HS))
		f->live->ready(f->live, CONN_HS);
}

/* ---- the test's transports (hbone_pool_set_dial) ------------------------------ */

struct ftrans {
	int rc;			/* the handshake's answer: -EAGAIN until decided */
	char alpn_unused;
};

static struct conn *trans[64];
static unsigned ntrans;
static int dial_fail;		/* the next dial fails with it */

static int
ft_handshake(struct conn *c)
{
	return ((struct ftrans *)c->tx)->rc;
}

static void
ft_close(struct conn *c, enum conn_close how)
{
	(void)how;
	for (unsigned i = 0; i < ntrans; i++)
		if (trans[i] == c)
			trans[i] = NULL;
	free(c->tx);
}

static const struct conn_ops ft_ops = {
	.name = "fake-tls", .handshake = ft_handshake, .recv = fs_recv, .send = fs_io,
	.shutdown_wr = fs_int, .want = fs_want, .pending = fs_size, .unsent = fs_size,
	.error = fs_int, .close = ft_close,
};

static int
dial(struct hbone_pool *p, struct conn *t, const struct hbone_dst *dst, void *arg)
{
	struct ftrans *x;

	(void)p;
	(void)dst;
	(void)arg;
	if (dial_fail) {
		int rc = dial_fail;

		dial_fail = 0;
		return rc;
	}
	assert_non_null(x = calloc(1, sizeof(*x)));
	x->rc = -EAGAIN;
	conn_init(t, ev_default_loop(0), -1, &ft_ops, NULL, NULL, -1);
	t->tx = x;
	assert_true(ntrans < 64);
	trans[ntrans++] = t;
	return 0;
}

/* The i-th dialled connection's TLS handshake ends with rc. */
static void
finish(unsigned i, int rc)
{
	struct conn *t = trans[i];

	assert_non_null(t);
	((struct ftrans *)t->tx)->rc = rc;
	t->ready(t, CONN_HS);
}

/* ---- the streams' owners (the tunnels) ------------------------------------- */

struct owner {
	struct conn c;
	int rc;			/* the handshake's last answer; 1 before any */
	unsigned calls;
};

static void
owner_ready(struct conn *c, int what)
{
	struct owner *o = c->owner;

	(void)what;
	o->calls++;
	o->rc = c->ops->handshake(c);
}

static struct hbone_dst
dst(const char *src, const char *dstid, const char *ip)
{
	struct hbone_dst d = { .src_id = src, .dst_id = dstid };

	assert_int_equal(sock_addr_parse(ip, HBONE_PORT, &d.addr), 0);
	return d;
}

static int
open_one(struct hbone_pool *p, struct owner *o, const struct hbone_dst *d, const char *authority)
{
	static const struct h2s_hdr h[] = { { "forwarded", "for=\"10.0.0.1:4000\"" }, { "traceparent", "00-x" } };
	int rc;

	o->rc = 1;
	o->calls = 0;
	rc = hbone_pool_open(p, &o->c, d, authority, h, 2, owner_ready, o);
	if (rc == 0)
		conn_arm(&o->c, CONN_HS);
	return rc;
}

static struct hbone_pool *
pool(unsigned max_streams, double idle_s)
{
	struct hbone_pool_opts o = hbone_pool_defaults;
	struct hbone_pool *p;

	o.max_streams = max_streams;
	o.idle_s = idle_s;
	assert_non_null(p = hbone_pool_new(NULL, ev_default_loop(0), &o));
	hbone_pool_set_dial(p, dial, NULL);
	return p;
}

static int
setup(void **state)
{
	(void)state;
	for (unsigned i = 0; i < nsessions; i++)
		free(sessions[i]);
	for (unsigned i = 0; i < ndead; i++)
		free(dead[i]);
	nsessions = ntrans = ndead = 0;
	next_limit = 1000;
	dial_fail = 0;
	return 0;
}

/* ---- the tests ------------------------------------------------------------- */

/* One connection per (source identity, destination identity, destination
 * IP); streams of one key share it. */
static void
test_keying(void **state)
{
	struct hbone_pool *p = pool(100, 300);
	struct hbone_dst k1 = dst("spiffe://td/ns/a/sa/x", "spiffe://td/ns/b/sa/y", "10.1.0.1");
	struct hbone_dst k2 = dst("spiffe://td/ns/a/sa/x", "spiffe://td/ns/b/sa/y", "10.1.0.2");
	struct hbone_dst k3 = dst("spiffe://td/ns/a/sa/x", "spiffe://td/ns/b/sa/z", "10.1.0.1");
	struct hbone_dst k4 = dst("spiffe://td/ns/a/sa/other", "spiffe://td/ns/b/sa/y", "10.1.0.1");
	struct owner o[6];

	(void)state;
	assert_int_equal(open_one(p, &o[0], &k1, "10.1.0.1:80"), 0);
	assert_int_equal(open_one(p, &o[1], &k1, "10.1.0.1:8080"), 0);
	assert_int_equal(open_one(p, &o[2], &k2, "10.1.0.2:80"), 0);
	assert_int_equal(open_one(p, &o[3], &k3, "10.1.0.1:80"), 0);
	assert_int_equal(open_one(p, &o[4], &k4, "10.1.0.1:80"), 0);
	assert_int_equal(hbone_pool_stats(p)->opened, 4);
	assert_int_equal(hbone_pool_conns(p, &k1), 1);
	assert_int_equal(hbone_pool_conns(p, NULL), 4);
	/* Up: each stream opened on its own key's session, as asked. */
	for (unsigned i = 0; i < 4; i++)
		finish(i, 0);
	assert_int_equal(nsessions, 4);
	assert_int_equal(hbone_pool_stats(p)->established, 4);
	struct fsess *s1 = sessions[0];
	assert_int_equal(s1->open, 2);
	assert_string_equal(s1->streams[0]->authority, "10.1.0.1:80");
	assert_string_equal(s1->streams[1]->authority, "10.1.0.1:8080");
	assert_non_null(strstr(s1->streams[0]->hdrs, "forwarded: for=\"10.0.0.1:4000\"\n"));
	/* A later stream of a known key reuses its session at once. */
	assert_int_equal(open_one(p, &o[5], &k2, "10.1.0.2:81"), 0);
	assert_int_equal(hbone_pool_stats(p)->opened, 4);
	assert_int_equal(sessions[1]->open, 2);
	for (unsigned i = 0; i < 6; i++)
		conn_close(&o[i].c, CONN_ABORT);
	hbone_pool_free(p);
}

/* Our limit per connection (ztunnel's 100): the 101st stream opens a
 * second connection; so does the peer's max_concurrent_streams. */
static void
test_stream_limit(void **state)
{
	struct hbone_pool *p = pool(0, 300);	/* 0: the default, 100 */
	struct hbone_dst k = dst("a", "b", "10.2.0.1");
	struct owner *o = calloc(112, sizeof(*o));

	(void)state;
	assert_non_null(o);
	for (unsigned i = 0; i < 100; i++)
		assert_int_equal(open_one(p, &o[i], &k, "10.2.0.1:80"), 0);
	assert_int_equal(hbone_pool_stats(p)->opened, 1);
	assert_int_equal(open_one(p, &o[100], &k, "10.2.0.1:80"), 0);
	assert_int_equal(hbone_pool_stats(p)->opened, 2);
	assert_int_equal(hbone_pool_conns(p, &k), 2);
	for (unsigned i = 0; i < 101; i++)
		conn_close(&o[i].c, CONN_ABORT);
	hbone_pool_free(p);

	/* The peer allows 5: the 6th stream needs another connection. */
	setup(NULL);
	next_limit = 5;
	p = pool(100, 300);
	assert_int_equal(open_one(p, &o[0], &k, "10.2.0.1:80"), 0);
	finish(0, 0);
	for (unsigned i = 1; i < 5; i++)
		assert_int_equal(open_one(p, &o[i], &k, "10.2.0.1:80"), 0);
	assert_int_equal(hbone_pool_stats(p)->opened, 1);
	assert_int_equal(sessions[0]->open, 5);
	assert_int_equal(open_one(p, &o[5], &k, "10.2.0.1:80"), 0);
	assert_int_equal(hbone_pool_stats(p)->opened, 2);
	/* A stream ends: its room is used again before a third connection. */
	conn_close(&o[1].c, CONN_GRACEFUL);
	assert_int_equal(open_one(p, &o[1], &k, "10.2.0.1:80"), 0);
	assert_int_equal(hbone_pool_stats(p)->opened, 2);
	assert_int_equal(sessions[0]->open, 5);
	for (unsigned i = 0; i < 6; i++)
		conn_close(&o[i].c, CONN_ABORT);
	hbone_pool_free(p);
	free(o);
}

/* A burst of 50 to one peer: one handshake, the 50 streams wait for it,
 * then open on its session; each owner hears its own response. */
static void
test_shared_in_progress(void **state)
{
	struct hbone_pool *p = pool(100, 300);
	struct hbone_dst k = dst("a", "b", "10.3.0.1");
	struct owner o[50];
	char auth[32];

	(void)state;
	for (unsigned i = 0; i < 50; i++) {
		snprintf(auth, sizeof(auth), "10.3.0.1:%u", 1000 + i);
		assert_int_equal(open_one(p, &o[i], &k, auth), 0);
		assert_int_equal(o[i].c.ops->handshake(&o[i].c), -EAGAIN);
	}
	assert_int_equal(hbone_pool_stats(p)->opened, 1);
	assert_int_equal(ntrans, 1);
	assert_int_equal(nsessions, 0);
	finish(0, 0);
	assert_int_equal(nsessions, 1);
	assert_int_equal(sessions[0]->open, 50);
	for (unsigned i = 0; i < 50; i++) {
		struct fstream *f = sessions[0]->streams[i];

		assert_int_equal(f->status, 0);
		respond(f, i == 7 ? 503 : 200);
	}
	/* Each stream's owner: called once, with its own answer. The
	 * authorities went out as asked (every port once). */
	unsigned seen[50] = { 0 }, ok = 0;
	for (unsigned i = 0; i < 50; i++) {
		unsigned port = (unsigned)atoi(strchr(sessions[0]->streams[i]->authority, ':') + 1);

		assert_true(port >= 1000 && port < 1050);
		seen[port - 1000]++;
		assert_int_equal(o[i].calls, 1);
		if (o[i].rc == 0)
			ok++;
		else {
			assert_int_equal(o[i].rc, -ECONNREFUSED);
			assert_int_equal(hbone_stream_status(&o[i].c), 503);
		}
	}
	for (unsigned i = 0; i < 50; i++)
		assert_int_equal(seen[i], 1);
	assert_int_equal(ok, 49);
	for (unsigned i = 0; i < 50; i++)
		conn_close(&o[i].c, CONN_ABORT);
	hbone_pool_free(p);
}

/* The session that comes up takes fewer streams than are waiting (the
 * peer's limit): the rest go to another connection, none is lost. */
static void
test_waiters_over_peer_limit(void **state)
{
	struct hbone_pool *p = pool(100, 300);
	struct hbone_dst k = dst("a", "b", "10.4.0.1");
	struct owner o[30];

	(void)state;
	for (unsigned i = 0; i < 30; i++)
		assert_int_equal(open_one(p, &o[i], &k, "10.4.0.1:80"), 0);
	next_limit = 20;
	finish(0, 0);
	assert_int_equal(sessions[0]->open, 20);
	assert_int_equal(hbone_pool_stats(p)->opened, 2);
	finish(1, 0);
	assert_int_equal(sessions[1]->open, 10);
	for (unsigned i = 0; i < 30; i++)
		assert_int_equal(o[i].c.ops->handshake(&o[i].c), -EAGAIN);
	for (unsigned i = 0; i < 30; i++)
		conn_close(&o[i].c, CONN_ABORT);
	hbone_pool_free(p);
}

static void
run_for(double s)
{
	ev_tstamp end = ev_time() + s;

	while (ev_time() < end)
		ev_run(ev_default_loop(0), EVRUN_ONCE | EVRUN_NOWAIT), ev_sleep(0.005);
}

/* A connection left without streams is released after the idle period
 * (GOAWAY); one reused within it is kept. */
static void
test_idle_release(void **state)
{
	struct hbone_pool *p = pool(100, 0.15);
	struct hbone_dst k = dst("a", "b", "10.5.0.1");
	struct owner o[2];

	(void)state;
	assert_int_equal(open_one(p, &o[0], &k, "10.5.0.1:80"), 0);
	finish(0, 0);
	conn_close(&o[0].c, CONN_GRACEFUL);
	run_for(0.05);
	/* Reused before its release: the same connection, and its timer stops. */
	assert_int_equal(open_one(p, &o[1], &k, "10.5.0.1:80"), 0);
	assert_int_equal(hbone_pool_stats(p)->opened, 1);
	run_for(0.3);
	assert_int_equal(hbone_pool_stats(p)->idle_released, 0);
	assert_int_equal(hbone_pool_conns(p, &k), 1);
	conn_close(&o[1].c, CONN_GRACEFUL);
	run_for(0.3);
	assert_int_equal(hbone_pool_stats(p)->idle_released, 1);
	assert_true(sessions[0]->goaway);
	assert_true(sessions[0]->closed_called);
	assert_int_equal(hbone_pool_conns(p, &k), 0);
	/* The next stream dials anew. */
	assert_int_equal(open_one(p, &o[0], &k, "10.5.0.1:80"), 0);
	assert_int_equal(hbone_pool_stats(p)->opened, 2);
	conn_close(&o[0].c, CONN_ABORT);
	hbone_pool_free(p);
}

/* A connection that fails fails only the streams waiting for it, each with
 * the connection's error; another peer's streams go on. */
static void
test_failure_fan_out(void **state)
{
	struct hbone_pool *p = pool(100, 300);
	struct hbone_dst bad = dst("a", "b", "10.6.0.1"), good = dst("a", "b", "10.6.0.2");
	struct hbone_dst gone = dst("a", "b", "10.6.0.9");
	struct owner o[6];

	(void)state;
	for (unsigned i = 0; i < 3; i++)
		assert_int_equal(open_one(p, &o[i], &bad, "10.6.0.1:80"), 0);
	for (unsigned i = 3; i < 6; i++)
		assert_int_equal(open_one(p, &o[i], &good, "10.6.0.2:80"), 0);
	finish(0, -EPERM);	/* e.g. the server's identity is not the one expected */
	for (unsigned i = 0; i < 3; i++) {
		assert_int_equal(o[i].calls, 1);
		assert_int_equal(o[i].rc, -EPERM);
	}
	for (unsigned i = 3; i < 6; i++)
		assert_int_equal(o[i].calls, 0);
	assert_int_equal(hbone_pool_stats(p)->handshake_fail, 1);
	assert_int_equal(hbone_pool_conns(p, &bad), 0);
	finish(1, 0);
	for (unsigned i = 3; i < 6; i++)
		respond(sessions[0]->streams[i - 3], 200);
	for (unsigned i = 3; i < 6; i++)
		assert_int_equal(o[i].rc, 0);
	/* The failed peer's next stream dials a new connection. */
	conn_close(&o[0].c, CONN_ABORT);
	assert_int_equal(open_one(p, &o[0], &bad, "10.6.0.1:80"), 0);
	assert_int_equal(hbone_pool_stats(p)->opened, 3);

	/* A session that ends resets its open streams and leaves the pool;
	 * the other peer's connection is untouched. */
	finish(2, 0);
	fsess_end(sessions[1]);
	assert_int_equal(o[0].rc, -ECONNRESET);
	assert_int_equal(hbone_pool_conns(p, &bad), 0);
	assert_int_equal(hbone_pool_conns(p, &good), 1);
	assert_int_equal(sessions[0]->open, 3);

	/* A dial that fails at once is the caller's error, and c stays closed. */
	conn_close(&o[1].c, CONN_ABORT);
	dial_fail = -ENETUNREACH;
	assert_int_equal(open_one(p, &o[1], &gone, "10.6.0.9:80"), -ENETUNREACH);
	assert_false(conn_open(&o[1].c));
	for (unsigned i = 0; i < 6; i++)
		conn_close(&o[i].c, CONN_ABORT);	/* o[1]: closed already, a no-op */
	hbone_pool_free(p);
}

/* A stream closed by its owner while its connection is still being made
 * leaves nothing behind (the connection then idles and is released). */
static void
test_close_while_waiting(void **state)
{
	struct hbone_pool *p = pool(100, 0.05);
	struct hbone_dst k = dst("a", "b", "10.7.0.1");
	struct owner o[2];

	(void)state;
	assert_int_equal(open_one(p, &o[0], &k, "10.7.0.1:80"), 0);
	assert_int_equal(open_one(p, &o[1], &k, "10.7.0.1:80"), 0);
	conn_close(&o[0].c, CONN_ABORT);
	finish(0, 0);
	assert_int_equal(sessions[0]->open, 1);
	conn_close(&o[1].c, CONN_ABORT);
	assert_int_equal(sessions[0]->open, 0);
	run_for(0.2);
	assert_int_equal(hbone_pool_stats(p)->idle_released, 1);
	hbone_pool_free(p);
}

/* baggage: ztunnel's keys from the environment and the pod's labels;
 * traceparent: W3C version 00, fresh ids. */
static void
test_headers(void **state)
{
	char b[512], t1[64], t2[64];

	(void)state;
	setenv("POD_NAMESPACE", "shop", 1);
	setenv("POD_NAME", "cart-7d9-abc", 1);
	setenv("ISTIO_META_WORKLOAD_NAME", "cart", 1);
	setenv("ISTIO_METAJSON_LABELS", "{\"app\":\"cart-app\",\"version\":\"v2\"}", 1);
	assert_int_equal(hbone_baggage_build(b, sizeof(b), "c1"), 0);
	assert_string_equal(b, "k8s.cluster.name=c1,k8s.namespace.name=shop,k8s.deployment.name=cart,"
	    "service.name=cart-app,service.version=v2");
	unsetenv("ISTIO_META_WORKLOAD_NAME");
	setenv("ISTIO_METAJSON_LABELS", "not json", 1);
	assert_int_equal(hbone_baggage_build(b, sizeof(b), ""), 0);
	assert_string_equal(b, "k8s.cluster.name=Kubernetes,k8s.namespace.name=shop,k8s.pod.name=cart-7d9-abc,"
	    "service.name=cart-7d9-abc,service.version=latest");
	unsetenv("ISTIO_METAJSON_LABELS");
	unsetenv("POD_NAME");
	unsetenv("POD_NAMESPACE");

	assert_int_equal(hbone_traceparent(t1, sizeof(t1)), 0);
	assert_int_equal(hbone_traceparent(t2, sizeof(t2)), 0);
	assert_int_equal(strlen(t1), 55);
	assert_memory_equal(t1, "00-", 3);
	assert_int_equal(t1[35], '-');
	assert_int_equal(t1[52], '-');
	assert_string_equal(t1 + 52, "-00");
	assert_int_equal(strspn(t1 + 3, "0123456789abcdef"), 32);
	assert_int_equal(strspn(t1 + 36, "0123456789abcdef"), 16);
	assert_string_not_equal(t1, t2);
	assert_int_equal(hbone_traceparent(t1, 55), -ENOSPC);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_keying, setup),
		cmocka_unit_test_setup(test_stream_limit, setup),
		cmocka_unit_test_setup(test_shared_in_progress, setup),
		cmocka_unit_test_setup(test_waiters_over_peer_limit, setup),
		cmocka_unit_test_setup(test_idle_release, setup),
		cmocka_unit_test_setup(test_failure_fan_out, setup),
		cmocka_unit_test_setup(test_close_while_waiting, setup),
		cmocka_unit_test(test_headers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
