/* Unit tests for src/model.c: the snapshot builder (validation with paths,
 * duplicates, prev's versions kept), the indexes and the lookups, from real
 * JSON resources decoded by jpb_decode_any. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "json_pb.h"
#include "model.h"
#include "strbuf.h"
#include "envoy/config/listener/v3/listener.pb-c.h"

/* Allocation-failure injection (the binary links with --wrap=malloc,calloc,
 * realloc): when fail_at > 0, the fail_at-th allocation from now fails. */
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_realloc(void *p, size_t size);
static long fail_at;

static bool
fail_now(void)
{
	return fail_at > 0 && --fail_at == 0;
}

void *
__wrap_malloc(size_t size)
{
	return fail_now() ? NULL : __real_malloc(size);
}

void *
__wrap_calloc(size_t n, size_t size)
{
	return fail_now() ? NULL : __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t size)
{
	return fail_now() ? NULL : __real_realloc(p, size);
}

/* A set of inputs decoded from `{"resources": [...]}` (single quotes in the
 * test text stand for double quotes). */
struct fix {
	struct model_input in[64];
	char path[64][32];
	size_t n;
	struct model_report rep;
	struct model *m;
};

static char *
dq(const char *s)
{
	char *d = strdup(s);

	assert_non_null(d);
	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

/* Decodes the resources of text into f->in (a resource that does not decode
 * or has no name fails the test: these tests are about the builder). */
static void
load(struct fix *f, const char *text, const char *version)
{
	char *t = dq(text), err[256], why[256];
	cJSON *root, *list, *e;

	memset(f, 0, sizeof(*f));
	root = json_parse_strict(t, strlen(t), err, sizeof(err));
	if (!root)
		fail_msg("bad test JSON: %s", err);
	list = cJSON_GetObjectItemCaseSensitive(root, "resources");
	assert_non_null(list);
	cJSON_ArrayForEach(e, list) {
		ProtobufCMessage *msg = NULL;
		struct jpb_err je;

		assert_true(f->n < 64);
		snprintf(f->path[f->n], sizeof(f->path[f->n]), "resources[%zu]", f->n);
		if (jpb_decode_any(e, f->path[f->n], NULL, NULL, &msg, &je) < 0)
			fail_msg("decode: %s", je.msg);
		f->in[f->n].res = mres_new(msg, version, "fallback", why, sizeof(why));
		if (!f->in[f->n].res)
			fail_msg("mres_new: %s", why);
		f->in[f->n].path = f->path[f->n];
		f->n++;
	}
	cJSON_Delete(root);
	free(t);
}

static struct model *
build(struct fix *f, const char *text, const struct model *prev, const struct model_opts *o)
{
	static const struct model_opts dflt = { .network = "", .strict_refs = true };

	load(f, text, "v1");
	f->m = model_build(f->in, f->n, prev, o ? o : &dflt, &f->rep);
	assert_non_null(f->m);
	return f->m;
}

/* Drops the inputs and the report; the model stays (f->m). */
static void
drop_inputs(struct fix *f)
{
	for (size_t i = 0; i < f->n; i++)
		mres_unref(f->in[i].res);
	f->n = 0;
	model_report_free(&f->rep);
}

static void
done(struct fix *f)
{
	drop_inputs(f);
	model_free(f->m);
	f->m = NULL;
}

static struct sockaddr_storage
sa(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (void *)&ss;

		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
		s6->sin6_port = htons(port);
	} else {
		struct sockaddr_in *s4 = (void *)&ss;

		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
		s4->sin_port = htons(port);
	}
	return ss;
}

static const char *
ep_ip(const struct mendpoint *e, char *buf, size_t len)
{
	if (e->addr.sa.sa_family == AF_INET)
		inet_ntop(AF_INET, &e->addr.in4.sin_addr, buf, (socklen_t)len);
	else
		inet_ntop(AF_INET6, &e->addr.in6.sin6_addr, buf, (socklen_t)len);
	return buf;
}

static uint16_t
ep_sport(const struct mendpoint *e)
{
	return ntohs(e->addr.sa.sa_family == AF_INET ? e->addr.in4.sin_port : e->addr.in6.sin6_port);
}

/* Base64 of the addresses used below. */
#define IP_10_0_0_1 "CgAAAQ=="		/* 10.0.0.1 */
#define IP_10_0_0_2 "CgAAAg=="		/* 10.0.0.2 */
#define IP_10_0_0_3 "CgAAAw=="		/* 10.0.0.3 */
#define VIP4 "CmAAAQ=="			/* 10.96.0.1 */
#define VIP6 "/QAAAAAAAAAAAAAAAAAAAQ=="	/* fd00::1 */
#define IP6_A "/QAAAQAAAAAAAAAAAAAAAQ=="	/* fd00:1::1 */
#define ADDR "'@type':'type.googleapis.com/istio.workload.Address'"

#define SVC_ECHO \
	"{" ADDR ",'service':{'name':'echo','namespace':'ns','hostname':'echo.ns.svc.cluster.local'," \
	"'addresses':[{'network':'','address':'" VIP4 "'},{'network':'','address':'" VIP6 "'}]," \
	"'ports':[{'servicePort':80,'targetPort':8080},{'servicePort':443,'targetPort':0}]," \
	"'subjectAltNames':['spiffe://cluster.local/ns/ns/sa/echo']}}"

#define WL(uid, addrs, extra) \
	"{" ADDR ",'workload':{'uid':'" uid "','name':'" uid "','namespace':'ns','addresses':[" addrs "]" extra "}}"

static void
test_valid_mesh(void **state)
{
	struct fix f;
	const struct msvc_port *p;
	const struct mworkload *w;
	const struct mservice *s;
	struct sockaddr_storage a;
	struct model_sizes sz;
	char ip[64];

	(void)state;
	build(&f, "{'resources':[" SVC_ECHO ","
	    WL("b-pod", "'" IP_10_0_0_2 "','" IP6_A "'",
	        ",'serviceAccount':'echo','trustDomain':'td.example','services':{'ns/echo.ns.svc.cluster.local':"
	        "{'ports':[{'servicePort':80,'targetPort':9090},{'servicePort':443,'targetPort':8443}]}},"
	        "'locality':{'region':'r1','zone':'z1'},'node':'n1','tunnelProtocol':'HBONE'") ","
	    WL("a-pod", "'" IP_10_0_0_1 "'", ",'services':{'ns/echo.ns.svc.cluster.local':{}}") ","
	    WL("c-sick", "'" IP_10_0_0_3 "'", ",'status':'UNHEALTHY','services':{'ns/echo.ns.svc.cluster.local':{}}")
	    "]}", NULL, NULL);
	assert_int_equal(f.rep.nproblems, 0);

	/* Identity with and without trust domain / service account. */
	a = sa("10.0.0.2", 1);
	assert_non_null(w = model_workload_at(f.m, &a));
	assert_string_equal(w->uid, "b-pod");
	assert_string_equal(w->identity, "spiffe://td.example/ns/ns/sa/echo");
	assert_int_equal(w->tunnel, MTUN_HBONE);
	assert_string_equal(w->locality.region, "r1");
	assert_string_equal(w->locality.subzone, "");
	assert_string_equal(w->cluster_id, "Kubernetes");
	assert_int_equal(w->capacity, 1);
	a = sa("fd00:1::1", 0);
	assert_ptr_equal(model_workload_at(f.m, &a), w);
	a = sa("10.0.0.1", 0);
	assert_non_null(w = model_workload_at(f.m, &a));
	assert_string_equal(w->identity, "spiffe://cluster.local/ns/ns/sa/default");
	a = sa("10.0.0.3", 0);
	assert_non_null(w = model_workload_at(f.m, &a));
	assert_false(w->healthy);
	/* Misses: another IP, a VIP is not a workload. */
	a = sa("10.0.0.9", 0);
	assert_null(model_workload_at(f.m, &a));
	a = sa("10.96.0.1", 80);
	assert_null(model_workload_at(f.m, &a));

	/* v4 VIP: both healthy endpoints in uid order, with their ports. */
	assert_non_null(p = model_service_at(f.m, &a));
	assert_int_equal(p->port, 80);
	assert_int_equal(p->target_port, 8080);
	assert_int_equal(p->family, AF_INET);
	assert_int_equal(p->neps, 2);
	assert_string_equal(p->eps[0].wl->uid, "a-pod");
	assert_int_equal(p->eps[0].port, 8080);	/* the service's target port */
	assert_string_equal(ep_ip(&p->eps[0], ip, sizeof(ip)), "10.0.0.1");
	assert_int_equal(ep_sport(&p->eps[0]), 8080);
	assert_string_equal(p->eps[1].wl->uid, "b-pod");
	assert_int_equal(p->eps[1].port, 9090);	/* the workload's override */
	assert_string_equal(ep_ip(&p->eps[1], ip, sizeof(ip)), "10.0.0.2");
	s = p->svc;
	assert_string_equal(s->key, "ns/echo.ns.svc.cluster.local");
	assert_int_equal(s->lb_mode, MLB_ROUND_ROBIN);
	assert_int_equal(s->nsans, 1);
	assert_ptr_equal(model_service(f.m, "ns/echo.ns.svc.cluster.local"), s);
	assert_null(model_service(f.m, "ns/nope"));

	/* Port 443 has no target port on the service: only the workload that
	 * overrides it serves it (ztunnel filters the others out). */
	a = sa("10.96.0.1", 443);
	assert_non_null(p = model_service_at(f.m, &a));
	assert_int_equal(p->neps, 1);
	assert_string_equal(p->eps[0].wl->uid, "b-pod");
	assert_int_equal(p->eps[0].port, 8443);
	a = sa("10.96.0.1", 81);
	assert_null(model_service_at(f.m, &a));
	/* ... but the VIP is still the service's, at any port, in both families. */
	assert_ptr_equal(model_service_vip(f.m, &a), s);
	a = sa("fd00::1", 12345);
	assert_ptr_equal(model_service_vip(f.m, &a), s);
	a = sa("10.96.0.2", 80);
	assert_null(model_service_vip(f.m, &a));
	a = sa("10.0.0.1", 80);	/* a workload's address is no VIP */
	assert_null(model_service_vip(f.m, &a));

	/* v6 VIP: the dual-stack workload's v6 address; the v4-only one keeps its v4. */
	a = sa("fd00::1", 80);
	assert_non_null(p = model_service_at(f.m, &a));
	assert_int_equal(p->family, AF_INET6);
	assert_int_equal(p->neps, 2);
	assert_string_equal(ep_ip(&p->eps[1], ip, sizeof(ip)), "fd00:1::1");
	assert_int_equal(ep_sport(&p->eps[1]), 9090);
	assert_string_equal(ep_ip(&p->eps[0], ip, sizeof(ip)), "10.0.0.1");

	/* 2 ports x 2 families, ids dense. */
	assert_int_equal(model_nports(f.m), 4);
	assert_int_equal(s->nports, 4);
	for (size_t i = 0; i < s->nports; i++)
		assert_true(s->ports[i].id < 4);
	model_sizes(f.m, &sz);
	assert_int_equal(sz.workloads, 3);
	assert_int_equal(sz.workload_addresses, 4);
	assert_int_equal(sz.services, 1);
	assert_int_equal(sz.service_vips, 4);
	assert_int_equal(sz.endpoints, 2 + 1 + 2 + 1);
	assert_true(sz.bytes > 0);

	/* Resources by type in name order. */
	assert_int_equal(model_count(f.m, MRES_ADDRESS), 4);
	assert_string_equal(model_resource(f.m, MRES_ADDRESS, 0)->name, "a-pod");
	assert_string_equal(model_resource(f.m, MRES_ADDRESS, 3)->name, "ns/echo.ns.svc.cluster.local");
	assert_null(model_resource(f.m, MRES_ADDRESS, 4));
	assert_int_equal(model_count(f.m, MRES_CLUSTER), 0);
	assert_string_equal(model_resource(f.m, MRES_ADDRESS, 0)->version, "v1");
	done(&f);
}

