/* ondemand: on-demand workload discovery: the waiting connections of each
 * worker, the queue of lookups to the control thread, and the control
 * thread's bounded cache of what was subscribed by name (HACKING.md,
 * "On-demand discovery"). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "model.h"
#include "ondemand.h"
#include "server.h"
#include "worker.h"
#include "xds.h"

/* Worker-local negative answers: a direct-mapped table per worker, so that
 * a destination istiod does not know (an external host in ALLOW_ANY) costs
 * its connections no trip to the control thread while the answer holds. */
#define OD_NEG_SLOTS 256
/* The sweep runs at most this far apart while anything is cached. */
#define OD_SWEEP_S 1.0

/* ---- shared state (set at start, read by the workers) ---- */

bool ondemand_on;
static char od_net[128];
static uint32_t od_timeout_ms, od_idle_ms;
static size_t od_cap;

/* Last-use stamps: seconds (of ev_now), indexed by a hash of the address.
 * Workers store, the sweep loads, both relaxed: a stamp is a hint that an
 * entry was used, and two addresses sharing a slot only keep one of them a
 * little longer (4 slots per cache entry make that rare). */
static uint32_t *od_stamps;
static size_t od_stamp_mask;

/* The queue from the workers: fixed-size requests under one mutex, held
 * for a copy only. full: requests refused since the last drain. */
static pthread_mutex_t od_qlock = PTHREAD_MUTEX_INITIALIZER;
static struct od_key od_q[ONDEMAND_QUEUE_MAX];
static size_t od_qn;
static uint64_t od_qfull;

/* Per worker: the waiting connections and the negative answers. Only the
 * worker's own thread touches its element. */
struct od_neg {
	struct od_key k;
	double until;
};
struct od_wstate {
	struct od_wait *head;
	struct od_neg neg[OD_NEG_SLOTS];
};
static struct od_wstate *od_ws;
static unsigned od_nws;

/* ---- the control thread's cache ---- */

/* Names to (un)subscribe, collected during one event. */
struct od_names {
	char **v;
	size_t n, cap;
};

struct od_entry {
	struct od_key k;
	char *name;			/* "<network>/<ip>" */
	enum od_state st;
	double t0;			/* LOOKING: asked at; FOUND: found at; MISSING: answered at */
	double neg_until;		/* MISSING: dropped (unsubscribed) then */
	struct od_names brought;	/* what its answer brought (od_brought), unsubscribed with it */
	struct od_entry *hnext;		/* hash chain */
	struct od_entry *prev, *next;	/* every entry */
};

static struct ev_loop *od_loop;
static ev_async od_async;
static ev_timer od_timer;
static struct od_entry **od_buckets;
static size_t od_bucket_mask;
static struct od_entry *od_all;
static size_t od_n, od_nlooking;

/* Answers collected during one event, flushed to the workers at its end. */
static struct od_answer *od_pend;
static size_t od_npend, od_pendcap;
static ondemand_deliver_fn *od_deliver;
static double od_test_now;	/* ondemand_set_time: tests' clock (0: the loop's) */

static double
od_time(void)
{
	return od_test_now ? od_test_now : ev_now(od_loop);
}

/* One batch of answers, shared by every worker's mailbox message. */
struct od_batch {
	unsigned long refs;	/* atomic */
	size_t n;
	struct od_answer a[];
};

/* ---- names and keys ---- */

static bool
od_key_of(const struct sockaddr_storage *a, struct od_key *k)
{
	memset(k, 0, sizeof(*k));
	if (a->ss_family == AF_INET) {
		k->fam = 4;
		memcpy(k->addr, &((const struct sockaddr_in *)a)->sin_addr, 4);
		return true;
	}
	if (a->ss_family == AF_INET6) {
		const struct in6_addr *in6 = &((const struct sockaddr_in6 *)a)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(in6)) {
			k->fam = 4;
			memcpy(k->addr, &in6->s6_addr[12], 4);
		} else {
			k->fam = 6;
			memcpy(k->addr, in6, 16);
		}
		return true;
	}
	return false;
}

