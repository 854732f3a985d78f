/* Unit tests for src/proto (the protobuf-c code generated from our own
 * .proto files) and src/pb.c: resources encoded by a real protobuf
 * implementation from the real Istio and Envoy schemas
 * (tests/unit/golden/pb, see its README.md) decode with our code into
 * exactly the fields they were made from; fields we do not declare are
 * skipped; enum values no schema has are found by pb_find_unknown_enum(). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pb.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "istio/security/authorization.pb-c.h"
#include "istio/security/v1beta1/peer_authentication.pb-c.h"
#include "istio/workload/workload.pb-c.h"

#define TYPE "type.googleapis.com/"

/* ---- helpers -------------------------------------------------------------- */

static ProtobufCBinaryData read_golden(const char *name)
{
	const char *srcdir = getenv("srcdir");
	char path[512];
	ProtobufCBinaryData b = { 0, NULL };
	FILE *f;
	long n;

	snprintf(path, sizeof(path), "%s/tests/unit/golden/pb/%s.bin", srcdir ? srcdir : ".", name);
	f = fopen(path, "rb");
	if (f == NULL)
		fail_msg("cannot open %s", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n > 0);
	rewind(f);
	b.data = malloc((size_t)n);
	assert_non_null(b.data);
	assert_int_equal(fread(b.data, 1, (size_t)n, f), (size_t)n);
	b.len = (size_t)n;
	fclose(f);
	return b;
}

/* Decodes golden NAME.bin as message type d; the caller frees the result
 * with protobuf_c_message_free_unpacked(). */
static void *load(const ProtobufCMessageDescriptor *d, const char *name)
{
	ProtobufCBinaryData b = read_golden(name);
	ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, b.len, b.data);

	free(b.data);
	if (m == NULL)
		fail_msg("%s.bin does not decode as %s", name, d->name);
	return m;
}

static void unload(void *m)
{
	protobuf_c_message_free_unpacked(m, NULL);
}

/* The Any's payload, decoded as d (checks the type URL names d). */
static void *any_as(const Google__Protobuf__Any *a, const ProtobufCMessageDescriptor *d)
{
	char url[256];
	ProtobufCMessage *m;

	assert_non_null(a);
	snprintf(url, sizeof(url), TYPE "%s", d->name);
	assert_string_equal(a->type_url, url);
	m = protobuf_c_message_unpack(d, NULL, a->value.len, a->value.data);
	assert_non_null(m);
	return m;
}

static void assert_ip(ProtobufCBinaryData b, const char *text)
{
	unsigned char want[16];
	int af = strchr(text, ':') ? AF_INET6 : AF_INET;
	size_t n = af == AF_INET ? 4 : 16;

	assert_int_equal(inet_pton(af, text, want), 1);
	assert_int_equal(b.len, n);
	assert_memory_equal(b.data, want, n);
}

static void assert_dur(const Google__Protobuf__Duration *d, long long s, int ns)
{
	assert_non_null(d);
	assert_int_equal(d->seconds, s);
	assert_int_equal(d->nanos, ns);
}

static void assert_u32w(const Google__Protobuf__UInt32Value *w, uint32_t v)
{
	assert_non_null(w);
	assert_int_equal(w->value, v);
}

static void assert_boolw(const Google__Protobuf__BoolValue *w, bool v)
{
	assert_non_null(w);
	assert_int_equal(!!w->value, v);
}

static const Google__Protobuf__Value *struct_get(const Google__Protobuf__Struct *s, const char *key)
{
	assert_non_null(s);
	for (size_t i = 0; i < s->n_fields; i++)
		if (strcmp(s->fields[i]->key, key) == 0)
			return s->fields[i]->value;
	fail_msg("no key %s in Struct", key);
	return NULL;
}

static void assert_struct_str(const Google__Protobuf__Struct *s, const char *key, const char *v)
{
	const Google__Protobuf__Value *x = struct_get(s, key);

	assert_int_equal(x->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE);
	assert_string_equal(x->string_value, v);
}

static const Google__Protobuf__Struct *meta_get(const Envoy__Config__Core__V3__Metadata *m, const char *filter)
{
	assert_non_null(m);
	for (size_t i = 0; i < m->n_filter_metadata; i++)
		if (strcmp(m->filter_metadata[i]->key, filter) == 0)
			return m->filter_metadata[i]->value;
	fail_msg("no filter_metadata %s", filter);
	return NULL;
}

static const Google__Protobuf__Any *any_map_get(size_t n, void *const *entries, const char *key)
{
	/* Every map<string, Any> entry has the same layout: base, key, value. */
	struct entry { ProtobufCMessage base; char *key; Google__Protobuf__Any *value; };

	for (size_t i = 0; i < n; i++) {
		const struct entry *e = entries[i];

		if (strcmp(e->key, key) == 0)
			return e->value;
	}
	fail_msg("no map key %s", key);
	return NULL;
}

/* ---- istio.workload ------------------------------------------------------- */

static const Istio__Workload__PortList *services_get(const Istio__Workload__Workload *w, const char *key)
{
	for (size_t i = 0; i < w->n_services; i++)
		if (strcmp(w->services[i]->key, key) == 0)
			return w->services[i]->value;
	fail_msg("no service %s", key);
	return NULL;
}

static void test_workload(void **state)
{
	Istio__Workload__Address *a = load(&istio__workload__address__descriptor, "workload");
	const Istio__Workload__Workload *w;
	const Istio__Workload__PortList *pl;
	Google__Protobuf__Duration *d;

	assert_int_equal(a->type_case, ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD);
	w = a->workload;
	assert_string_equal(w->uid, "Kubernetes//Pod/default/client-5b9c");
	assert_string_equal(w->name, "client-5b9c");
	assert_string_equal(w->namespace_, "default");
	assert_int_equal(w->n_addresses, 2);
	assert_ip(w->addresses[0], "198.18.0.10");
	assert_ip(w->addresses[1], "fd00:198:18::a");
	assert_string_equal(w->hostname, "client.example");
	assert_string_equal(w->network, "net1");
	assert_int_equal(w->tunnel_protocol, ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE);
	assert_string_equal(w->trust_domain, "example.org");
	assert_string_equal(w->service_account, "client-sa");
	assert_non_null(w->waypoint);
	assert_int_equal(w->waypoint->destination_case, ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS);
	assert_string_equal(w->waypoint->address->network, "net1");
	assert_ip(w->waypoint->address->address, "198.18.0.200");
	assert_int_equal(w->waypoint->address->length_opt_case, ISTIO__WORKLOAD__NETWORK_ADDRESS__LENGTH_OPT__NOT_SET);
	assert_int_equal(w->waypoint->hbone_mtls_port, 15008);
	assert_non_null(w->network_gateway);
	assert_int_equal(w->network_gateway->destination_case, ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME);
	assert_string_equal(w->network_gateway->hostname->namespace_, "istio-system");
	assert_string_equal(w->network_gateway->hostname->hostname, "eastwest.istio-system.svc");
	assert_int_equal(w->network_gateway->hbone_mtls_port, 15009);
	assert_string_equal(w->node, "node-a");
	assert_string_equal(w->canonical_name, "client");
	assert_string_equal(w->canonical_revision, "v2");
	assert_int_equal(w->workload_type, ISTIO__WORKLOAD__WORKLOAD_TYPE__POD);
	assert_string_equal(w->workload_name, "client");
	assert_true(w->native_tunnel);
	assert_non_null(w->application_tunnel);
	assert_int_equal(w->application_tunnel->protocol, ISTIO__WORKLOAD__APPLICATION_TUNNEL__PROTOCOL__PROXY);
	assert_int_equal(w->application_tunnel->port, 15088);
	assert_int_equal(w->n_services, 2);
	pl = services_get(w, "default/server.default.svc.cluster.local");
	assert_int_equal(pl->n_ports, 2);
	assert_int_equal(pl->ports[0]->service_port, 80);
	assert_int_equal(pl->ports[0]->target_port, 8080);
	assert_int_equal(pl->ports[0]->app_protocol, ISTIO__WORKLOAD__APP_PROTOCOL__HTTP11);
	assert_int_equal(pl->ports[1]->service_port, 443);
	assert_int_equal(pl->ports[1]->target_port, 0);
	assert_int_equal(pl->ports[1]->app_protocol, ISTIO__WORKLOAD__APP_PROTOCOL__UNKNOWN);
	pl = services_get(w, "other/db.other.svc.cluster.local");
	assert_int_equal(pl->n_ports, 1);
	assert_int_equal(pl->ports[0]->service_port, 5432);
	assert_int_equal(pl->ports[0]->target_port, 5433);
	assert_int_equal(pl->ports[0]->app_protocol, ISTIO__WORKLOAD__APP_PROTOCOL__TCP);
	assert_int_equal(w->n_authorization_policies, 2);
	assert_string_equal(w->authorization_policies[0], "default/allow-client");
	assert_string_equal(w->authorization_policies[1], "default/deny-x");
	assert_int_equal(w->status, ISTIO__WORKLOAD__WORKLOAD_STATUS__UNHEALTHY);
	assert_string_equal(w->cluster_id, "Kubernetes");
	assert_non_null(w->locality);
	assert_string_equal(w->locality->region, "eu-west");
	assert_string_equal(w->locality->zone, "eu-west-1a");
	assert_string_equal(w->locality->subzone, "rack7");
	assert_int_equal(w->network_mode, ISTIO__WORKLOAD__NETWORK_MODE__HOST_NETWORK);
	assert_int_equal(w->n_extensions, 1);
	assert_string_equal(w->extensions[0]->name, "ext.a");
	d = any_as(w->extensions[0]->config, &google__protobuf__duration__descriptor);
	assert_dur(d, 2, 500000000);
	unload(d);
	assert_u32w(w->capacity, 3);
	unload(a);
}

