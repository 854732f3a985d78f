/* Unit tests for src/admin.c: the request-line parser (untrusted bytes from
 * the readiness port) and the counter formats. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "authz.h"
#include "json.h"
#include "json_pb.h"
#include "model.h"
#include "resources.h"
#include "server.h"

static int
parse(const char *s, struct admin_req *r)
{
	return admin_parse_request(s, strlen(s), r);
}

static void
test_parse_ok(void **state)
{
	struct admin_req r;

	assert_int_equal(parse("GET /stats?format=json&x=1 HTTP/1.1\r\nHost: a\r\n\r\n", &r), 0);
	assert_int_equal(r.method_len, 3);
	assert_memory_equal(r.method, "GET", 3);
	assert_int_equal(r.path_len, 6);
	assert_memory_equal(r.path, "/stats", 6);
	assert_int_equal(r.query_len, 15);
	assert_memory_equal(r.query, "format=json&x=1", 15);
	assert_int_equal(parse("HEAD /healthz/ready HTTP/1.0\r\n\r\n", &r), 0);
	assert_null(r.query);
	assert_int_equal(r.path_len, 14);
}

/* Issue 7 §5: requests whose lines end in a bare LF (printf | nc, some
 * probes) were never answered. RFC 9112 §2.2 lets a server accept them. */
static void
test_parse_bare_lf(void **state)
{
	struct admin_req r;

	assert_int_equal(parse("GET /ready HTTP/1.1\n\n", &r), 0);
	assert_int_equal(r.path_len, 6);
	assert_memory_equal(r.path, "/ready", 6);
	assert_int_equal(parse("GET /stats?format=json HTTP/1.0\nHost: a\nX: y\n\n", &r), 0);
	assert_int_equal(r.query_len, 11);
	/* Mixed endings. */
	assert_int_equal(parse("HEAD /healthz/ready HTTP/1.1\r\nHost: a\n\r\n", &r), 0);
	assert_int_equal(parse("GET / HTTP/1.1\r\n\n", &r), 0);
	assert_int_equal(r.path_len, 1);
	/* Not complete yet, or malformed, as with CRLF. */
	assert_int_equal(parse("GET /ready HTTP/1.1\n", &r), -EAGAIN);
	assert_int_equal(parse("GET /ready HTTP/1.1\nHost: a\n", &r), -EAGAIN);
	assert_int_equal(parse("GET /ready\n\n", &r), -EINVAL);
	assert_int_equal(parse("\n\n", &r), -EINVAL);
	assert_int_equal(parse("GET /re\rady HTTP/1.1\n\n", &r), -EINVAL);
}

/* The status port forwards X-Prometheus-Scrape-Timeout-Seconds and
 * User-Agent to the app, as pilot-agent does: header lookup in the head. */
static void
test_req_header(void **state)
{
	const char *req = "GET /stats/prometheus HTTP/1.1\r\nHost: a\r\nuser-agent:  Prometheus/2.45 \r\n"
	    "X-Prometheus-Scrape-Timeout-Seconds:10\r\nX-Empty:\r\n\r\nUser-Agent: body\r\n";
	const char *v;
	size_t n;

	v = admin_req_header(req, strlen(req), "User-Agent", &n);
	assert_non_null(v);
	assert_int_equal(n, 15);
	assert_memory_equal(v, "Prometheus/2.45", 15);
	v = admin_req_header(req, strlen(req), "X-Prometheus-Scrape-Timeout-Seconds", &n);
	assert_non_null(v);
	assert_int_equal(n, 2);
	assert_memory_equal(v, "10", 2);
	v = admin_req_header(req, strlen(req), "X-Empty", &n);
	assert_non_null(v);
	assert_int_equal(n, 0);
	assert_null(admin_req_header(req, strlen(req), "Accept", &n));
	/* A name that is a prefix of another is not it; the request line is no header. */
	assert_null(admin_req_header(req, strlen(req), "X-Prometheus", &n));
	assert_null(admin_req_header(req, strlen(req), "GET /stats/prometheus HTTP/1.1\r\nHost", &n));
	/* Bare LF lines. */
	v = admin_req_header("GET / HTTP/1.1\nA: b\n\n", 21, "a", &n);
	assert_non_null(v);
	assert_int_equal(n, 1);
	/* An incomplete head has no headers yet. */
	assert_null(admin_req_header("GET / HTTP/1.1\r\nA: b\r\n", 23, "A", &n));
}

