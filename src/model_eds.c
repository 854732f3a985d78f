/* model_eds: EDS endpoint addresses -> {cluster, Istio mTLS}, for the
 * transport choice of an upstream connection (model_eds.h). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model_eds.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"

#define S(s) ((s) ? (s) : "")

/* One indexed endpoint address: 24 bytes, the key and what it maps to. */
struct medsent {
	uint32_t cla;			/* index into res: the cluster's ClusterLoadAssignment */
	uint16_t port;			/* host order */
	uint8_t family;			/* AF_INET, AF_INET6 */
	uint8_t istio;			/* tlsMode "istio" */
	unsigned char a[16];
};

struct meds {
	struct mres *const *res;
	struct medsent *ents;
	size_t nents;
	uint32_t *slot;			/* index + 1 into ents; 0 empty; load <= 1/2 */
	uint32_t mask;
};

static uint32_t
ent_hash(int family, const unsigned char *a, uint16_t port)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < (family == AF_INET ? 4u : 16u); i++) {
		h ^= a[i];
		h *= 0x100000001b3ULL;
	}
	h ^= port;
	h *= 0x100000001b3ULL;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (uint32_t)h;
}

/* The slot of (family, a, port): its entry's index, or -1 and the empty slot in *at. */
static int64_t
ent_find(const struct meds *e, int family, const unsigned char *a, uint16_t port, uint32_t *at)
{
	size_t alen = family == AF_INET ? 4 : 16;

	for (uint32_t i = ent_hash(family, a, port) & e->mask;; i = (i + 1) & e->mask) {
		uint32_t s = e->slot[i];
		const struct medsent *x;

		if (!s) {
			if (at)
				*at = i;
			return -1;
		}
		x = &e->ents[s - 1];
		if (x->family == family && x->port == port && memcmp(x->a, a, alen) == 0)
			return s - 1;
	}
}

/* tlsMode in a Metadata's filter_metadata["envoy.transport_socket_match"]:
 * 1 "istio", 0 another value or none there, -1 no such key (so that the
 * locality's metadata may decide, as Envoy's transport socket matcher
 * looks at the endpoint's metadata first, then its locality's). Envoy
 * compares Struct values: only the string "istio" matches. */
static int
tls_mode(const Envoy__Config__Core__V3__Metadata *md)
{
	if (!md)
		return -1;
	for (size_t i = 0; i < md->n_filter_metadata; i++) {
		const Google__Protobuf__Struct *st = md->filter_metadata[i]->value;

		if (strcmp(S(md->filter_metadata[i]->key), "envoy.transport_socket_match") != 0 || !st)
			continue;
		for (size_t k = 0; k < st->n_fields; k++) {
			const Google__Protobuf__Value *v = st->fields[k]->value;

			if (strcmp(S(st->fields[k]->key), "tlsMode") != 0)
				continue;
			return v && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE &&
			    strcmp(S(v->string_value), "istio") == 0;
		}
	}
	return -1;
}

/* Whether a cluster name is Istio's default subset, "outbound|port||host"
 * (a subset cluster "outbound|port|v1|host" lists the same pods). */
static bool
default_subset(const char *name)
{
	const char *p = strchr(name, '|');

	return p && (p = strchr(p + 1, '|')) && p[1] == '|';
}

/* An address listed by two clusters keeps one entry: Istio mTLS first
 * (istiod marks a pod alike in every cluster, so a difference is a stale
 * resource; a peer that may be STRICT gets mTLS), then the default subset's
 * cluster (the SNI a client of the service sends), then the first by name. */
static bool
better(const struct meds *e, const struct medsent *old, const struct medsent *new)
{
	if (old->istio != new->istio)
		return new->istio;
	return !default_subset(e->res[old->cla]->name) && default_subset(e->res[new->cla]->name);
}