static void
od_sockaddr(const struct od_key *k, struct sockaddr_storage *a)
{
	memset(a, 0, sizeof(*a));
	if (k->fam == 4) {
		struct sockaddr_in *s = (struct sockaddr_in *)a;
		s->sin_family = AF_INET;
		memcpy(&s->sin_addr, k->addr, 4);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)a;
		s->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, k->addr, 16);
	}
}

static int
od_key_name(char *out, size_t len, const char *network, const struct od_key *k)
{
	char ip[INET6_ADDRSTRLEN];

	if (!inet_ntop(k->fam == 4 ? AF_INET : AF_INET6, k->addr, ip, sizeof(ip)))
		return -1;
	return snprintf(out, len, "%s/%s", network ? network : "", ip);
}

int
ondemand_name(char *out, size_t len, const char *network, const struct sockaddr_storage *a)
{
	struct od_key k;

	if (!od_key_of(a, &k))
		return -1;
	return od_key_name(out, len, network, &k);
}

/* "<our network>/<ip>" back to a key; false for anything else (a uid, a
 * "namespace/hostname", a CIDR alias "<net>/<ip>/<len>", another network). */
static bool
od_parse(const char *name, struct od_key *k)
{
	const char *slash = strrchr(name, '/');
	size_t nl = strlen(od_net);

	if (!slash || (size_t)(slash - name) != nl || strncmp(name, od_net, nl) != 0)
		return false;
	memset(k, 0, sizeof(*k));
	if (inet_pton(AF_INET, slash + 1, k->addr) == 1) {
		k->fam = 4;
		return true;
	}
	struct in6_addr in6;	/* not k->addr itself: in6_addr is 4-byte aligned, k->addr is not */
	if (inet_pton(AF_INET6, slash + 1, &in6) == 1) {
		if (IN6_IS_ADDR_V4MAPPED(&in6)) {
			k->fam = 4;
			memcpy(k->addr, &in6.s6_addr[12], 4);
		} else {
			k->fam = 6;
			memcpy(k->addr, &in6, 16);
		}
		return true;
	}
	return false;
}

static uint32_t
od_hash(const struct od_key *k)
{
	uint32_t h = 2166136261u;	/* FNV-1a */

	h = (h ^ k->fam) * 16777619u;
	for (int i = 0; i < (k->fam == 4 ? 4 : 16); i++)
		h = (h ^ k->addr[i]) * 16777619u;
	return h ^ (h >> 15);
}

static bool
od_key_eq(const struct od_key *a, const struct od_key *b)
{
	return a->fam == b->fam && memcmp(a->addr, b->addr, 16) == 0;
}

/* ---- the data path ---- */

void
ondemand_touch(const struct sockaddr_storage *dst, double now)
{
	struct od_key k;
	uint32_t *slot, s = (uint32_t)now;

	if (!od_stamps || !od_key_of(dst, &k))
		return;
	slot = &od_stamps[od_hash(&k) & od_stamp_mask];
	/* Only when the second changed: connections to one destination on
	 * every worker would otherwise bounce its cache line. */
	if (__atomic_load_n(slot, __ATOMIC_RELAXED) != s)
		__atomic_store_n(slot, s, __ATOMIC_RELAXED);
}

static void
od_link(struct od_wstate *ws, struct od_wait *wt)
{
	wt->prev = NULL;
	wt->next = ws->head;
	if (ws->head)
		ws->head->prev = wt;
	ws->head = wt;
}

static void
od_unlink(struct od_wstate *ws, struct od_wait *wt)
{
	if (wt->prev)
		wt->prev->next = wt->next;
	else if (ws->head == wt)
		ws->head = wt->next;
	if (wt->next)
		wt->next->prev = wt->prev;
	wt->prev = wt->next = NULL;
}

