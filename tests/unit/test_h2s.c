/* Unit tests for src/h2s.c: a client and a server session back to back over
 * a socketpair with raw conns, in one loop. Stream owners here are small
 * state machines (an echo server, a sender/reader client) that use the
 * stream conns exactly as flow.c does: conn_arm, ready callbacks, ops. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "h2s.h"

static struct ev_loop *loop;

/* One stream's owner. */
struct ep {
	struct conn c;		/* the stream, moved here */
	uint8_t *in;		/* what was read */
	size_t inlen, incap;
	const uint8_t *out;	/* what to send */
	size_t outlen, outoff;
	bool echo;		/* server: send back what is read */
	bool paused;		/* do not read */
	bool shut_after;	/* shutdown_wr once out is sent */
	bool shut_done, eof, hs, closed;
	int hs_rc, err, hups;
	int status;		/* server: answer with this */
};

struct side {
	struct conn t;
	struct h2s *s;
	bool closed;
	int end_err;		/* h2s_end_error() in closed() */
	struct ep eps[128];
	int neps;
	int status;		/* the server's answer */
	bool pause;		/* server eps start paused */
	bool no_echo;
	char last_auth[64];
};

static void ep_arm(struct ep *e);

static void
ep_pump(struct ep *e)
{
	uint8_t buf[65536];

	for (int i = 0; i < 64 && !e->paused && !e->eof && conn_open(&e->c); i++) {
		ssize_t n = e->c.ops->recv(&e->c, buf, sizeof(buf));
		if (n == -EAGAIN)
			break;
		if (n < 0) {
			e->err = (int)n;
			conn_close(&e->c, CONN_ABORT);
			e->closed = true;
			return;
		}
		if (n == 0) {
			e->eof = true;
			break;
		}
		if (e->echo) {
			/* Echo: everything read is queued to go back. */
			if (e->inlen + (size_t)n > e->incap) {
				e->incap = (e->inlen + (size_t)n) * 2;
				e->in = realloc(e->in, e->incap);
			}
			memcpy(e->in + e->inlen, buf, (size_t)n);
			e->inlen += (size_t)n;
			e->out = e->in;
			e->outlen = e->inlen;
		} else {
			if (e->inlen + (size_t)n > e->incap) {
				e->incap = (e->inlen + (size_t)n) * 2;
				e->in = realloc(e->in, e->incap);
			}
			memcpy(e->in + e->inlen, buf, (size_t)n);
			e->inlen += (size_t)n;
		}
	}
	while (conn_open(&e->c) && e->outoff < e->outlen) {
		ssize_t n = e->c.ops->send(&e->c, e->out + e->outoff, e->outlen - e->outoff);
		if (n == -EAGAIN)
			break;
		if (n < 0) {
			e->err = (int)n;
			break;
		}
		e->outoff += (size_t)n;
	}
	bool shut = (e->shut_after && e->outoff == e->outlen) || (e->echo && e->eof && e->outoff == e->outlen);
	if (conn_open(&e->c) && shut && !e->shut_done) {
		assert_int_equal(e->c.ops->shutdown_wr(&e->c), 0);
		e->shut_done = true;
	}
	if (conn_open(&e->c) && e->eof && e->shut_done && e->c.ops->unsent(&e->c) == 0 && e->echo) {
		conn_close(&e->c, CONN_GRACEFUL);
		e->closed = true;
	}
}

static void
ep_ready(struct conn *c, int what)
{
	struct ep *e = c->owner;

	if (what & CONN_HUP) {
		e->hups++;
		e->err = c->ops->error(c);
	}
	if (what & CONN_HS) {
		e->hs_rc = c->ops->handshake(c);
		if (e->hs_rc == -EAGAIN)
			goto arm;
		e->status = h2s_status(c);
		e->hs = true;
		if (e->hs_rc < 0) {
			conn_close(c, CONN_GRACEFUL);
			e->closed = true;
			return;
		}
	}
	if (!e->hs)
		goto arm;
	ep_pump(e);
arm:
	ep_arm(e);
}

static void
ep_arm(struct ep *e)
{
	if (!conn_open(&e->c))
		return;
	if (!e->hs) {
		conn_arm(&e->c, CONN_HS);
		return;
	}
	conn_arm(&e->c, (e->paused || e->eof ? 0 : CONN_RD) | (e->outoff < e->outlen ? CONN_WR : 0));
}