static void test_service(void **state)
{
	Istio__Workload__Address *a = load(&istio__workload__address__descriptor, "service");
	const Istio__Workload__Service *s;
	const Istio__Workload__LoadBalancing *lb;

	assert_int_equal(a->type_case, ISTIO__WORKLOAD__ADDRESS__TYPE_SERVICE);
	s = a->service;
	assert_string_equal(s->name, "server");
	assert_string_equal(s->namespace_, "default");
	assert_string_equal(s->hostname, "server.default.svc.cluster.local");
	assert_int_equal(s->n_addresses, 4);
	assert_string_equal(s->addresses[0]->network, "net1");
	assert_ip(s->addresses[0]->address, "198.19.0.1");
	assert_int_equal(s->addresses[0]->length_opt_case, ISTIO__WORKLOAD__NETWORK_ADDRESS__LENGTH_OPT__NOT_SET);
	assert_string_equal(s->addresses[1]->network, "");
	assert_ip(s->addresses[1]->address, "fd00:198:19::1");
	assert_int_equal(s->addresses[1]->length_opt_case, ISTIO__WORKLOAD__NETWORK_ADDRESS__LENGTH_OPT__NOT_SET);
	assert_string_equal(s->addresses[2]->network, "net2");
	assert_ip(s->addresses[2]->address, "198.19.8.0");
	assert_int_equal(s->addresses[2]->length_opt_case, ISTIO__WORKLOAD__NETWORK_ADDRESS__LENGTH_OPT_LENGTH);
	assert_int_equal(s->addresses[2]->length, 24);
	/* Present and zero (upstream: proto3 optional): not the same as absent. */
	assert_ip(s->addresses[3]->address, "0.0.0.0");
	assert_int_equal(s->addresses[3]->length_opt_case, ISTIO__WORKLOAD__NETWORK_ADDRESS__LENGTH_OPT_LENGTH);
	assert_int_equal(s->addresses[3]->length, 0);
	assert_int_equal(s->n_ports, 2);
	assert_int_equal(s->ports[0]->service_port, 80);
	assert_int_equal(s->ports[0]->target_port, 8080);
	assert_int_equal(s->ports[0]->app_protocol, ISTIO__WORKLOAD__APP_PROTOCOL__HTTP2);
	assert_int_equal(s->ports[1]->service_port, 9000);
	assert_int_equal(s->ports[1]->target_port, 0);
	assert_int_equal(s->ports[1]->app_protocol, ISTIO__WORKLOAD__APP_PROTOCOL__GRPC);
	assert_int_equal(s->n_subject_alt_names, 1);
	assert_string_equal(s->subject_alt_names[0], "spiffe://example.org/ns/default/sa/server");
	assert_int_equal(s->waypoint->destination_case, ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_HOSTNAME);
	assert_string_equal(s->waypoint->hostname->namespace_, "default");
	assert_string_equal(s->waypoint->hostname->hostname, "waypoint.default.svc");
	assert_int_equal(s->waypoint->hbone_mtls_port, 15008);
	lb = s->load_balancing;
	assert_non_null(lb);
	assert_int_equal(lb->n_routing_preference, 4);
	assert_int_equal(lb->routing_preference[0], ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK);
	assert_int_equal(lb->routing_preference[1], ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION);
	assert_int_equal(lb->routing_preference[2], ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__ZONE);
	assert_int_equal(lb->routing_preference[3], ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__SUBZONE);
	assert_int_equal(lb->mode, ISTIO__WORKLOAD__LOAD_BALANCING__MODE__FAILOVER);
	assert_int_equal(lb->health_policy, ISTIO__WORKLOAD__LOAD_BALANCING__HEALTH_POLICY__ALLOW_ALL);
	assert_int_equal(s->ip_families, ISTIO__WORKLOAD__IPFAMILIES__DUAL);
	assert_int_equal(s->n_extensions, 1);
	assert_string_equal(s->extensions[0]->name, "ext.s");
	assert_null(s->extensions[0]->config);
	assert_true(s->canonical);
	assert_true(s->ingress_use_waypoint);
	assert_int_equal(s->n_weighted_waypoints, 2);
	assert_int_equal(s->weighted_waypoints[0]->weight, 30);
	assert_int_equal(s->weighted_waypoints[0]->destination->destination_case,
			 ISTIO__WORKLOAD__GATEWAY_ADDRESS__DESTINATION_ADDRESS);
	assert_ip(s->weighted_waypoints[0]->destination->address->address, "198.18.0.201");
	assert_int_equal(s->weighted_waypoints[0]->destination->hbone_mtls_port, 15008);
	assert_int_equal(s->weighted_waypoints[1]->weight, 70);
	assert_string_equal(s->weighted_waypoints[1]->destination->hostname->hostname, "wp2.ns2.svc");
	assert_string_equal(s->weighted_waypoints[1]->destination->hostname->namespace_, "ns2");
	assert_int_equal(s->weighted_waypoints[1]->destination->hbone_mtls_port, 0);
	assert_int_equal(s->visibility, ISTIO__WORKLOAD__SERVICE__VISIBILITY__NAMESPACE);
	unload(a);
}

/* ---- istio.security ------------------------------------------------------- */

static void test_authorization(void **state)
{
	Istio__Security__Authorization *z = load(&istio__security__authorization__descriptor, "authorization");
	const Istio__Security__Match *m;

	assert_string_equal(z->name, "allow-client");
	assert_string_equal(z->namespace_, "default");
	assert_int_equal(z->scope, ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR);
	assert_int_equal(z->action, ISTIO__SECURITY__ACTION__DENY);
	assert_true(z->dry_run);
	assert_int_equal(z->n_extensions, 1);
	assert_string_equal(z->extensions[0]->name, "a.ext");
	assert_int_equal(z->n_groups, 2);
	assert_int_equal(z->groups[1]->n_rules, 0);
	assert_int_equal(z->groups[0]->n_rules, 2);
	assert_int_equal(z->groups[0]->rules[0]->n_matches, 2);
	assert_int_equal(z->groups[0]->rules[1]->n_matches, 1);
	assert_int_equal(z->groups[0]->rules[1]->matches[0]->n_destination_ports, 1);
	assert_int_equal(z->groups[0]->rules[1]->matches[0]->destination_ports[0], 443);
	m = z->groups[0]->rules[0]->matches[1];
	assert_int_equal(m->n_principals, 1);
	assert_int_equal(m->principals[0]->match_type_case, ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX);
	assert_string_equal(m->principals[0]->prefix, "example.org/ns/prod/");
	m = z->groups[0]->rules[0]->matches[0];
	assert_int_equal(m->n_namespaces, 2);
	assert_int_equal(m->namespaces[0]->match_type_case, ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT);
	assert_string_equal(m->namespaces[0]->exact, "default");
	assert_int_equal(m->namespaces[1]->match_type_case, ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX);
	assert_string_equal(m->namespaces[1]->prefix, "team-");
	assert_int_equal(m->n_not_namespaces, 1);
	assert_int_equal(m->not_namespaces[0]->match_type_case, ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX);
	assert_string_equal(m->not_namespaces[0]->suffix, "-test");
	assert_int_equal(m->n_service_accounts, 1);
	assert_string_equal(m->service_accounts[0]->namespace_, "default");
	assert_string_equal(m->service_accounts[0]->serviceaccount, "client-sa");
	assert_int_equal(m->n_not_service_accounts, 1);
	assert_string_equal(m->not_service_accounts[0]->namespace_, "x");
	assert_string_equal(m->not_service_accounts[0]->serviceaccount, "y");
	assert_int_equal(m->n_principals, 1);
	assert_string_equal(m->principals[0]->exact, "example.org/ns/default/sa/client-sa");
	assert_int_equal(m->n_not_principals, 1);
	assert_int_equal(m->not_principals[0]->match_type_case, ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE);
	assert_non_null(m->not_principals[0]->presence);
	assert_int_equal(m->n_source_ips, 1);
	assert_ip(m->source_ips[0]->address, "198.18.0.0");
	assert_int_equal(m->source_ips[0]->length, 16);
	assert_int_equal(m->n_not_source_ips, 1);
	assert_ip(m->not_source_ips[0]->address, "198.18.0.99");
	assert_int_equal(m->not_source_ips[0]->length, 32);
	assert_int_equal(m->n_destination_ips, 1);
	assert_ip(m->destination_ips[0]->address, "fd00:198:18::");
	assert_int_equal(m->destination_ips[0]->length, 64);
	assert_int_equal(m->n_not_destination_ips, 1);
	assert_ip(m->not_destination_ips[0]->address, "198.18.0.98");
	assert_int_equal(m->n_destination_ports, 2);
	assert_int_equal(m->destination_ports[0], 8080);
	assert_int_equal(m->destination_ports[1], 9090);
	assert_int_equal(m->n_not_destination_ports, 1);
	assert_int_equal(m->not_destination_ports[0], 15021);
	assert_int_equal(m->n_extensions, 1);
	assert_string_equal(m->extensions[0]->name, "m.ext");
	unload(z);
}

