/* Unit tests for init/flags.c: istio-iptables' flag syntax, environment
 * bindings and precedence (flag > env > default), aliases, and refusal of
 * bad values with the flag and the value named. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "test_init_common.h"
#include "../../init/ilog.h"

static int setup(void **state)
{
	(void)state;
	init_env_clear();
	return 0;
}

static void test_defaults(void **state)
{
	struct init_config c;
	char err[512];

	(void)state;
	assert_int_equal(init_config_from(&c, NULL, err, sizeof(err)), 0);
	assert_string_equal(c.proxy_port, "15001");
	assert_string_equal(c.inbound_capture_port, "15006");
	assert_string_equal(c.inbound_tunnel_port, "15008");
	assert_int_equal(c.uids.n, 1);
	assert_string_equal(c.uids.v[0], "1337");
	assert_int_equal(c.gids.n, 1);
	assert_string_equal(c.gids.v[0], "1337");
	assert_int_equal(c.mode, MODE_REDIRECT);
	assert_false(c.inbound_all);
	assert_int_equal(c.inbound_ports.n, 0);
	assert_false(c.include_cidrs.wildcard);
	assert_int_equal(c.include_cidrs.n, 0);
	assert_string_equal(c.tproxy_mark, "1337");
	assert_string_equal(c.tproxy_table, "133");
	assert_int_equal(c.probe_port, 15002);
	assert_int_equal(c.probe_timeout_ms, 5000);
	assert_true(c.owner_groups_all);
	assert_string_equal(c.ipv4_loopback_cidr, "127.0.0.1/32");
	assert_false(c.dry_run);
	assert_false(c.redirect_dns);
	assert_int_equal(c.force_binary, XT_FORCE_NONE);
	flags_free(&c);
}

/* Every spelling pflag / Go's flag package accept. */
static void test_syntax(void **state)
{
	static const char *const spellings[][3] = {
		{ "-p", "15101", NULL }, { "-p=15101", NULL, NULL }, { "-p15101", NULL, NULL },
		{ "--envoy-port", "15101", NULL }, { "--envoy-port=15101", NULL, NULL },
		{ "-envoy-port=15101", NULL, NULL }, { "istio-iptables", "-p=15101", NULL },
	};
	struct init_config c;
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
		assert_int_equal(init_config_from(&c, spellings[i], err, sizeof(err)), 0);
		assert_string_equal(c.proxy_port, "15101");
		flags_free(&c);
	}
	/* booleans */
	{
		static const char *const a1[] = { "--dry-run", NULL };
		static const char *const a2[] = { "--dry-run=false", NULL };
		static const char *const a3[] = { "-n", NULL };
		static const char *const a4[] = { "--dry-run=true", "--redirect-dns=1", NULL };
		assert_int_equal(init_config_from(&c, a1, err, sizeof(err)), 0);
		assert_true(c.dry_run);
		flags_free(&c);
		assert_int_equal(init_config_from(&c, a2, err, sizeof(err)), 0);
		assert_false(c.dry_run);
		flags_free(&c);
		assert_int_equal(init_config_from(&c, a3, err, sizeof(err)), 0);
		assert_true(c.dry_run);
		flags_free(&c);
		assert_int_equal(init_config_from(&c, a4, err, sizeof(err)), 0);
		assert_true(c.dry_run);
		assert_true(c.redirect_dns);
		flags_free(&c);
	}
	/* -x "" is an empty value, not a missing one; the next flag still parses */
	{
		static const char *const a[] = { "-x", "", "-i", "*", NULL };
		assert_int_equal(init_config_from(&c, a, err, sizeof(err)), 0);
		assert_int_equal(c.exclude_cidrs.n, 0);
		assert_true(c.include_cidrs.wildcard);
		flags_free(&c);
	}
	/* the last occurrence wins */
	{
		static const char *const a[] = { "-z", "1", "-z", "2", NULL };
		assert_int_equal(init_config_from(&c, a, err, sizeof(err)), 0);
		assert_string_equal(c.inbound_capture_port, "2");
		flags_free(&c);
	}
}