static void
test_parse_incomplete(void **state)
{
	struct admin_req r;

	assert_int_equal(parse("GET /stats HTTP/1.1\r\nHost: a\r\n", &r), -EAGAIN);
	assert_int_equal(parse("", &r), -EAGAIN);
	assert_int_equal(parse("GET", &r), -EAGAIN);
}

static void
test_parse_bad(void **state)
{
	static const char *const bad[] = {
		"get /stats HTTP/1.1\r\n\r\n",
		"GET stats HTTP/1.1\r\n\r\n",
		"GET /stats HTTP/2.0\r\n\r\n",
		"GET /stats\r\n\r\n",
		"GET  /stats HTTP/1.1\r\n\r\n",
		" /stats HTTP/1.1\r\n\r\n",
		"GET /st ats HTTP/1.1\r\n\r\n",
		"GET /stats HTTP/1.1 \r\n\r\n",
		"\r\n\r\n",
	};
	struct admin_req r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse(bad[i], &r) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
}

static void
test_parse_head_too_large(void **state)
{
	static char big[9000];
	struct admin_req r;

	memset(big, 'a', sizeof(big));
	memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
	assert_int_equal(admin_parse_request(big, sizeof(big), &r), -EINVAL);
}

static void
test_stats_formats(void **state)
{
	struct strbuf sb = { 0 };

	server.concurrency = 3;
	admin_render_stats(&sb, "text");
	assert_false(sb.oom);
	assert_non_null(strstr(sb.p, "server.concurrency: 3\n"));
	/* Sorted by name. */
	assert_true(strstr(sb.p, "server.concurrency") < strstr(sb.p, "server.live"));
	sb_free(&sb);
	admin_render_stats(&sb, "json");
	assert_non_null(strstr(sb.p, "{\"name\":\"server.concurrency\",\"value\":3}"));
	sb_free(&sb);
	admin_render_stats(&sb, "prometheus");
	assert_non_null(strstr(sb.p, "# TYPE outrigger_listener_downstream_cx_total counter\n"));
	assert_non_null(strstr(sb.p, "outrigger_listener_downstream_cx_active{listener=\"inbound\"} 0\n"));
	sb_free(&sb);
}


/* /config_dump's resources (issue 8): every type listed in MODEL_TYPES
 * order, each resource by name, version and proto3 JSON with its @type,
 * which decodes back to the same resource; the index sizes. The model is
 * built by the real loader from a static list. */
