/* worker: N threads, each with its own event loop, SO_REUSEPORT listeners,
 * pools and counters; the control thread talks to them through mailboxes. */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "sock.h"
#include "tunnel.h"
#include "worker.h"

/* Accepts per wake-up and listener: bounded so accepting cannot starve I/O. */
#define ACCEPT_BATCH 64
/* Out of descriptors: stop accepting for this long instead of spinning. */
#define ACCEPT_PAUSE 0.1
/* Empty pipes and chunks a worker keeps for reuse. */
#define POOL_MAX_FREE 256

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
accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct listener *l = io->data;
	struct worker *w = l->w;

	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			tunnel_accept(w, l->kind, fd);
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		/* accept(2): errors of the dequeued connection (the network or its
		 * peer) come back here too; they concern that connection only. */
		if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == ENETDOWN ||
		    errno == ENOPROTOOPT || errno == EHOSTDOWN || errno == ENONET ||
		    errno == EHOSTUNREACH || errno == EOPNOTSUPP || errno == ENETUNREACH || errno == EPERM)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			/* The pending connection stays in the backlog; retry soon. */
			stat_add(&w->stats.lst[l->kind][LM_DOWNSTREAM_CX_OVERFLOW], 1);
			log_warn("%s listener: accept: %s; pausing %.0f ms", listener_names[l->kind],
			    strerror(errno), ACCEPT_PAUSE * 1000);
			ev_io_stop(loop, &l->io);
			ev_timer_set(&l->pause, ACCEPT_PAUSE, 0.);
			ev_timer_start(loop, &l->pause);
			return;
		}
		log_error("%s listener: accept: %s", listener_names[l->kind], strerror(errno));
		return;
	}
}

static void
accept_resume_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
	struct listener *l = tm->data;

	if (l->fd >= 0)
		ev_io_start(loop, &l->io);
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
	if (w->snap)
		wsnap_retire(w->snap);
	w->snap = ws;
	log_debug("configuration generation %llu", (unsigned long long)s->generation);
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
		worker_adopt(w, m->snap);
		free(m);
		m = next;
	}
	if (__atomic_load_n(&w->req_drain, __ATOMIC_ACQUIRE) && !w->draining) {
		/* Drain stops inbound only, as Istio's agent does (drain_listeners?
		 * inboundonly): the app may still call out while it shuts down. */
		w->draining = true;
		for (int f = 0; f < LISTENER_FAMILIES; f++)
			listener_close(w, &w->lst[LST_INBOUND][f]);
	}
	if (__atomic_load_n(&w->req_stop, __ATOMIC_ACQUIRE)) {
		listeners_close(w);
		tunnel_close_all(w);
		ev_async_stop(loop, &w->wake);
		ev_break(loop, EVBREAK_ALL);
	}
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
	worker_mbox_fini(w);
	if (w->snap)
		wsnap_retire(w->snap);
	w->snap = NULL;
	hupwatch_stop(&w->hup, w->loop);
	pool_destroy(&w->pool);
	ev_loop_destroy(w->loop);
	w->loop = NULL;
}

static int
worker_init(struct worker *w, unsigned id, struct snapshot *snap, char *err, size_t errlen)
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
	w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
	if (!w->loop) {
		snprintf(err, errlen, "worker %u: cannot create event loop", id);
		return -ENOMEM;
	}
	worker_mbox_init(w);
	w->snap = wsnap_new(snapshot_ref(snap));
	if (!w->snap) {
		snprintf(err, errlen, "worker %u: out of memory", id);
		return -ENOMEM;
	}
	if ((rc = hupwatch_start(&w->hup, w->loop)) < 0) {
		snprintf(err, errlen, "worker %u: epoll: %s", id, strerror(-rc));
		return rc;
	}

	static const int fams[LISTENER_FAMILIES] = { AF_INET, AF_INET6 };
	for (int f = 0; f < LISTENER_FAMILIES; f++) {
		if ((rc = listener_open(w, LST_OUTBOUND, fams[f], cfg->outbound_port, false, err, errlen)) < 0)
			return rc;
		if ((rc = listener_open(w, LST_INBOUND, fams[f], cfg->inbound_port,
		    cfg->mode == INTERCEPT_TPROXY, err, errlen)) < 0)
			return rc;
	}
	return 0;
}

int
workers_start(unsigned n, struct snapshot *snap, char *err, size_t errlen)
{
	int rc;

	workers = calloc(n, sizeof(*workers));
	if (!workers) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	nworkers = n;
	for (unsigned i = 0; i < n; i++) {
		if ((rc = worker_init(&workers[i], i, snap, err, errlen)) < 0)
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