static void test_peer_authentication(void **state)
{
	Istio__Security__V1beta1__PeerAuthentication *p =
		load(&istio__security__v1beta1__peer_authentication__descriptor, "peer-authentication");
	int seen = 0;

	assert_non_null(p->selector);
	assert_int_equal(p->selector->n_match_labels, 2);
	for (size_t i = 0; i < p->selector->n_match_labels; i++) {
		const char *k = p->selector->match_labels[i]->key, *v = p->selector->match_labels[i]->value;

		if (strcmp(k, "app") == 0)
			assert_string_equal(v, "server"), seen |= 1;
		else if (strcmp(k, "version") == 0)
			assert_string_equal(v, "v1"), seen |= 2;
	}
	assert_int_equal(seen, 3);
	assert_int_equal(p->mtls->mode, ISTIO__SECURITY__V1BETA1__PEER_AUTHENTICATION__MUTUAL_TLS__MODE__STRICT);
	assert_int_equal(p->n_port_level_mtls, 3);
	seen = 0;
	for (size_t i = 0; i < p->n_port_level_mtls; i++) {
		const Istio__Security__V1beta1__PeerAuthentication__PortLevelMtlsEntry *e = p->port_level_mtls[i];

		assert_non_null(e->value);
		if (e->key == 8080)
			assert_int_equal(e->value->mode, ISTIO__SECURITY__V1BETA1__PEER_AUTHENTICATION__MUTUAL_TLS__MODE__PERMISSIVE), seen |= 1;
		else if (e->key == 9090)
			assert_int_equal(e->value->mode, ISTIO__SECURITY__V1BETA1__PEER_AUTHENTICATION__MUTUAL_TLS__MODE__DISABLE), seen |= 2;
		else if (e->key == 15000)
			assert_int_equal(e->value->mode, ISTIO__SECURITY__V1BETA1__PEER_AUTHENTICATION__MUTUAL_TLS__MODE__UNSET), seen |= 4;
	}
	assert_int_equal(seen, 7);
	unload(p);
}

/* ---- envoy.config.cluster.v3 ---------------------------------------------- */

#define CL(x) ENVOY__CONFIG__CLUSTER__V3__CLUSTER__##x

static void test_cluster_eds(void **state)
{
	Envoy__Config__Cluster__V3__Cluster *c = load(&envoy__config__cluster__v3__cluster__descriptor, "cluster-eds");
	const Envoy__Config__Cluster__V3__CircuitBreakers *cb;
	const Envoy__Config__Cluster__V3__Cluster__TransportSocketMatch *tm;
	const Google__Protobuf__Struct *istio;
	const Google__Protobuf__Value *v;
	const Envoy__Config__Cluster__V3__Cluster__CommonLbConfig *clb;
	ProtobufCMessage *any;

	assert_string_equal(c->name, "outbound|80||server.default.svc.cluster.local");
	assert_string_equal(c->alt_stat_name, "server_80");
	assert_int_equal(c->cluster_discovery_type_case, CL(CLUSTER_DISCOVERY_TYPE_TYPE));
	assert_int_equal(c->type, CL(DISCOVERY_TYPE__EDS));
	assert_non_null(c->eds_cluster_config);
	assert_string_equal(c->eds_cluster_config->service_name, "outbound|80||server.default.svc.cluster.local");
	assert_int_equal(c->eds_cluster_config->eds_config->config_source_specifier_case,
			 ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
	assert_non_null(c->eds_cluster_config->eds_config->ads);
	assert_dur(c->eds_cluster_config->eds_config->initial_fetch_timeout, 0, 0);
	assert_int_equal(c->eds_cluster_config->eds_config->resource_api_version, ENVOY__CONFIG__CORE__V3__API_VERSION__V3);
	assert_dur(c->connect_timeout, 1, 500000000);
	assert_u32w(c->per_connection_buffer_limit_bytes, 32768);
	assert_int_equal(c->lb_policy, CL(LB_POLICY__LEAST_REQUEST));
	assert_int_equal(c->lb_config_case, CL(LB_CONFIG_LEAST_REQUEST_LB_CONFIG));
	assert_u32w(c->least_request_lb_config->choice_count, 3);
	cb = c->circuit_breakers;
	assert_non_null(cb);
	assert_int_equal(cb->n_thresholds, 2);
	assert_int_equal(cb->thresholds[0]->priority, ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__DEFAULT);
	assert_u32w(cb->thresholds[0]->max_connections, 4294967295u);
	assert_u32w(cb->thresholds[0]->max_pending_requests, 1024);
	assert_u32w(cb->thresholds[0]->max_requests, 2048);
	assert_u32w(cb->thresholds[0]->max_retries, 3);
	assert_true(cb->thresholds[0]->track_remaining);
	assert_null(cb->thresholds[0]->retry_budget);
	assert_null(cb->thresholds[0]->max_connection_pools);
	assert_int_equal(cb->thresholds[1]->priority, ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__HIGH);
	assert_u32w(cb->thresholds[1]->max_connections, 10);
	assert_null(cb->thresholds[1]->max_requests);
	assert_u32w(cb->thresholds[1]->max_connection_pools, 7);
	assert_true(cb->thresholds[1]->retry_budget->budget_percent->value == 25.5);
	assert_u32w(cb->thresholds[1]->retry_budget->min_retry_concurrency, 2);
	assert_int_equal(cb->n_per_host_thresholds, 1);
	assert_u32w(cb->per_host_thresholds[0]->max_connections, 100);
	assert_dur(c->dns_refresh_rate, 5, 0);
	assert_int_equal(c->dns_lookup_family, CL(DNS_LOOKUP_FAMILY__V4_ONLY));
	assert_dur(c->cleanup_interval, 60, 0);
	assert_int_equal(c->n_transport_socket_matches, 2);
	tm = c->transport_socket_matches[0];
	assert_string_equal(tm->name, "tlsMode-istio");
	assert_struct_str(tm->match, "tlsMode", "istio");
	assert_string_equal(tm->transport_socket->name, "envoy.transport_sockets.tls");
	assert_int_equal(tm->transport_socket->config_type_case,
			 ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG);
	assert_string_equal(tm->transport_socket->typed_config->type_url,
			    TYPE "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
	assert_true(tm->transport_socket->typed_config->value.len > 0);
	tm = c->transport_socket_matches[1];
	assert_string_equal(tm->name, "tlsMode-disabled");
	assert_non_null(tm->match);
	assert_int_equal(tm->match->n_fields, 0);
	assert_string_equal(tm->transport_socket->typed_config->type_url,
			    TYPE "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer");
	assert_int_equal(tm->transport_socket->typed_config->value.len, 0);
	/* Struct metadata: every JSON kind. */
	istio = meta_get(c->metadata, "istio");
	assert_int_equal(istio->n_fields, 4);
	v = struct_get(istio, "services");
	assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE);
	assert_int_equal(v->list_value->n_values, 1);
	assert_int_equal(v->list_value->values[0]->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE);
	assert_struct_str(v->list_value->values[0]->struct_value, "host", "server.default.svc.cluster.local");
	assert_struct_str(v->list_value->values[0]->struct_value, "name", "server");
	assert_struct_str(v->list_value->values[0]->struct_value, "namespace", "default");
	v = struct_get(istio, "default_original_port");
	assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE);
	assert_true(v->number_value == 80.0);
	v = struct_get(istio, "alpn_override");
	assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE);
	assert_false(v->bool_value);
	v = struct_get(istio, "nothing");
	assert_int_equal(v->kind_case, GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE);
	clb = c->common_lb_config;
	assert_true(clb->healthy_panic_threshold->value == 50.0);
	assert_int_equal(clb->locality_config_specifier_case, CL(COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_LOCALITY_WEIGHTED_LB_CONFIG));
	assert_non_null(clb->locality_weighted_lb_config);
	assert_dur(clb->update_merge_window, 0, 250000000);
	assert_false(clb->ignore_new_hosts_until_first_hc);
	assert_true(clb->close_connections_on_host_set_change);
	assert_u32w(c->upstream_connection_options->tcp_keepalive->keepalive_probes, 9);
	assert_u32w(c->upstream_connection_options->tcp_keepalive->keepalive_time, 300);
	assert_u32w(c->upstream_connection_options->tcp_keepalive->keepalive_interval, 75);
	assert_true(c->close_connections_on_host_health_failure);
	assert_true(c->ignore_health_on_host_removal);
	assert_int_equal(c->n_typed_extension_protocol_options, 1);
	any = any_as(any_map_get(c->n_typed_extension_protocol_options, (void *const *)c->typed_extension_protocol_options,
				 "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
		     &google__protobuf__struct__descriptor);
	assert_struct_str((Google__Protobuf__Struct *)any, "k", "v");
	unload(any);
	assert_true(c->respect_dns_ttl);
	/* A wrapper holding false is present, unlike an absent one. */
	assert_boolw(c->wait_for_warm_on_init, false);
	assert_null(c->transport_socket);
	assert_null(c->load_assignment);
	unload(c);
}