static void
srv_request(struct h2s *s, void *ud, struct conn *stream, const struct h2s_req *req)
{
	struct side *sd = ud;
	struct ep *e = &sd->eps[sd->neps++];

	snprintf(sd->last_auth, sizeof(sd->last_auth), "%s", req->authority);
	h2s_stream_move(&e->c, stream);
	e->c.ready = ep_ready;
	e->c.owner = e;
	e->echo = !sd->no_echo;
	e->paused = sd->pause;
	e->hs = true;
	int status = strcmp(req->method, "CONNECT") || req->has_scheme_or_path ? 400 : sd->status;
	assert_int_equal(h2s_respond(&e->c, status, NULL, 0), 0);
	if (status != 200) {
		conn_close(&e->c, CONN_GRACEFUL);
		e->closed = true;
		return;
	}
	ep_arm(e);
}

static void
side_closed(struct h2s *s, void *ud)
{
	struct side *sd = ud;

	sd->closed = true;
	sd->end_err = h2s_end_error(s);
	sd->s = NULL;
}

static const struct h2s_handler srv_h = { .request = srv_request, .closed = side_closed };
static const struct h2s_handler cli_h = { .closed = side_closed };

static struct side *srv, *cli;

static int
setup(void **state)
{
	int sv[2];

	loop = ev_loop_new(EVFLAG_AUTO);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	srv = calloc(1, sizeof(*srv));
	cli = calloc(1, sizeof(*cli));
	srv->status = 200;
	conn_init(&srv->t, loop, sv[0], &raw_ops, NULL, NULL, -1);
	conn_init(&cli->t, loop, sv[1], &raw_ops, NULL, NULL, -1);
	srv->s = h2s_server_new(NULL, &srv->t, &h2s_server_defaults, &srv_h, srv);
	cli->s = h2s_client_new(NULL, &cli->t, &h2s_client_defaults, &cli_h, cli);
	assert_non_null(srv->s);
	assert_non_null(cli->s);
	return 0;
}

static void
free_side(struct side *sd)
{
	for (int i = 0; i < sd->neps; i++) {
		if (conn_open(&sd->eps[i].c))
			conn_close(&sd->eps[i].c, CONN_ABORT);
		free(sd->eps[i].in);
	}
	if (sd->s)
		h2s_close(sd->s, CONN_ABORT);
	free(sd);
}

static int
teardown(void **state)
{
	free_side(cli);
	free_side(srv);
	ev_run(loop, EVRUN_NOWAIT);
	ev_loop_destroy(loop);
	return 0;
}

/* Run the loop until cond holds, at most secs seconds; the caller asserts. */
#define RUN_UNTIL(cond, secs) do { \
	ev_tstamp _end = ev_time() + (secs); \
	while (!(cond) && ev_time() < _end) \
		ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT); \
} while (0)

static struct ep *
open_stream(const char *auth, const uint8_t *out, size_t len, bool shut)
{
	struct ep *e = &cli->eps[cli->neps++];
	struct conn *c = h2s_connect(cli->s, auth, NULL, 0);

	assert_non_null(c);
	h2s_stream_move(&e->c, c);
	e->c.ready = ep_ready;
	e->c.owner = e;
	e->out = out;
	e->outlen = len;
	e->shut_after = shut;
	ep_arm(e);
	return e;
}

static uint8_t *
pattern(size_t n, unsigned seed)
{
	uint8_t *p = malloc(n);

	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((i * 131 + seed) >> 3);
	return p;
}

static void
test_connect_echo_half_close(void **state)
{
	size_t n = getenv("H2S_N") ? strtoul(getenv("H2S_N"), 0, 0) : 3u << 20;
	uint8_t *data = pattern(n, 7);
	struct ep *e = open_stream("10.1.2.3:8080", data, n, true);

	RUN_UNTIL(e->eof, 20);
	assert_true(e->hs);
	assert_int_equal(e->hs_rc, 0);
	assert_int_equal(e->status, 200);
	assert_string_equal(srv->last_auth, "10.1.2.3:8080");
	assert_true(e->eof);
	assert_int_equal(e->inlen, n);
	assert_memory_equal(e->in, data, n);
	/* The server's side saw our END_STREAM as end of stream, and ended its. */
	assert_int_equal(srv->neps, 1);
	assert_true(srv->eps[0].eof);
	assert_true(srv->eps[0].closed);
	assert_int_equal(e->err, 0);
	conn_close(&e->c, CONN_GRACEFUL);
	RUN_UNTIL(h2s_streams(cli->s) == 0 && h2s_streams(srv->s) == 0, 5);
	assert_int_equal(h2s_streams(cli->s), 0);
	assert_int_equal(h2s_streams(srv->s), 0);
	free(data);
}