int
ondemand_wait(struct od_wait *wt, unsigned wid, const struct sockaddr_storage *dst, double now)
{
	struct od_wstate *ws;
	struct od_neg *ng;
	bool full;

	if (!ondemand_on || wid >= od_nws || !od_key_of(dst, &wt->k))
		return -EINVAL;
	ws = &od_ws[wid];
	ng = &ws->neg[od_hash(&wt->k) & (OD_NEG_SLOTS - 1)];
	if (ng->until > now && od_key_eq(&ng->k, &wt->k))
		return -ENOENT;
	pthread_mutex_lock(&od_qlock);
	full = od_qn >= ONDEMAND_QUEUE_MAX;
	if (full)
		od_qfull++;
	else
		od_q[od_qn++] = wt->k;
	pthread_mutex_unlock(&od_qlock);
	/* Also when full: the control thread folds the count into /stats. */
	ev_async_send(od_loop, &od_async);
	if (full)
		return -EAGAIN;
	wt->worker = wid;
	od_link(ws, wt);
	return 0;
}

void
ondemand_cancel(struct od_wait *wt)
{
	if (wt->worker < od_nws)
		od_unlink(&od_ws[wt->worker], wt);
}

void
ondemand_answers(unsigned wid, const struct od_answer *a, size_t n, double now)
{
	struct od_wstate *ws;

	if (wid >= od_nws)
		return;
	ws = &od_ws[wid];
	for (size_t i = 0; i < n; i++) {
		struct od_neg *ng = &ws->neg[od_hash(&a[i].k) & (OD_NEG_SLOTS - 1)];
		if (!a[i].found && a[i].neg_until > now) {
			ng->k = a[i].k;
			ng->until = a[i].neg_until;
		} else if (a[i].found && od_key_eq(&ng->k, &a[i].k)) {
			ng->until = 0;
		}
	}
	/* Every waiter of this worker against the batch: waiters are the
	 * connections that arrived within one lookup's time, batches small. */
	for (struct od_wait *wt = ws->head, *next; wt; wt = next) {
		next = wt->next;
		for (size_t i = 0; i < n; i++) {
			if (!od_key_eq(&wt->k, &a[i].k))
				continue;
			od_unlink(ws, wt);
			wt->resume(wt, a[i].found);	/* may free wt; next is another's */
			break;
		}
	}
}

static void
od_batch_run(struct worker *w, void *arg)
{
	struct od_batch *b = arg;

	if (w)
		ondemand_answers(w->id, b->a, b->n, ev_now(w->loop));
	if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(b);
}

/* Default delivery: one batch, a reference per worker, through each
 * worker's mailbox, behind the snapshot server_publish queued before. */
static void
od_deliver_workers(const struct od_answer *a, size_t n)
{
	unsigned nw;
	struct worker *ws = workers_get(&nw);
	struct od_batch *b;

	if (!nw)
		return;
	if (!(b = malloc(sizeof(*b) + n * sizeof(*a)))) {
		/* The waiting connections' own deadlines release them. */
		log_error("on demand: out of memory answering %zu lookups", n);
		return;
	}
	b->refs = nw;
	b->n = n;
	memcpy(b->a, a, n * sizeof(*a));
	for (unsigned i = 0; i < nw; i++)
		if (worker_post(&ws[i], od_batch_run, b) < 0)
			od_batch_run(NULL, b);
}

/* ---- the cache (control thread) ---- */

static struct od_entry *
od_find(const struct od_key *k)
{
	if (!od_buckets)
		return NULL;
	for (struct od_entry *e = od_buckets[od_hash(k) & od_bucket_mask]; e; e = e->hnext)
		if (od_key_eq(&e->k, k))
			return e;
	return NULL;
}

static struct od_entry *
od_find_name(const char *name)
{
	struct od_key k;

	return od_parse(name, &k) ? od_find(&k) : NULL;
}

/* Whether the running snapshot (published to the workers) knows k: a
 * service VIP (whatever the port) or a workload address. */
static bool
od_known(const struct od_key *k)
{
	struct sockaddr_storage a;
	const struct model *m = server.snap ? server.snap->model : NULL;

	if (!m)
		return false;
	od_sockaddr(k, &a);
	return model_service_vip(m, &a) || model_workload_at(m, &a);
}