static void
add(struct meds *e, uint32_t cla, const Envoy__Config__Endpoint__V3__LbEndpoint *lb, int mode)
{
	const Envoy__Config__Core__V3__SocketAddress *sa = lb->endpoint->address->socket_address;
	struct medsent x = { .cla = cla, .port = (uint16_t)sa->port_value, .istio = mode == 1 };
	uint32_t at;
	int64_t i;

	if (inet_pton(AF_INET, S(sa->address), x.a) == 1)
		x.family = AF_INET;
	else if (inet_pton(AF_INET6, S(sa->address), x.a) == 1) {
		x.family = AF_INET6;
		/* ::ffff:a.b.c.d is the IPv4 address, as the model's other keys. */
		if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)x.a)) {
			memmove(x.a, x.a + 12, 4);
			memset(x.a + 4, 0, 12);
			x.family = AF_INET;
		}
	} else
		return;
	i = ent_find(e, x.family, x.a, x.port, &at);
	if (i >= 0) {
		if (better(e, &e->ents[i], &x))
			e->ents[i] = x;
		return;
	}
	e->ents[e->nents] = x;
	e->slot[at] = (uint32_t)++e->nents;
}

/* Counts the socket-address endpoints of c (e NULL), or indexes them with their tls mode. */
static size_t
walk(struct meds *e, uint32_t cla, const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *c)
{
	size_t n = 0;

	for (size_t k = 0; k < c->n_endpoints; k++) {
		const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *le = c->endpoints[k];
		int lmode = tls_mode(le->metadata);

		for (size_t j = 0; j < le->n_lb_endpoints; j++) {
			const Envoy__Config__Endpoint__V3__LbEndpoint *lb = le->lb_endpoints[j];
			int mode;

			/* The builder checked these (check_cla); named endpoints are skipped there too. */
			if (lb->host_identifier_case != ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT ||
			    !lb->endpoint || !lb->endpoint->address || !lb->endpoint->address->socket_address)
				continue;
			n++;
			if (!e)
				continue;
			mode = tls_mode(lb->metadata);
			add(e, cla, lb, mode < 0 ? lmode : mode);
		}
	}
	return n;
}

int
meds_build(struct mres *const *res, size_t n, struct meds **out, size_t *bytes)
{
	struct meds *e;
	size_t count = 0, size = 8;

	*out = NULL;
	for (size_t i = 0; i < n; i++)
		count += walk(NULL, 0, (const void *)res[i]->msg);
	if (!count)
		return 0;
	while (size < 2 * count)
		size <<= 1;
	if (size > UINT32_MAX / 2 || !(e = calloc(1, sizeof(*e))))
		return -ENOMEM;
	e->res = res;
	e->mask = (uint32_t)(size - 1);
	if (!(e->ents = calloc(count, sizeof(*e->ents))) || !(e->slot = calloc(size, sizeof(*e->slot)))) {
		meds_free(e);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		walk(e, (uint32_t)i, (const void *)res[i]->msg);
	/* Duplicates left ents longer than nents: their tail is unused, not
	 * worth a realloc (the same pod in subsets is the common case). */
	*bytes += sizeof(*e) + count * sizeof(*e->ents) + size * sizeof(*e->slot);
	*out = e;
	return 0;
}

void
meds_free(struct meds *e)
{
	if (!e)
		return;
	free(e->ents);
	free(e->slot);
	free(e);
}

size_t
meds_count(const struct meds *e)
{
	return e ? e->nents : 0;
}

bool
meds_find(const struct meds *e, const struct sockaddr_storage *a, struct meds_hit *hit)
{
	unsigned char k[16] = { 0 };
	uint16_t port;
	int family;
	int64_t i;

	if (!e || !a)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)a;

		family = AF_INET;
		memcpy(k, &s4->sin_addr, 4);
		port = ntohs(s4->sin_port);
	} else if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)a;

		family = AF_INET6;
		memcpy(k, &s6->sin6_addr, 16);
		port = ntohs(s6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			memmove(k, k + 12, 4);
			memset(k + 4, 0, 12);
			family = AF_INET;
		}
	} else
		return false;
	if ((i = ent_find(e, family, k, port, NULL)) < 0)
		return false;
	hit->cluster = e->res[e->ents[i].cla]->name;
	hit->istio = e->ents[i].istio;
	return true;
}
