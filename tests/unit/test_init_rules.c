/* Unit tests for init/rules.c: the iptables-restore input of --dry-run
 * against golden files (istio's own outputs where the reference has them,
 * cases derived from istio's rule order otherwise), and the cleanup list. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_init_common.h"
#include "../../src/strbuf.h"

/* One golden case: flags, environment, pod facts, expected file. */
struct rcase {
	const char *golden;
	const char *args[24];
	const char *env[8]; /* "NAME=value" */
	bool ipv6;
	const char *dns4[4];
	const char *dns6[4];
};

static const struct rcase cases[] = {
	/* istio cni/pkg/plugin/testdata/basic.txt.golden (real istio output) */
	{ .golden = "cni-basic.golden",
	  .args = { "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
	    "-b", "*", "-d", "15020,15021,15090", "-o", "15020" } },
	/* the injected istio-init arguments (hello.yaml.injected) */
	{ .golden = "istio-init-default.golden",
	  .args = { "istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
	    "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
	    "--log_output_level=default:info" } },
	/* istio capture/testdata/inbound-ports-wildcard-tproxy.golden */
	{ .golden = "inbound-ports-wildcard-tproxy.golden", .args = { "-m", "TPROXY", "-b", "*" } },
	/* istio cni/pkg/plugin/testdata/dns.txt.golden (real istio output: capture-all DNS;
	 * note the gid hairpin without port 53 and the UDP RETURNs per uid/gid) */
	{ .golden = "istio-cni-dns.golden",
	  .args = { "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", "",
	    "-b", "*", "-d", "15020,15021,15090", "-o", "15020", "--redirect-dns", "--capture-all-dns" } },
	/* istio capture/testdata/tproxy.golden (real istio output, current format): TPROXY,
	 * exclude NIC, -x/-i CIDR lists (no closing RETURN), DNS with v4 servers only (no v6
	 * raw ISTIO_INBOUND) */
	{ .golden = "istio-tproxy.golden",
	  .args = { "-m", "TPROXY", "-b", "*", "-x", "1.1.0.0/16", "-i", "9.9.0.0/16", "--redirect-dns",
	    "-c", "not-istio-nic" }, .ipv6 = true, .dns4 = { "127.0.0.53" } },
	/* derived from istio's rule order (reference §1.5-1.7) */
	{ .golden = "empty.golden", .args = { NULL } },
	{ .golden = "ipv6-dual-stack.golden", .args = { "-i", "*", "-b", "*", "-d", "15020,15021,15090", "--dual-stack" },
	  .ipv6 = true },
	{ .golden = "dns.golden", .args = { "-i", "*", "-b", "*", "--redirect-dns" }, .dns4 = { "10.96.0.10" },
	  .dns6 = { "fd00:10:96::a" } },
	{ .golden = "dns-ipv6.golden", .args = { "-i", "*", "-b", "*", "--redirect-dns" }, .ipv6 = true,
	  .dns4 = { "10.96.0.10" }, .dns6 = { "fd00:10:96::a" } },
	{ .golden = "dns-capture-all.golden", .args = { "-i", "*", "--redirect-dns", "--capture-all-dns" } },
	{ .golden = "dns-uid-gid.golden", .args = { "-u", "1,2", "-g", "3,4", "--redirect-dns" },
	  .dns4 = { "127.0.0.53" } },
	{ .golden = "dns-env-alias.golden", .args = { "-i", "*" }, .env = { "ISTIO_META_DNS_CAPTURE=true" },
	  .dns4 = { "10.96.0.10", "10.96.0.11" } },
	{ .golden = "outbound-owner-groups.golden", .args = { "-i", "*" },
	  .env = { "ISTIO_OUTBOUND_OWNER_GROUPS=java,202" } },
	{ .golden = "outbound-owner-groups-exclude.golden", .args = { "-i", "*" },
	  .env = { "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=888,ftp" } },
	{ .golden = "inbound-ports-include.golden", .args = { "-b", "32000,31000" } },
	{ .golden = "ipnets-exclude.golden",
	  .args = { "-i", "10.0.0.0/8,fd00::/8", "-x", "10.96.0.1/32,192.168.0.0/16,fd00::1/128" },
	  .ipv6 = true },
	{ .golden = "kube-virt-interfaces.golden", .args = { "-i", "*", "-k", "eth1,eth2" } },
	{ .golden = "ipnets-with-kube-virt-interfaces.golden",
	  .args = { "-i", "10.0.0.0/8,172.16.0.0/12", "-k", "eth1" } },
	{ .golden = "basic-exclude-nic.golden", .args = { "-b", "*", "-i", "*", "-c", "not-istio-nic" } },
	{ .golden = "exclude-nic-tproxy.golden", .args = { "-m", "TPROXY", "-b", "8080", "-c", "eth9" } },
	{ .golden = "drop-invalid.golden", .args = { "-i", "*", "--drop-invalid" } },
	{ .golden = "drop-invalid-env-alias.golden", .args = { "-i", "*" }, .env = { "INVALID_DROP=true" } },
	{ .golden = "outbound-ports-include.golden", .args = { "-q", "32000,31000" } },
	{ .golden = "outbound-ports-exclude.golden", .args = { "-i", "*", "-o", "3306,5432" } },
	{ .golden = "loopback-outbound-iprange.golden", .args = { "-i", "127.1.2.3/32" } },
	{ .golden = "host-ipv4-loopback-cidr.golden", .args = { "-i", "*" },
	  .env = { "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=127.0.0.1/8" } },
	{ .golden = "tproxy-ports-ipv6.golden", .args = { "-m", "TPROXY", "-b", "80,8080", "-i", "*" },
	  .ipv6 = true },
	{ .golden = "env-config.golden", .args = { NULL },
	  .env = { "ISTIO_SERVICE_CIDR=*", "ISTIO_INBOUND_PORTS=*",
		   "ISTIO_LOCAL_EXCLUDE_PORTS=22,15090,15021,15020", "PROXY_UID=998",
		   "INBOUND_CAPTURE_PORT=16006" } },
};

