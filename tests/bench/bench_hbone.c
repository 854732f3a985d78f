/* bench_hbone: memory per idle HBONE stream (issue 11, "Performance": under
 * 4 KiB). An h2s client session and an h2s server session (ours, nghttp2)
 * over a socketpair, each in its own process so that each side's heap is
 * its own: the client opens N CONNECT streams (at most our client's
 * stream limit per connection, 100, as ztunnel; S sessions), the
 * server answers 200 to each, one byte goes each way on every stream (so
 * that buffers were used), then both idle and report malloc'd bytes per
 * stream (mallinfo2: heap in use with the streams open minus with the
 * sessions up and no stream, divided by the streams). The HTTP/2 layer and
 * the stream conns only: a proxied connection also has its tunnel and the
 * app-side socket (the bench's "hbone" scenario measures whole sidecars).
 * Built by tests/bench/bench-hbone.sh without sanitizers. Asserts nothing.
 *
 *     bench_hbone [STREAMS_PER_SESSION [SESSIONS]]
 *     BENCH_HBONE_NODATA=1: the streams answered 200, no byte sent
 */
#include "autoconfig.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "conn.h"
#include "h2s.h"

static struct ev_loop *loop;

struct ep {
	struct conn c;
	bool hs, got, sent, server;
};

struct side {
	struct conn t;
	struct h2s *s;
	struct ep *eps;
	int neps, cap;
};

static int done_eps;
/* BENCH_HBONE_NODATA=1: no byte either way, the streams only answered 200
 * (what a stream costs before its buffers are first used). */
static bool nodata;

static void ep_ready(struct conn *c, int what);

static void
ep_arm(struct ep *e)
{
	if (!conn_open(&e->c))
		return;
	if (!e->hs)
		conn_arm(&e->c, CONN_HS);
	else
		conn_arm(&e->c, (e->got ? 0 : CONN_RD) | (e->sent ? 0 : CONN_WR));
}

static void
ep_ready(struct conn *c, int what)
{
	struct ep *e = c->owner;
	uint8_t b;

	if (what & CONN_HS) {
		int rc = c->ops->handshake(c);

		if (rc == -EAGAIN)
			goto arm;
		if (rc < 0) {
			fprintf(stderr, "stream refused: %d\n", rc);
			exit(1);
		}
		e->hs = true;
		if (nodata) {
			e->sent = e->got = true;
			done_eps++;
		}
	}
	if (!e->hs)
		goto arm;
	if (!e->sent && c->ops->send(c, "x", 1) == 1)
		e->sent = true;
	if (!e->got && c->ops->recv(c, &b, 1) == 1) {
		e->got = true;
		done_eps++;
	}
arm:
	ep_arm(e);
}

static void
srv_request(struct h2s *s, void *ud, struct conn *stream, const struct h2s_req *req)
{
	struct side *sd = ud;
	struct ep *e = &sd->eps[sd->neps++];

	(void)s;
	(void)req;
	h2s_stream_move(&e->c, stream);
	e->c.ready = ep_ready;
	e->c.owner = e;
	e->hs = e->server = true;
	if (h2s_respond(&e->c, 200, NULL, 0) < 0)
		exit(1);
	if (nodata) {
		e->sent = e->got = true;
		done_eps++;
	}
	ep_arm(e);
}

static void
closed(struct h2s *s, void *ud)
{
	(void)s;
	(void)ud;
	fprintf(stderr, "session closed early\n");
	exit(1);
}

static const struct h2s_handler srv_h = { .request = srv_request, .closed = closed };
static const struct h2s_handler cli_h = { .closed = closed };

