/* worker: N threads, each with its own event loop, SO_REUSEPORT listeners,
 * pools and counters; the control thread talks to them through mailboxes. */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "authz.h"
#include "log.h"
#include "sock.h"
#include "telemetry.h"
#include "hbone.h"
#include "tunnel.h"
#include "hbone.h"
#include "worker.h"
#include "xtls.h"

/* Accepts per wake-up and listener, HAProxy's tune.maxaccept: each accept
 * now runs its connection as far as it goes at once (read, connect, send:
 * tunnel.c's stage_connect), so a batch of 64 held every other socket's
 * events for as long (issue 7 §1: the p99 at 64 connections closing each
 * time). The rest wait in the backlog, which is FIFO, and the listener
 * takes its turn among the sockets again (readyq.h). */
#define ACCEPT_BATCH 4
/* Out of descriptors: stop accepting for this long instead of spinning. */
#define ACCEPT_PAUSE 0.1
/* Empty pipes and chunks a worker keeps for reuse (pool_trim() shrinks the
 * caches again when they are idle). */
#define POOL_MAX_FREE 256
#define POOL_TRIM_INTERVAL 1.0
/* Upstream TLS sessions kept per worker (one per peer address and identity). */
#define WORKER_TLS_SESSIONS 1024
/* Descriptors the workers leave to the control thread: stdio, the admin and
 * health listeners and their connections (32 per port), the main loop, the
 * log thread; and per worker, what it holds besides sessions and pipes (its
 * loop, four listeners, the reserve descriptor). */
#define FD_RESERVE_CONTROL 80
#define FD_RESERVE_PER_WORKER 8
/* A worker's budget is never below this (a tiny limit still serves a few). */
#define FD_BUDGET_MIN 8

static struct worker *workers;
static unsigned nworkers;

struct worker *
workers_get(unsigned *n)
{
	*n = nworkers;
	return workers;
}

uint64_t
workers_active_connections(void)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < nworkers; i++)
		for (int k = 0; k < LST__COUNT; k++)
			sum += stat_read(&workers[i].stats.lst[k][LM_DOWNSTREAM_CX_ACTIVE]);
	return sum;
}

static void
listener_close(struct worker *w, struct listener *l)
{
	if (l->fd < 0)
		return;
	ev_io_stop(w->loop, &l->io);
	ev_timer_stop(w->loop, &l->pause);
	readyq_cancel(&l->rq);
	close(l->fd);
	l->fd = -1;
}

static void
listeners_close(struct worker *w)
{
	for (int k = 0; k < LST__COUNT; k++)
		for (int f = 0; f < LISTENER_FAMILIES; f++)
			listener_close(w, &w->lst[k][f]);
}

static void
accept_pause(struct worker *w, struct listener *l, int err)
{
	log_warn("%s listener: accept: %s; pausing %.0f ms", listener_names[l->kind], strerror(err),
	    ACCEPT_PAUSE * 1000);
	ev_io_stop(w->loop, &l->io);
	ev_timer_set(&l->pause, ACCEPT_PAUSE, 0.);
	ev_timer_start(w->loop, &l->pause);
}

/* A connection we cannot serve: it gets a reset at once (not a wait in the
 * backlog until its own connect timeout), and is counted once. */
static void
accept_refuse(struct worker *w, struct listener *l, int fd, const char *why)
{
	sock_close_rst(fd);
	stat_add(&w->stats.lst[l->kind][LM_DOWNSTREAM_CX_OVERFLOW], 1);
	log_warn("%s listener: connection refused: %s", listener_names[l->kind], why);
}

/* accept(2) failed with EMFILE/ENFILE: give up the reserve descriptor for
 * the time it takes to accept the pending connection and reset it. Returns
 * true when one was refused (the caller goes on accepting), false when the
 * accept still failed (the caller pauses). */
static bool
accept_with_reserve(struct worker *w, struct listener *l, int *err)
{
	int fd;

	if (w->reserve_fd < 0)
		return false;
	close(w->reserve_fd);
	fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	*err = errno;
	if (fd >= 0)
		accept_refuse(w, l, fd, "out of descriptors");
	/* Another thread may have taken the slot meanwhile: then we run without
	 * a reserve (and pause) until accept_resume_cb gets one back. */
	w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (fd < 0 && (*err == EAGAIN || *err == EWOULDBLOCK))
		return false;
	return fd >= 0;
}

