/* grpc: a gRPC client over one HTTP/2 connection per channel (nghttp2,
 * client session, prior knowledge) on the control thread's loop. The
 * transport is a conn: raw TCP, a Unix socket, or TLS (xtls) on TCP. The
 * response side (de-framing, status and trailers) is pure functions at the
 * end of this file, so the unit tests and fuzz_grpc reach them directly. */
#include "autoconfig.h"

#include <ctype.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "conn.h"
#include "grpc.h"
#include "log.h"
#include "sock.h"
#include "xtls.h"

struct grpc_stats grpc_stats;

/* Our receive windows. A stream's is 1 MiB and the connection's 4 MiB;
 * nghttp2 sends WINDOW_UPDATE as we consume (we consume as DATA arrives:
 * every byte goes into the de-framer at once), so a long-lived stream (xDS,
 * SDS) never stalls. Memory stays bounded by max_message per call. */
#define STREAM_WINDOW (1 << 20)
#define CONN_WINDOW (4 << 20)
#define CONNECT_TIMEOUT_S 5.0
#define KEEPALIVE_S 30.0
#define KEEPALIVE_TIMEOUT_S 10.0
#define GRPC_MAX_ADDRS 8

enum chan_state {
	CH_IDLE,	/* no connection; the next call connects */
	CH_CONNECTING,	/* TCP connect and TLS handshake in progress */
	CH_READY,	/* HTTP/2 running */
};

struct grpc_call {
	struct grpc_chan *ch;
	struct grpc_call *next, **pprev;	/* the channel's list */
	int32_t stream_id;
	const struct grpc_handler *h;
	void *ud;
	ev_timer deadline;
	/* Request bytes (framed) not yet taken by nghttp2, and the half-close. */
	uint8_t *out;
	size_t out_len, out_off, out_cap;
	bool last_queued;	/* the half-close follows out */
	bool deferred;		/* the data provider said DEFERRED: resume on send */
	bool over;		/* done was called (or will never be): no more callbacks */
	struct grpc_resp resp;
	struct grpc_deframer df;
	int fail_status;	/* a local failure (size, bad frame), -1 none */
	char fail_msg[256];
};

struct grpc_chan {
	struct ev_loop *loop;
	char *address, *verify_name, *authority;
	SSL_CTX *tls;
	double connect_timeout_s;
	double keepalive_s;	/* 0: off */
	size_t max_message;

	enum chan_state state;
	struct conn conn;
	nghttp2_session *sess;
	ev_timer connect_timer;
	ev_timer kick;		/* pump at the next loop turn (chan_kick) */
	ev_timer keepalive;	/* see grpc_target.keepalive_s */
	ev_tstamp last_rx;	/* when bytes last arrived */
	bool ping_out;		/* a keepalive PING awaits any answer */
	char connect_err[160];	/* why the last synchronous connect failed */
	struct sockaddr_storage addrs[GRPC_MAX_ADDRS];	/* resolved, in order */
	int naddrs, next_addr;
	/* Bytes nghttp2 produced that the transport did not take yet (a TLS
	 * send that returned -EAGAIN is retried with the same bytes). */
	const uint8_t *wpend;
	size_t wpend_len;

	struct grpc_call *calls;
	int busy;		/* inside our callbacks: freeing is deferred */
	bool zombie;		/* grpc_chan_free() was called while busy */
};

static void chan_fail(struct grpc_chan *ch, int status, const char *why);
static void chan_pump(struct grpc_chan *ch);
static void chan_free_now(struct grpc_chan *ch);
static int chan_open_next(struct grpc_chan *ch);

/* Every entry from the loop (socket, timers) holds ch->busy while it runs
 * callbacks and ends here: a channel freed by a callback is freed now, else
 * what the callbacks queued is sent. */
static void
chan_leave(struct grpc_chan *ch)
{
	if (--ch->busy > 0)
		return;
	if (!ch->zombie) {
		ch->busy++;
		chan_pump(ch);
		ch->busy--;
	}
	if (ch->zombie)
		chan_free_now(ch);
}

/* The API (start, send, cancel) never sends from under its caller: a send
 * that fails would call done inside grpc_call_start. It kicks a zero timer
 * that pumps at the next loop turn. */
static void
kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct grpc_chan *ch = w->data;

	(void)loop, (void)revents;
	ch->busy++;
	chan_leave(ch);
}

static void
chan_kick(struct grpc_chan *ch)
{
	if (!ch->busy && !ev_is_active(&ch->kick))
		ev_timer_start(ch->loop, &ch->kick);
}

/* --- calls ----------------------------------------------------------------- */

static void
call_unlink_free(struct grpc_call *call)
{
	if (call->pprev) {
		*call->pprev = call->next;
		if (call->next)
			call->next->pprev = call->pprev;
	}
	ev_timer_stop(call->ch->loop, &call->deadline);
	grpc_deframer_free(&call->df);
	free(call->out);
	free(call);
}

