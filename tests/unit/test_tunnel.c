/* Unit tests for src/tunnel.c on real loopback TCP sockets and a hand-built
 * worker: bytes both ways, half-close, back-pressure, the copy transport,
 * connect failure, upstream reset and the idle timeout. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "sock.h"
#include "tunnel.h"
#include "worker-t.h"

/* Allocation failure injection (linked with -Wl,--wrap=malloc): the next
 * fail_count allocations of exactly fail_size bytes made by src/ fail. */
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
static size_t fail_size;
static int fail_count;

void *
__wrap_malloc(size_t size)
{
	if (fail_count > 0 && size == fail_size) {
		fail_count--;
		return NULL;
	}
	return __real_malloc(size);
}

struct fixture {
	struct worker w;
	struct config cfg;
	int app_lfd;			/* the "application" the tunnel connects to */
	struct sockaddr_storage app;
	int client;			/* the downstream client's socket */
	int app_fd;			/* the app's accepted socket */
	struct tunnel *t;
};

static double
now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
spin(struct fixture *f, int ms)
{
	double end = now() + ms / 1000.0;
	do {
		ev_run(f->w.loop, EVRUN_NOWAIT);
		poll(NULL, 0, 1);
	} while (now() < end);
}

static int
listen_lo(struct sockaddr_storage *sa)
{
	socklen_t len = sizeof(*sa);
	sock_addr_parse("127.0.0.1", 0, sa);
	int fd = sock_listen(sa, 64, false, false);
	assert_true(fd >= 0);
	getsockname(fd, (struct sockaddr *)sa, &len);
	return fd;
}

static int
accept_wait(int lfd)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 2000), 1);
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
	assert_true(fd >= 0);
	return fd;
}

/* Build a worker, an app listener, and a client whose accepted socket is
 * handed to a tunnel towards the app (or towards dst when given). */
static void
setup_with(struct fixture *f, const struct sockaddr_storage *dst, uint32_t idle_ms)
{
	struct sockaddr_storage proxy;
	int plfd, ds;

	memset(f, 0, sizeof(*f));
	config_defaults(&f->cfg);
	f->cfg.idle_timeout_ms = idle_ms;
	f->w.loop = ev_loop_new(EVFLAG_AUTO);
	pool_init(&f->w.pool, 4, f->w.stats.w);
	f->w.snap = wsnap_new(snapshot_new(&f->cfg, 1));
	f->app_lfd = listen_lo(&f->app);
	f->app_fd = -1;

	plfd = listen_lo(&proxy);
	f->client = sock_connect(&proxy, NULL, false, 0);
	assert_true(f->client >= 0);
	ds = accept_wait(plfd);
	close(plfd);
	f->t = tunnel_start(&f->w, LST_OUTBOUND, ds, dst ? dst : &f->app);
	if (!dst) {
		assert_non_null(f->t);
		f->app_fd = accept_wait(f->app_lfd);
		spin(f, 20);
		assert_int_equal(f->t->state, TUN_ESTABLISHED);
	}
}

static void
teardown_fixture(struct fixture *f)
{
	tunnel_close_all(&f->w);
	if (f->client >= 0)
		close(f->client);
	if (f->app_fd >= 0)
		close(f->app_fd);
	close(f->app_lfd);
	wsnap_retire(f->w.snap);
	pool_destroy(&f->w.pool);
	ev_loop_destroy(f->w.loop);
}

static uint64_t
lstat_get(struct fixture *f, enum listener_metric m)
{
	return f->w.stats.lst[LST_OUTBOUND][m];
}

/* Write all of buf to fd (non-blocking), spinning the loop while it blocks. */
static void
send_all(struct fixture *f, int fd, const char *buf, size_t len)
{
	size_t off = 0;
	double end = now() + 10;
	while (off < len && now() < end) {
		ssize_t n = send(fd, buf + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0)
			off += (size_t)n;
		else
			spin(f, 1);
	}
	assert_int_equal(off, len);
}

/* errno of the error that ended the last recv_upto(), 0 for EOF. */
static int recv_err;