static size_t
heap(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static void
run_until(int want, double secs)
{
	ev_tstamp end = ev_time() + secs;

	while (done_eps < want && ev_time() < end)
		ev_run(loop, EVRUN_ONCE);
	if (done_eps < want) {
		fprintf(stderr, "timed out: %d of %d streams\n", done_eps, want);
		exit(1);
	}
}

/* One side of every session pair; fds[i] its socket of pair i. */
static void
side_main(bool server, int *fds, int nsess, int per, int report)
{
	struct side *sd = calloc((size_t)nsess, sizeof(*sd));
	size_t before, after;
	char line[160];

	loop = ev_loop_new(EVFLAG_AUTO);
	for (int i = 0; i < nsess; i++) {
		sd[i].eps = calloc((size_t)per, sizeof(*sd[i].eps));	/* before the measure */
		sd[i].cap = per;
		conn_init(&sd[i].t, loop, fds[i], &raw_ops, NULL, NULL, -1);
		sd[i].s = server ? h2s_server_new(NULL, &sd[i].t, &h2s_server_defaults, &srv_h, &sd[i]) :
		    h2s_client_new(NULL, &sd[i].t, &h2s_client_defaults, &cli_h, &sd[i]);
		if (!sd[i].s)
			exit(1);
	}
	/* The sessions' SETTINGS exchanged: a little loop time. */
	for (ev_tstamp end = ev_time() + 0.3; ev_time() < end;)
		ev_run(loop, EVRUN_NOWAIT);
	malloc_trim(0);
	before = heap();
	if (!server) {
		for (int i = 0; i < nsess; i++)
			for (int k = 0; k < per; k++) {
				struct conn *st = h2s_connect(sd[i].s, "10.0.0.1:8080", NULL, 0);
				struct ep *e = &sd[i].eps[sd[i].neps++];

				if (!st) {
					fprintf(stderr, "cannot open stream %d of session %d\n", k, i);
					exit(1);
				}
				h2s_stream_move(&e->c, st);
				e->c.ready = ep_ready;
				e->c.owner = e;
				ep_arm(e);
			}
	}
	run_until(nsess * per, 30);
	/* Idle: let the last frames and window updates go. */
	for (ev_tstamp end = ev_time() + 0.5; ev_time() < end;)
		ev_run(loop, EVRUN_NOWAIT);
	after = heap();
	snprintf(line, sizeof(line), "%s: %d streams on %d session(s): %zu bytes of heap, %.0f bytes per idle stream\n",
	    server ? "server" : "client", nsess * per, nsess, after - before,
	    (double)(after - before) / (nsess * per));
	if (write(report, line, strlen(line)) < 0)
		exit(1);
	/* Both sides measured before either closes (the parent waits). */
	sleep(1);
	exit(0);
}

int
main(int argc, char **argv)
{
	int per = argc > 1 ? atoi(argv[1]) : 100, nsess = argc > 2 ? atoi(argv[2]) : 10;
	int *cfd, *sfd, rep[2], st;
	pid_t srv;
	char buf[512];
	ssize_t n;

	if (per < 1 || per > 100 || nsess < 1 || nsess > 64) {
		fprintf(stderr, "usage: bench_hbone [STREAMS_PER_SESSION (1-100) [SESSIONS (1-64)]]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	nodata = getenv("BENCH_HBONE_NODATA") && *getenv("BENCH_HBONE_NODATA") == '1';
	cfd = calloc((size_t)nsess, sizeof(int));
	sfd = calloc((size_t)nsess, sizeof(int));
	for (int i = 0; i < nsess; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
			return 1;
		sfd[i] = sv[0];
		cfd[i] = sv[1];
	}
	if (pipe(rep) < 0)
		return 1;
	if ((srv = fork()) == 0) {
		for (int i = 0; i < nsess; i++)
			close(cfd[i]);
		side_main(true, sfd, nsess, per, rep[1]);
	}
	for (int i = 0; i < nsess; i++)
		close(sfd[i]);
	if (fork() == 0)
		side_main(false, cfd, nsess, per, rep[1]);
	close(rep[1]);
	while ((n = read(rep[0], buf, sizeof(buf) - 1)) > 0) {
		buf[n] = '\0';
		fputs(buf, stdout);
	}
	while (wait(&st) > 0)
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			return 1;
	return 0;
}