static void
test_health_policy_and_lb(void **state)
{
	struct fix f;
	const struct msvc_port *p;
	struct sockaddr_storage a = sa("10.96.0.1", 80);

	(void)state;
	build(&f, "{'resources':["
	    "{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e','addresses':[{'address':'" VIP4 "'}],"
	    "'ports':[{'servicePort':80,'targetPort':80}],"
	    "'loadBalancing':{'mode':'FAILOVER','routingPreference':['NETWORK','REGION','ZONE'],"
	    "'healthPolicy':'ALLOW_ALL'}}},"
	    WL("w1", "'" IP_10_0_0_1 "'", ",'status':'UNHEALTHY','capacity':3,'services':{'ns/e':{}}") "]}",
	    NULL, NULL);
	assert_int_equal(f.rep.nproblems, 0);
	assert_non_null(p = model_service_at(f.m, &a));
	assert_int_equal(p->neps, 1);	/* ALLOW_ALL keeps the unhealthy one */
	assert_int_equal(p->eps[0].wl->capacity, 3);
	assert_int_equal(p->svc->lb_mode, MLB_FAILOVER);
	assert_int_equal(p->svc->nlb_scopes, 3);
	assert_int_equal(p->svc->lb_scopes[0], 6);	/* NETWORK */
	assert_int_equal(p->svc->lb_scopes[2], 2);	/* ZONE */
	done(&f);

	/* Routing preference without a mode: round robin, no scopes (ztunnel). */
	build(&f, "{'resources':["
	    "{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e','addresses':[{'address':'" VIP4 "'}],"
	    "'ports':[{'servicePort':80,'targetPort':80}],'loadBalancing':{'routingPreference':['REGION']}}},"
	    WL("w1", "'" IP_10_0_0_1 "'", ",'status':'UNHEALTHY','services':{'ns/e':{}}") "]}", NULL, NULL);
	assert_non_null(p = model_service_at(f.m, &a));
	assert_int_equal(p->neps, 0);	/* ONLY_HEALTHY by default */
	assert_int_equal(p->svc->lb_mode, MLB_ROUND_ROBIN);
	assert_int_equal(p->svc->nlb_scopes, 0);
	done(&f);
}

/* ztunnel's address choice: the VIP's family first, else the first address,
 * among those the service's ipFamilies admits. */
static void
test_ip_families(void **state)
{
	struct fix f;
	const struct msvc_port *p;
	struct sockaddr_storage a = sa("fd00::1", 80);
	char ip[64];

	(void)state;
	build(&f, "{'resources':["
	    "{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e','ipFamilies':'IPV6_ONLY',"
	    "'addresses':[{'address':'" VIP6 "'}],'ports':[{'servicePort':80,'targetPort':80}]}},"
	    "{" ADDR ",'service':{'name':'f','namespace':'ns','hostname':'f',"
	    "'addresses':[{'address':'" VIP4 "'}],'ports':[{'servicePort':80,'targetPort':80}]}},"
	    WL("dual", "'" IP_10_0_0_1 "','" IP6_A "'", ",'services':{'ns/e':{},'ns/f':{}}") ","
	    WL("v4only", "'" IP_10_0_0_2 "'", ",'services':{'ns/e':{},'ns/f':{}}") "]}", NULL, NULL);
	assert_int_equal(f.rep.nproblems, 0);
	assert_non_null(p = model_service_at(f.m, &a));
	assert_int_equal(p->neps, 1);	/* v4only has no IPv6 address */
	assert_string_equal(p->eps[0].wl->uid, "dual");
	assert_string_equal(ep_ip(&p->eps[0], ip, sizeof(ip)), "fd00:1::1");
	a = sa("10.96.0.1", 80);
	assert_non_null(p = model_service_at(f.m, &a));
	assert_int_equal(p->neps, 2);
	assert_string_equal(ep_ip(&p->eps[0], ip, sizeof(ip)), "10.0.0.1");
	done(&f);

	/* An IPv4-mapped VIP and address are the IPv4 ones, in keys and lookups. */
	build(&f, "{'resources':["
	    "{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e',"
	    "'addresses':[{'address':'AAAAAAAAAAAAAP//CmAAAQ=='}],'ports':[{'servicePort':80,'targetPort':80}]}},"
	    WL("mapped", "'AAAAAAAAAAAAAP//CgAAAQ=='", ",'services':{'ns/e':{}}") "]}", NULL, NULL);
	a = sa("10.96.0.1", 80);
	assert_non_null(p = model_service_at(f.m, &a));
	assert_int_equal(p->family, AF_INET);
	assert_int_equal(p->neps, 1);
	assert_string_equal(ep_ip(&p->eps[0], ip, sizeof(ip)), "10.0.0.1");
	a = sa("::ffff:10.96.0.1", 80);
	assert_ptr_equal(model_service_at(f.m, &a), p);
	a = sa("10.0.0.1", 0);
	assert_string_equal(model_workload_at(f.m, &a)->uid, "mapped");
	done(&f);

	/* A CIDR VIP (shorter length) is not an exact VIP (ztunnel keeps those
	 * apart, matched by prefix): not indexed; /32 is exact. */
	build(&f, "{'resources':["
	    "{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e','addresses':[{'address':'" VIP4
	    "','length':24},{'address':'" VIP6 "'}],'ports':[{'servicePort':80,'targetPort':80}]}},"
	    "{" ADDR ",'service':{'name':'f','namespace':'ns','hostname':'f','addresses':[{'address':'" VIP4
	    "','length':32}],'ports':[{'servicePort':80,'targetPort':80}]}}]}", NULL, NULL);
	assert_int_equal(f.rep.nproblems, 0);	/* no VIP:port conflict with e's CIDR */
	a = sa("10.96.0.1", 80);
	assert_non_null(p = model_service_at(f.m, &a));
	assert_string_equal(p->svc->name, "f");
	assert_int_equal(model_service(f.m, "ns/e")->nports, 1);	/* IPv6 only */
	a = sa("fd00::1", 80);
	assert_non_null(p = model_service_at(f.m, &a));
	assert_string_equal(p->svc->name, "e");
	done(&f);

	/* AUTOMATIC: a v6 VIP, a v4-only workload: its v4 address. */
	build(&f, "{'resources':["
	    "{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e',"
	    "'addresses':[{'address':'" VIP6 "'}],'ports':[{'servicePort':80,'targetPort':80}]}},"
	    WL("v4only", "'" IP_10_0_0_2 "'", ",'services':{'ns/e':{}}") "]}", NULL, NULL);
	a = sa("fd00::1", 80);
	assert_non_null(p = model_service_at(f.m, &a));
	assert_int_equal(p->neps, 1);
	assert_string_equal(ep_ip(&p->eps[0], ip, sizeof(ip)), "10.0.0.2");
	done(&f);
}

static void
test_networks(void **state)
{
	struct fix f;
	struct model_opts o = { .network = "net2", .strict_refs = true };
	struct sockaddr_storage a;

	(void)state;
	build(&f, "{'resources':["
	    "{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e',"
	    "'addresses':[{'network':'net1','address':'" VIP4 "'}],'ports':[{'servicePort':80,'targetPort':80}]}},"
	    WL("w1", "'" IP_10_0_0_1 "'", ",'network':'net1'") ","
	    /* The same IP on another network is another workload, no conflict. */
	    WL("w2", "'" IP_10_0_0_1 "'", ",'network':'net2'") "]}", NULL, &o);
	assert_int_equal(f.rep.nproblems, 0);
	a = sa("10.0.0.1", 0);
	assert_string_equal(model_workload_at(f.m, &a)->uid, "w2");
	a = sa("10.96.0.1", 80);
	assert_null(model_service_at(f.m, &a));	/* the VIP is net1's */
	done(&f);

	/* On the default network, net1's workload is not ours either. */
	build(&f, "{'resources':[" WL("w1", "'" IP_10_0_0_1 "'", ",'network':'net1'") "]}", NULL, NULL);
	a = sa("10.0.0.1", 0);
	assert_null(model_workload_at(f.m, &a));
	done(&f);

	/* A service's member on another network is no endpoint: its address
	 * means nothing here (it may even be a local pod's, as w2's is: the
	 * connection would reach the wrong workload under w1's identity), and
	 * ztunnel only reaches it through its network gateway, which needs
	 * HBONE. Review of issue 8: a remote-network endpoint was dialled
	 * directly. */
	{
		const struct msvc_port *sp;

		build(&f, "{'resources':["
		    "{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e',"
		    "'addresses':[{'network':'','address':'" VIP4 "'}],'ports':[{'servicePort':80,'targetPort':80}]}},"
		    WL("w1", "'" IP_10_0_0_1 "'", ",'network':'net1','services':{'ns/e':{'ports':[]}}") ","
		    WL("w2", "'" IP_10_0_0_1 "'", ",'services':{'ns/e':{'ports':[]}}") "]}", NULL, NULL);
		assert_int_equal(f.rep.nproblems, 0);
		a = sa("10.96.0.1", 80);
		assert_non_null(sp = model_service_at(f.m, &a));
		assert_int_equal(sp->neps, 1);
		assert_string_equal(sp->eps[0].wl->uid, "w2");
		done(&f);
	}
}

