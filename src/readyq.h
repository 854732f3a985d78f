/* readyq: a loop's socket events delivered in the order epoll reported them.
 *
 * libev calls the watchers of one poll last-reported first, so in a batch of
 * n ready sockets the one that became ready first waits for the other n-1,
 * and the listener's accepts (new work) could run ahead of connections that
 * were ready before them. Under churn at 64 connections that reversal is the
 * tail of the latency (issue 7 §1). With a readyq on the loop (it takes the
 * loop's userdata), a watcher's callback only queues its entry; a check
 * watcher of the lowest priority, which libev runs after every other watcher
 * of the same poll, calls the entries first-reported first. Loops without a
 * readyq (the control thread's) call back at once. */
#ifndef OR_READYQ_H
#define OR_READYQ_H

#include <ev.h>
#include <stdbool.h>

struct readyq_ent;
typedef void readyq_fn(struct readyq_ent *e, int revents);

/* Embedded in what a watcher serves (a conn, a listener). */
struct readyq_ent {
	struct readyq_ent *next, **pprev;	/* pprev NULL: not queued */
	int revents;
	readyq_fn *fn;
};

struct readyq {
	ev_check run;
	struct readyq_ent *head;
	unsigned ran;		/* ev_iteration() of the last run */
};

void readyq_start(struct readyq *s, struct ev_loop *loop);
/* Drops what is queued; safe on a sched never started. */
void readyq_stop(struct readyq *s, struct ev_loop *loop);

/* From a watcher's callback, for events from the poll: queue e (once per
 * poll; events reported again are merged) to be called with fn. False when
 * the loop has no sched, or its queue already ran for this poll (nothing
 * would run it before the next one): the caller goes on at once. */
bool readyq_defer(struct ev_loop *loop, struct readyq_ent *e, readyq_fn *fn, int revents);

/* Take e out of the queue (it is closed, or about to be freed). */
void readyq_cancel(struct readyq_ent *e);

#endif
