/* Unit tests for src/authz.c (issue 12, "Authorization", and the outsider
 * review's findings): the evaluator's order and ztunnel's semantics
 * (62d826530e5c src/state.rs assert_rbac, src/rbac.rs, src/state/policy.rs),
 * on models built from proto3 JSON resources as the static loader decodes
 * them. Each review finding's test names it ("finding N"). */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <cjson/cJSON.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz.h"
#include "istio/security/authorization.pb-c.h"
#include "json.h"
#include "model.h"
#include "resources.h"

#define AUTHZ "'@type':'type.googleapis.com/istio.security.Authorization'"
#define ADDR "'@type':'type.googleapis.com/istio.workload.Address'"
#define IP_10_0_0_1 "CgAAAQ=="		/* 10.0.0.1 */
#define IP_10_0_0_2 "CgAAAg=="		/* 10.0.0.2 */

/* The workload at 10.0.0.1 (namespace ns), binding the policies listed
 * (a JSON array's inside, single-quoted). */
#define WL1(pols) \
	"{" ADDR ",'workload':{'uid':'w1','name':'w1','namespace':'ns','addresses':['" IP_10_0_0_1 "']," \
	"'authorizationPolicies':[" pols "]}}"
/* The workload at 10.0.0.2, in namespace other, binding the policies listed. */
#define WL2(pols) \
	"{" ADDR ",'workload':{'uid':'w2','name':'w2','namespace':'other','addresses':['" IP_10_0_0_2 "']," \
	"'authorizationPolicies':[" pols "]}}"
/* A policy: name, namespace, scope, action, groups (the JSON array's inside). */
#define POL(name, ns, scope, action, groups) \
	"{" AUTHZ ",'name':'" name "','namespace':'" ns "','scope':'" scope "','action':'" action "'," \
	"'groups':[" groups "]}"
#define DRY(name, ns, scope, action, groups) \
	"{" AUTHZ ",'name':'" name "','namespace':'" ns "','scope':'" scope "','action':'" action "'," \
	"'dryRun':true,'groups':[" groups "]}"
/* One group, one rule, one match. */
#define ONE(match) "{'rules':[{'matches':[{" match "}]}]}"
#define PR(id) "'principals':[{'exact':'" id "'}]"
#define ANY_PR "'principals':[{'presence':{}}]"

#define CLIENT "spiffe://cluster.local/ns/default/sa/client"

struct fix {
	struct model *m;
	struct authz *a;
	struct res_report rep;
};

/* Builds the model of resources (a JSON array, single quotes) and its
 * policies; every resource must be accepted. */
static void
build(struct fix *f, const char *resources)
{
	char *text = strdup(resources), err[256];
	cJSON *j;

	assert_non_null(text);
	for (char *p = text; *p; p++)
		if (*p == '\'')
			*p = '"';
	if (!(j = json_parse_strict(text, strlen(text), err, sizeof(err))))
		fail_msg("%.200s: %s", text, err);
	free(text);
	memset(f, 0, sizeof(*f));
	f->m = resources_build(j, NULL, &f->rep);
	cJSON_Delete(j);
	assert_non_null(f->m);
	if (f->rep.refused)
		fail_msg("refused: %s", f->rep.lines[0]);
	assert_non_null(f->a = authz_build(f->m));
}

/* The refusal line of resources (one must be refused), or fails. */
static void
refused(const char *resources, const char *want)
{
	struct fix f;
	char text[16384], err[256];
	cJSON *j;

	snprintf(text, sizeof(text), "%s", resources);
	for (char *p = text; *p; p++)
		if (*p == '\'')
			*p = '"';
	if (!(j = json_parse_strict(text, strlen(text), err, sizeof(err))))
		fail_msg("%s: %s", text, err);
	memset(&f, 0, sizeof(f));
	f.m = resources_build(j, NULL, &f.rep);
	cJSON_Delete(j);
	if (!f.rep.refused)
		fail_msg("accepted: %s", resources);
	if (!strstr(f.rep.lines[0], want))
		fail_msg("refusal \"%s\" does not say \"%s\"", f.rep.lines[0], want);
	res_report_free(&f.rep);
	model_free(f.m);
}

static void
unfix(struct fix *f)
{
	authz_free(f->a);
	res_report_free(&f->rep);
	model_free(f->m);
}