static void
accept_run(struct listener *l)
{
	struct worker *w = l->w;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage src;
		socklen_t srclen = sizeof(src);
		int fd = accept4(l->fd, (struct sockaddr *)&src, &srclen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			/* A session takes two descriptors; beyond the worker's share
			 * the admin and health ports would starve. */
			if (!pool_fd_room(&w->pool, 2))
				accept_refuse(w, l, fd, "descriptor budget used up");
			else if (l->kind == LST_HBONE)
				hbone_accept(w, fd, &src);
			else
				tunnel_accept(w, l->kind, fd, &src);
			continue;
		}
		int err = errno;
		if (err == EAGAIN || err == EWOULDBLOCK)
			return;
		/* accept(2): errors of the dequeued connection (the network or its
		 * peer) come back here too; they concern that connection only. */
		if (err == EINTR || err == ECONNABORTED || err == EPROTO || err == ENETDOWN ||
		    err == ENOPROTOOPT || err == EHOSTDOWN || err == ENONET ||
		    err == EHOSTUNREACH || err == EOPNOTSUPP || err == ENETUNREACH || err == EPERM)
			continue;
		if (err == EMFILE || err == ENFILE) {
			if (accept_with_reserve(w, l, &err))
				continue;
			if (err == EAGAIN || err == EWOULDBLOCK)
				return;
			accept_pause(w, l, err);
			return;
		}
		if (err == ENOBUFS || err == ENOMEM) {
			/* The pending connection stays in the backlog; retry soon. */
			accept_pause(w, l, err);
			return;
		}
		log_error("%s listener: accept: %s", listener_names[l->kind], strerror(err));
		return;
	}
}

static void
accept_readyq_cb(struct readyq_ent *e, int revents)
{
	accept_run((struct listener *)((char *)e - offsetof(struct listener, rq)));
}

static void
accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct listener *l = io->data;

	if (!readyq_defer(loop, &l->rq, accept_readyq_cb, revents))
		accept_run(l);
}

static void
accept_resume_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
	struct listener *l = tm->data;

	if (l->w->reserve_fd < 0)
		l->w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (l->fd >= 0)
		ev_io_start(loop, &l->io);
}

static void
trim_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
	struct worker *w = tm->data;

	pool_trim(&w->pool);
}

static void
worker_adopt(struct worker *w, struct snapshot *s)
{
	struct wsnap *ws = wsnap_new(s);

	if (!ws) {
		log_error("out of memory: keeping configuration generation %llu",
		    (unsigned long long)w->snap->s->generation);
		return;
	}
	if (w->snap) {
		lb_state_follow(&ws->lb, &w->snap->lb);	/* round robin carries on */
		wsnap_retire(w->snap);
	}
	w->snap = ws;
	log_debug("configuration generation %llu", (unsigned long long)s->generation);
	if (s->cfg.authz_close_denied)
		tunnel_recheck_authz(w);
}

static void
mbox_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct worker *w = a->data;
	struct wmsg *m;

	pthread_mutex_lock(&w->mbox_lock);
	m = w->mbox_head;
	w->mbox_head = w->mbox_tail = NULL;
	pthread_mutex_unlock(&w->mbox_lock);

	while (m) {
		struct wmsg *next = m->next;
		if (m->fn)
			m->fn(w, m->arg);
		else
			worker_adopt(w, m->snap);
		free(m);
		m = next;
	}
	if (__atomic_load_n(&w->req_drain, __ATOMIC_ACQUIRE) && !w->draining) {
		/* Drain stops inbound only, as Istio's agent does (drain_listeners?
		 * inboundonly): the app may still call out while it shuts down. */
		w->draining = true;
		for (int f = 0; f < LISTENER_FAMILIES; f++) {
			listener_close(w, &w->lst[LST_INBOUND][f]);
			listener_close(w, &w->lst[LST_HBONE][f]);
		}
		hbone_drain(w);
	}
	if (__atomic_load_n(&w->req_stop, __ATOMIC_ACQUIRE)) {
		listeners_close(w);
		tunnel_close_all(w);
		hbone_close_all(w);
		ev_async_stop(loop, &w->wake);
		ev_break(loop, EVBREAK_ALL);
	}
}

static void
mbox_put(struct worker *w, struct wmsg *m)
{
	pthread_mutex_lock(&w->mbox_lock);
	if (w->mbox_tail)
		w->mbox_tail->next = m;
	else
		w->mbox_head = m;
	w->mbox_tail = m;
	pthread_mutex_unlock(&w->mbox_lock);
	ev_async_send(w->loop, &w->wake);
}

void
worker_publish(struct worker *w, struct snapshot *snap)
{
	struct wmsg *m = calloc(1, sizeof(*m));

	if (!m) {
		log_error("out of memory: worker %u keeps its configuration", w->id);
		snapshot_unref(snap);
		return;
	}
	m->snap = snap;
	mbox_put(w, m);
}

int
worker_post(struct worker *w, void (*fn)(struct worker *w, void *arg), void *arg)
{
	struct wmsg *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->fn = fn;
	m->arg = arg;
	mbox_put(w, m);
	return 0;
}