/* Ends the call for its owner: done once, then no more callbacks. */
static void
call_finish(struct grpc_call *call, int status, const char *msg)
{
	if (call->over)
		return;
	call->over = true;
	ev_timer_stop(call->ch->loop, &call->deadline);
	if (status != GRPC_OK)
		grpc_stats.calls_failed++;
	if (call->h->done && !call->ch->zombie)
		call->h->done(call, call->ud, status, msg ? msg : "");
}

static void
deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct grpc_call *call = w->data;
	struct grpc_chan *ch = call->ch;

	(void)loop, (void)revents;
	ch->busy++;
	if (call->stream_id <= 0) {
		/* A call that never got a stream (no connection, or cancelled):
		 * its failure is told here, a loop turn after grpc_call_start. */
		call_finish(call, call->fail_status >= 0 ? call->fail_status : GRPC_UNAVAILABLE, call->fail_msg);
		call_unlink_free(call);
	} else {
		call_finish(call, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
		if (ch->sess)
			nghttp2_submit_rst_stream(ch->sess, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
	}
	chan_leave(ch);
}

/* The request body: what grpc_call_send queued. */
static ssize_t
read_body(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
    nghttp2_data_source *src, void *user)
{
	struct grpc_call *call = src->ptr;
	size_t n = call->out_len - call->out_off;

	(void)s, (void)sid, (void)user;
	if (n > len)
		n = len;
	memcpy(buf, call->out + call->out_off, n);
	call->out_off += n;
	if (call->out_off == call->out_len) {
		call->out_off = call->out_len = 0;
		if (call->last_queued)
			*flags |= NGHTTP2_DATA_FLAG_EOF;
		else if (n == 0) {
			call->deferred = true;
			return NGHTTP2_ERR_DEFERRED;
		}
	}
	return (ssize_t)n;
}

static void
fmt_timeout(char *buf, size_t len, double s)
{
	/* grpc-timeout: at most 8 digits and a unit; milliseconds while they fit. */
	unsigned long long ms = (unsigned long long)(s * 1000.0 + 0.5);
	if (ms == 0)
		ms = 1;
	if (ms <= 99999999ULL)
		snprintf(buf, len, "%llum", ms);
	else
		snprintf(buf, len, "%lluS", ms / 1000 > 99999999ULL ? 99999999ULL : ms / 1000);
}

#define NV(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE }

static int
chan_connect(struct grpc_chan *ch);

struct grpc_call *
grpc_call_start(struct grpc_chan *ch, const char *path, const struct grpc_md *md, size_t nmd,
    double deadline_s, const struct grpc_handler *h, void *ud)
{
	struct grpc_call *call;
	nghttp2_nv *nv = NULL;
	char timeout[32];
	size_t n = 0;
	int rc;

	if (ch->state == CH_IDLE && (rc = chan_connect(ch)) < 0) {
		/* Tell the owner through done (it retries), never synchronously
		 * from inside its own call: fail at the next loop turn. */
		log_debug("grpc %s: connect: %s", ch->address, strerror(-rc));
	}
	if (!(call = calloc(1, sizeof(*call))))
		return NULL;
	call->ch = ch;
	call->h = h;
	call->ud = ud;
	call->fail_status = -1;
	grpc_resp_init(&call->resp);
	grpc_deframer_init(&call->df, ch->max_message);
	ev_timer_init(&call->deadline, deadline_cb, deadline_s > 0 ? deadline_s : 0, 0);
	call->deadline.data = call;
	if (!(nv = calloc(8 + nmd, sizeof(*nv))))
		goto oom;
	nghttp2_nv base[] = {
		NV(":method", "POST"),
		NV(":scheme", ch->tls ? "https" : "http"),
		NV(":path", path),
		NV(":authority", ch->authority),
		NV("content-type", "application/grpc"),
		NV("te", "trailers"),
		NV("user-agent", "outrigger-grpc/" PACKAGE_VERSION),
	};
	memcpy(nv, base, sizeof(base));
	n = sizeof(base) / sizeof(base[0]);
	if (deadline_s > 0) {
		fmt_timeout(timeout, sizeof(timeout), deadline_s);
		nv[n++] = (nghttp2_nv)NV("grpc-timeout", timeout);
	}
	for (size_t i = 0; i < nmd; i++)
		nv[n++] = (nghttp2_nv){ (uint8_t *)md[i].name, (uint8_t *)md[i].value,
		    strlen(md[i].name), strlen(md[i].value), NGHTTP2_NV_FLAG_NONE };
	call->next = ch->calls;
	if (ch->calls)
		ch->calls->pprev = &call->next;
	ch->calls = call;
	call->pprev = &ch->calls;
	grpc_stats.calls++;
	if (ch->sess) {
		nghttp2_data_provider dp = { .source.ptr = call, .read_callback = read_body };
		call->stream_id = nghttp2_submit_request(ch->sess, NULL, nv, n, &dp, call);
		if (call->stream_id < 0) {
			snprintf(call->fail_msg, sizeof(call->fail_msg), "cannot start the stream: %s",
			    nghttp2_strerror(call->stream_id));
			call->fail_status = GRPC_UNAVAILABLE;
		}
	} else {
		call->fail_status = GRPC_UNAVAILABLE;
		snprintf(call->fail_msg, sizeof(call->fail_msg), "cannot connect to %.90s: %.140s", ch->address,
		    ch->connect_err);
	}
	free(nv);
	if (call->fail_status >= 0) {
		/* Reported at the next loop turn, through the deadline timer. */
		ev_timer_stop(ch->loop, &call->deadline);
		ev_timer_set(&call->deadline, 0, 0);
	}
	if (call->fail_status >= 0 || deadline_s > 0)
		ev_timer_start(ch->loop, &call->deadline);
	chan_kick(ch);
	return call;
oom:
	grpc_deframer_free(&call->df);
	free(call);
	return NULL;
}

int
grpc_call_send(struct grpc_call *call, const uint8_t *msg, size_t len, bool last)
{
	struct grpc_chan *ch = call->ch;
	size_t need;

	if (call->over || call->last_queued)
		return -EPIPE;
	if (len > UINT32_MAX)
		return -EMSGSIZE;
	need = call->out_len + 5 + len;
	if (need > call->out_cap) {
		size_t cap = call->out_cap ? call->out_cap : 256;
		while (cap < need)
			cap *= 2;
		uint8_t *p = realloc(call->out, cap);
		if (!p)
			return -ENOMEM;
		call->out = p;
		call->out_cap = cap;
	}
	uint8_t *p = call->out + call->out_len;
	p[0] = 0;	/* not compressed */
	p[1] = (uint8_t)(len >> 24);
	p[2] = (uint8_t)(len >> 16);
	p[3] = (uint8_t)(len >> 8);
	p[4] = (uint8_t)len;
	if (len)
		memcpy(p + 5, msg, len);
	call->out_len = need;
	call->last_queued = last;
	if (ch->sess && call->stream_id > 0 && call->deferred) {
		call->deferred = false;
		nghttp2_session_resume_data(ch->sess, call->stream_id);
	}
	chan_kick(ch);
	return 0;
}

void
grpc_call_cancel(struct grpc_call *call)
{
	struct grpc_chan *ch = call->ch;

	call->over = true;
	ev_timer_stop(ch->loop, &call->deadline);
	if (ch->sess && call->stream_id > 0) {
		/* Freed when nghttp2 closes the stream (on_stream_close). */
		nghttp2_submit_rst_stream(ch->sess, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
		chan_kick(ch);
	} else {
		/* No stream: freed by its timer at the next loop turn (or by the
		 * teardown that is running), never under a caller's feet. */
		ev_timer_set(&call->deadline, 0, 0);
		ev_timer_start(ch->loop, &call->deadline);
	}
}

/* --- nghttp2 callbacks ------------------------------------------------------ */

static int
on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
    const uint8_t *value, size_t vlen, uint8_t flags, void *user)
{
	struct grpc_call *call = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);

	(void)flags, (void)user;
	if (!call || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (grpc_resp_header(&call->resp, name, nlen, value, vlen) < 0 && call->fail_status < 0) {
		call->fail_status = GRPC_INTERNAL;
		snprintf(call->fail_msg, sizeof(call->fail_msg), "malformed header %.*s", (int)(nlen > 40 ? 40 : nlen),
		    (const char *)name);
	}
	return 0;
}

static int
deliver(void *ud, const uint8_t *msg, size_t len)
{
	struct grpc_call *call = ud;

	if (!call->over && call->h->message && !call->ch->zombie)
		call->h->message(call, call->ud, msg, len);
	return call->over || call->ch->zombie;	/* stop feeding a cancelled call */
}

static int
on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len, void *user)
{
	struct grpc_call *call = nghttp2_session_get_stream_user_data(s, sid);
	int rc;

	(void)flags, (void)user;
	if (!call || call->over || call->fail_status >= 0)
		return 0;
	if (call->resp.http_status != 200 || !call->resp.grpc_ct)
		return 0;	/* not gRPC: the status says why at the end */
	rc = grpc_deframe(&call->df, data, len, deliver, call);
	if (rc < 0) {
		if (rc == -EMSGSIZE) {
			call->fail_status = GRPC_RESOURCE_EXHAUSTED;
			snprintf(call->fail_msg, sizeof(call->fail_msg),
			    "response message larger than %zu bytes", call->df.max);
		} else {
			call->fail_status = GRPC_INTERNAL;
			snprintf(call->fail_msg, sizeof(call->fail_msg), "%s",
			    rc == -EPROTO ? "compressed response message (no grpc-encoding was offered)" :
			    "out of memory");
		}
		call_finish(call, call->fail_status, call->fail_msg);
		nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
	}
	return 0;
}