static void test_env_precedence(void **state)
{
	static const char *const flag[] = { "-z", "17006", NULL };
	struct init_config c;
	char err[512];

	(void)state;
	setenv("INBOUND_CAPTURE_PORT", "16006", 1);
	setenv("ISTIO_SERVICE_CIDR", "10.0.0.0/8", 1);
	setenv("ENVOY_PORT", "1", 1); /* -p has no environment binding */
	setenv("PROXY_UID", "998", 1);
	assert_int_equal(init_config_from(&c, NULL, err, sizeof(err)), 0);
	assert_string_equal(c.inbound_capture_port, "16006");
	assert_int_equal(c.include_cidrs.n, 1);
	assert_string_equal(c.include_cidrs.v[0].text, "10.0.0.0/8");
	assert_string_equal(c.proxy_port, "15001");
	assert_string_equal(c.uids.v[0], "998");
	assert_string_equal(c.gids.v[0], "998"); /* -g defaults to -u */
	flags_free(&c);
	assert_int_equal(init_config_from(&c, flag, err, sizeof(err)), 0);
	assert_string_equal(c.inbound_capture_port, "17006");
	flags_free(&c);
}

static void test_aliases(void **state)
{
	struct init_config c;
	char err[512];

	(void)state;
	setenv("ISTIO_META_DNS_CAPTURE", "true", 1);
	setenv("INVALID_DROP", "true", 1);
	setenv("ISTIO_DUAL_STACK", "true", 1);
	assert_int_equal(init_config_from(&c, NULL, err, sizeof(err)), 0);
	assert_true(c.redirect_dns);
	assert_true(c.drop_invalid);
	assert_true(c.dual_stack);
	flags_free(&c);
	init_env_clear();
	setenv("REDIRECT_DNS", "true", 1);
	setenv("CAPTURE_ALL_DNS", "true", 1);
	setenv("DUAL_STACK", "1", 1);
	assert_int_equal(init_config_from(&c, NULL, err, sizeof(err)), 0);
	assert_true(c.redirect_dns);
	assert_true(c.capture_all_dns);
	assert_true(c.dual_stack);
	flags_free(&c);
}