static void
od_answer(const struct od_key *k, bool found, double neg_until)
{
	if (od_npend == od_pendcap) {
		size_t cap = od_pendcap ? 2 * od_pendcap : 16;
		struct od_answer *p = realloc(od_pend, cap * sizeof(*p));
		if (!p)
			return;	/* the connections' own deadlines release them */
		od_pend = p;
		od_pendcap = cap;
	}
	od_pend[od_npend++] = (struct od_answer){ .k = *k, .found = found, .neg_until = neg_until };
}

static void
od_flush(void)
{
	if (od_npend && od_deliver)
		od_deliver(od_pend, od_npend);
	od_npend = 0;
	server.stats[SM_ONDEMAND_CACHED] = od_n;
}

static void
od_set_state(struct od_entry *e, enum od_state st, double now)
{
	if (e->st == OD_LOOKING)
		od_nlooking--;
	if (st == OD_LOOKING)
		od_nlooking++;
	e->st = st;
	e->t0 = now;
	e->neg_until = st == OD_MISSING ? now + ONDEMAND_NEGATIVE_S : 0;
}

static struct od_entry *
od_new(const struct od_key *k, double now)
{
	char name[sizeof(od_net) + INET6_ADDRSTRLEN + 2];
	struct od_entry *e = calloc(1, sizeof(*e));
	size_t b;

	if (!e)
		return NULL;
	od_key_name(name, sizeof(name), od_net, k);
	if (!(e->name = strdup(name))) {
		free(e);
		return NULL;
	}
	e->k = *k;
	e->st = OD_NONE;
	od_set_state(e, OD_LOOKING, now);
	b = od_hash(k) & od_bucket_mask;
	e->hnext = od_buckets[b];
	od_buckets[b] = e;
	e->next = od_all;
	if (od_all)
		od_all->prev = e;
	od_all = e;
	od_n++;
	return e;
}

static void
od_free(struct od_entry *e)
{
	struct od_entry **pp = &od_buckets[od_hash(&e->k) & od_bucket_mask];

	while (*pp && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = e->hnext;
	if (e->prev)
		e->prev->next = e->next;
	else
		od_all = e->next;
	if (e->next)
		e->next->prev = e->prev;
	if (e->st == OD_LOOKING)
		od_nlooking--;
	od_n--;
	for (size_t i = 0; i < e->brought.n; i++)
		free(e->brought.v[i]);
	free(e->brought.v);
	free(e->name);
	free(e);
}

static void
od_names_add(struct od_names *ns, const char *name)
{
	for (size_t i = 0; i < ns->n; i++)
		if (strcmp(ns->v[i], name) == 0)
			return;
	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? 2 * ns->cap : 16;
		char **v = realloc(ns->v, cap * sizeof(*v));
		if (!v)
			return;
		ns->v = v;
		ns->cap = cap;
	}
	if ((ns->v[ns->n] = strdup(name)))
		ns->n++;
}

static void
od_names_unsubscribe(struct od_names *ns)
{
	int rc;

	if (ns->n && (rc = xds_unsubscribe(MRES_ADDRESS, (const char *const *)ns->v, ns->n)) < 0)
		log_warn("on demand: unsubscribing %zu names: %s", ns->n, strerror(-rc));
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	*ns = (struct od_names){ 0 };
}

/* Is the workload uid the resolution of another FOUND entry (a direct
 * lookup of its address), which must keep it? */
static bool
od_uid_kept(const struct model *m, const char *uid, const struct od_entry *except)
{
	struct sockaddr_storage a;

	for (struct od_entry *e = od_all; e; e = e->next) {
		if (e == except || e->st != OD_FOUND)
			continue;
		od_sockaddr(&e->k, &a);
		const struct mworkload *wl = model_workload_at(m, &a);
		if (wl && strcmp(wl->uid, uid) == 0)
			return true;
		const struct mservice *s = model_service_vip(m, &a);
		for (size_t p = 0; s && p < s->nports; p++)
			for (size_t i = 0; i < s->ports[p].neps; i++)
				if (strcmp(s->ports[p].eps[i].wl->uid, uid) == 0)
					return true;
	}
	return false;
}