static struct sockaddr_storage
sa4(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *s4 = (void *)&ss;

	s4->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	s4->sin_port = htons(port);
	return ss;
}

/* The verdict for peer (NULL: plaintext) from 10.1.0.1 to dst:port, the
 * local workload being the model's at dst (as tunnel.c finds it). */
static enum authz_verdict
judge(struct fix *f, const char *peer, const char *dst, uint16_t port, struct authz_result *res)
{
	struct sockaddr_storage s = sa4("10.1.0.1", 40000), d = sa4(dst, port);
	struct authz_conn c = { (const struct sockaddr *)&s, (const struct sockaddr *)&d, peer };
	struct authz_result tmp;

	return authz_check(f->a, model_workload_at(f->m, &d), &c, res ? res : &tmp, NULL);
}

/* ---- The evaluator's order (ztunnel's assert_rbac) ---- */

static void
test_order_deny_allow_default(void **state)
{
	static uint64_t counters[2 * AUTHZ_SLOTS];
	struct fix f;
	struct authz_result res;
	struct sockaddr_storage s = sa4("10.1.0.1", 1), d = sa4("10.0.0.1", 80);
	struct authz_conn c = { (const struct sockaddr *)&s, (const struct sockaddr *)&d, CLIENT };

	(void)state;
	/* No policy: allow, nothing decided. */
	build(&f, "[" WL1("") "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, &res), AUTHZ_ALLOW);
	assert_null(res.policy);
	unfix(&f);
	/* A matching DENY wins over a matching ALLOW, whatever the order. */
	build(&f, "[" WL1("'ns/a','ns/d'") "," POL("a", "ns", "WORKLOAD_SELECTOR", "ALLOW", ONE(ANY_PR)) ","
	    POL("d", "ns", "WORKLOAD_SELECTOR", "DENY", ONE(PR("cluster.local/ns/default/sa/client"))) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, &res), AUTHZ_DENY);
	assert_string_equal(res.policy, "ns/d");
	/* A DENY that does not match leaves the ALLOW to decide. */
	assert_int_equal(judge(&f, "spiffe://cluster.local/ns/default/sa/other", "10.0.0.1", 80, &res), AUTHZ_ALLOW);
	assert_string_equal(res.policy, "ns/a");
	/* ALLOW policies exist and none matches: deny, by no policy. */
	assert_int_equal(judge(&f, NULL, "10.0.0.1", 80, &res), AUTHZ_DENY);
	assert_null(res.policy);
	assert_int_equal(res.slot, AUTHZ_SLOT_NONE);
	unfix(&f);
	/* No ALLOW policy, a DENY that does not match: allow. */
	build(&f, "[" WL1("'ns/d'") "," POL("d", "ns", "WORKLOAD_SELECTOR", "DENY", ONE(PR("cluster.local/ns/x/sa/y"))) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, &res), AUTHZ_ALLOW);
	unfix(&f);
	/* An ALLOW with no groups matches nothing (ztunnel: empty rules). */
	build(&f, "[" WL1("'ns/a'") "," POL("a", "ns", "WORKLOAD_SELECTOR", "ALLOW", "") "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, &res), AUTHZ_DENY);
	unfix(&f);
	/* dry_run never decides: a matching dry DENY allows, a dry ALLOW that
	 * matches nothing does not make it deny; both are counted. AUDIT
	 * likewise, counted as allow. */
	build(&f, "[" WL1("'ns/dd','ns/da','ns/au'") "," DRY("dd", "ns", "WORKLOAD_SELECTOR", "DENY", ONE(ANY_PR)) ","
	    DRY("da", "ns", "WORKLOAD_SELECTOR", "ALLOW", ONE(PR("cluster.local/ns/x/sa/y"))) ","
	    POL("au", "ns", "WORKLOAD_SELECTOR", "AUDIT", ONE(ANY_PR)) "]");
	assert_int_equal(authz_check(f.a, model_workload_at(f.m, &d), &c, &res, counters), AUTHZ_ALLOW);
	assert_null(res.policy);
	for (unsigned slot = 1; slot < authz_nslots(); slot++) {
		char n[256];

		if (!authz_slot_name(slot, n, sizeof(n)))
			continue;
		if (strcmp(n, "ns/dd") == 0)
			assert_int_equal(counters[slot * 2 + AUTHZ_DENY], 1);
		if (strcmp(n, "ns/au") == 0)
			assert_int_equal(counters[slot * 2 + AUTHZ_ALLOW], 1);
		if (strcmp(n, "ns/da") == 0)
			assert_int_equal(counters[slot * 2 + AUTHZ_ALLOW] + counters[slot * 2 + AUTHZ_DENY], 0);
	}
	unfix(&f);
}