static void test_env_only(void **state)
{
	struct init_config c;
	char err[512];

	(void)state;
	setenv("ISTIO_OUTBOUND_OWNER_GROUPS", "java,202", 1);
	setenv("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/8", 1);
	assert_int_equal(init_config_from(&c, NULL, err, sizeof(err)), 0);
	assert_false(c.owner_groups_all);
	assert_int_equal(c.owner_groups.n, 2);
	assert_string_equal(c.owner_groups.v[1], "202");
	assert_string_equal(c.ipv4_loopback_cidr, "127.0.0.1/8");
	flags_free(&c);
	init_env_clear();
	setenv("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "888", 1);
	assert_int_equal(init_config_from(&c, NULL, err, sizeof(err)), 0);
	assert_true(c.owner_groups_all);
	assert_int_equal(c.owner_groups_exclude.n, 1);
	flags_free(&c);
	/* ENVOY_USER names an account: root's uid is 0 */
	init_env_clear();
	setenv("ENVOY_USER", "root", 1);
	assert_int_equal(init_config_from(&c, NULL, err, sizeof(err)), 0);
	assert_string_equal(c.uids.v[0], "0");
	flags_free(&c);
}

static void test_logging_flags(void **state)
{
	static const char *const a[] = { "--log_output_level=default:debug", "--log_as_json",
					 "--log_target", "stdout", "--log_caller=default",
					 "--log_stacktrace_level=default:none", "--log_rotate=",
					 "--log_rotate_max_age=30", "--log_rotate_max_backups=1000",
					 "--log_rotate_max_size=104857600", NULL };
	struct init_config c;
	char err[512];

	(void)state;
	assert_int_equal(init_config_from(&c, a, err, sizeof(err)), 0);
	assert_int_equal(ilog_threshold, ILOG_DEBUG);
	flags_free(&c);
	ilog_threshold = ILOG_INFO;
}

/* Bad input: refused, the message names the flag (or variable) and value. */
static void test_errors(void **state)
{
	static const struct {
		const char *args[6];
		const char *env;
		const char *want1, *want2;
	} bad[] = {
		{ { "-p", "0" }, NULL, "-p/--envoy-port", "\"0\"" },
		{ { "-p", "70000" }, NULL, "--envoy-port", "\"70000\"" },
		{ { "--inbound-capture-port=abc" }, NULL, "-z/--inbound-capture-port", "\"abc\"" },
		{ { "-i", "10.0.0.0" }, NULL, "-i/--istio-service-cidr", "\"10.0.0.0\"" },
		{ { "-i", "10.0.0.0/8,10.0.0.0/33" }, NULL, "--istio-service-cidr", "\"10.0.0.0/33\"" },
		{ { "-i", "*,10.0.0.0/8" }, NULL, "--istio-service-cidr", "\"*\"" },
		{ { "-x", "*" }, NULL, "-x/--istio-service-exclude-cidr", "\"*\"" },
		{ { "-x", "fd00::/129" }, NULL, "-x/--istio-service-exclude-cidr", "fd00::/129" },
		{ { "-m", "FOO" }, NULL, "-m/--istio-inbound-interception-mode", "\"FOO\"" },
		{ { "-u", "abc" }, NULL, "-u/--proxy-uid", "\"abc\"" },
		{ { "-g", "-5" }, NULL, "-g/--proxy-gid", "\"-5\"" },
		{ { "-b", "80,abc" }, NULL, "-b/--istio-inbound-ports", "\"abc\"" },
		{ { "-d", "65536" }, NULL, "-d/--istio-local-exclude-ports", "65536" },
		{ { "-q", "x" }, NULL, "-q/--istio-outbound-ports", "\"x\"" },
		{ { "-o", "-1" }, NULL, "-o/--istio-local-outbound-ports-exclude", "\"-1\"" },
		{ { "-k", "a/b" }, NULL, "-k/--kube-virt-interfaces", "\"a/b\"" },
		{ { "-c", "averyveryverylongname" }, NULL, "-c/--istio-exclude-interfaces", "averyvery" },
		{ { "-t", "0" }, NULL, "-t/--istio-inbound-tproxy-mark", "\"0\"" },
		{ { "-r", "254" }, NULL, "-r/--istio-inbound-tproxy-route-table", "\"254\"" },
		{ { "--probe-timeout", "5" }, NULL, "--probe-timeout", "\"5\"" },
		{ { "--iptables-probe-port", "0" }, NULL, "--iptables-probe-port", "\"0\"" },
		{ { "--force-iptables-binary", "foo" }, NULL, "--force-iptables-binary", "\"foo\"" },
		{ { "--dry-run=maybe" }, NULL, "--dry-run", "\"maybe\"" },
		{ { "--no-such-flag" }, NULL, "unknown flag", "no-such-flag" },
		{ { "-Z" }, NULL, "unknown shorthand", "Z" },
		{ { "-p" }, NULL, "needs an argument", "-p" },
		{ { "stray" }, NULL, "unexpected argument", "stray" },
		{ { "--log_output_level=default:loud" }, NULL, "--log_output_level", "loud" },
		{ { NULL }, "INBOUND_CAPTURE_PORT=x", "INBOUND_CAPTURE_PORT", "\"x\"" },
		{ { NULL }, "DRY_RUN=yes", "DRY_RUN", "\"yes\"" },
		{ { NULL }, "ISTIO_META_DNS_CAPTURE=perhaps", "ISTIO_META_DNS_CAPTURE", "perhaps" },
		{ { NULL }, "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=10.0.0.0/8",
		  "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "10.0.0.0/8" },
		{ { NULL }, "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR=127.0.0.0/7",
		  "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.0/7" },
		{ { NULL }, "ISTIO_OUTBOUND_OWNER_GROUPS=a;b", "ISTIO_OUTBOUND_OWNER_GROUPS", "a;b" },
	};
	struct init_config c;
	char err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		init_env_clear();
		if (bad[i].env)
			putenv((char *)bad[i].env);
		assert_int_equal(init_config_from(&c, bad[i].args, err, sizeof(err)), -EINVAL);
		if (strstr(err, bad[i].want1) == NULL || strstr(err, bad[i].want2) == NULL)
			fail_msg("case %zu: message \"%s\" lacks %s / %s", i, err, bad[i].want1,
				 bad[i].want2);
		flags_free(&c);
	}
	init_env_clear();
}

/* More than 64 include owner groups are refused (istio validation.go). */
static void test_owner_groups_max(void **state)
{
	char groups[1024] = "";
	struct init_config c;
	char err[512];

	(void)state;
	for (int i = 0; i < 65; i++)
		snprintf(groups + strlen(groups), sizeof(groups) - strlen(groups), "%s%d",
			 i ? "," : "", 1000 + i);
	setenv("ISTIO_OUTBOUND_OWNER_GROUPS", groups, 1);
	assert_int_equal(init_config_from(&c, NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "ISTIO_OUTBOUND_OWNER_GROUPS"));
	assert_non_null(strstr(err, "64"));
	flags_free(&c);
}

static void test_help(void **state)
{
	static const char *const a[] = { "--help", NULL };
	static const char *const b[] = { "-h", NULL };
	struct init_config c;
	char err[512];

	(void)state;
	assert_int_equal(init_config_from(&c, a, err, sizeof(err)), 1);
	assert_int_equal(init_config_from(&c, b, err, sizeof(err)), 1);
}

static void test_duration(void **state)
{
	static const struct {
		const char *s;
		long ms;
	} ok[] = { { "5s", 5000 }, { "500ms", 500 }, { "1m30s", 90000 }, { "1.5s", 1500 },
		   { "2h", 7200000 }, { "0", 0 }, { "1500us", 1 }, { "1m", 60000 } };
	static const char *const bad[] = { "5", "", "-1s", "s", "5x", "1e3s", "5 s" };
	long ms;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(flags_parse_duration(ok[i].s, &ms), 0);
		assert_int_equal(ms, ok[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(flags_parse_duration(bad[i], &ms), -EINVAL);
}

static void test_cidr_canonical(void **state)
{
	struct cidr c;

	(void)state;
	assert_int_equal(cidr_parse("fd00:0:0::1/64", &c), 0);
	assert_string_equal(c.text, "fd00::1/64");
	assert_false(c.loopback);
	assert_int_equal(cidr_parse("127.1.2.3/32", &c), 0);
	assert_true(c.loopback);
	assert_int_equal(cidr_parse("::1/128", &c), 0);
	assert_true(c.loopback);
	assert_int_equal(cidr_parse("10.0.0.1", &c), -EINVAL);
	assert_int_equal(cidr_parse("10.0.0.1/08", &c), -EINVAL);
	assert_int_equal(cidr_parse("010.0.0.1/8", &c), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_defaults, setup),
		cmocka_unit_test_setup(test_syntax, setup),
		cmocka_unit_test_setup(test_env_precedence, setup),
		cmocka_unit_test_setup(test_aliases, setup),
		cmocka_unit_test_setup(test_env_only, setup),
		cmocka_unit_test_setup(test_logging_flags, setup),
		cmocka_unit_test_setup(test_errors, setup),
		cmocka_unit_test_setup(test_owner_groups_max, setup),
		cmocka_unit_test_setup(test_help, setup),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_cidr_canonical),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
