/* Unit tests for src/resources.c (issue 8, "Static resources" and "Bad
 * input"): the file's "resources" list decoded and built into a model; a bad
 * resource among good ones is refused with its JSON path while the others
 * apply; over a previous model, a refused resource keeps its previous
 * version. Runs the real builder (src/model.c). */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "istio/workload/workload.pb-c.h"
#include "json.h"
#include "model.h"
#include "resources.h"

#define ADDR "\"@type\":\"type.googleapis.com/istio.workload.Address\""

/* A workload: uid "cluster1//Pod/default/<name>", one IPv4 address (base64
 * of 4 bytes, or whatever addr is). */
static void
wl(char *buf, size_t len, const char *name, const char *addr)
{
	snprintf(buf, len, "{" ADDR ",\"workload\":{\"uid\":\"cluster1//Pod/default/%s\",\"name\":\"%s\","
	    "\"namespace\":\"default\",\"serviceAccount\":\"sa-%s\",\"addresses\":[\"%s\"]}}", name, name, name, addr);
}

/* Parses "[e0, e1, ...]" as the config loader would hand it over. */
static cJSON *
list_of(const char *const *elems, size_t n)
{
	char text[8192];
	size_t off = 0;

	off += (size_t)snprintf(text + off, sizeof(text) - off, "[");
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(text + off, sizeof(text) - off, "%s%s", i ? "," : "", elems[i]);
	snprintf(text + off, sizeof(text) - off, "]");
	assert_true(off < sizeof(text) - 2);
	char err[256];
	cJSON *j = json_parse_strict(text, strlen(text), err, sizeof(err));
	if (!j)
		fail_msg("%s: %s", text, err);
	return j;
}

/* The Address resource of model m named uid, or NULL. */
static const struct mres *
find(const struct model *m, const char *uid)
{
	for (size_t i = 0; i < model_count(m, MRES_ADDRESS); i++) {
		const struct mres *r = model_resource(m, MRES_ADDRESS, i);
		if (strcmp(r->name, uid) == 0)
			return r;
	}
	return NULL;
}

static int
setup(void **state)
{
	(void)state;
	return model_register_types() < 0 ? -1 : 0;
}

static void
test_no_resources(void **state)
{
	struct res_report rep;
	struct model *m = resources_build(NULL, NULL, &rep);

	assert_non_null(m);
	assert_int_equal(rep.nresources, 0);
	assert_int_equal(rep.refused, 0);
	for (int t = 0; t < MRES__COUNT; t++)
		assert_int_equal(model_count(m, (enum mres_type)t), 0);
	res_report_free(&rep);
	model_free(m);

	cJSON *empty = list_of(NULL, 0);
	assert_non_null(m = resources_build(empty, NULL, &rep));
	assert_int_equal(rep.refused, 0);
	assert_int_equal(model_count(m, MRES_ADDRESS), 0);
	res_report_free(&rep);
	model_free(m);
	cJSON_Delete(empty);
}

static void
test_good_file(void **state)
{
	char a[512], b[512];
	struct res_report rep;

	wl(a, sizeof(a), "a", "CgAAAQ==");	/* 10.0.0.1 */
	wl(b, sizeof(b), "b", "CgAAAg==");	/* 10.0.0.2 */
	const char *const elems[] = { a, b };
	cJSON *list = list_of(elems, 2);
	struct model *m = resources_build(list, NULL, &rep);

	assert_non_null(m);
	for (size_t i = 0; i < rep.nlines; i++)
		print_message("unexpected: %s\n", rep.lines[i]);
	assert_int_equal(rep.refused, 0);
	assert_int_equal(rep.nlines, 0);
	assert_int_equal(rep.nresources, 2);
	assert_int_equal(model_count(m, MRES_ADDRESS), 2);
	assert_non_null(find(m, "cluster1//Pod/default/a"));
	assert_non_null(find(m, "cluster1//Pod/default/b"));
	res_report_free(&rep);
	model_free(m);
	cJSON_Delete(list);
}

/* One resource that does not decode and one that does not validate among
 * good ones: both named by their path in input order, the good ones apply. */
