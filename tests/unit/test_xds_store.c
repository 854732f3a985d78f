/* Unit tests for src/xds_store.c: xDS responses (DeltaDiscoveryResponse and
 * DiscoveryResponse bytes packed here with protobuf-c, their resources
 * written as proto3 JSON and packed into Anys) decoded and applied over a
 * store: ACK, NACK with the good ones applied, the last good version kept,
 * removal, SotW full state, duplicates, wrong inner types, unknown enums,
 * EDS/RDS references, found/gone, the static resources, the error bound,
 * allocation failures leaving the store whole. XDS_GOLDEN_DIR holds
 * responses encoded by Python's protobuf from the real Envoy protos
 * (tests/unit/golden/xds/make.py). */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_pb.h"
#include "model.h"
#include "xds_store.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"

/* Allocation-failure injection (linked with --wrap=malloc,calloc,realloc):
 * when fail_at > 0, the fail_at-th allocation from now fails. */
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_realloc(void *p, size_t size);
static long fail_at;

static bool
fail_now(void)
{
	return fail_at > 0 && --fail_at == 0;
}

void *
__wrap_malloc(size_t size)
{
	return fail_now() ? NULL : __real_malloc(size);
}

void *
__wrap_calloc(size_t n, size_t size)
{
	return fail_now() ? NULL : __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t size)
{
	return fail_now() ? NULL : __real_realloc(p, size);
}

#define T_ADDRESS "type.googleapis.com/istio.workload.Address"
#define T_CLUSTER "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define T_CLA "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
#define T_LISTENER "type.googleapis.com/envoy.config.listener.v3.Listener"
#define T_ROUTE "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

#define ADDR "'@type':'" T_ADDRESS "'"
#define WL(uid, ip64, extra) \
	"{" ADDR ",'workload':{'uid':'" uid "','name':'" uid "','namespace':'ns','addresses':['" ip64 "']" extra "}}"
#define SVC(name, vip64) \
	"{" ADDR ",'service':{'name':'" name "','namespace':'ns','hostname':'" name ".ns.svc.cluster.local'," \
	"'addresses':[{'network':'','address':'" vip64 "'}],'ports':[{'servicePort':80,'targetPort':8080}]}}"
#define CLUSTER(name, extra) "{'@type':'" T_CLUSTER "','name':'" name "'" extra "}"
#define EDS(svc) ",'type':'EDS','edsClusterConfig':{'edsConfig':{'ads':{}}" svc "}"
#define CLA(name) "{'@type':'" T_CLA "','clusterName':'" name "'}"
#define HCM(rds) \
	"{'name':'hcm','typedConfig':{'@type':'type.googleapis.com/envoy.extensions.filters.network." \
	"http_connection_manager.v3.HttpConnectionManager','statPrefix':'x'," rds "}}"
#define LISTENER(name, filters) \
	"{'@type':'" T_LISTENER "','name':'" name "','filterChains':[{'filters':[" filters "]}]}"

#define IP1 "CgAAAQ=="	/* 10.0.0.1 */
#define IP2 "CgAAAg=="	/* 10.0.0.2 */
#define IP3 "CgAAAw=="	/* 10.0.0.3 */
#define IP4 "CgAABA=="	/* 10.0.0.4 */
#define VIP1 "CmAAAQ=="	/* 10.96.0.1 */

/* ---- Building responses ---- */

struct rsc {
	char *name, *version;
	char *aliases[4];
	size_t naliases;
	char *type_url;		/* NULL: no Any */
	uint8_t *val;
	size_t vlen;
};

struct resp {
	const char *type_url;
	struct rsc r[400];
	size_t n;
	const char *removed[16];
	size_t nremoved;
};