static void
test_clusters_and_other_types(void **state)
{
	struct fix f;
	const struct mres *r;

	(void)state;
	build(&f, "{'resources':["
	    "{'@type':'type.googleapis.com/envoy.config.cluster.v3.Cluster','name':'outbound|80||e'},"
	    "{'@type':'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',"
	    "'clusterName':'outbound|80||e','endpoints':[{'lbEndpoints':[{'endpoint':{'address':"
	    "{'socketAddress':{'address':'10.0.0.1','portValue':8080}}}}]}]},"
	    "{'@type':'type.googleapis.com/istio.security.Authorization','name':'allow','namespace':'ns'},"
	    "{'@type':'type.googleapis.com/istio.security.v1beta1.PeerAuthentication'},"
	    "{'@type':'type.googleapis.com/envoy.config.listener.v3.Listener','name':'l',"
	    "'filterChains':[{'filters':[{'name':'tcp','typedConfig':{'@type':'type.googleapis.com/"
	    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy','statPrefix':'x','cluster':'c'}},"
	    "{'name':'hcm','typedConfig':{'@type':'type.googleapis.com/"
	    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',"
	    "'statPrefix':'x','codecType':'HTTP2'}}]}]},"
	    "{'@type':'type.googleapis.com/envoy.config.route.v3.RouteConfiguration','name':'r'}]}", NULL, NULL);
	assert_int_equal(f.rep.nproblems, 0);
	assert_non_null(r = model_cluster(f.m, "outbound|80||e"));
	assert_int_equal(r->type, MRES_CLUSTER);
	assert_non_null(r = model_endpoints(f.m, "outbound|80||e"));
	assert_int_equal(r->type, MRES_ENDPOINTS);
	assert_null(model_cluster(f.m, "nope"));
	assert_null(model_endpoints(f.m, "nope"));
	assert_non_null(model_find(f.m, MRES_AUTHORIZATION, "ns/allow"));
	assert_non_null(model_find(f.m, MRES_PEER_AUTHENTICATION, "fallback"));
	assert_int_equal(model_count(f.m, MRES_LISTENER), 1);
	assert_int_equal(model_count(f.m, MRES_ROUTE), 1);
	done(&f);
}

#define CLA(name, eps) \
	"{'@type':'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment'," \
	"'clusterName':'" name "','endpoints':[" eps "]}"
#define LBEP(ip, port, md) \
	"{'endpoint':{'address':{'socketAddress':{'address':'" ip "','portValue':" #port "}}}" md "}"
#define TLSMODE(v) ",'metadata':{'filterMetadata':{'istio':{'workload':'x'}," \
	"'envoy.transport_socket_match':{'tlsMode':" v "}}}"

/* Which endpoints are Istio-mTLS peers (model_peer_mtls, model_eds_at):
 * a Workload with tunnelProtocol LEGACY_ISTIO_MTLS, or an EDS endpoint whose
 * metadata (or its locality's) says tlsMode "istio"; the cluster name that
 * lists an address (the SNI), one answer for an address in several. */
static void
test_mtls_peers(void **state)
{
	struct sockaddr_storage a;
	struct meds_hit h;
	struct model_sizes sz;
	const char *cl;
	char name[64];
	struct fix f;

	(void)state;
	build(&f, "{'resources':[" SVC_ECHO ","
	    WL("w1", "'" IP_10_0_0_1 "'", ",'tunnelProtocol':'LEGACY_ISTIO_MTLS'") ","
	    WL("w2", "'" IP_10_0_0_2 "'", "") ","
	    WL("w3", "'" IP_10_0_0_3 "'", ",'tunnelProtocol':'HBONE'") ","
	    CLA("outbound|80||echo.ns.svc.cluster.local",
		"{'lbEndpoints':[" LBEP("10.0.0.2", 8080, TLSMODE("'istio'")) ","
		LBEP("10.0.0.3", 8080, TLSMODE("'disabled'")) "," LBEP("10.0.0.4", 8080, "") ","
		LBEP("fd00:1::1", 8080, TLSMODE("'istio'")) "," LBEP("10.0.0.9", 8080, TLSMODE("true")) "]},"
		"{'metadata':{'filterMetadata':{'envoy.transport_socket_match':{'tlsMode':'istio'}}},"
		"'lbEndpoints':[" LBEP("10.0.0.5", 9090, "") "," LBEP("10.0.0.6", 9090, TLSMODE("'disabled'")) "]}") ","
	    /* A subset cluster listing 10.0.0.2 and 10.0.0.4 again: the default
	     * subset's name answers for them; 10.0.0.7 only here. */
	    CLA("outbound|80|v1|echo.ns.svc.cluster.local",
		"{'lbEndpoints':[" LBEP("10.0.0.2", 8080, TLSMODE("'istio'")) ","
		LBEP("10.0.0.4", 8080, "") "," LBEP("10.0.0.7", 8080, TLSMODE("'istio'")) "]}") ","
	    /* An older cluster that did not mark 10.0.0.4 is outvoted by one that does. */
	    CLA("a-first", "{'lbEndpoints':[" LBEP("10.0.0.8", 1, "") "]}") ","
	    CLA("z-last", "{'lbEndpoints':[" LBEP("10.0.0.8", 1, TLSMODE("'istio'")) "]}") "]}", NULL, NULL);
	assert_int_equal(f.rep.nproblems, 0);

	/* WDS: the workload's tunnel protocol, whatever the port; no EDS cluster. */
	a = sa("10.0.0.1", 8080);
	assert_true(model_peer_mtls(f.m, &a, model_workload_at(f.m, &a), &cl));
	assert_null(cl);
	assert_false(model_eds_at(f.m, &a, &h));
	/* ... and without the workload (an address the data path did not match) it is not. */
	assert_false(model_peer_mtls(f.m, &a, NULL, &cl));
	/* HBONE is not legacy Istio mTLS; an EDS tlsMode other than "istio" is plaintext. */
	a = sa("10.0.0.3", 8080);
	assert_false(model_peer_mtls(f.m, &a, model_workload_at(f.m, &a), &cl));
	assert_string_equal(cl, "outbound|80||echo.ns.svc.cluster.local");

	/* EDS: tlsMode istio, by address and port. */
	a = sa("10.0.0.2", 8080);
	assert_true(model_peer_mtls(f.m, &a, model_workload_at(f.m, &a), &cl));
	assert_string_equal(cl, "outbound|80||echo.ns.svc.cluster.local");
	assert_true(model_eds_at(f.m, &a, &h));
	assert_true(h.istio);
	a = sa("10.0.0.2", 8081);
	assert_false(model_eds_at(f.m, &a, &h));
	assert_false(model_peer_mtls(f.m, &a, NULL, &cl));
	assert_null(cl);
	a = sa("10.0.0.4", 8080);
	assert_true(model_eds_at(f.m, &a, &h));
	assert_false(h.istio);
	assert_string_equal(h.cluster, "outbound|80||echo.ns.svc.cluster.local");
	a = sa("10.0.0.9", 8080);	/* a bool true is not the string "istio" */
	assert_true(model_eds_at(f.m, &a, &h));
	assert_false(h.istio);
	a = sa("fd00:1::1", 8080);
	assert_true(model_eds_at(f.m, &a, &h));
	assert_true(h.istio);
	a = sa("::ffff:10.0.0.2", 8080);	/* IPv4-mapped is the IPv4 address */
	assert_true(model_eds_at(f.m, &a, &h));
	assert_true(h.istio);
	/* The locality's metadata, unless the endpoint's own says otherwise. */
	a = sa("10.0.0.5", 9090);
	assert_true(model_eds_at(f.m, &a, &h));
	assert_true(h.istio);
	a = sa("10.0.0.6", 9090);
	assert_true(model_eds_at(f.m, &a, &h));
	assert_false(h.istio);
	/* In a subset only. */
	a = sa("10.0.0.7", 8080);
	assert_true(model_eds_at(f.m, &a, &h));
	assert_true(h.istio);
	assert_string_equal(h.cluster, "outbound|80|v1|echo.ns.svc.cluster.local");
	/* Two clusters disagree: mTLS wins, with its cluster. */
	a = sa("10.0.0.8", 1);
	assert_true(model_eds_at(f.m, &a, &h));
	assert_true(h.istio);
	assert_string_equal(h.cluster, "z-last");

	model_sizes(f.m, &sz);
	assert_int_equal(sz.eds_endpoints, 9);

	/* Envoy's default cluster name for a service port: the SNI when the
	 * model has no EDS for it. */
	assert_int_equal(model_cluster_name(name, sizeof(name), model_service(f.m, "ns/echo.ns.svc.cluster.local"), 80),
	    (int)strlen("outbound|80||echo.ns.svc.cluster.local"));
	assert_string_equal(name, "outbound|80||echo.ns.svc.cluster.local");
	assert_true(model_cluster_name(name, 8, model_service(f.m, "ns/echo.ns.svc.cluster.local"), 80) >= 8);
	done(&f);

	/* No EDS at all: nothing indexed, every lookup a miss. */
	build(&f, "{'resources':[" SVC_ECHO "]}", NULL, NULL);
	a = sa("10.0.0.2", 8080);
	assert_false(model_eds_at(f.m, &a, &h));
	assert_false(model_peer_mtls(f.m, &a, NULL, &cl));
	model_sizes(f.m, &sz);
	assert_int_equal(sz.eds_endpoints, 0);
	done(&f);
	assert_false(model_eds_at(NULL, &a, &h));
}

#define TUNNEL(v) ",'metadata':{'filterMetadata':{'envoy.transport_socket_match':{'tunnel':" v "}}}"
#define INTERNAL(target, md) \
	"{'endpoint':{'address':{'envoyInternalAddress':{'serverListenerName':'connect_originate'," \
	"'endpointId':'" target "'}}}" md "}"
/* istiod's HBONE endpoint metadata (reference xds-hbone.md §3.6). */
#define HBONE_MD(local) ",'metadata':{'filterMetadata':{'envoy.filters.listener.original_dst':{'local':'" \
	local "'},'envoy.transport_socket_match':{'tunnel':'http'}}}"

/* The transport per endpoint (model_peer_transport): HBONE for a Workload
 * with tunnelProtocol HBONE or an EDS endpoint whose metadata (or its
 * locality's) says tunnel "http", also in istiod's EnvoyInternalAddress
 * form (endpoint_id "<ip>:<port>", else original_dst "local"); HBONE
 * before tlsMode istio (Envoy's transport socket matches list hbone first);
 * Istio mTLS and plaintext as before. */