static int
on_stream_close(nghttp2_session *s, int32_t sid, uint32_t error_code, void *user)
{
	struct grpc_call *call = nghttp2_session_get_stream_user_data(s, sid);
	char msg[256];
	int st;

	(void)user;
	if (!call)
		return 0;
	if (!call->over) {
		if (call->fail_status >= 0) {
			st = call->fail_status;
			snprintf(msg, sizeof(msg), "%s", call->fail_msg);
		} else if (call->resp.grpc_status < 0 && error_code != NGHTTP2_NO_ERROR) {
			st = grpc_status_from_h2(error_code);
			snprintf(msg, sizeof(msg), "stream reset by the server (%s)",
			    nghttp2_http2_strerror(error_code));
		} else {
			st = grpc_resp_status(&call->resp, msg, sizeof(msg));
			if (st == GRPC_OK && grpc_deframer_partial(&call->df)) {
				st = GRPC_INTERNAL;
				snprintf(msg, sizeof(msg), "the stream ended inside a message");
			}
		}
		call_finish(call, st, msg);
	}
	nghttp2_session_set_stream_user_data(s, sid, NULL);
	if (!call->ch->zombie)
		call_unlink_free(call);
	return 0;
}

static int
on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *user)
{
	struct grpc_chan *ch = user;

	(void)s;
	if (f->hd.type == NGHTTP2_GOAWAY) {
		/* The server is going away: the calls fail UNAVAILABLE and
		 * their owners retry on a new connection. */
		log_info("grpc %s: GOAWAY (%s)", ch->address,
		    nghttp2_http2_strerror(f->goaway.error_code));
		return NGHTTP2_ERR_CALLBACK_FAILURE;	/* chan_fail after mem_recv */
	}
	return 0;
}