static void
test_bad_among_good(void **state)
{
	char a[512], bad_len[512], bad_b64[512], c[512];
	struct res_report rep;

	wl(a, sizeof(a), "a", "CgAAAQ==");
	wl(bad_len, sizeof(bad_len), "b", "CgAAAgE=");	/* 5 bytes */
	wl(bad_b64, sizeof(bad_b64), "x", "$$$$");
	wl(c, sizeof(c), "c", "CgAAAw==");
	const char *const elems[] = {
		a, bad_len, bad_b64, c,
		"{\"@type\":\"type.googleapis.com/istio.workload.Nope\"}",
		"{\"workload\":{}}",
	};
	cJSON *list = list_of(elems, 6);
	struct model *m = resources_build(list, NULL, &rep);

	assert_non_null(m);
	for (size_t i = 0; i < rep.nlines; i++)
		print_message("  %s\n", rep.lines[i]);
	assert_int_equal(rep.nresources, 6);
	assert_int_equal(rep.refused, 4);
	assert_int_equal(rep.nlines, 4);
	assert_int_equal(rep.kept, 0);
	assert_true(strncmp(rep.lines[0], "resources[1].workload.addresses[0]: ", 36) == 0);
	assert_true(strncmp(rep.lines[1], "resources[2].workload.addresses[0]: not base64", 46) == 0);
	assert_non_null(strstr(rep.lines[2], "resources[4].@type"));
	assert_non_null(strstr(rep.lines[2], "istio.workload.Nope"));
	assert_true(strncmp(rep.lines[3], "resources[5]", 12) == 0);
	assert_int_equal(model_count(m, MRES_ADDRESS), 2);
	assert_non_null(find(m, "cluster1//Pod/default/a"));
	assert_non_null(find(m, "cluster1//Pod/default/c"));
	assert_null(find(m, "cluster1//Pod/default/b"));
	res_report_free(&rep);
	model_free(m);
	cJSON_Delete(list);
}

/* A bad edit of a running resource keeps the running version, whether the
 * builder or the decoder refuses it; a good edit of another applies; one that
 * is gone from the file is gone from the model. */
static void
test_prev_kept(void **state)
{
	char a1[512], b1[512], c1[512], a2[512], b2[512];
	struct res_report rep;

	wl(a1, sizeof(a1), "a", "CgAAAQ==");
	wl(b1, sizeof(b1), "b", "CgAAAg==");
	wl(c1, sizeof(c1), "c", "CgAAAw==");
	const char *const v1[] = { a1, b1, c1 };
	cJSON *l1 = list_of(v1, 3);
	struct model *m1 = resources_build(l1, NULL, &rep);
	assert_non_null(m1);
	assert_int_equal(rep.refused, 0);
	res_report_free(&rep);
	const struct mres *a_old = find(m1, "cluster1//Pod/default/a");
	assert_non_null(a_old);

	wl(a2, sizeof(a2), "a", "CgAAAQE=");	/* bad: 5 bytes */
	wl(b2, sizeof(b2), "b", "CgAACg==");	/* moved to 10.0.0.10 */
	const char *const v2[] = { a2, b2 };	/* c removed */
	cJSON *l2 = list_of(v2, 2);
	struct model *m2 = resources_build(l2, m1, &rep);
	assert_non_null(m2);
	for (size_t i = 0; i < rep.nlines; i++)
		print_message("  %s\n", rep.lines[i]);
	assert_int_equal(rep.refused, 1);
	assert_int_equal(rep.kept, 1);
	assert_int_equal(rep.nlines, 1);
	assert_true(strncmp(rep.lines[0], "resources[0].workload.addresses[0]: ", 36) == 0);
	assert_non_null(strstr(rep.lines[0], "(the previous version stays)"));
	/* a is the running version (the same resource, shared), b the new one. */
	assert_ptr_equal(find(m2, "cluster1//Pod/default/a"), a_old);
	const struct mres *b_new = find(m2, "cluster1//Pod/default/b");
	assert_non_null(b_new);
	const Istio__Workload__Address *addr = (const Istio__Workload__Address *)b_new->msg;
	assert_non_null(addr->workload);
	assert_int_equal(addr->workload->n_addresses, 1);
	assert_int_equal(addr->workload->addresses[0].len, 4);
	assert_int_equal(addr->workload->addresses[0].data[3], 10);
	assert_null(find(m2, "cluster1//Pod/default/c"));
	assert_int_equal(model_count(m2, MRES_ADDRESS), 2);
	res_report_free(&rep);

	/* Edits the decoder refuses keep the running version too: a with bytes
	 * that are not base64, b with a misspelt key; z, new and undecodable,
	 * has nothing to keep. */
	char a3[512], z3[512];
	wl(a3, sizeof(a3), "a", "$$$$");
	wl(z3, sizeof(z3), "z", "%%%%");
	const char *const v3[] = {
		a3,
		"{" ADDR ",\"workload\":{\"uid\":\"cluster1//Pod/default/b\",\"adresses\":[\"CgAAAg==\"]}}",
		z3,
	};
	cJSON *l3 = list_of(v3, 3);
	struct model *m3 = resources_build(l3, m2, &rep);
	assert_non_null(m3);
	for (size_t i = 0; i < rep.nlines; i++)
		print_message("  %s\n", rep.lines[i]);
	assert_int_equal(rep.refused, 3);
	assert_int_equal(rep.kept, 2);
	assert_true(strncmp(rep.lines[0], "resources[0].workload.addresses[0]: not base64", 46) == 0);
	assert_non_null(strstr(rep.lines[0], "(the previous version stays)"));
	assert_true(strncmp(rep.lines[1], "resources[1].workload.adresses: ", 32) == 0);
	assert_non_null(strstr(rep.lines[1], "(the previous version stays)"));
	assert_true(strncmp(rep.lines[2], "resources[2].workload.addresses[0]: not base64", 46) == 0);
	assert_null(strstr(rep.lines[2], "previous version"));
	assert_ptr_equal(find(m3, "cluster1//Pod/default/a"), a_old);
	assert_ptr_equal(find(m3, "cluster1//Pod/default/b"), b_new);
	assert_null(find(m3, "cluster1//Pod/default/z"));
	assert_int_equal(model_count(m3, MRES_ADDRESS), 2);
	res_report_free(&rep);

	/* The old models can go while the new one shares their resources. */
	model_free(m1);
	model_free(m2);
	assert_string_equal(find(m3, "cluster1//Pod/default/a")->name, "cluster1//Pod/default/a");
	model_free(m3);
	cJSON_Delete(l1);
	cJSON_Delete(l2);
	cJSON_Delete(l3);
}

