/* Unit tests for init/nft.c: the --native-nftables script against Istio's
 * own nft goldens that a translation of the iptables rule list reproduces
 * (golden/istio/nft-*), and derived cases. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_init_common.h"
#include "../../init/nft.h"

/* Where Istio's nft goldens were taken from: each golden/istio/nft-<name>
 * is outrigger-init's output, checked line for line against Istio's
 * tools/istio-nftables/pkg/capture/testdata/<name>.golden, with the flags
 * and pod facts Istio's test sets.  Those files last changed in 45a7170bad4
 * (PR #57216, "Add counters in the nftable rules", first in 1.28.0) and are
 * the same at master 86c9f01fd735 (2026-08-22).  Istio's nft backend is its
 * own generator, not a translation of the iptables rules, so the other
 * goldens there differ from ours in form (see HACKING.md); only these match. */
#define ISTIO_NFT "istio 1.28.0 .. master 86c9f01fd735: " \
		  "tools/istio-nftables/pkg/capture/testdata (last changed 45a7170bad4)"

struct ncase {
	const char *golden;
	const char *istio;
	const char *args[24];
	const char *env[4]; /* "NAME=value" */
	bool ipv6;
	const char *dns4[2];
	const char *dns6[2];
};

static const struct ncase cases[] = {
	{ .golden = "istio/nft-inbound-ports-wildcard.golden", .istio = ISTIO_NFT,
	  .args = { "-b", "*" } },
	{ .golden = "istio/nft-empty.golden", .istio = ISTIO_NFT },
	{ .golden = "istio/nft-ipv6-empty-inbound-ports.golden", .istio = ISTIO_NFT, .ipv6 = true },
	{ .golden = "istio/nft-ipv6-inbound-ports.golden", .istio = ISTIO_NFT,
	  .args = { "-b", "4000,5000" }, .ipv6 = true },
	{ .golden = "istio/nft-ipnets.golden", .istio = ISTIO_NFT, .args = { "-i", "10.0.0.0/8" } },
	{ .golden = "istio/nft-inbound-ports-include.golden", .istio = ISTIO_NFT,
	  .args = { "-b", "32000,31000" } },
	/* --redirect-dns without a server: DNS capture off */
	{ .golden = "istio/nft-ipv6-dns-uid-gid.golden", .istio = ISTIO_NFT,
	  .args = { "--redirect-dns", "-g", "1,2", "-u", "3,4" }, .ipv6 = true },
	{ .golden = "istio/nft-outbound-owner-groups.golden", .istio = ISTIO_NFT,
	  .env = { "ISTIO_OUTBOUND_OWNER_GROUPS=java,202" } },
	{ .golden = "istio/nft-outbound-owner-groups-exclude.golden", .istio = ISTIO_NFT,
	  .env = { "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=888,ftp" } },
	{ .golden = "istio/nft-ipv6-dns-outbound-owner-groups.golden", .istio = ISTIO_NFT,
	  .args = { "--redirect-dns" }, .env = { "ISTIO_OUTBOUND_OWNER_GROUPS=java,202" },
	  .ipv6 = true },
	{ .golden = "istio/nft-ipv6-dns-outbound-owner-groups-exclude.golden", .istio = ISTIO_NFT,
	  .args = { "--redirect-dns" }, .env = { "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE=888,ftp" },
	  .ipv6 = true },
	{ .golden = "istio/nft-basic-exclude-nic.golden", .istio = ISTIO_NFT,
	  .args = { "-c", "not-istio-nic" } },
	{ .golden = "istio/nft-host-ipv4-loopback-cidr.golden", .istio = ISTIO_NFT,
	  .env = { "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=127.0.0.1/8" } },
	/* derived: the iptables rule list translated */
	{ .golden = "nft-istio-init-default.golden",
	  .args = { "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
		    "-x", "", "-b", "*", "-d", "15090,15021,15020" }, .ipv6 = true },
	{ .golden = "nft-tproxy.golden", .args = { "-m", "TPROXY", "-b", "*", "-i", "*" },
	  .ipv6 = true },
	/* IPv4 servers only: the jump to istio-output-dns is IPv4 only, and the
	 * chain has no UDP return per proxy uid/gid (Istio >= 1.25) */
	{ .golden = "nft-dns.golden", .args = { "-i", "*", "--redirect-dns" },
	  .dns4 = { "10.96.0.10" } },
	{ .golden = "nft-dns-uid-gid.golden", .args = { "--redirect-dns", "-g", "1,2", "-u", "3,4" },
	  .ipv6 = true, .dns4 = { "127.0.0.53" }, .dns6 = { "::127.0.0.53" } },
	{ .golden = "nft-kitchen-sink.golden",
	  .args = { "-i", "10.0.0.0/8,fd00::/8", "-x", "10.96.0.1/32", "-c", "eth9", "-k",
		    "eth1", "--drop-invalid", "-o", "3306", "-q", "9000", "-b", "8080" },
	  .ipv6 = true },
};

static void test_golden(void **state)
{
	const struct ncase *k = *state;
	struct init_config c;
	struct pod_facts p = { 0 };
	struct ruleset rs = { 0 };
	char err[512];
	char *text;
	int e;

	init_env_clear();
	for (size_t i = 0; i < 4 && k->env[i] != NULL; i++)
		putenv((char *)k->env[i]);
	assert_int_equal(init_config_from(&c, k->args, err, sizeof(err)), 0);
	p.enable_ipv6 = k->ipv6;
	for (size_t i = 0; i < 2 && k->dns4[i]; i++)
		assert_int_equal(strlist_add(&p.dns_v4, k->dns4[i]), 0);
	for (size_t i = 0; i < 2 && k->dns6[i]; i++)
		assert_int_equal(strlist_add(&p.dns_v6, k->dns6[i]), 0);
	assert_int_equal(rules_build(&c, &p, &rs), 0);
	text = nft_script(&rs, p.enable_ipv6, &e);
	assert_non_null(text);
	rules_free(&rs);
	podinfo_free(&p);
	flags_free(&c);
	init_env_clear();
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

/* Cleanup deletes the three tables whether or not they exist. */
static void test_cleanup(void **state)
{
	const char *s = nft_cleanup_script();

	(void)state;
	assert_non_null(strstr(s, "delete table inet istio-proxy-nat\n"));
	assert_non_null(strstr(s, "delete table inet istio-proxy-mangle\n"));
	assert_non_null(strstr(s, "delete table inet istio-proxy-raw\n"));
	assert_true(strstr(s, "add table inet istio-proxy-nat") <
		    strstr(s, "delete table inet istio-proxy-nat"));
}

int main(void)
{
	struct CMUnitTest tests[sizeof(cases) / sizeof(cases[0]) + 1];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		tests[n] = (struct CMUnitTest)cmocka_unit_test_prestate(test_golden,
									(void *)&cases[i]);
		tests[n++].name = cases[i].golden;
	}
	tests[n++] = (struct CMUnitTest)cmocka_unit_test(test_cleanup);
	return _cmocka_run_group_tests("init_nft", tests, n, NULL, NULL);
}