static void
test_error_status(void **state)
{
	srv->status = 503;
	struct ep *e = open_stream("10.1.2.3:1", NULL, 0, false);

	RUN_UNTIL(e->hs, 5);
	assert_true(e->hs);
	assert_int_equal(e->hs_rc, -ECONNREFUSED);
	assert_int_equal(e->status, 503);
	RUN_UNTIL(h2s_streams(srv->s) == 0, 5);
	assert_int_equal(h2s_streams(srv->s), 0);
}

/* A reader that stops: the sender's window closes, its sends fail with
 * EAGAIN, and what the server holds stays within the stream window. */
static void
test_back_pressure(void **state)
{
	size_t n = 32u << 20;
	uint8_t *data = pattern(n, 3);

	srv->pause = true;
	srv->no_echo = true;
	struct ep *e = open_stream("10.1.2.3:8080", data, n, true);

	RUN_UNTIL(srv->neps == 1 && srv->eps[0].c.ops && srv->eps[0].c.ops->pending(&srv->eps[0].c) >=
	    h2s_server_defaults.stream_window - 65536, 10);
	assert_int_equal(srv->neps, 1);
	struct ep *se = &srv->eps[0];
	/* Let it settle: nothing more may come in. */
	for (int i = 0; i < 50; i++)
		ev_run(loop, EVRUN_NOWAIT);
	size_t held = se->c.ops->pending(&se->c);
	assert_true(held <= h2s_server_defaults.stream_window);
	assert_true(held >= h2s_server_defaults.stream_window - 65536);
	/* The sender is stuck well short of the whole. */
	assert_true(e->outoff < n);
	assert_true(e->outoff <= h2s_server_defaults.stream_window + (2u << 20));
	/* Reading again lets everything through. */
	se->paused = false;
	ep_arm(se);
	RUN_UNTIL(se->eof, 30);
	assert_true(se->eof);
	assert_int_equal(se->inlen, n);
	assert_memory_equal(se->in, data, n);
	free(data);
}

static void
test_rst_stream(void **state)
{
	static const uint8_t hello[] = "hello";

	srv->no_echo = true;
	struct ep *e = open_stream("10.1.2.3:8080", hello, 5, false);

	RUN_UNTIL(srv->neps == 1 && srv->eps[0].inlen == 5, 5);
	assert_int_equal(srv->eps[0].inlen, 5);
	conn_close(&e->c, CONN_ABORT);
	struct ep *se = &srv->eps[0];
	RUN_UNTIL(se->closed, 5);
	assert_true(se->closed);
	assert_int_equal(se->err, -ECONNRESET);
	assert_false(se->eof);
	/* The session lives on. */
	assert_false(srv->closed);
	assert_false(cli->closed);
}

/* The server resets while the client is not reading: its owner hears it. */
static void
test_rst_while_unwatched(void **state)
{
	srv->no_echo = true;
	struct ep *e = open_stream("10.1.2.3:8080", NULL, 0, false);

	RUN_UNTIL(srv->neps == 1 && e->hs, 5);
	e->paused = true;
	ep_arm(e);
	conn_close(&srv->eps[0].c, CONN_ABORT);
	RUN_UNTIL(e->hups > 0, 5);
	assert_int_equal(e->hups, 1);
	assert_int_equal(e->err, -ECONNRESET);
}

static void
test_100_streams(void **state)
{
	uint8_t *data[100];

	for (int i = 0; i < 100; i++) {
		data[i] = pattern(20000 + (size_t)i * 100, (unsigned)i);
		open_stream("[fd00::1]:80", data[i], 20000 + (size_t)i * 100, true);
	}
	assert_int_equal(h2s_streams(cli->s), 100);
	assert_false(h2s_can_open(cli->s));
	int done = 0;
	ev_tstamp end = ev_time() + 30;
	while (done < 100 && ev_time() < end) {
		ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
		done = 0;
		for (int i = 0; i < 100; i++)
			done += cli->eps[i].eof;
	}
	assert_int_equal(done, 100);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(cli->eps[i].inlen, 20000 + (size_t)i * 100);
		assert_memory_equal(cli->eps[i].in, data[i], cli->eps[i].inlen);
		free(data[i]);
	}
	assert_int_equal(srv->neps, 100);
}

