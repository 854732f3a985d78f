/* Fuzz target: xDS responses (src/xds_store.c) as the ADS stream hands them
 * over: decoded (DeltaDiscoveryResponse or DiscoveryResponse) and applied
 * into a store that holds a few static resources, the model built over the
 * running one each time.
 * Input: byte 0 says how: bit 0 delta (1) or SotW (0); bit 1 two messages
 * (bytes 1-2 the first's length, little-endian), applied one after the
 * other over the first's model, so replacement, removal and full state meet
 * held resources. The rest is the message.
 * Whatever the input: no crash; a refused message says why; every item is
 * decoded or says why; an apply succeeds and NACKs exactly when it refused
 * something, within the error bound; the model holds every held resource's
 * name it kept; the references are sorted and unique. */
#include "autoconfig.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "xds_store.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "istio/workload/workload.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct mres *statics[2];

static void
init(void)
{
	static bool done;
	static uint8_t ip[4] = { 10, 0, 0, 1 };
	Istio__Workload__Address *a;
	Istio__Workload__Workload *w;
	Envoy__Config__Cluster__V3__Cluster *c;
	char why[256];

	if (done)
		return;
	done = true;
	if (model_register_types() < 0)
		__builtin_trap();
	/* A static workload at 10.0.0.1 (xDS ones there are refused) and a
	 * static EDS cluster (a reference to subscribe to). */
	a = calloc(1, sizeof(*a));
	w = calloc(1, sizeof(*w));
	istio__workload__address__init(a);
	istio__workload__workload__init(w);
	w->uid = strdup("static-w");
	w->name = strdup("static-w");
	w->namespace_ = strdup("ns");
	w->n_addresses = 1;
	w->addresses = calloc(1, sizeof(*w->addresses));
	w->addresses[0].data = malloc(4);
	memcpy(w->addresses[0].data, ip, 4);
	w->addresses[0].len = 4;
	a->type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
	a->workload = w;
	c = calloc(1, sizeof(*c));
	envoy__config__cluster__v3__cluster__init(c);
	c->name = strdup("static-c");
	c->cluster_discovery_type_case = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
	c->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS;
	if (!(statics[0] = mres_new(&a->base, NULL, NULL, why, sizeof(why))) ||
	    !(statics[1] = mres_new(&c->base, NULL, NULL, why, sizeof(why))))
		__builtin_trap();
}

static void
check_refs(const struct xds_store *s, enum mres_type t)
{
	char **names;
	size_t n;

	if (xds_store_refs(s, t, &names, &n) < 0)
		__builtin_trap();
	for (size_t i = 1; i < n; i++)
		if (strcmp(names[i - 1], names[i]) >= 0)
			__builtin_trap();
	xds_names_free(names, n);
}

struct held {
	const struct model *m;
	bool bad;
};

/* A held resource the model lacks must have been refused by the model in an
 * earlier build (possible, rare); one it has under another pointer must
 * be of the same name and type. */
static void
held_cb(void *ud, const struct mres *r, const char *const *aliases, size_t naliases)
{
	struct held *h = ud;
	const struct mres *x = model_find(h->m, r->type, r->name);

	(void)aliases;
	(void)naliases;
	if (x && (x->type != r->type || strcmp(x->name, r->name) != 0))
		h->bad = true;
}

/* Decodes and applies one message; the new model replaces *m. */
static void
one(struct xds_store *s, struct model **m, const uint8_t *msg, size_t len, bool delta)
{
	struct xds_update u;
	struct xds_result r;
	char err[256];
	int rc;

	err[0] = '\0';
	rc = delta ? xds_decode_delta(msg, len, &u, err, sizeof(err)) : xds_decode_sotw(msg, len, &u, err, sizeof(err));
	if (rc < 0) {
		if (rc != -EINVAL || !err[0])
			__builtin_trap();
		xds_update_free(&u);
		return;
	}
	if ((unsigned)u.type >= MRES__COUNT || !u.nonce || !u.type_url || u.delta != delta)
		__builtin_trap();
	for (size_t i = 0; i < u.nitems; i++) {
		const struct xds_item *it = &u.items[i];

		if (!it->name || !it->version || (!it->res && !it->why[0]))
			__builtin_trap();
		if (it->res && (it->res->type != u.type || strcmp(it->res->name, it->name) != 0))
			__builtin_trap();
	}
	if (xds_store_apply(s, &u, *m, &r) != 0)
		__builtin_trap();
	if ((r.error != NULL) != (r.refused > 0) || (r.error && strlen(r.error) >= 4096))
		__builtin_trap();
	if (r.applied + r.refused + r.unchanged > u.nitems)
		__builtin_trap();
	if (r.model) {
		struct held h = { .m = r.model };

		for (int t = 0; t < MRES__COUNT; t++)
			xds_store_each(s, (enum mres_type)t, held_cb, &h);
		if (h.bad)
			__builtin_trap();
		model_free(*m);
		*m = model_ref(r.model);
	} else if (r.applied || r.removed)
		__builtin_trap();
	xds_result_free(&r);
	xds_update_free(&u);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct model_opts opts = { .network = "" };
	struct model_report rep;
	struct xds_store *s;
	struct model *m;
	bool delta, two;

	init();
	if (size < 1)
		return 0;
	delta = data[0] & 1;
	two = data[0] & 2;
	data++;
	size--;
	if (!(s = xds_store_new(&opts)) || xds_store_set_static(s, statics, 2) < 0)
		__builtin_trap();
	if (!(m = xds_store_build(s, NULL, &rep)))
		__builtin_trap();
	model_report_free(&rep);
	if (two && size >= 2) {
		size_t first = (size_t)data[0] | (size_t)data[1] << 8;

		data += 2;
		size -= 2;
		if (first > size)
			first = size;
		one(s, &m, data, first, delta);
		data += first;
		size -= first;
	}
	one(s, &m, data, size, delta);
	check_refs(s, MRES_ENDPOINTS);
	check_refs(s, MRES_ROUTE);
	model_free(m);
	xds_store_free(s);
	return 0;
}