/* --- the connection --------------------------------------------------------- */

static void
chan_teardown(struct grpc_chan *ch)
{
	ev_timer_stop(ch->loop, &ch->connect_timer);
	ev_timer_stop(ch->loop, &ch->keepalive);
	ch->ping_out = false;
	if (ch->sess) {
		nghttp2_session_del(ch->sess);
		ch->sess = NULL;
	}
	if (conn_open(&ch->conn))
		conn_close(&ch->conn, CONN_ABORT);
	ch->wpend = NULL;
	ch->wpend_len = 0;
	ch->state = CH_IDLE;
}

/* The connection failed or closed: every open call ends with status. */
static void
chan_fail(struct grpc_chan *ch, int status, const char *why)
{
	struct grpc_call *list = ch->calls, *call;

	if (ch->state == CH_CONNECTING)
		grpc_stats.connect_failures++;
	if (list)
		log_warn("grpc %s: %s", ch->address, why);
	else
		log_debug("grpc %s: %s", ch->address, why);
	/* Detach first: a done callback may start a call on a new connection. */
	ch->calls = NULL;
	if (list)
		list->pprev = &list;
	chan_teardown(ch);
	ch->busy++;
	/* One at a time from the head: a done callback may cancel another. */
	while ((call = list)) {
		list = call->next;
		if (list)
			list->pprev = &list;
		call->pprev = NULL;
		call_finish(call, status, why);
		call_unlink_free(call);
	}
	ch->busy--;
}

/* Sends what nghttp2 has and arms the conn. Runs only from chan_leave, so
 * with busy held: streams it closes call done, which may do anything. */
static void
chan_pump(struct grpc_chan *ch)
{
	int wants = CONN_RD;
	char why[128];

	if (ch->state != CH_READY)
		return;
	for (;;) {
		if (!ch->wpend_len) {
			ssize_t n = nghttp2_session_mem_send(ch->sess, &ch->wpend);
			if (ch->zombie || ch->state != CH_READY)
				return;
			if (n < 0) {
				chan_fail(ch, GRPC_UNAVAILABLE, nghttp2_strerror((int)n));
				return;
			}
			ch->wpend_len = (size_t)n;
			if (!n)
				break;
		}
		ssize_t w = ch->conn.ops->send(&ch->conn, ch->wpend, ch->wpend_len);
		if (w == -EAGAIN) {
			wants |= CONN_WR;
			break;
		}
		if (w < 0) {
			snprintf(why, sizeof(why), "send: %s", strerror((int)-w));
			chan_fail(ch, GRPC_UNAVAILABLE, why);
			return;
		}
		ch->wpend += w;
		ch->wpend_len -= (size_t)w;
	}
	if (!nghttp2_session_want_read(ch->sess) && !nghttp2_session_want_write(ch->sess)) {
		chan_fail(ch, GRPC_UNAVAILABLE, "the connection is closed");
		return;
	}
	conn_arm(&ch->conn, wants);
}

static void
chan_read(struct grpc_chan *ch)
{
	uint8_t buf[16384];
	char why[160];

	ch->busy++;
	for (int rounds = 0; rounds < 16; rounds++) {
		ssize_t n = ch->conn.ops->recv(&ch->conn, buf, sizeof(buf));
		if (n == -EAGAIN)
			break;
		if (n <= 0) {
			snprintf(why, sizeof(why), "%s", n == 0 ? "the server closed the connection" : strerror((int)-n));
			goto fail;
		}
		ch->last_rx = ev_now(ch->loop);
		ch->ping_out = false;
		ssize_t r = nghttp2_session_mem_recv(ch->sess, buf, (size_t)n);
		if (ch->zombie)
			break;
		if (r < 0) {
			snprintf(why, sizeof(why), "%s", r == NGHTTP2_ERR_CALLBACK_FAILURE ?
			    "the server sent GOAWAY" : nghttp2_strerror((int)r));
			goto fail;
		}
		if ((size_t)n < sizeof(buf) && !ch->conn.ops->pending(&ch->conn))
			break;
	}
	ch->busy--;
	return;
fail:
	ch->busy--;
	chan_fail(ch, GRPC_UNAVAILABLE, why);
}

