/* xds: the ADS client (xds.h). One gRPC stream on the control thread's loop;
 * every response goes decode -> store -> model -> ACK/NACK; the
 * subscriptions are state kept here and told to the server again on every
 * stream (HACKING.md, "The xDS stream"). */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>

#include "ctltarget.h"
#include "grpc.h"
#include "identity.h"
#include "log.h"
#include "ondemand.h"
#include "server.h"
#include "xds.h"
#include "xds_state.h"
#include "xds_store.h"
#include "xtls.h"

#include "envoy/service/discovery/v3/discovery.pb-c.h"

typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest DeltaRequest;
typedef Envoy__Service__Discovery__V3__DeltaDiscoveryRequest__InitialResourceVersionsEntry IrvEntry;
typedef Envoy__Service__Discovery__V3__DiscoveryRequest SotwRequest;

#define BACKOFF_BASE_S 0.010	/* ztunnel's: 10 ms doubling to 15 s */
#define BACKOFF_MAX_S 15.0
#define STATE_SAVE_GAP_S 1.0	/* at most one state file write a second */
#define XDS_HEADER_PREFIX "XDS_HEADER_"
#define MAX_HEADERS 16

/* The order of the initial requests: istiod's push order (CDS, EDS, LDS,
 * RDS, then the ambient types), so that what a resource references is
 * asked for before it (HACKING.md). */
static const enum mres_type req_order[] = {
	MRES_CLUSTER, MRES_ENDPOINTS, MRES_LISTENER, MRES_ROUTE, MRES_ADDRESS, MRES_AUTHORIZATION,
};
#define NORDER (sizeof(req_order) / sizeof(req_order[0]))

/* A sorted set of names. */
struct names {
	char **v;
	size_t n, cap;
};

struct xtype {
	bool used;		/* subscribed to at all */
	bool wildcard;
	struct names want;	/* by name: what we subscribe to */
	struct names told;	/* delta: what this stream has told the server */
	bool sent;		/* the type's first request went out on this stream */
	bool answered;		/* a response was applied since start (readiness) */
	char *nonce;		/* the last response's, on this stream (SotW requests echo it,
				 * whole: a cut one is stale to the server) */
	char *good_version;	/* SotW: the last ACKed version_info */
	/* /config_dump */
	char ack_nonce[128], ack_version[128];
	char nack_nonce[128], nack_version[128];
	char *nack_error;
	double ack_at, nack_at;
	unsigned long acks, nacks;
	/* By name (EDS, RDS): what was missing at the last check, and what
	 * was reported missing (once per name, until it comes). */
	struct names missing_prev, missing;
};

static struct {
	bool running;
	struct ev_loop *loop;
	char url[256];
	struct ctl_target tgt;
	bool sotw, on_demand;
	char root_file[256], ca_root[256], token_file[256], cluster_id[64], state_file[256];
	size_t max_message;
	double ready_timeout_s, started;
	Envoy__Config__Core__V3__Node *node;
	struct grpc_md extra[MAX_HEADERS];	/* XDS_HEADER_<NAME> */
	size_t nextra;
	struct xds_store *store;
	struct grpc_chan *ch;
	struct grpc_call *call;
	ev_timer retry, save, check;	/* check: the referenced names that do not come */
	double missing_s;		/* xds.missingTimeout */
	unsigned failures;
	bool first_req;		/* the next request is the stream's first (carries the node) */
	bool got_message;	/* on this stream */
	bool connected;
	double since;		/* connected (or disconnected) since */
	unsigned long reconnects;
	char last_error[512];
	bool state_loaded;	/* serving the state file's resources, no response yet */
	bool od_purge;		/* on demand: drop the Addresses no lookup holds at the first response */
	bool state_dirty;
	double last_save;
	struct xtype t[MRES__COUNT];
} x;

static void stream_open(void);

/* ---- names ---------------------------------------------------------------- */

static size_t
names_find(const struct names *s, const char *name, bool *found)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(s->v[mid], name);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = false;
	return lo;
}

static bool
names_has(const struct names *s, const char *name)
{
	bool f;

	names_find(s, name, &f);
	return f;
}

static int
names_add(struct names *s, const char *name)
{
	bool f;
	size_t i = names_find(s, name, &f);
	char *d;

	if (f)
		return 0;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;
		char **v = realloc(s->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = cap;
	}
	if (!(d = strdup(name)))
		return -ENOMEM;
	memmove(s->v + i + 1, s->v + i, (s->n - i) * sizeof(*s->v));
	s->v[i] = d;
	s->n++;
	return 0;
}

static void
names_del(struct names *s, const char *name)
{
	bool f;
	size_t i = names_find(s, name, &f);

	if (!f)
		return;
	free(s->v[i]);
	memmove(s->v + i, s->v + i + 1, (s->n - i - 1) * sizeof(*s->v));
	s->n--;
}

static void
names_clear(struct names *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	memset(s, 0, sizeof(*s));
}

static int
names_copy(struct names *dst, const struct names *src)
{
	names_clear(dst);
	for (size_t i = 0; i < src->n; i++)
		if (names_add(dst, src->v[i]) < 0)
			return -ENOMEM;
	return 0;
}

static bool
names_equal(const struct names *a, char *const *v, size_t n)
{
	if (a->n != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(a->v[i], v[i]) != 0)
			return false;
	return true;
}

/* ---- requests -------------------------------------------------------------- */

static const char *
type_name(enum mres_type t)
{
	return mres_type_names[t];
}

static void
type_url(enum mres_type t, char *buf, size_t len)
{
	snprintf(buf, len, XDS_TYPE_PREFIX "%s", type_name(t));
}