static void test_cluster_static(void **state)
{
	Envoy__Config__Cluster__V3__Cluster *c = load(&envoy__config__cluster__v3__cluster__descriptor, "cluster-static");
	const Envoy__Config__Core__V3__SocketAddress *sa;

	assert_string_equal(c->name, "inbound|8080||");
	assert_int_equal(c->cluster_discovery_type_case, CL(CLUSTER_DISCOVERY_TYPE_TYPE));
	/* STATIC is 0: explicit in JSON, so present in the oneof. */
	assert_int_equal(c->type, CL(DISCOVERY_TYPE__STATIC));
	assert_dur(c->connect_timeout, 10, 0);
	assert_int_equal(c->lb_policy, CL(LB_POLICY__RING_HASH));
	assert_int_equal(c->lb_config_case, CL(LB_CONFIG_RING_HASH_LB_CONFIG));
	assert_int_equal(c->ring_hash_lb_config->minimum_ring_size->value, 1024);
	assert_int_equal(c->ring_hash_lb_config->maximum_ring_size->value, 8388608);
	assert_int_equal(c->ring_hash_lb_config->hash_function, CL(RING_HASH_LB_CONFIG__HASH_FUNCTION__MURMUR_HASH_2));
	assert_string_equal(c->load_assignment->cluster_name, "inbound|8080||");
	assert_int_equal(c->load_assignment->n_endpoints, 1);
	assert_int_equal(c->load_assignment->endpoints[0]->n_lb_endpoints, 1);
	sa = c->load_assignment->endpoints[0]->lb_endpoints[0]->endpoint->address->socket_address;
	assert_string_equal(sa->address, "127.0.0.6");
	assert_int_equal(sa->port_specifier_case, ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
	assert_int_equal(sa->port_value, 8080);
	assert_int_equal(sa->protocol, ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP);
	assert_string_equal(c->transport_socket->name, "envoy.transport_sockets.raw_buffer");
	assert_int_equal(c->common_lb_config->locality_config_specifier_case,
			 CL(COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER_ZONE_AWARE_LB_CONFIG));
	assert_true(c->common_lb_config->zone_aware_lb_config->routing_enabled->value == 80.0);
	assert_int_equal(c->common_lb_config->zone_aware_lb_config->min_cluster_size->value, 6);
	assert_true(c->common_lb_config->zone_aware_lb_config->fail_traffic_on_panic);
	assert_null(c->common_lb_config->healthy_panic_threshold);
	unload(c);
}

static void test_cluster_origdst_custom(void **state)
{
	Envoy__Config__Cluster__V3__Cluster *c = load(&envoy__config__cluster__v3__cluster__descriptor, "cluster-origdst");
	Google__Protobuf__Empty *e;

	assert_string_equal(c->name, "PassthroughCluster");
	assert_int_equal(c->type, CL(DISCOVERY_TYPE__ORIGINAL_DST));
	assert_dur(c->connect_timeout, 0, 1000);
	assert_int_equal(c->lb_policy, CL(LB_POLICY__CLUSTER_PROVIDED));
	assert_int_equal(c->lb_config_case, CL(LB_CONFIG_ORIGINAL_DST_LB_CONFIG));
	assert_true(c->original_dst_lb_config->use_http_header);
	assert_string_equal(c->original_dst_lb_config->http_header_name, "x-dst");
	assert_u32w(c->original_dst_lb_config->upstream_port_override, 0);
	assert_int_equal(c->dns_lookup_family, CL(DNS_LOOKUP_FAMILY__ALL));
	unload(c);

	c = load(&envoy__config__cluster__v3__cluster__descriptor, "cluster-custom");
	assert_string_equal(c->name, "maglev-custom");
	assert_int_equal(c->cluster_discovery_type_case, CL(CLUSTER_DISCOVERY_TYPE_CLUSTER_TYPE));
	assert_string_equal(c->cluster_type->name, "envoy.clusters.aggregate");
	e = any_as(c->cluster_type->typed_config, &google__protobuf__empty__descriptor);
	unload(e);
	assert_int_equal(c->lb_policy, CL(LB_POLICY__MAGLEV));
	assert_int_equal(c->lb_config_case, CL(LB_CONFIG_MAGLEV_LB_CONFIG));
	assert_int_equal(c->maglev_lb_config->table_size->value, 65537);
	/* Negative durations: both parts carry the sign. */
	assert_dur(c->connect_timeout, -1, -500000000);
	unload(c);
}

/* ---- envoy.config.endpoint.v3 --------------------------------------------- */

#define EP(x) ENVOY__CONFIG__ENDPOINT__V3__##x
#define CORE(x) ENVOY__CONFIG__CORE__V3__##x

static void test_cla(void **state)
{
	Envoy__Config__Endpoint__V3__ClusterLoadAssignment *a =
		load(&envoy__config__endpoint__v3__cluster_load_assignment__descriptor, "cla");
	const Envoy__Config__Endpoint__V3__LocalityLbEndpoints *l;
	const Envoy__Config__Endpoint__V3__LbEndpoint *e;
	const Envoy__Config__Core__V3__SocketAddress *sa;

	assert_string_equal(a->cluster_name, "outbound|80||server.default.svc.cluster.local");
	assert_int_equal(a->n_endpoints, 2);
	l = a->endpoints[0];
	assert_string_equal(l->locality->region, "eu-west");
	assert_string_equal(l->locality->zone, "eu-west-1a");
	assert_string_equal(l->locality->sub_zone, "r1");
	assert_u32w(l->load_balancing_weight, 10);
	assert_int_equal(l->priority, 0);
	assert_u32w(l->proximity, 1);
	assert_true(struct_get(meta_get(l->metadata, "loc"), "a")->number_value == 1.0);
	assert_int_equal(l->lb_config_case, EP(LOCALITY_LB_ENDPOINTS__LB_CONFIG__NOT_SET));
	assert_int_equal(l->n_lb_endpoints, 3);
	e = l->lb_endpoints[0];
	assert_int_equal(e->host_identifier_case, EP(LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT));
	assert_int_equal(e->endpoint->address->address_case, CORE(ADDRESS__ADDRESS_SOCKET_ADDRESS));
	sa = e->endpoint->address->socket_address;
	assert_string_equal(sa->address, "198.18.0.21");
	assert_int_equal(sa->port_value, 8080);
	assert_int_equal(e->endpoint->health_check_config->port_value, 8081);
	assert_string_equal(e->endpoint->health_check_config->hostname, "hc");
	assert_true(e->endpoint->health_check_config->disable_active_health_check);
	assert_null(e->endpoint->health_check_config->address);
	assert_string_equal(e->endpoint->hostname, "server-1");
	assert_int_equal(e->endpoint->n_additional_addresses, 1);
	assert_string_equal(e->endpoint->additional_addresses[0]->address->socket_address->address, "fd00:198:18::15");
	assert_int_equal(e->endpoint->additional_addresses[0]->address->socket_address->port_value, 8080);
	assert_int_equal(e->health_status, CORE(HEALTH_STATUS__HEALTHY));
	assert_struct_str(meta_get(e->metadata, "envoy.transportSocketMatch"), "tlsMode", "istio");
	assert_struct_str(meta_get(e->metadata, "istio"), "workload", "server;default;server;v1;Kubernetes");
	assert_u32w(e->load_balancing_weight, 3);
	e = l->lb_endpoints[1];
	sa = e->endpoint->address->socket_address;
	assert_string_equal(sa->address, "198.18.0.22");
	assert_int_equal(sa->port_specifier_case, CORE(SOCKET_ADDRESS__PORT_SPECIFIER_NAMED_PORT));
	assert_string_equal(sa->named_port, "http");
	assert_int_equal(sa->protocol, CORE(SOCKET_ADDRESS__PROTOCOL__UDP));
	assert_string_equal(sa->resolver_name, "r");
	assert_true(sa->ipv4_compat);
	assert_int_equal(e->health_status, CORE(HEALTH_STATUS__DRAINING));
	assert_null(e->load_balancing_weight);
	e = l->lb_endpoints[2];
	assert_int_equal(e->host_identifier_case, EP(LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT_NAME));
	assert_string_equal(e->endpoint_name, "named-1");
	assert_int_equal(e->health_status, CORE(HEALTH_STATUS__DEGRADED));
	l = a->endpoints[1];
	assert_string_equal(l->locality->region, "us-east");
	assert_string_equal(l->locality->zone, "");
	assert_int_equal(l->priority, 1);
	assert_int_equal(l->n_lb_endpoints, 0);
	assert_int_equal(l->lb_config_case, EP(LOCALITY_LB_ENDPOINTS__LB_CONFIG_LOAD_BALANCER_ENDPOINTS));
	assert_int_equal(l->load_balancer_endpoints->n_lb_endpoints, 2);
	e = l->load_balancer_endpoints->lb_endpoints[0];
	assert_int_equal(e->endpoint->address->address_case, CORE(ADDRESS__ADDRESS_PIPE));
	assert_string_equal(e->endpoint->address->pipe->path, "/run/x.sock");
	assert_int_equal(e->endpoint->address->pipe->mode, 384);
	assert_int_equal(e->health_status, CORE(HEALTH_STATUS__UNHEALTHY));
	e = l->load_balancer_endpoints->lb_endpoints[1];
	assert_int_equal(e->endpoint->address->address_case, CORE(ADDRESS__ADDRESS_ENVOY_INTERNAL_ADDRESS));
	assert_int_equal(e->endpoint->address->envoy_internal_address->address_name_specifier_case,
			 CORE(ENVOY_INTERNAL_ADDRESS__ADDRESS_NAME_SPECIFIER_SERVER_LISTENER_NAME));
	assert_string_equal(e->endpoint->address->envoy_internal_address->server_listener_name, "connect_originate");
	assert_string_equal(e->endpoint->address->envoy_internal_address->endpoint_id, "e1");
	assert_int_equal(e->health_status, CORE(HEALTH_STATUS__TIMEOUT));
	assert_int_equal(a->n_named_endpoints, 1);
	assert_string_equal(a->named_endpoints[0]->key, "named-1");
	assert_string_equal(a->named_endpoints[0]->value->address->socket_address->address, "198.18.0.23");
	assert_int_equal(a->named_endpoints[0]->value->address->socket_address->port_value, 9);
	assert_int_equal(a->policy->n_drop_overloads, 1);
	assert_string_equal(a->policy->drop_overloads[0]->category, "throttle");
	assert_int_equal(a->policy->drop_overloads[0]->drop_percentage->numerator, 5);
	assert_int_equal(a->policy->drop_overloads[0]->drop_percentage->denominator,
			 ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__TEN_THOUSAND);
	assert_u32w(a->policy->overprovisioning_factor, 140);
	assert_dur(a->policy->endpoint_stale_after, 30, 0);
	assert_true(a->policy->weighted_priority_health);
	unload(a);
}

/* ---- envoy.config.route.v3 ------------------------------------------------ */

#define RT(x) ENVOY__CONFIG__ROUTE__V3__##x

static void assert_hdr(const Envoy__Config__Core__V3__HeaderValueOption *h)
{
	assert_string_equal(h->header->key, "x-added");
	assert_string_equal(h->header->value, "yes");
	assert_int_equal(h->append_action, CORE(HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__OVERWRITE_IF_EXISTS_OR_ADD));
	assert_true(h->keep_empty_value);
	assert_null(h->append);
}

static void test_route(void **state)
{
	Envoy__Config__Route__V3__RouteConfiguration *rc =
		load(&envoy__config__route__v3__route_configuration__descriptor, "route");
	const Envoy__Config__Route__V3__VirtualHost *vh;
	const Envoy__Config__Route__V3__Route *r;
	const Envoy__Config__Route__V3__RouteMatch *m;
	const Envoy__Config__Route__V3__RouteAction *ra;
	const Envoy__Config__Route__V3__HeaderMatcher *h;
	const Envoy__Config__Route__V3__WeightedCluster *wc;

	assert_string_equal(rc->name, "http.8080");
	assert_int_equal(rc->n_internal_only_headers, 1);
	assert_string_equal(rc->internal_only_headers[0], "x-internal");
	assert_int_equal(rc->n_response_headers_to_add, 1);
	assert_hdr(rc->response_headers_to_add[0]);
	assert_int_equal(rc->n_response_headers_to_remove, 1);
	assert_string_equal(rc->response_headers_to_remove[0], "server");
	assert_int_equal(rc->n_request_headers_to_add, 1);
	assert_string_equal(rc->request_headers_to_add[0]->header->key, "x-raw");
	assert_int_equal(rc->request_headers_to_add[0]->header->raw_value.len, 4);
	assert_memory_equal(rc->request_headers_to_add[0]->header->raw_value.data, "\xffraw", 4);
	assert_boolw(rc->request_headers_to_add[0]->append, false);
	assert_string_equal(rc->request_headers_to_remove[0], "x-b");
	assert_boolw(rc->validate_clusters, false);
	assert_true(rc->most_specific_header_mutations_wins);
	assert_u32w(rc->max_direct_response_body_size_bytes, 4096);
	assert_true(rc->ignore_port_in_host_matching);
	assert_int_equal(rc->n_typed_per_filter_config, 1);
	assert_string_equal(rc->typed_per_filter_config[0]->key, "rc.f");
	assert_struct_str(meta_get(rc->metadata, "rc"), "s", "x");

	assert_int_equal(rc->n_virtual_hosts, 2);
	vh = rc->virtual_hosts[1];
	assert_string_equal(vh->name, "allow_any");
	assert_int_equal(vh->n_domains, 1);
	assert_string_equal(vh->domains[0], "*");
	assert_string_equal(vh->routes[0]->route->cluster, "PassthroughCluster");
	vh = rc->virtual_hosts[0];
	assert_string_equal(vh->name, "server.default.svc.cluster.local:80");
	assert_int_equal(vh->n_domains, 4);
	assert_string_equal(vh->domains[3], "*.example");
	assert_int_equal(vh->require_tls, RT(VIRTUAL_HOST__TLS_REQUIREMENT_TYPE__EXTERNAL_ONLY));
	assert_hdr(vh->request_headers_to_add[0]);
	assert_hdr(vh->response_headers_to_add[0]);
	assert_string_equal(vh->request_headers_to_remove[0], "q");
	assert_string_equal(vh->response_headers_to_remove[0], "r");
	assert_string_equal(vh->typed_per_filter_config[0]->key, "vh.f");
	assert_string_equal(vh->typed_per_filter_config[0]->value->type_url, TYPE "google.protobuf.Empty");
	assert_true(struct_get(meta_get(vh->metadata, "vh"), "n")->number_value == 1.0);
	assert_int_equal(vh->n_routes, 9);

	/* Route 0: prefix, headers of every form, a full RouteAction. */
	r = vh->routes[0];
	assert_string_equal(r->name, "r-prefix");
	assert_string_equal(r->stat_prefix, "rp");
	m = r->match;
	assert_int_equal(m->path_specifier_case, RT(ROUTE_MATCH__PATH_SPECIFIER_PREFIX));
	assert_string_equal(m->prefix, "/api/");
	assert_boolw(m->case_sensitive, false);
	assert_non_null(m->grpc);
	assert_int_equal(m->n_headers, 9);
	h = m->headers[0];
	assert_string_equal(h->name, "x-env");
	assert_int_equal(h->header_match_specifier_case, RT(HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH));
	assert_int_equal(h->string_match->match_pattern_case, ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT);
	assert_string_equal(h->string_match->exact, "prod");
	assert_true(h->string_match->ignore_case);
	h = m->headers[1];
	assert_int_equal(h->header_match_specifier_case, RT(HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH));
	assert_true(h->present_match);
	assert_true(h->invert_match);
	h = m->headers[2];
	assert_int_equal(h->header_match_specifier_case, RT(HEADER_MATCHER__HEADER_MATCH_SPECIFIER_RANGE_MATCH));
	assert_int_equal(h->range_match->start, -5);
	assert_int_equal(h->range_match->end, 10);
	h = m->headers[3];
	assert_int_equal(h->header_match_specifier_case, RT(HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH));
	assert_string_equal(h->safe_regex_match->regex, "a.*b");
	assert_true(h->treat_missing_header_as_empty);
	assert_int_equal(m->headers[4]->header_match_specifier_case, RT(HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH));
	assert_string_equal(m->headers[4]->exact_match, "e");
	assert_int_equal(m->headers[5]->header_match_specifier_case, RT(HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PREFIX_MATCH));
	assert_string_equal(m->headers[5]->prefix_match, "p");
	assert_int_equal(m->headers[6]->header_match_specifier_case, RT(HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SUFFIX_MATCH));
	assert_string_equal(m->headers[6]->suffix_match, "s");
	assert_int_equal(m->headers[7]->header_match_specifier_case, RT(HEADER_MATCHER__HEADER_MATCH_SPECIFIER_CONTAINS_MATCH));
	assert_string_equal(m->headers[7]->contains_match, "c");
	assert_int_equal(m->headers[8]->string_match->match_pattern_case,
			 ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX);
	assert_string_equal(m->headers[8]->string_match->safe_regex->regex, "^v[0-9]$");
	assert_int_equal(r->action_case, RT(ROUTE__ACTION_ROUTE));
	ra = r->route;
	assert_int_equal(ra->cluster_specifier_case, RT(ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER));
	assert_string_equal(ra->cluster, "outbound|80||server.default.svc.cluster.local");
	assert_dur(ra->timeout, 0, 0);
	assert_dur(ra->idle_timeout, 3600, 0);
	assert_string_equal(ra->prefix_rewrite, "/");
	assert_int_equal(ra->host_rewrite_specifier_case, RT(ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL));
	assert_string_equal(ra->host_rewrite_literal, "server.internal");
	assert_int_equal(ra->priority, CORE(ROUTING_PRIORITY__HIGH));
	assert_int_equal(ra->cluster_not_found_response_code, RT(ROUTE_ACTION__CLUSTER_NOT_FOUND_RESPONSE_CODE__NOT_FOUND));
	assert_int_equal(ra->n_upgrade_configs, 2);
	assert_string_equal(ra->upgrade_configs[0]->upgrade_type, "websocket");
	assert_null(ra->upgrade_configs[0]->enabled);
	assert_string_equal(ra->upgrade_configs[1]->upgrade_type, "CONNECT");
	assert_boolw(ra->upgrade_configs[1]->enabled, false);
	assert_true(ra->upgrade_configs[1]->connect_config->allow_post);
	assert_dur(ra->max_stream_duration->max_stream_duration, 10, 0);
	assert_dur(ra->max_stream_duration->grpc_timeout_header_max, 5, 0);
	assert_null(ra->max_stream_duration->grpc_timeout_header_offset);
	assert_struct_str(meta_get(ra->metadata_match, "envoy.lb"), "version", "v1");
	assert_true(ra->append_x_forwarded_host);
	assert_struct_str(meta_get(r->metadata, "istio"), "config", "/apis/x");
	assert_hdr(r->request_headers_to_add[0]);
	assert_string_equal(r->request_headers_to_remove[0], "x-rm");
	assert_hdr(r->response_headers_to_add[0]);
	assert_string_equal(r->response_headers_to_remove[0], "x-rs");
	assert_string_equal(r->typed_per_filter_config[0]->key, "envoy.filters.http.fault");

	/* Route 1: exact path, weighted clusters. */
	r = vh->routes[1];
	assert_int_equal(r->match->path_specifier_case, RT(ROUTE_MATCH__PATH_SPECIFIER_PATH));
	assert_string_equal(r->match->path, "/exact");
	assert_null(r->match->case_sensitive);
	assert_int_equal(r->route->cluster_specifier_case, RT(ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS));
	wc = r->route->weighted_clusters;
	assert_u32w(wc->total_weight, 100);
	assert_string_equal(wc->runtime_key_prefix, "rk");
	assert_int_equal(wc->random_value_specifier_case, RT(WEIGHTED_CLUSTER__RANDOM_VALUE_SPECIFIER_HEADER_NAME));
	assert_string_equal(wc->header_name, "x-w");
	assert_int_equal(wc->n_clusters, 2);
	assert_string_equal(wc->clusters[0]->name, "c1");
	assert_u32w(wc->clusters[0]->weight, 90);
	assert_hdr(wc->clusters[0]->request_headers_to_add[0]);
	assert_int_equal(wc->clusters[0]->host_rewrite_specifier_case,
			 RT(WEIGHTED_CLUSTER__CLUSTER_WEIGHT__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL));
	assert_string_equal(wc->clusters[0]->host_rewrite_literal, "c1.host");
	assert_string_equal(wc->clusters[0]->typed_per_filter_config[0]->key, "f");
	assert_string_equal(wc->clusters[1]->name, "c2");
	assert_u32w(wc->clusters[1]->weight, 10);
	assert_string_equal(wc->clusters[1]->cluster_header, "x-c");
	assert_int_equal(meta_get(wc->clusters[1]->metadata_match, "m")->n_fields, 0);
	assert_string_equal(wc->clusters[1]->request_headers_to_remove[0], "a");
	assert_string_equal(wc->clusters[1]->response_headers_to_remove[0], "b");
	assert_hdr(wc->clusters[1]->response_headers_to_add[0]);

	r = vh->routes[2];
	assert_int_equal(r->match->path_specifier_case, RT(ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX));
	assert_string_equal(r->match->safe_regex->regex, "^/re/[0-9]+$");
	assert_int_equal(r->route->cluster_specifier_case, RT(ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER_HEADER));
	assert_string_equal(r->route->cluster_header, "x-cluster");
	assert_int_equal(r->route->host_rewrite_specifier_case, RT(ROUTE_ACTION__HOST_REWRITE_SPECIFIER_AUTO_HOST_REWRITE));
	assert_boolw(r->route->auto_host_rewrite, true);

	r = vh->routes[3];
	assert_int_equal(r->match->path_specifier_case, RT(ROUTE_MATCH__PATH_SPECIFIER_CONNECT_MATCHER));
	assert_non_null(r->match->connect_matcher);
	assert_string_equal(r->route->cluster, "tunnel");
	assert_int_equal(r->route->host_rewrite_specifier_case, RT(ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_HEADER));
	assert_string_equal(r->route->host_rewrite_header, "x-host");

	r = vh->routes[4];
	assert_int_equal(r->match->path_specifier_case, RT(ROUTE_MATCH__PATH_SPECIFIER_PATH_SEPARATED_PREFIX));
	assert_string_equal(r->match->path_separated_prefix, "/sep");
	assert_int_equal(r->action_case, RT(ROUTE__ACTION_REDIRECT));
	assert_int_equal(r->redirect->scheme_rewrite_specifier_case, RT(REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_HTTPS_REDIRECT));
	assert_true(r->redirect->https_redirect);
	assert_string_equal(r->redirect->host_redirect, "h");
	assert_int_equal(r->redirect->port_redirect, 8443);
	assert_int_equal(r->redirect->path_rewrite_specifier_case, RT(REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PATH_REDIRECT));
	assert_string_equal(r->redirect->path_redirect, "/new");
	assert_int_equal(r->redirect->response_code, RT(REDIRECT_ACTION__REDIRECT_RESPONSE_CODE__PERMANENT_REDIRECT));
	assert_true(r->redirect->strip_query);

	r = vh->routes[5];
	assert_int_equal(r->redirect->scheme_rewrite_specifier_case, RT(REDIRECT_ACTION__SCHEME_REWRITE_SPECIFIER_SCHEME_REDIRECT));
	assert_string_equal(r->redirect->scheme_redirect, "http");
	assert_int_equal(r->redirect->path_rewrite_specifier_case, RT(REDIRECT_ACTION__PATH_REWRITE_SPECIFIER_PREFIX_REWRITE));
	assert_string_equal(r->redirect->prefix_rewrite, "/p2");
	assert_int_equal(r->redirect->response_code, RT(REDIRECT_ACTION__REDIRECT_RESPONSE_CODE__MOVED_PERMANENTLY));

	r = vh->routes[6];
	assert_int_equal(r->action_case, RT(ROUTE__ACTION_DIRECT_RESPONSE));
	assert_int_equal(r->direct_response->status, 503);
	assert_int_equal(r->direct_response->body->specifier_case, CORE(DATA_SOURCE__SPECIFIER_INLINE_STRING));
	assert_string_equal(r->direct_response->body->inline_string, "no healthy upstream");
	r = vh->routes[7];
	assert_int_equal(r->direct_response->status, 200);
	assert_int_equal(r->direct_response->body->specifier_case, CORE(DATA_SOURCE__SPECIFIER_INLINE_BYTES));
	assert_int_equal(r->direct_response->body->inline_bytes.len, 5);
	assert_memory_equal(r->direct_response->body->inline_bytes.data, "\x00\x01" "bin", 5);
	r = vh->routes[8];
	assert_int_equal(r->action_case, RT(ROUTE__ACTION_NON_FORWARDING_ACTION));
	assert_non_null(r->non_forwarding_action);
	unload(rc);
}

/* ---- envoy.config.listener.v3 and the network filters --------------------- */

#define LS(x) ENVOY__CONFIG__LISTENER__V3__##x
#define TP(x) ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__##x
#define HC(x) ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__##x

static void test_listener(void **state)
{
	Envoy__Config__Listener__V3__Listener *l = load(&envoy__config__listener__v3__listener__descriptor, "listener");
	const Envoy__Config__Listener__V3__FilterChain *fc;
	const Envoy__Config__Listener__V3__FilterChainMatch *fm;
	Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy *tp;
	Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *hcm;

	assert_string_equal(l->name, "virtualOutbound");
	assert_string_equal(l->address->socket_address->address, "0.0.0.0");
	assert_int_equal(l->address->socket_address->port_value, 15001);
	assert_int_equal(l->n_additional_addresses, 1);
	assert_string_equal(l->additional_addresses[0]->address->socket_address->address, "::");
	assert_string_equal(l->stat_prefix, "vo");
	assert_boolw(l->use_original_dst, true);
	assert_u32w(l->per_connection_buffer_limit_bytes, 0);
	assert_int_equal(meta_get(l->metadata, "l")->n_fields, 0);
	assert_int_equal(l->drain_type, LS(LISTENER__DRAIN_TYPE__MODIFY_ONLY));
	assert_int_equal(l->n_listener_filters, 2);
	assert_string_equal(l->listener_filters[0]->name, "envoy.filters.listener.original_dst");
	assert_int_equal(l->listener_filters[0]->config_type_case, LS(LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG));
	assert_string_equal(l->listener_filters[0]->typed_config->type_url,
			    TYPE "envoy.extensions.filters.listener.original_dst.v3.OriginalDst");
	assert_string_equal(l->listener_filters[1]->name, "no-config");
	assert_int_equal(l->listener_filters[1]->config_type_case, LS(LISTENER_FILTER__CONFIG_TYPE__NOT_SET));
	assert_dur(l->listener_filters_timeout, 0, 100000000);
	assert_true(l->continue_on_listener_filters_timeout);
	assert_boolw(l->transparent, false);
	assert_boolw(l->freebind, true);
	assert_int_equal(l->traffic_direction, CORE(TRAFFIC_DIRECTION__OUTBOUND));
	assert_boolw(l->bind_to_port, false);

	assert_int_equal(l->n_filter_chains, 3);
	fc = l->filter_chains[0];
	assert_string_equal(fc->name, "tcp-80");
	fm = fc->filter_chain_match;
	assert_u32w(fm->destination_port, 80);
	assert_int_equal(fm->n_prefix_ranges, 2);
	assert_string_equal(fm->prefix_ranges[0]->address_prefix, "198.19.0.1");
	assert_u32w(fm->prefix_ranges[0]->prefix_len, 32);
	assert_string_equal(fm->prefix_ranges[1]->address_prefix, "fd00::");
	assert_null(fm->prefix_ranges[1]->prefix_len);
	assert_string_equal(fm->address_suffix, "x");
	assert_u32w(fm->suffix_len, 0);
	assert_int_equal(fm->n_direct_source_prefix_ranges, 1);
	assert_string_equal(fm->direct_source_prefix_ranges[0]->address_prefix, "10.0.0.0");
	assert_u32w(fm->direct_source_prefix_ranges[0]->prefix_len, 8);
	assert_int_equal(fm->source_type, LS(FILTER_CHAIN_MATCH__CONNECTION_SOURCE_TYPE__SAME_IP_OR_LOOPBACK));
	assert_string_equal(fm->source_prefix_ranges[0]->address_prefix, "198.18.0.0");
	assert_int_equal(fm->n_source_ports, 2);
	assert_int_equal(fm->source_ports[0], 1234);
	assert_int_equal(fm->source_ports[1], 5678);
	assert_int_equal(fm->n_server_names, 2);
	assert_string_equal(fm->server_names[1], "*.example");
	assert_string_equal(fm->transport_protocol, "tls");
	assert_int_equal(fm->n_application_protocols, 3);
	assert_string_equal(fm->application_protocols[0], "istio-peer-exchange");
	assert_string_equal(fm->application_protocols[2], "h2");
	assert_boolw(fc->use_proxy_proto, false);
	assert_true(struct_get(meta_get(fc->metadata, "fc"), "x")->bool_value);
	assert_string_equal(fc->transport_socket->typed_config->type_url,
			    TYPE "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext");
	assert_dur(fc->transport_socket_connect_timeout, 10, 0);
	assert_int_equal(fc->n_filters, 1);
	assert_string_equal(fc->filters[0]->name, "envoy.filters.network.tcp_proxy");
	assert_int_equal(fc->filters[0]->config_type_case, LS(FILTER__CONFIG_TYPE_TYPED_CONFIG));
	/* A typed config is an Any: decoded in a second step, as the snapshot
	 * builder will. */
	tp = any_as(fc->filters[0]->typed_config, &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor);
	assert_string_equal(tp->stat_prefix, "outbound|80||server");
	assert_int_equal(tp->cluster_specifier_case, TP(TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER));
	assert_string_equal(tp->cluster, "outbound|80||server.default.svc.cluster.local");
	assert_dur(tp->idle_timeout, 3600, 0);
	assert_dur(tp->downstream_idle_timeout, 10, 0);
	assert_dur(tp->upstream_idle_timeout, 20, 0);
	assert_u32w(tp->max_connect_attempts, 3);
	assert_dur(tp->max_downstream_connection_duration, 86400, 0);
	assert_struct_str(meta_get(tp->metadata_match, "envoy.lb"), "k", "v");
	unload(tp);

	fc = l->filter_chains[1];
	assert_string_equal(fc->filter_chain_match->transport_protocol, "raw_buffer");
	assert_int_equal(fc->filter_chain_match->source_type, LS(FILTER_CHAIN_MATCH__CONNECTION_SOURCE_TYPE__EXTERNAL));
	assert_null(fc->filter_chain_match->destination_port);
	hcm = any_as(fc->filters[0]->typed_config,
		     &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor);
	assert_int_equal(hcm->codec_type, HC(HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2));
	assert_string_equal(hcm->stat_prefix, "inbound_0.0.0.0_8080");
	assert_int_equal(hcm->route_specifier_case, HC(HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS));
	assert_string_equal(hcm->rds->route_config_name, "8080");
	assert_non_null(hcm->rds->config_source->ads);
	assert_int_equal(hcm->rds->config_source->resource_api_version, CORE(API_VERSION__V3));
	assert_int_equal(hcm->n_http_filters, 1);
	assert_string_equal(hcm->http_filters[0]->name, "envoy.filters.http.router");
	assert_string_equal(hcm->http_filters[0]->typed_config->type_url, TYPE "envoy.extensions.filters.http.router.v3.Router");
	assert_true(hcm->http_filters[0]->is_optional);
	assert_true(hcm->http_filters[0]->disabled);
	assert_dur(hcm->drain_timeout, 5, 0);
	assert_boolw(hcm->use_remote_address, false);
	assert_int_equal(hcm->xff_num_trusted_hops, 2);
	assert_dur(hcm->stream_idle_timeout, 0, 0);
	assert_dur(hcm->request_timeout, 30, 0);
	unload(hcm);

	fc = l->filter_chains[2];
	assert_null(fc->filter_chain_match);
	assert_int_equal(fc->n_filters, 2);
	hcm = any_as(fc->filters[0]->typed_config,
		     &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor);
	assert_int_equal(hcm->route_specifier_case, HC(HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG));
	assert_string_equal(hcm->route_config->name, "inline-rc");
	assert_string_equal(hcm->route_config->virtual_hosts[0]->domains[0], "*");
	unload(hcm);
	tp = any_as(fc->filters[1]->typed_config, &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor);
	assert_int_equal(tp->cluster_specifier_case, TP(TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS));
	assert_int_equal(tp->weighted_clusters->n_clusters, 2);
	assert_string_equal(tp->weighted_clusters->clusters[0]->name, "a");
	assert_int_equal(tp->weighted_clusters->clusters[0]->weight, 1);
	assert_string_equal(tp->weighted_clusters->clusters[1]->name, "b");
	assert_int_equal(tp->weighted_clusters->clusters[1]->weight, 2);
	assert_non_null(tp->weighted_clusters->clusters[1]->metadata_match);
	unload(tp);

	fc = l->default_filter_chain;
	assert_string_equal(fc->name, "PassthroughFilterChain");
	tp = any_as(fc->filters[0]->typed_config, &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor);
	assert_string_equal(tp->cluster, "PassthroughCluster");
	assert_null(tp->idle_timeout);
	unload(tp);
	unload(l);
}

/* ---- fields we do not declare are skipped ---------------------------------- */

static void test_unknown_fields_skipped(void **state)
{
	Envoy__Config__Cluster__V3__Cluster *c =
		load(&envoy__config__cluster__v3__cluster__descriptor, "cluster-unknown-fields");
	Istio__Workload__Address *a;

	/* health_checks, outlier_detection, lb_subset_config, filters and
	 * lrs_server are real upstream fields our subset leaves out; the fields
	 * around them still decode. */
	assert_string_equal(c->name, "skip-me-not");
	assert_int_equal(c->type, CL(DISCOVERY_TYPE__STRICT_DNS));
	assert_dur(c->connect_timeout, 2, 0);
	assert_int_equal(c->lb_policy, CL(LB_POLICY__RANDOM));
	assert_true(c->base.n_unknown_fields >= 5);
	unload(c);

	/* Numbers no schema has, of every wire type, after the known fields. */
	a = load(&istio__workload__address__descriptor, "workload-future-fields");
	assert_int_equal(a->type_case, ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD);
	assert_string_equal(a->workload->uid, "u1");
	assert_string_equal(a->workload->name, "w");
	assert_int_equal(a->workload->n_addresses, 1);
	assert_ip(a->workload->addresses[0], "198.18.0.30");
	assert_int_equal(a->base.n_unknown_fields, 5);
	unload(a);
}

/* ---- unknown enum values: kept as numbers, found by pb.c ------------------- */

static void test_unknown_enum_values(void **state)
{
	Istio__Workload__Address *a = load(&istio__workload__address__descriptor, "workload-unknown-tunnel");
	Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla;
	char path[128];
	int v = 0;

	/* protobuf-c keeps the number (an open enum); nothing says it is not
	 * one of ours but the descriptor. */
	assert_int_equal((int)a->workload->tunnel_protocol, 7);
	assert_false(pb_enum_known(&istio__workload__tunnel_protocol__descriptor, 7));
	assert_true(pb_enum_known(&istio__workload__tunnel_protocol__descriptor, ISTIO__WORKLOAD__TUNNEL_PROTOCOL__HBONE));
	assert_int_equal(pb_find_unknown_enum(&a->base, path, sizeof(path), &v), -EINVAL);
	assert_string_equal(path, "workload.tunnelProtocol");
	assert_int_equal(v, 7);
	unload(a);

	a = load(&istio__workload__address__descriptor, "service-unknown-lb");
	assert_int_equal((int)a->service->load_balancing->mode, 9);
	assert_int_equal(a->service->load_balancing->n_routing_preference, 2);
	assert_int_equal((int)a->service->load_balancing->routing_preference[1], 42);
	assert_int_equal(pb_find_unknown_enum(&a->base, path, sizeof(path), &v), -EINVAL);
	/* The first in field-number order: routing_preference (1) before mode (2). */
	assert_string_equal(path, "service.loadBalancing.routingPreference[1]");
	assert_int_equal(v, 42);
	a->service->load_balancing->routing_preference[1] = ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NODE;
	assert_int_equal(pb_find_unknown_enum(&a->base, path, sizeof(path), &v), -EINVAL);
	assert_string_equal(path, "service.loadBalancing.mode");
	assert_int_equal(v, 9);
	a->service->load_balancing->mode = ISTIO__WORKLOAD__LOAD_BALANCING__MODE__STRICT;
	assert_int_equal(pb_find_unknown_enum(&a->base, path, sizeof(path), &v), 0);
	assert_string_equal(path, "");
	/* A truncated path stays a terminated string. */
	a->service->load_balancing->mode = 9;
	assert_int_equal(pb_find_unknown_enum(&a->base, path, 8, &v), -EINVAL);
	assert_string_equal(path, "service");
	unload(a);

	cla = load(&envoy__config__endpoint__v3__cluster_load_assignment__descriptor, "cla-unknown-health");
	assert_int_equal(pb_find_unknown_enum(&cla->base, path, sizeof(path), &v), -EINVAL);
	assert_string_equal(path, "endpoints[0].lbEndpoints[0].healthStatus");
	assert_int_equal(v, 17);
	unload(cla);
}

/* The fields ztunnel reads leniently: their unknown values pass, while a
 * strict field beside them is still refused. */
static void test_lenient_enum_fields(void **state)
{
	Istio__Workload__Address *a = load(&istio__workload__address__descriptor, "workload-lenient-enums");
	char path[128];
	int v = 0;

	assert_int_equal((int)a->workload->workload_type, 9);
	assert_false(pb_enum_known(&istio__workload__workload_type__descriptor, 9));
	assert_int_equal(pb_find_unknown_enum(&a->base, path, sizeof(path), &v), 0);
	a->workload->status = 4;
	assert_int_equal(pb_find_unknown_enum(&a->base, path, sizeof(path), &v), -EINVAL);
	assert_string_equal(path, "workload.status");
	assert_int_equal(v, 4);
	unload(a);

	a = load(&istio__workload__address__descriptor, "service-lenient-enums");
	assert_int_equal((int)a->service->visibility, 5);
	assert_int_equal(a->service->n_ports, 1);
	assert_int_equal((int)a->service->ports[0]->app_protocol, 12);
	assert_int_equal(pb_find_unknown_enum(&a->base, path, sizeof(path), &v), 0);
	a->service->ip_families = 8;
	assert_int_equal(pb_find_unknown_enum(&a->base, path, sizeof(path), &v), -EINVAL);
	assert_string_equal(path, "service.ipFamilies");
	assert_int_equal(v, 8);
	unload(a);
}

/* Every complete golden has only known enum values: the walker does not
 * refuse what it should accept (map entries, oneofs, nested repeated). */
static void test_known_enums_pass(void **state)
{
	static const struct {
		const ProtobufCMessageDescriptor *d;
		const char *name;
	} all[] = {
		{ &istio__workload__address__descriptor, "workload" },
		{ &istio__workload__address__descriptor, "service" },
		{ &istio__security__authorization__descriptor, "authorization" },
		{ &istio__security__v1beta1__peer_authentication__descriptor, "peer-authentication" },
		{ &envoy__config__cluster__v3__cluster__descriptor, "cluster-eds" },
		{ &envoy__config__cluster__v3__cluster__descriptor, "cluster-static" },
		{ &envoy__config__cluster__v3__cluster__descriptor, "cluster-origdst" },
		{ &envoy__config__cluster__v3__cluster__descriptor, "cluster-custom" },
		{ &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, "cla" },
		{ &envoy__config__route__v3__route_configuration__descriptor, "route" },
		{ &envoy__config__listener__v3__listener__descriptor, "listener" },
	};
	char path[128];
	int v;

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		ProtobufCMessage *m = load(all[i].d, all[i].name);
		int rc = pb_find_unknown_enum(m, path, sizeof(path), &v);

		if (rc != 0)
			fail_msg("%s: %s = %d refused", all[i].name, path, v);
		unload(m);
	}
}

