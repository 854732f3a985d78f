/* bench_authz: the cost of L4 authorization per connection (issue 12,
 * "Performance": CPU per 1,000 connections with 100 policies bound to the
 * workload within 5 % of no policy). Builds a model holding one workload
 * and N policies bound to it (N-1 DENY policies that each look at a
 * principal, a namespace, a source CIDR and a port the caller does not
 * have, so that every one is evaluated and none matches, and one ALLOW on
 * the caller's principal, last), as the file loader would (strict JSON,
 * jpb_decode_any, mres_new, model_build, authz_build), then times
 * authz_check for an allowed caller and for a caller no ALLOW matches, and
 * the same workload with no policy. Prints CPU-µs per 1,000 checks: the
 * figure to set against a connection's own cost (the mtls bench scenario's
 * server-side CPU-ms per 1k connections). Usage: bench_authz [policies]. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "authz.h"
#include "json.h"
#include "json_pb.h"
#include "model.h"
#include "strbuf.h"

#define CHECKS 200000

static double
cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* The resources: the workload at 10.1.0.2 (base64 CgEAAg==) and npol
 * policies bound to it. */
static int
generate(struct strbuf *sb, int npol)
{
	sb_printf(sb, "{\"resources\":[{\"@type\":\"type.googleapis.com/istio.workload.Address\","
	    "\"workload\":{\"uid\":\"Kubernetes//Pod/shop/server\",\"name\":\"server\",\"namespace\":\"shop\","
	    "\"serviceAccount\":\"server\",\"addresses\":[\"CgEAAg==\"],\"authorizationPolicies\":[");
	for (int i = 0; i < npol; i++)
		sb_printf(sb, "%s\"shop/p%d\"", i ? "," : "", i);
	sb_printf(sb, "]}}");
	for (int i = 0; i < npol; i++) {
		sb_printf(sb, ",{\"@type\":\"type.googleapis.com/istio.security.Authorization\","
		    "\"name\":\"p%d\",\"namespace\":\"shop\",\"scope\":\"WORKLOAD_SELECTOR\",\"action\":\"%s\","
		    "\"groups\":[{\"rules\":[{\"matches\":[", i, i == npol - 1 ? "ALLOW" : "DENY");
		if (i == npol - 1)
			sb_printf(sb, "{\"principals\":[{\"exact\":\"cluster.local/ns/default/sa/client\"}]}");
		else
			sb_printf(sb, "{\"principals\":[{\"exact\":\"cluster.local/ns/other%d/sa/caller\"}],"
			    "\"namespaces\":[{\"exact\":\"other%d\"}],"
			    "\"sourceIps\":[{\"address\":\"CwAAAA==\",\"length\":8}],"
			    "\"destinationPorts\":[%d]}", i, i, 10000 + i);
		sb_printf(sb, "]}]}]}");
	}
	sb_printf(sb, "]}");
	return sb->oom ? -1 : 0;
}

static struct model *
build(int npol, struct mres ***keep, size_t *nkeep)
{
	struct strbuf sb;
	struct model_input *in;
	struct model_report rep;
	struct model *m;
	char err[512], (*paths)[32];
	cJSON *root, *e;
	size_t n = 0;

	memset(&sb, 0, sizeof(sb));
	if (generate(&sb, npol) < 0 || !(root = json_parse_strict(sb.p, sb.len, err, sizeof(err))))
		return NULL;
	in = calloc((size_t)npol + 1, sizeof(*in));
	paths = calloc((size_t)npol + 1, sizeof(*paths));
	if (!in || !paths)
		return NULL;
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(root, "resources")) {
		ProtobufCMessage *msg = NULL;
		struct jpb_err je;

		snprintf(paths[n], sizeof(paths[n]), "resources[%zu]", n);
		if (jpb_decode_any(e, paths[n], NULL, NULL, &msg, &je) < 0) {
			fprintf(stderr, "%s\n", je.msg);
			return NULL;
		}
		in[n].path = paths[n];
		if (!(in[n].res = mres_new(msg, "", NULL, err, sizeof(err)))) {
			fprintf(stderr, "%s: %s\n", paths[n], err);
			return NULL;
		}
		n++;
	}
	m = model_build(in, n, NULL, &(struct model_opts){ .network = "", .strict_refs = true }, &rep);
	if (!m || rep.nproblems) {
		fprintf(stderr, "build: %s\n", m ? rep.problems[0].msg : "out of memory");
		return NULL;
	}
	model_report_free(&rep);
	cJSON_Delete(root);
	sb_free(&sb);
	*keep = calloc(n, sizeof(**keep));
	for (size_t i = 0; *keep && i < n; i++)
		(*keep)[i] = in[i].res;
	*nkeep = n;
	free(in);
	free(paths);
	return m;
}