static void
send_bytes(const ProtobufCMessage *m)
{
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(len ? len : 1);

	if (!x.call)
		goto out;
	if (!buf) {
		log_error("xds %s: out of memory for a request", x.tgt.addr);
		goto out;
	}
	protobuf_c_message_pack(m, buf);
	if (grpc_call_send(x.call, buf, len, false) < 0)
		log_error("xds %s: cannot queue a request", x.tgt.addr);
	x.first_req = false;
out:
	free(buf);
}

/* A request's type_url (url, else type t's) and, on the stream's first
 * request, the node. */
static char *
req_head(enum mres_type t, const char *url, char *buf, size_t len, Envoy__Config__Core__V3__Node **node)
{
	if (x.first_req)
		*node = x.node;
	if (url)
		return (char *)url;
	type_url(t, buf, len);
	return buf;
}

struct irv {
	IrvEntry *e;
	IrvEntry **p;
	size_t n, cap;
	bool oom;
	const struct names *only;	/* non-NULL: only these names */
};

static void
irv_add(void *ud, const struct mres *r, const char *const *aliases, size_t naliases)
{
	struct irv *v = ud;

	(void)aliases, (void)naliases;
	if (v->oom || (v->only && !names_has(v->only, r->name)))
		return;
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64;
		IrvEntry *e = realloc(v->e, cap * sizeof(*e));
		if (!e) {
			v->oom = true;
			return;
		}
		v->e = e;
		v->cap = cap;
	}
	IrvEntry init = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INITIAL_RESOURCE_VERSIONS_ENTRY__INIT;
	v->e[v->n] = init;
	v->e[v->n].key = r->name;
	v->e[v->n].value = r->version ? r->version : (char *)"";
	v->n++;
}

/* A delta request of type t: the first of the stream's type (initial), an
 * ACK/NACK (nonce), or a change of subscription (subscribe/unsubscribe). */
static void
delta_send(enum mres_type t, const char *url, const char *nonce, const char *error, bool initial,
    char **sub, size_t nsub, char **unsub, size_t nunsub)
{
	DeltaRequest req = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_REQUEST__INIT;
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	struct irv v = { 0 };
	char urlbuf[160];

	req.type_url = req_head(t, url, urlbuf, sizeof(urlbuf), &req.node);
	if (nonce)
		req.response_nonce = (char *)nonce;
	if (error) {
		/* INVALID_ARGUMENT, as our SDS client says it (ztunnel leaves 0;
		 * istiod reads only the presence of error_detail). */
		st.code = GRPC_INVALID_ARGUMENT;
		st.message = (char *)error;
		req.error_detail = &st;
	}
	req.resource_names_subscribe = sub;
	req.n_resource_names_subscribe = nsub;
	req.resource_names_unsubscribe = unsub;
	req.n_resource_names_unsubscribe = nunsub;
	if (initial && x.store) {
		/* On demand, istiod subscribes us to every name we say we hold
		 * (pilot/pkg/xds/delta.go, deltaWatchedResources): only the
		 * subscribed ones, or the cache would never unsubscribe them. */
		if (x.on_demand && t == MRES_ADDRESS)
			v.only = &x.t[t].want;
		xds_store_each(x.store, t, irv_add, &v);
		if (v.oom) {
			log_error("xds %s: out of memory for initial_resource_versions of %s; asking for all",
			    x.tgt.addr, type_name(t));
		} else if (v.n && (v.p = malloc(v.n * sizeof(*v.p)))) {
			for (size_t i = 0; i < v.n; i++)
				v.p[i] = &v.e[i];
			req.initial_resource_versions = v.p;
			req.n_initial_resource_versions = v.n;
		}
	}
	send_bytes(&req.base);
	free(v.p);
	free(v.e);
}

static void
sotw_send(enum mres_type t, const char *url, const char *version, const char *nonce, const char *error)
{
	SotwRequest req = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	char urlbuf[160];
	struct xtype *xt = (int)t >= 0 ? &x.t[t] : NULL;

	req.type_url = req_head(t, url, urlbuf, sizeof(urlbuf), &req.node);
	req.version_info = (char *)(version ? version : "");
	req.response_nonce = (char *)(nonce ? nonce : "");
	/* The full list each time; wildcard: none (legacy wildcard). */
	if (xt && !xt->wildcard) {
		req.resource_names = xt->want.v;
		req.n_resource_names = xt->want.n;
	}
	if (error) {
		st.code = GRPC_INVALID_ARGUMENT;
		st.message = (char *)error;
		req.error_detail = &st;
	}
	send_bytes(&req.base);
}

/* Tells the server what type t's subscription is now: its first request
 * on this stream, or the change since the last one. A by-name type with no
 * name yet sends nothing (an empty first request would be a wildcard). */
static void
sync_type(enum mres_type t)
{
	struct xtype *xt = &x.t[t];
	struct names sub = { 0 }, unsub = { 0 };

	if (!x.call || !xt->used)
		return;
	if (!xt->sent) {
		if (!xt->wildcard && xt->want.n == 0 && !(x.on_demand && t == MRES_ADDRESS))
			return;
		xt->sent = true;
		if (x.sotw) {
			sotw_send(t, NULL, xt->good_version, "", NULL);
			return;
		}
		if (xt->wildcard) {
			delta_send(t, NULL, NULL, NULL, true, NULL, 0, NULL, 0);
		} else if (xt->want.n == 0) {
			/* On demand before any lookup: "*" in and out, nothing. */
			char *star[] = { (char *)"*" };
			delta_send(t, NULL, NULL, NULL, true, star, 1, star, 1);
		} else {
			delta_send(t, NULL, NULL, NULL, true, xt->want.v, xt->want.n, NULL, 0);
		}
		if (names_copy(&xt->told, &xt->want) < 0)
			log_error("xds %s: out of memory for the subscription of %s", x.tgt.addr, type_name(t));
		return;
	}
	if (xt->wildcard)
		return;
	if (x.sotw) {
		sotw_send(t, NULL, xt->good_version, xt->nonce ? xt->nonce : "", NULL);
		return;
	}
	for (size_t i = 0; i < xt->want.n; i++)
		if (!names_has(&xt->told, xt->want.v[i]) && names_add(&sub, xt->want.v[i]) < 0)
			goto oom;
	for (size_t i = 0; i < xt->told.n; i++)
		if (!names_has(&xt->want, xt->told.v[i]) && names_add(&unsub, xt->told.v[i]) < 0)
			goto oom;
	if (sub.n || unsub.n) {
		delta_send(t, NULL, NULL, NULL, false, sub.v, sub.n, unsub.v, unsub.n);
		if (names_copy(&xt->told, &xt->want) < 0)
			goto oom;
	}
	names_clear(&sub);
	names_clear(&unsub);
	return;
oom:
	log_error("xds %s: out of memory for the subscription of %s", x.tgt.addr, type_name(t));
	names_clear(&sub);
	names_clear(&unsub);
}

