/* model: the one snapshot builder. Decoded discovery resources in, a
 * validated, indexed, read-only model out (see model.h; HACKING.md "The mesh
 * model" says what is indexed and why). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_pb.h"
#include "model.h"
#include "model_eds.h"
#include "pb.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "istio/security/authorization.pb-c.h"
#include "authz.h"
#include "istio/security/v1beta1/peer_authentication.pb-c.h"
#include "istio/workload/workload.pb-c.h"

const char *const mres_type_names[MRES__COUNT] = {
#define X(e, name) name,
	MODEL_TYPES(X)
#undef X
};

static const ProtobufCMessageDescriptor *const type_desc[MRES__COUNT] = {
	&istio__workload__address__descriptor,
	&istio__security__authorization__descriptor,
	&istio__security__v1beta1__peer_authentication__descriptor,
	&envoy__config__cluster__v3__cluster__descriptor,
	&envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
	&envoy__config__route__v3__route_configuration__descriptor,
	&envoy__config__listener__v3__listener__descriptor,
};

int
model_register_types(void)
{
	/* What an Any inside a resource may hold: the network filters a
	 * Listener names (tcp_proxy, http_connection_manager). The rest of the
	 * embedded messages are reached through their fields, not by @type. */
	static const ProtobufCMessageDescriptor *const embedded[] = {
		&envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor,
		&envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
	};
	int rc;

	if ((rc = jpb_register_wkts()) < 0)
		return rc;
	for (size_t i = 0; i < MRES__COUNT; i++)
		if ((rc = jpb_register(type_desc[i])) < 0)
			return rc;
	for (size_t i = 0; i < sizeof(embedded) / sizeof(embedded[0]); i++)
		if ((rc = jpb_register(embedded[i])) < 0)
			return rc;
	return 0;
}

static const char *
S(const char *s)
{
	return s ? s : "";
}

/* ---- Resources ---- */

static int
type_of(const ProtobufCMessage *msg)
{
	for (int t = 0; t < MRES__COUNT; t++)
		if (msg->descriptor == type_desc[t])
			return t;
	return -1;
}

/* The xDS name a resource goes by (malloc'd), or NULL with why. */
static char *
name_of(enum mres_type t, const ProtobufCMessage *msg, const char *fallback, char *why, size_t whylen)
{
	const char *n = NULL;
	char *r;

	switch (t) {
	case MRES_ADDRESS: {
		const Istio__Workload__Address *a = (const void *)msg;

		if (a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD && a->workload) {
			n = S(a->workload->uid);
			if (!*n && !(fallback && *fallback)) {
				snprintf(why, whylen, "workload.uid: required (the workload's name)");
				return NULL;
			}
		} else if (a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE && a->service) {
			const Istio__Workload__Service *s = a->service;

			if (*S(s->namespace_) && *S(s->hostname)) {
				size_t len = strlen(s->namespace_) + strlen(s->hostname) + 2;

				if (!(r = malloc(len)))
					goto oom;
				snprintf(r, len, "%s/%s", s->namespace_, s->hostname);
				return r;
			}
			if (!(fallback && *fallback)) {
				snprintf(why, whylen, "service.%s: required (a service is named "
				    "\"namespace/hostname\")", *S(s->namespace_) ? "hostname" : "namespace");
				return NULL;
			}
		} else if (!(fallback && *fallback)) {
			snprintf(why, whylen, "neither workload nor service is set");
			return NULL;
		}
		break;
	}
	case MRES_AUTHORIZATION: {
		const Istio__Security__Authorization *a = (const void *)msg;

		if (*S(a->name)) {
			size_t len = strlen(S(a->namespace_)) + strlen(a->name) + 2;

			if (!(r = malloc(len)))
				goto oom;
			snprintf(r, len, "%s/%s", S(a->namespace_), a->name);
			return r;
		}
		break;
	}
	case MRES_PEER_AUTHENTICATION:
		break;
	case MRES_CLUSTER:
		n = ((const Envoy__Config__Cluster__V3__Cluster *)msg)->name;
		break;
	case MRES_ENDPOINTS:
		n = ((const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)msg)->cluster_name;
		break;
	case MRES_ROUTE:
		n = ((const Envoy__Config__Route__V3__RouteConfiguration *)msg)->name;
		break;
	case MRES_LISTENER:
		n = ((const Envoy__Config__Listener__V3__Listener *)msg)->name;
		break;
	default:
		break;
	}
	if (!n || !*n)
		n = fallback;
	if (!n || !*n) {
		if (t == MRES_PEER_AUTHENTICATION)
			snprintf(why, whylen, "a PeerAuthentication has no name field: its name must be given");
		else
			snprintf(why, whylen, "%s: required (the resource's name)",
			    t == MRES_ENDPOINTS ? "clusterName" : "name");
		return NULL;
	}
	if (!(r = strdup(n)))
		goto oom;
	return r;
oom:
	snprintf(why, whylen, "out of memory");
	return NULL;
}

static uint32_t str_hash(const char *s);

static const char empty_version[] = "";

struct mres *
mres_new(ProtobufCMessage *msg, const char *version, const char *fallback_name, char *why,
    size_t whylen)
{
	struct mres *r = NULL;
	int t;

	if (!msg) {
		snprintf(why, whylen, "no message");
		return NULL;
	}
	if ((t = type_of(msg)) < 0) {
		snprintf(why, whylen, "%s is not a resource type", msg->descriptor->name);
		goto fail;
	}
	if (!(r = calloc(1, sizeof(*r)))) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	r->refs = 1;
	r->type = (enum mres_type)t;
	if (!(r->name = name_of(r->type, msg, fallback_name, why, whylen)))
		goto fail;
	r->hash = str_hash(r->name);
	/* Static resources have no version: one shared "" (12,000 resources
	 * would hold 12,000 copies). */
	if (!version || !*version)
		r->version = (char *)empty_version;
	else if (!(r->version = strdup(version))) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	r->msg = msg;
	return r;
fail:
	if (r) {
		free(r->name);
		free(r);
	}
	protobuf_c_message_free_unpacked(msg, NULL);
	return NULL;
}

struct mres *
mres_ref(struct mres *r)
{
	if (r)
		__atomic_add_fetch(&r->refs, 1, __ATOMIC_RELAXED);
	return r;
}

void
mres_unref(struct mres *r)
{
	if (!r || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	protobuf_c_message_free_unpacked(r->msg, NULL);
	free(r->name);
	if (r->version != empty_version)
		free(r->version);
	free(r);
}

/* ---- Open-addressing hash tables ----
 * A table is only slots: each holds an index + 1 into an array the caller
 * owns (0 is empty), so the key lives once, in the resource. Linear probing,
 * load at most 1/2, built once and read-only after (no deletion). */

struct otab {
	uint32_t *slot;
	uint32_t mask;
};

static uint64_t
hash_bytes(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t w;

	/* Eight bytes a step, a multiply and a shift each, then the final mix
	 * below: keys are names of ~40 bytes and addresses, and a byte at a
	 * time (FNV-1a) was 8% of an incremental build's profile. */
	for (; n >= 8; b += 8, n -= 8) {
		memcpy(&w, b, 8);
		h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	if (n) {
		w = 0;
		memcpy(&w, b, n);
		h = (h ^ w ^ ((uint64_t)n << 56)) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	return h;
}
#define HASH_SEED 0xcbf29ce484222325ULL

static uint32_t
hash_fin(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (uint32_t)h;
}

static int
otab_init(struct otab *t, size_t n)
{
	size_t size = 8;

	while (size < 2 * n)
		size <<= 1;
	if (size > UINT32_MAX / 2)
		return -ENOMEM;
	if (!(t->slot = calloc(size, sizeof(*t->slot))))
		return -ENOMEM;
	t->mask = (uint32_t)(size - 1);
	return 0;
}

static size_t
otab_bytes(const struct otab *t)
{
	return t->slot ? ((size_t)t->mask + 1) * sizeof(*t->slot) : 0;
}

/* ---- The model ---- */

/* One indexed address of a workload: the key is read back from the message. */
struct wladdr {
	uint32_t wl, ai;
	uint32_t hash;			/* ipkey_hash of its key: kept for the next build */
};

/* One VIP:port of a service port, or (port VIP_ANY) the VIP itself, which
 * tells a VIP called at a port its service does not have from an address
 * outside the mesh: ztunnel refuses the first and passes the second. */
struct vipref {
	uint32_t svc, port, ai;
};
#define VIP_ANY UINT32_MAX

#define AIX_SVC 0x80000000u

/* A member of a service: a workload whose services map names it. */
struct member {
	uint32_t wl;
	const Istio__Workload__PortList *pl;
};

/* An IP address with its network, as a key. */
struct ipkey {
	const char *network;
	int family;		/* AF_INET, AF_INET6 */
	unsigned char a[16];
	uint16_t port;		/* VIP keys only */
};

struct model {
	unsigned long refs;		/* atomic: snapshots share one model (model_ref) */
	char *network;
	bool strict_refs;		/* built with it (a build over this one may trust its refs) */
	struct mres **res[MRES__COUNT];	/* name order */
	size_t nres[MRES__COUNT];
	struct otab byname[MRES__COUNT];

	struct mworkload *wls;		/* uid order */
	size_t nwls;
	struct wladdr *wladdrs;
	size_t nwladdrs;
	size_t *wlfirst;		/* per workload, its first wladdrs entry (nwls + 1) */
	struct otab wlip;
	/* For the next build over this one (model_build's reuse): per
	 * res[MRES_ADDRESS] its index in wls, or in svcs | AIX_SVC; and each
	 * service's members (workload index, its PortList), in uid order. */
	uint32_t *aix;
	struct member *mem;
	size_t *mfirst;			/* per service (nsvcs + 1) */

	struct mservice *svcs;		/* key order */
	size_t nsvcs;
	struct otab svckey;
	struct msvc_port *ports;
	size_t nports;
	struct vipref *vips;
	size_t nvips;
	struct otab vip;
	struct mendpoint *eps;
	size_t neps;
	char *strs;			/* identities */
	struct meds *eds;		/* EDS endpoint addresses (model_eds.c); NULL: none */
	size_t bytes;
};

static uint32_t
ipkey_hash(const struct ipkey *k)
{
	uint64_t h = hash_bytes(HASH_SEED, k->network, strlen(k->network) + 1);

	h = hash_bytes(h, k->a, k->family == AF_INET ? 4 : 16);
	if (k->port)
		h = hash_bytes(h, &k->port, sizeof(k->port));
	return hash_fin(h);
}

static bool
bin_to_key(const ProtobufCBinaryData *b, const char *network, struct ipkey *k)
{
	if (b->len != 4 && b->len != 16)
		return false;
	/* No memset: hash and comparison read a[] only to the family's length. */
	k->port = 0;
	k->network = S(network);
	k->family = b->len == 4 ? AF_INET : AF_INET6;
	memcpy(k->a, b->data, b->len);
	/* ::ffff:a.b.c.d is the IPv4 address: one key for both spellings. */
	if (k->family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)k->a)) {
		memmove(k->a, k->a + 12, 4);
		memset(k->a + 4, 0, 12);
		k->family = AF_INET;
	}
	return true;
}

/* A service VIP's family as the indexes see it (IPv4-mapped is IPv4), or
 * AF_UNSPEC for a CIDR VIP (a length shorter than the address): ztunnel
 * matches those by prefix, apart from the exact VIPs (by_cidr_vip), which
 * the model does not do yet, so they are not indexed. */
static int
vip_family(const Istio__Workload__NetworkAddress *na)
{
	struct ipkey k;

	if (na->length_opt_case == ISTIO__WORKLOAD__NETWORK_ADDRESS__LENGTH_OPT_LENGTH &&
	    na->length != na->address.len * 8)
		return AF_UNSPEC;
	return bin_to_key(&na->address, "", &k) ? k.family : AF_UNSPEC;
}

static bool
sa_to_key(const struct sockaddr_storage *sa, const char *network, struct ipkey *k)
{
	ProtobufCBinaryData b;
	uint16_t port;

	if (!sa)
		return false;
	if (sa->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)sa;

		b.len = 4;
		b.data = (uint8_t *)&s4->sin_addr;
		port = ntohs(s4->sin_port);
	} else if (sa->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)sa;

		b.len = 16;
		b.data = (uint8_t *)&s6->sin6_addr;
		port = ntohs(s6->sin6_port);
	} else
		return false;
	if (!bin_to_key(&b, network, k))
		return false;
	k->port = port;
	return true;
}