static void
test_transport_per_endpoint(void **state)
{
	struct sockaddr_storage a;
	struct meds_hit h;
	struct model_sizes sz;
	const char *cl;
	struct fix f;

	(void)state;
	build(&f, "{'resources':[" SVC_ECHO ","
	    WL("w1", "'" IP_10_0_0_1 "'", ",'tunnelProtocol':'LEGACY_ISTIO_MTLS'") ","
	    WL("w2", "'" IP_10_0_0_2 "'", "") ","
	    WL("w3", "'" IP_10_0_0_3 "'", ",'tunnelProtocol':'HBONE'") ","
	    CLA("outbound|80||echo.ns.svc.cluster.local",
		"{'lbEndpoints':[" LBEP("10.0.0.4", 8080, TUNNEL("'http'")) ","
		LBEP("10.0.0.5", 8080, ",'metadata':{'filterMetadata':{'envoy.transport_socket_match':"
		    "{'tlsMode':'istio','tunnel':'http'}}}") ","
		LBEP("10.0.0.6", 8080, TUNNEL("'h2'")) ","
		LBEP("10.0.0.7", 8080, TLSMODE("'istio'")) ","
		INTERNAL("10.0.0.8:8080", HBONE_MD("10.0.0.8:8080")) ","
		INTERNAL("[fd00:1::2]:9090", HBONE_MD("[fd00:1::2]:9090")) ","
		"{'endpoint':{'address':{'envoyInternalAddress':{'serverListenerName':'connect_originate'}}}"
		HBONE_MD("10.0.0.9:7070") "}]},"
		"{'metadata':{'filterMetadata':{'envoy.transport_socket_match':{'tunnel':'http'}}},"
		"'lbEndpoints':[" LBEP("10.0.0.10", 9090, "") "," LBEP("10.0.0.11", 9090, TUNNEL("'no'")) "]}") "]}",
	    NULL, NULL);
	assert_int_equal(f.rep.nproblems, 0);

	/* WDS: the workload's tunnel protocol, whatever the port. */
	a = sa("10.0.0.3", 1234);
	assert_int_equal(model_peer_transport(f.m, &a, model_workload_at(f.m, &a), &cl), MPEER_HBONE);
	a = sa("10.0.0.1", 8080);
	assert_int_equal(model_peer_transport(f.m, &a, model_workload_at(f.m, &a), &cl), MPEER_MTLS);
	a = sa("10.0.0.2", 8080);
	assert_int_equal(model_peer_transport(f.m, &a, model_workload_at(f.m, &a), &cl), MPEER_PLAIN);
	assert_null(cl);
	/* EDS socket addresses: tunnel "http" (only that string), before tlsMode. */
	a = sa("10.0.0.4", 8080);
	assert_int_equal(model_peer_transport(f.m, &a, NULL, &cl), MPEER_HBONE);
	assert_string_equal(cl, "outbound|80||echo.ns.svc.cluster.local");
	assert_true(model_eds_at(f.m, &a, &h));
	assert_true(h.hbone);
	assert_false(h.istio);
	a = sa("10.0.0.5", 8080);
	assert_int_equal(model_peer_transport(f.m, &a, NULL, &cl), MPEER_HBONE);
	assert_true(model_peer_mtls(f.m, &a, NULL, &cl));	/* the mTLS answer is unchanged */
	a = sa("10.0.0.6", 8080);
	assert_int_equal(model_peer_transport(f.m, &a, NULL, &cl), MPEER_PLAIN);
	a = sa("10.0.0.7", 8080);
	assert_int_equal(model_peer_transport(f.m, &a, NULL, &cl), MPEER_MTLS);
	/* EnvoyInternalAddress: by its endpoint_id, v4 and v6; without one, by
	 * original_dst "local". */
	a = sa("10.0.0.8", 8080);
	assert_int_equal(model_peer_transport(f.m, &a, NULL, &cl), MPEER_HBONE);
	a = sa("10.0.0.8", 8081);
	assert_int_equal(model_peer_transport(f.m, &a, NULL, &cl), MPEER_PLAIN);
	a = sa("fd00:1::2", 9090);
	assert_int_equal(model_peer_transport(f.m, &a, NULL, &cl), MPEER_HBONE);
	a = sa("10.0.0.9", 7070);
	assert_int_equal(model_peer_transport(f.m, &a, NULL, &cl), MPEER_HBONE);
	/* The locality's metadata, unless the endpoint's own says otherwise. */
	a = sa("10.0.0.10", 9090);
	assert_int_equal(model_peer_transport(f.m, &a, NULL, &cl), MPEER_HBONE);
	a = sa("10.0.0.11", 9090);
	assert_int_equal(model_peer_transport(f.m, &a, NULL, &cl), MPEER_PLAIN);
	model_sizes(f.m, &sz);
	assert_int_equal(sz.eds_endpoints, 9);
	done(&f);

	/* No model: plaintext. */
	a = sa("10.0.0.4", 8080);
	assert_int_equal(model_peer_transport(NULL, &a, NULL, &cl), MPEER_PLAIN);
}

/* One bad resource among good ones: exactly one problem, with this text. */
static void
expect_one(const char *resources, size_t bad, const char *msg)
{
	struct fix f;

	build(&f, resources, NULL, NULL);
	if (f.rep.nproblems != 1)
		fail_msg("%zu problems for %s (first: %s)", f.rep.nproblems, msg,
		    f.rep.nproblems ? f.rep.problems[0].msg : "-");
	assert_string_equal(f.rep.problems[0].msg, msg);
	assert_ptr_equal(f.rep.problems[0].path, f.in[bad].path);
	assert_false(f.rep.problems[0].kept_previous);
	/* The refused one is left out; the others are in. */
	assert_int_equal(model_count(f.m, f.in[bad].res->type) + 1,
	    (size_t)({ size_t c = 0; for (size_t i = 0; i < f.n; i++) c += f.in[i].res->type == f.in[bad].res->type; c; }));
	done(&f);
}

#define SVC(name, vip, port, tport) \
	"{" ADDR ",'service':{'name':'" name "','namespace':'ns','hostname':'" name "',"	\
	"'addresses':[{'address':'" vip "'}],'ports':[{'servicePort':" #port ",'targetPort':" #tport "}]}}"

static void
test_bad_inputs(void **state)
{
	(void)state;
	expect_one("{'resources':[" WL("w1", "'" IP_10_0_0_1 "','AQIDBAU='", "") "]}", 0,
	    "resources[0].workload.addresses[1]: 5 bytes; want 4 (IPv4) or 16 (IPv6)");
	expect_one("{'resources':[" SVC("e", VIP4, 80, 80) ","
	    "{" ADDR ",'service':{'name':'f','namespace':'ns','hostname':'f','addresses':[{'address':'AQI='}]}}]}", 1,
	    "resources[1].service.addresses[0].address: 2 bytes; want 4 (IPv4) or 16 (IPv6)");
	expect_one("{'resources':[" WL("w1", "'" IP_10_0_0_1 "'",
	    ",'waypoint':{'address':{'address':'AQIDBAUG'},'hboneMtlsPort':15008}") "]}", 0,
	    "resources[0].workload.waypoint.address.address: 6 bytes; want 4 (IPv4) or 16 (IPv6)");
	expect_one("{'resources':[" SVC("e", VIP4, 0, 80) "]}", 0,
	    "resources[0].service.ports[0].servicePort: port 0; want 1 to 65535");
	expect_one("{'resources':[" SVC("e", VIP4, 70000, 80) "]}", 0,
	    "resources[0].service.ports[0].servicePort: port 70000; want 1 to 65535");
	expect_one("{'resources':[" SVC("e", VIP4, 80, 65536) "]}", 0,
	    "resources[0].service.ports[0].targetPort: port 65536; want 1 to 65535 (or 0: unset)");
	expect_one("{'resources':[" SVC("e", VIP4, 80, 80) ","
	    WL("w1", "'" IP_10_0_0_1 "'", ",'services':{'ns/e':{'ports':[{'servicePort':80,'targetPort':99999}]}}")
	    "]}", 1, "resources[1].workload.services[\"ns/e\"].ports[0].targetPort: port 99999; "
	    "want 1 to 65535 (or 0: unset)");
	expect_one("{'resources':[{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e',"
	    "'ports':[{'servicePort':80},{'servicePort':80}]}}]}", 0,
	    "resources[0].service.ports[1].servicePort: 80 repeats service.ports[0]");
	/* Unknown enum numbers: ztunnel refuses the resource. */
	expect_one("{'resources':[" WL("w1", "'" IP_10_0_0_1 "'", ",'tunnelProtocol':7") "]}", 0,
	    "resources[0].workload.tunnelProtocol: unknown enum value 7");
	expect_one("{'resources':[{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e',"
	    "'loadBalancing':{'mode':9}}}]}", 0,
	    "resources[0].service.loadBalancing.mode: unknown enum value 9");
	expect_one("{'resources':[{" ADDR ",'service':{'name':'e','namespace':'ns','hostname':'e',"
	    "'loadBalancing':{'mode':'STRICT','routingPreference':['UNSPECIFIED_SCOPE']}}}]}", 0,
	    "resources[0].service.loadBalancing.routingPreference[0]: UNSPECIFIED_SCOPE is not a scope");
	/* ... also inside an Any (pb_find_unknown_enum sees its bytes only). */
	expect_one("{'resources':[{'@type':'type.googleapis.com/envoy.config.listener.v3.Listener','name':'l',"
	    "'filterChains':[{'filters':[{'name':'hcm','typedConfig':{'@type':'type.googleapis.com/"
	    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',"
	    "'statPrefix':'x','codecType':7}}]}]}]}", 0,
	    "resources[0].filterChains[0].filters[0].typedConfig.codecType: unknown enum value 7");
	/* Missing names (mres_new took the fallback; the builder still refuses). */
	expect_one("{'resources':[{" ADDR ",'workload':{'name':'x'}}]}", 0,
	    "resources[0].workload.uid: required (the workload's name)");
	expect_one("{'resources':[{" ADDR ",'service':{'name':'x','namespace':'ns'}}]}", 0,
	    "resources[0].service.hostname: required (a service is named \"namespace/hostname\")");
	expect_one("{'resources':[{" ADDR "}]}", 0, "resources[0].workload, service: one is required");
	expect_one("{'resources':[{'@type':'type.googleapis.com/envoy.config.cluster.v3.Cluster'}]}", 0,
	    "resources[0].name: required");
	/* Duplicates: the first wins. */
	expect_one("{'resources':[" WL("w1", "'" IP_10_0_0_1 "'", "") "," WL("w1", "'" IP_10_0_0_2 "'", "") "]}", 1,
	    "resources[1].workload.uid: \"w1\" is resources[0]'s name already");
	/* Two on one IP / VIP:port: the later is refused and told whose it is. */
	expect_one("{'resources':[" WL("w1", "'" IP_10_0_0_1 "'", "") "," WL("w2", "'" IP_10_0_0_1 "'", "") "]}", 1,
	    "resources[1].workload.addresses[0]: 10.0.0.1 is w1's already (resources[0])");
	expect_one("{'resources':[" SVC("e", VIP4, 80, 80) "," SVC("f", VIP4, 80, 81) "]}", 1,
	    "resources[1].service.addresses[0]: 10.96.0.1:80 is ns/e's already (resources[0])");
	/* A service map naming a missing Service (strict_refs), or not "ns/host". */
	expect_one("{'resources':[" WL("w1", "'" IP_10_0_0_1 "'", ",'services':{'ns/nope':{}}") "]}", 0,
	    "resources[0].workload.services[\"ns/nope\"]: no such service");
	{
		struct fix f;

		build(&f, "{'resources':[" SVC("e", VIP4, 0, 80) ","
		    WL("w1", "'" IP_10_0_0_1 "'", ",'services':{'ns/e':{}}") "]}", NULL, NULL);
		assert_int_equal(f.rep.nproblems, 2);
		assert_string_equal(f.rep.problems[1].msg,
		    "resources[1].workload.services[\"ns/e\"]: that service was refused (resources[0])");
		done(&f);
	}
	expect_one("{'resources':[" WL("w1", "'" IP_10_0_0_1 "'", ",'services':{'nope':{}}") "]}", 0,
	    "resources[0].workload.services[\"nope\"]: want \"namespace/hostname\"");
	/* EDS endpoints: IP literals and real ports only. */
	expect_one("{'resources':[{'@type':'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',"
	    "'clusterName':'c','endpoints':[{'lbEndpoints':[{'endpoint':{'address':"
	    "{'socketAddress':{'address':'10.0.0.1','portValue':80}}}},{'endpoint':{'address':"
	    "{'socketAddress':{'address':'echo.example','portValue':80}}}}]}]}]}", 0,
	    "resources[0].endpoints[0].lbEndpoints[1].endpoint.address.socketAddress.address: "
	    "\"echo.example\" is not an IP address");
	/* An HBONE endpoint's target must be ip:port. */
	expect_one("{'resources':[{'@type':'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',"
	    "'clusterName':'c','endpoints':[{'lbEndpoints':[" INTERNAL("echo.example:80", "") "]}]}]}", 0,
	    "resources[0].endpoints[0].lbEndpoints[0].endpoint.address.envoyInternalAddress.endpointId: "
	    "\"echo.example:80\" is not ip:port");
	expect_one("{'resources':[{'@type':'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',"
	    "'clusterName':'c','endpoints':[{'lbEndpoints':[" INTERNAL("10.0.0.1:0", "") "]}]}]}", 0,
	    "resources[0].endpoints[0].lbEndpoints[0].endpoint.address.envoyInternalAddress.endpointId: "
	    "\"10.0.0.1:0\" is not ip:port");
	expect_one("{'resources':[{'@type':'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',"
	    "'clusterName':'c','endpoints':[{'lbEndpoints':[{'endpoint':{'address':"
	    "{'socketAddress':{'address':'::1','portValue':0}}}}]}]}]}", 0,
	    "resources[0].endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.portValue: port 0; "
	    "want 1 to 65535");

	/* One service may not ask for unbounded indexes (a review built 352 MB
	 * from 179 KB of VIPs x ports): more than 1,000 ports or 64 addresses
	 * are refused with the count. */
	struct strbuf sb = { 0 };
	sb_printf(&sb, "{'resources':[" SVC("e", VIP4, 80, 80) ",{" ADDR ",'service':{'name':'f',"
	    "'namespace':'ns','hostname':'f','ports':[");
	for (int k = 1; k <= 1001; k++)
		sb_printf(&sb, "%s{'servicePort':%d}", k > 1 ? "," : "", k);
	sb_printf(&sb, "]}}]}");
	expect_one(sb.p, 1, "resources[1].service.ports: 1001; at most 1000");
	sb.len = 0;
	sb_printf(&sb, "{'resources':[{" ADDR ",'service':{'name':'f','namespace':'ns','hostname':'f',"
	    "'addresses':[");
	for (int k = 0; k < 65; k++)
		sb_printf(&sb, "%s{'address':'CgAA%c%c=='}", k ? "," : "",
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[k / 4], "AQgw"[k % 4]);	/* 10.0.0.x, x distinct */
	sb_printf(&sb, "]}}," SVC("e", VIP4, 80, 80) "]}");
	expect_one(sb.p, 0, "resources[0].service.addresses: 65; at most 64");
	sb_free(&sb);
}

