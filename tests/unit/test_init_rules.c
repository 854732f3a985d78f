/* Unit tests for init/rules.c: the iptables-restore input of --dry-run
 * against golden files (Istio's own outputs under golden/istio/, cases
 * derived from Istio's rule order otherwise), and the cleanup list. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_init_common.h"
#include "../../src/strbuf.h"

/* Where Istio's own goldens were taken from.  Each file under golden/istio/
 * is outrigger-init's output, checked line for line against the Istio golden
 * of the same name at the commit below: the same text, less the
 * "iptables-save"/"ip6tables-save" lines Istio's test stub records, plus our
 * "# ip6tables-restore" separator between the families.  The cases use the
 * flags and pod facts Istio's test sets (run_test.go, plugin_dryrun_test.go).
 * Last change to both testdata directories: f4d72e7fc521 (PR #53998, "Sidecar
 * iptables cruft removal, handle DNS chains better"), first released in
 * 1.25.0; unchanged through 1.30.3 and master 86c9f01fd735 (2026-08-22).
 * Older releases (<= 1.24) print a different text: see HACKING.md. */
#define ISTIO_CAPTURE "istio 1.25.0 .. 1.30.3 / master 86c9f01fd735: " \
		      "tools/istio-iptables/pkg/capture/testdata (last changed f4d72e7fc521)"
#define ISTIO_CNI "istio 1.25.0 .. 1.30.3 / master 86c9f01fd735: " \
		  "cni/pkg/plugin/testdata (last changed f4d72e7fc521)"
/* The istio-cni plugin's fixed istio-iptables arguments, as in basic.txt. */
#define CNI_ARGS(mode, uid, cidr, xcidr, bports, dports, oports) \
	"-p", "15001", "-z", "15006", "-u", uid, "-m", mode, "-i", cidr, "-x", xcidr, \
	"-b", bports, "-d", dports, "-o", oports

/* One golden case: flags, environment, pod facts, expected file, and for
 * Istio's own goldens the version they were taken from. */
struct rcase {
	const char *golden;
	const char *istio;
	const char *args[28];
	const char *env[8]; /* "NAME=value" */
	bool ipv6;
	const char *dns4[4];
	const char *dns6[4];
};