static bool
ipkey_eq(const struct ipkey *a, const struct ipkey *b)
{
	return a->family == b->family && a->port == b->port &&
	    memcmp(a->a, b->a, a->family == AF_INET ? 4 : 16) == 0 && strcmp(a->network, b->network) == 0;
}

static const Istio__Workload__Workload *
wl_msg(const struct mworkload *w)
{
	return ((const Istio__Workload__Address *)w->res->msg)->workload;
}

static const Istio__Workload__Service *
svc_msg(const struct mservice *s)
{
	return ((const Istio__Workload__Address *)s->res->msg)->service;
}

static void
wladdr_key(const struct model *m, uint32_t i, struct ipkey *k)
{
	const struct mworkload *w = &m->wls[m->wladdrs[i].wl];
	const Istio__Workload__Workload *wm = wl_msg(w);

	bin_to_key(&wm->addresses[m->wladdrs[i].ai], wm->network, k);
}

static void
vip_key(const struct model *m, uint32_t i, struct ipkey *k)
{
	const struct vipref *v = &m->vips[i];
	const Istio__Workload__NetworkAddress *na = svc_msg(&m->svcs[v->svc])->addresses[v->ai];

	bin_to_key(&na->address, na->network, k);
	k->port = v->port == VIP_ANY ? 0 : m->ports[v->port].port;
}

/* Finds key k (hash h) in a table of wladdrs (vip = false) or vips: the
 * entry's index or -1; with insert, the empty slot it would go to in *at. */
static int64_t
ip_find_h(const struct model *m, const struct otab *t, bool vip, const struct ipkey *k, uint32_t h, uint32_t *at)
{
	uint32_t i = h & t->mask;

	for (;; i = (i + 1) & t->mask) {
		struct ipkey e;
		uint32_t s = t->slot[i];

		if (!s) {
			if (at)
				*at = i;
			return -1;
		}
		if (vip)
			vip_key(m, s - 1, &e);
		else if (m->wladdrs[s - 1].hash != h)
			continue;	/* no need to read the key from the message */
		else
			wladdr_key(m, s - 1, &e);
		if (ipkey_eq(&e, k))
			return s - 1;
	}
}

static int64_t
ip_find(const struct model *m, const struct otab *t, bool vip, const struct ipkey *k, uint32_t *at)
{
	return ip_find_h(m, t, vip, k, ipkey_hash(k), at);
}

/* ---- Problems ---- */

struct build {
	const struct model_input *in;
	size_t n;
	const struct model *prev;
	const struct model_opts *opts;
	struct model_report *rep;
	bool oom;
	/* Per input: the resource that stands for it in the model (the input's
	 * own, prev's version, or NULL). */
	struct mres **cand;
	int *problem;			/* per input: its problem's index or -1 */
	/* Per input: the index in prev->res[type] of prev's resource of its
	 * type and name, or -1 (also for a name taken twice). */
	int64_t *pk;
	bool reuse;			/* prev's derived data may be reused (!opts->no_reuse) */
	/* Per type, per resource of the model in its order: its index in
	 * prev->res[type], or -1 (new, or not reusing). */
	int64_t *ppos[MRES__COUNT];
	uint32_t *wlmap;		/* per prev workload: its index in the new wls, or UINT32_MAX */
	bool *wlfresh;			/* per workload: derived from its message (not prev's) */
	bool *iswl;			/* per res[MRES_ADDRESS]: a workload (build_services need not look) */
	/* While deciding: VIP:ports and network/IPs claimed, services in. */
	struct tset *vips, *ips, *svcs, *names;
};

static const char *
in_path(const struct model_input *in)
{
	return in->path && *in->path ? in->path : "$";
}

static void problem(struct build *b, size_t i, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records that input i is refused: "<path>.<what>". One problem per input. */
static void
problem(struct build *b, size_t i, const char *fmt, ...)
{
	struct model_report *rep = b->rep;
	struct model_problem *p;
	va_list ap;
	int n;

	if (!rep || b->problem[i] >= 0)
		return;
	if (rep->nproblems % 16 == 0) {
		void *np = realloc(rep->problems, (rep->nproblems + 16) * sizeof(*rep->problems));

		if (!np) {
			b->oom = true;
			return;
		}
		rep->problems = np;
	}
	p = &rep->problems[rep->nproblems];
	memset(p, 0, sizeof(*p));
	p->path = b->in[i].path;
	p->type = b->in[i].res->type;
	snprintf(p->name, sizeof(p->name), "%s", b->in[i].res->name);
	n = snprintf(p->msg, sizeof(p->msg), "%s.", in_path(&b->in[i]));
	if (n < 0 || (size_t)n >= sizeof(p->msg))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(p->msg + n, sizeof(p->msg) - (size_t)n, fmt, ap);
	va_end(ap);
	b->problem[i] = (int)rep->nproblems++;
}

void
model_report_free(struct model_report *rep)
{
	if (!rep)
		return;
	free(rep->problems);
	rep->problems = NULL;
	rep->nproblems = 0;
}

/* ---- Validation of one resource by itself ----
 * Each returns false after problem(): p is the field path so far. */

static bool
check_bytes_ip(struct build *b, size_t i, const char *p, const ProtobufCBinaryData *a)
{
	if (a->len == 4 || a->len == 16)
		return true;
	problem(b, i, "%s: %zu bytes; want 4 (IPv4) or 16 (IPv6)", p, a->len);
	return false;
}

static bool
check_port(struct build *b, size_t i, const char *p, uint32_t port, bool zero_ok)
{
	if ((port != 0 || zero_ok) && port <= 65535)
		return true;
	problem(b, i, "%s: port %u; want 1 to 65535%s", p, port, zero_ok ? " (or 0: unset)" : "");
	return false;
}

static bool
check_netaddr(struct build *b, size_t i, const char *p, const Istio__Workload__NetworkAddress *na)
{
	char q[160];

	snprintf(q, sizeof(q), "%s.address", p);
	if (!check_bytes_ip(b, i, q, &na->address))
		return false;
	if (na->length_opt_case == ISTIO__WORKLOAD__NETWORK_ADDRESS__LENGTH_OPT_LENGTH &&
	    na->length > na->address.len * 8) {
		problem(b, i, "%s.length: %u; want at most %zu for this address", p, na->length,
		    na->address.len * 8);
		return false;
	}
	return true;
}

static bool
check_gateway(struct build *b, size_t i, const char *p, const Istio__Workload__GatewayAddress *g)
{
	char q[160];

	if (!g)
		return true;
	snprintf(q, sizeof(q), "%s.hboneMtlsPort", p);
	if (!check_port(b, i, q, g->hbone_mtls_port, true))
		return false;
	if (g->destination_case == ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS && g->address) {
		snprintf(q, sizeof(q), "%s.address", p);
		return check_netaddr(b, i, q, g->address);
	}
	if (g->destination_case == ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME && g->hostname &&
	    !*S(g->hostname->hostname)) {
		problem(b, i, "%s.hostname.hostname: required", p);
		return false;
	}
	return true;
}

static bool
check_ports(struct build *b, size_t i, const char *p, Istio__Workload__Port *const *ports, size_t n)
{
	char q[192];

	for (size_t k = 0; k < n; k++) {
		snprintf(q, sizeof(q), "%s[%zu].servicePort", p, k);
		if (!check_port(b, i, q, ports[k]->service_port, false))
			return false;
		snprintf(q, sizeof(q), "%s[%zu].targetPort", p, k);
		if (!check_port(b, i, q, ports[k]->target_port, true))
			return false;
		for (size_t j = 0; j < k; j++)
			if (ports[j]->service_port == ports[k]->service_port) {
				problem(b, i, "%s[%zu].servicePort: %u repeats %s[%zu]", p, k,
				    ports[k]->service_port, p, j);
				return false;
			}
	}
	return true;
}

static bool
check_workload(struct build *b, size_t i, const Istio__Workload__Workload *w)
{
	char q[160];

	if (!*S(w->uid)) {
		problem(b, i, "workload.uid: required (the workload's name)");
		return false;
	}
	for (size_t k = 0; k < w->n_addresses; k++) {
		snprintf(q, sizeof(q), "workload.addresses[%zu]", k);
		if (!check_bytes_ip(b, i, q, &w->addresses[k]))
			return false;
	}
	if (!check_gateway(b, i, "workload.waypoint", w->waypoint) ||
	    !check_gateway(b, i, "workload.networkGateway", w->network_gateway))
		return false;
	if (w->application_tunnel &&
	    !check_port(b, i, "workload.applicationTunnel.port", w->application_tunnel->port, true))
		return false;
	for (size_t k = 0; k < w->n_services; k++) {
		const Istio__Workload__Workload__ServicesEntry *e = w->services[k];
		const char *key = S(e->key), *slash = strchr(key, '/');

		/* ztunnel splits the key at the first '/' and refuses the
		 * workload without one (NamespacedHostnameParse). */
		if (!slash || slash == key || !slash[1]) {
			problem(b, i, "workload.services[\"%.64s\"]: want \"namespace/hostname\"", key);
			return false;
		}
		if (e->value) {
			snprintf(q, sizeof(q), "workload.services[\"%.64s\"].ports", key);
			if (!check_ports(b, i, q, e->value->ports, e->value->n_ports))
				return false;
		}
	}
	return true;
}

/* Bounds on one service: the VIP index holds an entry per VIP and port, the
 * endpoints one per member, port and family, so a few hundred bytes of JSON
 * could otherwise ask for hundreds of megabytes (a review built 352 MB from
 * 179 KB). Kubernetes gives a Service two VIPs (one per family) and a
 * handful of ports; an EndpointSlice carries at most 100 ports. */
#define SVC_MAX_ADDRESSES 64
#define SVC_MAX_PORTS 1000

static bool
check_service(struct build *b, size_t i, const Istio__Workload__Service *s)
{
	char q[160];

	if (!*S(s->namespace_) || !*S(s->hostname)) {
		problem(b, i, "service.%s: required (a service is named \"namespace/hostname\")",
		    *S(s->namespace_) ? "hostname" : "namespace");
		return false;
	}
	if (s->n_addresses > SVC_MAX_ADDRESSES || s->n_ports > SVC_MAX_PORTS) {
		problem(b, i, "service.%s: %zu; at most %d", s->n_ports > SVC_MAX_PORTS ? "ports" : "addresses",
		    s->n_ports > SVC_MAX_PORTS ? s->n_ports : s->n_addresses,
		    s->n_ports > SVC_MAX_PORTS ? SVC_MAX_PORTS : SVC_MAX_ADDRESSES);
		return false;
	}
	for (size_t k = 0; k < s->n_addresses; k++) {
		snprintf(q, sizeof(q), "service.addresses[%zu]", k);
		if (!check_netaddr(b, i, q, s->addresses[k]))
			return false;
	}
	if (!check_ports(b, i, "service.ports", s->ports, s->n_ports))
		return false;
	if (!check_gateway(b, i, "service.waypoint", s->waypoint))
		return false;
	for (size_t k = 0; k < s->n_weighted_waypoints; k++) {
		snprintf(q, sizeof(q), "service.weightedWaypoints[%zu].destination", k);
		if (!check_gateway(b, i, q, s->weighted_waypoints[k]->destination))
			return false;
	}
	if (s->load_balancing)
		for (size_t k = 0; k < s->load_balancing->n_routing_preference; k++)
			/* ztunnel refuses an unset scope ("invalid target"). */
			if (s->load_balancing->routing_preference[k] ==
			    ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__UNSPECIFIED_SCOPE) {
				problem(b, i, "service.loadBalancing.routingPreference[%zu]: "
				    "UNSPECIFIED_SCOPE is not a scope", k);
				return false;
			}
	return true;
}

static bool
check_cla(struct build *b, size_t i, const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *c)
{
	for (size_t k = 0; k < c->n_endpoints; k++) {
		const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *le = c->endpoints[k];

		for (size_t j = 0; j < le->n_lb_endpoints; j++) {
			const Envoy__Config__Endpoint__V3__LbEndpoint *lb = le->lb_endpoints[j];
			const Envoy__Config__Core__V3__Address *a;
			const Envoy__Config__Core__V3__SocketAddress *sa;
			unsigned char buf[16];

			if (lb->host_identifier_case != ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT)
				continue;
			if (!lb->endpoint || !(a = lb->endpoint->address)) {
				problem(b, i, "endpoints[%zu].lbEndpoints[%zu].endpoint.address: required", k, j);
				return false;
			}
			if (a->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_ENVOY_INTERNAL_ADDRESS &&
			    a->envoy_internal_address) {
				/* istiod's HBONE endpoint: the target is "ip:port" (model_eds.c;
				 * without endpointId, original_dst "local" says it). */
				const char *id = a->envoy_internal_address->endpoint_id;
				int fam;
				uint16_t port;

				if (id && *id && meds_target_parse(id, &fam, buf, &port) < 0) {
					problem(b, i, "endpoints[%zu].lbEndpoints[%zu].endpoint.address.envoyInternalAddress."
					    "endpointId: \"%.64s\" is not ip:port", k, j, S(id));
					return false;
				}
				continue;
			}
			if (a->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS ||
			    !(sa = a->socket_address)) {
				problem(b, i, "endpoints[%zu].lbEndpoints[%zu].endpoint.address: "
				    "want a socketAddress", k, j);
				return false;
			}
			/* An EDS endpoint is an address, never a name to resolve. */
			if (inet_pton(AF_INET, S(sa->address), buf) != 1 &&
			    inet_pton(AF_INET6, S(sa->address), buf) != 1) {
				problem(b, i, "endpoints[%zu].lbEndpoints[%zu].endpoint.address.socketAddress."
				    "address: \"%.64s\" is not an IP address", k, j, S(sa->address));
				return false;
			}
			if (sa->port_specifier_case != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE) {
				problem(b, i, "endpoints[%zu].lbEndpoints[%zu].endpoint.address.socketAddress."
				    "portValue: required", k, j);
				return false;
			}
			if (sa->port_value == 0 || sa->port_value > 65535) {
				problem(b, i, "endpoints[%zu].lbEndpoints[%zu].endpoint.address.socketAddress."
				    "portValue: port %u; want 1 to 65535", k, j, sa->port_value);
				return false;
			}
		}
	}
	return true;
}

/* The way down to an Any, kept as (field, index) pairs so that the path
 * string is only made when something is found. */
struct anywalk {
	const ProtobufCFieldDescriptor *f[33];
	size_t k[33];
	bool rep[33];
	int depth;
	int value;
	bool undecodable;
	char inner[JPB_PATH_LEN];	/* pb_find_unknown_enum's path in the Any */
};

/* pb_find_unknown_enum() sees an Any's value as bytes: this finds the Anys
 * in m, unpacks each whose type we know (the JSON decoder refused the
 * others; from xDS they stay opaque, as nothing reads them) and looks in
 * it, and in the Anys it holds. -EINVAL with w->value (or w->undecodable:
 * the value does not unpack) and the way to it in w, else 0. */
static int
find_unknown_in_anys(const ProtobufCMessage *m, struct anywalk *w)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;

	if (d == &google__protobuf__any__descriptor) {
		const Google__Protobuf__Any *any = (const void *)m;
		const char *slash = strrchr(S(any->type_url), '/');
		const ProtobufCMessageDescriptor *inner = jpb_lookup(slash ? slash + 1 : S(any->type_url));
		ProtobufCMessage *u;
		int rc;

		if (!inner)
			return 0;
		/* Its bytes were no message field of the resource's: their
		 * nesting is bounded here (pb_depth_ok). */
		if (pb_depth_ok(inner, any->value.data, any->value.len, PB_MAX_DEPTH) < 0 ||
		    !(u = protobuf_c_message_unpack(inner, NULL, any->value.len, any->value.data))) {
			snprintf(w->inner, sizeof(w->inner), "value");
			w->undecodable = true;
			return -EINVAL;
		}
		rc = pb_find_unknown_enum(u, w->inner, sizeof(w->inner), &w->value);
		if (rc == 0)
			rc = find_unknown_in_anys(u, w);
		protobuf_c_message_free_unpacked(u, NULL);
		return rc;
	}
	if (w->depth >= 32)
		return 0;	/* the decoder's nesting bound is lower */
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
		const void *elems = base + f->offset;
		size_t n = 1;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + f->quantifier_offset) != f->id)
			continue;
		if (repeated) {
			n = *(const size_t *)(base + f->quantifier_offset);
			elems = *(void *const *)(base + f->offset);
		}
		for (size_t k = 0; k < n; k++) {
			const ProtobufCMessage *sub = repeated ? ((ProtobufCMessage *const *)elems)[k] :
			    *(ProtobufCMessage *const *)elems;

			if (!sub)
				continue;
			w->f[w->depth] = f;
			w->k[w->depth] = k;
			w->rep[w->depth] = repeated;
			w->depth++;
			if (find_unknown_in_anys(sub, w) < 0)
				return -EINVAL;
			w->depth--;
		}
	}
	return 0;
}