/* From xDS an Any holds bytes: ones that do not unpack as their type are
 * refused, not skipped. */
static void
test_any_bytes_that_do_not_unpack(void **state)
{
	struct fix f;
	Envoy__Config__Listener__V3__Listener *l;
	Google__Protobuf__Any *any;
	static uint8_t junk[] = { 0xff, 0xff, 0xff };

	(void)state;
	load(&f, "{'resources':[{'@type':'type.googleapis.com/envoy.config.listener.v3.Listener','name':'l',"
	    "'filterChains':[{'filters':[{'name':'tcp','typedConfig':{'@type':'type.googleapis.com/"
	    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy','statPrefix':'x','cluster':'c'}}]}]}]}", "v1");
	l = (void *)f.in[0].res->msg;
	any = l->filter_chains[0]->filters[0]->typed_config;
	free(any->value.data);
	any->value.data = malloc(sizeof(junk));
	assert_non_null(any->value.data);
	memcpy(any->value.data, junk, sizeof(junk));
	any->value.len = sizeof(junk);
	f.m = model_build(f.in, f.n, NULL, &(struct model_opts){ .network = "" }, &f.rep);
	assert_non_null(f.m);
	assert_int_equal(f.rep.nproblems, 1);
	assert_string_equal(f.rep.problems[0].msg,
	    "resources[0].filterChains[0].filters[0].typedConfig.value: not a valid encoding of its @type");
	assert_int_equal(model_count(f.m, MRES_LISTENER), 0);
	done(&f);
}

static void
test_lax_refs(void **state)
{
	struct fix f;
	struct model_opts o = { .network = "", .strict_refs = false };
	struct sockaddr_storage a = sa("10.0.0.1", 0);

	(void)state;
	/* xDS: the Service may come later; the workload is in. */
	build(&f, "{'resources':[" WL("w1", "'" IP_10_0_0_1 "'", ",'services':{'ns/later':{}}") "]}", NULL, &o);
	assert_int_equal(f.rep.nproblems, 0);
	assert_non_null(model_workload_at(f.m, &a));
	done(&f);
}

static void
test_kept_previous(void **state)
{
	struct fix f1, f2;
	const struct mworkload *w;
	const struct msvc_port *p;
	struct sockaddr_storage a;

	(void)state;
	build(&f1, "{'resources':[" SVC("e", VIP4, 80, 80) ","
	    WL("w1", "'" IP_10_0_0_1 "'", ",'services':{'ns/e':{}}") "," WL("w2", "'" IP_10_0_0_2 "'", "") "]}",
	    NULL, NULL);
	drop_inputs(&f1);	/* the model holds its own references */
	/* The edit breaks w1 and e, drops w2 and adds w3. */
	load(&f2, "{'resources':[" SVC("e", VIP4, 0, 80) ","
	    WL("w1", "'AQI='", ",'services':{'ns/e':{}}") "," WL("w3", "'" IP_10_0_0_3 "'", "") "]}", "v2");
	f2.m = model_build(f2.in, f2.n, f1.m, &(struct model_opts){ .network = "", .strict_refs = true }, &f2.rep);
	assert_non_null(f2.m);
	assert_int_equal(f2.rep.nproblems, 2);
	assert_string_equal(f2.rep.problems[0].msg,
	    "resources[0].service.ports[0].servicePort: port 0; want 1 to 65535");
	assert_true(f2.rep.problems[0].kept_previous);
	assert_string_equal(f2.rep.problems[0].name, "ns/e");
	assert_int_equal(f2.rep.problems[0].type, MRES_ADDRESS);
	assert_true(f2.rep.problems[1].kept_previous);
	model_free(f1.m);	/* the new model does not need the old one */
	a = sa("10.0.0.1", 0);
	assert_non_null(w = model_workload_at(f2.m, &a));
	assert_string_equal(w->res->version, "v1");
	a = sa("10.0.0.2", 0);
	assert_null(model_workload_at(f2.m, &a));	/* not in the new input */
	a = sa("10.0.0.3", 0);
	assert_non_null(w = model_workload_at(f2.m, &a));
	assert_string_equal(w->res->version, "v2");
	a = sa("10.96.0.1", 80);
	assert_non_null(p = model_service_at(f2.m, &a));
	assert_string_equal(p->svc->res->version, "v1");
	assert_int_equal(p->neps, 1);
	done(&f2);
}

static void
test_kept_previous_conflict(void **state)
{
	struct fix f1, f2;
	struct sockaddr_storage a = sa("10.0.0.1", 0);

	(void)state;
	/* w1 had 10.0.0.1; the edit gives it a bad address, and a new w0 (earlier
	 * in the input) takes 10.0.0.1: w1's old version cannot come back. */
	build(&f1, "{'resources':[" WL("w1", "'" IP_10_0_0_1 "'", "") "]}", NULL, NULL);
	load(&f2, "{'resources':[" WL("w0", "'" IP_10_0_0_1 "'", "") "," WL("w1", "'AQI='", "") "]}", "v2");
	f2.m = model_build(f2.in, f2.n, f1.m, &(struct model_opts){ .network = "" }, &f2.rep);
	assert_non_null(f2.m);
	assert_int_equal(f2.rep.nproblems, 1);
	assert_false(f2.rep.problems[0].kept_previous);
	assert_string_equal(model_workload_at(f2.m, &a)->uid, "w0");
	assert_int_equal(model_count(f2.m, MRES_ADDRESS), 1);
	done(&f1);
	done(&f2);

	/* A conflict refused now, with prev's version free: it stays. */
	build(&f1, "{'resources':[" WL("w1", "'" IP_10_0_0_1 "'", "") "," WL("w2", "'" IP_10_0_0_2 "'", "") "]}",
	    NULL, NULL);
	load(&f2, "{'resources':[" WL("w1", "'" IP_10_0_0_1 "'", "") "," WL("w2", "'" IP_10_0_0_1 "'", "") "]}", "v2");
	f2.m = model_build(f2.in, f2.n, f1.m, &(struct model_opts){ .network = "" }, &f2.rep);
	assert_int_equal(f2.rep.nproblems, 1);
	assert_true(f2.rep.problems[0].kept_previous);
	a = sa("10.0.0.2", 0);
	assert_string_equal(model_workload_at(f2.m, &a)->res->version, "v1");
	done(&f1);
	done(&f2);
}

/* Workloads and services share the Address names: prev's resource of a
 * refused one's name may be of the other kind, and must not be read as its
 * kind (it was: a Workload read as a Service). */
static void
test_kept_previous_other_kind(void **state)
{
	struct fix f1, f2;

	(void)state;
	build(&f1, "{'resources':[" WL("ns/e", "'" IP_10_0_0_1 "'", "") "," SVC("w", VIP6, 80, 80) "]}", NULL, NULL);
	assert_int_equal(f1.rep.nproblems, 0);
	/* Service ns/e loses VIP4:80 to ns/d; workload "ns/w" loses 10.0.0.2 to w0. */
	load(&f2, "{'resources':[" SVC("d", VIP4, 80, 80) "," SVC("e", VIP4, 80, 80) ","
	    WL("w0", "'" IP_10_0_0_2 "'", "") "," WL("ns/w", "'" IP_10_0_0_2 "'", "") "]}", "v2");
	f2.m = model_build(f2.in, f2.n, f1.m, &(struct model_opts){ .network = "" }, &f2.rep);
	assert_non_null(f2.m);
	assert_int_equal(f2.rep.nproblems, 2);
	assert_false(f2.rep.problems[0].kept_previous);
	assert_false(f2.rep.problems[1].kept_previous);
	assert_int_equal(model_count(f2.m, MRES_ADDRESS), 2);
	done(&f1);
	done(&f2);
}

static void
test_empty_and_mres(void **state)
{
	struct model *m = model_empty();
	struct sockaddr_storage a = sa("10.0.0.1", 80);
	struct model_sizes sz;
	ProtobufCMessage *msg = NULL;
	struct jpb_err je;
	char why[128];
	char *t = dq("{" ADDR ",'workload':{'name':'x'}}");
	cJSON *j = json_parse_strict(t, strlen(t), why, sizeof(why));

	(void)state;
	assert_non_null(m);
	assert_null(model_workload_at(m, &a));
	assert_null(model_service_at(m, &a));
	assert_null(model_service(m, "a/b"));
	assert_null(model_cluster(m, "c"));
	assert_int_equal(model_nports(m), 0);
	assert_int_equal(model_count(m, MRES_ADDRESS), 0);
	model_sizes(m, &sz);
	assert_int_equal(sz.workloads, 0);
	model_free(m);

	/* No name and no fallback: refused with the field. */
	assert_int_equal(jpb_decode_any(j, "resources[0]", NULL, NULL, &msg, &je), 0);
	assert_null(mres_new(msg, "", NULL, why, sizeof(why)));
	assert_string_equal(why, "workload.uid: required (the workload's name)");
	cJSON_Delete(j);
	free(t);
	/* Reference counting: the last unref frees (ASan would see a leak). */
	t = dq("{'@type':'type.googleapis.com/envoy.config.cluster.v3.Cluster','name':'c'}");
	j = json_parse_strict(t, strlen(t), why, sizeof(why));
	assert_int_equal(jpb_decode_any(j, "r", NULL, NULL, &msg, &je), 0);
	{
		struct mres *r = mres_new(msg, NULL, NULL, why, sizeof(why));

		assert_non_null(r);
		assert_string_equal(r->version, "");
		assert_ptr_equal(mres_ref(r), r);
		assert_int_equal(r->refs, 2);
		mres_unref(r);
		mres_unref(r);
	}
	cJSON_Delete(j);
	free(t);
}

/* Every allocation model_build makes may fail (the report's too: a model
 * whose refusals cannot be told is not built): it returns NULL and frees
 * what it took (ASan's leak check); a later build of the same inputs is
 * whole. */
static void
test_allocation_failures(void **state)
{
	struct fix f;
	long k;

	(void)state;
	load(&f, "{'resources':[" SVC_ECHO "," SVC("e", VIP4, 80, 80) ","
	    WL("w1", "'" IP_10_0_0_1 "','" IP6_A "'", ",'services':{'ns/echo.ns.svc.cluster.local':{}}") ","
	    WL("w2", "'" IP_10_0_0_1 "'", "") ","
	    "{'@type':'type.googleapis.com/envoy.config.cluster.v3.Cluster','name':'c'},"
	    CLA("c", "{'lbEndpoints':[" LBEP("10.0.0.1", 80, TLSMODE("'istio'")) "]}") "]}", "v1");
	for (k = 1; k < 10000; k++) {
		struct model_report rep;
		struct model *m;

		fail_at = k;
		m = model_build(f.in, f.n, NULL, &(struct model_opts){ .network = "" }, &rep);
		if (fail_at > 0) {	/* no allocation failed: done */
			fail_at = 0;
			assert_non_null(m);
			assert_int_equal(rep.nproblems, 2);	/* VIP:port, IP */
			assert_int_equal(model_count(m, MRES_ADDRESS), 2);	/* echo, w1 */
			model_free(m);
			model_report_free(&rep);
			break;
		}
		assert_null(m);
		model_report_free(&rep);
	}
	assert_true(k > 10);	/* it allocates, so failures were injected */
	assert_true(k < 10000);
	drop_inputs(&f);

	/* mres_new: on failure the message is freed too (ownership passed). */
	for (k = 1; k < 100; k++) {
		char *t = dq("{" SVC_ECHO "}"), why[128];
		cJSON *j = json_parse_strict(t + 1, strlen(t) - 2, why, sizeof(why));
		ProtobufCMessage *msg = NULL;
		struct jpb_err je;
		struct mres *r;

		assert_int_equal(jpb_decode_any(j, "r", NULL, NULL, &msg, &je), 0);
		fail_at = k;
		r = mres_new(msg, "v9", NULL, why, sizeof(why));
		cJSON_Delete(j);
		free(t);
		if (fail_at > 0) {
			fail_at = 0;
			assert_non_null(r);
			assert_string_equal(r->name, "ns/echo.ns.svc.cluster.local");
			mres_unref(r);
			break;
		}
		assert_null(r);
		assert_string_equal(why, "out of memory");
	}
	assert_true(k > 1 && k < 100);
}

/* ---- Incremental builds: the same answers as a fresh one ----
 * A small mesh edited at random (a resource replaced by a new version of
 * its name, added, removed, refused, named twice; the inputs reordered;
 * addresses and VIPs from small pools, so that they collide; the network
 * and strict_refs changed now and then), each step built over the last
 * model twice: reusing prev's derived data, and with no_reuse. Every
 * answer of the two must be the same. */

static unsigned rnd_state = 12345;

static unsigned
rnd(unsigned n)
{
	rnd_state = rnd_state * 1103515245u + 12345u;
	return (rnd_state >> 16) % n;
}

static struct mres *
mk_res(const char *json)
{
	char why[256], err[256];
	cJSON *j = json_parse_strict(json, strlen(json), err, sizeof(err));
	ProtobufCMessage *msg = NULL;
	struct jpb_err je;
	struct mres *r;

	if (!j)
		fail_msg("bad JSON %s: %s", json, err);
	if (jpb_decode_any(j, "r", NULL, NULL, &msg, &je) < 0)
		fail_msg("decode %s: %s", json, je.msg);
	cJSON_Delete(j);
	if (!(r = mres_new(msg, "v", "fallback", why, sizeof(why))))
		fail_msg("mres_new: %s", why);
	return r;
}

/* The pools addresses and VIPs are drawn from: small, they collide (the
 * builder decides who keeps one); wide, they rarely do (most builds then
 * take the path that trusts prev's). */
static unsigned ip_pool = 12, vip_pool = 5;

#define RND_SVCS 6
#define RND_WLS 14
#define RND_IN 48

/* Base64 of 10.<a>.0.<b>. */
static void
ip4_b64(char *out, unsigned a, unsigned b)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char x[4] = { 10, (unsigned char)a, 0, (unsigned char)b };
	uint32_t v = (uint32_t)x[0] << 16 | (uint32_t)x[1] << 8 | x[2];

	sprintf(out, "%c%c%c%c%c%c==", t[v >> 18 & 63], t[v >> 12 & 63], t[v >> 6 & 63], t[v & 63],
	    t[x[3] >> 2], t[(x[3] & 3) << 4]);
}