static char *
dq(const char *s)
{
	char *d = strdup(s);

	assert_non_null(d);
	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

/* Packs the message of a JSON Any ("@type" and its fields). */
static void
pack_json(struct rsc *x, const char *json)
{
	char *t = dq(json), err[256];
	cJSON *j = json_parse_strict(t, strlen(t), err, sizeof(err));
	ProtobufCMessage *msg = NULL;
	struct jpb_err je;

	if (!j)
		fail_msg("bad test JSON: %s: %s", err, t);
	if (jpb_decode_any(j, NULL, NULL, NULL, &msg, &je) < 0)
		fail_msg("decode: %s", je.msg);
	x->type_url = strdup(cJSON_GetObjectItemCaseSensitive(j, "@type")->valuestring);
	x->vlen = protobuf_c_message_get_packed_size(msg);
	x->val = malloc(x->vlen ? x->vlen : 1);
	assert_non_null(x->val);
	protobuf_c_message_pack(msg, x->val);
	protobuf_c_message_free_unpacked(msg, NULL);
	cJSON_Delete(j);
	free(t);
}

static struct rsc *
add(struct resp *p, const char *name, const char *version, const char *json)
{
	struct rsc *x = &p->r[p->n++];

	assert_true(p->n <= sizeof(p->r) / sizeof(p->r[0]));
	memset(x, 0, sizeof(*x));
	x->name = name ? strdup(name) : NULL;
	x->version = version ? strdup(version) : NULL;
	if (json)
		pack_json(x, json);
	return x;
}

static void
alias(struct rsc *x, const char *a)
{
	x->aliases[x->naliases++] = strdup(a);
}

static void
resp_clear(struct resp *p)
{
	for (size_t i = 0; i < p->n; i++) {
		free(p->r[i].name);
		free(p->r[i].version);
		free(p->r[i].type_url);
		free(p->r[i].val);
		for (size_t k = 0; k < p->r[i].naliases; k++)
			free(p->r[i].aliases[k]);
	}
	p->n = 0;
	p->nremoved = 0;
}

static uint8_t *
pack_delta(const struct resp *p, const char *nonce, size_t *len)
{
	Envoy__Service__Discovery__V3__DeltaDiscoveryResponse m = ENVOY__SERVICE__DISCOVERY__V3__DELTA_DISCOVERY_RESPONSE__INIT;
	Envoy__Service__Discovery__V3__Resource res[400], *rp[400];
	Google__Protobuf__Any any[400];
	uint8_t *out;

	m.type_url = (char *)p->type_url;
	m.nonce = (char *)nonce;
	m.system_version_info = (char *)"sys1";
	m.n_resources = p->n;
	m.resources = rp;
	for (size_t i = 0; i < p->n; i++) {
		envoy__service__discovery__v3__resource__init(&res[i]);
		google__protobuf__any__init(&any[i]);
		res[i].name = p->r[i].name ? p->r[i].name : (char *)"";
		res[i].version = p->r[i].version ? p->r[i].version : (char *)"";
		res[i].n_aliases = p->r[i].naliases;
		res[i].aliases = (char **)p->r[i].aliases;
		if (p->r[i].type_url) {
			any[i].type_url = p->r[i].type_url;
			any[i].value.data = p->r[i].val;
			any[i].value.len = p->r[i].vlen;
			res[i].resource = &any[i];
		}
		rp[i] = &res[i];
	}
	m.n_removed_resources = p->nremoved;
	m.removed_resources = (char **)p->removed;
	*len = envoy__service__discovery__v3__delta_discovery_response__get_packed_size(&m);
	out = malloc(*len ? *len : 1);
	assert_non_null(out);
	envoy__service__discovery__v3__delta_discovery_response__pack(&m, out);
	return out;
}

static uint8_t *
pack_sotw(const struct resp *p, const char *version, const char *nonce, size_t *len)
{
	Envoy__Service__Discovery__V3__DiscoveryResponse m = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
	Google__Protobuf__Any any[400], *ap[400];
	uint8_t *out;

	m.type_url = (char *)p->type_url;
	m.nonce = (char *)nonce;
	m.version_info = (char *)version;
	m.n_resources = p->n;
	m.resources = ap;
	for (size_t i = 0; i < p->n; i++) {
		google__protobuf__any__init(&any[i]);
		any[i].type_url = p->r[i].type_url;
		any[i].value.data = p->r[i].val;
		any[i].value.len = p->r[i].vlen;
		ap[i] = &any[i];
	}
	*len = envoy__service__discovery__v3__discovery_response__get_packed_size(&m);
	out = malloc(*len ? *len : 1);
	assert_non_null(out);
	envoy__service__discovery__v3__discovery_response__pack(&m, out);
	return out;
}

/* ---- A store and its running model ---- */

struct fx {
	struct xds_store *s;
	struct model *m;		/* the running model */
	struct xds_result r;		/* the last apply's */
	struct resp p;
};

static void
fx_init(struct fx *f)
{
	static const struct model_opts o = { .network = "" };

	memset(f, 0, sizeof(*f));
	assert_non_null(f->s = xds_store_new(&o));
	assert_non_null(f->m = model_empty());
}

static void
fx_done(struct fx *f)
{
	xds_result_free(&f->r);
	model_free(f->m);
	xds_store_free(f->s);
	resp_clear(&f->p);
}

/* Decodes bytes, applies them; the model, when one came, runs next. */
static void
apply_bytes(struct fx *f, const uint8_t *b, size_t len, bool delta)
{
	struct xds_update u;
	char err[256];
	int rc;

	xds_result_free(&f->r);
	rc = delta ? xds_decode_delta(b, len, &u, err, sizeof(err)) : xds_decode_sotw(b, len, &u, err, sizeof(err));
	if (rc < 0)
		fail_msg("decode: %d %s", rc, err);
	assert_int_equal(xds_store_apply(f->s, &u, f->m, &f->r), 0);
	if (f->r.model) {
		model_free(f->m);
		f->m = model_ref(f->r.model);
	}
	xds_update_free(&u);
}

static void
push_delta(struct fx *f, const char *nonce)
{
	size_t len;
	uint8_t *b = pack_delta(&f->p, nonce, &len);

	apply_bytes(f, b, len, true);
	free(b);
	resp_clear(&f->p);
}

static void
push_sotw(struct fx *f, const char *version)
{
	size_t len;
	uint8_t *b = pack_sotw(&f->p, version, "n", &len);

	apply_bytes(f, b, len, false);
	free(b);
	resp_clear(&f->p);
}

/* The version the store holds for name ("" none). */
struct find {
	const char *name;
	char version[64];
	size_t naliases;
	char last[256];		/* names in order, last one: ordering check */
	bool sorted;
};

static void
find_cb(void *ud, const struct mres *r, const char *const *aliases, size_t naliases)
{
	struct find *q = ud;

	(void)aliases;
	if (q->last[0] && strcmp(q->last, r->name) >= 0)
		q->sorted = false;
	snprintf(q->last, sizeof(q->last), "%s", r->name);
	if (strcmp(r->name, q->name) == 0) {
		snprintf(q->version, sizeof(q->version), "%s", r->version[0] ? r->version : "(empty)");
		q->naliases = naliases;
	}
}

static const char *
held(struct fx *f, enum mres_type t, const char *name)
{
	static struct find q;

	memset(&q, 0, sizeof(q));
	q.name = name;
	q.sorted = true;
	xds_store_each(f->s, t, find_cb, &q);
	assert_true(q.sorted);
	return q.version;
}

static bool
has(char **v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

static void
assert_error_has(const struct xds_result *r, const char *s)
{
	if (!r->error || !strstr(r->error, s))
		fail_msg("error \"%s\" lacks \"%s\"", r->error ? r->error : "(ACK)", s);
}

/* ---- Tests ---- */

/* Every resource good: ACK, all applied, found has names and aliases, the
 * store has each with its version; the same again changes nothing. */
static void
test_ack(void **state)
{
	struct fx f;
	struct rsc *x;
	const struct mres *r;

	(void)state;
	fx_init(&f);
	f.p.type_url = T_ADDRESS;
	x = add(&f.p, "w1", "v1", WL("w1", IP1, ""));
	alias(x, "/10.0.0.1");
	add(&f.p, "w2", "v1", WL("w2", IP2, ""));
	add(&f.p, "ns/echo.ns.svc.cluster.local", "v1", SVC("echo", VIP1));
	push_delta(&f, "n1");
	assert_null(f.r.error);
	assert_int_equal(f.r.applied, 3);
	assert_int_equal(f.r.refused, 0);
	assert_non_null(f.r.model);
	assert_true(has(f.r.found, f.r.nfound, "w1"));
	assert_true(has(f.r.found, f.r.nfound, "/10.0.0.1"));
	assert_true(has(f.r.found, f.r.nfound, "ns/echo.ns.svc.cluster.local"));
	assert_int_equal(xds_store_count(f.s, MRES_ADDRESS), 3);
	assert_string_equal(held(&f, MRES_ADDRESS, "w1"), "v1");
	assert_non_null(r = model_find(f.m, MRES_ADDRESS, "w2"));
	assert_string_equal(r->version, "v1");
	assert_non_null(model_service(f.m, "ns/echo.ns.svc.cluster.local"));
	assert_string_equal(xds_store_version(f.s, MRES_ADDRESS), "sys1");

	/* The same again: nothing changed, no model, still found. */
	f.p.type_url = T_ADDRESS;
	x = add(&f.p, "w1", "v1", WL("w1", IP1, ""));
	alias(x, "/10.0.0.1");
	add(&f.p, "w2", "v1", WL("w2", IP2, ""));
	push_delta(&f, "n2");
	assert_null(f.r.error);
	assert_int_equal(f.r.unchanged, 2);
	assert_int_equal(f.r.applied, 0);
	assert_null(f.r.model);
	assert_true(has(f.r.found, f.r.nfound, "/10.0.0.1"));

	/* A new version of one: only it applies. */
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w2", "v2", WL("w2", IP2, ",'node':'n2'"));
	push_delta(&f, "n3");
	assert_null(f.r.error);
	assert_int_equal(f.r.applied, 1);
	assert_string_equal(held(&f, MRES_ADDRESS, "w2"), "v2");
	assert_string_equal(model_find(f.m, MRES_ADDRESS, "w2")->version, "v2");
	assert_non_null(model_find(f.m, MRES_ADDRESS, "w1"));
	fx_done(&f);
}

/* A bad resource NACKs the response by name while the good ones apply; the
 * bad one is not recorded (a reconnect asks for it again). */
static void
test_nack_good_applied(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f);
	f.p.type_url = T_ADDRESS;
	add(&f.p, "good", "v1", WL("good", IP1, ""));
	add(&f.p, "bad", "v1", "{" ADDR ",'workload':{'uid':'bad','addresses':['AQID']}}");	/* 3 bytes */
	push_delta(&f, "n1");
	assert_error_has(&f.r, "bad: workload.addresses[0]");
	assert_null(strstr(f.r.error, "good"));
	assert_int_equal(f.r.applied, 1);
	assert_int_equal(f.r.refused, 1);
	assert_non_null(f.r.model);
	assert_non_null(model_find(f.m, MRES_ADDRESS, "good"));
	assert_null(model_find(f.m, MRES_ADDRESS, "bad"));
	assert_int_equal(xds_store_count(f.s, MRES_ADDRESS), 1);
	assert_string_equal(held(&f, MRES_ADDRESS, "bad"), "");
	assert_false(has(f.r.found, f.r.nfound, "bad"));
	/* A NACK leaves the type's version as it was. */
	assert_string_equal(xds_store_version(f.s, MRES_ADDRESS), "");

	/* A response of nothing but bad ones: NACK, nothing changed. */
	f.p.type_url = T_ADDRESS;
	add(&f.p, "bad2", "v1", "{" ADDR ",'workload':{'uid':'bad2','addresses':['AQID']}}");
	push_delta(&f, "n2");
	assert_error_has(&f.r, "bad2: ");
	assert_null(f.r.model);
	fx_done(&f);
}

/* A refused new version keeps the last good one, in the model and in the
 * store (initial_resource_versions must say the old version). */
static void
test_refused_keeps_previous(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f);
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w1", "v1", WL("w1", IP1, ""));
	push_delta(&f, "n1");
	assert_null(f.r.error);

	f.p.type_url = T_ADDRESS;
	add(&f.p, "w1", "v2", "{" ADDR ",'workload':{'uid':'w1','addresses':['AQID']}}");
	add(&f.p, "w2", "v2", WL("w2", IP2, ""));
	push_delta(&f, "n2");
	assert_error_has(&f.r, "w1: workload.addresses[0]");
	assert_error_has(&f.r, "(the previous version stays)");
	assert_string_equal(held(&f, MRES_ADDRESS, "w1"), "v1");
	assert_string_equal(model_find(f.m, MRES_ADDRESS, "w1")->version, "v1");
	assert_non_null(model_find(f.m, MRES_ADDRESS, "w2"));

	/* Validation against the others: w3 takes w1's IP (w1 was first). */
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w3", "v1", WL("w3", IP1, ""));
	push_delta(&f, "n3");
	assert_error_has(&f.r, "w3: workload.addresses[0]: 10.0.0.1 is w1's already");
	assert_non_null(model_find(f.m, MRES_ADDRESS, "w1"));
	assert_null(model_find(f.m, MRES_ADDRESS, "w3"));
	assert_string_equal(held(&f, MRES_ADDRESS, "w3"), "");

	/* Also when the new version of a held one takes another's IP: the
	 * incumbent keeps it and the changed one keeps its old version. */
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w1", "v3", WL("w1", IP2, ""));
	push_delta(&f, "n4");
	assert_error_has(&f.r, "w1: workload.addresses[0]: 10.0.0.2 is w2's already");
	assert_string_equal(held(&f, MRES_ADDRESS, "w1"), "v1");
	assert_string_equal(model_find(f.m, MRES_ADDRESS, "w1")->version, "v1");
	assert_string_equal(model_find(f.m, MRES_ADDRESS, "w2")->version, "v2");
	fx_done(&f);
}