/* Garbage after the preface ends that session only; another one goes on. */
/* A frame larger than our SETTINGS_MAX_FRAME_SIZE on stream 0: nghttp2 sends
 * GOAWAY FRAME_SIZE_ERROR and ends the session by itself (mem_recv does not
 * fail). It is a protocol error all the same (hbone_cx_protocol_error). */
static void
test_oversized_frame_is_a_protocol_error(void **state)
{
	int sv[2];
	struct side *bad = calloc(1, sizeof(*bad));
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	static const uint8_t settings[] = { 0, 0, 0, 4, 0, 0, 0, 0, 0 };
	uint8_t junk[9 + 512] = { 0xff, 0xff, 0xff, 0 /* DATA */, 0, 0, 0, 0, 0 };

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	conn_init(&bad->t, loop, sv[0], &raw_ops, NULL, NULL, -1);
	bad->status = 200;
	bad->s = h2s_server_new(NULL, &bad->t, &h2s_server_defaults, &srv_h, bad);
	assert_non_null(bad->s);
	assert_int_equal(write(sv[1], preface, strlen(preface)), (ssize_t)strlen(preface));
	assert_int_equal(write(sv[1], settings, sizeof(settings)), (ssize_t)sizeof(settings));
	assert_int_equal(write(sv[1], junk, sizeof(junk)), (ssize_t)sizeof(junk));
	RUN_UNTIL(bad->closed, 5);
	assert_true(bad->closed);
	assert_int_equal(bad->end_err, -EPROTO);
	close(sv[1]);
	free(bad);
}

static void
test_garbage_kills_only_its_session(void **state)
{
	int sv[2];
	struct side *bad = calloc(1, sizeof(*bad));
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	static const uint8_t junk[] = { 0, 0, 4, 0xfe, 0xff, 0, 0, 0, 1, 'x', 'x', 'x', 'x',
		0, 0, 8, 6, 0, 0, 0, 0, 3 /* PING on stream 3 */, 1, 2, 3, 4, 5, 6, 7, 8 };

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	conn_init(&bad->t, loop, sv[0], &raw_ops, NULL, NULL, -1);
	bad->status = 200;
	bad->s = h2s_server_new(NULL, &bad->t, &h2s_server_defaults, &srv_h, bad);
	assert_non_null(bad->s);
	assert_int_equal(write(sv[1], preface, strlen(preface)), (ssize_t)strlen(preface));
	/* An empty SETTINGS, then an unknown frame type (ignored), then a PING on
	 * a stream: a connection error. */
	static const uint8_t settings[] = { 0, 0, 0, 4, 0, 0, 0, 0, 0 };
	assert_int_equal(write(sv[1], settings, sizeof(settings)), (ssize_t)sizeof(settings));
	assert_int_equal(write(sv[1], junk, sizeof(junk)), (ssize_t)sizeof(junk));
	RUN_UNTIL(bad->closed, 5);
	assert_true(bad->closed);
	assert_int_equal(bad->end_err, -EPROTO);
	/* It got a GOAWAY (type 7) before the close. */
	uint8_t buf[4096];
	ssize_t n = read(sv[1], buf, sizeof(buf));
	bool goaway = false;
	for (ssize_t off = 0; n > 0 && off + 9 <= n;) {
		size_t len = (size_t)buf[off] << 16 | (size_t)buf[off + 1] << 8 | buf[off + 2];
		if (buf[off + 3] == 7)
			goaway = true;
		off += 9 + (ssize_t)len;
	}
	assert_true(goaway);
	close(sv[1]);
	free(bad);
	/* The other session still works. */
	static const uint8_t ping[] = "ping";
	struct ep *e = open_stream("10.1.2.3:8080", ping, 4, true);
	RUN_UNTIL(e->eof, 5);
	assert_int_equal(e->inlen, 4);
	assert_false(srv->closed);
}

