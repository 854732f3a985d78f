/* xds_store: the xDS resources held, per type, and the one path from a
 * response to a model (xds_store.h; HACKING.md "The xDS store"). Pure: no
 * I/O, no globals but constant tables, no log. */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "pb.h"
#include "xds_store.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "istio/security/authorization.pb-c.h"
#include "istio/security/v1beta1/peer_authentication.pb-c.h"
#include "istio/workload/workload.pb-c.h"

#define TYPE_PREFIX "type.googleapis.com/"
#define ERROR_MAX 4096		/* error_detail bound: istiod logs it whole */

/* The message of each resource type (model.c has the same table; the store
 * does not depend on model_register_types having run). */
static const ProtobufCMessageDescriptor *const type_desc[MRES__COUNT] = {
	&istio__workload__address__descriptor,
	&istio__security__authorization__descriptor,
	&istio__security__v1beta1__peer_authentication__descriptor,
	&envoy__config__cluster__v3__cluster__descriptor,
	&envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
	&envoy__config__route__v3__route_configuration__descriptor,
	&envoy__config__listener__v3__listener__descriptor,
};

/* The short name of a type ("Address" of "istio.workload.Address"): the
 * first part of a model_input path. */
static const char *
short_name(enum mres_type t)
{
	const char *n = mres_type_names[t], *dot = strrchr(n, '.');

	return dot ? dot + 1 : n;
}

static const char *
S(const char *s)
{
	return s ? s : "";
}

/* ---- Hashing ---- */

static uint32_t
str_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (uint32_t)h;
}

/* Of a resource's bytes, 8 at a time (a full push hashes megabytes). Not
 * adversarial: a collision also needs the same version string. */