static void drop_names(enum mres_type t, const char *const *names, size_t n);

/* After a Cluster or Listener response: subscribe to the
 * ClusterLoadAssignments or RouteConfigurations they name. */
static void
follow_refs(enum mres_type parent)
{
	enum mres_type t = parent == MRES_CLUSTER ? MRES_ENDPOINTS : MRES_ROUTE;
	struct xtype *xt = &x.t[t];
	char **names = NULL;
	size_t n = 0;

	if (!xt->used || xds_store_refs(x.store, t, &names, &n) < 0) {
		if (xt->used)
			log_error("xds %s: out of memory listing the %s to subscribe to", x.tgt.addr, type_name(t));
		return;
	}
	if (!names_equal(&xt->want, names, n)) {
		struct names old = xt->want, gone = { 0 };

		memset(&xt->want, 0, sizeof(xt->want));
		for (size_t i = 0; i < n; i++)
			if (names_add(&xt->want, names[i]) < 0)
				log_error("xds %s: out of memory for the subscription of %s", x.tgt.addr, type_name(t));
		for (size_t i = 0; i < old.n; i++)
			if (!names_has(&xt->want, old.v[i]))
				(void)names_add(&gone, old.v[i]);
		sync_type(t);
		/* No longer referenced: the server says nothing more of them
		 * (delta sends no removal for an unsubscribed name, SotW's EDS
		 * and RDS deletion is implicit): dropped here. */
		drop_names(t, (const char *const *)gone.v, gone.n);
		names_clear(&gone);
		names_clear(&old);
	}
	xds_names_free(names, n);
}

/* A ClusterLoadAssignment or RouteConfiguration that a Cluster or Listener
 * names and the server has not sent within xds.missingTimeout (the xDS
 * protocol's "does not exist" wait, 15 s) is said once in the log and in
 * /config_dump ("missing"), and counted: the cluster has no endpoint, the
 * listener's routes fail, until it comes. A name must be missing at two
 * checks in a row (one timeout apart), so a name asked for just before a
 * check is not reported early. Only while the stream is up: with the
 * server away, nothing new can arrive and the stream's own state says so. */
static void
check_missing(struct ev_loop *loop, ev_timer *w, int revents)
{
	static const enum mres_type types[] = { MRES_ENDPOINTS, MRES_ROUTE };

	(void)loop, (void)w, (void)revents;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		enum mres_type t = types[i];
		struct xtype *xt = &x.t[t];
		struct names now = { 0 }, still = { 0 };

		if (!x.connected) {
			names_clear(&xt->missing_prev);
			continue;
		}
		for (size_t k = 0; k < xt->want.n; k++)
			if (!model_find(server.snap->model, t, xt->want.v[k]))
				(void)names_add(&now, xt->want.v[k]);
		for (size_t k = 0; k < now.n; k++) {
			const char *name = now.v[k];
			if (names_has(&xt->missing, name)) {
				(void)names_add(&still, name);
			} else if (names_has(&xt->missing_prev, name)) {
				log_warn("xds %s: %s %s, named by a %s, has not come in %.0f s: %s until it does",
				    x.tgt.addr, type_name(t), name, t == MRES_ENDPOINTS ? "Cluster" : "Listener",
				    x.missing_s, t == MRES_ENDPOINTS ? "the cluster has no endpoint" :
				    "requests on that route fail");
				server.stats[SM_XDS_RESOURCES_MISSING]++;
				(void)names_add(&still, name);
			}
		}
		names_clear(&xt->missing);
		xt->missing = still;
		names_clear(&xt->missing_prev);
		xt->missing_prev = now;
	}
}

/* ---- the state file -------------------------------------------------------- */

static void
state_save_now(void)
{
	char err[256];

	x.state_dirty = false;
	x.last_save = ev_now(x.loop);
	if (xds_state_save(x.state_file, x.store, err, sizeof(err)) < 0) {
		server.stats[SM_XDS_STATE_WRITE_FAILURES]++;
		log_warn("xds: cannot write the state file %s: %s (the previous one stays)", x.state_file, err);
		return;
	}
	server.stats[SM_XDS_STATE_WRITES]++;
}

static void
on_save(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)w, (void)revents;
	if (x.state_dirty)
		state_save_now();
}

/* Rate-limited: at once when the last write is a second old, else by the
 * timer a second after it (the last state is always written). */
static void
state_note(void)
{
	double now = ev_now(x.loop), gap;

	if (!x.state_file[0])
		return;
	x.state_dirty = true;
	gap = now - x.last_save;
	if (gap >= STATE_SAVE_GAP_S) {
		ev_timer_stop(x.loop, &x.save);
		state_save_now();
	} else if (!ev_is_active(&x.save)) {
		ev_timer_set(&x.save, STATE_SAVE_GAP_S - gap, 0);
		ev_timer_start(x.loop, &x.save);
	}
}