/* ---- Finding 1: no local workload ---- */

/* ztunnel refuses an inbound connection to an address that is not its
 * workload's (no local workload, no RBAC context). We deny it when a
 * NAMESPACE or WORKLOAD_SELECTOR policy that enforces exists (it could be
 * the pod's); GLOBAL ones alone are judged as usual; none at all allows. */
static void
test_no_local_workload_fails_closed(void **state)
{
	struct fix f;
	struct authz_result res;

	(void)state;
	/* A NAMESPACE DENY that does not match the client: the known workload
	 * allows; the unknown address (10.0.0.9) used to be judged by the
	 * GLOBAL policies alone (none: allowed). */
	build(&f, "[" WL1("") "," POL("d", "ns", "NAMESPACE", "DENY", ONE(PR("cluster.local/ns/x/sa/y"))) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 8080, &res), AUTHZ_ALLOW);
	assert_false(res.no_workload);
	assert_int_equal(judge(&f, CLIENT, "10.0.0.9", 8080, &res), AUTHZ_DENY);
	assert_true(res.no_workload);
	assert_null(res.policy);
	assert_int_equal(res.slot, AUTHZ_SLOT_NONE);
	unfix(&f);
	/* A WORKLOAD_SELECTOR ALLOW bound by nobody: the same. */
	build(&f, "[" WL1("") "," POL("a", "ns", "WORKLOAD_SELECTOR", "ALLOW", ONE(ANY_PR)) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.9", 8080, &res), AUTHZ_DENY);
	assert_true(res.no_workload);
	unfix(&f);
	/* Only GLOBAL policies: judged (a GLOBAL DENY of another principal
	 * allows; one of the client denies, by name). */
	build(&f, "[" POL("g", "istio-system", "GLOBAL", "DENY", ONE(PR("cluster.local/ns/x/sa/y"))) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.9", 8080, &res), AUTHZ_ALLOW);
	unfix(&f);
	build(&f, "[" POL("g", "istio-system", "GLOBAL", "DENY", ONE(PR("cluster.local/ns/default/sa/client"))) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.9", 8080, &res), AUTHZ_DENY);
	assert_false(res.no_workload);
	assert_string_equal(res.policy, "istio-system/g");
	unfix(&f);
	/* dry_run and AUDIT never decide, so they cannot make it deny. */
	build(&f, "[" DRY("d", "ns", "NAMESPACE", "DENY", ONE(ANY_PR)) ","
	    POL("au", "ns", "NAMESPACE", "AUDIT", ONE(ANY_PR)) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.9", 8080, &res), AUTHZ_ALLOW);
	unfix(&f);
	/* No policy: allowed (a mesh without WDS keeps working). */
	build(&f, "[]");
	assert_int_equal(judge(&f, NULL, "10.0.0.9", 8080, &res), AUTHZ_ALLOW);
	unfix(&f);
}

/* ---- Finding 4: unknown action and scope values ---- */

/* ztunnel NACKs an action or scope it does not know (TryFrom in rbac.rs);
 * AUDIT (2) is our extension. authz_policy_check refuses the others by
 * field name, whoever calls it (the model also refuses unknown enum
 * numbers in general). */
static void
test_unknown_action_and_scope_refused(void **state)
{
	Istio__Security__Authorization p = ISTIO__SECURITY__AUTHORIZATION__INIT;
	char why[256];

	(void)state;
	p.name = "x";
	p.namespace_ = "ns";
	for (int v = 0; v <= 2; v++) {
		p.action = (Istio__Security__Action)v;
		assert_int_equal(authz_policy_check(&p, why, sizeof(why)), 0);
	}
	p.action = (Istio__Security__Action)3;
	assert_int_equal(authz_policy_check(&p, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "action: unknown value 3"));
	p.action = (Istio__Security__Action)-1;
	assert_int_equal(authz_policy_check(&p, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "action"));
	p.action = ISTIO__SECURITY__ACTION__DENY;
	p.scope = (Istio__Security__Scope)3;
	assert_int_equal(authz_policy_check(&p, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "scope: unknown value 3"));
	p.scope = (Istio__Security__Scope)77;
	assert_int_equal(authz_policy_check(&p, why, sizeof(why)), -EINVAL);
	/* Through the loader, a number in proto3 JSON: refused, naming the field. */
	refused("[{" AUTHZ ",'name':'x','namespace':'ns','action':3}]", "action");
	refused("[{" AUTHZ ",'name':'x','namespace':'ns','scope':3}]", "scope");
}

/* ---- Finding 5: how policies bind (ztunnel's PolicyStore and assert_rbac) ---- */

static void
test_scope_binding_as_ztunnel(void **state)
{
	struct fix f;
	struct authz_result res;

	(void)state;
	/* NAMESPACE with namespace "": filed under by_namespace[""], the
	 * global key: it binds every workload (it bound none). */
	build(&f, "[" WL1("") "," WL2("") "," POL("g", "", "NAMESPACE", "DENY", ONE(ANY_PR)) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, &res), AUTHZ_DENY);
	assert_string_equal(res.policy, "/g");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.2", 80, NULL), AUTHZ_DENY);
	unfix(&f);
	/* A policy the Workload lists applies whatever its scope: NAMESPACE of
	 * another namespace (w1 is in ns), listed by w1 only. */
	build(&f, "[" WL1("'other/n'") "," WL2("") "," POL("n", "other", "NAMESPACE", "DENY", ONE(ANY_PR)) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, &res), AUTHZ_DENY);
	assert_string_equal(res.policy, "other/n");
	/* ... and w2 (namespace other) has it by its namespace. */
	assert_int_equal(judge(&f, CLIENT, "10.0.0.2", 80, NULL), AUTHZ_DENY);
	unfix(&f);
	/* WORKLOAD_SELECTOR: only where listed; NAMESPACE: only its namespace. */
	build(&f, "[" WL1("'ns/w'") "," WL2("") "," POL("w", "ns", "WORKLOAD_SELECTOR", "DENY", ONE(ANY_PR)) ","
	    POL("n", "other", "NAMESPACE", "ALLOW", ONE(PR("cluster.local/ns/x/sa/y"))) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, &res), AUTHZ_DENY);
	assert_string_equal(res.policy, "ns/w");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.2", 80, &res), AUTHZ_DENY);	/* other/n: no ALLOW matched */
	assert_null(res.policy);
	unfix(&f);
	build(&f, "[" WL1("") "," WL2("") "," POL("w", "ns", "WORKLOAD_SELECTOR", "DENY", ONE(ANY_PR)) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, NULL), AUTHZ_ALLOW);
	unfix(&f);
	/* A GLOBAL policy also listed is evaluated once: counted once. */
	build(&f, "[" WL1("'istio-system/g'") "," POL("g", "istio-system", "GLOBAL", "DENY", ONE(ANY_PR)) "]");
	{
		static uint64_t counters[2 * AUTHZ_SLOTS];
		struct sockaddr_storage s = sa4("10.1.0.1", 1), d = sa4("10.0.0.1", 80);
		struct authz_conn c = { (const struct sockaddr *)&s, (const struct sockaddr *)&d, CLIENT };

		assert_int_equal(authz_check(f.a, model_workload_at(f.m, &d), &c, &res, counters), AUTHZ_DENY);
		assert_int_equal(counters[res.slot * 2 + AUTHZ_DENY], 1);
	}
	unfix(&f);
}

