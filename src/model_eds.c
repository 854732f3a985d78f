/* model_eds: EDS endpoint addresses -> {cluster, Istio mTLS, HBONE}, for the
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
	uint8_t istio : 1;		/* tlsMode "istio" */
	uint8_t hbone : 1;		/* tunnel "http" */
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

/* A key of a Metadata's filter_metadata["envoy.transport_socket_match"]:
 * 1 it is the string want, 0 another value or none there, -1 no such key
 * (so that the locality's metadata may decide, as Envoy's transport socket
 * matcher looks at the endpoint's metadata first, then its locality's).
 * Envoy compares Struct values: only the string matches. tlsMode "istio"
 * is Istio mTLS, tunnel "http" is HBONE (reference xds-hbone.md §3.6). */
static int
socket_match(const Envoy__Config__Core__V3__Metadata *md, const char *key, const char *want)
{
	if (!md)
		return -1;
	for (size_t i = 0; i < md->n_filter_metadata; i++) {
		const Google__Protobuf__Struct *st = md->filter_metadata[i]->value;

		if (strcmp(S(md->filter_metadata[i]->key), "envoy.transport_socket_match") != 0 || !st)
			continue;
		for (size_t k = 0; k < st->n_fields; k++) {
			const Google__Protobuf__Value *v = st->fields[k]->value;

			if (strcmp(S(st->fields[k]->key), key) != 0)
				continue;
			return v && v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE &&
			    strcmp(S(v->string_value), want) == 0;
		}
	}
	return -1;
}

/* The string at filter_metadata[ns][key], or NULL. */
static const char *
md_string(const Envoy__Config__Core__V3__Metadata *md, const char *ns, const char *key)
{
	for (size_t i = 0; md && i < md->n_filter_metadata; i++) {
		const Google__Protobuf__Struct *st = md->filter_metadata[i]->value;

		if (strcmp(S(md->filter_metadata[i]->key), ns) != 0 || !st)
			continue;
		for (size_t k = 0; k < st->n_fields; k++) {
			const Google__Protobuf__Value *v = st->fields[k]->value;

			if (strcmp(S(st->fields[k]->key), key) == 0 && v &&
			    v->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE)
				return v->string_value;
		}
	}
	return NULL;
}

/* Whether a cluster name is Istio's default subset, "outbound|port||host"
 * (a subset cluster "outbound|port|v1|host" lists the same pods). */
static bool
default_subset(const char *name)
{
	const char *p = strchr(name, '|');

	return p && (p = strchr(p + 1, '|')) && p[1] == '|';
}

/* An address listed by two clusters keeps one entry: HBONE, then Istio mTLS first
 * (istiod marks a pod alike in every cluster, so a difference is a stale
 * resource; a peer that may be STRICT gets mTLS), then the default subset's
 * cluster (the SNI a client of the service sends), then the first by name. */
static bool
better(const struct meds *e, const struct medsent *old, const struct medsent *new)
{
	if (old->hbone != new->hbone)
		return new->hbone;
	if (old->istio != new->istio)
		return new->istio;
	return !default_subset(e->res[old->cla]->name) && default_subset(e->res[new->cla]->name);
}

/* The "ip:port" an HBONE endpoint stands for: an EnvoyInternalAddress
 * (server_listener_name "connect_originate") names its target in
 * endpoint_id, and istiod repeats it in the endpoint's filter_metadata
 * envoy.filters.listener.original_dst.local (reference xds-hbone.md §3.6).
 * 0 with *port and the address in a, or -EINVAL. */
int
meds_target_parse(const char *s, int *family, unsigned char *a, uint16_t *port)
{
	char host[64];
	const char *colon;
	size_t hl;
	char *end;
	unsigned long p;

	if (!s || !(colon = strrchr(s, ':')))
		return -EINVAL;
	hl = (size_t)(colon - s);
	if (*s == '[') {
		if (hl < 3 || s[hl - 1] != ']')
			return -EINVAL;
		s++;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, hl);
	host[hl] = 0;
	errno = 0;
	p = strtoul(colon + 1, &end, 10);
	if (!colon[1] || *end || errno || p == 0 || p > 65535)
		return -EINVAL;
	if (inet_pton(AF_INET, host, a) == 1)
		*family = AF_INET;
	else if (strchr(host, ':') && inet_pton(AF_INET6, host, a) == 1)
		*family = AF_INET6;
	else
		return -EINVAL;
	*port = (uint16_t)p;
	return 0;
}

/* The address an endpoint is indexed by: its socket address, or an
 * internal address's target (meds_target_parse). false: neither. */
static bool
ep_key(const Envoy__Config__Endpoint__V3__LbEndpoint *lb, struct medsent *x)
{
	const Envoy__Config__Core__V3__Address *ad = lb->endpoint->address;
	int family = 0;

	if (ad->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS && ad->socket_address) {
		const Envoy__Config__Core__V3__SocketAddress *sa = ad->socket_address;

		x->port = (uint16_t)sa->port_value;
		if (inet_pton(AF_INET, S(sa->address), x->a) == 1)
			family = AF_INET;
		else if (inet_pton(AF_INET6, S(sa->address), x->a) == 1)
			family = AF_INET6;
		else
			return false;
	} else if (ad->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_ENVOY_INTERNAL_ADDRESS &&
	    ad->envoy_internal_address) {
		const char *id = ad->envoy_internal_address->endpoint_id;

		if (!id || !*id)
			id = md_string(lb->metadata, "envoy.filters.listener.original_dst", "local");
		if (meds_target_parse(id, &family, x->a, &x->port) < 0)
			return false;
	} else
		return false;
	x->family = (uint8_t)family;
	/* ::ffff:a.b.c.d is the IPv4 address, as the model's other keys. */
	if (family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)x->a)) {
		memmove(x->a, x->a + 12, 4);
		memset(x->a + 4, 0, 12);
		x->family = AF_INET;
	}
	return true;
}

static void
add(struct meds *e, uint32_t cla, const Envoy__Config__Endpoint__V3__LbEndpoint *lb, int mode, int hbone)
{
	struct medsent x = { .cla = cla, .istio = mode == 1, .hbone = hbone == 1 };
	uint32_t at;
	int64_t i;

	if (!ep_key(lb, &x))
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
		int lmode = socket_match(le->metadata, "tlsMode", "istio");
		int lhbone = socket_match(le->metadata, "tunnel", "http");

		for (size_t j = 0; j < le->n_lb_endpoints; j++) {
			const Envoy__Config__Endpoint__V3__LbEndpoint *lb = le->lb_endpoints[j];
			int mode, hbone;

			/* The builder checked these (check_cla); named endpoints are skipped there too. */
			if (lb->host_identifier_case != ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT ||
			    !lb->endpoint || !lb->endpoint->address ||
			    (!lb->endpoint->address->socket_address && !lb->endpoint->address->envoy_internal_address))
				continue;
			n++;
			if (!e)
				continue;
			mode = socket_match(lb->metadata, "tlsMode", "istio");
			hbone = socket_match(lb->metadata, "tunnel", "http");
			add(e, cla, lb, mode < 0 ? lmode : mode, hbone < 0 ? lhbone : hbone);
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
	hit->hbone = e->ents[i].hbone;
	return true;
}