/* Did another FOUND entry's answer bring name (a dual-stack Service's
 * other VIP brought the same Service)? */
static bool
od_brought_by_other(const char *name, const struct od_entry *except)
{
	for (struct od_entry *e = od_all; e; e = e->next) {
		if (e == except || e->st != OD_FOUND)
			continue;
		for (size_t i = 0; i < e->brought.n; i++)
			if (strcmp(e->brought.v[i], name) == 0)
				return true;
	}
	return false;
}

/* What an entry brought in: istiod merges the names it answered a lookup
 * with into the subscription (a VIP brings the Service and its endpoint
 * Workloads, pilot/pkg/xds/workload.go generateDeltasOndemand), so
 * unsubscribing the lookup name alone would leave them pushed to us for
 * ever. They are subscribed when found (the client's subscription then is
 * what the server holds, and a reconnect asks for them again) and
 * unsubscribed with the entry; when evicting, names another entry still
 * needs stay. */
static void
od_brought(struct od_entry *e, struct od_names *ns, bool evicting)
{
	const struct model *m = server.snap ? server.snap->model : NULL;
	struct sockaddr_storage a;

	if (!m || e->st != OD_FOUND)
		return;
	od_sockaddr(&e->k, &a);
	const struct mservice *s = model_service_vip(m, &a);
	if (s) {
		if (!evicting || !od_brought_by_other(s->key, e))
			od_names_add(ns, s->key);
		for (size_t p = 0; p < s->nports; p++)
			for (size_t i = 0; i < s->ports[p].neps; i++) {
				const char *uid = s->ports[p].eps[i].wl->uid;
				if (!evicting || !od_uid_kept(m, uid, e))
					od_names_add(ns, uid);
			}
		return;
	}
	const struct mworkload *wl = model_workload_at(m, &a);
	if (wl && (!evicting || !od_uid_kept(m, wl->uid, e)))
		od_names_add(ns, wl->uid);
}

/* The entry's name, what the model says it brings now (endpoints that
 * joined since), and what its answer brought: a Service removed since, or
 * an entry no longer found, leaves no trace in the model of the Workloads
 * its lookup subscribed. */
static void
od_evict_names(struct od_entry *e, struct od_names *ns)
{
	const struct model *m = server.snap ? server.snap->model : NULL;

	od_names_add(ns, e->name);
	od_brought(e, ns, true);
	for (size_t i = 0; i < e->brought.n; i++)
		if (!od_brought_by_other(e->brought.v[i], e) && (!m || !od_uid_kept(m, e->brought.v[i], e)))
			od_names_add(ns, e->brought.v[i]);
}

static void
od_names_free(struct od_names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	*ns = (struct od_names){ 0 };
}

static double
od_last_use(const struct od_entry *e)
{
	double stamp = od_stamps ? (double)__atomic_load_n(&od_stamps[od_hash(&e->k) & od_stamp_mask],
	    __ATOMIC_RELAXED) : 0;

	return stamp > e->t0 ? stamp : e->t0;
}

static void
od_evict(struct od_entry *e, struct od_names *ns)
{
	log_debug("on demand: %s unsubscribed (%s)", e->name,
	    e->st == OD_FOUND ? "evicted" : "negative answer expired");
	if (e->st == OD_FOUND)
		server.stats[SM_ONDEMAND_EVICTIONS]++;
	od_evict_names(e, ns);
	od_free(e);
}

/* Make room for one more: the least recently used entry that is not
 * waiting for its answer, a negative answer before any found one (each
 * worker keeps its negative answers for itself meanwhile, so losing one
 * costs little; a flood of unknown addresses must not evict the mesh
 * destinations in use). false when every entry waits (the lookup is then
 * refused: the cache bounds the subscriptions in flight too). */