/* removed_resources: a held name removed, one not held ignored; both gone. */
static void
test_removal(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f);
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w1", "v1", WL("w1", IP1, ""));
	add(&f.p, "w2", "v1", WL("w2", IP2, ""));
	add(&f.p, "w3", "v1", WL("w3", IP3, ""));
	push_delta(&f, "n1");

	f.p.type_url = T_ADDRESS;
	f.p.removed[f.p.nremoved++] = "w1";
	f.p.removed[f.p.nremoved++] = "never-held";
	f.p.removed[f.p.nremoved++] = "w1";
	push_delta(&f, "n2");
	assert_null(f.r.error);
	assert_int_equal(f.r.removed, 1);
	assert_non_null(f.r.model);
	assert_null(model_find(f.m, MRES_ADDRESS, "w1"));
	assert_non_null(model_find(f.m, MRES_ADDRESS, "w2"));
	assert_true(has(f.r.gone, f.r.ngone, "w1"));
	assert_true(has(f.r.gone, f.r.ngone, "never-held"));
	assert_int_equal(xds_store_count(f.s, MRES_ADDRESS), 2);
	assert_string_equal(held(&f, MRES_ADDRESS, "w1"), "");

	/* Only a name not held: nothing changes, no error. */
	f.p.type_url = T_ADDRESS;
	f.p.removed[f.p.nremoved++] = "nope";
	push_delta(&f, "n3");
	assert_null(f.r.error);
	assert_null(f.r.model);
	assert_true(has(f.r.gone, f.r.ngone, "nope"));

	/* Removing every one, then adding one back (the table's deletion). */
	f.p.type_url = T_ADDRESS;
	f.p.removed[f.p.nremoved++] = "w3";
	f.p.removed[f.p.nremoved++] = "w2";
	push_delta(&f, "n4");
	assert_int_equal(xds_store_count(f.s, MRES_ADDRESS), 0);
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w2", "v9", WL("w2", IP2, ""));
	push_delta(&f, "n5");
	assert_string_equal(held(&f, MRES_ADDRESS, "w2"), "v9");

	/* An update made by hand, as xds.c drops names it no longer
	 * subscribes to: no items, no version, no nonce. */
	{
		char *names[] = { (char *)"w2" };
		struct xds_update u = { .delta = true, .type = MRES_ADDRESS, .removed = names, .nremoved = 1 };

		xds_result_free(&f.r);
		assert_int_equal(xds_store_apply(f.s, &u, f.m, &f.r), 0);
		assert_null(f.r.error);
		assert_int_equal(f.r.removed, 1);
		assert_non_null(f.r.model);
		assert_null(model_find(f.r.model, MRES_ADDRESS, "w2"));
		assert_int_equal(xds_store_count(f.s, MRES_ADDRESS), 0);
	}
	fx_done(&f);
}