/* The path of what find_unknown_in_anys() found: "a.b[2].typedConfig.x". */
static void
anywalk_path(const struct anywalk *w, char *path, size_t len)
{
	size_t at = 0;

	path[0] = '\0';
	for (int i = 0; i < w->depth && at + 1 < len; i++) {
		char name[128];
		int n;

		jpb_json_name(w->f[i]->name, name, sizeof(name));
		n = w->rep[i] ? snprintf(path + at, len - at, "%s%s[%zu]", at ? "." : "", name, w->k[i]) :
		    snprintf(path + at, len - at, "%s%s", at ? "." : "", name);
		if (n > 0)
			at = at + (size_t)n < len ? at + (size_t)n : len - 1;
	}
	/* Cut to len: a path long enough to find the field is enough. */
	if (at + 1 < len && snprintf(path + at, len - at, "%s%s", at ? "." : "", w->inner) < 0)
		path[at] = '\0';
}

/* Whether input i's resource is valid by itself. */
/* A resource's own name field, which its type requires. */
static bool
named(struct build *b, size_t i, const char *name, const char *field)
{
	if (*S(name))
		return true;
	problem(b, i, "%s: required", field);
	return false;
}

static bool
check_one(struct build *b, size_t i)
{
	const struct mres *r = b->in[i].res;
	char path[JPB_PATH_LEN];
	struct anywalk w;
	int value;

	if (type_of(r->msg) != (int)r->type) {
		problem(b, i, "@type: %s is not a resource of type %s", r->msg->descriptor->name,
		    mres_type_names[r->type]);
		return false;
	}
	/* ztunnel refuses a resource with an enum value it does not know
	 * (TryFrom fails: NACK), rather than misreading it as a default. */
	if (pb_find_unknown_enum(r->msg, path, sizeof(path), &value) < 0) {
		problem(b, i, "%s: unknown enum value %d", path, value);
		return false;
	}
	w.depth = 0;
	w.undecodable = false;
	if (find_unknown_in_anys(r->msg, &w) < 0) {
		anywalk_path(&w, path, sizeof(path));
		if (w.undecodable)
			problem(b, i, "%s: not a valid encoding of its @type", path);
		else
			problem(b, i, "%s: unknown enum value %d", path, w.value);
		return false;
	}
	switch (r->type) {
	case MRES_ADDRESS: {
		const Istio__Workload__Address *a = (const void *)r->msg;

		if (a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD && a->workload)
			return check_workload(b, i, a->workload);
		if (a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE && a->service)
			return check_service(b, i, a->service);
		problem(b, i, "workload, service: one is required");
		return false;
	}
	case MRES_ENDPOINTS:
		return named(b, i, ((const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)r->msg)->cluster_name,
		    "clusterName") && check_cla(b, i, (const void *)r->msg);
	case MRES_CLUSTER:
		return named(b, i, ((const Envoy__Config__Cluster__V3__Cluster *)r->msg)->name, "name");
	case MRES_AUTHORIZATION: {
		char why[256];

		if (!named(b, i, ((const Istio__Security__Authorization *)r->msg)->name, "name"))
			return false;
		if (authz_policy_check((const void *)r->msg, why, sizeof(why)) < 0) {
			problem(b, i, "%s", why);
			return false;
		}
		return true;
	}
	case MRES_ROUTE:
		return named(b, i, ((const Envoy__Config__Route__V3__RouteConfiguration *)r->msg)->name, "name");
	case MRES_LISTENER:
		return named(b, i, ((const Envoy__Config__Listener__V3__Listener *)r->msg)->name, "name");
	default:
		return true;
	}
}

static bool
is_workload(const struct mres *r)
{
	const Istio__Workload__Address *a = (const void *)r->msg;

	return r->type == MRES_ADDRESS && a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD && a->workload;
}

static bool
is_service(const struct mres *r)
{
	const Istio__Workload__Address *a = (const void *)r->msg;

	return r->type == MRES_ADDRESS && a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE && a->service;
}

/* ---- Building ---- */

static int
cmp_mres_name(const void *a, const void *b)
{
	return strcmp((*(struct mres *const *)a)->name, (*(struct mres *const *)b)->name);
}

static void *
mcalloc(struct model *m, size_t n, size_t size)
{
	void *p;

	if (!(p = calloc(n ? n : 1, size)))
		return NULL;
	m->bytes += (n ? n : 1) * size;
	return p;
}

static uint32_t
str_hash(const char *s)
{
	return hash_fin(hash_bytes(HASH_SEED, s, strlen(s)));
}

/* Finds key (its str_hash h) in a table of names: res(ctx, i) is entry
 * i's resource (the name and its hash). The entry's index or -1; with at,
 * the empty slot it would go to. */
static int64_t
name_find(const struct otab *tab, const char *key, uint32_t h,
    const struct mres *(*res)(const void *ctx, uint32_t i), const void *ctx, uint32_t *at)
{
	uint32_t i;

	if (!tab->slot)
		return -1;
	for (i = h & tab->mask;; i = (i + 1) & tab->mask) {
		uint32_t s = tab->slot[i];
		const struct mres *r;

		if (!s) {
			if (at)
				*at = i;
			return -1;
		}
		r = res(ctx, s - 1);
		if (r->hash == h && strcmp(r->name, key) == 0)
			return s - 1;
	}
}

/* Puts entry i (hash h) in the first empty slot: for names known unique. */
static void
otab_put(struct otab *tab, uint32_t h, uint32_t i)
{
	uint32_t at = h & tab->mask;

	while (tab->slot[at])
		at = (at + 1) & tab->mask;
	tab->slot[at] = i + 1;
}

static const struct mres *
res_at(const void *ctx, uint32_t i)
{
	return ((struct mres *const *)ctx)[i];
}

static const struct mres *
svc_res(const void *ctx, uint32_t i)
{
	return ((const struct mservice *)ctx)[i].res;	/* its name is the key */
}

/* Resource name tables hold indexes into m->res[t]. */
static int64_t
res_find(const struct model *m, enum mres_type t, const char *name, uint32_t *at)
{
	return name_find(&m->byname[t], name, str_hash(name), res_at, m->res[t], at);
}

/* The index of r's type and name in m->res, or -1: r itself is found
 * without a string comparison. */
