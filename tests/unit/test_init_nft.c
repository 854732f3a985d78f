/* Unit tests for init/nft.c: the --native-nftables script against istio's
 * own nft golden (istio-nftables inbound-ports-wildcard.golden) and cases
 * translated from the iptables rule order. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_init_common.h"
#include "../../init/nft.h"

struct ncase {
	const char *golden;
	const char *args[24];
	bool ipv6;
	const char *dns4[2];
};

static const struct ncase cases[] = {
	/* istio tools/istio-nftables/pkg/capture/testdata/inbound-ports-wildcard.golden */
	{ .golden = "nft-inbound-ports-wildcard.golden", .args = { "-b", "*" } },
	/* derived */
	{ .golden = "nft-istio-init-default.golden",
	  .args = { "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*",
		    "-x", "", "-b", "*", "-d", "15090,15021,15020" }, .ipv6 = true },
	{ .golden = "nft-tproxy.golden", .args = { "-m", "TPROXY", "-b", "*", "-i", "*" },
	  .ipv6 = true },
	{ .golden = "nft-dns.golden", .args = { "-i", "*", "--redirect-dns" },
	  .dns4 = { "10.96.0.10" } },
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
	assert_int_equal(init_config_from(&c, k->args, err, sizeof(err)), 0);
	p.enable_ipv6 = k->ipv6;
	for (size_t i = 0; i < 2 && k->dns4[i]; i++)
		assert_int_equal(strlist_add(&p.dns_v4, k->dns4[i]), 0);
	assert_int_equal(rules_build(&c, &p, &rs), 0);
	text = nft_script(&rs, p.enable_ipv6, &e);
	assert_non_null(text);
	assert_int_equal(golden_compare(k->golden, text), 0);
	free(text);
	rules_free(&rs);
	podinfo_free(&p);
	flags_free(&c);
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