/* Read until len bytes, EOF or an error (*eof set for both; recv_err says
 * which); returns bytes read. */
static size_t
recv_upto(struct fixture *f, int fd, char *buf, size_t len, bool *eof)
{
	size_t off = 0;
	double end = now() + 10;
	*eof = false;
	recv_err = 0;
	while (off < len && now() < end) {
		ssize_t n = recv(fd, buf + off, len - off, MSG_DONTWAIT);
		if (n > 0)
			off += (size_t)n;
		else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			*eof = true;
			recv_err = n == 0 ? 0 : errno;
			break;
		} else
			spin(f, 1);
	}
	return off;
}

static void
test_bytes_both_ways(void **state)
{
	struct fixture f;
	char buf[16];
	bool eof;

	setup_with(&f, NULL, 0);
	send_all(&f, f.client, "ping", 4);
	assert_int_equal(recv_upto(&f, f.app_fd, buf, 4, &eof), 4);
	assert_memory_equal(buf, "ping", 4);
	send_all(&f, f.app_fd, "pong!", 5);
	assert_int_equal(recv_upto(&f, f.client, buf, 5, &eof), 5);
	assert_memory_equal(buf, "pong!", 5);
	assert_int_equal(lstat_get(&f, LM_DOWNSTREAM_CX_RX_BYTES_TOTAL), 4);
	assert_int_equal(lstat_get(&f, LM_DOWNSTREAM_CX_TX_BYTES_TOTAL), 5);
	/* Idle again: no pipe or chunk held. */
	assert_int_equal(f.w.stats.w[WM_PIPES_IN_USE], 0);
	assert_int_equal(f.w.stats.w[WM_CHUNKS_IN_USE], 0);
	/* Small messages are copied through a chunk, never spliced. */
	assert_int_equal(f.w.stats.w[WM_PIPES_CACHED], 0);
	assert_true(f.w.stats.w[WM_CHUNKS_CACHED] >= 1);
	teardown_fixture(&f);
}

/* The client's FIN reaches the app; the app's answer still reaches the client. */
static void
test_half_close(void **state)
{
	struct fixture f;
	static char big[300000], got[300000];
	char b;
	bool eof;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7);
	setup_with(&f, NULL, 0);
	send_all(&f, f.client, "q", 1);
	shutdown(f.client, SHUT_WR);
	assert_int_equal(recv_upto(&f, f.app_fd, &b, 1, &eof), 1);
	assert_int_equal(recv_upto(&f, f.app_fd, &b, 1, &eof), 0);
	assert_true(eof);
	send_all(&f, f.app_fd, big, sizeof(big));
	close(f.app_fd);
	f.app_fd = -1;
	assert_int_equal(recv_upto(&f, f.client, got, sizeof(got), &eof), sizeof(got));
	assert_memory_equal(got, big, sizeof(big));
	assert_int_equal(recv_upto(&f, f.client, got, 1, &eof), 0);
	assert_true(eof);
	spin(&f, 10);
	/* Both directions done: the tunnel is gone. */
	assert_null(f.w.tunnels);
	assert_int_equal(lstat_get(&f, LM_DOWNSTREAM_CX_ACTIVE), 0);
	assert_int_equal(lstat_get(&f, LM_DOWNSTREAM_CX_DESTROY), 1);
	teardown_fixture(&f);
}

/* An app that does not read stops the proxy from reading the client: what
 * the proxy holds stays within one pipe, and the client's writes block.
 * Regression: with the pipe exactly full, splice() was asked for 0 bytes,
 * returned 0, and that was taken for the client's EOF: the app got a
 * truncated stream and a FIN. */