void
worker_mbox_init(struct worker *w)
{
	pthread_mutex_init(&w->mbox_lock, NULL);
	w->mbox_head = w->mbox_tail = NULL;
	ev_async_init(&w->wake, mbox_cb);
	w->wake.data = w;
	ev_async_start(w->loop, &w->wake);
}

void
worker_mbox_fini(struct worker *w)
{
	ev_async_stop(w->loop, &w->wake);
	for (struct wmsg *m = w->mbox_head, *next; m; m = next) {
		next = m->next;
		if (m->fn)
			m->fn(NULL, m->arg);
		else
			snapshot_unref(m->snap);
		free(m);
	}
	w->mbox_head = w->mbox_tail = NULL;
	pthread_mutex_destroy(&w->mbox_lock);
}

static void
worker_request(struct worker *w, int *flag)
{
	__atomic_store_n(flag, 1, __ATOMIC_RELEASE);
	ev_async_send(w->loop, &w->wake);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	log_set_thread_tag(w->tag);
	log_debug("worker started");
	ev_run(w->loop, 0);
	log_debug("worker stopped");
	return NULL;
}

static int
listener_open(struct worker *w, enum listener_kind kind, int fam, uint16_t port, bool transparent,
    char *err, size_t errlen)
{
	struct listener *l = &w->lst[kind][fam == AF_INET ? 0 : 1];
	struct sockaddr_storage sa;
	int fd;

	sock_addr_parse(fam == AF_INET ? "0.0.0.0" : "::", port, &sa);
	fd = sock_listen(&sa, 4096, true, transparent);
	if (fd < 0) {
		/* No IPv6 in this kernel or namespace: serve IPv4 only. */
		if (fam == AF_INET6 && (fd == -EAFNOSUPPORT || fd == -EADDRNOTAVAIL)) {
			if (w->id == 0)
				log_info("%s listener: IPv6 unavailable (%s); IPv4 only", listener_names[kind], strerror(-fd));
			return 0;
		}
		snprintf(err, errlen, "%s listener on %s port %u: %s%s", listener_names[kind],
		    fam == AF_INET ? "0.0.0.0" : "[::]", port, strerror(-fd),
		    fd == -EPERM && transparent ? " (TPROXY needs CAP_NET_ADMIN)" : "");
		return fd;
	}
	l->fd = fd;
	l->family = fam;
	ev_io_init(&l->io, accept_cb, fd, EV_READ);
	l->io.data = l;
	ev_init(&l->pause, accept_resume_cb);
	l->pause.data = l;
	ev_io_start(w->loop, &l->io);
	return 0;
}

static void
worker_destroy(struct worker *w)
{
	if (!w->loop)
		return;
	listeners_close(w);
	tunnel_close_all(w);
	hbone_close_all(w);
	worker_mbox_fini(w);
	if (w->snap)
		wsnap_retire(w->snap);
	w->snap = NULL;
	hupwatch_stop(&w->hup, w->loop);
	readyq_stop(&w->readyq, w->loop);
	ev_timer_stop(w->loop, &w->trim);
	tele_worker_fini(w);
	pool_destroy(&w->pool);
	xtls_sessions_free(w->tls_sessions);
	w->tls_sessions = NULL;
	hbone_pool_free(w->hbone);
	w->hbone = NULL;
	if (w->reserve_fd >= 0)
		close(w->reserve_fd);
	w->reserve_fd = -1;
	ev_loop_destroy(w->loop);
	w->loop = NULL;
}

