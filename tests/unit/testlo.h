/* testlo.h: what the unit tests that run real loopback sockets through a
 * hand-built worker share (test_tunnel.c, test_snapshot.c). Include after
 * cmocka.h. */
#ifndef OR_TESTLO_H
#define OR_TESTLO_H

#include <poll.h>
#include <time.h>

#include "sock.h"
#include "worker-t.h"

static inline double
now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A listening socket on 127.0.0.1, port chosen by the kernel (in *sa). */
static inline int
listen_lo(struct sockaddr_storage *sa)
{
	socklen_t len = sizeof(*sa);
	sock_addr_parse("127.0.0.1", 0, sa);
	int fd = sock_listen(sa, 64, false, false);
	assert_true(fd >= 0);
	getsockname(fd, (struct sockaddr *)sa, &len);
	return fd;
}

/* Accept one connection within 2 s (non-blocking socket), or fail the test. */
static inline int
accept_wait(int lfd)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 2000), 1);
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
	assert_true(fd >= 0);
	return fd;
}

/* The parts of a worker the data path uses: loop, hang-up watch, dispatch, pools and
 * a current snapshot of cfg. No threads, listeners or mailbox. */
static inline void
test_worker_init(struct worker *w, const struct config *cfg, unsigned pool_max)
{
	w->loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(w->loop);
	assert_int_equal(hupwatch_start(&w->hup, w->loop), 0);
	readyq_start(&w->readyq, w->loop);
	pool_init(&w->pool, pool_max, w->stats.w);
	w->snap = wsnap_new(snapshot_new(cfg, NULL, 1));
	assert_non_null(w->snap);
}

static inline void
test_worker_fini(struct worker *w)
{
	hupwatch_stop(&w->hup, w->loop);
	readyq_stop(&w->readyq, w->loop);
	wsnap_retire(w->snap);
	pool_destroy(&w->pool);
	ev_loop_destroy(w->loop);
}

#endif