static int
chan_start_h2(struct grpc_chan *ch)
{
	nghttp2_session_callbacks *cb;
	nghttp2_option *opt;
	int rc;

	if ((rc = nghttp2_session_callbacks_new(&cb)) != 0)
		return -ENOMEM;
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	if (nghttp2_option_new(&opt) != 0) {
		nghttp2_session_callbacks_del(cb);
		return -ENOMEM;
	}
	/* A long-lived stream must never stall: see STREAM_WINDOW. */
	nghttp2_option_set_no_auto_window_update(opt, 0);
	rc = nghttp2_session_client_new2(&ch->sess, cb, ch, opt);
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cb);
	if (rc != 0)
		return -ENOMEM;
	nghttp2_settings_entry iv[] = {
		{ NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
		{ NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW },
		{ NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 64 << 10 },
	};
	if (nghttp2_submit_settings(ch->sess, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
	    nghttp2_session_set_local_window_size(ch->sess, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0) {
		nghttp2_session_del(ch->sess);
		ch->sess = NULL;
		return -ENOMEM;
	}
	return 0;
}

static void
conn_ready(struct conn *c, int what)
{
	struct grpc_chan *ch = c->owner;
	char why[160];
	int rc;

	ch->busy++;
	if (ch->state == CH_CONNECTING) {
		if ((rc = c->ops->handshake(c)) == -EAGAIN) {
			conn_arm(c, CONN_HS);
		} else if (rc < 0 && c->connecting && ch->next_addr < ch->naddrs) {
			/* This address refused or is unreachable: the next one. */
			log_debug("grpc %s: connect: %s; trying the next address", ch->address, strerror(-rc));
			conn_close(c, CONN_ABORT);
			if ((rc = chan_open_next(ch)) < 0) {
				snprintf(why, sizeof(why), "connect: %s", strerror(-rc));
				chan_fail(ch, GRPC_UNAVAILABLE, why);
			}
		} else if (rc < 0) {
			char detail[128] = "";
			/* A TLS failure says why (untrusted, wrong name, ...). */
			if (c->ops == &xtls_ops)
				(void)xtls_failure(c, detail, sizeof(detail));
			snprintf(why, sizeof(why), "%s: %s", c->ops == &xtls_ops ? "TLS handshake" : "connect",
			    detail[0] ? detail : strerror(-rc));
			chan_fail(ch, GRPC_UNAVAILABLE, why);
		} else {
			ev_timer_stop(ch->loop, &ch->connect_timer);
			ch->state = CH_READY;
			ch->last_rx = ev_now(ch->loop);
			if (ch->keepalive_s > 0) {
				ev_timer_set(&ch->keepalive, ch->keepalive_s, 0);
				ev_timer_start(ch->loop, &ch->keepalive);
			}
			log_debug("grpc %s: connected (%s)", ch->address, c->ops->name);
		}
	} else if (what & CONN_RD) {
		chan_read(ch);
	}
	chan_leave(ch);
}

/* The keepalive: a PING after keepalive_s without a byte in while calls
 * are open; the connection fails if nothing at all answers it in time. */
static void
keepalive_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct grpc_chan *ch = w->data;
	double idle = ev_now(loop) - ch->last_rx;
	double wait = ch->keepalive_s < KEEPALIVE_TIMEOUT_S ? ch->keepalive_s : KEEPALIVE_TIMEOUT_S;
	char why[128];

	(void)revents;
	if (ch->state != CH_READY)
		return;
	ch->busy++;
	if (ch->ping_out) {
		snprintf(why, sizeof(why), "no answer to a keepalive PING within %.1f s", wait);
		chan_fail(ch, GRPC_UNAVAILABLE, why);
	} else if (idle >= ch->keepalive_s && ch->calls) {
		nghttp2_submit_ping(ch->sess, NGHTTP2_FLAG_NONE, NULL);
		ch->ping_out = true;
		ev_timer_set(w, wait, 0);
		ev_timer_start(loop, w);
	} else {
		ev_timer_set(w, idle >= ch->keepalive_s ? ch->keepalive_s : ch->keepalive_s - idle, 0);
		ev_timer_start(loop, w);
	}
	chan_leave(ch);
}

static void
connect_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct grpc_chan *ch = w->data;
	char why[128];

	(void)loop, (void)revents;
	snprintf(why, sizeof(why), "connect timed out after %.1f s", ch->connect_timeout_s);
	ch->busy++;
	chan_fail(ch, GRPC_UNAVAILABLE, why);
	chan_leave(ch);
}