static const struct rcase cases[] = {
	/* Istio's capture/testdata/<name>.golden (TestIptables).  Istio's test
	 * defaults: uid = gid = 1337, -b and -i empty, IPv6 off. */
	{ .golden = "istio/ipv6-empty-inbound-ports.golden", .istio = ISTIO_CAPTURE, .ipv6 = true },
	{ .golden = "istio/ip-range.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-x", "1.1.0.0/16", "-i", "9.9.0.0/16", "--redirect-dns", "-g", "1,2", "-u", "3,4" },
	  .dns4 = { "127.0.0.53" } },
	/* TPROXY, excluded NIC, -x/-i CIDR lists (no closing RETURN), DNS with
	 * IPv4 servers only: no v6 raw ISTIO_INBOUND, no v6 nat ISTIO_OUTPUT_DNS */
	{ .golden = "istio/tproxy.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-m", "TPROXY", "-b", "*", "-x", "1.1.0.0/16", "-i", "9.9.0.0/16", "--redirect-dns",
		    "-g", "1337", "-u", "1337", "-c", "not-istio-nic" },
	  .ipv6 = true, .dns4 = { "127.0.0.53" } },
	{ .golden = "istio/ipv6-inbound-ports.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-b", "4000,5000" }, .ipv6 = true },
	{ .golden = "istio/ipv6-virt-interfaces.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-b", "4000,5000", "-k", "eth0,eth1" }, .ipv6 = true },
	/* Istio's test has the trailing comma in the exclude list. */
	{ .golden = "istio/ipv6-ipnets.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-b", "4000,5000", "-d", "6000,7000,", "-k", "eth0,eth1", "-x", "2001:db8::/32",
		    "-i", "2001:db8::/32" }, .ipv6 = true },
	{ .golden = "istio/ipv6-uid-gid.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-b", "4000,5000", "-d", "6000,7000", "-k", "eth0,eth1", "-g", "1,2", "-u", "3,4",
		    "-x", "2001:db8::/32", "-i", "2001:db8::/32" }, .ipv6 = true },
	{ .golden = "istio/ipv6-outbound-ports.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-q", "32000,31000" }, .ipv6 = true },
	{ .golden = "istio/empty.golden", .istio = ISTIO_CAPTURE },
	{ .golden = "istio/kube-virt-interfaces.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-k", "eth1,eth2", "-i", "*" } },
	{ .golden = "istio/ipnets.golden", .istio = ISTIO_CAPTURE, .args = { "-i", "10.0.0.0/8" } },
	{ .golden = "istio/ipnets-with-kube-virt-interfaces.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-k", "eth1,eth2", "-i", "10.0.0.0/8" } },
	{ .golden = "istio/inbound-ports-include.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-b", "32000,31000" } },
	{ .golden = "istio/inbound-ports-wildcard.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-b", "*" } },
	{ .golden = "istio/inbound-ports-tproxy.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-b", "32000,31000", "-m", "TPROXY" } },
	{ .golden = "istio/inbound-ports-wildcard-tproxy.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-b", "*", "-m", "TPROXY" } },
	/* DNS with non-default uids/gids: the hairpin quirk (uid rules skip port
	 * 53, gid rules do not) and no UDP RETURN per uid/gid in ISTIO_OUTPUT_DNS */
	{ .golden = "istio/dns-uid-gid.golden", .istio = ISTIO_CAPTURE,
	  .args = { "--redirect-dns", "-g", "1,2", "-u", "3,4" }, .ipv6 = true,
	  .dns4 = { "127.0.0.53" }, .dns6 = { "::127.0.0.53" } },
	/* --redirect-dns without a server: DNS capture off */
	{ .golden = "istio/ipv6-dns-uid-gid.golden", .istio = ISTIO_CAPTURE,
	  .args = { "--redirect-dns", "-g", "1,2", "-u", "3,4" }, .ipv6 = true },
	{ .golden = "istio/outbound-owner-groups.golden", .istio = ISTIO_CAPTURE,
	  .env = { "ISTIO_OUTBOUND_OWNER_GROUPS=java,202" } },
	{ .golden = "istio/outbound-owner-groups-exclude.golden", .istio = ISTIO_CAPTURE,
	  .env = { "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=888,ftp" } },
	{ .golden = "istio/ipv6-dns-outbound-owner-groups.golden", .istio = ISTIO_CAPTURE,
	  .args = { "--redirect-dns" }, .env = { "ISTIO_OUTBOUND_OWNER_GROUPS=java,202" },
	  .ipv6 = true },
	{ .golden = "istio/ipv6-dns-outbound-owner-groups-exclude.golden", .istio = ISTIO_CAPTURE,
	  .args = { "--redirect-dns" }, .env = { "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=888,ftp" },
	  .ipv6 = true },
	{ .golden = "istio/outbound-ports-include.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-q", "32000,31000" } },
	{ .golden = "istio/loopback-outbound-iprange.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-i", "127.1.2.3/32", "--redirect-dns", "-g", "1,2", "-u", "3,4" },
	  .dns4 = { "127.0.0.53" } },
	{ .golden = "istio/basic-exclude-nic.golden", .istio = ISTIO_CAPTURE,
	  .args = { "-c", "not-istio-nic" } },
	{ .golden = "istio/drop-invalid.golden", .istio = ISTIO_CAPTURE, .args = { "--drop-invalid" } },
	{ .golden = "istio/host-ipv4-loopback-cidr.golden", .istio = ISTIO_CAPTURE,
	  .env = { "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=127.0.0.1/8" } },

	/* Istio's cni/pkg/plugin/testdata/<name>.txt.golden (sidecar mode of
	 * the CNI plugin; status-ports.txt.golden is not used by any Istio test
	 * and predates 1.25's format, so it is not here) */
	{ .golden = "istio/cni-basic.golden", .istio = ISTIO_CNI,
	  .args = { CNI_ARGS("REDIRECT", "1337", "*", "", "*", "15020,15021,15090", "15020") } },
	{ .golden = "istio/cni-include-exclude-ip.golden", .istio = ISTIO_CNI,
	  .args = { CNI_ARGS("REDIRECT", "1337", "127.0.0.0/8", "10.0.0.0/8", "*",
			     "15020,15021,15090", "15020") } },
	{ .golden = "istio/cni-include-exclude-ports.golden", .istio = ISTIO_CNI,
	  .args = { CNI_ARGS("REDIRECT", "1337", "*", "", "1111,2222",
			     "3333,4444,15020,15021,15090", "5555,6666") } },
	{ .golden = "istio/cni-tproxy.golden", .istio = ISTIO_CNI,
	  .args = { CNI_ARGS("TPROXY", "1337", "*", "", "*", "15020,15021,15090", "15020") } },
	/* capture-all DNS: the gid hairpin without port 53, no UDP RETURNs */
	{ .golden = "istio/cni-dns.golden", .istio = ISTIO_CNI,
	  .args = { CNI_ARGS("REDIRECT", "1337", "*", "", "*", "15020,15021,15090", "15020"),
		    "--redirect-dns", "--capture-all-dns" } },
	{ .golden = "istio/cni-invalid-drop.golden", .istio = ISTIO_CNI,
	  .args = { CNI_ARGS("REDIRECT", "1337", "*", "", "*", "15020,15021,15090", "15020"),
		    "--drop-invalid" } },
	{ .golden = "istio/cni-custom-uid.golden", .istio = ISTIO_CNI,
	  .args = { CNI_ARGS("REDIRECT", "1000670000", "*", "", "*", "15020,15021,15090", "15020"),
		    "-g", "1000670001" } },
	{ .golden = "istio/cni-custom-uid-tproxy.golden", .istio = ISTIO_CNI,
	  .args = { CNI_ARGS("TPROXY", "1000670000", "*", "", "*", "15020,15021,15090", "15020"),
		    "-g", "1000670001" } },

	/* the injected istio-init arguments (hello.yaml.injected) */
	{ .golden = "istio-init-default.golden",
	  .args = { "istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
	    "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
	    "--log_output_level=default:info" } },
	/* derived from istio's rule order (reference §1.5-1.7) */
	{ .golden = "ipv6-dual-stack.golden", .args = { "-i", "*", "-b", "*", "-d", "15020,15021,15090", "--dual-stack" },
	  .ipv6 = true },
	{ .golden = "dns.golden", .args = { "-i", "*", "-b", "*", "--redirect-dns" }, .dns4 = { "10.96.0.10" },
	  .dns6 = { "fd00:10:96::a" } },
	{ .golden = "dns-ipv6.golden", .args = { "-i", "*", "-b", "*", "--redirect-dns" }, .ipv6 = true,
	  .dns4 = { "10.96.0.10" }, .dns6 = { "fd00:10:96::a" } },
	{ .golden = "dns-capture-all.golden", .args = { "-i", "*", "--redirect-dns", "--capture-all-dns" } },
	/* IPv6 on, IPv6 servers only: the v4 nat has no ISTIO_OUTPUT_DNS (the
	 * mirror of Istio's tproxy golden) */
	{ .golden = "dns-v6-servers-only.golden", .args = { "-i", "*", "--redirect-dns" }, .ipv6 = true,
	  .dns6 = { "fd00:10:96::a" } },
	{ .golden = "dns-env-alias.golden", .args = { "-i", "*" }, .env = { "ISTIO_META_DNS_CAPTURE=true" },
	  .dns4 = { "10.96.0.10", "10.96.0.11" } },
	{ .golden = "outbound-owner-groups.golden", .args = { "-i", "*" },
	  .env = { "ISTIO_OUTBOUND_OWNER_GROUPS=java,202" } },
	{ .golden = "outbound-owner-groups-exclude.golden", .args = { "-i", "*" },
	  .env = { "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=888,ftp" } },
	{ .golden = "ipnets-exclude.golden",
	  .args = { "-i", "10.0.0.0/8,fd00::/8", "-x", "10.96.0.1/32,192.168.0.0/16,fd00::1/128" },
	  .ipv6 = true },
	{ .golden = "ipnets-with-kube-virt-interfaces.golden",
	  .args = { "-i", "10.0.0.0/8,172.16.0.0/12", "-k", "eth1" } },
	{ .golden = "basic-exclude-nic.golden", .args = { "-b", "*", "-i", "*", "-c", "not-istio-nic" } },
	{ .golden = "exclude-nic-tproxy.golden", .args = { "-m", "TPROXY", "-b", "8080", "-c", "eth9" } },
	{ .golden = "drop-invalid.golden", .args = { "-i", "*", "--drop-invalid" } },
	{ .golden = "drop-invalid-env-alias.golden", .args = { "-i", "*" }, .env = { "INVALID_DROP=true" } },
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

	if (golden_compare(k->golden, text) != 0) {
		free(text);
		if (k->istio != NULL)
			fail_msg("%s is Istio's own output (%s): a difference is a "
				 "divergence from Istio, not a golden to regenerate",
				 k->golden, k->istio);
		fail_msg("%s differs", k->golden);
	}
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