/* CPU-µs per 1,000 checks of the caller peer_id from 10.2.0.9 to the
 * workload's port 8080; *denied counts the denials. */
static double
run(const struct authz *a, const struct mworkload *w, const char *peer_id, uint64_t *counters, unsigned *denied)
{
	struct sockaddr_in src = { .sin_family = AF_INET, .sin_port = htons(40000) };
	struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(8080) };
	struct authz_conn c = { (const struct sockaddr *)&src, (const struct sockaddr *)&dst, peer_id };
	struct authz_result res;
	double t0;

	inet_pton(AF_INET, "10.2.0.9", &src.sin_addr);
	inet_pton(AF_INET, "10.1.0.2", &dst.sin_addr);
	*denied = 0;
	t0 = cpu_us();
	for (int i = 0; i < CHECKS; i++)
		*denied += authz_check(a, w, &c, &res, counters) == AUTHZ_DENY;
	return (cpu_us() - t0) * 1000.0 / CHECKS;
}

int
main(int argc, char **argv)
{
	int npol = argc > 1 ? atoi(argv[1]) : 100;
	static uint64_t counters[2 * AUTHZ_SLOTS];
	const char *client = "spiffe://cluster.local/ns/default/sa/client";
	const char *stranger = "spiffe://cluster.local/ns/default/sa/stranger";
	struct sockaddr_storage at = { 0 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&at;
	double none, allowed, refused;
	unsigned d0, d1, d2;
	struct model *m0, *m;
	struct authz *a0, *a;
	struct mres **k0, **k;
	size_t n0, n;

	if (npol < 1 || model_register_types() < 0)
		return 2;
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, "10.1.0.2", &sin->sin_addr);
	if (!(m0 = build(0, &k0, &n0)) || !(m = build(npol, &k, &n)) || !(a0 = authz_build(m0)) ||
	    !(a = authz_build(m))) {
		fprintf(stderr, "bench_authz: building the model failed\n");
		return 1;
	}
	none = run(a0, model_workload_at(m0, &at), client, counters, &d0);
	allowed = run(a, model_workload_at(m, &at), client, counters, &d1);
	refused = run(a, model_workload_at(m, &at), stranger, counters, &d2);
	if (d0 || d1 || d2 != CHECKS) {
		fprintf(stderr, "bench_authz: wrong decisions (no policy denied %u, the client denied %u, "
		    "the stranger denied %u of %d)\n", d0, d1, d2, CHECKS);
		return 1;
	}
	printf("authz_check, %d checks each (CPU-µs per 1,000 checks = per 1,000 connections):\n", CHECKS);
	printf("  no policy: %.1f µs\n", none);
	printf("  %d policies bound, the caller allowed by the last: %.1f µs\n", npol, allowed);
	printf("  %d policies bound, a caller no ALLOW matches (denied): %.1f µs\n", npol, refused);
	printf("  added by the policies: %.1f µs per 1,000 connections (%.3f CPU-ms)\n", allowed - none,
	    (allowed - none) / 1000.0);
	printf("json: {\"policies\": %d, \"none_us_1k\": %.2f, \"allowed_us_1k\": %.2f, \"denied_us_1k\": %.2f}\n",
	    npol, none, allowed, refused);
	authz_free(a);
	authz_free(a0);
	model_free(m);
	model_free(m0);
	for (size_t i = 0; i < n; i++)
		mres_unref(k[i]);
	for (size_t i = 0; i < n0; i++)
		mres_unref(k0[i]);
	free(k);
	free(k0);
	return 0;
}