/* What mres_new refuses is joined to the element's path as the decoder's
 * messages are; a PeerAuthentication, which has no name, is named by its
 * place in the file. */
static void
test_names(void **state)
{
	struct res_report rep;
	const char *const elems[] = {
		"{" ADDR ",\"workload\":{\"name\":\"nouid\",\"addresses\":[\"CgAAAQ==\"]}}",
		"{\"@type\":\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"1s\"}",
		"{" ADDR "}",
		"{\"@type\":\"type.googleapis.com/istio.security.v1beta1.PeerAuthentication\","
		    "\"mtls\":{\"mode\":\"STRICT\"}}",
	};
	cJSON *list = list_of(elems, 4);
	struct model *m = resources_build(list, NULL, &rep);

	assert_non_null(m);
	for (size_t i = 0; i < rep.nlines; i++)
		print_message("  %s\n", rep.lines[i]);
	assert_int_equal(rep.refused, 3);
	assert_int_equal(rep.nlines, 3);
	assert_true(strncmp(rep.lines[0], "resources[0].workload.uid: required", 35) == 0);
	assert_true(strncmp(rep.lines[1], "resources[1]: google.protobuf.Duration is not a resource type", 61) == 0);
	assert_true(strncmp(rep.lines[2], "resources[2]", 12) == 0);
	assert_int_equal(model_count(m, MRES_PEER_AUTHENTICATION), 1);
	assert_string_equal(model_resource(m, MRES_PEER_AUTHENTICATION, 0)->name, "resources[3]");
	res_report_free(&rep);
	model_free(m);
	cJSON_Delete(list);
}

/* The proxy's network comes from ISTIO_META_NETWORK (as Istio's injector
 * sets it): a workload on network "net1" is found at its address only by a
 * proxy on net1. */
static void
test_network_from_env(void **state)
{
	const char *const elems[] = {
		"{" ADDR ",\"workload\":{\"uid\":\"cluster1//Pod/default/n\",\"name\":\"n\",\"namespace\":\"default\","
		    "\"network\":\"net1\",\"addresses\":[\"CgAAAQ==\"]}}",
	};
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct res_report rep;
	cJSON *list = list_of(elems, 1);
	struct model *m;

	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(0x0a000001);
	unsetenv("ISTIO_META_NETWORK");
	assert_non_null(m = resources_build(list, NULL, &rep));
	assert_int_equal(rep.refused, 0);
	assert_null(model_workload_at(m, &ss));
	res_report_free(&rep);
	model_free(m);

	setenv("ISTIO_META_NETWORK", "net1", 1);
	assert_non_null(m = resources_build(list, NULL, &rep));
	unsetenv("ISTIO_META_NETWORK");
	assert_int_equal(rep.refused, 0);
	const struct mworkload *w = model_workload_at(m, &ss);
	assert_non_null(w);
	assert_string_equal(w->uid, "cluster1//Pod/default/n");
	res_report_free(&rep);
	model_free(m);
	cJSON_Delete(list);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_resources),
		cmocka_unit_test(test_good_file),
		cmocka_unit_test(test_bad_among_good),
		cmocka_unit_test(test_prev_kept),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_network_from_env),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