/* Many adds and removals: the name table (backward-shift deletion, swap
 * removal from the dense array) stays consistent. */
static void
test_many_names(void **state)
{
	struct fx f;
	char name[64][16];

	(void)state;
	fx_init(&f);
	for (int round = 0; round < 3; round++) {
		f.p.type_url = T_CLUSTER;
		for (int i = 0; i < 60; i++) {
			char json[128];

			snprintf(name[i], sizeof(name[i]), "c%d", i);
			snprintf(json, sizeof(json), CLUSTER("%s", ""), name[i]);
			add(&f.p, name[i], round ? "v2" : "v1", json);
		}
		push_delta(&f, "n");
		assert_null(f.r.error);
		assert_int_equal(xds_store_count(f.s, MRES_CLUSTER), 60);
		f.p.type_url = T_CLUSTER;
		for (int i = 0; i < 48; i += 3)
			f.p.removed[f.p.nremoved++] = name[i];
		push_delta(&f, "n");
		assert_int_equal(f.r.removed, 16);
		assert_int_equal(xds_store_count(f.s, MRES_CLUSTER), 44);
		for (int i = 0; i < 60; i++) {
			bool gone = i % 3 == 0 && i < 48;

			assert_int_equal(held(&f, MRES_CLUSTER, name[i])[0] == '\0', gone);
			assert_int_equal(model_cluster(f.m, name[i]) == NULL, gone);
		}
	}
	fx_done(&f);
}

/* SotW: Clusters hold the full state (a held one not listed is removed);
 * ClusterLoadAssignments do not. An item that cannot be named stops the
 * full-state removal (it may be one of the held ones). */
static void
test_sotw_full_state(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f);
	f.p.type_url = T_CLUSTER;
	add(&f.p, NULL, NULL, CLUSTER("c1", ""));
	add(&f.p, NULL, NULL, CLUSTER("c2", ""));
	add(&f.p, NULL, NULL, CLUSTER("c3", ""));
	push_sotw(&f, "1");
	assert_null(f.r.error);
	assert_int_equal(f.r.applied, 3);
	assert_string_equal(xds_store_version(f.s, MRES_CLUSTER), "1");
	assert_string_equal(held(&f, MRES_CLUSTER, "c1"), "1");

	f.p.type_url = T_CLUSTER;
	add(&f.p, NULL, NULL, CLUSTER("c1", ""));
	add(&f.p, NULL, NULL, CLUSTER("c3", ",'connectTimeout':'2s'"));
	push_sotw(&f, "2");
	assert_null(f.r.error);
	assert_int_equal(f.r.removed, 1);
	assert_int_equal(f.r.applied, 1);	/* c3 changed */
	assert_int_equal(f.r.unchanged, 1);	/* c1: same bytes, keeps version 1 */
	assert_true(has(f.r.gone, f.r.ngone, "c2"));
	assert_null(model_cluster(f.m, "c2"));
	assert_non_null(model_cluster(f.m, "c1"));
	assert_string_equal(held(&f, MRES_CLUSTER, "c1"), "1");
	assert_string_equal(held(&f, MRES_CLUSTER, "c3"), "2");
	assert_string_equal(xds_store_version(f.s, MRES_CLUSTER), "2");

	/* An item whose bytes do not decode: NACK, nothing removed. */
	f.p.type_url = T_CLUSTER;
	add(&f.p, NULL, NULL, CLUSTER("c1", ""));
	{
		struct rsc *x = add(&f.p, NULL, NULL, NULL);

		x->type_url = strdup(T_CLUSTER);
		x->val = (uint8_t *)strdup("\x0a\x7f");	/* a name of 127 bytes, 0 there */
		x->vlen = 2;
	}
	push_sotw(&f, "3");
	assert_error_has(&f.r, "resources[1]: resource: 2 bytes that do not decode as envoy.config.cluster.v3.Cluster");
	assert_int_equal(f.r.removed, 0);
	assert_non_null(model_cluster(f.m, "c3"));
	assert_string_equal(xds_store_version(f.s, MRES_CLUSTER), "2");

	/* EDS in SotW: what is not listed stays. */
	f.p.type_url = T_CLA;
	add(&f.p, NULL, NULL, CLA("c1"));
	add(&f.p, NULL, NULL, CLA("c3"));
	push_sotw(&f, "e1");
	assert_int_equal(f.r.applied, 2);
	f.p.type_url = T_CLA;
	add(&f.p, NULL, NULL, CLA("c1"));
	push_sotw(&f, "e2");
	assert_int_equal(f.r.removed, 0);
	assert_non_null(model_endpoints(f.m, "c3"));

	/* An empty full-state response removes every one. */
	f.p.type_url = T_CLUSTER;
	push_sotw(&f, "4");
	assert_null(f.r.error);
	assert_int_equal(f.r.removed, 2);
	assert_int_equal(xds_store_count(f.s, MRES_CLUSTER), 0);
	fx_done(&f);
}

/* A name twice in one response: the first applies, the second is refused. */
static void
test_duplicates(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f);
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w1", "v1", WL("w1", IP1, ""));
	add(&f.p, "w1", "v2", WL("w1", IP2, ""));
	push_delta(&f, "n1");
	assert_error_has(&f.r, "w1: named twice in one response");
	assert_int_equal(f.r.applied, 1);
	assert_string_equal(held(&f, MRES_ADDRESS, "w1"), "v1");
	assert_non_null(model_find(f.m, MRES_ADDRESS, "w1"));

	/* SotW: by the resources' own names. */
	f.p.type_url = T_CLUSTER;
	add(&f.p, NULL, NULL, CLUSTER("c1", ""));
	add(&f.p, NULL, NULL, CLUSTER("c1", ",'connectTimeout':'3s'"));
	push_sotw(&f, "1");
	assert_error_has(&f.r, "c1: named twice in one response");
	assert_int_equal(xds_store_count(f.s, MRES_CLUSTER), 1);
	fx_done(&f);
}

/* An inner Any of another type than the response's, a Resource with no Any,
 * a Resource name that is not the resource's own, a Resource with no name
 * (the resource's own is taken). */