static bool
od_make_room(struct od_names *ns)
{
	struct od_entry *lru = NULL;
	double lru_t = 0;

	for (struct od_entry *e = od_all; e; e = e->next) {
		if (e->st == OD_LOOKING)
			continue;
		double t = od_last_use(e);
		if (lru && (lru->st == OD_MISSING) != (e->st == OD_MISSING)) {
			if (e->st != OD_MISSING)
				continue;
		} else if (lru && t >= lru_t) {
			continue;
		}
		lru = e;
		lru_t = t;
	}
	if (!lru)
		return false;
	od_evict(lru, ns);
	return true;
}

static void od_rearm(double now);

/* One waiting connection's request. Subscriptions go out at the end of
 * the drain, together (subs). */
static void
od_request(const struct od_key *k, double now, struct od_entry ***subs, size_t *nsubs,
    struct od_names *unsubs)
{
	struct od_entry *e = od_find(k);

	server.stats[SM_ONDEMAND_WAITS]++;
	if (e && e->st == OD_LOOKING)
		return;		/* shared: its answer releases this one too */
	if (e && e->st == OD_FOUND) {
		if (od_known(k)) {
			od_answer(k, true, 0);
			return;
		}
		/* Removed since: not found, for a while. */
		od_set_state(e, OD_MISSING, now);
		od_answer(k, false, e->neg_until);
		return;
	}
	if (e && e->st == OD_MISSING && now < e->neg_until) {
		od_answer(k, false, e->neg_until);
		return;
	}
	if (!e && od_known(k)) {
		/* Came meanwhile with another lookup (a service's endpoints). */
		od_answer(k, true, 0);
		return;
	}
	if (!e) {
		if (od_n >= od_cap && !od_make_room(unsubs)) {
			server.stats[SM_ONDEMAND_QUEUE_FULL]++;
			od_answer(k, false, 0);
			return;
		}
		if (!(e = od_new(k, now))) {
			od_answer(k, false, 0);
			return;
		}
	} else {
		/* An expired negative answer the sweep has not dropped yet: ask
		 * again. The name is still subscribed, and subscribing it again
		 * would change nothing the server hears: out, then in again. */
		od_evict_names(e, unsubs);
		od_names_free(&e->brought);
		od_set_state(e, OD_LOOKING, now);
	}
	struct od_entry **v = realloc(*subs, (*nsubs + 1) * sizeof(*v));
	if (!v) {
		od_set_state(e, OD_MISSING, now);
		od_answer(k, false, 0);
		return;
	}
	*subs = v;
	v[(*nsubs)++] = e;
	server.stats[SM_ONDEMAND_LOOKUPS]++;
}

void
ondemand_drain(double now)
{
	struct od_key q[ONDEMAND_QUEUE_MAX];
	struct od_names unsubs = { 0 };
	struct od_entry **subs = NULL;
	size_t n, nsubs = 0;
	uint64_t full;

	pthread_mutex_lock(&od_qlock);
	n = od_qn;
	memcpy(q, od_q, n * sizeof(q[0]));
	od_qn = 0;
	full = od_qfull;
	od_qfull = 0;
	pthread_mutex_unlock(&od_qlock);
	server.stats[SM_ONDEMAND_QUEUE_FULL] += full;
	if (!od_buckets)
		n = 0;
	for (size_t i = 0; i < n; i++)
		od_request(&q[i], now, &subs, &nsubs, &unsubs);
	/* Unsubscribe the evicted first: the names may come back in subs. */
	od_names_unsubscribe(&unsubs);
	if (nsubs) {
		const char **names = malloc(nsubs * sizeof(*names));
		int rc = names ? 0 : -ENOMEM;

		for (size_t i = 0; names && i < nsubs; i++)
			names[i] = subs[i]->name;
		if (names)
			rc = xds_subscribe(MRES_ADDRESS, names, nsubs);
		if (rc < 0) {
			log_warn("on demand: subscribing %zu names: %s", nsubs, strerror(-rc));
			for (size_t i = 0; i < nsubs; i++) {
				od_set_state(subs[i], OD_MISSING, now);
				od_answer(&subs[i]->k, false, subs[i]->neg_until);
			}
		} else {
			log_debug("on demand: looking up %s%s", names[0], nsubs > 1 ? " and more" : "");
		}
		free(names);
	}
	free(subs);
	od_flush();
	od_rearm(now);
}