/* Drops what the store holds under names (of type t) that we no longer
 * subscribe to, through the store's own removal path. */
static void
drop_names(enum mres_type t, const char *const *names, size_t n)
{
	struct xds_update u = { .delta = true, .type = t, .removed = (char **)names, .nremoved = n };
	struct xds_result r = { 0 };

	if (!n)
		return;
	if (xds_store_apply(x.store, &u, server.snap ? server.snap->model : NULL, &r) == 0 && r.model) {
		struct model *m = r.model;
		r.model = NULL;
		server_set_model(m, "xds (unsubscribed)");
		state_note();
	}
	xds_result_free(&r);
}

/* ---- responses ------------------------------------------------------------- */

static void
set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src ? strdup(src) : NULL;
}

static void
stream_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void schedule_retry(void);

/* A response we cannot answer (nothing to NACK by): end the stream and
 * reconnect with backoff. */
static void
stream_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(x.last_error, sizeof(x.last_error), fmt, ap);
	va_end(ap);
	server.stats[SM_XDS_BAD_RESPONSES]++;
	log_warn("xds %s: %s; ending the stream, reconnecting", x.tgt.addr, x.last_error);
	if (x.call)
		grpc_call_cancel(x.call);	/* done is not called */
	x.call = NULL;
	x.connected = false;
	x.since = ev_now(x.loop);
	server.stats[SM_XDS_CONNECTED] = 0;
	schedule_retry();
}

struct unheld {
	struct names gone;
	bool oom;
};

static void
unheld_add(void *ud, const struct mres *r, const char *const *aliases, size_t naliases)
{
	struct unheld *h = ud;

	(void)aliases, (void)naliases;
	if (!names_has(&x.t[MRES_ADDRESS].want, r->name) && names_add(&h->gone, r->name) < 0)
		h->oom = true;
}

/* On demand after a restart: the state file's Addresses served while the
 * server was away, but no cache entry holds them (none would ever
 * unsubscribe or expire them) and the server was not told of them. At the
 * first Address response they go; a connection looks them up again. */
static void
purge_unheld(void)
{
	struct unheld h = { 0 };

	x.od_purge = false;
	xds_store_each(x.store, MRES_ADDRESS, unheld_add, &h);
	if (h.oom)
		log_error("xds %s: out of memory listing the state file's Addresses", x.tgt.addr);
	else if (h.gone.n)
		log_info("xds %s: on demand: %zu Addresses from the state file dropped (looked up again when used)",
		    x.tgt.addr, h.gone.n);
	drop_names(MRES_ADDRESS, (const char *const *)h.gone.v, h.gone.n);
	names_clear(&h.gone);
}

static void
handle(const uint8_t *msg, size_t len)
{
	struct xds_update u = { 0 };
	struct xds_result r = { 0 };
	struct timespec t0, t1;
	char err[512];
	struct xtype *xt;
	int rc;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = x.sotw ? xds_decode_sotw(msg, len, &u, err, sizeof(err)) :
	    xds_decode_delta(msg, len, &u, err, sizeof(err));
	if (rc < 0) {
		if (rc == -EINVAL && u.nonce && *u.nonce) {
			/* Unknown or unsubscribed type_url, or an outer message
			 * we can read the nonce of: NACK it. */
			server.stats[SM_XDS_NACKS]++;
			snprintf(x.last_error, sizeof(x.last_error), "%s", err);
			log_warn("xds %s: response %s refused: %s", x.tgt.addr, u.nonce, err);
			if (x.sotw)
				sotw_send((enum mres_type)-1, u.type_url ? u.type_url : "", "", u.nonce, err);
			else
				delta_send((enum mres_type)-1, u.type_url ? u.type_url : "", u.nonce, err, false,
				    NULL, 0, NULL, 0);
		} else {
			stream_error("a response that does not decode (%s)", rc == -ENOMEM ? "out of memory" : err);
		}
		xds_update_free(&u);
		return;
	}
	xt = &x.t[u.type];
	if (!xt->used) {
		server.stats[SM_XDS_NACKS]++;
		snprintf(err, sizeof(err), "type %s is not subscribed", u.type_url);
		if (x.sotw)
			sotw_send((enum mres_type)-1, u.type_url, "", u.nonce, err);
		else
			delta_send((enum mres_type)-1, u.type_url, u.nonce, err, false, NULL, 0, NULL, 0);
		xds_update_free(&u);
		return;
	}
	/* A response that decoded: the backoff starts over (a server that
	 * answers garbage keeps backing off). */
	x.failures = 0;
	if (u.type == MRES_ADDRESS && x.od_purge)
		purge_unheld();
	set_str(&xt->nonce, u.nonce ? u.nonce : "");
	if ((rc = xds_store_apply(x.store, &u, server.snap ? server.snap->model : NULL, &r)) < 0) {
		/* Out of memory: the store is unchanged; NACK so the server
		 * sends it again later. */
		r.error = strdup("out of memory applying the response");
	}
	server.stats[SM_XDS_RESOURCES_REFUSED] += r.refused;
	if (r.notes)
		log_info("xds %s: %s response %s: %s", x.tgt.addr, type_name(u.type), u.nonce ? u.nonce : "",
		    r.notes);
	if (r.model) {
		struct model *m = r.model;
		r.model = NULL;
		if (server_set_model(m, "xds") == 0 && x.state_loaded) {
			x.state_loaded = false;
			server.stats[SM_XDS_STATE_LOADED] = 0;
			log_info("xds %s: the xDS server answered: serving its resources, not the state file's",
			    x.tgt.addr);
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		server.stats[SM_XDS_APPLY_US] = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 +
		    (t1.tv_nsec - t0.tv_nsec) / 1000);
	} else if (x.state_loaded) {
		x.state_loaded = false;
		server.stats[SM_XDS_STATE_LOADED] = 0;
	}
	xt->answered = true;
	if (r.error) {
		server.stats[SM_XDS_NACKS]++;
		xt->nacks++;
		xt->nack_at = ev_now(x.loop);
		snprintf(xt->nack_nonce, sizeof(xt->nack_nonce), "%s", u.nonce ? u.nonce : "");
		snprintf(xt->nack_version, sizeof(xt->nack_version), "%s", u.version ? u.version : "");
		set_str(&xt->nack_error, r.error);
		snprintf(x.last_error, sizeof(x.last_error), "%s: %s", type_name(u.type), r.error);
		log_warn("xds %s: %s response %s (version \"%.64s\") NACKed: %s; %zu applied, %zu removed, "
		    "%zu refused", x.tgt.addr, type_name(u.type), u.nonce, u.version ? u.version : "", r.error,
		    r.applied, r.removed, r.refused);
		if (x.sotw)
			sotw_send(u.type, NULL, xt->good_version, u.nonce, r.error);
		else
			delta_send(u.type, NULL, u.nonce, r.error, false, NULL, 0, NULL, 0);
	} else {
		server.stats[SM_XDS_ACKS]++;
		xt->acks++;
		xt->ack_at = ev_now(x.loop);
		snprintf(xt->ack_nonce, sizeof(xt->ack_nonce), "%s", u.nonce ? u.nonce : "");
		snprintf(xt->ack_version, sizeof(xt->ack_version), "%s", u.version ? u.version : "");
		set_str(&xt->good_version, u.version ? u.version : "");
		log_debug("xds %s: %s response %s ACKed: %zu applied, %zu removed, %zu unchanged", x.tgt.addr,
		    type_name(u.type), u.nonce, r.applied, r.removed, r.unchanged);
		if (x.sotw)
			sotw_send(u.type, NULL, xt->good_version, u.nonce, NULL);
		else
			delta_send(u.type, NULL, u.nonce, NULL, false, NULL, 0, NULL, 0);
		state_note();
	}
	if (u.type == MRES_ADDRESS)
		ondemand_note((const char *const *)r.found, r.nfound, (const char *const *)r.gone, r.ngone);
	if (u.type == MRES_CLUSTER || u.type == MRES_LISTENER)
		follow_refs(u.type);
	xds_result_free(&r);
	xds_update_free(&u);
}

