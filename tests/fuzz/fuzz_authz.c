/* Fuzz target: the authorization evaluator (src/authz.c) on whatever
 * policies and workloads the JSON decoder produces. The input is
 * {"resources": [...]} (istio.security.Authorization and istio.workload.Address
 * elements, decoded as the static loader does) and built into one model;
 * the bytes of the input also choose the connections' sources and ports.
 * Whatever the input: no crash, and a DENY policy that applies to the
 * workload and is not a dry run, and that denies a connection when it is the
 * only policy, denies that connection among all the others too (a matching
 * DENY always wins). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz.h"
#include "json.h"
#include "json_pb.h"
#include "model.h"
#include "istio/security/authorization.pb-c.h"
#include "istio/workload/workload.pb-c.h"

#define MAX_RES 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const peers[] = {
	NULL,
	"spiffe://cluster.local/ns/default/sa/client",
	"spiffe://cluster.local/ns/shop/sa/server",
	"spiffe://other.td/ns/x/sa/y",
};

static struct model *
build(struct model_input *in, size_t n)
{
	struct model_report rep = { 0 };
	struct model *m = model_build(in, n, NULL, &(struct model_opts){ .network = "" }, &rep);

	model_report_free(&rep);
	return m;
}

/* Whether policy p (an Authorization) applies to workload w, by scope. */
static bool
applies(const Istio__Security__Authorization *p, const Istio__Workload__Workload *w)
{
	char key[512];

	/* ztunnel's binding (src/state.rs assert_rbac, state/policy.rs): GLOBAL,
	 * NAMESPACE of "" or of the workload's namespace, and any policy the
	 * workload lists, whatever its scope. */
	const char *pns = p->namespace_ ? p->namespace_ : "";

	if (p->scope == ISTIO__SECURITY__SCOPE__GLOBAL)
		return true;
	if (p->scope == ISTIO__SECURITY__SCOPE__NAMESPACE &&
	    (!*pns || strcmp(pns, w->namespace_ ? w->namespace_ : "") == 0))
		return true;
	snprintf(key, sizeof(key), "%s/%s", pns, p->name ? p->name : "");
	for (size_t i = 0; i < w->n_authorization_policies; i++)
		if (strcmp(w->authorization_policies[i], key) == 0)
			return true;
	return false;
}

/* The verdict of policy pr alone for workload res (its Address) and c. */
static enum authz_verdict
alone(struct mres *pr, struct mres *wres, const struct sockaddr_in *dst, const struct authz_conn *c)
{
	struct model_input two[2] = { { wres, "w" }, { pr, "p" } };
	struct model *m = build(two, 2);
	struct authz *a;
	struct authz_result res;
	enum authz_verdict v = AUTHZ_ALLOW;

	if (!m)
		return AUTHZ_ALLOW;
	if ((a = authz_build(m))) {
		struct sockaddr_storage ss = { 0 };

		memcpy(&ss, dst, sizeof(*dst));
		v = authz_check(a, model_workload_at(m, &ss), c, &res, NULL);
		authz_free(a);
	}
	model_free(m);
	return v;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct model_input in[MAX_RES];
	char paths[MAX_RES][32], err[256], why[256];
	const cJSON *list, *e;
	struct model *m;
	struct authz *a;
	size_t n = 0;
	uint32_t h = 2166136261u;
	cJSON *j;

	if (!ready) {
		if (model_register_types() < 0)
			abort();
		ready = 1;
	}
	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 16777619u;
	if (!(j = json_parse_strict((const char *)data, size, err, sizeof(err))))
		return 0;
	list = cJSON_GetObjectItemCaseSensitive(j, "resources");
	if (!cJSON_IsArray(list))
		list = NULL;
	cJSON_ArrayForEach(e, list) {
		ProtobufCMessage *msg = NULL;
		struct jpb_err je;

		if (n == MAX_RES)
			break;
		snprintf(paths[n], sizeof(paths[n]), "resources[%zu]", n);
		in[n].path = paths[n];
		in[n].res = NULL;
		if (jpb_decode_any(e, paths[n], NULL, NULL, &msg, &je) == 0)
			in[n].res = mres_new(msg, "v1", NULL, why, sizeof(why));
		n++;
	}
	if (!(m = build(in, n)))
		goto out;
	if (!(a = authz_build(m))) {
		model_free(m);
		goto out;
	}
	cJSON_Delete(authz_to_json(a));
	for (size_t i = 0; i < model_count(m, MRES_ADDRESS); i++) {
		struct mres *wres = (struct mres *)model_resource(m, MRES_ADDRESS, i);
		const Istio__Workload__Address *ad = (const void *)wres->msg;
		const Istio__Workload__Workload *w;
		struct sockaddr_in dst = { .sin_family = AF_INET };
		struct sockaddr_storage ss = { 0 };
		const struct mworkload *wl;

		if (ad->type_case != ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD || !(w = ad->workload) ||
		    !w->n_addresses || w->addresses[0].len != 4)
			continue;
		memcpy(&dst.sin_addr, w->addresses[0].data, 4);
		memcpy(&ss, &dst, sizeof(dst));
		if (!(wl = model_workload_at(m, &ss)))
			continue;
		for (unsigned k = 0; k < 8; k++) {
			uint32_t r = h ^ (k * 2654435761u);
			struct sockaddr_in src = { .sin_family = AF_INET, .sin_port = htons((uint16_t)r) };
			struct authz_conn c = { (const struct sockaddr *)&src, (const struct sockaddr *)&dst,
			    peers[k % 4] };
			struct authz_result res;

			src.sin_addr.s_addr = htonl(k & 4 ? 0x0a000000u | (r >> 8 & 0xffff) : 0xc6120000u | (r & 0xff));
			dst.sin_port = htons((uint16_t)(k & 1 ? 8080 : r >> 16));
			if (authz_check(a, wl, &c, &res, NULL) == AUTHZ_DENY)
				continue;
			/* Allowed: no applicable, enforcing DENY may deny it alone. */
			for (size_t p = 0; p < model_count(m, MRES_AUTHORIZATION); p++) {
				struct mres *pr = (struct mres *)model_resource(m, MRES_AUTHORIZATION, p);
				const Istio__Security__Authorization *pol = (const void *)pr->msg;

				if (pol->action != ISTIO__SECURITY__ACTION__DENY || pol->dry_run || !applies(pol, w))
					continue;
				if (alone(pr, wres, &dst, &c) == AUTHZ_DENY)
					__builtin_trap();
			}
		}
	}
	authz_free(a);
	model_free(m);
out:
	for (size_t i = 0; i < n; i++)
		mres_unref(in[i].res);
	cJSON_Delete(j);
	return 0;
}