/* A peer flooding PINGs is cut off; its sessions' streams see a reset. */
static void
test_ping_flood(void **state)
{
	int sv[2];
	struct side *bad = calloc(1, sizeof(*bad));
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	static const uint8_t settings[] = { 0, 0, 0, 4, 0, 0, 0, 0, 0 };
	uint8_t ping[17] = { 0, 0, 8, 6, 0, 0, 0, 0, 0 };

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	conn_init(&bad->t, loop, sv[0], &raw_ops, NULL, NULL, -1);
	bad->s = h2s_server_new(NULL, &bad->t, &h2s_server_defaults, &srv_h, bad);
	assert_int_equal(write(sv[1], preface, strlen(preface)), (ssize_t)strlen(preface));
	assert_int_equal(write(sv[1], settings, sizeof(settings)), (ssize_t)sizeof(settings));
	uint8_t sink[65536];
	for (int i = 0; i < 5000 && !bad->closed; i++) {
		if (write(sv[1], ping, sizeof(ping)) < 0)
			break;
		while (read(sv[1], sink, sizeof(sink)) > 0)
			;
		ev_run(loop, EVRUN_NOWAIT);
	}
	RUN_UNTIL(bad->closed, 5);
	assert_true(bad->closed);
	assert_int_equal(bad->end_err, -EPROTO);
	close(sv[1]);
	free(bad);
}

/* Streams closed with bytes unread give them back to the connection's
 * window: 12 streams of 2 MiB each, never read and then reset, exceed the
 * 16 MiB connection window; a stream after them must still get through. */
static void
test_conn_window_returned(void **state)
{
	size_t n = 2u << 20;
	uint8_t *data = pattern(n, 5);

	srv->pause = true;
	srv->no_echo = true;
	for (int i = 0; i < 12; i++) {
		struct ep *e = open_stream("10.1.2.3:8080", data, n, false);
		RUN_UNTIL(srv->neps == i + 1 && srv->eps[i].c.ops && srv->eps[i].c.ops->pending(&srv->eps[i].c) == n, 10);
		assert_int_equal(srv->eps[i].c.ops->pending(&srv->eps[i].c), n);
		conn_close(&srv->eps[i].c, CONN_ABORT);
		srv->eps[i].closed = true;
		RUN_UNTIL(e->closed || e->hups, 5);
		if (conn_open(&e->c))
			conn_close(&e->c, CONN_ABORT);
	}
	srv->pause = false;
	srv->no_echo = false;
	struct ep *e = open_stream("10.1.2.3:8080", data, n, true);
	RUN_UNTIL(e->eof, 20);
	assert_true(e->eof);
	assert_int_equal(e->inlen, n);
	assert_memory_equal(e->in, data, n);
	free(data);
}

/* GOAWAY (graceful): no new stream, the open one finishes, then the end. */
static void
test_goaway_graceful(void **state)
{
	size_t n = 1u << 20;
	uint8_t *data = pattern(n, 9);
	struct ep *e = open_stream("10.1.2.3:8080", data, n, true);

	RUN_UNTIL(srv->neps == 1, 5);
	h2s_close(srv->s, CONN_GRACEFUL);
	RUN_UNTIL(e->eof && cli->closed && srv->closed, 20);
	assert_true(e->eof);
	assert_int_equal(e->inlen, n);
	assert_memory_equal(e->in, data, n);
	assert_true(srv->closed);
	assert_true(cli->closed);
	assert_int_equal(srv->end_err, 0);
	assert_int_equal(cli->end_err, 0);
	free(data);
}

/* A request whose header list passes the server's limit (64 KiB) is refused
 * (that stream only: nghttp2 enforces our SETTINGS_MAX_HEADER_LIST_SIZE, and
 * on_header checks it too): the session goes on. */
static void
test_header_list_limit(void **state)
{
	char *big = malloc(70000);
	struct ep *e = &cli->eps[cli->neps++];

	memset(big, 'a', 69999);
	big[69999] = 0;
	struct h2s_hdr h[] = { { "x-big", big } };
	struct conn *c = h2s_connect(cli->s, "10.1.2.3:8080", h, 1);
	assert_non_null(c);
	h2s_stream_move(&e->c, c);
	e->c.ready = ep_ready;
	e->c.owner = e;
	ep_arm(e);
	RUN_UNTIL(e->hs, 5);
	assert_true(e->hs);
	assert_int_equal(e->hs_rc, -ECONNREFUSED);
	assert_int_equal(srv->neps, 0);
	free(big);
	static const uint8_t ok[] = "ok";
	e = open_stream("10.1.2.3:8080", ok, 2, true);
	RUN_UNTIL(e->eof, 5);
	assert_int_equal(e->inlen, 2);
	assert_false(srv->closed);
}