static void
test_config_dump_model(void **state)
{
	static const char text[] = "["
	    "{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"workload\":{"
	    "\"uid\":\"c1//Pod/default/b\",\"name\":\"b\",\"namespace\":\"default\",\"addresses\":[\"CgAAAg==\"],"
	    "\"services\":{\"default/s.default.svc\":{\"ports\":[{\"servicePort\":80,\"targetPort\":8080}]}}}},"
	    "{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"workload\":{"
	    "\"uid\":\"c1//Pod/default/a\",\"name\":\"a\",\"namespace\":\"default\",\"addresses\":[\"CgAAAQ==\"],"
	    "\"services\":{\"default/s.default.svc\":{\"ports\":[{\"servicePort\":80,\"targetPort\":8080}]}}}},"
	    "{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"service\":{"
	    "\"name\":\"s\",\"namespace\":\"default\",\"hostname\":\"s.default.svc\","
	    "\"addresses\":[{\"address\":\"CmAAAQ==\"}],\"ports\":[{\"servicePort\":80,\"targetPort\":8080}]}},"
	    "{\"@type\":\"type.googleapis.com/envoy.config.cluster.v3.Cluster\",\"name\":\"c\","
	    "\"connectTimeout\":\"1.500s\",\"type\":\"STATIC\"}]";
	char err[256], *printed;
	cJSON *list = json_parse_strict(text, strlen(text), err, sizeof(err)), *root, *res, *a, *c, *idx;
	struct res_report rep = { 0 };
	struct model *m;

	(void)state;
	assert_non_null(list);
	m = resources_build(list, NULL, &rep);
	assert_non_null(m);
	if (rep.refused)
		fail_msg("refused: %s", rep.lines[0]);
	assert_non_null(root = cJSON_CreateObject());
	assert_int_equal(admin_model_to_json(m, root), 0);
	assert_non_null(res = cJSON_GetObjectItemCaseSensitive(root, "resources"));
	/* Every type, in MODEL_TYPES order, empty ones too. */
	c = res->child;
	for (int t = 0; t < MRES__COUNT; t++, c = c->next) {
		assert_non_null(c);
		assert_string_equal(c->string, mres_type_names[t]);
		assert_true(cJSON_IsArray(c));
	}
	assert_null(c);
	a = cJSON_GetObjectItemCaseSensitive(res, "istio.workload.Address");
	assert_int_equal(cJSON_GetArraySize(a), 3);
	/* In name order: the workloads by uid, the service by namespace/hostname. */
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(a, 0), "name")->valuestring,
	    "c1//Pod/default/a");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(a, 1), "name")->valuestring,
	    "c1//Pod/default/b");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(a, 2), "name")->valuestring,
	    "default/s.default.svc");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(a, 2), "version")->valuestring, "");
	assert_non_null(printed = cJSON_PrintUnformatted(
	    cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(a, 0), "resource")));
	/* Fields in number order (uid is 20 in istio.workload.Workload). */
	assert_string_equal(printed, "{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"workload\":{"
	    "\"name\":\"a\",\"namespace\":\"default\",\"addresses\":[\"CgAAAQ==\"],\"uid\":\"c1//Pod/default/a\","
	    "\"services\":{\"default/s.default.svc\":{\"ports\":[{\"servicePort\":80,\"targetPort\":8080}]}}}}");
	free(printed);
	c = cJSON_GetObjectItemCaseSensitive(res, "envoy.config.cluster.v3.Cluster");
	assert_int_equal(cJSON_GetArraySize(c), 1);
	assert_non_null(printed = cJSON_PrintUnformatted(
	    cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(c, 0), "resource")));
	assert_string_equal(printed, "{\"@type\":\"type.googleapis.com/envoy.config.cluster.v3.Cluster\","
	    "\"name\":\"c\",\"type\":\"STATIC\",\"connectTimeout\":\"1.500s\"}");
	free(printed);
	/* What the dump shows reads back as a static resource list. */
	{
		cJSON *again = cJSON_CreateArray();
		struct res_report rep2 = { 0 };
		struct model *m2;
		cJSON *e;
		cJSON_ArrayForEach(c, res)
			cJSON_ArrayForEach(e, c)
				cJSON_AddItemReferenceToArray(again,
				    cJSON_GetObjectItemCaseSensitive(e, "resource"));
		assert_non_null(m2 = resources_build(again, NULL, &rep2));
		assert_int_equal(rep2.refused, 0);
		assert_int_equal(model_count(m2, MRES_ADDRESS), 3);
		assert_int_equal(model_count(m2, MRES_CLUSTER), 1);
		res_report_free(&rep2);
		model_free(m2);
		cJSON_Delete(again);
	}
	assert_non_null(idx = cJSON_GetObjectItemCaseSensitive(root, "indexes"));
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(idx, "workloads")->valueint, 2);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(idx, "services")->valueint, 1);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(idx, "serviceVips")->valueint, 1);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(idx, "endpoints")->valueint, 2);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(idx, "clusters")->valueint, 1);
	assert_int_equal(cJSON_GetObjectItemCaseSensitive(root, "encodingErrors")->valueint, 0);
	cJSON_Delete(root);
	model_free(m);
	res_report_free(&rep);
	cJSON_Delete(list);

	/* An empty model: every type, no resource. */
	m = model_empty();
	assert_non_null(root = cJSON_CreateObject());
	assert_int_equal(admin_model_to_json(m, root), 0);
	assert_non_null(printed = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "resources")));
	assert_string_equal(printed, "{\"istio.workload.Address\":[],\"istio.security.Authorization\":[],"
	    "\"istio.security.v1beta1.PeerAuthentication\":[],\"envoy.config.cluster.v3.Cluster\":[],"
	    "\"envoy.config.endpoint.v3.ClusterLoadAssignment\":[],"
	    "\"envoy.config.route.v3.RouteConfiguration\":[],\"envoy.config.listener.v3.Listener\":[]}");
	free(printed);
	cJSON_Delete(root);
	model_free(m);
}