/* ---- Finding 6: the peer's SPIFFE ID, parsed strictly ---- */

/* ztunnel's Identity::from_str wants exactly spiffe://<td>/ns/<ns>/sa/<sa>;
 * a SAN it refuses is no identity (tls/certificate.rs), and a principal is
 * compared only after stripping "spiffe://" (rbac.rs matches_principal).
 * Ours is identity.c's spiffe_parse (lengths bounded: td 255, ns and sa
 * 127). An ID that does not parse matches no principal, namespace or
 * service account, not even presence; it matches their negations. */
static void
test_peer_id_parsed_strictly(void **state)
{
	struct fix f;
	char longns[300], id[400];

	(void)state;
	build(&f, "[" WL1("'ns/p','ns/n','ns/s'") ","
	    POL("p", "ns", "WORKLOAD_SELECTOR", "ALLOW", ONE(PR("cluster.local/ns/default/sa/client"))) ","
	    POL("n", "ns", "WORKLOAD_SELECTOR", "ALLOW", ONE("'namespaces':[{'exact':'default'}]")) ","
	    POL("s", "ns", "WORKLOAD_SELECTOR", "ALLOW",
	        ONE("'serviceAccounts':[{'namespace':'default','serviceAccount':'client'}]")) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, NULL), AUTHZ_ALLOW);
	/* Matched raw before: no spiffe:// prefix. */
	assert_int_equal(judge(&f, "cluster.local/ns/default/sa/client", "10.0.0.1", 80, NULL), AUTHZ_DENY);
	/* "/ns/" found anywhere before; extra segments; an empty one. */
	assert_int_equal(judge(&f, "spiffe://cluster.local/x/ns/default/sa/client", "10.0.0.1", 80, NULL), AUTHZ_DENY);
	assert_int_equal(judge(&f, "spiffe://cluster.local/ns/default/sa/client/x", "10.0.0.1", 80, NULL), AUTHZ_DENY);
	assert_int_equal(judge(&f, "spiffe:///ns/default/sa/client", "10.0.0.1", 80, NULL), AUTHZ_DENY);
	/* A namespace past the bound (it was copied up to 255 bytes). */
	memset(longns, 'a', 200);
	longns[200] = 0;
	snprintf(id, sizeof(id), "spiffe://cluster.local/ns/%s/sa/client", longns);
	assert_int_equal(judge(&f, id, "10.0.0.1", 80, NULL), AUTHZ_DENY);
	unfix(&f);
	/* Presence: an unparsable ID is no identity, as plaintext is. */
	build(&f, "[" WL1("'ns/any'") "," POL("any", "ns", "WORKLOAD_SELECTOR", "ALLOW", ONE(ANY_PR)) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, NULL), AUTHZ_ALLOW);
	assert_int_equal(judge(&f, "spiffe://cluster.local/ns/a", "10.0.0.1", 80, NULL), AUTHZ_DENY);
	assert_int_equal(judge(&f, "bogus", "10.0.0.1", 80, NULL), AUTHZ_DENY);
	assert_int_equal(judge(&f, NULL, "10.0.0.1", 80, NULL), AUTHZ_DENY);
	unfix(&f);
	/* istiod's STRICT conversion (DENY notPrincipals presence) denies it. */
	build(&f, "[" WL1("") "," POL("strict", "istio-system", "GLOBAL", "DENY",
	    ONE("'notPrincipals':[{'presence':{}}]")) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, NULL), AUTHZ_ALLOW);
	assert_int_equal(judge(&f, "cluster.local/ns/default/sa/client", "10.0.0.1", 80, NULL), AUTHZ_DENY);
	unfix(&f);
}