/* Base64 of fd00::<a>:<b>. */
static void
ip6_b64(char *out, unsigned a, unsigned b)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char x[18] = { 0xfd };
	size_t o = 0;

	x[13] = (unsigned char)a;
	x[15] = (unsigned char)b;
	for (size_t i = 0; i < 18; i += 3) {
		uint32_t v = (uint32_t)x[i] << 16 | (uint32_t)x[i + 1] << 8 | x[i + 2];

		out[o++] = t[v >> 18 & 63];
		out[o++] = t[v >> 12 & 63];
		out[o++] = t[v >> 6 & 63];
		out[o++] = t[v & 63];
	}
	out[o - 2] = out[o - 1] = '=';	/* 16 bytes: 22 characters and "==" */
	out[o] = '\0';
}

static struct mres *
rnd_service(unsigned i)
{
	static const char *const fam[] = { "AUTOMATIC", "IPV4_ONLY", "IPV6_ONLY", "DUAL" };
	static const char *const modes[] = { "UNSPECIFIED_MODE", "STRICT", "FAILOVER", "PASSTHROUGH" };
	char j[1024], vip[16], vip6[32], v6[64] = "";

	ip4_b64(vip, 96, 1 + rnd(vip_pool));
	ip6_b64(vip6, 96, 1 + rnd(vip_pool));
	if (!rnd(4))
		snprintf(v6, sizeof(v6), "{\"address\":\"%s\"},", vip6);
	snprintf(j, sizeof(j), "{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"service\":{"
	    "\"name\":\"s%u\",\"namespace\":\"ns\",\"hostname\":\"s%u.ns\",\"ipFamilies\":\"%s\","
	    "\"addresses\":[%s{\"network\":\"%s\",\"address\":\"%s\"}],"
	    "\"ports\":[{\"servicePort\":%u,\"targetPort\":%u}%s],"
	    "\"loadBalancing\":{\"mode\":\"%s\",\"healthPolicy\":\"%s\"%s}}}",
	    i, i, fam[rnd(4)], v6, rnd(6) ? "" : "n2", vip,
	    rnd(3) ? 80 : 81, rnd(2) ? 8080 : 0, rnd(2) ? ",{\"servicePort\":443,\"targetPort\":8443}" : "",
	    modes[rnd(4)], rnd(2) ? "ONLY_HEALTHY" : "ALLOW_ALL",
	    rnd(2) ? ",\"routingPreference\":[\"REGION\",\"ZONE\"]" : "");
	return mk_res(j);
}