static int64_t
res_find_r(const struct model *m, const struct mres *r)
{
	const struct otab *tab = &m->byname[r->type];

	if (!tab->slot)
		return -1;
	for (uint32_t i = r->hash & tab->mask;; i = (i + 1) & tab->mask) {
		uint32_t s = tab->slot[i];
		const struct mres *e;

		if (!s)
			return -1;
		e = m->res[r->type][s - 1];
		if (e == r || (e->hash == r->hash && strcmp(e->name, r->name) == 0))
			return s - 1;
	}
}

static int64_t
svc_find_h(const struct model *m, const char *key, uint32_t h)
{
	return name_find(&m->svckey, key, h, svc_res, m->svcs, NULL);
}

static int64_t
svc_find(const struct model *m, const char *key)
{
	return svc_find_h(m, key, str_hash(key));
}

/* A temporary set of (type, name) -> input index, or of IP keys -> input
 * index, used only while deciding what is refused. */
struct tset {
	struct otab t;
	size_t n;
	struct tent {
		const char *name;	/* NULL: an IP key */
		uint32_t hash;		/* the name's str_hash */
		int type;
		struct ipkey k;
		size_t input;
	} *e;
};

static int
tset_init(struct tset *s, size_t n)
{
	s->n = 0;
	if (!(s->e = calloc(n ? n : 1, sizeof(*s->e))))
		return -ENOMEM;
	if (otab_init(&s->t, n) < 0) {
		free(s->e);
		s->e = NULL;
		return -ENOMEM;
	}
	return 0;
}

static void
tset_free(struct tset *s)
{
	free(s->e);
	free(s->t.slot);
	memset(s, 0, sizeof(*s));
}

/* The entry for (type, name) (h: the name's str_hash) or key k, or NULL;
 * with add, a new entry of input `input` is made when there is none (the
 * caller sized the set). */
static struct tent *
tset_get(struct tset *s, int type, const char *name, uint32_t h, const struct ipkey *k, size_t input, bool add)
{
	uint32_t i;

	if (name)
		i = hash_fin(h ^ (uint64_t)type << 32);
	else
		i = ipkey_hash(k);
	for (i &= s->t.mask;; i = (i + 1) & s->t.mask) {
		uint32_t v = s->t.slot[i];
		struct tent *e;

		if (!v) {
			if (!add)
				return NULL;
			e = &s->e[s->n];
			e->name = name;
			e->hash = h;
			e->type = type;
			if (k)
				e->k = *k;
			e->input = input;
			s->t.slot[i] = (uint32_t)++s->n;
			return NULL;
		}
		e = &s->e[v - 1];
		if (name ? (e->name && e->hash == h && e->type == type && strcmp(e->name, name) == 0) :
		    (!e->name && ipkey_eq(&e->k, k)))
			return e;
	}
}

static void
set_kept(struct build *b, size_t i, bool kept)
{
	if (b->rep && b->problem[i] >= 0)
		b->rep->problems[b->problem[i]].kept_previous = kept;
}

/* Input i is refused after its own resource passed the first checks:
 * prev's version stands for it, if it passes the same check. */
typedef bool check_fn(struct build *b, size_t i, const struct mres *r, bool report);

static void
refuse_or_prev(struct build *b, size_t i, check_fn *check)
{
	struct mres *own = b->in[i].res, *p = b->pk[i] >= 0 ? b->prev->res[own->type][b->pk[i]] : NULL;

	b->cand[i] = NULL;
	if (p && p != own && check(b, i, p, false)) {
		b->cand[i] = p;
		set_kept(b, i, true);
	} else
		set_kept(b, i, false);
}

/* Service: every VIP:port must be free. Claims them when it passes. */
static bool
svc_vips_free(struct build *b, size_t i, const struct mres *r, bool report, struct tset *vips)
{
	const Istio__Workload__Service *s = ((const Istio__Workload__Address *)r->msg)->service;
	for (size_t a = 0; a < s->n_addresses; a++)
		for (size_t p = 0; p < s->n_ports && vip_family(s->addresses[a]) != AF_UNSPEC; p++) {
			struct ipkey k;
			struct tent *e;

			bin_to_key(&s->addresses[a]->address, s->addresses[a]->network, &k);
			k.port = (uint16_t)s->ports[p]->service_port;
			e = tset_get(vips, 0, NULL, 0, &k, i, true);
			if (e && e->input == SIZE_MAX)
				e->input = i;	/* given back by a refused one */
			if (e && e->input != i) {
				if (report) {
					char ip[INET6_ADDRSTRLEN];

					inet_ntop(k.family, k.a, ip, sizeof(ip));
					problem(b, i, "service.addresses[%zu]: %s%s%s:%u is %s's already (%s)", a,
					    *k.network ? k.network : "", *k.network ? "/" : "", ip, k.port,
					    b->cand[e->input] ? b->cand[e->input]->name : "?", in_path(&b->in[e->input]));
				}
				/* Give back what this one claimed: it is not in. */
				for (size_t x = 0; x < vips->n; x++)
					if (vips->e[x].input == i)
						vips->e[x].input = SIZE_MAX;
				return false;
			}
		}
	return true;
}

static bool
svc_check(struct build *b, size_t i, const struct mres *r, bool report)
{
	/* prev's resource of that name may be a workload (one namespace). */
	return is_service(r) && svc_vips_free(b, i, r, report, b->vips);
}

/* Workload: its services exist (strict_refs), its network/IPs are free. */
static bool
wl_check(struct build *b, size_t i, const struct mres *r, bool report)
{
	const Istio__Workload__Workload *w;

	if (!is_workload(r))
		return false;	/* prev's of that name was a service */
	w = ((const Istio__Workload__Address *)r->msg)->workload;
	if (b->opts && b->opts->strict_refs)
		for (size_t k = 0; k < w->n_services; k++)
			if (!tset_get(b->svcs, MRES_ADDRESS, S(w->services[k]->key), str_hash(S(w->services[k]->key)),
			    NULL, 0, false)) {
				const struct tent *e = tset_get(b->names, MRES_ADDRESS, S(w->services[k]->key),
				    str_hash(S(w->services[k]->key)), NULL, 0, false);

				/* One typo, one error: say when the service is there
				 * but was refused itself. */
				if (report && e && is_service(b->in[e->input].res))
					problem(b, i, "workload.services[\"%.64s\"]: that service was refused (%s)",
					    S(w->services[k]->key), in_path(&b->in[e->input]));
				else if (report)
					problem(b, i, "workload.services[\"%.64s\"]: no such service",
					    S(w->services[k]->key));
				return false;
			}
	for (size_t a = 0; a < w->n_addresses; a++) {
		struct ipkey k;
		struct tent *e;

		bin_to_key(&w->addresses[a], w->network, &k);
		e = tset_get(b->ips, 0, NULL, 0, &k, i, true);
		if (e && e->input == SIZE_MAX)
			e->input = i;	/* given back by a refused one */
		if (e && e->input != i) {
			if (report) {
				char ip[INET6_ADDRSTRLEN];

				inet_ntop(k.family, k.a, ip, sizeof(ip));
				problem(b, i, "workload.addresses[%zu]: %s%s%s is %s's already (%s)", a,
				    *k.network ? k.network : "", *k.network ? "/" : "", ip,
				    b->cand[e->input] ? b->cand[e->input]->name : "?", in_path(&b->in[e->input]));
			}
			for (size_t x = 0; x < b->ips->n; x++)
				if (b->ips->e[x].input == i)
					b->ips->e[x].input = SIZE_MAX;
			return false;
		}
	}
	return true;
}

static const char *name_field(const struct mres *r);

/* Whether key k (hash h) is claimed in prev by an input of this build that
 * stands as prev's very resource (same[] of its place): table wlip or vip. */
static bool
claimed_by_same(const struct model *prev, const unsigned char *same, bool vip, const struct ipkey *k, uint32_t h)
{
	const struct otab *t = vip ? &prev->vip : &prev->wlip;
	const struct mres *owner;
	int64_t x, pos;

	if (!t->slot || (x = ip_find_h(prev, t, vip, k, h, NULL)) < 0)
		return false;
	if (vip && prev->vips[x].port == VIP_ANY)
		return false;	/* the VIP itself: not claimed by decide() */
	owner = vip ? prev->svcs[prev->vips[x].svc].res : prev->wls[prev->wladdrs[x].wl].res;
	return (pos = res_find_r(prev, owner)) >= 0 && same[pos] == 1;
}

/* decide() when prev is given and reuse allowed, for the common push: the
 * inputs that are prev's own resources were all accepted together in prev
 * (their names, VIP:ports and network/IPs are apart), so only the others
 * are checked: by themselves, against each other, and against prev's
 * indexes for a key one of prev's accepted ones holds. When none collides
 * with anything, every candidate stands, which is what decide() finds; on
 * any collision (or a strict_refs question prev cannot answer) this gives
 * up (0) and decide() runs, so first-come order is always decide()'s.
 * 1: decided; 0: not; -ENOMEM. */