/* Bad input never crashes the decoder or the enum walk: every prefix of
 * every golden, and each with one byte flipped, either decodes or is
 * refused (NULL), under ASan. Both loops are bounded by the goldens' size
 * (a few KiB). */
static void test_damaged_input(void **state)
{
	static const struct {
		const ProtobufCMessageDescriptor *d;
		const char *name;
	} all[] = {
		{ &istio__workload__address__descriptor, "workload" },
		{ &istio__workload__address__descriptor, "service" },
		{ &istio__security__authorization__descriptor, "authorization" },
		{ &envoy__config__cluster__v3__cluster__descriptor, "cluster-eds" },
		{ &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, "cla" },
		{ &envoy__config__route__v3__route_configuration__descriptor, "route" },
		{ &envoy__config__listener__v3__listener__descriptor, "listener" },
	};
	char path[64];
	int v;

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		ProtobufCBinaryData b = read_golden(all[i].name);
		unsigned refused = 0;

		for (size_t n = 0; n < b.len; n++) {
			ProtobufCMessage *m = protobuf_c_message_unpack(all[i].d, NULL, n, b.data);

			if (m == NULL) {
				refused++;
				continue;
			}
			(void)pb_find_unknown_enum(m, path, sizeof(path), &v);
			unload(m);
		}
		for (size_t k = 0; k < b.len; k++) {
			ProtobufCMessage *m;

			b.data[k] ^= 0xa5;
			m = protobuf_c_message_unpack(all[i].d, NULL, b.len, b.data);
			b.data[k] ^= 0xa5;
			if (m == NULL) {
				refused++;
				continue;
			}
			(void)pb_find_unknown_enum(m, path, sizeof(path), &v);
			unload(m);
		}
		/* Most cuts land inside a field: the decoder must say so. */
		assert_true(refused > b.len / 2);
		free(b.data);
	}
}