static void
on_message(struct grpc_call *call, void *ud, const uint8_t *msg, size_t len)
{
	(void)ud;
	if (call != x.call)
		return;
	server.stats[SM_XDS_PUSHES]++;
	server.stats[SM_XDS_RX_BYTES] += len;
	if (!x.got_message) {
		x.got_message = true;
		x.connected = true;
		x.since = ev_now(x.loop);
		server.stats[SM_XDS_CONNECTED] = 1;
		log_info("xds %s: connected (%s)", x.tgt.addr, x.sotw ? "StreamAggregatedResources" :
		    "DeltaAggregatedResources");
	}
	handle(msg, len);
}

/* ---- the stream ------------------------------------------------------------ */

static void
on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop, (void)w, (void)revents;
	stream_open();
}

static void
schedule_retry(void)
{
	double d = ctl_backoff(BACKOFF_BASE_S, BACKOFF_MAX_S, x.failures);

	x.failures++;
	x.reconnects++;
	server.stats[SM_XDS_RECONNECTS]++;
	ev_timer_stop(x.loop, &x.retry);
	ev_timer_set(&x.retry, d, 0.0);
	ev_timer_start(x.loop, &x.retry);
}

static void
on_done(struct grpc_call *call, void *ud, int status, const char *message)
{
	(void)ud;
	if (call != x.call)
		return;
	x.call = NULL;
	if (!x.running)
		return;
	if (x.connected || !x.last_error[0] || x.got_message)
		log_warn("xds %s: stream ended (%s%s%s); reconnecting, %s", x.tgt.addr, grpc_status_str(status),
		    message && *message ? ": " : "", message ? message : "",
		    server.snap && server.snap->model ? "the running resources serve on" : "nothing served yet");
	snprintf(x.last_error, sizeof(x.last_error), "%s%s%s", grpc_status_str(status),
	    message && *message ? ": " : "", message ? message : "");
	x.connected = false;
	x.since = ev_now(x.loop);
	server.stats[SM_XDS_CONNECTED] = 0;
	schedule_retry();
}

static const struct grpc_handler handler = { .message = on_message, .done = on_done };

/* The roots istiod's certificate must chain to, as PEM: xds.rootCert, else
 * identity.caRootCert when it exists, else the running certificate's mesh
 * roots. */
static int
read_roots(char **pem, size_t *len, char *what, size_t whatlen)
{
	const struct certbundle *b = server.snap ? server.snap->certs : NULL;
	BIO *bio;
	BUF_MEM *mem;
	int rc;

	if (x.root_file[0]) {
		snprintf(what, whatlen, "%s", x.root_file);
		return ctl_read_file(x.root_file, pem, len);
	}
	if (x.ca_root[0] && (rc = ctl_read_file(x.ca_root, pem, len)) != -ENOENT) {
		snprintf(what, whatlen, "%s", x.ca_root);
		return rc;
	}
	snprintf(what, whatlen, "the mesh roots of the workload certificate");
	if (!b || !b->roots)
		return -ENOENT;
	if (!(bio = BIO_new(BIO_s_mem())))
		return -ENOMEM;
	for (int i = 0; i < sk_X509_num(b->roots); i++)
		if (!PEM_write_bio_X509(bio, sk_X509_value(b->roots, i))) {
			BIO_free(bio);
			return -ENOMEM;
		}
	BIO_get_mem_ptr(bio, &mem);
	rc = (*pem = malloc(mem->length + 1)) ? 0 : -ENOMEM;
	if (rc == 0) {
		memcpy(*pem, mem->data, mem->length);
		(*pem)[mem->length] = '\0';
		*len = mem->length;
	}
	BIO_free(bio);
	return rc;
}