/* Review finding 7: the policies past the per-policy registry's bound
 * count in its overflow slot, which was never exported: once the registry
 * is full, /stats shows authz.overflow.authz_policy_{allow,deny} and
 * Prometheus policy="overflow". (The registry is process-wide: filled
 * here by 1,100 policy names.) */
static void
test_authz_overflow_exported(void **state)
{
	size_t n = 1100, cap = n * 160 + 16, off = 0;
	char *text = malloc(cap), err[256];
	struct res_report rep = { 0 };
	struct strbuf sb = { 0 };
	struct authz *a;
	struct model *m;
	cJSON *list;

	(void)state;
	assert_non_null(text);
	off += (size_t)snprintf(text + off, cap - off, "[");
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(text + off, cap - off, "%s{\"@type\":\"type.googleapis.com/istio.security."
		    "Authorization\",\"name\":\"p%zu\",\"namespace\":\"ns\",\"action\":\"DENY\"}", i ? "," : "", i);
	snprintf(text + off, cap - off, "]");
	admin_render_stats(&sb, "text");
	assert_null(strstr(sb.p, "authz.overflow."));
	sb_free(&sb);
	assert_non_null(list = json_parse_strict(text, strlen(text), err, sizeof(err)));
	free(text);
	assert_non_null(m = resources_build(list, NULL, &rep));
	cJSON_Delete(list);
	assert_int_equal(rep.refused, 0);
	assert_non_null(a = authz_build(m));
	assert_true(authz_full());
	admin_render_stats(&sb, "text");
	assert_non_null(strstr(sb.p, "authz.overflow.authz_policy_allow: 0\n"));
	assert_non_null(strstr(sb.p, "authz.overflow.authz_policy_deny: 0\n"));
	assert_non_null(strstr(sb.p, "authz.ns/p1.authz_policy_deny: 0\n"));
	sb_free(&sb);
	admin_render_stats(&sb, "prometheus");
	assert_non_null(strstr(sb.p, "outrigger_authz_policy_allow{policy=\"overflow\"} 0\n"));
	assert_non_null(strstr(sb.p, "outrigger_authz_policy_deny{policy=\"overflow\"} 0\n"));
	sb_free(&sb);
	authz_free(a);
	res_report_free(&rep);
	model_free(m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_bare_lf),
		cmocka_unit_test(test_parse_incomplete),
		cmocka_unit_test(test_req_header),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_head_too_large),
		cmocka_unit_test(test_stats_formats),
		cmocka_unit_test(test_config_dump_model),
		cmocka_unit_test(test_authz_overflow_exported),
	};

	if (model_register_types() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