/* Our encoder gives back what the real one wrote (field order and all):
 * decode + re-encode of each golden is byte-identical. */
static void test_reencode_identical(void **state)
{
	static const struct {
		const ProtobufCMessageDescriptor *d;
		const char *name;
	} all[] = {
		{ &istio__workload__address__descriptor, "service" },
		{ &istio__security__authorization__descriptor, "authorization" },
		{ &envoy__config__endpoint__v3__cluster_load_assignment__descriptor, "cla" },
	};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		ProtobufCBinaryData b = read_golden(all[i].name);
		ProtobufCMessage *m = protobuf_c_message_unpack(all[i].d, NULL, b.len, b.data);
		size_t n;
		uint8_t *out;

		assert_non_null(m);
		n = protobuf_c_message_get_packed_size(m);
		assert_int_equal(n, b.len);
		out = malloc(n);
		assert_non_null(out);
		assert_int_equal(protobuf_c_message_pack(m, out), n);
		if (memcmp(out, b.data, n) != 0)
			fail_msg("%s: re-encoding differs", all[i].name);
		free(out);
		free(b.data);
		unload(m);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_workload),
		cmocka_unit_test(test_service),
		cmocka_unit_test(test_authorization),
		cmocka_unit_test(test_peer_authentication),
		cmocka_unit_test(test_cluster_eds),
		cmocka_unit_test(test_cluster_static),
		cmocka_unit_test(test_cluster_origdst_custom),
		cmocka_unit_test(test_cla),
		cmocka_unit_test(test_route),
		cmocka_unit_test(test_listener),
		cmocka_unit_test(test_unknown_fields_skipped),
		cmocka_unit_test(test_unknown_enum_values),
		cmocka_unit_test(test_lenient_enum_fields),
		cmocka_unit_test(test_known_enums_pass),
		cmocka_unit_test(test_damaged_input),
		cmocka_unit_test(test_reencode_identical),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