static uint64_t
bytes_digest(const uint8_t *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;

	while (n >= 8) {
		uint64_t w;

		memcpy(&w, p, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 29;
		p += 8;
		n -= 8;
	}
	for (; n; n--, p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* ---- Bounded decoding ----
 * protobuf-c allocates as it unpacks; a small message of many empty
 * repeated elements would ask for 50 times its size. The stream bounds the
 * message (xds.maxMessage); this bounds what it may decode to: DECODE_FACTOR
 * times its size plus DECODE_SLACK, shared by the response and the
 * resources in it (real resources take 2 to 4 times their encoding). The
 * allocator is malloc, so the resources' messages are freed as mres frees
 * them (protobuf_c_message_free_unpacked with the default allocator). */
#define DECODE_FACTOR 16
#define DECODE_SLACK (64u << 20)

struct budget {
	ProtobufCAllocator a;
	size_t used, limit;
	bool over, oom;
};

static void *
budget_alloc(void *ud, size_t n)
{
	struct budget *b = ud;
	void *p;

	if (n > b->limit - b->used) {
		b->over = true;
		return NULL;
	}
	if (!(p = malloc(n ? n : 1))) {
		b->oom = true;
		return NULL;
	}
	b->used += n;
	return p;
}

static void
budget_free(void *ud, void *p)
{
	(void)ud;
	free(p);
}

static void
budget_init(struct budget *b, size_t len)
{
	memset(b, 0, sizeof(*b));
	b->a.alloc = budget_alloc;
	b->a.free = budget_free;
	b->a.allocator_data = b;
	b->limit = len > (SIZE_MAX - DECODE_SLACK) / DECODE_FACTOR ? SIZE_MAX :
	    len * DECODE_FACTOR + DECODE_SLACK;
}

/* ---- Decoding ---- */

static int type_of_url(const char *url, enum mres_type *t)
{
	size_t pl = strlen(TYPE_PREFIX);

	if (strncmp(url, TYPE_PREFIX, pl) != 0)
		return -1;
	/* PeerAuthentication is a static resource only: no xDS server serves
	 * it (istiod sends it converted into Authorizations). */
	for (int i = 0; i < MRES__COUNT; i++)
		if (i != MRES_PEER_AUTHENTICATION && strcmp(url + pl, mres_type_names[i]) == 0) {
			*t = (enum mres_type)i;
			return 0;
		}
	return -1;
}

static char *
dup_or_empty(const char *s, bool *oom)
{
	char *r = strdup(S(s));

	if (!r)
		*oom = true;
	return r;
}

/* A small set of the names in one update (duplicates, full state). */
struct nset {
	const char **slot;
	size_t mask;
};

static int
nset_init(struct nset *s, size_t n)
{
	size_t cap = 16;

	while (cap < 2 * n + 2)
		cap <<= 1;
	if (!(s->slot = calloc(cap, sizeof(*s->slot))))
		return -ENOMEM;
	s->mask = cap - 1;
	return 0;
}

/* Adds name; false when it was there already. */
static bool
nset_add(struct nset *s, const char *name)
{
	for (size_t i = str_hash(name) & s->mask;; i = (i + 1) & s->mask) {
		if (!s->slot[i]) {
			s->slot[i] = name;
			return true;
		}
		if (strcmp(s->slot[i], name) == 0)
			return false;
	}
}

static bool
nset_has(const struct nset *s, const char *name)
{
	if (!s->slot)
		return false;
	for (size_t i = str_hash(name) & s->mask;; i = (i + 1) & s->mask) {
		if (!s->slot[i])
			return false;
		if (strcmp(s->slot[i], name) == 0)
			return true;
	}
}

/* Decodes one resource (its Any) into it; a refusal is it->why. */
static void
decode_item(struct xds_item *it, const Google__Protobuf__Any *any, enum mres_type t, struct budget *b)
{
	const char *url, *slash;
	ProtobufCMessage *msg;
	struct mres *r;

	if (!any) {
		snprintf(it->why, sizeof(it->why), "resource: missing (no Any)");
		return;
	}
	url = S(any->type_url);
	slash = strrchr(url, '/');
	/* Any's type_url is "<anything>/<full name>"; the name decides. */
	if (strcmp(slash ? slash + 1 : url, mres_type_names[t]) != 0) {
		snprintf(it->why, sizeof(it->why), "resource: an Any of type \"%.100s\" in a response of %s",
		    url, mres_type_names[t]);
		return;
	}
	it->digest = bytes_digest(any->value.data, any->value.len);
	if (pb_depth_ok(type_desc[t], any->value.data, any->value.len, PB_MAX_DEPTH) < 0) {
		snprintf(it->why, sizeof(it->why), "resource: nested deeper than %d messages", PB_MAX_DEPTH);
		return;
	}
	if (!(msg = protobuf_c_message_unpack(type_desc[t], &b->a, any->value.len, any->value.data))) {
		if (b->oom)
			snprintf(it->why, sizeof(it->why), "out of memory");
		else if (b->over)
			snprintf(it->why, sizeof(it->why), "resource: over the decode bound (%zu bytes for the "
			    "response)", b->limit);
		else
			snprintf(it->why, sizeof(it->why), "resource: %zu bytes that do not decode as %s",
			    any->value.len, mres_type_names[t]);
		return;
	}
	/* mres_new frees msg when it fails. */
	if (!(r = mres_new(msg, it->version, it->name, it->why, sizeof(it->why)))) {
		if (strcmp(it->why, "out of memory") == 0)
			b->oom = true;
		return;
	}
	if (*it->name && strcmp(r->name, it->name) != 0) {
		/* The model and its references go by the resource's own name, the
		 * server's bookkeeping (removal, initial_resource_versions) by the
		 * Resource's: they must agree. */
		snprintf(it->why, sizeof(it->why), "the resource's own name is \"%.100s\"", r->name);
		mres_unref(r);
		return;
	}
	it->res = r;
}

/* Refuses the items named twice (the first one stays). */
static int
refuse_duplicates(struct xds_update *u)
{
	struct nset seen;

	if (nset_init(&seen, u->nitems) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < u->nitems; i++) {
		struct xds_item *it = &u->items[i];

		if (!*it->name || nset_add(&seen, it->name))
			continue;
		if (it->res) {
			mres_unref(it->res);
			it->res = NULL;
		}
		snprintf(it->why, sizeof(it->why), "named twice in one response");
	}
	free(seen.slot);
	return 0;
}

static int
set_type(struct xds_update *u, const char *url, char *err, size_t errlen)
{
	bool oom = false;

	u->type_url = dup_or_empty(url, &oom);
	if (oom)
		return -ENOMEM;
	if (type_of_url(u->type_url, &u->type) < 0) {
		snprintf(err, errlen, "type_url \"%.200s\" is not one we subscribe to", u->type_url);
		return -EINVAL;
	}
	return 0;
}

int
xds_decode_delta(const uint8_t *msg, size_t len, struct xds_update *u, char *err, size_t errlen)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse *m;
	struct budget b;
	bool oom = false;
	int rc;

	memset(u, 0, sizeof(*u));
	u->delta = true;
	if (errlen)
		err[0] = '\0';
	budget_init(&b, len);
	if (pb_depth_ok(&envoy__service__discovery__v3__delta_discovery_response__descriptor, msg, len,
	    PB_MAX_DEPTH) < 0) {
		snprintf(err, errlen, "DeltaDiscoveryResponse: nested deeper than %d messages", PB_MAX_DEPTH);
		return -EINVAL;
	}
	if (!(m = envoy__service__discovery__v3__delta_discovery_response__unpack(&b.a, len, msg))) {
		if (b.oom)
			return -ENOMEM;
		snprintf(err, errlen, b.over ? "DeltaDiscoveryResponse: over the decode bound (%zu bytes)" :
		    "not a DeltaDiscoveryResponse (%zu bytes that do not decode)", b.over ? b.limit : len);
		return -EINVAL;
	}
	if (!(u->nonce = dup_or_empty(m->nonce, &oom)) || !(u->version = dup_or_empty(m->system_version_info, &oom))) {
		rc = -ENOMEM;
		goto out;
	}
	if ((rc = set_type(u, m->type_url, err, errlen)) < 0)
		goto out;
	rc = -ENOMEM;
	if (m->n_resources && !(u->items = calloc(m->n_resources, sizeof(*u->items))))
		goto out;
	for (size_t i = 0; i < m->n_resources; i++) {
		const Envoy__Service__Discovery__V3__Resource *res = m->resources[i];
		struct xds_item *it = &u->items[u->nitems++];
		const char *name = *S(res->name) ? res->name : res->resource_name ? res->resource_name->name : NULL;

		if (!(it->name = dup_or_empty(name, &oom)) || !(it->version = dup_or_empty(res->version, &oom)))
			goto out;
		if (res->n_aliases) {
			if (!(it->aliases = calloc(res->n_aliases, sizeof(*it->aliases))))
				goto out;
			for (size_t k = 0; k < res->n_aliases; k++, it->naliases++)
				if (!(it->aliases[k] = dup_or_empty(res->aliases[k], &oom)))
					goto out;
		}
		decode_item(it, res->resource, u->type, &b);
		if (b.oom)
			goto out;
		if (!*it->name && it->res) {
			free(it->name);
			if (!(it->name = strdup(it->res->name)))
				goto out;
		}
	}
	if (m->n_removed_resources + m->n_removed_resource_names &&
	    !(u->removed = calloc(m->n_removed_resources + m->n_removed_resource_names, sizeof(*u->removed))))
		goto out;
	for (size_t i = 0; i < m->n_removed_resources; i++)
		if (!(u->removed[u->nremoved++] = dup_or_empty(m->removed_resources[i], &oom)))
			goto out;
	for (size_t i = 0; i < m->n_removed_resource_names; i++)
		if (m->removed_resource_names[i] && *S(m->removed_resource_names[i]->name) &&
		    !(u->removed[u->nremoved++] = dup_or_empty(m->removed_resource_names[i]->name, &oom)))
			goto out;
	rc = refuse_duplicates(u);
out:
	envoy__service__discovery__v3__delta_discovery_response__free_unpacked(m, &b.a);
	return rc;
}

int
xds_decode_sotw(const uint8_t *msg, size_t len, struct xds_update *u, char *err, size_t errlen)
{
	Envoy__Service__Discovery__V3__DiscoveryResponse *m;
	struct budget b;
	bool oom = false;
	int rc;

	memset(u, 0, sizeof(*u));
	if (errlen)
		err[0] = '\0';
	budget_init(&b, len);
	if (pb_depth_ok(&envoy__service__discovery__v3__discovery_response__descriptor, msg, len, PB_MAX_DEPTH) < 0) {
		snprintf(err, errlen, "DiscoveryResponse: nested deeper than %d messages", PB_MAX_DEPTH);
		return -EINVAL;
	}
	if (!(m = envoy__service__discovery__v3__discovery_response__unpack(&b.a, len, msg))) {
		if (b.oom)
			return -ENOMEM;
		snprintf(err, errlen, b.over ? "DiscoveryResponse: over the decode bound (%zu bytes)" :
		    "not a DiscoveryResponse (%zu bytes that do not decode)", b.over ? b.limit : len);
		return -EINVAL;
	}
	if (!(u->nonce = dup_or_empty(m->nonce, &oom)) || !(u->version = dup_or_empty(m->version_info, &oom))) {
		rc = -ENOMEM;
		goto out;
	}
	if ((rc = set_type(u, m->type_url, err, errlen)) < 0)
		goto out;
	/* LDS, CDS and ztunnel's types hold the whole state in every response;
	 * RDS and EDS only what they carry (xds_protocol.rst). */
	u->full_state = u->type == MRES_ADDRESS || u->type == MRES_AUTHORIZATION || u->type == MRES_CLUSTER ||
	    u->type == MRES_LISTENER;
	rc = -ENOMEM;
	if (m->n_resources && !(u->items = calloc(m->n_resources, sizeof(*u->items))))
		goto out;
	for (size_t i = 0; i < m->n_resources; i++) {
		struct xds_item *it = &u->items[u->nitems++];

		if (!(it->name = dup_or_empty("", &oom)) || !(it->version = dup_or_empty(m->version_info, &oom)))
			goto out;
		decode_item(it, m->resources[i], u->type, &b);
		if (b.oom)
			goto out;
		if (it->res) {
			free(it->name);
			if (!(it->name = strdup(it->res->name)))
				goto out;
		}
	}
	rc = refuse_duplicates(u);
out:
	envoy__service__discovery__v3__discovery_response__free_unpacked(m, &b.a);
	return rc;
}

static void
names_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

void
xds_update_free(struct xds_update *u)
{
	if (!u)
		return;
	for (size_t i = 0; u->items && i < u->nitems; i++) {
		struct xds_item *it = &u->items[i];

		free(it->name);
		free(it->version);
		names_free(it->aliases, it->naliases);
		mres_unref(it->res);
	}
	free(u->items);
	names_free(u->removed, u->nremoved);
	free(u->type_url);
	free(u->nonce);
	free(u->version);
	memset(u, 0, sizeof(*u));
}

/* ---- The store ----
 * Per type a dense array of entries (what model_build's input is made of,
 * no hashing on that path) and an open-addressing table of name -> index
 * (linear probing, load at most 1/2, backward-shift deletion), so a
 * response costs O(its resources) in the store whatever the store's size. */

struct xent {
	struct mres *res;		/* the name is res->name */
	char *path;			/* "Cluster/<name>": its model_input path */
	char **aliases;
	size_t naliases;
	uint64_t digest;
	uint32_t hash;			/* of the name */
	uint32_t at;			/* index in its table's v[] */
	bool mark;			/* while applying: replaced or removed */
	bool shadowed;			/* a static resource has this name */
};

struct xtab {
	struct xent **v;
	size_t n, cap;
	uint32_t *slot;			/* index + 1 into v; 0 empty */
	size_t mask;			/* slots - 1 (0: no table yet) */
	char *version;			/* SotW version_info last ACKed */
};

struct xds_store {
	struct model_opts opts;
	char *network;
	struct xtab t[MRES__COUNT];
	struct xtab st[MRES__COUNT];	/* the static resources, by name */
	struct xent **stat;		/* ... in the order given */
	size_t nstat;
};

static struct xent *
tab_find(const struct xtab *t, const char *name, uint32_t hash, size_t *slot)
{
	if (!t->mask)
		return NULL;
	for (size_t i = hash & t->mask;; i = (i + 1) & t->mask) {
		uint32_t v = t->slot[i];

		if (!v) {
			if (slot)
				*slot = i;
			return NULL;
		}
		if (t->v[v - 1]->hash == hash && strcmp(t->v[v - 1]->res->name, name) == 0) {
			if (slot)
				*slot = i;
			return t->v[v - 1];
		}
	}
}

static struct xent *
tab_get(const struct xtab *t, const char *name)
{
	return tab_find(t, name, str_hash(name), NULL);
}

/* Room for n more entries (both arrays): the only allocations of a commit,
 * done before it. */
static int
tab_reserve(struct xtab *t, size_t more)
{
	size_t need = t->n + more, slots;

	if (need > t->cap) {
		size_t cap = t->cap ? t->cap : 16;
		void *nv;

		while (cap < need)
			cap *= 2;
		if (!(nv = realloc(t->v, cap * sizeof(*t->v))))
			return -ENOMEM;
		t->v = nv;
		t->cap = cap;
	}
	if (need < UINT32_MAX / 4 && 2 * need + 2 <= t->mask + 1)
		return 0;
	if (need >= UINT32_MAX / 4)
		return -ENOMEM;
	for (slots = 32; slots < 2 * need + 2; slots <<= 1)
		;
	uint32_t *ns = calloc(slots, sizeof(*ns));

	if (!ns)
		return -ENOMEM;
	free(t->slot);
	t->slot = ns;
	t->mask = slots - 1;
	for (size_t k = 0; k < t->n; k++) {
		size_t i = t->v[k]->hash & t->mask;

		while (t->slot[i])
			i = (i + 1) & t->mask;
		t->slot[i] = (uint32_t)(k + 1);
	}
	return 0;
}

/* Appends e (room reserved, name not there). */
static void
tab_add(struct xtab *t, struct xent *e)
{
	size_t slot;

	(void)tab_find(t, e->res->name, e->hash, &slot);
	e->at = (uint32_t)t->n;
	t->v[t->n++] = e;
	t->slot[slot] = (uint32_t)(e->at + 1);
}

/* Puts n in o's place (same name). */
static void
tab_replace(struct xtab *t, struct xent *o, struct xent *n)
{
	n->at = o->at;
	t->v[o->at] = n;
}

static void
tab_del(struct xtab *t, struct xent *e)
{
	size_t i, j;

	if (tab_find(t, e->res->name, e->hash, &i) != e)
		return;
	/* Backward-shift deletion: keep every probe chain unbroken. */
	t->slot[i] = 0;
	for (j = (i + 1) & t->mask; t->slot[j]; j = (j + 1) & t->mask) {
		size_t home = t->v[t->slot[j] - 1]->hash & t->mask;

		/* Entry j may move to i when its home is not in (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
			t->slot[i] = t->slot[j];
			t->slot[j] = 0;
			i = j;
		}
	}
	/* Swap-remove from the dense array; the last entry's slot follows it. */
	if (e->at != t->n - 1) {
		struct xent *last = t->v[t->n - 1];
		size_t ls;

		(void)tab_find(t, last->res->name, last->hash, &ls);
		t->v[e->at] = last;
		last->at = e->at;
		t->slot[ls] = e->at + 1;
	}
	t->n--;
}

static void
xent_free(struct xent *e)
{
	if (!e)
		return;
	mres_unref(e->res);
	free(e->path);
	names_free(e->aliases, e->naliases);
	free(e);
}

/* An entry for r (a reference taken). NULL on OOM. */
static struct xent *
xent_new(struct mres *r, const char *prefix, const char *const *aliases, size_t naliases, uint64_t digest)
{
	struct xent *e = calloc(1, sizeof(*e));
	size_t pl;

	if (!e)
		return NULL;
	e->res = mres_ref(r);
	e->hash = str_hash(r->name);
	e->digest = digest;
	pl = strlen(prefix) + 1 + strlen(r->name) + 1;
	if (!(e->path = malloc(pl)))
		goto fail;
	snprintf(e->path, pl, "%s/%s", prefix, r->name);
	if (naliases) {
		if (!(e->aliases = calloc(naliases, sizeof(*e->aliases))))
			goto fail;
		for (; e->naliases < naliases; e->naliases++)
			if (!(e->aliases[e->naliases] = strdup(aliases[e->naliases])))
				goto fail;
	}
	return e;
fail:
	xent_free(e);
	return NULL;
}

static void
tab_free(struct xtab *t)
{
	for (size_t i = 0; i < t->n; i++)
		xent_free(t->v[i]);
	free(t->v);
	free(t->slot);
	free(t->version);
	memset(t, 0, sizeof(*t));
}

struct xds_store *
xds_store_new(const struct model_opts *opts)
{
	struct xds_store *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	if (!(s->network = strdup(opts && opts->network ? opts->network : ""))) {
		free(s);
		return NULL;
	}
	s->opts.network = s->network;
	s->opts.strict_refs = opts ? opts->strict_refs : false;
	return s;
}

void
xds_store_free(struct xds_store *s)
{
	if (!s)
		return;
	for (int t = 0; t < MRES__COUNT; t++) {
		tab_free(&s->t[t]);
		/* st's entries are stat's; freed below. */
		free(s->st[t].v);
		free(s->st[t].slot);
	}
	for (size_t i = 0; i < s->nstat; i++)
		xent_free(s->stat[i]);
	free(s->stat);
	free(s->network);
	free(s);
}

static void
mark_shadowed(struct xds_store *s)
{
	for (int t = 0; t < MRES__COUNT; t++)
		for (size_t i = 0; i < s->t[t].n; i++) {
			struct xent *e = s->t[t].v[i];

			e->shadowed = tab_find(&s->st[t], e->res->name, e->hash, NULL) != NULL;
		}
}

int
xds_store_set_static(struct xds_store *s, struct mres *const *res, size_t n)
{
	struct xtab st[MRES__COUNT];
	struct xent **stat = NULL;
	size_t count[MRES__COUNT] = { 0 };
	int rc = -ENOMEM;

	memset(st, 0, sizeof(st));
	if (n && !(stat = calloc(n, sizeof(*stat))))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		count[res[i]->type]++;
	for (int t = 0; t < MRES__COUNT; t++)
		if (tab_reserve(&st[t], count[t]) < 0)
			goto fail;
	for (size_t i = 0; i < n; i++) {
		char prefix[64];

		snprintf(prefix, sizeof(prefix), "static %s", short_name(res[i]->type));
		if (!(stat[i] = xent_new(res[i], prefix, NULL, 0, 0)))
			goto fail;
		/* Two static ones of a name: both go to model_build, which keeps
		 * the first and says so; the set knows the first. */
		if (!tab_get(&st[res[i]->type], res[i]->name))
			tab_add(&st[res[i]->type], stat[i]);
	}
	for (int t = 0; t < MRES__COUNT; t++) {
		free(s->st[t].v);
		free(s->st[t].slot);
		s->st[t] = st[t];
	}
	for (size_t i = 0; i < s->nstat; i++)
		xent_free(s->stat[i]);
	free(s->stat);
	s->stat = stat;
	s->nstat = n;
	mark_shadowed(s);
	return 0;
fail:
	for (int t = 0; t < MRES__COUNT; t++) {
		free(st[t].v);
		free(st[t].slot);
	}
	for (size_t i = 0; i < n && stat; i++)
		xent_free(stat[i]);
	free(stat);
	return rc;
}

/* ---- Building ---- */

/* The inputs of a model: the static resources, then the held ones not
 * marked (replaced or removed) nor shadowed, then extra (the new ones): the
 * incumbents first, since model_build gives a contested VIP or IP to the
 * first comer. *in is malloc'd. */
static int
make_inputs(const struct xds_store *s, struct xent *const *extra, size_t nextra, struct model_input **in,
    size_t *n)
{
	size_t total = s->nstat + nextra, k = 0;

	for (int t = 0; t < MRES__COUNT; t++)
		total += s->t[t].n;
	if (!(*in = malloc((total ? total : 1) * sizeof(**in))))
		return -ENOMEM;
	for (size_t i = 0; i < s->nstat; i++)
		(*in)[k++] = (struct model_input){ s->stat[i]->res, s->stat[i]->path };
	for (int t = 0; t < MRES__COUNT; t++)
		for (size_t i = 0; i < s->t[t].n; i++) {
			const struct xent *e = s->t[t].v[i];

			if (!e->mark && !e->shadowed)
				(*in)[k++] = (struct model_input){ e->res, e->path };
		}
	for (size_t i = 0; i < nextra; i++)
		(*in)[k++] = (struct model_input){ extra[i]->res, extra[i]->path };
	*n = k;
	return 0;
}

struct model *
xds_store_build(struct xds_store *s, const struct model *prev, struct model_report *rep)
{
	struct model_input *in;
	struct model *m;
	size_t n;

	if (rep) {
		rep->problems = NULL;
		rep->nproblems = 0;
	}
	if (make_inputs(s, NULL, 0, &in, &n) < 0)
		return NULL;
	m = model_build(in, n, prev, &s->opts, rep);
	free(in);
	return m;
}

/* ---- Applying ---- */

/* The NACK's error_detail: "name: reason; name: reason", bounded. */
struct errs {
	char *buf;			/* ERROR_MAX bytes, allocated before the commit */
	size_t len, count, more;
};

static void errs_add(struct errs *e, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
errs_add(struct errs *e, const char *name, const char *fmt, ...)
{
	char line[640];
	size_t n, room = ERROR_MAX - 64;	/* keep room for "; ... and N more" */
	va_list ap;
	int k;

	k = snprintf(line, sizeof(line), "%s%.200s: ", e->count ? "; " : "", name);
	if (k < 0)
		return;
	n = (size_t)k < sizeof(line) ? (size_t)k : sizeof(line) - 1;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	n = strlen(line);
	e->count++;
	if (e->more || e->len + n >= room) {
		e->more++;
		return;
	}
	memcpy(e->buf + e->len, line, n + 1);
	e->len += n;
}

/* The text (the caller frees it), or NULL when there was no error. */
static char *
errs_take(struct errs *e)
{
	char *r;

	if (!e->count)
		return NULL;
	if (e->more)
		snprintf(e->buf + e->len, ERROR_MAX - e->len, "; ... and %zu more", e->more);
	r = e->buf;
	e->buf = NULL;
	return r;
}

/* A growable list of names (found, gone). */
struct names {
	char **v;
	size_t n, cap;
	bool oom;
};

static void
names_add(struct names *l, const char *s)
{
	if (l->oom)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		void *nv = realloc(l->v, cap * sizeof(*l->v));

		if (!nv) {
			l->oom = true;
			return;
		}
		l->v = nv;
		l->cap = cap;
	}
	if (!(l->v[l->n] = strdup(s)))
		l->oom = true;
	else
		l->n++;
}

/* One change the response asks for: old -> neu (NULL: removed). */
struct change {
	struct xent *old, *neu;
	size_t item;			/* its item (neu only) */
	bool refused;
};

static bool
aliases_eq(const struct xent *e, const struct xds_item *it)
{
	if (e->naliases != it->naliases)
		return false;
	for (size_t i = 0; i < e->naliases; i++)
		if (strcmp(e->aliases[i], it->aliases[i]) != 0)
			return false;
	return true;
}

static int
cmp_path_ptr(const void *a, const void *b)
{
	const char *x = (*(struct change *const *)a)->neu->path, *y = (*(struct change *const *)b)->neu->path;

	return x < y ? -1 : x > y;
}

static void
found_add(struct names *found, const struct mres *r, char *const *aliases, size_t naliases)
{
	names_add(found, r->name);
	for (size_t k = 0; k < naliases; k++)
		names_add(found, aliases[k]);
}

/* Whether a Cluster of that name is held or static. */
static bool
cluster_known(const struct xds_store *s, const char *name)
{
	struct xent *e = tab_get(&s->t[MRES_CLUSTER], name);

	return (e && !e->shadowed) || tab_get(&s->st[MRES_CLUSTER], name);
}

static void
note_cluster(const struct xds_store *s, struct errs *notes, const struct mres *r, const char *cluster)
{
	if (*cluster && !cluster_known(s, cluster))
		errs_add(notes, r->name, "cluster \"%.200s\" is not known (requests to it fail with 503)", cluster);
}

/* The clusters a RouteConfiguration routes to that no Cluster has: accepted
 * (as Envoy does), but said. */
static void
route_notes(const struct xds_store *s, struct errs *notes, const struct mres *r)
{
	const Envoy__Config__Route__V3__RouteConfiguration *rc = (const void *)r->msg;

	for (size_t v = 0; v < rc->n_virtual_hosts; v++) {
		const Envoy__Config__Route__V3__VirtualHost *vh = rc->virtual_hosts[v];

		for (size_t k = 0; vh && k < vh->n_routes; k++) {
			const Envoy__Config__Route__V3__Route *rt = vh->routes[k];
			const Envoy__Config__Route__V3__RouteAction *ra;

			if (!rt || rt->action_case != ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE || !(ra = rt->route))
				continue;
			if (ra->cluster_specifier_case == ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER)
				note_cluster(s, notes, r, S(ra->cluster));
			else if (ra->cluster_specifier_case ==
			    ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS && ra->weighted_clusters)
				for (size_t w = 0; w < ra->weighted_clusters->n_clusters; w++)
					if (ra->weighted_clusters->clusters[w])
						note_cluster(s, notes, r, S(ra->weighted_clusters->clusters[w]->name));
		}
	}
}

int
xds_store_apply(struct xds_store *s, const struct xds_update *u, const struct model *prev,
    struct xds_result *r)
{
	struct xtab *tab;
	struct change *ch = NULL, **byp = NULL;
	struct xent **extra = NULL;
	size_t nch = 0, nextra = 0, nadd = 0;
	struct model_input *in = NULL;
	struct model_report rep = { 0 };
	struct model *m = NULL;
	struct names found = { 0 }, gone = { 0 };
	struct nset seen = { 0 }, taken = { 0 };
	struct errs *errs = NULL;
	bool unnamed = false;
	char *version = NULL;
	size_t nin;
	int rc = -ENOMEM;

	memset(r, 0, sizeof(*r));
	if ((unsigned)u->type >= MRES__COUNT)
		return -EINVAL;
	tab = &s->t[u->type];
	if (!(errs = calloc(1, sizeof(*errs))) || !(errs->buf = calloc(1, ERROR_MAX)) ||
	    nset_init(&seen, u->nitems) < 0 || nset_init(&taken, u->nitems) < 0)
		goto out;
	if (!(ch = calloc(u->nitems + u->nremoved + (u->full_state ? tab->n : 0) + 1, sizeof(*ch))))
		goto out;
	/* Every name the response lists, good or bad: full state removes only
	 * what it does not list, and a refused one keeps its last good version. */
	for (size_t i = 0; i < u->nitems; i++) {
		const char *nm = S(u->items[i].name);

		if (*nm)
			(void)nset_add(&seen, nm);
		else
			unnamed = true;
	}
	for (size_t i = 0; i < u->nitems; i++) {
		const struct xds_item *it = &u->items[i];
		const char *nm = S(it->name);
		struct xent *old;

		if (!it->res || it->res->type != u->type || strcmp(it->res->name, nm) != 0) {
			char where[32];

			snprintf(where, sizeof(where), "resources[%zu]", i);
			if (!it->res)
				errs_add(errs, *nm ? nm : where, "%s", it->why[0] ? it->why : "refused");
			else
				errs_add(errs, *nm ? nm : where, "not a %s of that name", mres_type_names[u->type]);
			r->refused++;
			continue;
		}
		if (tab_get(&s->st[u->type], nm)) {
			errs_add(errs, nm, "the configuration file has a %s of that name (it wins)",
			    short_name(u->type));
			r->refused++;
			continue;
		}
		if (!nset_add(&taken, nm)) {
			/* A second item of a name (an update not from our decoder,
			 * which refuses those already): the first one stands. */
			errs_add(errs, nm, "named twice in one response");
			r->refused++;
			continue;
		}
		old = tab_get(tab, nm);
		/* Unchanged: the same bytes and aliases, and in delta the same
		 * version (SotW versions are the response's, new every push: a
		 * resource keeps the version it last changed in). */
		if (old && old->digest == it->digest && aliases_eq(old, it) &&
		    (!u->delta || strcmp(old->res->version, it->res->version) == 0)) {
			r->unchanged++;
			found_add(&found, old->res, old->aliases, old->naliases);
			continue;
		}
		ch[nch] = (struct change){ .old = old, .item = i };
		if (!(ch[nch].neu = xent_new(it->res, short_name(u->type), (const char *const *)it->aliases,
		    it->naliases, it->digest)))
			goto undo;
		if (old)
			old->mark = true;
		else
			nadd++;
		nch++;
	}
	/* Removals: a name not held is no error (the server may not know what
	 * we hold), but it is gone for on-demand lookups waiting on it. */
	for (size_t i = 0; i < u->nremoved; i++) {
		const char *nm = S(u->removed[i]);
		struct xent *old;

		if (!*nm || nset_has(&seen, nm))
			continue;	/* listed as a resource too: that wins */
		names_add(&gone, nm);
		if (!(old = tab_get(tab, nm)) || old->mark)
			continue;
		old->mark = true;
		ch[nch++] = (struct change){ .old = old };
	}
	/* SotW full state: what is held and not listed is removed, unless an
	 * item could not even be named (it may be one of them: keep them all). */
	if (u->full_state && !unnamed)
		for (size_t i = 0; i < tab->n; i++) {
			struct xent *e = tab->v[i];

			if (e->mark || nset_has(&seen, e->res->name))
				continue;
			names_add(&gone, e->res->name);
			e->mark = true;
			ch[nch++] = (struct change){ .old = e };
		}
	if (found.oom || gone.oom)
		goto undo;
	if (nch) {
		/* Everything the commit needs, before the build: after it the
		 * commit cannot fail. */
		if (tab_reserve(tab, nadd) < 0)
			goto undo;
		if (!(extra = calloc(nch, sizeof(*extra))) || !(byp = calloc(nch, sizeof(*byp))))
			goto undo;
		for (size_t i = 0; i < nch; i++)
			if (ch[i].neu) {
				byp[nextra] = &ch[i];
				extra[nextra++] = ch[i].neu;
			}
		if (make_inputs(s, extra, nextra, &in, &nin) < 0)
			goto undo;
		if (!(m = model_build(in, nin, prev, &s->opts, &rep)))
			goto undo;
		/* Refusals map back to this response's resources by their path. */
		qsort(byp, nextra, sizeof(*byp), cmp_path_ptr);
		for (size_t p = 0; p < rep.nproblems; p++) {
			const struct model_problem *pb = &rep.problems[p];
			struct change key_c = { .neu = &(struct xent){ .path = (char *)pb->path } }, *key = &key_c, **hit;
			const char *msg = pb->msg;
			size_t pl = pb->path ? strlen(pb->path) : 0;

			if (!pb->path || !(hit = bsearch(&key, byp, nextra, sizeof(*byp), cmp_path_ptr)))
				continue;	/* a static or held one (not this response's) */
			if (strncmp(msg, pb->path, pl) == 0 && msg[pl] == '.')
				msg += pl + 1;
			if (!(*hit)->refused) {
				(*hit)->refused = true;
				errs_add(errs, (*hit)->neu->res->name, "%s%s", msg,
				    pb->kept_previous ? " (the previous version stays)" : "");
				r->refused++;
			}
		}
	}
	/* What the result holds, before the commit (which cannot fail). */
	for (size_t i = 0; i < nch; i++)
		if (ch[i].neu && !ch[i].refused)
			found_add(&found, ch[i].neu->res, ch[i].neu->aliases, ch[i].neu->naliases);
	if (!errs->count && u->version && (*u->version || !u->delta) && !(version = strdup(u->version)))
		goto undo;
	if (found.oom || gone.oom)
		goto undo;
	/* Commit. */
	for (size_t i = 0; i < nch; i++) {
		struct change *c = &ch[i];

		if (c->old)
			c->old->mark = false;
		if (c->refused) {
			xent_free(c->neu);
			continue;
		}
		if (c->neu) {
			c->neu->shadowed = false;
			if (c->old) {
				tab_replace(tab, c->old, c->neu);
				xent_free(c->old);
			} else
				tab_add(tab, c->neu);
			r->applied++;
		} else {
			tab_del(tab, c->old);
			xent_free(c->old);
			r->removed++;
		}
	}
	if (r->applied || r->removed) {
		r->model = m;
		m = NULL;
	}
	r->error = errs_take(errs);
	/* Advisory: out of memory here only loses the text. */
	if (u->type == MRES_ROUTE && r->applied) {
		struct errs notes = { .buf = calloc(1, ERROR_MAX) };

		if (notes.buf) {
			for (size_t i = 0; i < nch; i++)
				if (ch[i].neu && !ch[i].refused)
					route_notes(s, &notes, ch[i].neu->res);
			r->notes = errs_take(&notes);
			free(notes.buf);
		}
	}
	/* The version an ACK carries (SotW: the next request's version_info);
	 * a NACK keeps the last good one. */
	if (version) {
		free(tab->version);
		tab->version = version;
		version = NULL;
	}
	r->found = found.v;
	r->nfound = found.n;
	r->gone = gone.v;
	r->ngone = gone.n;
	found.v = gone.v = NULL;
	rc = 0;
	goto out;
undo:
	for (size_t i = 0; i < nch; i++) {
		if (ch[i].old)
			ch[i].old->mark = false;
		xent_free(ch[i].neu);
	}
	memset(r, 0, sizeof(*r));
out:
	free(version);
	model_free(m);
	model_report_free(&rep);
	free(in);
	free(extra);
	free(byp);
	free(ch);
	free(seen.slot);
	free(taken.slot);
	if (errs)
		free(errs->buf);
	free(errs);
	names_free(found.v, found.n);
	names_free(gone.v, gone.n);
	return rc;
}

void
xds_result_free(struct xds_result *r)
{
	if (!r)
		return;
	free(r->error);
	free(r->notes);
	model_free(r->model);
	names_free(r->found, r->nfound);
	names_free(r->gone, r->ngone);
	memset(r, 0, sizeof(*r));
}

/* ---- Reading ---- */

const char *
xds_store_version(const struct xds_store *s, enum mres_type t)
{
	if ((unsigned)t >= MRES__COUNT || !s->t[t].version)
		return "";
	return s->t[t].version;
}

static int
cmp_ent_name(const void *a, const void *b)
{
	return strcmp((*(struct xent *const *)a)->res->name, (*(struct xent *const *)b)->res->name);
}

void
xds_store_each(const struct xds_store *s, enum mres_type t, xds_each_fn *fn, void *ud)
{
	const struct xtab *tab;
	struct xent **v;

	if ((unsigned)t >= MRES__COUNT)
		return;
	tab = &s->t[t];
	if (!tab->n)
		return;
	/* Sorted on a copy; out of memory, in the store's order. */
	if ((v = malloc(tab->n * sizeof(*v)))) {
		memcpy(v, tab->v, tab->n * sizeof(*v));
		qsort(v, tab->n, sizeof(*v), cmp_ent_name);
	}
	for (size_t i = 0; i < tab->n; i++) {
		const struct xent *e = v ? v[i] : tab->v[i];

		fn(ud, e->res, (const char *const *)e->aliases, e->naliases);
	}
	free(v);
}

size_t
xds_store_count(const struct xds_store *s, enum mres_type t)
{
	return (unsigned)t < MRES__COUNT ? s->t[t].n : 0;
}

/* ---- References (what to subscribe to by name) ---- */

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
cluster_refs(const struct mres *r, struct names *l)
{
	const Envoy__Config__Cluster__V3__Cluster *c = (const void *)r->msg;

	if (c->cluster_discovery_type_case != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE ||
	    c->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS)
		return;
	names_add(l, c->eds_cluster_config && *S(c->eds_cluster_config->service_name) ?
	    c->eds_cluster_config->service_name : r->name);
}

static void
chain_refs(const Envoy__Config__Listener__V3__FilterChain *fc, struct names *l)
{
	static const char hcm[] = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

	if (!fc)
		return;
	for (size_t f = 0; f < fc->n_filters; f++) {
		const Envoy__Config__Listener__V3__Filter *flt = fc->filters[f];
		Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *h;
		const char *url, *slash;

		if (!flt || flt->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG ||
		    !flt->typed_config)
			continue;
		url = S(flt->typed_config->type_url);
		slash = strrchr(url, '/');
		if (strcmp(slash ? slash + 1 : url, hcm) != 0)
			continue;
		/* The model validated this Any already; one that does not decode
		 * here references nothing. */
		if (pb_depth_ok(&envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
		    flt->typed_config->value.data, flt->typed_config->value.len, PB_MAX_DEPTH) < 0 ||
		    !(h = envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__unpack(
		    NULL, flt->typed_config->value.len, flt->typed_config->value.data)))
			continue;
		if (h->route_specifier_case ==
		    ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS &&
		    h->rds && *S(h->rds->route_config_name))
			names_add(l, h->rds->route_config_name);
		envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__free_unpacked(h,
		    NULL);
	}
}

static void
listener_refs(const struct mres *r, struct names *l)
{
	const Envoy__Config__Listener__V3__Listener *ls = (const void *)r->msg;

	for (size_t i = 0; i < ls->n_filter_chains; i++)
		chain_refs(ls->filter_chains[i], l);
	chain_refs(ls->default_filter_chain, l);
}

int
xds_store_refs(const struct xds_store *s, enum mres_type t, char ***names, size_t *n)
{
	enum mres_type from;
	struct names l = { 0 };
	size_t k = 0;

	*names = NULL;
	*n = 0;
	if (t == MRES_ENDPOINTS)
		from = MRES_CLUSTER;
	else if (t == MRES_ROUTE)
		from = MRES_LISTENER;
	else
		return -EINVAL;
	/* The static resources' references too: a static EDS cluster wants
	 * its endpoints from the server like any other. */
	for (size_t i = 0; i < s->nstat; i++)
		if (s->stat[i]->res->type == from)
			(from == MRES_CLUSTER ? cluster_refs : listener_refs)(s->stat[i]->res, &l);
	for (size_t i = 0; i < s->t[from].n; i++)
		if (!s->t[from].v[i]->shadowed)
			(from == MRES_CLUSTER ? cluster_refs : listener_refs)(s->t[from].v[i]->res, &l);
	if (l.oom) {
		names_free(l.v, l.n);
		return -ENOMEM;
	}
	if (l.n) {
		qsort(l.v, l.n, sizeof(*l.v), cmp_str);
		for (size_t i = 0; i < l.n; i++) {
			if (k && strcmp(l.v[k - 1], l.v[i]) == 0) {
				free(l.v[i]);
				continue;
			}
			l.v[k++] = l.v[i];
		}
	}
	*names = l.v;
	*n = k;
	return 0;
}

void
xds_names_free(char **names, size_t n)
{
	names_free(names, n);
}

/* ---- The state file's way in ---- */

int
xds_store_put(struct xds_store *s, struct mres *r, const char *const *aliases, size_t naliases)
{
	struct xtab *tab = &s->t[r->type];
	struct xent *e, *old;

	if (!(e = xent_new(r, short_name(r->type), aliases, naliases, 0)))
		return -ENOMEM;
	e->shadowed = tab_get(&s->st[r->type], r->name) != NULL;
	if ((old = tab_get(tab, r->name))) {
		tab_replace(tab, old, e);
		xent_free(old);
		return 0;
	}
	if (tab_reserve(tab, 1) < 0) {
		xent_free(e);
		return -ENOMEM;
	}
	tab_add(tab, e);
	return 0;
}

int
xds_store_set_version(struct xds_store *s, enum mres_type t, const char *version)
{
	char *v;

	if ((unsigned)t >= MRES__COUNT)
		return -EINVAL;
	if (!(v = strdup(S(version))))
		return -ENOMEM;
	free(s->t[t].version);
	s->t[t].version = v;
	return 0;
}