/* ---- Finding 9: a match empty after compilation ---- */

/* ztunnel decides emptiness on the converted match (values it cannot
 * convert dropped first) and skips an empty one: it matches nothing. The
 * validation refuses such values, so the test edits an accepted model's
 * message as a caller that skipped it (the fuzz target) would hand it:
 * a principal with no match type set. As an ALLOW it allowed everyone. */
static void
test_match_empty_after_compilation_matches_nothing(void **state)
{
	struct fix f;
	Istio__Security__Authorization *p;

	(void)state;
	build(&f, "[" WL1("'ns/a'") "," POL("a", "ns", "WORKLOAD_SELECTOR", "ALLOW", ONE(PR("cluster.local/ns/x/sa/y"))) "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, NULL), AUTHZ_DENY);
	p = (Istio__Security__Authorization *)model_resource(f.m, MRES_AUTHORIZATION, 0)->msg;
	p->groups[0]->rules[0]->matches[0]->principals[0]->match_type_case =
	    ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE__NOT_SET;
	authz_free(f.a);
	assert_non_null(f.a = authz_build(f.m));
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, NULL), AUTHZ_DENY);
	assert_int_equal(judge(&f, NULL, "10.0.0.1", 80, NULL), AUTHZ_DENY);
	/* Put back for the message's free (the string it points to is owned). */
	p->groups[0]->rules[0]->matches[0]->principals[0]->match_type_case =
	    ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT;
	unfix(&f);
	/* The converted-empty rule of ztunnel's rbac_empty_policy: a rule
	 * with no matches at all (an empty clause) matches; one whose only
	 * match is empty does not. */
	build(&f, "[" WL1("'ns/r'") "," POL("r", "ns", "WORKLOAD_SELECTOR", "ALLOW", "{'rules':[{}]}") "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, NULL), AUTHZ_ALLOW);
	unfix(&f);
	build(&f, "[" WL1("'ns/r'") "," POL("r", "ns", "WORKLOAD_SELECTOR", "ALLOW", "{'rules':[{'matches':[{}]}]}") "]");
	assert_int_equal(judge(&f, CLIENT, "10.0.0.1", 80, NULL), AUTHZ_DENY);
	unfix(&f);
}