static void
od_found(struct od_entry *e, double now, struct od_names *brought)
{
	od_set_state(e, OD_FOUND, now);
	od_answer(&e->k, true, 0);
	/* Added to what an earlier answer brought (found again after a
	 * removal): all of it goes with the entry. */
	struct od_names fresh = { 0 };
	od_brought(e, &fresh, false);
	for (size_t i = 0; i < fresh.n; i++) {
		od_names_add(brought, fresh.v[i]);
		od_names_add(&e->brought, fresh.v[i]);
	}
	od_names_free(&fresh);
	log_debug("on demand: %s found", e->name);
}

static void
od_names_subscribe(struct od_names *ns)
{
	int rc;

	if (ns->n && (rc = xds_subscribe(MRES_ADDRESS, (const char *const *)ns->v, ns->n)) < 0)
		log_warn("on demand: subscribing %zu names: %s", ns->n, strerror(-rc));
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
	*ns = (struct od_names){ 0 };
}

void
ondemand_note(const char *const *found, size_t nfound, const char *const *gone, size_t ngone)
{
	struct od_names brought = { 0 };
	double now;

	if (!ondemand_on || !od_buckets)
		return;
	now = od_time();
	/* Removed names first: a response that removes and adds is judged by
	 * the model it built (od_known), below. */
	for (size_t i = 0; i < ngone; i++) {
		struct od_entry *e = od_find_name(gone[i]);
		if (!e || e->st == OD_MISSING || od_known(&e->k))
			continue;
		if (e->st == OD_LOOKING)
			server.stats[SM_ONDEMAND_NOT_FOUND]++;
		od_set_state(e, OD_MISSING, now);
		od_answer(&e->k, false, e->neg_until);
		log_debug("on demand: %s not found", e->name);
	}
	for (size_t i = 0; i < nfound; i++) {
		struct od_entry *e = od_find_name(found[i]);
		if (e && e->st != OD_FOUND && od_known(&e->k))
			od_found(e, now, &brought);
	}
	/* A lookup answered under names we do not parse (a VIP that came as
	 * its Service's "namespace/hostname"): the model says. */
	for (struct od_entry *e = od_all; e && od_nlooking; e = e->next)
		if (e->st == OD_LOOKING && od_known(&e->k))
			od_found(e, now, &brought);
	od_names_subscribe(&brought);
	od_flush();
	od_rearm(now);
}

void
ondemand_sweep(double now)
{
	struct od_names unsubs = { 0 };
	double idle = od_idle_ms / 1000.0, timeout = od_timeout_ms / 1000.0;

	for (struct od_entry *e = od_all, *next; e; e = next) {
		next = e->next;
		switch (e->st) {
		case OD_LOOKING:
			if (now - e->t0 >= timeout) {
				server.stats[SM_ONDEMAND_TIMEOUTS]++;
				log_debug("on demand: %s: no answer within xds.onDemandTimeout", e->name);
				od_set_state(e, OD_MISSING, now);
				od_answer(&e->k, false, e->neg_until);
			}
			break;
		case OD_MISSING:
			if (now >= e->neg_until)
				od_evict(e, &unsubs);
			break;
		case OD_FOUND:
			if (now - od_last_use(e) >= idle)
				od_evict(e, &unsubs);
			break;
		case OD_NONE:
			break;
		}
	}
	od_names_unsubscribe(&unsubs);
	od_flush();
}

enum od_state
ondemand_state(const char *name)
{
	struct od_entry *e = od_find_name(name);

	return e ? e->st : OD_NONE;
}

size_t
ondemand_cached(void)
{
	return od_n;
}