static void
stream_open(void)
{
	struct grpc_target t = { 0 };
	struct grpc_md md[MAX_HEADERS + 2];
	char *token = NULL, *bearer = NULL, *pem = NULL, what[300], err[256];
	const char *path = x.sotw ? XDS_SOTW_PATH : XDS_DELTA_PATH;
	SSL_CTX *tls = NULL;
	size_t nmd = 0, pemlen = 0;
	int rc;

	if (!x.running)
		return;
	/* A new channel for every stream: the roots and the token are read
	 * again (a root rotation, kubelet's token refresh). */
	grpc_chan_free(x.ch);
	x.ch = NULL;
	if (!x.tgt.plaintext) {
		if ((rc = read_roots(&pem, &pemlen, what, sizeof(what))) < 0) {
			snprintf(x.last_error, sizeof(x.last_error), "no root certificate for the xDS server (%.300s: %.100s)",
			    what, rc == -ENOENT ? "none yet" : strerror(-rc));
			log_warn("xds %s: %s; retrying", x.tgt.addr, x.last_error);
			goto retry;
		}
		tls = xtls_ctx_control(pem, pemlen, server.snap ? server.snap->certs : NULL, err, sizeof(err));
		free(pem);
		if (!tls) {
			snprintf(x.last_error, sizeof(x.last_error), "the root certificate %.200s: %.200s", what, err);
			log_warn("xds %s: %s; retrying", x.tgt.addr, x.last_error);
			goto retry;
		}
	}
	t.address = x.tgt.addr;
	t.tls = tls;
	t.verify_name = tls ? x.tgt.verify_name : NULL;
	t.max_message = x.max_message;
	if ((rc = ctl_read_token(x.token_file, &token)) == 0 && asprintf(&bearer, "Bearer %s", token) > 0)
		md[nmd++] = (struct grpc_md){ "authorization", bearer };
	else if (rc != -ENOENT)
		log_debug("xds %s: no token from %s (%s): none sent", x.tgt.addr, x.token_file, strerror(-rc));
	if (x.cluster_id[0])
		md[nmd++] = (struct grpc_md){ "clusterid", x.cluster_id };
	for (size_t i = 0; i < x.nextra; i++)
		md[nmd++] = x.extra[i];
	if (!(x.ch = grpc_chan_new(x.loop, &t)) ||
	    !(x.call = grpc_call_start(x.ch, path, md, nmd, 0, &handler, NULL))) {
		snprintf(x.last_error, sizeof(x.last_error), "out of memory for a stream");
		log_error("xds %s: %s; retrying", x.tgt.addr, x.last_error);
		goto retry;
	}
	server.stats[SM_XDS_CONNECTS]++;
	x.got_message = false;
	x.first_req = true;
	for (int i = 0; i < MRES__COUNT; i++) {
		x.t[i].sent = false;
		free(x.t[i].nonce);
		x.t[i].nonce = NULL;
		names_clear(&x.t[i].told);
	}
	for (size_t i = 0; i < NORDER; i++)
		sync_type(req_order[i]);
	goto out;
retry:
	schedule_retry();
out:
	SSL_CTX_free(tls);	/* the channel holds its own reference */
	ctl_free_secret(bearer);
	ctl_free_secret(token);
}

/* XDS_HEADER_<NAME>=v: metadata "<name>: v", as pilot-agent and ztunnel
 * send them (the name lower-cased, as gRPC metadata is). */