static void
test_back_pressure(void **state)
{
	struct fixture f;
	static char chunk[65536], sink[65536];
	size_t sent = 0, got = 0;
	bool eof;

	setup_with(&f, NULL, 0);
	int small = 65536;
	setsockopt(f.app_fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	double end = now() + 3;
	while (now() < end && sent < (256u << 20)) {
		ssize_t n = send(f.client, chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0)
			sent += (size_t)n;
		spin(&f, 1);
	}
	/* Kernel buffers absorb a few MiB at most; the proxy holds at most one pipe. */
	assert_true(sent < (64u << 20));
	assert_true(f.t->d2u.inflight <= 65536);
	/* A bulk transfer switches to splice: the bytes held are in one pipe. */
	assert_true(f.t->d2u.bulk);
	assert_int_equal(f.w.stats.w[WM_PIPES_IN_USE], 1);
	assert_int_equal(f.w.stats.w[WM_CHUNKS_IN_USE], 0);
	/* Now the app reads: everything arrives. */
	shutdown(f.client, SHUT_WR);
	end = now() + 20;
	while (got < sent && now() < end) {
		size_t n = recv_upto(&f, f.app_fd, sink, sizeof(sink), &eof);
		got += n;
		if (eof)
			break;
	}
	if (got != sent)
		fail_msg("sent %zu, app got %zu (eof %d, inflight %zu)", sent, got, eof, f.t ? f.t->d2u.inflight : 0);
	teardown_fixture(&f);
}

static const struct conn_ops *copy_ops(void)
{
	static struct conn_ops ops;
	ops = raw_ops;
	ops.name = "raw-copy";
	ops.can_splice = false;
	return &ops;
}

/* A transport that cannot splice (TLS later) goes through buffer chunks. */
static void
test_copy_transport(void **state)
{
	struct fixture f;
	static char big[1 << 20], got[1 << 20];
	bool eof;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 13 + 1);
	setup_with(&f, NULL, 0);
	f.t->ds.ops = copy_ops();
	send_all(&f, f.client, big, sizeof(big));
	assert_int_equal(recv_upto(&f, f.app_fd, got, sizeof(got), &eof), sizeof(got));
	assert_memory_equal(got, big, sizeof(big));
	send_all(&f, f.app_fd, big, 1000);
	assert_int_equal(recv_upto(&f, f.client, got, 1000, &eof), 1000);
	assert_int_equal(f.w.stats.w[WM_PIPES_IN_USE], 0);
	assert_int_equal(f.w.stats.w[WM_PIPES_CACHED], 0);	/* never used a pipe */
	assert_int_equal(f.w.stats.w[WM_CHUNKS_IN_USE], 0);	/* released when drained */
	assert_true(f.w.stats.w[WM_CHUNKS_CACHED] >= 1);
	teardown_fixture(&f);
}

/* Nothing listens at the destination: the client gets a reset, counted. */
static void
test_connect_refused_resets_client(void **state)
{
	struct fixture f;
	struct sockaddr_storage dead;
	char b;

	int lfd = listen_lo(&dead);
	close(lfd);
	setup_with(&f, &dead, 0);
	spin(&f, 50);
	ssize_t n = recv(f.client, &b, 1, MSG_DONTWAIT);
	assert_int_equal(n, -1);
	assert_int_equal(errno, ECONNRESET);
	assert_int_equal(lstat_get(&f, LM_UPSTREAM_CX_CONNECT_FAIL), 1);
	assert_null(f.w.tunnels);
	teardown_fixture(&f);
}

/* The app resets mid-stream: the client gets what was sent, then a reset (a
 * FIN would make the truncated stream look complete). */
static void
test_upstream_reset(void **state)
{
	struct fixture f;
	char got[16];
	bool eof;

	setup_with(&f, NULL, 0);
	send_all(&f, f.app_fd, "partial", 7);
	spin(&f, 20);
	sock_close_rst(f.app_fd);
	f.app_fd = -1;
	assert_int_equal(recv_upto(&f, f.client, got, sizeof(got), &eof), 7);
	assert_memory_equal(got, "partial", 7);
	assert_true(eof);
	assert_int_equal(recv_err, ECONNRESET);
	spin(&f, 10);
	assert_null(f.w.tunnels);
	assert_int_equal(lstat_get(&f, LM_UPSTREAM_CX_RESET), 1);
	teardown_fixture(&f);
}

