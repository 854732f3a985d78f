/* Unit tests for src/conn.c with src/readyq.c: a loop's socket
 * events reach their owners in the order epoll reported them, where libev
 * alone calls them last-reported first (issue 7 §1: under churn at 64
 * connections that reversal was the tail of the latency). An owner may
 * close, free or re-arm conns still queued in the same batch. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"

#define N 16

struct fix {
	struct ev_loop *loop;
	struct readyq readyq;
	struct conn *c[N];
	int peer[N];
	int order[N];		/* indexes in the order the owners were called */
	int called;
	/* What the callback of conn `actor` does to conn `victim`. */
	int actor, victim;
	enum { ACT_NONE, ACT_CLOSE_FREE, ACT_DISARM, ACT_ARM_PENDING } act;
};

static struct fix *fx;

static int
index_of(struct conn *c)
{
	for (int i = 0; i < N; i++)
		if (fx->c[i] == c)
			return i;
	fail_msg("unknown conn");
	return -1;
}

/* A raw transport that also says it holds bytes (as TLS does): conn_arm
 * then feeds an event instead of waiting for the socket. */
static struct conn_ops pending_ops;

static size_t
some_pending(struct conn *c)
{
	return 1;
}

static void
ready(struct conn *c, int what)
{
	int i = index_of(c);
	char buf[16];

	assert_true(what & CONN_RD);
	assert_true(fx->called < N);
	fx->order[fx->called++] = i;
	if (c->ops != &pending_ops)
		assert_true(recv(c->fd, buf, sizeof(buf), 0) > 0);
	conn_arm(c, 0);
	if (i != fx->actor)
		return;
	struct conn *v = fx->c[fx->victim];
	switch (fx->act) {
	case ACT_CLOSE_FREE:
		conn_close(v, CONN_GRACEFUL);
		free(v);	/* ASan: a call back into it would be a use after free */
		fx->c[fx->victim] = NULL;
		break;
	case ACT_DISARM:
		conn_arm(v, 0);
		break;
	case ACT_ARM_PENDING:
		v->ops = &pending_ops;
		conn_arm(v, CONN_RD);
		break;
	case ACT_NONE:
		break;
	}
}

static void
setup(struct fix *f, bool queued)
{
	*f = (struct fix){ .actor = -1 };
	fx = f;
	pending_ops = raw_ops;
	pending_ops.pending = some_pending;
	assert_non_null(f->loop = ev_loop_new(EVFLAG_AUTO));
	if (queued)
		readyq_start(&f->readyq, f->loop);
	for (int i = 0; i < N; i++) {
		int sv[2];
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
		assert_non_null(f->c[i] = calloc(1, sizeof(struct conn)));
		conn_init(f->c[i], f->loop, sv[0], &raw_ops, ready, f, -1);
		conn_arm(f->c[i], CONN_RD);
		f->peer[i] = sv[1];
	}
	/* Register every watcher with epoll before any becomes ready. */
	ev_run(f->loop, EVRUN_NOWAIT);
	assert_int_equal(f->called, 0);
}

static void
teardown(struct fix *f)
{
	for (int i = 0; i < N; i++) {
		if (f->c[i]) {
			conn_close(f->c[i], CONN_GRACEFUL);
			free(f->c[i]);
		}
		close(f->peer[i]);
	}
	readyq_stop(&f->readyq, f->loop);
	ev_loop_destroy(f->loop);
}

/* Make the conns readable in the order perm gives, then run one poll. */
static void
make_ready(struct fix *f, const int *perm)
{
	for (int k = 0; k < N; k++)
		assert_int_equal(write(f->peer[perm[k]], "x", 1), 1);
	ev_run(f->loop, EVRUN_NOWAIT);
}

static const int perm[N] = { 5, 12, 0, 9, 3, 15, 7, 1, 14, 10, 2, 6, 11, 4, 13, 8 };

static void
test_kernel_order(void **state)
{
	struct fix f;

	setup(&f, true);
	make_ready(&f, perm);
	assert_int_equal(f.called, N);
	for (int k = 0; k < N; k++)
		assert_int_equal(f.order[k], perm[k]);
	teardown(&f);
}