static struct mres *
rnd_workload(unsigned i)
{
	char j[1536], ip[16], ip6[32], v6[48] = "", svcs[512] = "";
	unsigned nsvc = rnd(3), s0 = rnd(RND_SVCS + 1);
	size_t at = 0;

	if (rnd(12))
		ip4_b64(ip, 1, 1 + rnd(ip_pool));
	else
		snprintf(ip, sizeof(ip), "AAAAAAA=");	/* 5 bytes: refused */
	ip6_b64(ip6, 1, 1 + rnd(ip_pool));
	if (!rnd(3))
		snprintf(v6, sizeof(v6), ",\"%s\"", ip6);
	for (unsigned k = 0; k < nsvc; k++)
		at += (size_t)snprintf(svcs + at, sizeof(svcs) - at, "%s\"ns/s%u.ns\":{%s}", k ? "," : "",
		    (s0 + k) % (RND_SVCS + 1), rnd(2) ? "\"ports\":[{\"servicePort\":80,\"targetPort\":9080}]" : "");
	snprintf(j, sizeof(j), "{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"workload\":{"
	    "\"uid\":\"w%u\",\"name\":\"w%u\",\"namespace\":\"ns%u\",\"serviceAccount\":\"sa%u\","
	    "\"network\":\"%s\",\"addresses\":[\"%s\"%s],\"status\":\"%s\",\"tunnelProtocol\":\"%s\","
	    "\"locality\":{\"region\":\"r%u\",\"zone\":\"z\"},\"services\":{%s}}}",
	    i, i, rnd(2), rnd(3), rnd(8) ? "" : "n2", ip, v6,
	    rnd(4) ? "HEALTHY" : "UNHEALTHY", rnd(2) ? "HBONE" : "NONE", rnd(2), svcs);
	return mk_res(j);
}

static void
same_wl(const struct mworkload *a, const struct mworkload *b)
{
	if (!a || !b) {
		assert_true(a == b);
		return;
	}
	assert_ptr_equal(a->res, b->res);
	assert_string_equal(a->uid, b->uid);
	assert_string_equal(a->name, b->name);
	assert_string_equal(a->ns, b->ns);
	assert_string_equal(a->identity, b->identity);
	assert_string_equal(a->node, b->node);
	assert_string_equal(a->cluster_id, b->cluster_id);
	assert_string_equal(a->network, b->network);
	assert_int_equal(a->tunnel, b->tunnel);
	assert_int_equal(a->healthy, b->healthy);
	assert_int_equal(a->proxy_protocol, b->proxy_protocol);
	assert_int_equal(a->app_tunnel_port, b->app_tunnel_port);
	assert_string_equal(a->locality.region, b->locality.region);
	assert_string_equal(a->locality.zone, b->locality.zone);
	assert_string_equal(a->locality.subzone, b->locality.subzone);
	assert_int_equal(a->capacity, b->capacity);
}

static void
same_port(const struct msvc_port *a, const struct msvc_port *b)
{
	if (!a || !b) {
		assert_true(a == b);
		return;
	}
	assert_ptr_equal(a->svc->res, b->svc->res);
	assert_int_equal(a->id, b->id);
	assert_int_equal(a->port, b->port);
	assert_int_equal(a->target_port, b->target_port);
	assert_int_equal(a->family, b->family);
	assert_int_equal(a->neps, b->neps);
	for (size_t e = 0; e < a->neps; e++) {
		same_wl(a->eps[e].wl, b->eps[e].wl);
		assert_int_equal(a->eps[e].port, b->eps[e].port);
		assert_memory_equal(&a->eps[e].addr, &b->eps[e].addr, sizeof(a->eps[e].addr));
	}
}

static void
same_svc(const struct mservice *a, const struct mservice *b)
{
	if (!a || !b) {
		assert_true(a == b);
		return;
	}
	assert_ptr_equal(a->res, b->res);
	assert_string_equal(a->key, b->key);
	assert_string_equal(a->hostname, b->hostname);
	assert_int_equal(a->nsans, b->nsans);
	assert_int_equal(a->lb_mode, b->lb_mode);
	assert_int_equal(a->nlb_scopes, b->nlb_scopes);
	assert_int_equal(a->nports, b->nports);
	for (size_t p = 0; p < a->nports; p++)
		same_port(&a->ports[p], &b->ports[p]);
}

static void
sa4(struct sockaddr_storage *ss, unsigned a, unsigned b, unsigned port)
{
	struct sockaddr_in *s4 = (void *)ss;

	memset(ss, 0, sizeof(*ss));
	s4->sin_family = AF_INET;
	s4->sin_addr.s_addr = htonl(10u << 24 | a << 16 | b);
	s4->sin_port = htons((uint16_t)port);
}

static void
sa6(struct sockaddr_storage *ss, unsigned a, unsigned b, unsigned port)
{
	struct sockaddr_in6 *s6 = (void *)ss;

	memset(ss, 0, sizeof(*ss));
	s6->sin6_family = AF_INET6;
	s6->sin6_addr.s6_addr[0] = 0xfd;
	s6->sin6_addr.s6_addr[13] = (uint8_t)a;
	s6->sin6_addr.s6_addr[15] = (uint8_t)b;
	s6->sin6_port = htons((uint16_t)port);
}

/* Every answer of a and b, asked of both. */
static void
same_models(const struct model *a, const struct model *b)
{
	static const unsigned ports[] = { 0, 80, 81, 443 };
	struct model_sizes sa, sb;
	struct sockaddr_storage ss;
	char key[32];

	for (int t = 0; t < MRES__COUNT; t++) {
		assert_int_equal(model_count(a, t), model_count(b, t));
		for (size_t i = 0; i < model_count(a, t); i++) {
			assert_ptr_equal(model_resource(a, t, i), model_resource(b, t, i));
			assert_ptr_equal(model_find(a, t, model_resource(a, t, i)->name), model_resource(a, t, i));
			assert_ptr_equal(model_find(b, t, model_resource(a, t, i)->name), model_resource(a, t, i));
		}
	}
	assert_int_equal(model_nports(a), model_nports(b));
	model_sizes(a, &sa);
	model_sizes(b, &sb);
	assert_int_equal(sa.workloads, sb.workloads);
	assert_int_equal(sa.workload_addresses, sb.workload_addresses);
	assert_int_equal(sa.services, sb.services);
	assert_int_equal(sa.service_vips, sb.service_vips);
	assert_int_equal(sa.endpoints, sb.endpoints);
	for (unsigned x = 0; x <= ip_pool; x++) {
		sa4(&ss, 1, x, 0);
		same_wl(model_workload_at(a, &ss), model_workload_at(b, &ss));
	}
	for (unsigned x = 0; x <= ip_pool; x++) {
		sa6(&ss, 1, x, 0);
		same_wl(model_workload_at(a, &ss), model_workload_at(b, &ss));
	}
	for (unsigned x = 0; x <= vip_pool; x++)
		for (size_t p = 0; p < sizeof(ports) / sizeof(ports[0]); p++) {
			sa4(&ss, 96, x, ports[p]);
			same_port(model_service_at(a, &ss), model_service_at(b, &ss));
			same_svc(model_service_vip(a, &ss), model_service_vip(b, &ss));
			sa6(&ss, 96, x, ports[p]);
			same_port(model_service_at(a, &ss), model_service_at(b, &ss));
			same_svc(model_service_vip(a, &ss), model_service_vip(b, &ss));
		}
	for (unsigned i = 0; i <= RND_SVCS; i++) {
		snprintf(key, sizeof(key), "ns/s%u.ns", i);
		same_svc(model_service(a, key), model_service(b, key));
	}
}

static void
same_reports(const struct model_report *a, const struct model_report *b)
{
	assert_int_equal(a->nproblems, b->nproblems);
	for (size_t i = 0; i < a->nproblems; i++) {
		assert_ptr_equal(a->problems[i].path, b->problems[i].path);
		assert_string_equal(a->problems[i].name, b->problems[i].name);
		assert_string_equal(a->problems[i].msg, b->problems[i].msg);
		assert_int_equal(a->problems[i].kept_previous, b->problems[i].kept_previous);
	}
}

static void
incremental_walk(unsigned ips, unsigned vips, unsigned strict_one_in)
{
	struct mres *cur[RND_SVCS + RND_WLS] = { 0 };
	struct model_input in[RND_IN];
	static char paths[RND_IN][16];
	struct model *prev = model_empty();
	size_t reused = 0, endpoints = 0, problems = 0;

	ip_pool = ips;
	vip_pool = vips;
	for (size_t i = 0; i < RND_IN; i++)
		snprintf(paths[i], sizeof(paths[i]), "in[%zu]", i);
	for (unsigned i = 0; i < RND_SVCS + RND_WLS; i++)
		cur[i] = rnd(4) ? (i < RND_SVCS ? rnd_service(i) : rnd_workload(i - RND_SVCS)) : NULL;
	for (int step = 0; step < 600; step++) {
		struct model_opts o = { .network = rnd(10) ? "" : "n2", .strict_refs = rnd(strict_one_in) == 0 },
				  fresh = o;
		struct model_report ra, rb;
		struct model *a, *b;
		size_t n = 0;
		unsigned edits = step % 10 == 0 ? 8 : 1 + rnd(2);

		/* Edits: a new version, a removal, or an addition. */
		for (unsigned e = 0; e < edits; e++) {
			unsigned i = rnd(RND_SVCS + RND_WLS);

			mres_unref(cur[i]);
			cur[i] = rnd(5) ? (i < RND_SVCS ? rnd_service(i) : rnd_workload(i - RND_SVCS)) : NULL;
		}
		/* Inputs: the resources, in an order that changes now and then
		 * (the store puts the changed ones last), with a second one of a
		 * name sometimes. */
		for (unsigned i = 0; i < RND_SVCS + RND_WLS; i++)
			if (cur[i]) {
				in[n].res = cur[i];
				in[n].path = paths[n];
				n++;
			}
		if (rnd(3) == 0)
			for (size_t i = n; i > 1; i--) {
				size_t k = rnd((unsigned)i);
				struct mres *t = in[i - 1].res;

				in[i - 1].res = in[k].res;
				in[k].res = t;
			}
		if (n && rnd(8) == 0) {
			unsigned i = rnd(RND_SVCS + RND_WLS);

			in[n].res = i < RND_SVCS ? rnd_service(i) : rnd_workload(i - RND_SVCS);
			in[n].path = paths[n];
			n++;
		}
		fresh.no_reuse = true;
		a = model_build(in, n, prev, &o, &ra);
		b = model_build(in, n, prev, &fresh, &rb);
		assert_non_null(a);
		assert_non_null(b);
		same_reports(&ra, &rb);
		same_models(a, b);
		for (size_t i = 0; i < model_count(a, MRES_ADDRESS); i++)
			reused += model_find(prev, MRES_ADDRESS, model_resource(a, MRES_ADDRESS, i)->name) ==
			    model_resource(a, MRES_ADDRESS, i);
		{
			struct model_sizes sz;

			model_sizes(a, &sz);
			endpoints += sz.endpoints;
		}
		problems += ra.nproblems;
		/* The extra resource named twice is the inputs' only reference. */
		for (size_t i = 0; i < n; i++) {
			bool held = false;

			for (unsigned k = 0; k < RND_SVCS + RND_WLS; k++)
				held |= cur[k] == in[i].res;
			if (!held)
				mres_unref(in[i].res);
		}
		model_report_free(&ra);
		model_report_free(&rb);
		model_free(b);
		model_free(prev);
		prev = a;
	}
	/* The walk did what it is for: most resources came from prev, the
	 * services had endpoints, and some inputs were refused. */
	assert_true(reused > 600 * 5);
	assert_true(endpoints > 600);
	assert_true(problems > 60);
	model_free(prev);
	for (unsigned i = 0; i < RND_SVCS + RND_WLS; i++)
		mres_unref(cur[i]);
}