static void
test_wrong_inner_type_and_names(void **state)
{
	struct fx f;
	struct rsc *x;

	(void)state;
	fx_init(&f);
	f.p.type_url = T_ADDRESS;
	add(&f.p, "c1", "v1", CLUSTER("c1", ""));
	x = add(&f.p, "empty", "v1", NULL);
	(void)x;
	add(&f.p, "not-w2", "v1", WL("w2", IP2, ""));
	add(&f.p, NULL, "v1", WL("w3", IP3, ""));
	add(&f.p, "w4", "v1", WL("w4", IP4, ""));
	push_delta(&f, "n1");
	assert_error_has(&f.r, "c1: resource: an Any of type \"" T_CLUSTER "\" in a response of istio.workload.Address");
	assert_error_has(&f.r, "empty: resource: missing");
	assert_error_has(&f.r, "not-w2: the resource's own name is \"w2\"");
	assert_int_equal(f.r.refused, 3);
	assert_int_equal(f.r.applied, 2);
	assert_string_equal(held(&f, MRES_ADDRESS, "w3"), "v1");
	assert_non_null(model_find(f.m, MRES_ADDRESS, "w4"));
	assert_null(model_find(f.m, MRES_ADDRESS, "w2"));
	assert_null(model_find(f.m, MRES_CLUSTER, "c1"));
	fx_done(&f);
}

/* An enum value no schema has: refused, as ztunnel does (also inside an
 * Any of a Listener). */
static void
test_unknown_enum(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f);
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w1", "v1", WL("w1", IP1, ",'tunnelProtocol':77"));
	add(&f.p, "w2", "v1", WL("w2", IP2, ""));
	push_delta(&f, "n1");
	assert_error_has(&f.r, "w1: workload.tunnelProtocol: unknown enum value 77");
	assert_int_equal(f.r.applied, 1);
	assert_null(model_find(f.m, MRES_ADDRESS, "w1"));

	f.p.type_url = T_LISTENER;
	add(&f.p, "l1", "v1", LISTENER("l1", HCM("'codecType':9")));
	push_delta(&f, "n2");
	assert_error_has(&f.r, "l1: ");
	assert_error_has(&f.r, "unknown enum value 9");
	assert_int_equal(xds_store_count(f.s, MRES_LISTENER), 0);
	fx_done(&f);
}

/* What to subscribe to by name: EDS clusters' service_name (else the
 * cluster's name), the static ones' too; listeners' HCM rds names. */