static int
worker_init(struct worker *w, unsigned id, struct snapshot *snap, unsigned fd_budget, char *err,
    size_t errlen)
{
	const struct config *cfg = &snap->cfg;
	int rc;

	w->id = id;
	snprintf(w->tag, sizeof(w->tag), "w%u", id);
	for (int k = 0; k < LST__COUNT; k++)
		for (int f = 0; f < LISTENER_FAMILIES; f++)
			w->lst[k][f] = (struct listener){ .kind = (enum listener_kind)k, .fd = -1, .w = w };
	w->hup.fd = -1;
	pool_init(&w->pool, POOL_MAX_FREE, w->stats.w);
	w->pool.fd_budget = fd_budget;
	w->stats.w[WM_FD_BUDGET] = fd_budget;
	w->reserve_fd = -1;
	w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	if (!w->loop) {
		snprintf(err, errlen, "worker %u: cannot create event loop", id);
		return -ENOMEM;
	}
	worker_mbox_init(w);
	/* Bounded: one session per upstream peer (address and identity) it
	 * talks to; beyond that the least recently used goes. */
	w->tls_sessions = xtls_sessions_new(WORKER_TLS_SESSIONS);
	w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	w->snap = wsnap_new(snapshot_ref(snap));
	if (!w->snap) {
		snprintf(err, errlen, "worker %u: out of memory", id);
		return -ENOMEM;
	}
	if ((rc = hupwatch_start(&w->hup, w->loop)) < 0) {
		snprintf(err, errlen, "worker %u: epoll: %s", id, strerror(-rc));
		return rc;
	}
	readyq_start(&w->readyq, w->loop);
	ev_timer_init(&w->trim, trim_cb, POOL_TRIM_INTERVAL, POOL_TRIM_INTERVAL);
	w->trim.data = w;
	ev_timer_start(w->loop, &w->trim);
	if ((rc = tele_worker_init(w, cfg)) < 0) {
		snprintf(err, errlen, "worker %u: out of memory for telemetry.maxLabelSets", id);
		return rc;
	}

	static const int fams[LISTENER_FAMILIES] = { AF_INET, AF_INET6 };
	for (int f = 0; f < LISTENER_FAMILIES; f++) {
		if ((rc = listener_open(w, LST_OUTBOUND, fams[f], cfg->outbound_port, false, err, errlen)) < 0)
			return rc;
		if ((rc = listener_open(w, LST_INBOUND, fams[f], cfg->inbound_port,
		    cfg->mode == INTERCEPT_TPROXY, err, errlen)) < 0)
			return rc;
		if ((rc = listener_open(w, LST_HBONE, fams[f], cfg->hbone_port, false, err, errlen)) < 0)
			return rc;
	}
	return 0;
}

/* Each worker's share of the open-files limit, after what the control thread
 * and the workers' own fixed descriptors need; 0 (no budget) when unlimited. */
static unsigned
worker_fd_budget(unsigned n)
{
	struct rlimit rl;
	rlim_t reserve = FD_RESERVE_CONTROL + (rlim_t)FD_RESERVE_PER_WORKER * n, per;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return 0;
	per = rl.rlim_cur > reserve ? (rl.rlim_cur - reserve) / n : 0;
	if (per < FD_BUDGET_MIN) {
		log_warn("open-files limit %llu is too low for %u workers: each may hold %u descriptors",
		    (unsigned long long)rl.rlim_cur, n, FD_BUDGET_MIN);
		per = FD_BUDGET_MIN;
	}
	return per > 0x7fffffff ? 0x7fffffff : (unsigned)per;
}

/* authz.h: a policy slot is reused; no worker counts into it any more (no
 * snapshot it holds has the old policy), so its counters are zeroed here,
 * on the control thread, for the new policy to start from 0. */
static void
reset_authz_slot(unsigned slot)
{
	for (unsigned i = 0; i < nworkers; i++)
		for (int k = 0; k < 2; k++)
			__atomic_store_n(&workers[i].stats.authz[slot * 2 + k], 0, __ATOMIC_RELAXED);
}

int
workers_start(unsigned n, struct snapshot *snap, char *err, size_t errlen)
{
	unsigned budget = worker_fd_budget(n);
	int rc;

	workers = calloc(n, sizeof(*workers));
	if (!workers) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	nworkers = n;
	authz_set_slot_reset(reset_authz_slot);
	for (unsigned i = 0; i < n; i++) {
		if ((rc = worker_init(&workers[i], i, snap, budget, err, errlen)) < 0)
			goto bad;
	}
	for (unsigned i = 0; i < n; i++) {
		if ((rc = -pthread_create(&workers[i].thread, NULL, worker_main, &workers[i])) < 0) {
			snprintf(err, errlen, "worker %u: pthread_create: %s", i, strerror(-rc));
			/* Stop the ones already running, then free all. */
			for (unsigned j = 0; j < i; j++) {
				worker_request(&workers[j], &workers[j].req_stop);
				pthread_join(workers[j].thread, NULL);
			}
			goto bad;
		}
	}
	if (budget)
		log_info("descriptor budget: %u per worker (about %u connections each)", budget, budget / 2);
	return 0;
bad:
	for (unsigned i = 0; i < n; i++)
		worker_destroy(&workers[i]);
	free(workers);
	workers = NULL;
	nworkers = 0;
	return rc;
}

void
workers_publish(struct snapshot *snap)
{
	for (unsigned i = 0; i < nworkers; i++)
		worker_publish(&workers[i], snapshot_ref(snap));
}

void
workers_drain(void)
{
	for (unsigned i = 0; i < nworkers; i++)
		worker_request(&workers[i], &workers[i].req_drain);
}

void
workers_stop(void)
{
	for (unsigned i = 0; i < nworkers; i++)
		worker_request(&workers[i], &workers[i].req_stop);
	for (unsigned i = 0; i < nworkers; i++)
		pthread_join(workers[i].thread, NULL);
	for (unsigned i = 0; i < nworkers; i++)
		worker_destroy(&workers[i]);
	free(workers);
	workers = NULL;
	nworkers = 0;
}