/* Opens a socket to the next address not tried yet (a connect that fails at
 * once moves on to the one after) and starts the transport on it. 0, or the
 * last error when none is left. The session is not touched: nothing has been
 * sent before CH_READY, so it can go out on whichever socket connects. */
static int
chan_open_next(struct grpc_chan *ch)
{
	int fd, rc = -EHOSTUNREACH;

	while (ch->next_addr < ch->naddrs) {
		const struct sockaddr_storage *sa = &ch->addrs[ch->next_addr++];
		if (sa->ss_family == AF_UNIX) {
			if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
				return -errno;
			if (connect(fd, (const struct sockaddr *)sa, sizeof(struct sockaddr_un)) < 0 &&
			    errno != EINPROGRESS) {
				rc = -errno;
				close(fd);
				continue;
			}
		} else if ((fd = rc = sock_connect(sa, NULL, false, 0)) < 0) {
			if (rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM)
				return rc;
			continue;
		}
		conn_init(&ch->conn, ch->loop, fd, &raw_ops, conn_ready, ch, -1);
		ch->conn.connecting = true;
		if (ch->tls) {
			static const unsigned char alpn[] = "\x02h2";
			struct in6_addr probe;
			const char *vn = ch->verify_name;
			/* SNI is a DNS name (RFC 6066): none for an IP address or a
			 * SPIFFE ID. */
			bool dns = vn && strncmp(vn, "spiffe://", 9) && inet_pton(AF_INET, vn, &probe) != 1 &&
			    inet_pton(AF_INET6, vn, &probe) != 1;
			struct xtls_client_opts o = {
				.sni = dns ? vn : NULL, .alpn = alpn, .alpn_len = 3, .verify_name = vn,
			};
			if ((rc = xtls_start_client(&ch->conn, ch->tls, &o)) < 0) {
				conn_close(&ch->conn, CONN_ABORT);
				return rc;
			}
		}
		conn_arm(&ch->conn, CONN_HS);
		return 0;
	}
	return rc;
}

/* Resolves and connects. The name is resolved with a blocking getaddrinfo
 * on the control thread: control-plane names (istiod.istio-system.svc) are
 * answered by the cluster DNS at once, and the control thread only serves
 * the admin port meanwhile. Every address is tried in getaddrinfo's order
 * (RFC 6724) until one connects, within one connect timeout. */
static int
chan_connect(struct grpc_chan *ch)
{
	char host[256];
	uint16_t port;
	bool is_unix;
	int rc;

	if ((rc = grpc_addr_parse(ch->address, host, sizeof(host), &port, &is_unix)) < 0) {
		snprintf(ch->connect_err, sizeof(ch->connect_err), "not host:port, [v6]:port or unix:/path");
		return rc;
	}
	grpc_stats.connects++;
	ch->naddrs = ch->next_addr = 0;
	if (is_unix) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ch->addrs[0];
		memset(sun, 0, sizeof(*sun));
		sun->sun_family = AF_UNIX;
		if (strlen(host) >= sizeof(sun->sun_path)) {
			rc = -ENAMETOOLONG;
			goto failed;
		}
		strcpy(sun->sun_path, host);
		ch->naddrs = 1;
	} else {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
		struct addrinfo *ai = NULL;
		char portstr[8];

		snprintf(portstr, sizeof(portstr), "%u", port);
		if ((rc = getaddrinfo(host, portstr, &hints, &ai)) != 0) {
			snprintf(ch->connect_err, sizeof(ch->connect_err), "cannot resolve %.64s: %.60s", host,
			    rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
			grpc_stats.connect_failures++;
			return -EHOSTUNREACH;
		}
		for (struct addrinfo *a = ai; a && ch->naddrs < GRPC_MAX_ADDRS; a = a->ai_next) {
			if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
			    a->ai_addrlen > sizeof(ch->addrs[0]))
				continue;
			memset(&ch->addrs[ch->naddrs], 0, sizeof(ch->addrs[0]));
			memcpy(&ch->addrs[ch->naddrs++], a->ai_addr, a->ai_addrlen);
		}
		freeaddrinfo(ai);
	}
	if ((rc = chan_start_h2(ch)) < 0)
		goto failed;
	if ((rc = chan_open_next(ch)) < 0) {
		nghttp2_session_del(ch->sess);
		ch->sess = NULL;
		goto failed;
	}
	ch->state = CH_CONNECTING;
	ev_timer_set(&ch->connect_timer, ch->connect_timeout_s, 0);
	ev_timer_start(ch->loop, &ch->connect_timer);
	return 0;
failed:
	snprintf(ch->connect_err, sizeof(ch->connect_err), "%s", strerror(-rc));
	grpc_stats.connect_failures++;
	return rc;
}

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