static void
test_refs(void **state)
{
	struct fx f;
	char **names;
	size_t n;
	struct mres *st;
	char why[256];

	(void)state;
	fx_init(&f);
	{
		/* A static EDS cluster. */
		struct rsc x = { 0 };
		ProtobufCMessage *msg;

		pack_json(&x, CLUSTER("static-eds", EDS("")));
		msg = protobuf_c_message_unpack(jpb_lookup("envoy.config.cluster.v3.Cluster"), NULL, x.vlen, x.val);
		assert_non_null(msg);
		assert_non_null(st = mres_new(msg, NULL, NULL, why, sizeof(why)));
		assert_int_equal(xds_store_set_static(f.s, &st, 1), 0);
		mres_unref(st);
		free(x.type_url);
		free(x.val);
	}
	f.p.type_url = T_CLUSTER;
	add(&f.p, "outbound|80||a", "v1", CLUSTER("outbound|80||a", EDS("")));
	add(&f.p, "outbound|80||b", "v1", CLUSTER("outbound|80||b", EDS(",'serviceName':'svc-b'")));
	add(&f.p, "outbound|80||dup", "v1", CLUSTER("outbound|80||dup", EDS(",'serviceName':'svc-b'")));
	add(&f.p, "static", "v1", CLUSTER("static", ",'type':'STATIC'"));
	add(&f.p, "origdst", "v1", CLUSTER("origdst", ",'type':'ORIGINAL_DST','lbPolicy':'CLUSTER_PROVIDED'"));
	push_delta(&f, "n1");
	assert_null(f.r.error);
	assert_int_equal(xds_store_refs(f.s, MRES_ENDPOINTS, &names, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(names[0], "outbound|80||a");
	assert_string_equal(names[1], "static-eds");
	assert_string_equal(names[2], "svc-b");
	xds_names_free(names, n);

	/* A Cluster naming a ClusterLoadAssignment not there is no error. */
	assert_non_null(model_cluster(f.m, "outbound|80||a"));
	assert_null(model_endpoints(f.m, "outbound|80||a"));

	f.p.type_url = T_LISTENER;
	add(&f.p, "l1", "v1", LISTENER("l1", HCM("'rds':{'configSource':{'ads':{}},'routeConfigName':'8080'}")));
	add(&f.p, "l2", "v1", LISTENER("l2", HCM("'routeConfig':{'name':'inline'}") ","
	    HCM("'rds':{'configSource':{'ads':{}},'routeConfigName':'9090'}")));
	add(&f.p, "l3", "v1", LISTENER("l3", HCM("'rds':{'configSource':{'ads':{}},'routeConfigName':'8080'}")));
	add(&f.p, "l4", "v1", LISTENER("l4", "{'name':'tcp','typedConfig':{'@type':'type.googleapis.com/"
	    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy','statPrefix':'x','cluster':'c'}}"));
	push_delta(&f, "n2");
	assert_null(f.r.error);
	assert_int_equal(xds_store_refs(f.s, MRES_ROUTE, &names, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(names[0], "8080");
	assert_string_equal(names[1], "9090");
	xds_names_free(names, n);
	assert_int_equal(xds_store_refs(f.s, MRES_ADDRESS, &names, &n), -EINVAL);

	/* A route naming a cluster nobody has: accepted, as Envoy does (it
	 * answers 503 at request time). */
	f.p.type_url = T_ROUTE;
	add(&f.p, "8080", "v1", "{'@type':'" T_ROUTE "','name':'8080','virtualHosts':[{'name':'vh','domains':['*'],"
	    "'routes':[{'match':{'prefix':'/'},'route':{'cluster':'outbound|80||nowhere'}}]}]}");
	push_delta(&f, "n3");
	assert_null(f.r.error);
	assert_non_null(model_find(f.m, MRES_ROUTE, "8080"));
	assert_non_null(f.r.notes);
	assert_string_equal(f.r.notes, "8080: cluster \"outbound|80||nowhere\" is not known (requests to it fail with 503)");
	/* Known ones (held, static, weighted): no note. */
	f.p.type_url = T_ROUTE;
	add(&f.p, "8080", "v2", "{'@type':'" T_ROUTE "','name':'8080','virtualHosts':[{'name':'vh','domains':['*'],"
	    "'routes':[{'match':{'prefix':'/'},'route':{'cluster':'outbound|80||a'}},"
	    "{'match':{'prefix':'/s'},'route':{'cluster':'static-eds'}},"
	    "{'match':{'prefix':'/w'},'route':{'weightedClusters':{'clusters':[{'name':'outbound|80||b','weight':1},"
	    "{'name':'gone','weight':1}]}}}]}]}");
	push_delta(&f, "n4");
	assert_null(f.r.error);
	assert_string_equal(f.r.notes, "8080: cluster \"gone\" is not known (requests to it fail with 503)");
	fx_done(&f);
}

/* The configuration file's resources win over the server's of a name. */
static void
test_static_wins(void **state)
{
	struct fx f;
	struct rsc x = { 0 };
	ProtobufCMessage *msg;
	struct mres *st;
	struct model_report rep;
	struct model *m;
	char why[256];

	(void)state;
	fx_init(&f);
	pack_json(&x, WL("w1", IP1, ""));
	msg = protobuf_c_message_unpack(jpb_lookup("istio.workload.Address"), NULL, x.vlen, x.val);
	assert_non_null(st = mres_new(msg, NULL, NULL, why, sizeof(why)));
	free(x.type_url);
	free(x.val);
	assert_int_equal(xds_store_set_static(f.s, &st, 1), 0);
	model_free(f.m);
	assert_non_null(f.m = xds_store_build(f.s, NULL, &rep));
	assert_int_equal(rep.nproblems, 0);
	model_report_free(&rep);
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w1", "v1", WL("w1", IP2, ""));
	add(&f.p, "w2", "v1", WL("w2", IP1, ""));
	push_delta(&f, "n1");
	assert_error_has(&f.r, "w1: the configuration file has a Address of that name");
	assert_error_has(&f.r, "w2: workload.addresses[0]: 10.0.0.1 is w1's already (static Address/w1)");
	assert_ptr_equal(model_find(f.m, MRES_ADDRESS, "w1"), st);

	/* Held first, then made static: the held one is set aside. */
	xds_store_set_static(f.s, NULL, 0);
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w1", "v1", WL("w1", IP2, ""));
	push_delta(&f, "n2");
	assert_null(f.r.error);
	assert_int_equal(xds_store_set_static(f.s, &st, 1), 0);
	assert_non_null(m = xds_store_build(f.s, f.m, &rep));
	assert_int_equal(rep.nproblems, 0);
	assert_ptr_equal(model_find(m, MRES_ADDRESS, "w1"), st);
	model_report_free(&rep);
	model_free(m);
	mres_unref(st);
	fx_done(&f);
}

/* xds_store_put / xds_store_set_version: as they are, a name replaced. */
static void
test_put(void **state)
{
	struct fx f;
	struct rsc x = { 0 };
	struct mres *a, *b;
	struct model_report rep;
	struct model *m;
	const char *al[] = { "/10.0.0.1" };
	char why[256];

	(void)state;
	fx_init(&f);
	pack_json(&x, WL("w1", IP1, ""));
	assert_non_null(a = mres_new(protobuf_c_message_unpack(jpb_lookup("istio.workload.Address"), NULL, x.vlen,
	    x.val), "p1", NULL, why, sizeof(why)));
	assert_non_null(b = mres_new(protobuf_c_message_unpack(jpb_lookup("istio.workload.Address"), NULL, x.vlen,
	    x.val), "p2", NULL, why, sizeof(why)));
	free(x.type_url);
	free(x.val);
	assert_int_equal(xds_store_put(f.s, a, al, 1), 0);
	assert_string_equal(held(&f, MRES_ADDRESS, "w1"), "p1");
	assert_int_equal(xds_store_put(f.s, b, NULL, 0), 0);
	assert_int_equal(xds_store_count(f.s, MRES_ADDRESS), 1);
	assert_string_equal(held(&f, MRES_ADDRESS, "w1"), "p2");
	assert_int_equal(xds_store_set_version(f.s, MRES_ADDRESS, "sv"), 0);
	assert_string_equal(xds_store_version(f.s, MRES_ADDRESS), "sv");
	assert_non_null(m = xds_store_build(f.s, NULL, &rep));
	assert_ptr_equal(model_find(m, MRES_ADDRESS, "w1"), b);
	model_report_free(&rep);
	model_free(m);
	mres_unref(a);
	mres_unref(b);
	fx_done(&f);
}

/* Messages that are no response, a type we do not take: -EINVAL with why,
 * the nonce kept when the outer message decoded. */
static void
test_bad_messages(void **state)
{
	struct xds_update u;
	struct resp p = { 0 };
	char err[256];
	uint8_t *b;
	size_t len;

	(void)state;
	assert_int_equal(xds_decode_delta((const uint8_t *)"\xff\xff\xff", 3, &u, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a DeltaDiscoveryResponse"));
	xds_update_free(&u);
	assert_int_equal(xds_decode_sotw((const uint8_t *)"\x0a\x05" "ab", 4, &u, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "not a DiscoveryResponse"));
	xds_update_free(&u);

	p.type_url = "type.googleapis.com/istio.workload.Workload";
	b = pack_delta(&p, "nonce-7", &len);
	assert_int_equal(xds_decode_delta(b, len, &u, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "istio.workload.Workload\" is not one we subscribe to"));
	assert_string_equal(u.nonce, "nonce-7");
	xds_update_free(&u);
	free(b);
	p.type_url = "type.googleapis.com/istio.security.v1beta1.PeerAuthentication";
	b = pack_sotw(&p, "1", "nonce-8", &len);
	assert_int_equal(xds_decode_sotw(b, len, &u, err, sizeof(err)), -EINVAL);
	assert_string_equal(u.nonce, "nonce-8");
	xds_update_free(&u);
	free(b);
	p.type_url = "envoy.config.cluster.v3.Cluster";	/* no prefix */
	b = pack_sotw(&p, "1", "n", &len);
	assert_int_equal(xds_decode_sotw(b, len, &u, err, sizeof(err)), -EINVAL);
	xds_update_free(&u);
	free(b);
	/* Empty bytes are an empty response (proto3): of no type. */
	assert_int_equal(xds_decode_delta((const uint8_t *)"", 0, &u, err, sizeof(err)), -EINVAL);
	xds_update_free(&u);
}

/* What a response decodes to is bounded (16 times its size plus 64 MiB):
 * 3 MB of empty Resources would take 150 MB of structs. */
static void
test_decode_bound(void **state)
{
	size_t n = 1500000, len = 2 * n + 64;
	uint8_t *b = malloc(len), *p = b;
	struct xds_update u;
	char err[256];
	int rc;

	(void)state;
	assert_non_null(b);
	memcpy(p, "\x22\x2a" T_ADDRESS, 2 + strlen(T_ADDRESS));	/* type_url (4) */
	p += 2 + strlen(T_ADDRESS);
	for (size_t i = 0; i < n; i++) {
		*p++ = 0x12;	/* resources (2), empty */
		*p++ = 0x00;
	}
	rc = xds_decode_delta(b, (size_t)(p - b), &u, err, sizeof(err));
	assert_int_equal(rc, -EINVAL);
	assert_non_null(strstr(err, "over the decode bound"));
	xds_update_free(&u);
	/* The same shape, small: decodes (each item refused: no resource). */
	rc = xds_decode_delta(b, 2 + strlen(T_ADDRESS) + 2000, &u, err, sizeof(err));
	assert_int_equal(rc, 0);
	assert_int_equal(u.nitems, 1000);
	assert_null(u.items[0].res);
	xds_update_free(&u);
	free(b);
}

/* ---- Deep nesting ---- */

/* Wire bytes built backwards, from the end of buf down to start. */
struct wbuf {
	uint8_t *buf, *start;
};

static void
pre_bytes(struct wbuf *w, const void *p, size_t n)
{
	assert_true((size_t)(w->start - w->buf) >= n);
	w->start -= n;
	memcpy(w->start, p, n);
}

static void
pre_varint(struct wbuf *w, uint64_t v)
{
	uint8_t b[10];
	size_t n = 0;

	do {
		b[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v);
	pre_bytes(w, b, n);
}

/* Makes the bytes from start to end a length-delimited field. */
static void
pre_field(struct wbuf *w, unsigned field, const uint8_t *end)
{
	pre_varint(w, (uint64_t)(end - w->start));
	pre_varint(w, (uint64_t)field << 3 | 2);
}

/* A Cluster named name whose metadata.filter_metadata["istio"] holds a
 * Struct {"k": Value} of depth nested list_value [Value] pairs. */
static void
deep_cluster(struct rsc *x, const char *name, size_t depth)
{
	size_t cap = 12 * depth + 256;
	struct wbuf w;
	uint8_t *end;

	w.buf = malloc(cap);
	assert_non_null(w.buf);
	w.start = end = w.buf + cap;
	for (size_t i = 0; i < depth; i++) {
		pre_field(&w, 1, end);	/* ListValue.values */
		pre_field(&w, 6, end);	/* Value.list_value */
	}
	pre_field(&w, 2, end);		/* Struct.fields entry: value */
	pre_bytes(&w, "\x0a\x01k", 3);	/* key */
	pre_field(&w, 1, end);		/* Struct.fields */
	pre_field(&w, 2, end);		/* filter_metadata entry: value */
	pre_bytes(&w, "\x0a\x05istio", 7);
	pre_field(&w, 1, end);		/* Metadata.filter_metadata */
	pre_field(&w, 25, end);		/* Cluster.metadata */
	pre_bytes(&w, name, strlen(name));
	pre_varint(&w, strlen(name));
	pre_bytes(&w, "\x0a", 1);	/* Cluster.name */
	x->vlen = (size_t)(end - w.start);
	x->val = malloc(x->vlen);
	assert_non_null(x->val);
	memcpy(x->val, w.start, x->vlen);
	x->type_url = strdup(T_CLUSTER);
	free(w.buf);
}

/* protobuf-c unpacks recursively with no bound: 20,000 nested Values
 * (160 kB) took the stack. Such a resource is refused with its reason, the
 * rest of the response applies; a sane depth decodes. */
static void
test_deep_nesting(void **state)
{
	struct resp p = { 0 };
	struct xds_update u;
	char err[256];
	uint8_t *b;
	size_t len;

	(void)state;
	p.type_url = T_CLUSTER;
	deep_cluster(add(&p, "deep", "1", NULL), "deep", 20000);
	deep_cluster(add(&p, "fine", "1", NULL), "fine", 40);
	add(&p, "c", "1", CLUSTER("c", ""));
	for (int sotw = 0; sotw <= 1; sotw++) {
		b = sotw ? pack_sotw(&p, "1", "n", &len) : pack_delta(&p, "n", &len);
		assert_int_equal(sotw ? xds_decode_sotw(b, len, &u, err, sizeof(err)) :
		    xds_decode_delta(b, len, &u, err, sizeof(err)), 0);
		assert_int_equal(u.nitems, 3);
		assert_null(u.items[0].res);
		assert_non_null(strstr(u.items[0].why, "nested deeper than 100"));
		assert_non_null(u.items[1].res);
		assert_non_null(u.items[2].res);
		xds_update_free(&u);
		free(b);
	}
	resp_clear(&p);

	/* The response itself: a Resource's metadata (delta). */
	{
		size_t depth = 20000, cap = 12 * depth + 256;
		struct wbuf w;
		uint8_t *end;

		w.buf = malloc(cap);
		assert_non_null(w.buf);
		w.start = end = w.buf + cap;
		for (size_t i = 0; i < depth; i++) {
			pre_field(&w, 1, end);
			pre_field(&w, 6, end);
		}
		pre_field(&w, 2, end);
		pre_bytes(&w, "\x0a\x01k", 3);
		pre_field(&w, 1, end);
		pre_field(&w, 2, end);
		pre_bytes(&w, "\x0a\x05istio", 7);
		pre_field(&w, 1, end);
		pre_field(&w, 9, end);		/* Resource.metadata */
		pre_field(&w, 2, end);		/* DeltaDiscoveryResponse.resources */
		pre_bytes(&w, "\x2a\x01n", 3);	/* nonce */
		assert_int_equal(xds_decode_delta(w.start, (size_t)(end - w.start), &u, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "nested deeper than 100"));
		xds_update_free(&u);
		free(w.buf);
	}
}

/* The NACK's text is bounded: "... and N more". */
static void
test_error_bound(void **state)
{
	struct fx f;

	(void)state;
	fx_init(&f);
	f.p.type_url = T_ADDRESS;
	for (int i = 0; i < 300; i++) {
		char name[64];

		snprintf(name, sizeof(name), "a-rather-long-workload-name-to-fill-the-error-%03d", i);
		add(&f.p, name, "v1", CLUSTER("x", ""));
	}
	push_delta(&f, "n1");
	assert_non_null(f.r.error);
	assert_true(strlen(f.r.error) < 4096);
	assert_non_null(strstr(f.r.error, "more"));
	assert_int_equal(f.r.refused, 300);
	{
		size_t more = 0, shown = 0;
		const char *p = strstr(f.r.error, "; ... and ");

		assert_non_null(p);
		more = strtoul(p + strlen("; ... and "), NULL, 10);
		for (p = f.r.error; (p = strstr(p, "a-rather-long")); p++)
			shown++;
		assert_int_equal(shown + more, 300);
	}
	fx_done(&f);
}

/* An allocation that fails anywhere in decode + apply: -ENOMEM, and the
 * store is exactly as before (copy on write). */
static void
test_allocation_failures(void **state)
{
	struct fx f;
	uint8_t *b;
	size_t len;
	int failures = 0;

	(void)state;
	fx_init(&f);
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w1", "v1", WL("w1", IP1, ""));
	add(&f.p, "w2", "v1", WL("w2", IP2, ""));
	push_delta(&f, "n1");
	f.p.type_url = T_ADDRESS;
	add(&f.p, "w1", "v2", WL("w1", IP1, ",'node':'x'"));
	add(&f.p, "w3", "v2", WL("w3", IP3, ""));
	f.p.removed[f.p.nremoved++] = "w2";
	b = pack_delta(&f.p, "n2", &len);
	resp_clear(&f.p);
	for (long k = 1; k < 2000; k++) {
		struct xds_update u;
		struct xds_result r;
		char err[256];
		int rc;

		fail_at = k;
		rc = xds_decode_delta(b, len, &u, err, sizeof(err));
		if (rc == 0)
			rc = xds_store_apply(f.s, &u, f.m, &r);
		else
			memset(&r, 0, sizeof(r));
		if (fail_at > 0) {
			/* Nothing failed: done. */
			fail_at = 0;
			assert_int_equal(rc, 0);
			assert_null(r.error);
			assert_int_equal(r.applied, 2);
			assert_int_equal(r.removed, 1);
			xds_result_free(&r);
			xds_update_free(&u);
			break;
		}
		fail_at = 0;
		failures++;
		assert_int_equal(rc, -ENOMEM);
		xds_update_free(&u);
		/* Untouched. */
		assert_int_equal(xds_store_count(f.s, MRES_ADDRESS), 2);
		assert_string_equal(held(&f, MRES_ADDRESS, "w1"), "v1");
		assert_string_equal(held(&f, MRES_ADDRESS, "w2"), "v1");
		assert_string_equal(held(&f, MRES_ADDRESS, "w3"), "");
	}
	assert_true(failures > 10);
	free(b);
	fx_done(&f);
}

/* ---- Real peer: responses encoded by Python's protobuf from the REAL
 * Envoy discovery.proto (tests/unit/golden/xds/make.py). ---- */

static uint8_t *
slurp(const char *name, size_t *len)
{
	char path[512];
	FILE *fp;
	uint8_t *b;
	long n;

	snprintf(path, sizeof(path), "%s/%s", XDS_GOLDEN_DIR, name);
	if (!(fp = fopen(path, "rb")))
		fail_msg("%s: cannot open", path);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	b = malloc(n > 0 ? (size_t)n : 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return b;
}

static void
test_golden_delta(void **state)
{
	struct xds_update u;
	struct fx f;
	char err[256];
	uint8_t *b;
	size_t len;
	char **names;
	size_t n;

	(void)state;
	b = slurp("delta-address.bin", &len);
	assert_int_equal(xds_decode_delta(b, len, &u, err, sizeof(err)), 0);
	assert_true(u.delta);
	assert_int_equal(u.type, MRES_ADDRESS);
	assert_string_equal(u.nonce, "nonce-42");
	assert_string_equal(u.version, "2026-12-02T06:00:00Z/7");
	assert_int_equal(u.nitems, 2);
	assert_string_equal(u.items[0].name, "Kubernetes//Pod/default/client-5b9c");
	assert_string_equal(u.items[0].version, "w-v1");
	assert_int_equal(u.items[0].naliases, 1);
	assert_string_equal(u.items[0].aliases[0], "/10.0.0.1");
	assert_non_null(u.items[0].res);
	assert_string_equal(u.items[0].res->version, "w-v1");
	/* resource_name (field 8) stands in for a missing name. */
	assert_string_equal(u.items[1].name, "default/server.default.svc.cluster.local");
	assert_string_equal(u.items[1].version, "s-v1");
	assert_non_null(u.items[1].res);
	assert_string_equal(u.items[1].res->name, "default/server.default.svc.cluster.local");
	assert_int_equal(u.nremoved, 2);
	assert_string_equal(u.removed[0], "Kubernetes//Pod/default/gone-1");
	assert_string_equal(u.removed[1], "Kubernetes//Pod/default/gone-2");
	fx_init(&f);
	assert_int_equal(xds_store_apply(f.s, &u, f.m, &f.r), 0);
	if (f.r.error)
		fail_msg("%s", f.r.error);
	assert_int_equal(f.r.applied, 2);
	assert_non_null(model_find(f.r.model, MRES_ADDRESS, "Kubernetes//Pod/default/client-5b9c"));
	assert_non_null(model_service(f.r.model, "default/server.default.svc.cluster.local"));
	xds_update_free(&u);
	free(b);

	b = slurp("sotw-cluster.bin", &len);
	assert_int_equal(xds_decode_sotw(b, len, &u, err, sizeof(err)), 0);
	assert_false(u.delta);
	assert_true(u.full_state);
	assert_int_equal(u.type, MRES_CLUSTER);
	assert_string_equal(u.nonce, "n-9");
	assert_string_equal(u.version, "v9");
	assert_int_equal(u.nitems, 2);
	assert_string_equal(u.items[0].name, "outbound|9080||reviews.default.svc.cluster.local");
	xds_result_free(&f.r);
	assert_int_equal(xds_store_apply(f.s, &u, f.m, &f.r), 0);
	assert_null(f.r.error);
	xds_update_free(&u);
	free(b);
	assert_int_equal(xds_store_refs(f.s, MRES_ENDPOINTS, &names, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(names[0], "outbound|9080||reviews.default.svc.cluster.local");
	xds_names_free(names, n);

	b = slurp("delta-listener.bin", &len);
	assert_int_equal(xds_decode_delta(b, len, &u, err, sizeof(err)), 0);
	assert_int_equal(u.type, MRES_LISTENER);
	assert_int_equal(u.nitems, 1);
	xds_result_free(&f.r);
	assert_int_equal(xds_store_apply(f.s, &u, f.m, &f.r), 0);
	assert_null(f.r.error);
	xds_update_free(&u);
	free(b);
	assert_int_equal(xds_store_refs(f.s, MRES_ROUTE, &names, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(names[0], "9080");
	xds_names_free(names, n);
	fx_done(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ack),
		cmocka_unit_test(test_nack_good_applied),
		cmocka_unit_test(test_refused_keeps_previous),
		cmocka_unit_test(test_removal),
		cmocka_unit_test(test_many_names),
		cmocka_unit_test(test_sotw_full_state),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_wrong_inner_type_and_names),
		cmocka_unit_test(test_unknown_enum),
		cmocka_unit_test(test_refs),
		cmocka_unit_test(test_static_wins),
		cmocka_unit_test(test_put),
		cmocka_unit_test(test_bad_messages),
		cmocka_unit_test(test_decode_bound),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_error_bound),
		cmocka_unit_test(test_allocation_failures),
		cmocka_unit_test(test_golden_delta),
	};

	if (model_register_types() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