static int
decide_over_prev(struct build *b)
{
	const struct model *prev = b->prev;
	size_t np = prev->nres[MRES_ADDRESS], nchg = 0, off[MRES__COUNT + 1] = { 0 };
	size_t *seen = NULL, *chg = NULL;
	unsigned char *same = NULL;	/* per prev Address: 1 prev's own stands, 2 a changed service, 3 other */
	struct tset names = { 0 }, vips = { 0 }, ips = { 0 }, svcs = { 0 };
	bool strict = b->opts && b->opts->strict_refs;
	int rc = -ENOMEM;

	if (strict && !prev->strict_refs)
		return 0;	/* prev's workloads were not checked for references */
	for (int t = 0; t < MRES__COUNT; t++)
		off[t + 1] = off[t] + prev->nres[t];
	if (!(seen = calloc(off[MRES__COUNT] + 1, sizeof(*seen))) || !(same = calloc(np + 1, 1)) ||
	    !(chg = malloc((b->n ? b->n : 1) * sizeof(*chg))) || tset_init(&names, b->n) < 0)
		goto out;
	for (size_t i = 0; i < b->n; i++) {
		struct mres *r = b->in[i].res;
		const struct tent *e;
		int64_t k;
		size_t first = SIZE_MAX;

		if (!r)
			continue;
		if ((k = res_find_r(prev, r)) >= 0) {
			if (seen[off[r->type] + (size_t)k])
				first = seen[off[r->type] + (size_t)k] - 1;
			else
				seen[off[r->type] + (size_t)k] = i + 1;
		} else if ((e = tset_get(&names, r->type, r->name, r->hash, NULL, i, true)))
			first = e->input;
		if (first != SIZE_MAX) {
			problem(b, i, "%s: \"%.64s\" is %s's name already", name_field(r), r->name,
			    in_path(&b->in[first]));
			continue;
		}
		b->pk[i] = k;
		if (k >= 0 && prev->res[r->type][k] == r)
			b->cand[i] = r;
		else if (check_one(b, i))
			b->cand[i] = r;
		else if (k >= 0 && (b->cand[i] = prev->res[r->type][k]))
			set_kept(b, i, true);
		if (b->oom)
			goto out;
		if (!b->cand[i] || r->type != MRES_ADDRESS)
			continue;
		if (k >= 0 && b->cand[i] == prev->res[r->type][k])
			same[k] = 1;
		else {
			if (k >= 0)
				same[k] = is_service(b->cand[i]) ? 2 : 3;
			chg[nchg++] = i;
		}
	}
	if (tset_init(&vips, 64) < 0 || tset_init(&ips, 64) < 0 || tset_init(&svcs, nchg) < 0)
		goto out;
	rc = 0;
	/* Changed services: their VIP:ports free (kept small: a big change
	 * goes to decide()). */
	for (size_t c = 0; c < nchg; c++) {
		const struct mres *r = b->cand[chg[c]];
		const Istio__Workload__Service *sv;

		if (!is_service(r))
			continue;
		sv = ((const Istio__Workload__Address *)r->msg)->service;
		tset_get(&svcs, MRES_ADDRESS, r->name, r->hash, NULL, chg[c], true);
		for (size_t a = 0; a < sv->n_addresses; a++)
			for (size_t p = 0; p < sv->n_ports && vip_family(sv->addresses[a]) != AF_UNSPEC; p++) {
				struct ipkey k;
				const struct tent *e;

				bin_to_key(&sv->addresses[a]->address, sv->addresses[a]->network, &k);
				k.port = (uint16_t)sv->ports[p]->service_port;
				if (vips.n + 1 > 32 || claimed_by_same(prev, same, true, &k, ipkey_hash(&k)) ||
				    ((e = tset_get(&vips, 0, NULL, 0, &k, chg[c], true)) && e->input != chg[c]))
					goto out;
			}
	}
	/* Changed workloads: their network/IPs free, their services there. */
	for (size_t c = 0; c < nchg; c++) {
		const struct mres *r = b->cand[chg[c]];
		const Istio__Workload__Workload *w;

		if (!is_workload(r))
			continue;
		w = ((const Istio__Workload__Address *)r->msg)->workload;
		for (size_t a = 0; a < w->n_addresses; a++) {
			struct ipkey k;
			const struct tent *e;

			bin_to_key(&w->addresses[a], w->network, &k);
			if (ips.n + 1 > 32 || claimed_by_same(prev, same, false, &k, ipkey_hash(&k)) ||
			    ((e = tset_get(&ips, 0, NULL, 0, &k, chg[c], true)) && e->input != chg[c]))
				goto out;
		}
		for (size_t e = 0; strict && e < w->n_services; e++) {
			const char *key = S(w->services[e]->key);
			uint32_t h = str_hash(key);
			int64_t pos;

			if (tset_get(&svcs, MRES_ADDRESS, key, h, NULL, 0, false))
				continue;
			pos = name_find(&prev->byname[MRES_ADDRESS], key, h, res_at, prev->res[MRES_ADDRESS], NULL);
			if (pos < 0 || same[pos] != 1 || !(prev->aix[pos] & AIX_SVC))
				goto out;
		}
	}
	/* strict_refs: prev's workloads still here name prev's services: each
	 * must still be one. */
	for (size_t pos = 0; strict && pos < np; pos++)
		if ((prev->aix[pos] & AIX_SVC) && same[pos] != 1 && same[pos] != 2)
			goto out;
	rc = 1;
out:
	if (rc == 0) {
		/* decide() starts over: the same problems come first again. */
		for (size_t i = 0; i < b->n; i++) {
			b->cand[i] = NULL;
			b->problem[i] = -1;
			b->pk[i] = -1;
		}
		if (b->rep)
			b->rep->nproblems = 0;
	}
	free(seen);
	free(same);
	free(chg);
	tset_free(&names);
	tset_free(&vips);
	tset_free(&ips);
	tset_free(&svcs);
	return b->oom ? -ENOMEM : rc;
}

/* Decides, for every input, the resource that stands for it (b->cand). */
static int
decide(struct build *b)
{
	struct tset names = { 0 }, vips = { 0 }, ips = { 0 }, svcs = { 0 };
	size_t nvip = 0, nip = 0, nsvc = 0;
	int rc = -ENOMEM;

	if (tset_init(&names, b->n) < 0)
		goto out;
	b->names = &names;
	for (size_t i = 0; i < b->n; i++) {
		struct mres *r = b->in[i].res;
		struct tent *e;

		if (!r)
			continue;
		if ((e = tset_get(&names, r->type, r->name, r->hash, NULL, i, true))) {
			/* The first of a name wins (right or wrong); the name is
			 * taken, so prev's version does not come back either. */
			problem(b, i, "%s: \"%.64s\" is %s's name already", name_field(r), r->name,
			    in_path(&b->in[e->input]));
			continue;
		}
		b->pk[i] = b->prev ? res_find_r(b->prev, r) : -1;
		/* A resource prev holds passed these checks (they look at
		 * nothing else): an xDS store hands the unchanged ones back as
		 * the same mres, so a push of one is not a revalidation of all. */
		if (b->reuse && b->pk[i] >= 0 && b->prev->res[r->type][b->pk[i]] == r)
			b->cand[i] = r;
		else if (check_one(b, i))
			b->cand[i] = r;
		else if (b->pk[i] >= 0 && (b->cand[i] = b->prev->res[r->type][b->pk[i]]))
			set_kept(b, i, true);
		if (b->oom)
			goto out;
	}
	/* Sized for every candidate and for prev's version of each input,
	 * which refuse_or_prev() may try in its place. */
	for (size_t i = 0; i < 2 * b->n; i++) {
		const struct mres *r = i < b->n ? b->cand[i] :
		    b->pk[i - b->n] >= 0 ? b->prev->res[b->in[i - b->n].res->type][b->pk[i - b->n]] : NULL;

		if (r && is_service(r)) {
			const Istio__Workload__Service *s = ((const Istio__Workload__Address *)r->msg)->service;

			nvip += s->n_addresses * s->n_ports;
			nsvc++;
		} else if (r && is_workload(r))
			nip += ((const Istio__Workload__Address *)r->msg)->workload->n_addresses;
	}
	/* Two services on one VIP:port: the first keeps it. */
	if (tset_init(&vips, nvip) < 0)
		goto out;
	b->vips = &vips;
	for (size_t i = 0; i < b->n; i++)
		if (b->cand[i] && is_service(b->cand[i]) && !svc_check(b, i, b->cand[i], true))
			refuse_or_prev(b, i, svc_check);
	if (tset_init(&svcs, nsvc) < 0 || tset_init(&ips, nip) < 0)
		goto out;
	for (size_t i = 0; i < b->n; i++)
		if (b->cand[i] && is_service(b->cand[i]))
			tset_get(&svcs, MRES_ADDRESS, b->cand[i]->name, b->cand[i]->hash, NULL, i, true);
	/* Two workloads on one network/IP: the first keeps it. */
	b->ips = &ips;
	b->svcs = &svcs;
	for (size_t i = 0; i < b->n; i++)
		if (b->cand[i] && is_workload(b->cand[i]) && !wl_check(b, i, b->cand[i], true))
			refuse_or_prev(b, i, wl_check);
	rc = b->oom ? -ENOMEM : 0;
out:
	b->vips = b->ips = b->svcs = b->names = NULL;
	tset_free(&names);
	tset_free(&vips);
	tset_free(&ips);
	tset_free(&svcs);
	return rc;
}

static void
fill_locality(struct mlocality *l, const Istio__Workload__Locality *x)
{
	l->region = x ? S(x->region) : "";
	l->zone = x ? S(x->zone) : "";
	l->subzone = x ? S(x->subzone) : "";
}

static const char *
trust_domain(const Istio__Workload__Workload *w)
{
	return *S(w->trust_domain) ? w->trust_domain : "cluster.local";
}

static const char *
service_account(const Istio__Workload__Workload *w)
{
	return *S(w->service_account) ? w->service_account : "default";
}

/* Copies s to p, NUL-terminated; returns the end (the NUL). */
static char *
put(char *p, const char *s)
{
	size_t n = strlen(s);

	memcpy(p, s, n + 1);
	return p + n;
}

/* Whether res[MRES_ADDRESS][i] is prev's resource at its prev place (the
 * same mres): then *pix is prev's aix of it. */
static bool
same_as_prev(const struct build *b, const struct model *m, size_t i, uint32_t *pix)
{
	int64_t k;

	if (!b->reuse || (k = b->ppos[MRES_ADDRESS][i]) < 0 || b->prev->res[MRES_ADDRESS][k] != m->res[MRES_ADDRESS][i])
		return false;
	*pix = b->prev->aix[k];
	return true;
}

static void
derive_workload(struct mworkload *x, const struct mres *r, char **sp)
{
	const Istio__Workload__Workload *w = ((const Istio__Workload__Address *)r->msg)->workload;

	x->res = r;
	x->uid = S(w->uid);
	x->name = S(w->name);
	x->ns = S(w->namespace_);
	x->identity = *sp;
	/* "spiffe://%s/ns/%s/sa/%s" without printf (a tenth of a build). */
	*sp = put(put(put(put(put(put(*sp, "spiffe://"), trust_domain(w)), "/ns/"), x->ns), "/sa/"),
	    service_account(w)) + 1;
	x->node = S(w->node);
	/* ztunnel: an empty cluster_id is "Kubernetes". */
	x->cluster_id = *S(w->cluster_id) ? w->cluster_id : "Kubernetes";
	x->network = S(w->network);
	x->tunnel = w->tunnel_protocol == ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE ? MTUN_HBONE :
	    w->tunnel_protocol == ISTIO__WORKLOAD__TUNNEL_PROTOCOL__LEGACY_ISTIO_MTLS ? MTUN_ISTIO_MTLS :
	    MTUN_NONE;
	x->healthy = w->status == ISTIO__WORKLOAD__WORKLOAD_STATUS__HEALTHY;
	if (w->application_tunnel) {
		x->proxy_protocol = w->application_tunnel->protocol ==
		    ISTIO__WORKLOAD__APPLICATION_TUNNEL__PROTOCOL__PROXY;
		x->app_tunnel_port = (uint16_t)w->application_tunnel->port;
	}
	fill_locality(&x->locality, w->locality);
	x->capacity = w->capacity ? w->capacity->value : 1;
}

/* The workloads, their identities and the address index. A workload that
 * is prev's (the same mres) is copied from prev with its addresses' hashes:
 * its message is not read again, which is most of what an incremental build
 * saves (the messages are all over the heap; prev's arrays are not). */
static int
build_workloads(struct model *m, struct build *b)
{
	const struct mres *const *res = (const struct mres *const *)m->res[MRES_ADDRESS];
	const struct model *prev = b->reuse ? b->prev : NULL;
	size_t n = m->nres[MRES_ADDRESS], slen = 0, naddr = 0;
	uint32_t pix;
	char *sp;

	if (!(m->aix = mcalloc(m, n, sizeof(*m->aix))) || !(b->iswl = calloc(n + 1, sizeof(*b->iswl))))
		return -ENOMEM;
	if (prev) {
		if (!(b->wlmap = malloc((prev->nwls ? prev->nwls : 1) * sizeof(*b->wlmap))))
			return -ENOMEM;
		memset(b->wlmap, 0xff, (prev->nwls ? prev->nwls : 1) * sizeof(*b->wlmap));
	}
	for (size_t i = 0; i < n; i++)
		if (same_as_prev(b, m, i, &pix)) {
			if (pix & AIX_SVC)
				continue;
			m->nwls++;
			naddr += prev->wlfirst[pix + 1] - prev->wlfirst[pix];
			slen += strlen(prev->wls[pix].identity) + 1;
		} else if (is_workload(res[i])) {
			const Istio__Workload__Workload *w = ((const Istio__Workload__Address *)res[i]->msg)->workload;

			m->nwls++;
			naddr += w->n_addresses;
			/* "spiffe://" td "/ns/" ns "/sa/" sa NUL */
			slen += 9 + strlen(trust_domain(w)) + 4 + strlen(S(w->namespace_)) + 4 +
			    strlen(service_account(w)) + 1;
		}
	if (!(m->wls = mcalloc(m, m->nwls, sizeof(*m->wls))) || !(m->strs = mcalloc(m, slen, 1)) ||
	    !(m->wladdrs = mcalloc(m, naddr, sizeof(*m->wladdrs))) ||
	    !(m->wlfirst = mcalloc(m, m->nwls + 1, sizeof(*m->wlfirst))) || otab_init(&m->wlip, naddr) < 0 ||
	    !(b->wlfresh = calloc(m->nwls + 1, sizeof(*b->wlfresh))))
		return -ENOMEM;
	m->bytes += otab_bytes(&m->wlip);
	sp = m->strs;
	/* Resources are in name order and a workload's name is its uid: wls
	 * come out in uid order without a sort. */
	for (size_t i = 0, j = 0; i < n; i++) {
		struct mworkload *x;

		if (same_as_prev(b, m, i, &pix)) {
			if (pix & AIX_SVC)
				continue;
			x = &m->wls[j];
			*x = prev->wls[pix];
			x->identity = sp;
			sp = put(sp, prev->wls[pix].identity) + 1;
			b->wlmap[pix] = (uint32_t)j;
			m->wlfirst[j] = m->nwladdrs;
			/* Its addresses are unique (decide(): no two workloads
			 * on one network/IP; prev kept one of a repeated one). */
			for (size_t a = prev->wlfirst[pix]; a < prev->wlfirst[pix + 1]; a++) {
				m->wladdrs[m->nwladdrs] = prev->wladdrs[a];
				m->wladdrs[m->nwladdrs].wl = (uint32_t)j;
				otab_put(&m->wlip, prev->wladdrs[a].hash, (uint32_t)m->nwladdrs++);
			}
		} else if (is_workload(res[i])) {
			const Istio__Workload__Workload *w;

			x = &m->wls[j];
			b->wlfresh[j] = true;
			derive_workload(x, res[i], &sp);
			w = wl_msg(x);
			m->wlfirst[j] = m->nwladdrs;
			for (size_t a = 0; a < w->n_addresses; a++) {
				struct ipkey k;
				uint32_t at, h;

				bin_to_key(&w->addresses[a], w->network, &k);
				h = ipkey_hash(&k);
				m->wladdrs[m->nwladdrs] = (struct wladdr){ (uint32_t)j, (uint32_t)a, h };
				/* The same address listed twice in one workload: once. */
				if (ip_find_h(m, &m->wlip, false, &k, h, &at) >= 0)
					continue;
				m->wlip.slot[at] = (uint32_t)++m->nwladdrs;
			}
		} else
			continue;
		b->iswl[i] = true;
		m->aix[i] = (uint32_t)j++;
	}
	m->wlfirst[m->nwls] = m->nwladdrs;
	return 0;
}