static void
test_idle_timeout(void **state)
{
	struct fixture f;
	char b;
	bool eof;

	setup_with(&f, NULL, 50);
	send_all(&f, f.client, "x", 1);
	assert_int_equal(recv_upto(&f, f.app_fd, &b, 1, &eof), 1);
	spin(&f, 150);
	assert_null(f.w.tunnels);
	assert_int_equal(lstat_get(&f, LM_DOWNSTREAM_CX_IDLE_TIMEOUT), 1);
	assert_int_equal(recv_upto(&f, f.client, &b, 1, &eof), 0);
	assert_true(eof);
	teardown_fixture(&f);
}

/* Leave the process no room for new descriptors, so pipe2() fails with EMFILE. */
static struct rlimit
starve_fds(void)
{
	struct rlimit old, rl;
	int top = dup(0);

	getrlimit(RLIMIT_NOFILE, &old);
	close(top);
	rl = old;
	rl.rlim_cur = (rlim_t)top;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	return old;
}

/* No descriptors for pipes: the flows copy through chunks instead, and every
 * byte still arrives. */
static void
test_pipe_exhaustion_falls_back_to_copy(void **state)
{
	struct fixture f;
	static char big[200000], got[200000];
	bool eof;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 3 + 5);
	setup_with(&f, NULL, 0);
	struct rlimit old = starve_fds();
	send_all(&f, f.client, big, sizeof(big));
	assert_int_equal(recv_upto(&f, f.app_fd, got, sizeof(got), &eof), sizeof(got));
	assert_memory_equal(got, big, sizeof(big));
	send_all(&f, f.app_fd, big, 5000);
	assert_int_equal(recv_upto(&f, f.client, got, 5000, &eof), 5000);
	setrlimit(RLIMIT_NOFILE, &old);
	assert_true(f.t->d2u.no_splice);
	assert_int_equal(f.w.stats.w[WM_PIPES_IN_USE], 0);
	assert_true(f.w.stats.w[WM_CHUNKS_CACHED] >= 1);
	teardown_fixture(&f);
}

/* A buffer allocation that fails closes that one connection (reset, counted);
 * the worker and its other connections carry on. */
