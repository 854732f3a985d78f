/* Unit tests for src/telemetry.c: the Istio label set of a connection's facts
 * (tele_labels): the label names and their order, each value's source (the
 * WDS Workload's fields, the service, the SPIFFE IDs), "unknown" for what is
 * not known, reporter, response flags and connection_security_policy. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "istio/workload/workload.pb-c.h"
#include "model.h"
#include "telemetry.h"
#include "tunnel.h"

struct fake_wl {
	Istio__Workload__Workload w;
	Istio__Workload__Address a;
	struct mres res;
	struct mworkload mw;
};

static void
fake_wl(struct fake_wl *f, const char *wname, const char *ns, const char *canon, const char *rev,
    const char *cluster, const char *identity)
{
	istio__workload__workload__init(&f->w);
	istio__workload__address__init(&f->a);
	f->w.workload_name = (char *)wname;
	f->w.namespace_ = (char *)ns;
	f->w.canonical_name = (char *)canon;
	f->w.canonical_revision = (char *)rev;
	f->w.cluster_id = (char *)cluster;
	f->a.type_case = ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD;
	f->a.workload = &f->w;
	f->res = (struct mres){ .msg = &f->a.base };
	f->mw = (struct mworkload){ .res = &f->res, .ns = ns, .cluster_id = cluster, .identity = identity };
}

static void
test_names_in_istio_order(void **state)
{
	(void)state;
	assert_int_equal(TL__COUNT, 23);
	assert_string_equal(tele_label_names[0], "reporter");
	assert_string_equal(tele_label_names[TL_SRC_PRINCIPAL], "source_principal");
	assert_string_equal(tele_label_names[9], "destination_service");
	assert_string_equal(tele_label_names[11], "destination_service_name");
	assert_string_equal(tele_label_names[TL__COUNT - 1], "connection_security_policy");
}

static void
test_inbound_both_workloads(void **state)
{
	struct fake_wl s, d;
	struct mservice svc = { .name = "sink", .ns = "shop", .hostname = "sink.shop.svc.cluster.local" };
	const char *lab[TL__COUNT];
	char flags[TUNNEL_RFLAGS_MAX];

	(void)state;
	fake_wl(&s, "client", "default", "client-app", "v1", "c-a", "spiffe://cluster.local/ns/default/sa/client");
	fake_wl(&d, "server", "shop", "server-app", "v2", "c-b", "spiffe://cluster.local/ns/shop/sa/server");
	struct tele_conn c = { .inbound = true, .src = &s.mw, .dst = &d.mw, .svc = &svc,
		.src_principal = "spiffe://cluster.local/ns/default/sa/client", .dst_principal = d.mw.identity,
		.mtls = true };
	tele_labels(&c, lab, flags);
	assert_string_equal(lab[TL_REPORTER], "destination");
	assert_string_equal(lab[TL_SRC_WORKLOAD], "client");
	assert_string_equal(lab[TL_SRC_CANONICAL_SERVICE], "client-app");
	assert_string_equal(lab[TL_SRC_APP], "client-app");	/* ztunnel: app = canonical service */
	assert_string_equal(lab[TL_SRC_CANONICAL_REVISION], "v1");
	assert_string_equal(lab[TL_SRC_VERSION], "v1");
	assert_string_equal(lab[TL_SRC_NAMESPACE], "default");
	assert_string_equal(lab[TL_SRC_CLUSTER], "c-a");
	assert_string_equal(lab[TL_SRC_PRINCIPAL], "spiffe://cluster.local/ns/default/sa/client");
	assert_string_equal(lab[TL_DST_WORKLOAD], "server");
	assert_string_equal(lab[TL_DST_APP], "server-app");
	assert_string_equal(lab[TL_DST_VERSION], "v2");
	assert_string_equal(lab[TL_DST_NAMESPACE], "shop");
	assert_string_equal(lab[TL_DST_CLUSTER], "c-b");
	assert_string_equal(lab[TL_DST_PRINCIPAL], "spiffe://cluster.local/ns/shop/sa/server");
	assert_string_equal(lab[TL_DST_SERVICE], "sink.shop.svc.cluster.local");
	assert_string_equal(lab[TL_DST_SERVICE_NAME], "sink");
	assert_string_equal(lab[TL_DST_SERVICE_NAMESPACE], "shop");
	assert_string_equal(lab[TL_REQUEST_PROTOCOL], "tcp");
	assert_string_equal(lab[TL_RESPONSE_FLAGS], "-");
	assert_string_equal(lab[TL_SECURITY_POLICY], "mutual_tls");
}

static void
test_nothing_known_is_unknown(void **state)
{
	const char *lab[TL__COUNT];
	char flags[TUNNEL_RFLAGS_MAX];
	struct tele_conn c = { 0 };

	(void)state;
	tele_labels(&c, lab, flags);
	assert_string_equal(lab[TL_REPORTER], "source");
	for (int i = TL_SRC_WORKLOAD; i <= TL_DST_CLUSTER; i++)
		assert_string_equal(lab[i], "unknown");
	/* The source side of a plaintext connection cannot tell: unknown. */
	assert_string_equal(lab[TL_SECURITY_POLICY], "unknown");
	c.inbound = true;
	tele_labels(&c, lab, flags);
	assert_string_equal(lab[TL_SECURITY_POLICY], "none");
}

static void
test_empty_fields_unknown_and_flags(void **state)
{
	struct fake_wl s;
	const char *lab[TL__COUNT];
	char flags[TUNNEL_RFLAGS_MAX];

	(void)state;
	fake_wl(&s, "", "ns1", "", "", "", NULL);
	struct tele_conn c = { .inbound = true, .src = &s.mw, .rflags = TRF(RBAC_DENIED) | TRF(UPSTREAM_CONNECT_FAILURE) };
	tele_labels(&c, lab, flags);
	assert_string_equal(lab[TL_SRC_WORKLOAD], "unknown");
	assert_string_equal(lab[TL_SRC_APP], "unknown");
	assert_string_equal(lab[TL_SRC_VERSION], "unknown");
	assert_string_equal(lab[TL_SRC_CLUSTER], "unknown");
	assert_string_equal(lab[TL_SRC_NAMESPACE], "ns1");
	assert_string_equal(lab[TL_SRC_PRINCIPAL], "unknown");
	assert_string_equal(lab[TL_RESPONSE_FLAGS], "UF,RBAC");	/* Envoy's order */
	c.rflags = TRF(RBAC_DENIED);
	tele_labels(&c, lab, flags);
	assert_string_equal(lab[TL_RESPONSE_FLAGS], "RBAC");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_in_istio_order),
		cmocka_unit_test(test_inbound_both_workloads),
		cmocka_unit_test(test_nothing_known_is_unknown),
		cmocka_unit_test(test_empty_fields_unknown_and_flags),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
