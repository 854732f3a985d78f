/* readyq: a loop's socket events in the kernel's order (see sched.h). */
#include "autoconfig.h"

#include <stddef.h>

#include "readyq.h"

void
readyq_cancel(struct readyq_ent *e)
{
	if (!e->pprev)
		return;
	*e->pprev = e->next;
	if (e->next)
		e->next->pprev = e->pprev;
	e->next = NULL;
	e->pprev = NULL;
}

bool
readyq_defer(struct ev_loop *loop, struct readyq_ent *e, readyq_fn *fn, int revents)
{
	struct readyq *s = ev_userdata(loop);

	if (!s || s->ran == ev_iteration(loop))
		return false;
	if (e->pprev) {
		e->revents |= revents;
		return true;
	}
	/* libev calls last-reported first: pushing each at the head leaves the
	 * queue in the order epoll reported them. */
	e->revents = revents;
	e->fn = fn;
	e->next = s->head;
	if (s->head)
		s->head->pprev = &e->next;
	e->pprev = &s->head;
	s->head = e;
	return true;
}

static void
run_cb(struct ev_loop *loop, ev_check *chk, int revents)
{
	struct readyq *s = chk->data;
	struct readyq_ent *e;

	/* A call may cancel (close, free) any entry still queued. Whatever is
	 * deferred from here on, before the next poll, runs at once. */
	s->ran = ev_iteration(loop);
	while ((e = s->head)) {
		int ev = e->revents;

		readyq_cancel(e);
		e->fn(e, ev);
	}
}

void
readyq_start(struct readyq *s, struct ev_loop *loop)
{
	s->head = NULL;
	s->ran = ev_iteration(loop) - 1;
	ev_check_init(&s->run, run_cb);
	s->run.data = s;
	ev_set_priority(&s->run, EV_MINPRI);
	ev_check_start(loop, &s->run);
	ev_unref(loop);		/* it keeps no loop running */
	ev_set_userdata(loop, s);
}

void
readyq_stop(struct readyq *s, struct ev_loop *loop)
{
	if (!ev_is_active(&s->run))
		return;
	ev_set_userdata(loop, NULL);
	ev_ref(loop);
	ev_check_stop(loop, &s->run);
	while (s->head)
		readyq_cancel(s->head);
}
