/* Unit tests for src/xds_node.c: the Node of the first xDS request, from the
 * environment as pilot-agent builds it (id, cluster, metadata: the derived
 * keys, every ISTIO_META_* as a string, ISTIO_METAJSON_* as JSON, the
 * operator's word over what we derive, ENABLE_HBONE "true" unless told
 * otherwise: every Outrigger sidecar listens for HBONE). The
 * message is packed and unpacked, so what is checked is what goes on the
 * wire. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "model.h"
#include "sds.h"
#include "xds.h"

typedef Envoy__Config__Core__V3__Node Node;

static const char *const vars[] = {
	"INSTANCE_IP", "POD_NAME", "POD_NAMESPACE", "SERVICE_ACCOUNT", "NODE_NAME", "ISTIO_VERSION",
	"ISTIO_META_WORKLOAD_NAME", "ISTIO_META_ENABLE_HBONE", "ISTIO_META_NAMESPACE", "ISTIO_META_MESH_ID",
	"ISTIO_METAJSON_LABELS", "ISTIO_METAJSON_BAD", "ISTIO_META_CLUSTER_ID", "CLUSTER_ID",
};

static int
clear_env(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
	return 0;
}

/* The node as the server sees it: packed, then unpacked. */
static Node *
wire_node(const struct config *cfg)
{
	Node *n = NULL, *back;
	uint8_t *buf;
	size_t len;

	assert_int_equal(xds_node_new(cfg, &n), 0);
	assert_non_null(n);
	len = envoy__config__core__v3__node__get_packed_size(n);
	buf = malloc(len ? len : 1);
	assert_non_null(buf);
	envoy__config__core__v3__node__pack(n, buf);
	back = envoy__config__core__v3__node__unpack(NULL, len, buf);
	assert_non_null(back);
	free(buf);
	xds_node_free(n);
	return back;
}

static const Google__Protobuf__Value *
meta(const Node *n, const char *key)
{
	for (size_t i = 0; n->metadata && i < n->metadata->n_fields; i++)
		if (strcmp(n->metadata->fields[i]->key, key) == 0)
			return n->metadata->fields[i]->value;
	return NULL;
}

static const char *
meta_str(const Node *n, const char *key)
{
	const Google__Protobuf__Value *v = meta(n, key);

	if (!v)
		return NULL;
	assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
	return v->string_value;
}

static void
test_pod_env(void **state)
{
	struct config cfg;
	Node *n;

	(void)state;
	config_defaults(&cfg);
	setenv("INSTANCE_IP", "10.1.2.3", 1);
	setenv("POD_NAME", "client-5b9c", 1);
	setenv("POD_NAMESPACE", "demo", 1);
	setenv("SERVICE_ACCOUNT", "client-sa", 1);
	setenv("ISTIO_VERSION", "1.24.0", 1);
	setenv("ISTIO_META_WORKLOAD_NAME", "client", 1);
	setenv("ISTIO_METAJSON_LABELS", "{\"app\":\"web\",\"version\":\"v1\"}", 1);
	n = wire_node(&cfg);
	assert_string_equal(n->id, "sidecar~10.1.2.3~client-5b9c.demo~demo.svc.cluster.local");
	/* pilot-agent's service cluster: the app label first. */
	assert_string_equal(n->cluster, "web.demo");
	assert_string_equal(n->user_agent_name, "outrigger");
	assert_int_equal(n->user_agent_version_type_case,
	    ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION);
	assert_string_equal(meta_str(n, "NAME"), "client-5b9c");
	assert_string_equal(meta_str(n, "NAMESPACE"), "demo");
	assert_string_equal(meta_str(n, "SERVICE_ACCOUNT"), "client-sa");
	assert_string_equal(meta_str(n, "INSTANCE_IPS"), "10.1.2.3");
	assert_string_equal(meta_str(n, "ISTIO_VERSION"), "1.24.0");
	assert_string_equal(meta_str(n, "WORKLOAD_NAME"), "client");
	assert_string_equal(meta_str(n, "CLUSTER_ID"), "Kubernetes");	/* ztunnel's default */
	assert_string_equal(meta_str(n, "INTERCEPTION_MODE"), "REDIRECT");
	assert_string_equal(meta_str(n, "MESH_ID"), "cluster.local");
	/* LABELS is a Struct, not a string. */
	const Google__Protobuf__Value *l = meta(n, "LABELS");
	assert_non_null(l);
	assert_int_equal(l->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
	assert_int_equal(l->struct_value->n_fields, 2);
	/* An HBONE node: we always listen on proxy.hbonePort and send HBONE. */
	assert_string_equal(meta_str(n, "ENABLE_HBONE"), "true");
	envoy__config__core__v3__node__free_unpacked(n, NULL);

	/* The SDS client's node is the same one. */
	struct sds_node sn;
	sds_node_from_env(&sn);
	assert_string_equal(sn.id, "sidecar~10.1.2.3~client-5b9c.demo~demo.svc.cluster.local");
	assert_string_equal(sn.cluster, "web.demo");
}

static void
test_operator_wins(void **state)
{
	struct config cfg;
	Node *n;

	(void)state;
	config_defaults(&cfg);
	cfg.mode = INTERCEPT_TPROXY;
	snprintf(cfg.cluster_id, sizeof(cfg.cluster_id), "east");
	setenv("POD_NAMESPACE", "demo", 1);
	setenv("ISTIO_META_NAMESPACE", "other", 1);
	setenv("ISTIO_META_MESH_ID", "mesh1", 1);
	setenv("ISTIO_META_ENABLE_HBONE", "false", 1);	/* the operator opts out */
	setenv("ISTIO_METAJSON_BAD", "{not json", 1);
	setenv("ISTIO_META_WORKLOAD_NAME", "client", 1);
	n = wire_node(&cfg);
	assert_string_equal(meta_str(n, "NAMESPACE"), "other");
	assert_string_equal(meta_str(n, "MESH_ID"), "mesh1");
	assert_string_equal(meta_str(n, "ENABLE_HBONE"), "false");
	assert_string_equal(meta_str(n, "CLUSTER_ID"), "east");
	assert_string_equal(meta_str(n, "INTERCEPTION_MODE"), "TPROXY");
	assert_null(meta(n, "BAD"));	/* not JSON: left out */
	assert_null(meta(n, "NAME"));	/* POD_NAME unset */
	/* No app label: the workload name. */
	assert_string_equal(n->cluster, "client.demo");
	assert_string_equal(n->id, "sidecar~~.demo~demo.svc.cluster.local");
	envoy__config__core__v3__node__free_unpacked(n, NULL);

	/* Nothing at all: "istio-proxy". */
	clear_env(NULL);
	n = wire_node(&cfg);
	assert_string_equal(n->cluster, "istio-proxy");
	envoy__config__core__v3__node__free_unpacked(n, NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pod_env, clear_env, clear_env),
		cmocka_unit_test_setup_teardown(test_operator_wins, clear_env, clear_env),
	};

	if (model_register_types() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