/* The workload's address for a VIP of family fam (AF_UNSPEC: headless), as
 * ztunnel picks it (src/state.rs, pick_workload_destination_or_resolve):
 * among the addresses the service's ip_families admits (IPV4_ONLY,
 * IPV6_ONLY; AUTOMATIC and DUAL: any), the first of the VIP's family, else
 * the first; false when none is admitted (ztunnel: no valid destination). */
static bool
ep_addr(const Istio__Workload__Workload *w, int fam, Istio__Workload__IPFamilies only, uint16_t port,
    struct sockaddr_storage *ss)
{
	const ProtobufCBinaryData *pick = NULL, *first = NULL;

	for (size_t a = 0; a < w->n_addresses && !pick; a++) {
		struct ipkey k;

		bin_to_key(&w->addresses[a], "", &k);
		if ((only == ISTIO__WORKLOAD__IPFAMILIES__IPV4_ONLY && k.family != AF_INET) ||
		    (only == ISTIO__WORKLOAD__IPFAMILIES__IPV6_ONLY && k.family != AF_INET6))
			continue;
		if (!first)
			first = &w->addresses[a];
		if (fam == AF_UNSPEC || k.family == fam)
			pick = &w->addresses[a];
	}
	if (!pick)
		pick = first;
	if (!pick)
		return false;
	memset(ss, 0, sizeof(*ss));
	{
		struct ipkey k;

		bin_to_key(pick, "", &k);
		if (k.family == AF_INET) {
			struct sockaddr_in *s4 = (void *)ss;

			s4->sin_family = AF_INET;
			memcpy(&s4->sin_addr, k.a, 4);
			s4->sin_port = htons(port);
		} else {
			struct sockaddr_in6 *s6 = (void *)ss;

			s6->sin6_family = AF_INET6;
			memcpy(&s6->sin6_addr, k.a, 16);
			s6->sin6_port = htons(port);
		}
	}
	return true;
}

/* The port a workload serves service port sp on (ztunnel's order: its own
 * PortList entry, else the service's target port), or 0: not an endpoint
 * of that port (ztunnel filters such an endpoint out). */
static uint16_t
ep_port(const Istio__Workload__PortList *pl, const Istio__Workload__Port *sp)
{
	if (pl)
		for (size_t k = 0; k < pl->n_ports; k++)
			if (pl->ports[k]->service_port == sp->service_port && pl->ports[k]->target_port)
				return (uint16_t)pl->ports[k]->target_port;
	return (uint16_t)sp->target_port;
}

/* Members from every workload's services map entries that name a service,
 * grouped by service (counting sort), in uid order within one (m->mem,
 * m->mfirst). */
static int
scan_members(struct model *m)
{
	size_t *fill = NULL, nent = 0;
	int64_t *esi = NULL;
	int rc = -ENOMEM;

	for (size_t j = 0; j < m->nwls; j++)
		nent += wl_msg(&m->wls[j])->n_services;
	if (!(fill = calloc(m->nsvcs + 1, sizeof(*fill))) || !(esi = malloc((nent ? nent : 1) * sizeof(*esi))))
		goto out;
	for (int pass = 0; pass < 2; pass++) {
		size_t ent = 0;

		for (size_t j = 0; j < m->nwls; j++) {
			const Istio__Workload__Workload *w = wl_msg(&m->wls[j]);

			for (size_t k = 0; k < w->n_services; k++) {
				/* One lookup per entry: the second pass reads the first's. */
				int64_t si = pass == 0 ? (esi[ent] = svc_find(m, S(w->services[k]->key))) : esi[ent];

				ent++;
				if (si < 0)
					continue;
				if (pass == 0)
					m->mfirst[si + 1]++;
				else
					m->mem[m->mfirst[si] + fill[si]++] = (struct member){ (uint32_t)j, w->services[k]->value };
			}
		}
		if (pass == 0) {
			for (size_t s = 0; s < m->nsvcs; s++)
				m->mfirst[s + 1] += m->mfirst[s];
			if (!(m->mem = mcalloc(m, m->mfirst[m->nsvcs], sizeof(*m->mem))))
				goto out;
		}
	}
	rc = 0;
out:
	free(fill);
	free(esi);
	return rc;
}

/* A member entry of a workload that is not prev's, while merging. */
struct fresh_ent {
	uint32_t svc, wl, k;
	const Istio__Workload__PortList *pl;
};

static int
cmp_fresh(const void *a, const void *b)
{
	const struct fresh_ent *x = a, *y = b;

	if (x->svc != y->svc)
		return x->svc < y->svc ? -1 : 1;
	if (x->wl != y->wl)
		return x->wl < y->wl ? -1 : 1;
	return x->k < y->k ? -1 : x->k > y->k;
}

/* The members as scan_members() finds them, from prev's (psvc: each
 * service's in prev; prev's workloads still here through b->wlmap, in the
 * same order) and the entries of the workloads that are not prev's: only
 * their messages are read. */
static int
merge_members(struct model *m, const struct build *b, const int64_t *psvc)
{
	const struct model *prev = b->prev;
	struct fresh_ent *fr = NULL;
	size_t nfr = 0, cap = 0, total = 0, o = 0;
	int rc = -ENOMEM;

	for (size_t j = 0; j < m->nwls; j++) {
		const Istio__Workload__Workload *w;

		if (!b->wlfresh[j])
			continue;
		w = wl_msg(&m->wls[j]);
		for (size_t e = 0; e < w->n_services; e++) {
			int64_t si = svc_find(m, S(w->services[e]->key));

			if (si < 0)
				continue;
			if (nfr == cap) {
				void *np = realloc(fr, (cap = cap ? 2 * cap : 16) * sizeof(*fr));

				if (!np)
					goto out;
				fr = np;
			}
			fr[nfr++] = (struct fresh_ent){ (uint32_t)si, (uint32_t)j, (uint32_t)e, w->services[e]->value };
		}
	}
	if (nfr)
		qsort(fr, nfr, sizeof(*fr), cmp_fresh);
	for (size_t s = 0; s < m->nsvcs; s++)
		total += prev->mfirst[psvc[s] + 1] - prev->mfirst[psvc[s]];
	if (!(m->mem = mcalloc(m, total + nfr, sizeof(*m->mem))))
		goto out;
	for (size_t s = 0, f = 0; s < m->nsvcs; s++) {
		size_t pe = prev->mfirst[psvc[s]], pend = prev->mfirst[psvc[s] + 1];

		m->mfirst[s] = o;
		for (;;) {
			uint32_t pw = UINT32_MAX;

			/* prev's members that are still here, in their new order */
			while (pe < pend && (pw = b->wlmap[prev->mem[pe].wl]) == UINT32_MAX)
				pe++;
			if (pe >= pend)
				pw = UINT32_MAX;
			if (f < nfr && fr[f].svc == s && (pw == UINT32_MAX || fr[f].wl < pw)) {
				m->mem[o++] = (struct member){ fr[f].wl, fr[f].pl };
				f++;
			} else if (pw != UINT32_MAX) {
				m->mem[o++] = (struct member){ pw, prev->mem[pe].pl };
				pe++;
			} else
				break;
		}
	}
	m->mfirst[m->nsvcs] = o;
	rc = 0;
out:
	free(fr);
	return rc;
}