static int unmoved_hs;

static void
unmoved_ready(struct conn *c, int what)
{
	if (what & CONN_HS)
		unmoved_hs = c->ops->handshake(c);
	if (unmoved_hs == -EAGAIN)
		conn_arm(c, CONN_HS);
}

/* A stream conn used where h2s_connect returned it (never moved) and closed
 * after its stream ended: conn_close() writes to it after ops->close, so
 * the stream must not be freed under it (ASan: heap-use-after-free). */
static void
test_close_unmoved_after_end(void **state)
{
	srv->status = 503;
	struct conn *c = h2s_connect(cli->s, "10.1.2.3:1", NULL, 0);

	assert_non_null(c);
	unmoved_hs = -EAGAIN;
	c->ready = unmoved_ready;
	conn_arm(c, CONN_HS);
	RUN_UNTIL(unmoved_hs != -EAGAIN && h2s_streams(srv->s) == 0, 5);
	assert_int_equal(unmoved_hs, -ECONNREFUSED);
	for (int i = 0; i < 20; i++)
		ev_run(loop, EVRUN_NOWAIT);
	conn_close(c, CONN_GRACEFUL);
	assert_false(conn_open(c));
	ev_run(loop, EVRUN_NOWAIT);
	assert_int_equal(h2s_streams(cli->s), 0);
}

/* Keep-alive (server): a peer that answers PINGs keeps its session while
 * idle; one that stops answering loses it within the timeout. */
static void
test_keepalive(void **state)
{
	ev_tstamp iv = h2s_ka_interval, to = h2s_ka_timeout;
	int sv[2];
	struct side *mute = calloc(1, sizeof(*mute));
	static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	static const uint8_t settings[] = { 0, 0, 0, 4, 0, 0, 0, 0, 0 };

	/* The fixture's pair started with the long defaults: a new pair here. */
	h2s_ka_interval = 0.1;
	h2s_ka_timeout = 0.3;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	conn_init(&mute->t, loop, sv[0], &raw_ops, NULL, NULL, -1);
	mute->s = h2s_server_new(NULL, &mute->t, &h2s_server_defaults, &srv_h, mute);
	assert_int_equal(write(sv[1], preface, strlen(preface)), (ssize_t)strlen(preface));
	assert_int_equal(write(sv[1], settings, sizeof(settings)), (ssize_t)sizeof(settings));

	int lv[2];
	struct side *ls = calloc(1, sizeof(*ls)), *lc = calloc(1, sizeof(*lc));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, lv), 0);
	conn_init(&ls->t, loop, lv[0], &raw_ops, NULL, NULL, -1);
	conn_init(&lc->t, loop, lv[1], &raw_ops, NULL, NULL, -1);
	ls->s = h2s_server_new(NULL, &ls->t, &h2s_server_defaults, &srv_h, ls);
	lc->s = h2s_client_new(NULL, &lc->t, &h2s_client_defaults, &cli_h, lc);

	RUN_UNTIL(mute->closed, 3);
	assert_true(mute->closed);
	assert_int_equal(mute->end_err, -ETIMEDOUT);
	assert_false(ls->closed);
	assert_false(lc->closed);
	/* The live pair went through several PINGs meanwhile. */
	RUN_UNTIL(false, 0.5);
	assert_false(ls->closed);
	assert_false(lc->closed);
	h2s_ka_interval = iv;
	h2s_ka_timeout = to;
	close(sv[1]);
	free(mute);
	free_side(lc);
	free_side(ls);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_connect_echo_half_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_back_pressure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rst_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rst_while_unwatched, setup, teardown),
		cmocka_unit_test_setup_teardown(test_100_streams, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_kills_only_its_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_frame_is_a_protocol_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ping_flood, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conn_window_returned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_goaway_graceful, setup, teardown),
		cmocka_unit_test_setup_teardown(test_header_list_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_unmoved_after_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