static void
extra_headers(void)
{
	extern char **environ;

	for (char **e = environ; e && *e && x.nextra < MAX_HEADERS; e++) {
		const char *eq = strchr(*e, '=');
		size_t plen = strlen(XDS_HEADER_PREFIX);
		char *name;

		if (!eq || strncmp(*e, XDS_HEADER_PREFIX, plen) != 0 || eq == *e + plen)
			continue;
		if (!(name = strndup(*e + plen, (size_t)(eq - *e) - plen)))
			continue;
		for (char *p = name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		x.extra[x.nextra].name = name;
		x.extra[x.nextra].value = eq + 1;
		x.nextra++;
	}
}

static void
load_state(void)
{
	struct model_report rep = { 0 };
	struct model *m;
	struct stat st;
	char err[256], when[64] = "?";
	size_t skipped = 0, total = 0;
	int rc;

	if (!x.state_file[0])
		return;
	if ((rc = xds_state_load(x.state_file, x.store, &skipped, err, sizeof(err))) < 0) {
		if (rc != -ENOENT)
			log_warn("xds: the state file %s is not used: %s", x.state_file, err);
		return;
	}
	if (!(m = xds_store_build(x.store, server.snap ? server.snap->model : NULL, &rep))) {
		log_error("xds: out of memory building the state file's resources");
		model_report_free(&rep);
		return;
	}
	model_report_free(&rep);
	for (int t = 0; t < MRES__COUNT; t++) {
		total += xds_store_count(x.store, (enum mres_type)t);
		if (x.t[t].used)
			set_str(&x.t[t].good_version, xds_store_version(x.store, (enum mres_type)t));
	}
	if (stat(x.state_file, &st) == 0) {
		struct tm tm;
		gmtime_r(&st.st_mtime, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	if (server_set_model(m, "xds state file") < 0)
		return;
	x.state_loaded = true;
	x.od_purge = x.on_demand;
	server.stats[SM_XDS_STATE_LOADED] = 1;
	log_info("xds: serving %zu resources from the state file %s (saved at %s) until the xDS server answers%s",
	    total, x.state_file, when, skipped ? " (some entries were damaged and skipped)" : "");
}

int
xds_start(struct ev_loop *loop, const struct config *cfg, struct mres *const *static_res, size_t nstatic,
    char *err, size_t errlen)
{
	struct model_opts opts = { .network = getenv("ISTIO_META_NETWORK"), .strict_refs = false };
	int rc;

	if (!cfg->xds_address[0])
		return 0;
	if (x.running)
		xds_stop();
	memset(&x, 0, sizeof(x));
	snprintf(x.url, sizeof(x.url), "%s", cfg->xds_address);
	if (ctl_target_parse(cfg->xds_address, &x.tgt) < 0) {
		snprintf(err, errlen, "proxy.discoveryAddress %s: expected [https://|http://]host:port",
		    cfg->xds_address);
		return -EINVAL;
	}
	if (cfg->xds_on_demand && cfg->xds_sotw) {
		snprintf(err, errlen, "xds.onDemand needs the delta protocol (xds.sotw is true)");
		return -EINVAL;
	}
	x.loop = loop;
	x.sotw = cfg->xds_sotw;
	x.on_demand = cfg->xds_on_demand;
	snprintf(x.root_file, sizeof(x.root_file), "%s", cfg->xds_root);
	snprintf(x.ca_root, sizeof(x.ca_root), "%s", cfg->ca_root);
	snprintf(x.token_file, sizeof(x.token_file), "%s", cfg->token_file);
	snprintf(x.cluster_id, sizeof(x.cluster_id), "%s", cfg->cluster_id);
	snprintf(x.state_file, sizeof(x.state_file), "%s", cfg->xds_state_file);
	x.max_message = (size_t)cfg->xds_max_message;
	x.ready_timeout_s = cfg->xds_ready_timeout_ms / 1000.0;
	if (x.root_file[0] && !x.tgt.plaintext) {
		char *pem = NULL;
		size_t len;
		if ((rc = ctl_read_file(x.root_file, &pem, &len)) < 0) {
			snprintf(err, errlen, "xds.rootCert %s: %s", x.root_file, strerror(-rc));
			return rc;
		}
		free(pem);
	}
	if (!opts.network)
		opts.network = "";
	if ((rc = xds_node_new(cfg, &x.node)) < 0 || !(x.store = xds_store_new(&opts)) ||
	    xds_store_set_static(x.store, static_res, nstatic) < 0) {
		snprintf(err, errlen, "out of memory");
		xds_node_free(x.node);
		xds_store_free(x.store);
		memset(&x, 0, sizeof(x));
		return -ENOMEM;
	}
	extra_headers();
	x.t[MRES_CLUSTER] = (struct xtype){ .used = true, .wildcard = true };
	x.t[MRES_LISTENER] = (struct xtype){ .used = true, .wildcard = true };
	x.t[MRES_AUTHORIZATION] = (struct xtype){ .used = true, .wildcard = true };
	x.t[MRES_ADDRESS] = (struct xtype){ .used = true, .wildcard = !x.on_demand };
	x.t[MRES_ENDPOINTS] = (struct xtype){ .used = true };
	x.t[MRES_ROUTE] = (struct xtype){ .used = true };
	ev_timer_init(&x.retry, on_retry, 0.0, 0.0);
	ev_timer_init(&x.save, on_save, 0.0, 0.0);
	x.missing_s = cfg->xds_missing_timeout_ms / 1000.0;
	ev_timer_init(&x.check, check_missing, x.missing_s, x.missing_s);
	ev_timer_start(loop, &x.check);
	x.started = x.since = ev_now(loop);
	x.running = true;
	load_state();
	/* The names the state file's Clusters and Listeners reference: asked
	 * for on the first stream already. */
	for (enum mres_type p = MRES_CLUSTER;; p = MRES_LISTENER) {
		enum mres_type t = p == MRES_CLUSTER ? MRES_ENDPOINTS : MRES_ROUTE;
		char **names = NULL;
		size_t n = 0;
		if (xds_store_refs(x.store, t, &names, &n) == 0) {
			for (size_t i = 0; i < n; i++)
				(void)names_add(&x.t[t].want, names[i]);
			xds_names_free(names, n);
		}
		if (p == MRES_LISTENER)
			break;
	}
	if (x.tgt.plaintext)
		log_warn("xds %s: PLAINTEXT (http://): for tests and local control planes only", x.tgt.addr);
	log_info("xds %s: %s as %s, server name %s, %s", x.tgt.addr,
	    x.sotw ? "StreamAggregatedResources" : "DeltaAggregatedResources", x.node->id,
	    x.tgt.plaintext ? "-" : x.tgt.verify_name, x.on_demand ? "addresses on demand" : "wildcard");
	stream_open();
	return 0;
}

void
xds_stop(void)
{
	if (!x.running)
		return;
	x.running = false;
	ev_timer_stop(x.loop, &x.retry);
	ev_timer_stop(x.loop, &x.save);
	ev_timer_stop(x.loop, &x.check);
	if (x.state_dirty)
		state_save_now();	/* the last state is always written */
	if (x.call)
		grpc_call_cancel(x.call);
	x.call = NULL;
	grpc_chan_free(x.ch);
	x.ch = NULL;
	for (int t = 0; t < MRES__COUNT; t++) {
		names_clear(&x.t[t].want);
		names_clear(&x.t[t].told);
		names_clear(&x.t[t].missing_prev);
		names_clear(&x.t[t].missing);
		free(x.t[t].good_version);
		free(x.t[t].nack_error);
		free(x.t[t].nonce);
	}
	for (size_t i = 0; i < x.nextra; i++)
		free((char *)x.extra[i].name);
	xds_node_free(x.node);
	xds_store_free(x.store);
	server.stats[SM_XDS_CONNECTED] = 0;
	memset(&x, 0, sizeof(x));
}

bool
xds_active(void)
{
	return x.running;
}

const char *
xds_waiting_for(void)
{
	static char buf[160];

	if (!x.running || x.state_loaded)
		return NULL;
	if (x.ready_timeout_s > 0 && ev_now(x.loop) - x.started >= x.ready_timeout_s)
		return NULL;
	for (size_t i = 0; i < NORDER; i++) {
		enum mres_type t = req_order[i];
		if (x.t[t].used && x.t[t].wildcard && !x.t[t].answered) {
			snprintf(buf, sizeof(buf), "waiting for the first xDS response of %s", type_name(t));
			return buf;
		}
	}
	return NULL;
}

bool
xds_ready(void)
{
	return xds_waiting_for() == NULL;
}

static int
change_subscription(enum mres_type t, const char *const *names, size_t n, bool add)
{
	if (!x.running || (int)t < 0 || t >= MRES__COUNT)
		return -EINVAL;
	if (x.sotw)
		return -ENOTSUP;
	for (size_t i = 0; i < n; i++) {
		if (add) {
			if (names_add(&x.t[t].want, names[i]) < 0)
				return -ENOMEM;
			continue;
		}
		/* Told as unsubscribed even when we never subscribed it: istiod
		 * adds to an on-demand subscription itself (a Workload joining
		 * a subscribed Service, pilot/pkg/xds/workload.go), and only an
		 * unsubscribe ends its pushes. */
		if (x.t[t].sent && names_add(&x.t[t].told, names[i]) < 0)
			return -ENOMEM;
		names_del(&x.t[t].want, names[i]);
	}
	sync_type(t);
	return 0;
}

int
xds_subscribe(enum mres_type t, const char *const *names, size_t n)
{
	return change_subscription(t, names, n, true);
}

int
xds_unsubscribe(enum mres_type t, const char *const *names, size_t n)
{
	int rc = change_subscription(t, names, n, false);

	if (rc == 0)
		drop_names(t, names, n);
	return rc;
}

int
xds_set_static(struct mres *const *static_res, size_t nstatic)
{
	struct model_report rep = { 0 };
	struct model *m;

	if (!x.running)
		return 0;
	if (xds_store_set_static(x.store, static_res, nstatic) < 0)
		return -ENOMEM;
	m = xds_store_build(x.store, server.snap ? server.snap->model : NULL, &rep);
	model_report_free(&rep);
	if (!m)
		return -ENOMEM;
	return server_set_model(m, "xds (static resources reloaded)");
}

/* ---- /config_dump ---------------------------------------------------------- */

static cJSON *
stamp(double at)
{
	/* ev_now is wall-clock based (ev_time). */
	char buf[64];
	time_t s = (time_t)at;
	struct tm tm;

	gmtime_r(&s, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return cJSON_CreateString(buf);
}

cJSON *
xds_dump(void)
{
	cJSON *o, *types;

	if (!x.running || !(o = cJSON_CreateObject()))
		return NULL;
	cJSON_AddStringToObject(o, "server", x.url);
	cJSON_AddStringToObject(o, "protocol", x.sotw ? "StreamAggregatedResources" : "DeltaAggregatedResources");
	cJSON_AddBoolToObject(o, "connected", x.connected);
	cJSON_AddItemToObject(o, "since", stamp(x.since));
	cJSON_AddNumberToObject(o, "reconnects", (double)x.reconnects);
	cJSON_AddStringToObject(o, "lastError", x.last_error);
	cJSON_AddBoolToObject(o, "servingStateFile", x.state_loaded);
	cJSON_AddBoolToObject(o, "ready", xds_ready());
	if (!(types = cJSON_AddObjectToObject(o, "types")))
		goto oom;
	for (size_t i = 0; i < NORDER; i++) {
		enum mres_type t = req_order[i];
		struct xtype *xt = &x.t[t];
		cJSON *j = cJSON_AddObjectToObject(types, type_name(t)), *sub;

		if (!j)
			goto oom;
		if (xt->wildcard) {
			cJSON_AddStringToObject(j, "subscription", "wildcard");
		} else if ((sub = cJSON_AddArrayToObject(j, "subscription"))) {
			for (size_t k = 0; k < xt->want.n; k++)
				cJSON_AddItemToArray(sub, cJSON_CreateString(xt->want.v[k]));
		}
		cJSON_AddNumberToObject(j, "resources", (double)xds_store_count(x.store, t));
		if (xt->missing.n && (sub = cJSON_AddArrayToObject(j, "missing")))
			for (size_t k = 0; k < xt->missing.n; k++)
				cJSON_AddItemToArray(sub, cJSON_CreateString(xt->missing.v[k]));
		cJSON_AddNumberToObject(j, "acks", (double)xt->acks);
		cJSON_AddNumberToObject(j, "nacks", (double)xt->nacks);
		if (xt->acks) {
			cJSON *a = cJSON_AddObjectToObject(j, "lastAck");
			if (a) {
				cJSON_AddStringToObject(a, "nonce", xt->ack_nonce);
				cJSON_AddStringToObject(a, "version", xt->ack_version);
				cJSON_AddItemToObject(a, "at", stamp(xt->ack_at));
			}
		}
		if (xt->nacks) {
			cJSON *a = cJSON_AddObjectToObject(j, "lastNack");
			if (a) {
				cJSON_AddStringToObject(a, "nonce", xt->nack_nonce);
				cJSON_AddStringToObject(a, "version", xt->nack_version);
				cJSON_AddStringToObject(a, "error", xt->nack_error ? xt->nack_error : "");
				cJSON_AddItemToObject(a, "at", stamp(xt->nack_at));
			}
		}
	}
	return o;
oom:
	cJSON_Delete(o);
	return NULL;
}