static void
test_incremental_equals_fresh(void **state)
{
	(void)state;
	incremental_walk(12, 5, 4);	/* addresses and VIPs collide */
	incremental_walk(250, 250, 2);	/* they rarely do */
}

/* Allocation failures in a build over prev (the reuse paths): NULL, never
 * a crash or a leak (ASan), and a model once allocations succeed. */
static void
test_incremental_allocation_failures(void **state)
{
	struct model_input in[RND_SVCS + RND_WLS];
	struct model *prev;
	size_t n = 0;
	long k;

	(void)state;
	rnd_state = 7;
	for (unsigned i = 0; i < RND_SVCS + RND_WLS; i++) {
		in[n].res = i < RND_SVCS ? rnd_service(i) : rnd_workload(i - RND_SVCS);
		in[n++].path = "in";
	}
	prev = model_build(in, n, NULL, &(struct model_opts){ .network = "" }, NULL);
	assert_non_null(prev);
	mres_unref(in[n - 1].res);
	in[n - 1].res = rnd_workload(RND_WLS - 1);	/* one changed */
	for (k = 1; k < 10000; k++) {
		struct model *m;

		fail_at = k;
		m = model_build(in, n, prev, &(struct model_opts){ .network = "" }, NULL);
		if (fail_at > 0) {
			fail_at = 0;
			assert_non_null(m);
			model_free(m);
			break;
		}
		assert_null(m);
	}
	assert_true(k > 10 && k < 10000);
	model_free(prev);
	for (size_t i = 0; i < n; i++)
		mres_unref(in[i].res);
}

/* A service removed under strict_refs: a workload prev had that names it
 * is refused now, though it is prev's very resource (the path that trusts
 * prev's must not keep it). */
static void
test_incremental_service_removed(void **state)
{
	struct model_opts o = { .network = "", .strict_refs = true };
	struct model_input in[2];
	struct model_report rep;
	struct model *m1, *m2;

	(void)state;
	rnd_state = 99;
	ip_pool = vip_pool = 200;
	in[0].res = mk_res("{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"service\":{"
	    "\"name\":\"s1\",\"namespace\":\"ns\",\"hostname\":\"s1.ns\","
	    "\"addresses\":[{\"address\":\"CmAAAQ==\"}],\"ports\":[{\"servicePort\":80}]}}");
	in[1].res = mk_res("{\"@type\":\"type.googleapis.com/istio.workload.Address\",\"workload\":{"
	    "\"uid\":\"w1\",\"addresses\":[\"CgEAAQ==\"],\"services\":{\"ns/s1.ns\":{}}}}");
	in[0].path = "in[0]";
	in[1].path = "in[1]";
	m1 = model_build(in, 2, NULL, &o, &rep);
	assert_non_null(m1);
	assert_int_equal(rep.nproblems, 0);
	model_report_free(&rep);
	m2 = model_build(in + 1, 1, m1, &o, &rep);
	assert_non_null(m2);
	assert_int_equal(rep.nproblems, 1);
	assert_string_equal(rep.problems[0].msg, "in[1].workload.services[\"ns/s1.ns\"]: no such service");
	assert_int_equal(model_count(m2, MRES_ADDRESS), 0);
	model_report_free(&rep);
	model_free(m2);
	model_free(m1);
	mres_unref(in[0].res);
	mres_unref(in[1].res);
}

/* Waypoints (model_waypoint, reference xds-hbone.md §3.5): a Service's
 * waypoint by hostname, by the waypoint service's VIP, by the waypoint
 * pod's IP (with its own HBONE port); a Workload's; none; one named but
 * unknown (-ENOENT: the caller must not bypass it). */
#define WP_SVC(name, vip, wp) \
	"{" ADDR ",'service':{'name':'" name "','namespace':'ns','hostname':'" name ".ns.svc.cluster.local'," \
	"'addresses':[{'network':'','address':'" vip "'}],'ports':[{'servicePort':80,'targetPort':8080}]" wp "}}"

static void
test_waypoints(void **state)
{
	struct fix f;
	struct sockaddr_storage a;
	const struct mservice *s;
	const struct mworkload *w;
	struct mwaypoint wp;
	char ip[64];

	(void)state;
	build(&f, "{'resources':["
	    WP_SVC("waypoint", "CmAACQ==", "")	/* 10.96.0.9 */
	    "," WP_SVC("byname", "CmAAAg==", ",'waypoint':{'hostname':{'namespace':'ns',"
	        "'hostname':'waypoint.ns.svc.cluster.local'},'hboneMtlsPort':15008}")
	    "," WP_SVC("byvip", "CmAAAw==", ",'waypoint':{'address':{'network':'','address':'CmAACQ=='}}")
	    "," WP_SVC("bypod", "CmAABA==", ",'waypoint':{'address':{'network':'','address':'CgAABQ=='},"
	        "'hboneMtlsPort':15099}")
	    "," WP_SVC("dangling", "CmAABQ==", ",'waypoint':{'hostname':{'namespace':'ns',"
	        "'hostname':'gone.ns.svc.cluster.local'}}")
	    "," WP_SVC("plain", "CmAABg==", "")
	    "," WL("wp-pod", "'CgAABQ=='", ",'serviceAccount':'waypoint','tunnelProtocol':'HBONE',"
	        "'services':{'ns/waypoint.ns.svc.cluster.local':{'ports':[{'servicePort':80,'targetPort':15008}]}}")
	    "," WL("a-pod", "'" IP_10_0_0_1 "'", ",'waypoint':{'address':{'network':'','address':'CgAABQ=='}},"
	        "'services':{'ns/byname.ns.svc.cluster.local':{}}")
	    "]}", NULL, NULL);
	assert_int_equal(f.rep.nproblems, 0);

	assert_non_null(s = model_service(f.m, "ns/byname.ns.svc.cluster.local"));
	assert_int_equal(model_waypoint(f.m, s, NULL, 7, &wp), 1);
	assert_non_null(wp.wl);
	assert_string_equal(wp.wl->uid, "wp-pod");
	assert_string_equal(wp.wl->identity, "spiffe://cluster.local/ns/ns/sa/waypoint");
	assert_non_null(wp.svc);
	assert_string_equal(wp.svc->name, "waypoint");
	assert_int_equal(wp.addr.ss_family, AF_INET);
	inet_ntop(AF_INET, &((struct sockaddr_in *)&wp.addr)->sin_addr, ip, sizeof(ip));
	assert_string_equal(ip, "10.0.0.5");
	assert_int_equal(ntohs(((struct sockaddr_in *)&wp.addr)->sin_port), 15008);

	assert_non_null(s = model_service(f.m, "ns/byvip.ns.svc.cluster.local"));
	assert_int_equal(model_waypoint(f.m, s, NULL, 0, &wp), 1);
	assert_string_equal(wp.wl->uid, "wp-pod");
	assert_int_equal(ntohs(((struct sockaddr_in *)&wp.addr)->sin_port), 15008);	/* unset: 15008 */

	assert_non_null(s = model_service(f.m, "ns/bypod.ns.svc.cluster.local"));
	assert_int_equal(model_waypoint(f.m, s, NULL, 0, &wp), 1);
	assert_string_equal(wp.wl->uid, "wp-pod");
	assert_null(wp.svc);
	assert_int_equal(ntohs(((struct sockaddr_in *)&wp.addr)->sin_port), 15099);

	assert_non_null(s = model_service(f.m, "ns/dangling.ns.svc.cluster.local"));
	assert_int_equal(model_waypoint(f.m, s, NULL, 0, &wp), -ENOENT);
	assert_non_null(s = model_service(f.m, "ns/plain.ns.svc.cluster.local"));
	assert_int_equal(model_waypoint(f.m, s, NULL, 0, &wp), 0);

	/* Workload-addressed: the workload's own waypoint; the waypoint pod has none. */
	a = sa("10.0.0.1", 0);
	assert_non_null(w = model_workload_at(f.m, &a));
	assert_int_equal(model_waypoint(f.m, NULL, w, 0, &wp), 1);
	assert_string_equal(wp.wl->uid, "wp-pod");
	a = sa("10.0.0.5", 0);
	assert_non_null(w = model_workload_at(f.m, &a));
	assert_int_equal(model_waypoint(f.m, NULL, w, 0, &wp), 0);
	assert_int_equal(model_waypoint(f.m, NULL, NULL, 0, &wp), 0);
	done(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_mesh),
		cmocka_unit_test(test_health_policy_and_lb),
		cmocka_unit_test(test_ip_families),
		cmocka_unit_test(test_networks),
		cmocka_unit_test(test_clusters_and_other_types),
		cmocka_unit_test(test_mtls_peers),
		cmocka_unit_test(test_transport_per_endpoint),
		cmocka_unit_test(test_bad_inputs),
		cmocka_unit_test(test_any_bytes_that_do_not_unpack),
		cmocka_unit_test(test_lax_refs),
		cmocka_unit_test(test_kept_previous),
		cmocka_unit_test(test_kept_previous_conflict),
		cmocka_unit_test(test_kept_previous_other_kind),
		cmocka_unit_test(test_empty_and_mres),
		cmocka_unit_test(test_allocation_failures),
		cmocka_unit_test(test_incremental_equals_fresh),
		cmocka_unit_test(test_incremental_service_removed),
		cmocka_unit_test(test_incremental_allocation_failures),
		cmocka_unit_test(test_waypoints),
	};

	if (model_register_types() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
