/* Fuzz target: the HBONE server's front end, what anyone with a mesh
 * certificate can send after the TLS handshake on 15008: HTTP/2 frames
 * (after the client preface, which the target sends first) into a server
 * session (src/h2s.c) over a fake transport, and each request through the
 * server's checks (CONNECT, hbone_authority_parse). Streams answered 200
 * echo a little and end when the peer ends. The first input byte sets how
 * the bytes are cut into reads. Besides not crashing or leaking: every
 * stream the handler took is closed by the end, and the session ends. */
#include "autoconfig.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "h2s.h"
#include "hbone.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct fake {
	const uint8_t *d;
	size_t n, off, chunk;
	bool closed;
};

static ssize_t
f_recv(struct conn *c, void *buf, size_t len)
{
	struct fake *f = c->tx;
	size_t k = f->n - f->off;

	if (k == 0)
		return 0;
	if (k > len)
		k = len;
	if (k > f->chunk)
		k = f->chunk;
	memcpy(buf, f->d + f->off, k);
	f->off += k;
	return (ssize_t)k;
}

static ssize_t f_send(struct conn *c, const void *buf, size_t len) { return (ssize_t)len; }
static int f_zero(struct conn *c) { return 0; }
static int f_want(struct conn *c, int what) { return 0; }
static size_t f_pending(struct conn *c) { struct fake *f = c->tx; return f->n - f->off; }
static size_t f_unsent(struct conn *c) { return 0; }
static void f_close(struct conn *c, enum conn_close how) { ((struct fake *)c->tx)->closed = true; }

static const struct conn_ops fake_ops = {
	.name = "fake", .handshake = f_zero, .recv = f_recv, .send = f_send, .shutdown_wr = f_zero,
	.want = f_want, .pending = f_pending, .unsent = f_unsent, .error = f_zero, .close = f_close,
};

#define MAX_STREAMS 256

struct owner {
	struct conn c;
	bool used;
};

static struct owner owners[MAX_STREAMS];
static int taken, closed_streams;
static bool session_over;

static void
own_close(struct owner *o, enum conn_close how)
{
	conn_close(&o->c, how);
	o->used = false;
	closed_streams++;
}

static void
own_ready(struct conn *c, int what)
{
	struct owner *o = c->owner;
	uint8_t buf[4096];

	for (int i = 0; i < 64; i++) {
		ssize_t n = c->ops->recv(c, buf, sizeof(buf));
		if (n == -EAGAIN)
			break;
		if (n < 0) {
			own_close(o, CONN_ABORT);
			return;
		}
		if (n == 0) {
			(void)c->ops->shutdown_wr(c);
			own_close(o, CONN_GRACEFUL);
			return;
		}
		(void)c->ops->send(c, buf, (size_t)n < 100 ? (size_t)n : 100);
	}
	conn_arm(c, CONN_RD);
}

static void
on_request(struct h2s *s, void *ud, struct conn *stream, const struct h2s_req *req)
{
	struct sockaddr_storage dst;
	struct owner *o = NULL;

	taken++;
	for (int i = 0; i < MAX_STREAMS && !o; i++)
		if (!owners[i].used)
			o = &owners[i];
	bool ok = o && strcmp(req->method, "CONNECT") == 0 && !req->has_scheme_or_path &&
	    hbone_authority_parse(req->authority, strlen(req->authority), &dst) == 0;
	for (size_t i = 0; i < req->nhdrs; i++)
		if (!req->hdrs[i].name || !req->hdrs[i].value)
			__builtin_trap();
	if (!ok) {
		(void)h2s_respond(stream, 400, NULL, 0);
		conn_close(stream, CONN_GRACEFUL);
		closed_streams++;
		return;
	}
	o->used = true;
	h2s_stream_move(&o->c, stream);
	o->c.ready = own_ready;
	o->c.owner = o;
	if (h2s_respond(&o->c, 200, NULL, 0) < 0) {
		own_close(o, CONN_ABORT);
		return;
	}
	conn_arm(&o->c, CONN_RD);
}

static void
on_closed(struct h2s *s, void *ud)
{
	session_over = true;
}

static const struct h2s_handler handler = { .request = on_request, .closed = on_closed };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ev_loop *loop;
	struct fake f;
	struct conn t;
	uint8_t *in;

	if (size < 1 || size > 1 << 20)
		return 0;
	if (!loop)
		loop = ev_loop_new(EVFLAG_AUTO);
	if (!(in = malloc(sizeof(preface) - 1 + size - 1)))
		return 0;
	memcpy(in, preface, sizeof(preface) - 1);
	memcpy(in + sizeof(preface) - 1, data + 1, size - 1);
	f = (struct fake){ .d = in, .n = sizeof(preface) - 1 + size - 1, .chunk = 1 + data[0] * 61u };
	conn_init(&t, loop, -1, &fake_ops, NULL, NULL, -1);
	t.tx = &f;
	taken = closed_streams = 0;
	session_over = false;
	struct h2s *s = h2s_server_new(NULL, &t, &h2s_server_defaults, &handler, NULL);
	if (!s) {
		free(in);
		return 0;
	}
	conn_arm(&t, CONN_RD);
	for (int i = 0; i < 100000 && !session_over; i++)
		ev_run(loop, EVRUN_NOWAIT);
	if (!session_over)
		h2s_close(s, CONN_ABORT);
	/* Streams still held (the session's end told their owners): closed now. */
	for (int i = 0; i < MAX_STREAMS; i++)
		if (owners[i].used)
			own_close(&owners[i], CONN_ABORT);
	ev_run(loop, EVRUN_NOWAIT);
	if (!session_over || !f.closed || closed_streams != taken)
		__builtin_trap();
	free(in);
	return 0;
}