/* The reason for the queue: libev by itself calls them in reverse. */
static void
test_without_readyq_reversed(void **state)
{
	struct fix f;

	setup(&f, false);
	make_ready(&f, perm);
	assert_int_equal(f.called, N);
	for (int k = 0; k < N; k++)
		assert_int_equal(f.order[k], perm[N - 1 - k]);
	teardown(&f);
}

/* The first called closes and frees one still queued behind it. */
static void
test_closed_while_queued(void **state)
{
	struct fix f;

	setup(&f, true);
	f.actor = perm[0];
	f.victim = perm[7];
	f.act = ACT_CLOSE_FREE;
	make_ready(&f, perm);
	assert_int_equal(f.called, N - 1);
	for (int k = 0, j = 0; k < N; k++)
		if (perm[k] != f.victim)
			assert_int_equal(f.order[j++], perm[k]);
	teardown(&f);
}

/* Disarmed while queued: its owner no longer wants to hear of it. */
static void
test_disarmed_while_queued(void **state)
{
	struct fix f;

	setup(&f, true);
	f.actor = perm[0];
	f.victim = perm[N - 1];
	f.act = ACT_DISARM;
	make_ready(&f, perm);
	assert_int_equal(f.called, N - 1);
	teardown(&f);
}

/* A conn armed during the queue's run for bytes its transport holds is
 * called in the same loop iteration, not after the next poll (which might
 * never come). */
static void
test_fed_during_run(void **state)
{
	struct fix f;

	setup(&f, true);
	/* Only the first N-1 become readable; the last is armed by the first. */
	f.actor = perm[0];
	f.victim = perm[N - 1];
	f.act = ACT_ARM_PENDING;
	for (int k = 0; k < N - 1; k++)
		assert_int_equal(write(f.peer[perm[k]], "x", 1), 1);
	ev_run(f.loop, EVRUN_NOWAIT);
	assert_int_equal(f.called, N);
	for (int k = 0; k < N - 1; k++)
		assert_int_equal(f.order[k], perm[k]);
	assert_int_equal(f.order[N - 1], perm[N - 1]);
	f.c[perm[N - 1]]->ops = &raw_ops;
	teardown(&f);
}

/* Any watcher can wait its turn (the listeners do): an entry of its own,
 * queued from its callback, runs among the conns in the kernel's order. */
struct other {
	ev_io io;
	struct readyq_ent rq;
	int fd, peer;
};

static void
other_run(struct readyq_ent *e, int revents)
{
	struct other *o = (struct other *)((char *)e - offsetof(struct other, rq));
	char b;

	assert_true(revents & EV_READ);
	assert_int_equal(read(o->fd, &b, 1), 1);
	fx->order[fx->called++] = -1;
}

static void
other_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct other *o = io->data;

	assert_true(readyq_defer(loop, &o->rq, other_run, revents));
}

static void
test_other_entry_in_order(void **state)
{
	struct other o = { 0 };
	struct fix f;
	int sv[2];

	setup(&f, true);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	o.fd = sv[0];
	o.peer = sv[1];
	ev_io_init(&o.io, other_cb, o.fd, EV_READ);
	o.io.data = &o;
	ev_io_start(f.loop, &o.io);
	ev_run(f.loop, EVRUN_NOWAIT);
	/* Ready third of five: a conn, another, it, two more. */
	for (int k = 0; k < 5; k++) {
		int fd = k == 2 ? o.peer : f.peer[perm[k < 2 ? k : k - 1]];
		assert_int_equal(write(fd, "x", 1), 1);
	}
	ev_run(f.loop, EVRUN_NOWAIT);
	assert_int_equal(f.called, 5);
	assert_int_equal(f.order[0], perm[0]);
	assert_int_equal(f.order[1], perm[1]);
	assert_int_equal(f.order[2], -1);
	assert_int_equal(f.order[3], perm[2]);
	assert_int_equal(f.order[4], perm[3]);
	ev_io_stop(f.loop, &o.io);
	readyq_cancel(&o.rq);
	close(o.fd);
	close(o.peer);
	teardown(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kernel_order),
		cmocka_unit_test(test_without_readyq_reversed),
		cmocka_unit_test(test_closed_while_queued),
		cmocka_unit_test(test_disarmed_while_queued),
		cmocka_unit_test(test_fed_during_run),
		cmocka_unit_test(test_other_entry_in_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