/* ---- Finding 7: the slot registry's bound ---- */

static unsigned resets[AUTHZ_SLOTS], nresets;

static void
record_reset(unsigned slot)
{
	resets[nresets++ % AUTHZ_SLOTS] = slot;
}

/* A model of n DENY-all policies ns/<prefix><i>, bound to w1 (by
 * namespace ns). */
static void
build_many(struct fix *f, const char *prefix, size_t n)
{
	size_t cap = n * 200 + 512, off = 0;
	char *text = malloc(cap);

	assert_non_null(text);
	off += (size_t)snprintf(text + off, cap - off, "[%s", WL1(""));
	for (size_t i = 0; i < n; i++)
		off += (size_t)snprintf(text + off, cap - off, ",{" AUTHZ ",'name':'%s%zu','namespace':'ns',"
		    "'scope':'NAMESPACE','action':'DENY','groups':[" ONE(ANY_PR) "]}", prefix, i);
	snprintf(text + off, cap - off, "]");
	build(f, text);
	free(text);
}

/* Review finding 7: slots were never reused, so churning policy names
 * ended in the overflow slot for good. A slot whose policy no live
 * snapshot has is reused for a new name, its counters reset first
 * (the hook); while the old snapshot lives, the new names overflow. */
static void
test_slots_reused_once_free(void **state)
{
	struct fix a, b;
	struct authz_result res;
	char name[256];
	unsigned slot;

	(void)state;
	authz_set_slot_reset(record_reset);
	build_many(&a, "old", AUTHZ_SLOTS + 10);	/* every slot taken, and held by a */
	assert_true(authz_full());
	build_many(&b, "new", 1);
	assert_int_equal(judge(&b, CLIENT, "10.0.0.1", 80, &res), AUTHZ_DENY);
	assert_string_equal(res.policy, "ns/new0");
	assert_int_equal(res.slot, AUTHZ_SLOT_OVERFLOW);	/* none free yet */
	assert_true(authz_slot_name(AUTHZ_SLOT_OVERFLOW, name, sizeof(name)));
	assert_string_equal(name, "overflow");
	/* a's snapshot goes: b's next build reuses a slot for ns/new0. */
	unfix(&a);
	nresets = 0;
	authz_free(b.a);
	assert_non_null(b.a = authz_build(b.m));
	assert_int_equal(judge(&b, CLIENT, "10.0.0.1", 80, &res), AUTHZ_DENY);
	slot = res.slot;
	assert_int_not_equal(slot, AUTHZ_SLOT_OVERFLOW);
	assert_int_not_equal(slot, AUTHZ_SLOT_NONE);
	assert_true(authz_slot_name(slot, name, sizeof(name)));
	assert_string_equal(name, "ns/new0");
	assert_int_equal(nresets, 1);
	assert_int_equal(resets[0], slot);
	/* Stable from then on: the same slot at the next build, no reset. */
	authz_free(b.a);
	assert_non_null(b.a = authz_build(b.m));
	assert_int_equal(judge(&b, CLIENT, "10.0.0.1", 80, &res), AUTHZ_DENY);
	assert_int_equal(res.slot, slot);
	assert_int_equal(nresets, 1);
	unfix(&b);
	authz_set_slot_reset(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_deny_allow_default),
		cmocka_unit_test(test_no_local_workload_fails_closed),
		cmocka_unit_test(test_unknown_action_and_scope_refused),
		cmocka_unit_test(test_scope_binding_as_ztunnel),
		cmocka_unit_test(test_peer_id_parsed_strictly),
		cmocka_unit_test(test_match_empty_after_compilation_matches_nothing),
		cmocka_unit_test(test_slots_reused_once_free),	/* fills the registry: last */
	};

	if (model_register_types() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