void
ondemand_set_deliver(ondemand_deliver_fn *fn)
{
	od_deliver = fn;
}

void
ondemand_set_time(double now)
{
	od_test_now = now;
}

/* ---- the loop ---- */

/* The next sweep: in a second while anything is cached, sooner when a
 * lookup's deadline comes first; none when the cache is empty (an idle
 * sidecar is not woken). */
static void
od_rearm(double now)
{
	double next = OD_SWEEP_S, timeout = od_timeout_ms / 1000.0;

	if (!od_loop)
		return;
	ev_timer_stop(od_loop, &od_timer);
	if (!od_n)
		return;
	for (struct od_entry *e = od_all; e && od_nlooking; e = e->next)
		if (e->st == OD_LOOKING && e->t0 + timeout - now < next)
			next = e->t0 + timeout - now;
	if (next < 0.001)
		next = 0.001;
	ev_timer_set(&od_timer, next, 0.);
	ev_timer_start(od_loop, &od_timer);
}

static void
od_async_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	ondemand_drain(ev_now(loop));
}

static void
od_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	ondemand_sweep(ev_now(loop));
	od_rearm(ev_now(loop));
}

static size_t
pow2_at_least(size_t n, size_t min, size_t max)
{
	size_t p = min;

	while (p < n && p < max)
		p <<= 1;
	return p;
}

int
ondemand_start(struct ev_loop *loop, const struct config *cfg)
{
	const char *net = getenv("ISTIO_META_NETWORK");
	size_t nb;

	if (!cfg->xds_on_demand || !cfg->xds_address[0])
		return 0;
	if (cfg->xds_sotw) {
		log_warn("xds.onDemand needs delta xDS (xds.sotw is set): the whole mesh is subscribed");
		return 0;
	}
	snprintf(od_net, sizeof(od_net), "%s", net ? net : "");
	od_timeout_ms = cfg->ondemand_timeout_ms;
	od_idle_ms = cfg->ondemand_idle_ms;
	od_cap = cfg->ondemand_cache_size > 0 ? (size_t)cfg->ondemand_cache_size : 1;
	od_nws = cfg->concurrency > 0 ? (unsigned)cfg->concurrency : 1;
	nb = pow2_at_least(od_cap, 64, (size_t)1 << 16);
	od_stamp_mask = pow2_at_least(4 * od_cap, 256, (size_t)1 << 20) - 1;
	od_buckets = calloc(nb, sizeof(*od_buckets));
	od_stamps = calloc(od_stamp_mask + 1, sizeof(*od_stamps));
	od_ws = calloc(od_nws, sizeof(*od_ws));
	if (!od_buckets || !od_stamps || !od_ws) {
		ondemand_stop();
		return -ENOMEM;
	}
	od_bucket_mask = nb - 1;
	od_loop = loop;
	if (!od_deliver)
		od_deliver = od_deliver_workers;
	ev_async_init(&od_async, od_async_cb);
	ev_async_start(loop, &od_async);
	ev_init(&od_timer, od_timer_cb);
	ondemand_on = true;
	log_info("on-demand workload discovery: lookups by \"%s/<ip>\", timeout %u ms, cache %zu, idle %u ms",
	    od_net, od_timeout_ms, od_cap, od_idle_ms);
	return 0;
}

void
ondemand_stop(void)
{
	if (od_loop) {
		ev_async_stop(od_loop, &od_async);
		ev_timer_stop(od_loop, &od_timer);
	}
	while (od_all)
		od_free(od_all);
	free(od_buckets);
	free(od_stamps);
	free(od_ws);
	free(od_pend);
	od_buckets = NULL;
	od_stamps = NULL;
	od_ws = NULL;
	od_pend = NULL;
	od_npend = od_pendcap = 0;
	od_nws = 0;
	od_n = od_nlooking = 0;
	od_qn = 0;
	od_qfull = 0;
	od_loop = NULL;
	od_test_now = 0;
	ondemand_on = false;
	if (od_deliver == od_deliver_workers)
		od_deliver = NULL;
}