struct grpc_chan *
grpc_chan_new(struct ev_loop *loop, const struct grpc_target *t)
{
	struct grpc_chan *ch = calloc(1, sizeof(*ch));

	if (!ch)
		return NULL;
	ch->loop = loop;
	ch->address = strdup(t->address);
	ch->verify_name = dup_or_null(t->verify_name);
	if (t->authority)
		ch->authority = strdup(t->authority);
	else
		ch->authority = strdup(strncmp(t->address, "unix:", 5) ? t->address : "localhost");
	if (!ch->address || !ch->authority || (t->verify_name && !ch->verify_name)) {
		free(ch->address);
		free(ch->verify_name);
		free(ch->authority);
		free(ch);
		return NULL;
	}
	if (t->tls) {
		SSL_CTX_up_ref(t->tls);
		ch->tls = t->tls;
	}
	ch->connect_timeout_s = t->connect_timeout_s > 0 ? t->connect_timeout_s : CONNECT_TIMEOUT_S;
	ch->max_message = t->max_message ? t->max_message : GRPC_MAX_MESSAGE;
	ch->conn.fd = -1;
	ev_timer_init(&ch->connect_timer, connect_timeout_cb, 0, 0);
	ch->connect_timer.data = ch;
	ev_timer_init(&ch->kick, kick_cb, 0, 0);
	ch->kick.data = ch;
	ch->keepalive_s = t->keepalive_s < 0 ? 0 : t->keepalive_s > 0 ? t->keepalive_s : KEEPALIVE_S;
	ev_timer_init(&ch->keepalive, keepalive_cb, 0, 0);
	ch->keepalive.data = ch;
	return ch;
}

static void
chan_free_now(struct grpc_chan *ch)
{
	struct grpc_call *call, *next;

	for (call = ch->calls; call; call = next) {
		next = call->next;
		call->pprev = NULL;
		if (ch->sess && call->stream_id > 0)
			nghttp2_session_set_stream_user_data(ch->sess, call->stream_id, NULL);
		call_unlink_free(call);
	}
	ch->calls = NULL;
	chan_teardown(ch);
	ev_timer_stop(ch->loop, &ch->kick);
	if (ch->tls)
		SSL_CTX_free(ch->tls);
	free(ch->address);
	free(ch->verify_name);
	free(ch->authority);
	free(ch);
}

void
grpc_chan_free(struct grpc_chan *ch)
{
	if (!ch)
		return;
	if (ch->busy) {
		/* Inside one of our callbacks: finish when it returns. */
		ch->zombie = true;
		return;
	}
	chan_free_now(ch);
}

/* --- the response side, pure ------------------------------------------------ */

void
grpc_deframer_init(struct grpc_deframer *d, size_t max)
{
	memset(d, 0, sizeof(*d));
	d->max = max;
}

void
grpc_deframer_free(struct grpc_deframer *d)
{
	free(d->buf);
	d->buf = NULL;
}

bool
grpc_deframer_partial(const struct grpc_deframer *d)
{
	return d->hlen > 0;
}

int
grpc_deframe(struct grpc_deframer *d, const uint8_t *data, size_t len, grpc_msg_fn *fn, void *ud)
{
	int rc;

	while (len > 0) {
		if (d->hlen < 5) {
			size_t n = 5 - d->hlen < len ? 5 - d->hlen : len;
			memcpy(d->hdr + d->hlen, data, n);
			d->hlen += n;
			data += n;
			len -= n;
			if (d->hlen < 5)
				return 0;
			if (d->hdr[0] != 0)
				return -EPROTO;
			d->need = (size_t)d->hdr[1] << 24 | (size_t)d->hdr[2] << 16 | (size_t)d->hdr[3] << 8 | d->hdr[4];
			if (d->need > d->max)
				return -EMSGSIZE;
			d->len = 0;
		}
		/* A whole message in this chunk goes out without a copy. */
		if (d->len == 0 && len >= d->need) {
			const uint8_t *m = data;
			size_t mlen = d->need;
			data += mlen;
			len -= mlen;
			d->hlen = 0;
			if ((rc = fn(ud, m, mlen)) != 0)
				return rc;
			continue;
		}
		if (!d->buf || d->len == 0) {
			free(d->buf);
			if (!(d->buf = malloc(d->need)))
				return -ENOMEM;
		}
		size_t n = d->need - d->len < len ? d->need - d->len : len;
		memcpy(d->buf + d->len, data, n);
		d->len += n;
		data += n;
		len -= n;
		if (d->len == d->need) {
			d->hlen = 0;
			d->len = 0;
			rc = fn(ud, d->buf, d->need);
			free(d->buf);
			d->buf = NULL;
			if (rc != 0)
				return rc;
		}
	}
	return 0;
}

void
grpc_resp_init(struct grpc_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->grpc_status = -1;
}

static bool
name_is(const uint8_t *name, size_t nlen, const char *s)
{
	return nlen == strlen(s) && memcmp(name, s, nlen) == 0;
}