static int
build_services(struct model *m, struct build *b)
{
	const struct model *prev = b->reuse ? b->prev : NULL;
	int64_t *psvc = NULL;		/* per service: prev's service of its name, or -1 */
	bool *clean = NULL;		/* per service: its ports and endpoints are prev's */
	bool merge = prev != NULL;
	const struct mres *const *res = (const struct mres *const *)m->res[MRES_ADDRESS];
	size_t n = m->nres[MRES_ADDRESS], nports = 0, nvips = 0, neps = 0;
	size_t *first = NULL;
	struct member *mem = NULL;
	int rc = -ENOMEM;

	for (size_t i = 0; i < n; i++)
		if (!b->iswl[i] && is_service(res[i])) {
			const Istio__Workload__Service *s = ((const Istio__Workload__Address *)res[i]->msg)->service;
			bool v4 = false, v6 = false;

			for (size_t a = 0; a < s->n_addresses; a++) {
				int fam = vip_family(s->addresses[a]);

				v4 |= fam == AF_INET;
				v6 |= fam == AF_INET6;
			}
			m->nsvcs++;
			nports += s->n_ports * (v4 && v6 ? 2 : 1);
			nvips += s->n_addresses * (s->n_ports + 1);	/* + the VIP itself */
		}
	if (!(m->svcs = mcalloc(m, m->nsvcs, sizeof(*m->svcs))) ||
	    !(m->ports = mcalloc(m, nports, sizeof(*m->ports))) ||
	    !(m->vips = mcalloc(m, nvips, sizeof(*m->vips))) || otab_init(&m->svckey, m->nsvcs) < 0 ||
	    otab_init(&m->vip, nvips) < 0)
		goto out;
	m->bytes += otab_bytes(&m->svckey) + otab_bytes(&m->vip);
	for (size_t i = 0, j = 0; i < n; i++) {
		const Istio__Workload__Service *s;
		const Istio__Workload__LoadBalancing *lb;
		struct mservice *x;

		if (b->iswl[i] || !is_service(res[i]))
			continue;
		s = ((const Istio__Workload__Address *)res[i]->msg)->service;
		lb = s->load_balancing;
		m->aix[i] = (uint32_t)j | AIX_SVC;
		x = &m->svcs[j++];
		x->res = res[i];
		x->name = S(s->name);
		x->ns = S(s->namespace_);
		x->hostname = S(s->hostname);
		x->key = res[i]->name;
		x->sans = (const char *const *)s->subject_alt_names;
		x->nsans = s->n_subject_alt_names;
		x->lb_mode = MLB_ROUND_ROBIN;
		if (lb) {
			switch (lb->mode) {
			case ISTIO__WORKLOAD__LOAD_BALANCING__MODE__STRICT:
				x->lb_mode = MLB_STRICT;
				break;
			case ISTIO__WORKLOAD__LOAD_BALANCING__MODE__FAILOVER:
				x->lb_mode = MLB_FAILOVER;
				break;
			case ISTIO__WORKLOAD__LOAD_BALANCING__MODE__PASSTHROUGH:
				x->lb_mode = MLB_PASSTHROUGH;
				break;
			default:
				break;
			}
			/* ztunnel ranks by routing_preference only in a mode
			 * other than UNSPECIFIED (its "Standard": every
			 * endpoint alike), so round robin carries no scopes. */
			if (x->lb_mode == MLB_STRICT || x->lb_mode == MLB_FAILOVER) {
				x->lb_scopes = (const int *)lb->routing_preference;
				x->nlb_scopes = lb->n_routing_preference;
			}
		}
	}
	/* Names are "namespace/hostname", the key: already in key order. */
	for (size_t j = 0; j < m->nsvcs; j++)
		otab_put(&m->svckey, m->svcs[j].res->hash, (uint32_t)j);	/* names are unique */

	/* prev's service of each one's name: its members can be merged from
	 * prev's when every service is one prev had (a new one may be named by
	 * workloads prev had, which only their messages tell). */
	if (!(psvc = calloc(m->nsvcs + 1, sizeof(*psvc))) || !(clean = calloc(m->nsvcs + 1, sizeof(*clean))))
		goto out;
	for (size_t i = 0; i < n; i++) {
		int64_t k;

		if (b->iswl[i] || !(m->aix[i] & AIX_SVC))
			continue;
		k = prev ? b->ppos[MRES_ADDRESS][i] : -1;
		if (k >= 0 && (prev->aix[k] & AIX_SVC))
			psvc[m->aix[i] & ~AIX_SVC] = prev->aix[k] & ~AIX_SVC;
		else {
			psvc[m->aix[i] & ~AIX_SVC] = -1;
			merge = false;
		}
	}
	if (!(m->mfirst = mcalloc(m, m->nsvcs + 1, sizeof(*m->mfirst))))
		goto out;
	if (merge ? merge_members(m, b, psvc) < 0 : scan_members(m) < 0)
		goto out;
	mem = m->mem;
	first = m->mfirst;

	/* A service whose resource, members (the same workloads, the same
	 * PortLists) and network are prev's has prev's ports and endpoints. */
	if (prev && strcmp(m->network, prev->network) == 0)
		for (size_t j = 0; j < m->nsvcs; j++) {
			int64_t ps = psvc[j];
			size_t pn;

			if (ps < 0 || prev->svcs[ps].res != m->svcs[j].res)
				continue;
			pn = prev->mfirst[ps + 1] - prev->mfirst[ps];
			if (pn != first[j + 1] - first[j])
				continue;
			clean[j] = true;
			for (size_t e = 0; e < pn && clean[j]; e++) {
				const struct member *a = &mem[first[j] + e], *p = &prev->mem[prev->mfirst[ps] + e];

				clean[j] = a->pl == p->pl && m->wls[a->wl].res == prev->wls[p->wl].res;
			}
		}

	/* Ports: one per service port and VIP family (a dual-stack service has
	 * a v4 and a v6 one, so an endpoint's address matches its VIP's
	 * family); a headless service has one per port, of no family. */
	for (int pass = 0; pass < 2; pass++) {
		size_t pi = 0, ei = 0;

		for (size_t j = 0; j < m->nsvcs; j++) {
			struct mservice *x = &m->svcs[j];
			const Istio__Workload__Service *s;
			const Istio__Workload__LoadBalancing *lb;
			bool allow_all, v4 = false, v6 = false;
			int fams[2], nf = 0;

			if (clean[j]) {
				const struct mservice *px = &prev->svcs[psvc[j]];

				if (pass == 1) {
					x->ports = &m->ports[pi];
					x->nports = px->nports;
				}
				for (size_t p = 0; p < px->nports; p++) {
					const struct msvc_port *pp = &px->ports[p];

					if (pass == 1) {
						struct msvc_port *mp = &m->ports[pi];

						*mp = *pp;
						mp->svc = x;
						mp->id = (uint32_t)pi;
						mp->eps = &m->eps[ei];
						for (size_t e = 0; e < pp->neps; e++) {
							mp->eps[e] = pp->eps[e];
							mp->eps[e].wl = &m->wls[b->wlmap[pp->eps[e].wl - prev->wls]];
						}
					}
					ei += pp->neps;
					pi++;
				}
				continue;
			}
			s = svc_msg(x);
			lb = s->load_balancing;
			allow_all = lb && lb->health_policy == ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ALLOW_ALL;
			for (size_t a = 0; a < s->n_addresses; a++) {
				int fam = vip_family(s->addresses[a]);

				v4 |= fam == AF_INET;
				v6 |= fam == AF_INET6;
			}
			if (v4)
				fams[nf++] = AF_INET;
			if (v6)
				fams[nf++] = AF_INET6;
			if (!nf)
				fams[nf++] = AF_UNSPEC;
			if (pass == 1) {
				x->ports = &m->ports[pi];
				x->nports = s->n_ports * (size_t)nf;
			}
			for (int f = 0; f < nf; f++)
				for (size_t p = 0; p < s->n_ports; p++) {
					const Istio__Workload__Port *sp = s->ports[p];
					struct msvc_port *mp = &m->ports[pi];

					if (pass == 1) {
						mp->svc = x;
						mp->id = (uint32_t)pi;
						mp->port = (uint16_t)sp->service_port;
						mp->target_port = (uint16_t)sp->target_port;
						mp->family = (sa_family_t)fams[f];
						mp->eps = &m->eps[ei];
					}
					for (size_t e = first[j]; e < first[j + 1]; e++) {
						const struct mworkload *w = &m->wls[mem[e].wl];
						uint16_t port = ep_port(mem[e].pl, sp);
						struct sockaddr_storage ss;

						/* Another network's address means nothing
						 * here (it may be a local pod's): ztunnel
						 * reaches such a member only through its
						 * network gateway (HBONE), so until then it
						 * is no endpoint. */
						if (!port || (!w->healthy && !allow_all) || strcmp(w->network, m->network) != 0 ||
						    !ep_addr(wl_msg(w), fams[f], s->ip_families, port, &ss))
							continue;
						if (pass == 1) {
							struct mendpoint *me = &m->eps[ei];

							me->wl = w;
							me->port = port;
							memcpy(&me->addr, &ss, sizeof(me->addr));
							mp->neps++;
						}
						ei++;
					}
					pi++;
				}
		}
		if (pass == 0) {
			neps = ei;
			m->nports = pi;
			if (!(m->eps = mcalloc(m, neps, sizeof(*m->eps))))
				goto out;
		} else
			m->neps = ei;
	}

	/* Every service prev's (the same resource), in prev's places: so are
	 * the ports' places, the VIP entries and their table, whatever the
	 * endpoints (the service messages are not read again). */
	{
		bool all = prev && m->nsvcs == prev->nsvcs && m->nports == prev->nports && prev->vip.slot &&
		    m->vip.mask == prev->vip.mask;

		for (size_t j = 0; all && j < m->nsvcs; j++)
			all = psvc[j] == (int64_t)j && m->svcs[j].res == prev->svcs[j].res;
		if (all) {
			memcpy(m->vips, prev->vips, prev->nvips * sizeof(*m->vips));
			m->nvips = prev->nvips;
			memcpy(m->vip.slot, prev->vip.slot, otab_bytes(&m->vip));
			rc = 0;
			goto out;
		}
	}
	/* VIP:port -> service port of the VIP's family. decide() left no
	 * VIP:port to two services; one service listing a VIP twice is
	 * indexed once. */
	for (size_t pi = 0; pi < m->nports; pi++) {
		const struct msvc_port *mp = &m->ports[pi];
		const Istio__Workload__Service *s = svc_msg(mp->svc);

		for (size_t a = 0; a < s->n_addresses; a++) {
			struct ipkey k;
			uint32_t at;

			if (vip_family(s->addresses[a]) == AF_UNSPEC)
				continue;
			bin_to_key(&s->addresses[a]->address, s->addresses[a]->network, &k);
			if (k.family != mp->family)
				continue;
			k.port = mp->port;
			m->vips[m->nvips] = (struct vipref){ (uint32_t)(mp->svc - m->svcs), (uint32_t)pi, (uint32_t)a };
			if (ip_find(m, &m->vip, true, &k, &at) >= 0)
				continue;
			m->vip.slot[at] = (uint32_t)++m->nvips;
		}
	}
	/* Each VIP by itself (port 0 in the key; no service port is 0): the
	 * first service listing it owns it. */
	for (size_t si = 0; si < m->nsvcs; si++) {
		const Istio__Workload__Service *s = svc_msg(&m->svcs[si]);

		for (size_t a = 0; a < s->n_addresses; a++) {
			struct ipkey k;
			uint32_t at;

			if (vip_family(s->addresses[a]) == AF_UNSPEC)
				continue;
			bin_to_key(&s->addresses[a]->address, s->addresses[a]->network, &k);
			m->vips[m->nvips] = (struct vipref){ (uint32_t)si, VIP_ANY, (uint32_t)a };
			if (ip_find(m, &m->vip, true, &k, &at) >= 0)
				continue;
			m->vip.slot[at] = (uint32_t)++m->nvips;
		}
	}
	rc = 0;
out:
	free(psvc);
	free(clean);
	return rc;
}

struct model *
model_ref(struct model *m)
{
	__atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
	return m;
}