/* Build the dry-run text of a case. */
static char *case_text(const struct rcase *k)
{
	struct init_config c;
	struct pod_facts p = { 0 };
	struct ruleset rs = { 0 };
	char err[512];
	char *text;

	init_env_clear();
	for (size_t i = 0; i < 8 && k->env[i] != NULL; i++)
		putenv((char *)k->env[i]);
	assert_int_equal(init_config_from(&c, k->args, err, sizeof(err)), 0);
	p.enable_ipv6 = k->ipv6;
	for (size_t i = 0; i < 4 && k->dns4[i]; i++)
		assert_int_equal(strlist_add(&p.dns_v4, k->dns4[i]), 0);
	for (size_t i = 0; i < 4 && k->dns6[i]; i++)
		assert_int_equal(strlist_add(&p.dns_v6, k->dns6[i]), 0);
	assert_int_equal(rules_build(&c, &p, &rs), 0);
	text = rules_dry_run_text(&rs, p.enable_ipv6);
	assert_non_null(text);
	rules_free(&rs);
	podinfo_free(&p);
	flags_free(&c);
	for (size_t i = 0; i < 8 && k->env[i] != NULL; i++) {
		char name[128];
		snprintf(name, sizeof(name), "%s", k->env[i]);
		*strchr(name, '=') = '\0';
		unsetenv(name);
	}
	return text;
}

static void test_golden(void **state)
{
	const struct rcase *k = *state;
	char *text = case_text(k);

	assert_int_equal(golden_compare(k->golden, text), 0);
	free(text);
}

/* Cleanup reverses the rule list, turns it into -D, then -F and -X every
 * chain (istio BuildCleanupV4). */
static void test_cleanup_list(void **state)
{
	static const char *const args[] = { "-p", "15001", "-z", "15006", "-u", "1337",
					     "-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*",
					     "-d", "15020,15021,15090", "-o", "15020", NULL };
	struct init_config c;
	struct pod_facts p = { 0 };
	struct ruleset rs = { 0 };
	struct cmdlist cl = { 0 };
	struct strbuf out = { 0 };
	char err[512];

	(void)state;
	init_env_clear();
	assert_int_equal(init_config_from(&c, args, err, sizeof(err)), 0);
	assert_int_equal(rules_build(&c, &p, &rs), 0);
	assert_int_equal(rules_cleanup(&rs, RULE_V4, false, &cl), 0);
	/* the 20 IPv4 rules, then -F and -X for the 4 chains */
	assert_int_equal(cl.n, 20 + 8);
	for (size_t i = 0; i < cl.n; i++)
		for (char **a = cl.v[i]; *a; a++)
			sb_printf(&out, "%s%c", *a, a[1] ? ' ' : '\n');
	assert_false(out.oom);
	assert_int_equal(golden_compare("cleanup-cni-basic.golden", out.p), 0);
	sb_free(&out);
	cmdlist_free(&cl);

	/* all_chains adds istio's other chains (DNS, TPROXY, DROP) */
	assert_int_equal(rules_cleanup(&rs, RULE_V4, true, &cl), 0);
	assert_int_equal(cl.n, 20 + 2 * (5 + 4 + 2));
	cmdlist_free(&cl);
	rules_free(&rs);
	flags_free(&c);
}

/* No IPv6 rule at all when IPv6 is off (istio: "no ip6tables rules"). */
static void test_no_ipv6_when_disabled(void **state)
{
	static const struct rcase k = { .args = { "-i", "10.0.0.0/8,fd00::/8", "-b", "*" } };
	char *text = case_text(&k);

	(void)state;
	assert_null(strstr(text, "ip6tables"));
	assert_null(strstr(text, "fd00"));
	free(text);
}

/* DNS capture without a server and without --capture-all-dns is off. */
static void test_dns_without_servers(void **state)
{
	static const struct rcase k = { .args = { "-i", "*", "--redirect-dns" } };
	char *text = case_text(&k);

	(void)state;
	assert_null(strstr(text, "ISTIO_OUTPUT_DNS"));
	assert_null(strstr(text, "* raw"));
	free(text);
}

int main(void)
{
	struct CMUnitTest tests[sizeof(cases) / sizeof(cases[0]) + 3];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		tests[n] = (struct CMUnitTest)cmocka_unit_test_prestate(test_golden,
									(void *)&cases[i]);
		tests[n++].name = cases[i].golden;
	}
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_cleanup_list);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_no_ipv6_when_disabled);
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_dns_without_servers);
	return _cmocka_run_group_tests("init_rules", tests, n, NULL, NULL);
}