int
grpc_resp_header(struct grpc_resp *r, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
	if (name_is(name, nlen, ":status")) {
		if (vlen != 3 || !isdigit(value[0]) || !isdigit(value[1]) || !isdigit(value[2]))
			return -EPROTO;
		r->http_status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
	} else if (name_is(name, nlen, "content-type")) {
		/* application/grpc, application/grpc+proto, application/grpc;... */
		static const char ct[] = "application/grpc";
		size_t n = sizeof(ct) - 1;
		r->grpc_ct = vlen >= n && strncasecmp((const char *)value, ct, n) == 0 &&
		    (vlen == n || value[n] == '+' || value[n] == ';');
	} else if (name_is(name, nlen, "grpc-status")) {
		int v = 0;
		if (vlen == 0 || vlen > 9)
			return -EPROTO;
		for (size_t i = 0; i < vlen; i++) {
			if (!isdigit(value[i]))
				return -EPROTO;
			v = v * 10 + (value[i] - '0');
		}
		r->grpc_status = v;
	} else if (name_is(name, nlen, "grpc-message")) {
		grpc_percent_decode(value, vlen, r->message, sizeof(r->message));
	}
	return 0;
}

int
grpc_status_from_http(int http_status)
{
	switch (http_status) {
	case 400: return GRPC_INTERNAL;
	case 401: return GRPC_UNAUTHENTICATED;
	case 403: return GRPC_PERMISSION_DENIED;
	case 404: return GRPC_UNIMPLEMENTED;
	case 429: case 502: case 503: case 504: return GRPC_UNAVAILABLE;
	default: return GRPC_UNKNOWN;
	}
}

int
grpc_status_from_h2(uint32_t e)
{
	switch (e) {
	case NGHTTP2_REFUSED_STREAM: return GRPC_UNAVAILABLE;
	case NGHTTP2_CANCEL: return GRPC_CANCELLED;
	case NGHTTP2_ENHANCE_YOUR_CALM: return GRPC_RESOURCE_EXHAUSTED;
	case NGHTTP2_INADEQUATE_SECURITY: return GRPC_PERMISSION_DENIED;
	default: return GRPC_INTERNAL;
	}
}

int
grpc_resp_status(const struct grpc_resp *r, char *msg, size_t msglen)
{
	if (r->http_status != 200) {
		int st = grpc_status_from_http(r->http_status);
		if (r->http_status == 0)
			snprintf(msg, msglen, "the response had no :status");
		else
			snprintf(msg, msglen, "HTTP status %d%s%s", r->http_status, r->message[0] ? ": " : "", r->message);
		return r->http_status == 0 ? GRPC_INTERNAL : st;
	}
	if (r->grpc_status < 0) {
		snprintf(msg, msglen, "the response ended without grpc-status");
		return GRPC_INTERNAL;
	}
	if (!r->grpc_ct && r->grpc_status != GRPC_OK) {
		/* A Trailers-Only error from a proxy may lack content-type; the
		 * status is still the server's word. */
		snprintf(msg, msglen, "%s", r->message);
		return r->grpc_status;
	}
	if (!r->grpc_ct) {
		snprintf(msg, msglen, "the response is not gRPC (content-type)");
		return GRPC_INTERNAL;
	}
	snprintf(msg, msglen, "%s", r->message);
	return r->grpc_status;
}

static int
hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void
grpc_percent_decode(const uint8_t *in, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	if (!outlen)
		return;
	for (size_t i = 0; i < len && o + 1 < outlen; i++) {
		uint8_t c = in[i];
		int hi, lo;
		if (c == '%' && i + 2 < len + 0 && (hi = hexval(in[i + 1])) >= 0 && (lo = hexval(in[i + 2])) >= 0) {
			c = (uint8_t)(hi << 4 | lo);
			i += 2;
		}
		/* A NUL would cut the message; show it as '?'. */
		out[o++] = c ? (char)c : '?';
	}
	out[o] = '\0';
}

const char *
grpc_status_str(int code)
{
	static const char *const names[] = {
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
		"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
		"UNAUTHENTICATED",
	};
	return code >= 0 && (size_t)code < sizeof(names) / sizeof(names[0]) ? names[code] : "UNKNOWN_CODE";
}

int
grpc_addr_parse(const char *addr, char *host, size_t hostlen, uint16_t *port, bool *is_unix)
{
	const char *colon;
	size_t hlen;
	unsigned long p;
	char *end;

	*is_unix = false;
	*port = 0;
	if (!strncmp(addr, "unix:", 5)) {
		const char *path = addr + 5;
		if (!*path || strlen(path) >= hostlen)
			return -EINVAL;
		strcpy(host, path);
		*is_unix = true;
		return 0;
	}
	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		hlen = (size_t)(close - addr - 1);
		addr++;
		colon = close + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon || strchr(addr, ':') != colon)
			return -EINVAL;	/* none, or a bare v6 address */
		hlen = (size_t)(colon - addr);
	}
	if (hlen == 0 || hlen >= hostlen)
		return -EINVAL;
	if (!isdigit((unsigned char)colon[1]))
		return -EINVAL;
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (errno || *end || p == 0 || p > 65535)
		return -EINVAL;
	memcpy(host, addr, hlen);
	host[hlen] = '\0';
	*port = (uint16_t)p;
	return 0;
}