void
model_free(struct model *m)
{
	if (!m || __atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (int t = 0; t < MRES__COUNT; t++) {
		for (size_t i = 0; i < m->nres[t]; i++)
			mres_unref(m->res[t][i]);
		free(m->res[t]);
		free(m->byname[t].slot);
	}
	free(m->wls);
	free(m->wladdrs);
	free(m->wlfirst);
	free(m->aix);
	free(m->mem);
	free(m->mfirst);
	free(m->wlip.slot);
	free(m->svcs);
	free(m->svckey.slot);
	free(m->ports);
	free(m->vips);
	free(m->vip.slot);
	free(m->eps);
	free(m->strs);
	meds_free(m->eds);
	free(m->network);
	free(m);
}

struct model *
model_empty(void)
{
	struct model *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->refs = 1;
	if (!(m->network = strdup(""))) {
		free(m);
		return NULL;
	}
	m->bytes = sizeof(*m);
	return m;
}

/* The JSON path of the field a resource takes its name from. */
static const char *
name_field(const struct mres *r)
{
	switch (r->type) {
	case MRES_ADDRESS:
		return is_workload(r) ? "workload.uid" : is_service(r) ? "service.hostname" : "@type";
	case MRES_ENDPOINTS:
		return "clusterName";
	case MRES_PEER_AUTHENTICATION:
		return "@type";
	default:
		return "name";
	}
}

/* Puts the candidates of type t into m->res[t] in name order (references
 * taken) and their places in prev into b->ppos[t]. The names prev had keep
 * prev's order: only the new ones are sorted and merged in (a sort of all
 * 12,000 names was a tenth of a build that changed one). */
static int
place(struct build *b, struct model *m, enum mres_type t, size_t count)
{
	const struct model *prev = b->reuse ? b->prev : NULL;
	size_t np = prev ? prev->nres[t] : 0, nfresh = 0, j = 0;
	struct mres **taken = NULL, **fresh = NULL;
	int rc = -ENOMEM;

	if (!(m->res[t] = mcalloc(m, count, sizeof(*m->res[t]))) ||
	    !(b->ppos[t] = malloc((count ? count : 1) * sizeof(*b->ppos[t]))) ||
	    !(taken = calloc(np ? np : 1, sizeof(*taken))) || !(fresh = malloc((count ? count : 1) * sizeof(*fresh))))
		goto out;
	for (size_t i = 0; i < b->n; i++) {
		struct mres *c = b->cand[i];

		if (!c || c->type != t)
			continue;
		/* A candidate's name is its input's (prev's version kept has
		 * it too), and names are unique by now. */
		if (prev && b->pk[i] >= 0)
			taken[b->pk[i]] = c;
		else
			fresh[nfresh++] = c;
	}
	if (nfresh)
		qsort(fresh, nfresh, sizeof(*fresh), cmp_mres_name);
	for (size_t k = 0; k <= np; k++) {
		while (j < nfresh && (k == np || strcmp(fresh[j]->name, prev->res[t][k]->name) < 0)) {
			b->ppos[t][m->nres[t]] = -1;
			m->res[t][m->nres[t]++] = mres_ref(fresh[j++]);
		}
		if (k < np && taken[k]) {
			b->ppos[t][m->nres[t]] = (int64_t)k;
			m->res[t][m->nres[t]++] = mres_ref(taken[k]);
		}
	}
	rc = 0;
out:
	free(taken);
	free(fresh);
	return rc;
}

/* Whether m->res[t] has prev's names at prev's places (only their
 * versions may differ). */
static bool
same_names(const struct build *b, const struct model *m, enum mres_type t)
{
	if (!b->reuse || m->nres[t] != b->prev->nres[t] || !m->nres[t] ||
	    b->prev->byname[t].mask != m->byname[t].mask)
		return false;
	for (size_t i = 0; i < m->nres[t]; i++)
		if (b->ppos[t][i] != (int64_t)i)
			return false;
	return true;
}

static void
build_free(struct build *b)
{
	free(b->cand);
	free(b->problem);
	free(b->pk);
	free(b->wlmap);
	free(b->wlfresh);
	free(b->iswl);
	for (int t = 0; t < MRES__COUNT; t++)
		free(b->ppos[t]);
}

struct model *
model_build(const struct model_input *in, size_t n, const struct model *prev,
    const struct model_opts *opts, struct model_report *rep)
{
	struct build b = { .in = in, .n = n, .prev = prev, .opts = opts, .rep = rep };
	size_t count[MRES__COUNT] = { 0 };
	struct model *m = NULL;
	int rc;

	if (rep) {
		rep->problems = NULL;
		rep->nproblems = 0;
	}
	if (!(b.cand = calloc(n ? n : 1, sizeof(*b.cand))) || !(b.problem = malloc((n ? n : 1) * sizeof(*b.problem))))
		goto fail;
	if (!(b.pk = malloc((n ? n : 1) * sizeof(*b.pk))))
		goto fail;
	for (size_t i = 0; i < n; i++) {
		b.problem[i] = -1;
		b.pk[i] = -1;
	}
	b.reuse = prev && !(opts && opts->no_reuse);
	if ((rc = b.reuse ? decide_over_prev(&b) : 0) < 0 || (rc == 0 && decide(&b) < 0))
		goto fail;
	if (!(m = calloc(1, sizeof(*m))))
		goto fail;
	m->refs = 1;
	m->bytes = sizeof(*m);
	m->strict_refs = opts && opts->strict_refs;
	if (!(m->network = strdup(opts && opts->network ? opts->network : "")))
		goto fail;
	for (size_t i = 0; i < n; i++)
		if (b.cand[i])
			count[b.cand[i]->type]++;
	for (int t = 0; t < MRES__COUNT; t++) {
		if (place(&b, m, (enum mres_type)t, count[t]) < 0)
			goto fail;
		if (otab_init(&m->byname[t], m->nres[t]) < 0)
			goto fail;
		m->bytes += otab_bytes(&m->byname[t]);
		if (same_names(&b, m, (enum mres_type)t))
			/* Every name at prev's place: prev's table is this one. */
			memcpy(m->byname[t].slot, b.prev->byname[t].slot, otab_bytes(&m->byname[t]));
		else
			for (size_t i = 0; i < m->nres[t]; i++)
				otab_put(&m->byname[t], m->res[t][i]->hash, (uint32_t)i);	/* names are unique */
	}
	if (build_workloads(m, &b) < 0 || build_services(m, &b) < 0 ||
	    meds_build(m->res[MRES_ENDPOINTS], m->nres[MRES_ENDPOINTS], &m->eds, &m->bytes) < 0)
		goto fail;
	build_free(&b);
	return m;
fail:
	model_free(m);
	build_free(&b);
	return NULL;
}

/* ---- Lookups ---- */

const struct mworkload *
model_workload_at(const struct model *m, const struct sockaddr_storage *a)
{
	struct ipkey k;
	int64_t i;

	if (!m || !m->wlip.slot || !sa_to_key(a, m->network, &k))
		return NULL;
	k.port = 0;
	i = ip_find(m, &m->wlip, false, &k, NULL);
	return i < 0 ? NULL : &m->wls[m->wladdrs[i].wl];
}

/* The vips entry of VIP a at a's port, or (any) of the VIP itself; -1 if none. */
static int64_t
vip_at(const struct model *m, const struct sockaddr_storage *a, bool any)
{
	struct ipkey k;

	if (!m || !m->vip.slot || !sa_to_key(a, m->network, &k))
		return -1;
	if (any)
		k.port = 0;
	else if (!k.port)
		return -1;
	return ip_find(m, &m->vip, true, &k, NULL);
}

const struct msvc_port *
model_service_at(const struct model *m, const struct sockaddr_storage *a)
{
	int64_t i = vip_at(m, a, false);

	return i < 0 ? NULL : &m->ports[m->vips[i].port];
}

const struct mservice *
model_service_vip(const struct model *m, const struct sockaddr_storage *a)
{
	int64_t i = vip_at(m, a, true);

	return i < 0 ? NULL : &m->svcs[m->vips[i].svc];
}

const struct mservice *
model_service(const struct model *m, const char *key)
{
	int64_t i;

	if (!m || !key)
		return NULL;
	i = svc_find(m, key);
	return i < 0 ? NULL : &m->svcs[i];
}

/* A service's endpoint as a waypoint pod: the pick-th of its first port's
 * with any. -ENOENT when it has none. */
static int
waypoint_of_service(const struct mservice *s, unsigned pick, uint16_t port, struct mwaypoint *out)
{
	for (size_t i = 0; i < s->nports; i++) {
		const struct msvc_port *sp = &s->ports[i];
		const struct mendpoint *ep;

		if (!sp->neps)
			continue;
		ep = &sp->eps[pick % sp->neps];
		memset(&out->addr, 0, sizeof(out->addr));
		memcpy(&out->addr, &ep->addr, ep->addr.sa.sa_family == AF_INET6 ? sizeof(ep->addr.in6) :
		    sizeof(ep->addr.in4));
		if (out->addr.ss_family == AF_INET6)
			((struct sockaddr_in6 *)&out->addr)->sin6_port = htons(port);
		else
			((struct sockaddr_in *)&out->addr)->sin_port = htons(port);
		out->wl = ep->wl;
		out->svc = s;
		return 1;
	}
	return -ENOENT;
}

int
model_waypoint(const struct model *m, const struct mservice *s, const struct mworkload *wl, unsigned pick,
    struct mwaypoint *out)
{
	const Istio__Workload__GatewayAddress *g = NULL;
	const Istio__Workload__NetworkAddress *na;
	const struct mservice *ws;
	uint16_t port;
	char key[512];

	if (s)
		g = svc_msg(s)->waypoint;
	else if (wl)
		g = wl_msg(wl)->waypoint;
	if (!g || g->destination_case == ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION__NOT_SET)
		return 0;
	port = g->hbone_mtls_port ? (uint16_t)g->hbone_mtls_port : 15008;
	memset(out, 0, sizeof(*out));
	if (g->destination_case == ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME) {
		if (!g->hostname || (size_t)snprintf(key, sizeof(key), "%s/%s", S(g->hostname->namespace_),
		    S(g->hostname->hostname)) >= sizeof(key) || !(ws = model_service(m, key)))
			return -ENOENT;
		return waypoint_of_service(ws, pick, port, out);
	}
	na = g->address;
	if (!na || (na->address.len != 4 && na->address.len != 16))
		return -ENOENT;
	if (na->address.len == 4) {
		struct sockaddr_in *a = (struct sockaddr_in *)&out->addr;

		a->sin_family = AF_INET;
		memcpy(&a->sin_addr, na->address.data, 4);
		a->sin_port = htons(port);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out->addr;

		a->sin6_family = AF_INET6;
		memcpy(&a->sin6_addr, na->address.data, 16);
		a->sin6_port = htons(port);
	}
	if ((out->wl = model_workload_at(m, &out->addr)))
		return 1;
	if ((ws = model_service_vip(m, &out->addr)))
		return waypoint_of_service(ws, pick, port, out);
	return -ENOENT;
}

static const struct mres *
by_name(const struct model *m, enum mres_type t, const char *name)
{
	int64_t i;

	if (!m || !name)
		return NULL;
	i = res_find(m, t, name, NULL);
	return i < 0 ? NULL : m->res[t][i];
}

const struct mres *
model_cluster(const struct model *m, const char *name)
{
	return by_name(m, MRES_CLUSTER, name);
}

const struct mres *
model_endpoints(const struct model *m, const char *cluster_name)
{
	return by_name(m, MRES_ENDPOINTS, cluster_name);
}

const struct mres *
model_find(const struct model *m, enum mres_type t, const char *name)
{
	return (unsigned)t < MRES__COUNT ? by_name(m, t, name) : NULL;
}

bool
model_eds_at(const struct model *m, const struct sockaddr_storage *a, struct meds_hit *hit)
{
	return m && meds_find(m->eds, a, hit);
}

bool
model_peer_mtls(const struct model *m, const struct sockaddr_storage *dst, const struct mworkload *peer,
    const char **cluster)
{
	struct meds_hit h;
	bool eds = model_eds_at(m, dst, &h);

	*cluster = eds ? h.cluster : NULL;
	return (peer && peer->tunnel == MTUN_ISTIO_MTLS) || (eds && h.istio);
}

enum mpeer_transport
model_peer_transport(const struct model *m, const struct sockaddr_storage *dst, const struct mworkload *peer,
    const char **cluster)
{
	struct meds_hit h;
	bool eds = model_eds_at(m, dst, &h);

	*cluster = eds ? h.cluster : NULL;
	if ((peer && peer->tunnel == MTUN_HBONE) || (eds && h.hbone))
		return MPEER_HBONE;
	if ((peer && peer->tunnel == MTUN_ISTIO_MTLS) || (eds && h.istio))
		return MPEER_MTLS;
	return MPEER_PLAIN;
}

int
model_cluster_name(char *out, size_t len, const struct mservice *s, uint16_t port)
{
	return snprintf(out, len, "outbound|%u||%s", (unsigned)port, s->hostname);
}

uint32_t
model_nports(const struct model *m)
{
	return m ? (uint32_t)m->nports : 0;
}

size_t
model_count(const struct model *m, enum mres_type t)
{
	return m && (unsigned)t < MRES__COUNT ? m->nres[t] : 0;
}

const struct mres *
model_resource(const struct model *m, enum mres_type t, size_t i)
{
	return m && (unsigned)t < MRES__COUNT && i < m->nres[t] ? m->res[t][i] : NULL;
}

void
model_sizes(const struct model *m, struct model_sizes *sz)
{
	memset(sz, 0, sizeof(*sz));
	if (!m)
		return;
	sz->workloads = m->nwls;
	sz->workload_addresses = m->nwladdrs;
	sz->services = m->nsvcs;
	sz->service_vips = 0;
	for (size_t i = 0; i < m->nvips; i++)
		sz->service_vips += m->vips[i].port != VIP_ANY;	/* VIP:port entries */
	sz->endpoints = m->neps;
	sz->clusters = m->nres[MRES_CLUSTER];
	sz->eds_endpoints = meds_count(m->eds);
	sz->bytes = m->bytes;
}