static void
test_oom_fails_one_connection(void **state)
{
	struct fixture a, b;
	char buf[8];
	bool eof;

	setup_with(&a, NULL, 0);
	a.t->ds.ops = copy_ops();	/* needs a chunk for its first byte */
	fail_size = sizeof(struct chunk);
	fail_count = 1;
	send_all(&a, a.client, "doomed", 6);
	spin(&a, 20);
	fail_count = 0;
	assert_null(a.w.tunnels);
	assert_int_equal(lstat_get(&a, LM_DOWNSTREAM_CX_OVERFLOW), 1);
	assert_int_equal(recv(a.client, buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_int_equal(errno, ECONNRESET);
	teardown_fixture(&a);

	setup_with(&b, NULL, 0);
	b.t->ds.ops = copy_ops();
	send_all(&b, b.client, "fine", 4);
	assert_int_equal(recv_upto(&b, b.app_fd, buf, 4, &eof), 4);
	assert_memory_equal(buf, "fine", 4);
	teardown_fixture(&b);
}

/* Review finding: the app answers and resets while the client is still
 * uploading. The write to the app fails first; the tunnel must still read the
 * answer the app sent before its reset, deliver it, and end (it used to stop
 * both watchers and hang until the idle timeout, the answer lost). */
static void
test_app_answers_then_resets_during_upload(void **state)
{
	struct fixture f;
	static char chunk[65536];
	char got[64];
	bool eof;

	setup_with(&f, NULL, 0);
	/* The client uploads far more than the app will read. */
	for (int i = 0; i < 64; i++) {
		if (send(f.client, chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			break;
		spin(&f, 1);
	}
	static const char answer[] = "HTTP/1.1 413 Too Large\r\n\r\n";
	send_all(&f, f.app_fd, answer, sizeof(answer) - 1);
	sock_close_rst(f.app_fd);	/* unread upload: the app's kernel resets */
	f.app_fd = -1;
	for (int i = 0; i < 16; i++) {	/* the client keeps sending */
		(void)send(f.client, chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL);
		spin(&f, 2);
	}
	size_t n = recv_upto(&f, f.client, got, sizeof(answer) - 1, &eof);
	assert_int_equal(n, sizeof(answer) - 1);
	assert_memory_equal(got, "HTTP/1.1 413", 12);
	spin(&f, 100);
	assert_null(f.w.tunnels);
	assert_int_equal(lstat_get(&f, LM_DOWNSTREAM_CX_ACTIVE), 0);
	teardown_fixture(&f);
}

/* Review finding, the other way round: the client resets, then the app
 * writes. The app must see the end promptly and the tunnel must end. */
static void
test_client_resets_then_app_writes(void **state)
{
	struct fixture f;
	char b[16];
	bool eof;

	setup_with(&f, NULL, 0);
	send_all(&f, f.client, "req", 3);
	assert_int_equal(recv_upto(&f, f.app_fd, b, 3, &eof), 3);
	/* Both land before the loop runs: the app's bytes (us readable) and the
	 * client's reset (ds readable); libev runs the upstream read first, so
	 * the write to the reset client fails before its read is seen. */
	sock_close_rst(f.client);
	f.client = -1;
	(void)send(f.app_fd, "late answer", 11, MSG_DONTWAIT | MSG_NOSIGNAL);
	poll(NULL, 0, 20);
	assert_int_equal(recv_upto(&f, f.app_fd, b, sizeof(b), &eof), 0);
	assert_true(eof);
	spin(&f, 100);
	assert_null(f.w.tunnels);
	teardown_fixture(&f);
}

/* Issue 7 §1: bytes and a FIN that are queued together go on together, in
 * the same event. Before, a short read ended the pump and the FIN waited for
 * the next event: the client had the whole answer before our FIN, closed
 * first and took TIME_WAIT on the tuple space of the sidecar's own outbound
 * connect()s, which then crawled. One loop iteration, both directions. */
static void
test_fin_goes_with_last_bytes(void **state)
{
	struct fixture f;
	char b[16];
	ssize_t n;

	setup_with(&f, NULL, 0);
	send_all(&f, f.app_fd, "answer", 6);
	shutdown(f.app_fd, SHUT_WR);
	poll(NULL, 0, 20);		/* both queued at the proxy (loopback) */
	ev_run(f.w.loop, EVRUN_NOWAIT);
	assert_int_equal(recv(f.client, b, sizeof(b), MSG_DONTWAIT), 6);
	n = recv(f.client, b, sizeof(b), MSG_DONTWAIT);
	assert_int_equal(n, 0);		/* EOF, not EAGAIN */
	send_all(&f, f.client, "bye", 3);
	shutdown(f.client, SHUT_WR);
	poll(NULL, 0, 20);
	ev_run(f.w.loop, EVRUN_NOWAIT);
	assert_int_equal(recv(f.app_fd, b, sizeof(b), MSG_DONTWAIT), 3);
	assert_int_equal(recv(f.app_fd, b, sizeof(b), MSG_DONTWAIT), 0);
	spin(&f, 20);
	assert_null(f.w.tunnels);
	teardown_fixture(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bytes_both_ways),
		cmocka_unit_test(test_half_close),
		cmocka_unit_test(test_back_pressure),
		cmocka_unit_test(test_copy_transport),
		cmocka_unit_test(test_connect_refused_resets_client),
		cmocka_unit_test(test_upstream_reset),
		cmocka_unit_test(test_idle_timeout),
		cmocka_unit_test(test_pipe_exhaustion_falls_back_to_copy),
		cmocka_unit_test(test_oom_fails_one_connection),
		cmocka_unit_test(test_app_answers_then_resets_during_upload),
		cmocka_unit_test(test_client_resets_then_app_writes),
		cmocka_unit_test(test_fin_goes_with_last_bytes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
