/* Fuzz target: the snapshot builder of src/model.c on whatever resources
 * the JSON decoder produces. The input is {"resources": [...]}: each element
 * is decoded with jpb_decode_any (as the static loader does), wrapped with
 * mres_new and built into models, each with the one before as prev (the
 * first half, the second half, all reversed with lax references and another
 * network, all), and looked up.
 * Whatever the input: no crash, every problem names an input's path, every
 * indexed address and VIP is found again, every endpoint has a workload and a
 * port, every EDS endpoint address is found in the EDS index under a cluster
 * that lists it (and counts no more than there are; an HBONE endpoint's
 * EnvoyInternalAddress by its endpoint_id), and counts add up. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_pb.h"
#include "model.h"
#include "model_eds.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "istio/workload/workload.pb-c.h"

#define MAX_RES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(const struct model *m, const struct model_input *in, size_t n, const struct model_report *rep,
    const char *network)
{
	size_t total = 0;

	for (size_t i = 0; i < rep->nproblems; i++) {
		const struct model_problem *p = &rep->problems[i];
		bool found = false;

		for (size_t k = 0; k < n; k++)
			found |= p->path == in[k].path;
		if (!found || !p->msg[0])
			__builtin_trap();
	}
	for (int t = 0; t < MRES__COUNT; t++) {
		size_t c = model_count(m, (enum mres_type)t);

		total += c;
		for (size_t i = 0; i < c; i++) {
			const struct mres *r = model_resource(m, (enum mres_type)t, i);

			if (!r || r->type != (enum mres_type)t || model_find(m, r->type, r->name) != r)
				__builtin_trap();
			if (i && strcmp(model_resource(m, (enum mres_type)t, i - 1)->name, r->name) >= 0)
				__builtin_trap();
		}
	}
	if (total > n)
		__builtin_trap();
	/* Every EDS endpoint address: found, under a cluster that exists. */
	size_t neds = 0;
	for (size_t i = 0; i < model_count(m, MRES_ENDPOINTS); i++) {
		const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *c =
		    (const void *)model_resource(m, MRES_ENDPOINTS, i)->msg;

		for (size_t k = 0; k < c->n_endpoints; k++)
			for (size_t j = 0; j < c->endpoints[k]->n_lb_endpoints; j++) {
				const Envoy__Config__Endpoint__V3__LbEndpoint *lb = c->endpoints[k]->lb_endpoints[j];
				const Envoy__Config__Core__V3__SocketAddress *sa;
				struct sockaddr_storage ss = { 0 };
				struct meds_hit h;

				if (lb->host_identifier_case != ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT)
					continue;
				if (lb->endpoint->address->envoy_internal_address) {
					/* HBONE's form: indexed by its endpoint_id "ip:port" (or,
					 * without one, maybe by original_dst "local"). */
					const char *id = lb->endpoint->address->envoy_internal_address->endpoint_id;
					unsigned char ip[16];
					uint16_t port;
					int fam;

					neds++;
					if (!id || !*id)
						continue;
					if (meds_target_parse(id, &fam, ip, &port) < 0)
						__builtin_trap();	/* validation let it through */
					ss.ss_family = (sa_family_t)fam;
					if (fam == AF_INET) {
						memcpy(&((struct sockaddr_in *)&ss)->sin_addr, ip, 4);
						((struct sockaddr_in *)&ss)->sin_port = htons(port);
					} else {
						memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr, ip, 16);
						((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
					}
					if (!model_eds_at(m, &ss, &h) || !h.cluster || !model_endpoints(m, h.cluster))
						__builtin_trap();
					continue;
				}
				sa = lb->endpoint->address->socket_address;
				if (inet_pton(AF_INET, sa->address, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
					ss.ss_family = AF_INET;
					((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)sa->port_value);
				} else if (inet_pton(AF_INET6, sa->address, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
					ss.ss_family = AF_INET6;
					((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)sa->port_value);
				} else
					__builtin_trap();	/* validation let it through */
				neds++;
				if (!model_eds_at(m, &ss, &h) || !h.cluster || !model_endpoints(m, h.cluster))
					__builtin_trap();
			}
	}
	struct model_sizes sz;
	model_sizes(m, &sz);
	if (sz.eds_endpoints > neds)
		__builtin_trap();
	/* Every service port: its VIPs of its family lead back to a port with
	 * its number; every endpoint is a workload with a port. */
	for (size_t i = 0; i < model_count(m, MRES_ADDRESS); i++) {
		const struct mres *r = model_resource(m, MRES_ADDRESS, i);
		const Istio__Workload__Address *a = (const void *)r->msg;
		const struct mservice *s;

		if (a->type_case == ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD) {
			const struct mworkload *w;

			for (size_t k = 0; k < a->workload->n_addresses; k++) {
				struct sockaddr_storage ss = { 0 };
				const ProtobufCBinaryData *b = &a->workload->addresses[k];

				if (b->len == 4) {
					ss.ss_family = AF_INET;
					memcpy(&((struct sockaddr_in *)&ss)->sin_addr, b->data, 4);
				} else if (b->len == 16) {
					ss.ss_family = AF_INET6;
					memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr, b->data, 16);
				} else
					__builtin_trap();	/* validation let it through */
				w = model_workload_at(m, &ss);
				/* Ours if on our network (the first of an IP wins, so
				 * maybe another workload, never none). */
				if (!w && strcmp(a->workload->network ? a->workload->network : "", network) == 0)
					__builtin_trap();
			}
			continue;
		}
		if (!(s = model_service(m, r->name)) || s->res != r)
			__builtin_trap();
		for (size_t p = 0; p < s->nports; p++) {
			const struct msvc_port *sp = &s->ports[p];

			if (sp->svc != s || sp->id >= model_nports(m))
				__builtin_trap();
			for (size_t e = 0; e < sp->neps; e++)
				if (!sp->eps[e].wl || !sp->eps[e].port ||
				    (sp->eps[e].addr.sa.sa_family != AF_INET && sp->eps[e].addr.sa.sa_family != AF_INET6))
					__builtin_trap();
		}
	}
}

static struct model *
build_check(const struct model_input *in, size_t n, const struct model *prev, const struct model_opts *o)
{
	struct model_report rep;
	struct model *m = model_build(in, n, prev, o, &rep);
	struct sockaddr_storage ss = { .ss_family = AF_INET };

	if (!m)
		__builtin_trap();	/* only on OOM, and the fuzzer has memory */
	check(m, in, n, &rep, o->network ? o->network : "");
	if (prev) {
		/* Reusing prev's derived data changes no answer. */
		struct model_opts fresh = *o;
		struct model_report rep2;
		struct model_sizes a, b;
		struct model *m2;

		fresh.no_reuse = true;
		if (!(m2 = model_build(in, n, prev, &fresh, &rep2)))
			__builtin_trap();
		if (rep2.nproblems != rep.nproblems || model_nports(m) != model_nports(m2))
			__builtin_trap();
		for (size_t i = 0; i < rep.nproblems; i++)
			if (strcmp(rep.problems[i].msg, rep2.problems[i].msg) != 0 ||
			    rep.problems[i].kept_previous != rep2.problems[i].kept_previous)
				__builtin_trap();
		for (int t = 0; t < MRES__COUNT; t++) {
			if (model_count(m, t) != model_count(m2, t))
				__builtin_trap();
			for (size_t i = 0; i < model_count(m, t); i++)
				if (model_resource(m, t, i) != model_resource(m2, t, i))
					__builtin_trap();
		}
		model_sizes(m, &a);
		model_sizes(m2, &b);
		if (a.workloads != b.workloads || a.workload_addresses != b.workload_addresses ||
		    a.services != b.services || a.service_vips != b.service_vips || a.endpoints != b.endpoints)
			__builtin_trap();
		model_report_free(&rep2);
		model_free(m2);
	}
	/* Lookups that miss, or hit, must not crash. */
	((struct sockaddr_in *)&ss)->sin_port = htons(80);
	model_workload_at(m, &ss);
	model_service_at(m, &ss);
	model_service(m, "ns/h");
	model_cluster(m, "c");
	model_endpoints(m, "c");
	model_report_free(&rep);
	return m;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct model_input in[MAX_RES], rev[MAX_RES];
	char paths[MAX_RES][32], err[256], why[256];
	struct model *m1, *m2;
	const cJSON *list, *e;
	size_t n = 0;
	cJSON *j;

	if (!ready) {
		if (model_register_types() < 0)
			abort();
		ready = 1;
	}
	if (!(j = json_parse_strict((const char *)data, size, err, sizeof(err))))
		return 0;
	list = cJSON_GetObjectItemCaseSensitive(j, "resources");
	if (!cJSON_IsArray(list))
		list = NULL;
	cJSON_ArrayForEach(e, list) {
		ProtobufCMessage *msg = NULL;
		struct jpb_err je;
		char fb[16];

		if (n == MAX_RES)
			break;
		snprintf(paths[n], sizeof(paths[n]), "resources[%zu]", n);
		in[n].path = paths[n];
		in[n].res = NULL;
		if (jpb_decode_any(e, paths[n], NULL, NULL, &msg, &je) == 0) {
			/* Every other one without a fallback name, as the file loader. */
			snprintf(fb, sizeof(fb), "pa-%zu", n);
			in[n].res = mres_new(msg, "v1", n % 2 ? fb : NULL, why, sizeof(why));
		}
		n++;
	}
	/* The first half, then the second with the first as prev (names in
	 * both: prev's version, maybe of another kind, stands in for a refused
	 * one), then all of it reversed. */
	m1 = build_check(in, n / 2, NULL, &(struct model_opts){ .network = "", .strict_refs = true });
	m2 = build_check(in + n / 2, n - n / 2, m1, &(struct model_opts){ .network = "", .strict_refs = true });
	model_free(m1);
	for (size_t i = 0; i < n; i++)
		rev[i] = in[n - 1 - i];
	m1 = build_check(rev, n, m2, &(struct model_opts){ .network = "net1", .strict_refs = false });
	model_free(m2);
	model_free(build_check(in, n, m1, &(struct model_opts){ .strict_refs = true }));
	model_free(m1);
	for (size_t i = 0; i < n; i++)
		mres_unref(in[i].res);
	cJSON_Delete(j);
	return 0;
}
