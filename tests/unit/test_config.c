/* Unit tests for src/config.c: defaults, the JSON schema, errors naming the
 * JSON path, and that a refused file never changes the configuration. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"

static int
load(const char *json, struct config *cfg, char *err, size_t errlen)
{
	return config_load_json(json, strlen(json), cfg, err, errlen);
}

static void
test_defaults_are_istio_sidecar(void **state)
{
	struct config c;

	config_defaults(&c);
	assert_int_equal(c.concurrency, 2);
	assert_int_equal(c.outbound_port, 15001);
	assert_int_equal(c.inbound_port, 15006);
	assert_int_equal(c.admin_port, 15000);
	assert_int_equal(c.health_port, 15021);
	assert_int_equal(c.status_port, 15020);
	assert_int_equal(c.status_scrape_timeout_ms, 10000);
	assert_string_equal(c.admin_address, "127.0.0.1");
	assert_int_equal(c.mode, INTERCEPT_REDIRECT);
	assert_int_equal(c.connect_timeout_ms, 10000);
	assert_int_equal(c.idle_timeout_ms, 3600000);
	assert_int_equal(c.drain_ms, 5000);
	assert_int_equal(c.log_level, LL_INFO);
	assert_false(c.exit_on_zero);
}

static void
test_valid_file_applies(void **state)
{
	struct config c;
	char err[256];

	config_defaults(&c);
	assert_int_equal(load("{\"proxy\":{\"concurrency\":4,\"logLevel\":\"debug\",\"connectTimeout\":\"0.250s\","
	    "\"idleTimeout\":\"0s\",\"terminationDrainDuration\":\"1.5s\",\"interceptionMode\":\"TPROXY\","
	    "\"proxyAdminPort\":\"16000\",\"adminAddress\":\"::1\"}}", &c, err, sizeof(err)), 0);
	assert_int_equal(c.concurrency, 4);
	assert_int_equal(c.log_level, LL_DEBUG);
	assert_int_equal(c.connect_timeout_ms, 250);
	assert_int_equal(c.idle_timeout_ms, 0);
	assert_int_equal(c.drain_ms, 1500);
	assert_int_equal(c.mode, INTERCEPT_TPROXY);
	assert_int_equal(c.admin_port, 16000);	/* proto3 JSON: integers may be strings */
	assert_string_equal(c.admin_address, "::1");
	/* The HBONE client pool's idle period: ztunnel's 5 minutes unless set. */
	assert_int_equal(c.hbone_pool_idle_ms, 300000);
	assert_int_equal(load("{\"proxy\":{\"hbonePoolIdleTimeout\":\"2.5s\"}}", &c, err, sizeof(err)), 0);
	assert_int_equal(c.hbone_pool_idle_ms, 2500);
	assert_int_not_equal(load("{\"proxy\":{\"hbonePoolIdleTimeout\":\"0s\"}}", &c, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "proxy.hbonePoolIdleTimeout"));
}

/* Each bad input is refused, names its JSON path, and leaves cfg as it was. */
static void
test_errors_name_the_path(void **state)
{
	static const struct { const char *json, *want; } cases[] = {
		{ "{\"proxi\":{}}", "proxi: unknown key" },
		{ "{\"proxy\":{\"concurency\":2}}", "proxy.concurency: unknown key" },
		{ "{\"proxy\":{\"concurrency\":\"two\"}}", "proxy.concurrency: expected an integer" },
		{ "{\"proxy\":{\"concurrency\":0}}", "proxy.concurrency: expected an integer from 1 to 256" },
		{ "{\"proxy\":{\"concurrency\":2.5}}", "proxy.concurrency: expected an integer" },
		{ "{\"proxy\":{\"concurrency\":true}}", "proxy.concurrency: expected an integer" },
		{ "{\"proxy\":{\"proxyListenPort\":70000}}", "proxy.proxyListenPort: expected an integer from 1 to 65535" },
		{ "{\"proxy\":{\"connectTimeout\":\"5\"}}", "proxy.connectTimeout: expected a duration" },
		{ "{\"proxy\":{\"connectTimeout\":\"5m\"}}", "proxy.connectTimeout: expected a duration" },
		{ "{\"proxy\":{\"connectTimeout\":\"-1s\"}}", "proxy.connectTimeout: duration \"-1s\" is out of range" },
		{ "{\"proxy\":{\"connectTimeout\":\"0s\"}}", "proxy.connectTimeout: duration \"0s\" is out of range" },
		{ "{\"proxy\":{\"connectTimeout\":5}}", "proxy.connectTimeout: expected a duration" },
		{ "{\"proxy\":{\"logLevel\":\"loud\"}}", "proxy.logLevel: expected one of" },
		{ "{\"proxy\":{\"interceptionMode\":\"NAT\"}}", "proxy.interceptionMode: expected \"REDIRECT\" or \"TPROXY\"" },
		{ "{\"proxy\":{\"adminAddress\":\"localhost\"}}", "proxy.adminAddress: expected a numeric" },
		{ "{\"proxy\":[]}", "proxy: expected an object" },
		{ "{\"proxy\":{\"proxyInboundListenPort\":15001}}",
		  "proxy.proxyInboundListenPort: port 15001 is also proxy.proxyListenPort" },
		{ "{\"proxy\":{\"healthPort\":15000}}", "proxy.healthPort: port 15000 is also proxy.proxyAdminPort" },
		{ "{\"proxy\":{\"prometheusPort\":15021}}", "proxy.prometheusPort: port 15021 is also proxy.healthPort" },
		{ "{\"proxy\":{\"prometheusPort\":70000}}", "proxy.prometheusPort: expected an integer from 0 to 65535" },
		{ "{\"telemetry\":{\"maxLabelSets\":-1}}", "telemetry.maxLabelSets: expected an integer from 0" },
		{ "{\"telemetry\":{\"tcpReportingInterval\":5}}", "telemetry.tcpReportingInterval: expected a duration" },
		{ "{\"proxy\":{\"statusPort\":15021}}", "proxy.statusPort: port 15021 is also proxy.healthPort" },
		{ "{\"proxy\":{\"statusPort\":-1}}", "proxy.statusPort: expected an integer from 0 to 65535" },
		{ "{\"proxy\":{\"statusPort\":65536}}", "proxy.statusPort: expected an integer from 0 to 65535" },
		{ "{\"proxy\":{\"statusScrapeTimeout\":\"0s\"}}", "proxy.statusScrapeTimeout: duration \"0s\" is out of range" },
		{ "{\"proxy\":{\"statusPort\":15090}}", "proxy.statusPort: port 15090 is also proxy.prometheusPort" },
		{ "{\"proxy\":{\"exitOnZeroActiveConnections\":1}}",
		  "proxy.exitOnZeroActiveConnections: expected true or false" },
		{ "[]", "$: expected a JSON object" },
		{ "{\"proxy\":{\"concurrency\":2}", "$: not valid JSON" },
		{ "", "$: not valid JSON" },
	};
	struct config c, before;
	char err[256];

	config_defaults(&c);
	assert_int_equal(load("{\"proxy\":{\"concurrency\":3}}", &c, err, sizeof(err)), 0);
	before = c;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		/* A valid key first: it must not stay applied when a later one fails. */
		char json[256];
		snprintf(json, sizeof(json), "%s", cases[i].json);
		assert_int_equal(load(json, &c, err, sizeof(err)), -EINVAL);
		if (!strstr(err, cases[i].want))
			fail_msg("case %zu: %s\n  got:  %s\n  want: %s", i, cases[i].json, err, cases[i].want);
		assert_memory_equal(&c, &before, sizeof(c));
	}
}

static void
test_never_half_applied(void **state)
{
	struct config c, before;
	char err[256];

	config_defaults(&c);
	before = c;
	assert_int_equal(load("{\"proxy\":{\"concurrency\":8,\"logLevel\":\"trace\",\"proxyListenPort\":0}}",
	    &c, err, sizeof(err)), -EINVAL);
	assert_memory_equal(&c, &before, sizeof(c));
	assert_non_null(strstr(err, "proxy.proxyListenPort"));
}

static void
test_dump_round_trips(void **state)
{
	struct config a, b;
	char err[256];

	config_defaults(&a);
	assert_int_equal(load("{\"proxy\":{\"connectTimeout\":\"0.005s\",\"terminationDrainDuration\":\"90s\","
	    "\"interceptionMode\":\"TPROXY\",\"logLevel\":\"warn\"}}", &a, err, sizeof(err)), 0);
	cJSON *j = config_to_json(&a);
	assert_non_null(j);
	char *txt = cJSON_PrintUnformatted(j);
	assert_non_null(strstr(txt, "\"connectTimeout\":\"0.005s\""));
	assert_non_null(strstr(txt, "\"terminationDrainDuration\":\"90s\""));
	config_defaults(&b);
	assert_int_equal(load(txt, &b, err, sizeof(err)), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	free(txt);
	cJSON_Delete(j);
}

static void
test_file_errors(void **state)
{
	struct config c;
	char err[256];
	char path[] = "/tmp/or-test-config-XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{\"proxy\": {\"concurrency\": -1}}", 30), 30);
	close(fd);
	config_defaults(&c);
	assert_true(config_load_file(path, &c, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "proxy.concurrency"));
	unlink(path);
	assert_int_equal(config_load_file("/nonexistent/outrigger.json", &c, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot open /nonexistent/outrigger.json"));

	/* Review of issue 7: a FIFO (no writer) blocked the load for ever, and
	 * with it a SIGHUP reload on the control thread (admin, health, drain).
	 * Only regular files are read. Run in a child so a regression fails on
	 * the alarm rather than hanging the suite. */
	char fifo[] = "/tmp/or-test-fifo-XXXXXX";
	assert_non_null(mkdtemp(fifo));
	char fpath[64];
	snprintf(fpath, sizeof(fpath), "%s/cfg.json", fifo);
	assert_int_equal(mkfifo(fpath, 0600), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(5);
		int r = config_load_file(fpath, &c, err, sizeof(err));
		_exit(r < 0 && strstr(err, "not a regular file") ? 0 : 1);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	unlink(fpath);
	rmdir(fifo);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_true(config_load_file("/tmp", &c, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "Is a directory"));
}

/* Issue 7 §5: duplicate keys were accepted silently (the last won). */
static void
test_duplicate_keys_refused(void **state)
{
	struct config c, before;
	char err[256];

	config_defaults(&c);
	before = c;
	assert_int_equal(load("{\"proxy\":{\"concurrency\":4,\"logLevel\":\"debug\",\"concurrency\":5}}", &c, err,
	    sizeof(err)), -EINVAL);
	assert_string_equal(err, "proxy.concurrency: duplicate key");
	assert_memory_equal(&c, &before, sizeof(c));
	assert_int_equal(load("{\"proxy\":{\"concurrency\":4},\"proxy\":{\"concurrency\":5}}", &c, err, sizeof(err)),
	    -EINVAL);
	assert_string_equal(err, "proxy: duplicate key");
	assert_memory_equal(&c, &before, sizeof(c));
}

/* Issue 7 §5: anything after the top-level object was ignored, so a file
 * whose second half is invalid was "valid". */
static void
test_trailing_data_refused(void **state)
{
	static const char *const bad[] = {
		"{\"proxy\":{\"concurrency\":4}}{\"proxy\":{\"concurrency\":\"bad\"}}",
		"{\"proxy\":{\"concurrency\":4}} x",
		"{\"proxy\":{\"concurrency\":4}}}",
		"{}[]",
	};
	struct config c, before;
	char err[256];

	config_defaults(&c);
	before = c;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(load(bad[i], &c, err, sizeof(err)), -EINVAL);
		if (!strstr(err, "$: unexpected data after the top-level value"))
			fail_msg("case %zu: %s: %s", i, bad[i], err);
		assert_memory_equal(&c, &before, sizeof(c));
	}
	/* Trailing whitespace (a final newline) is fine. */
	assert_int_equal(load("{\"proxy\":{\"concurrency\":4}} \t\r\n\n", &c, err, sizeof(err)), 0);
	assert_int_equal(c.concurrency, 4);
}

/* Issue 7 §5: data after a NUL byte inside a key was ignored (cJSON stops at
 * NUL), and a \u0000 escape cut the key the same way. */
static void
test_nul_refused(void **state)
{
	static const char raw[] = "{\"proxy\":{\"concurrency\0xyz\":4}}";
	struct config c, before;
	char err[256];

	config_defaults(&c);
	before = c;
	assert_int_equal(config_load_json(raw, sizeof(raw) - 1, &c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "$: NUL byte at byte 22");
	/* A NUL after a complete object, too: nothing may hide behind it. */
	static const char tail[] = "{\"proxy\":{\"concurrency\":4}}\0{\"proxy\":{\"concurrency\":\"bad\"}}";
	assert_int_equal(config_load_json(tail, sizeof(tail) - 1, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "NUL byte"));
	assert_int_equal(load("{\"proxy\":{\"concurrency\\u0000xyz\":4}}", &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "\\u0000"));
	assert_int_equal(load("{\"proxy\":{\"logLevel\":\"info\\u0000loud\"}}", &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "\\u0000"));
	assert_memory_equal(&c, &before, sizeof(c));
	/* An escaped backslash before "u0000" is not a NUL: the value is refused
	 * for what it is. */
	assert_int_equal(load("{\"proxy\":{\"adminAddress\":\"\\\\u0000\"}}", &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "proxy.adminAddress: expected a numeric"));
}

/* cJSON hands any run of number characters to strtod, so "04" loaded as 4
 * and "2." as 2; RFC 8259 has neither (json_parse_strict refuses them). */
static void
test_lax_numbers_refused(void **state)
{
	struct config c, before;
	char err[256];

	(void)state;
	config_defaults(&c);
	before = c;
	assert_int_equal(load("{\"proxy\":{\"concurrency\":04}}", &c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "$: malformed number at byte 24");
	assert_int_equal(load("{\"proxy\":{\"concurrency\":2.}}", &c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "$: malformed number at byte 24");
	assert_memory_equal(&c, &before, sizeof(c));
	assert_int_equal(load("{\"proxy\":{\"concurrency\":4}}", &c, err, sizeof(err)), 0);
	assert_int_equal(c.concurrency, 4);
}

/* Issue 7 §5: command-line overrides were formatted into JSON with %.40s, so
 * "--concurrency 0000...0004xyz" (over 40 characters) read as 4. config_set()
 * parses the whole string strictly. */
static void
test_config_set_strict(void **state)
{
	static const char *const bad_ints[] = {
		"4xyz", " 4", "4 ", "+4", "", "0x4", "4.0", "1e1", "-", "99999999999999999999999",
		"00000000000000000000000000000000000000000004xyz", "0", "257",
	};
	struct config c, before;
	char err[256];

	config_defaults(&c);
	assert_int_equal(config_set(&c, "proxy.concurrency", "4", err, sizeof(err)), 0);
	assert_int_equal(c.concurrency, 4);
	assert_int_equal(config_set(&c, "proxy.concurrency",
	    "000000000000000000000000000000000000000000000000000007", err, sizeof(err)), 0);
	assert_int_equal(c.concurrency, 7);
	before = c;
	for (size_t i = 0; i < sizeof(bad_ints) / sizeof(bad_ints[0]); i++) {
		assert_int_equal(config_set(&c, "proxy.concurrency", bad_ints[i], err, sizeof(err)), -EINVAL);
		if (!strstr(err, "proxy.concurrency: expected an integer from 1 to 256"))
			fail_msg("case %zu: \"%s\": %s", i, bad_ints[i], err);
		assert_memory_equal(&c, &before, sizeof(c));
	}
	assert_int_equal(config_set(&c, "proxy.logLevel", "debug", err, sizeof(err)), 0);
	assert_int_equal(c.log_level, LL_DEBUG);
	assert_int_equal(config_set(&c, "proxy.logLevel", "debugxyz", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "proxy.logLevel: expected one of"));
	assert_int_equal(config_set(&c, "proxy.idleTimeout", "0.5s", err, sizeof(err)), 0);
	assert_int_equal(c.idle_timeout_ms, 500);
	assert_int_equal(config_set(&c, "proxy.exitOnZeroActiveConnections", "true", err, sizeof(err)), 0);
	assert_true(c.exit_on_zero);
	before = c;
	assert_int_equal(config_set(&c, "proxy.bogus", "1", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "proxy.bogus: unknown key");
	assert_int_equal(config_set(&c, "proxyconcurrency", "1", err, sizeof(err)), -EINVAL);
	assert_int_equal(config_set(&c, "proxy.proxyListenPort", "15006", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "port 15006 is also proxy.proxyListenPort"));
	assert_memory_equal(&c, &before, sizeof(c));
	/* A long value is quoted truncated in the error, never parsed truncated. */
	char longv[200];
	memset(longv, '0', sizeof(longv) - 1);
	longv[sizeof(longv) - 2] = 'x';
	longv[sizeof(longv) - 1] = '\0';
	assert_int_equal(config_set(&c, "proxy.concurrency", longv, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "...\""));
	/* The JSON file shares the strict parser for integers given as strings. */
	assert_int_equal(load("{\"proxy\":{\"concurrency\":\" 4\"}}", &c, err, sizeof(err)), -EINVAL);
	assert_int_equal(load("{\"proxy\":{\"concurrency\":\"+4\"}}", &c, err, sizeof(err)), -EINVAL);
	assert_int_equal(load("{\"proxy\":{\"concurrency\":\"4\"}}", &c, err, sizeof(err)), 0);
	assert_int_equal(c.concurrency, 4);
}

/* A reload keeps every "restart" key at its running value and names it;
 * "live" keys take the new value. */
static void
clear_identity_env(void)
{
	static const char *const vars[] = { "OUTRIGGER_CERT_DIR", "CA_ADDR", "CA_ROOT_CA", "ISTIO_META_CLUSTER_ID",
		"CLUSTER_ID", "TRUST_DOMAIN", "SECRET_TTL" };
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		unsetenv(vars[i]);
}

/* The "identity" keys: pilot-agent's defaults, types, bounds, a restart key each. */
static void
test_identity_keys(void **state)
{
	struct config c, run;
	char err[256], changed[512];

	config_defaults(&c);
	assert_string_equal(c.cert_dir, "");
	assert_string_equal(c.sds_socket, "");
	assert_string_equal(c.ca_addr, "");
	assert_string_equal(c.ca_root, "./var/run/secrets/istio/root-cert.pem");
	assert_string_equal(c.token_file, "./var/run/secrets/tokens/istio-token");
	assert_string_equal(c.cluster_id, "");
	assert_string_equal(c.trust_domain, "cluster.local");
	assert_int_equal(c.cert_ttl_s, 86400);
	run = c;
	assert_int_equal(load("{\"identity\":{\"certDir\":\"/etc/mycerts\",\"sdsSocket\":\"/var/run/sds.sock\","
	    "\"caAddress\":\"istiod.istio-system.svc:15012\",\"caRootCert\":\"/r.pem\",\"tokenFile\":\"/t\","
	    "\"clusterId\":\"Kubernetes\",\"trustDomain\":\"example.org\",\"certTTL\":\"3600.5s\"}}", &c, err,
	    sizeof(err)), 0);
	assert_string_equal(c.cert_dir, "/etc/mycerts");
	assert_string_equal(c.sds_socket, "/var/run/sds.sock");
	assert_string_equal(c.ca_addr, "istiod.istio-system.svc:15012");
	assert_string_equal(c.cluster_id, "Kubernetes");
	assert_string_equal(c.trust_domain, "example.org");
	assert_int_equal(c.cert_ttl_s, 3601);	/* rounded up to whole seconds */
	assert_int_equal(config_keep_fixed(&c, &run, changed, sizeof(changed)), 8);
	assert_string_equal(c.cert_dir, "");
	assert_string_equal(c.trust_domain, "cluster.local");
	/* Bad values, each naming its key; nothing applied. */
	static const struct { const char *json, *why; } bad[] = {
		{ "{\"identity\":{\"certDir\":7}}", "identity.certDir: expected a string" },
		{ "{\"identity\":{\"caAddress\":\"istiod\"}}", "identity.caAddress: expected \"host:port\"" },
		{ "{\"identity\":{\"caAddress\":\"istiod:0\"}}", "identity.caAddress: expected \"host:port\"" },
		{ "{\"identity\":{\"caAddress\":\"::1:15012\"}}", "identity.caAddress: expected \"host:port\"" },
		{ "{\"identity\":{\"trustDomain\":\"Example.org\"}}", "identity.trustDomain: expected a trust domain" },
		{ "{\"identity\":{\"trustDomain\":\"\"}}", "identity.trustDomain: expected a trust domain" },
		{ "{\"identity\":{\"certTTL\":\"0s\"}}", "identity.certTTL: duration" },
		{ "{\"identity\":{\"certTTL\":\"24h\"}}", "identity.certTTL: expected a duration" },
		{ "{\"identity\":{\"clusterId\":\"a\\nb\"}}", "identity.clusterId: control character" },
		{ "{\"identity\":{\"tokenFile\":\"/x\",\"tokenFile\":\"/y\"}}", "duplicate key" },
		{ "{\"identity\":{\"certdir\":\"/x\"}}", "identity.certdir: unknown key" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct config before = c;
		err[0] = '\0';
		assert_int_equal(load(bad[i].json, &c, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].why))
			fail_msg("%s: error \"%s\" lacks \"%s\"", bad[i].json, err, bad[i].why);
		assert_memory_equal(&before, &c, sizeof(c));
	}
	char longpath[400];
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(config_set(&c, "identity.certDir", longpath, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "longer than 255"));
	assert_int_equal(config_set(&c, "identity.caAddress", "[::1]:15012", err, sizeof(err)), 0);
	assert_int_equal(config_set(&c, "identity.caAddress", "", err, sizeof(err)), 0);
	/* --dump-config writes them back in the file schema. */
	cJSON *j = config_to_json(&run);
	cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "identity");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(id, "certTTL")->valuestring, "86400s");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(id, "trustDomain")->valuestring, "cluster.local");
	assert_string_equal(cJSON_GetObjectItemCaseSensitive(id, "certDir")->valuestring, "");
	char *txt = cJSON_PrintUnformatted(j);
	struct config back;
	config_defaults(&back);
	assert_int_equal(load(txt, &back, err, sizeof(err)), 0);
	assert_memory_equal(&back, &run, sizeof(run));
	free(txt);
	cJSON_Delete(j);
}

/* pilot-agent's environment variables over the file; bad ones refused by name. */
static void
test_identity_env(void **state)
{
	struct config c, before;
	char err[256];

	clear_identity_env();
	config_defaults(&c);
	before = c;
	assert_int_equal(config_apply_env(&c, err, sizeof(err)), 0);
	assert_memory_equal(&before, &c, sizeof(c));
	setenv("OUTRIGGER_CERT_DIR", "/certs", 1);
	setenv("CA_ADDR", "istiod.istio-system.svc:15012", 1);
	setenv("CA_ROOT_CA", "/root.pem", 1);
	setenv("CLUSTER_ID", "second", 1);
	setenv("TRUST_DOMAIN", "example.org", 1);
	setenv("SECRET_TTL", "1h30m", 1);
	assert_int_equal(load("{\"identity\":{\"certDir\":\"/file\",\"trustDomain\":\"file.org\"}}", &c, err,
	    sizeof(err)), 0);
	assert_int_equal(config_apply_env(&c, err, sizeof(err)), 0);
	assert_string_equal(c.cert_dir, "/certs");
	assert_string_equal(c.ca_addr, "istiod.istio-system.svc:15012");
	assert_string_equal(c.ca_root, "/root.pem");
	assert_string_equal(c.cluster_id, "second");
	assert_string_equal(c.trust_domain, "example.org");
	assert_int_equal(c.cert_ttl_s, 5400);
	/* ISTIO_META_CLUSTER_ID (pilot-agent's) wins over CLUSTER_ID. */
	setenv("ISTIO_META_CLUSTER_ID", "first", 1);
	assert_int_equal(config_apply_env(&c, err, sizeof(err)), 0);
	assert_string_equal(c.cluster_id, "first");
	static const struct { const char *ttl; uint32_t s; } ttls[] = {
		{ "24h", 86400 }, { "90s", 90 }, { "1.5h", 5400 }, { "1500ms", 2 }, { "3600s", 3600 },
		{ "2h0m0s", 7200 },
	};
	for (size_t i = 0; i < sizeof(ttls) / sizeof(ttls[0]); i++) {
		setenv("SECRET_TTL", ttls[i].ttl, 1);
		assert_int_equal(config_apply_env(&c, err, sizeof(err)), 0);
		assert_int_equal(c.cert_ttl_s, ttls[i].s);
	}
	static const struct { const char *var, *val, *why; } bad[] = {
		{ "SECRET_TTL", "1 day", "environment variable SECRET_TTL: identity.certTTL" },
		{ "SECRET_TTL", "24x", "environment variable SECRET_TTL" },
		{ "SECRET_TTL", "h", "environment variable SECRET_TTL" },
		{ "CA_ADDR", "istiod", "environment variable CA_ADDR: identity.caAddress" },
		{ "TRUST_DOMAIN", "A B", "environment variable TRUST_DOMAIN: identity.trustDomain" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		setenv("SECRET_TTL", "24h", 1);
		setenv("CA_ADDR", "istiod:15012", 1);
		setenv("TRUST_DOMAIN", "example.org", 1);
		setenv(bad[i].var, bad[i].val, 1);
		before = c;
		assert_int_equal(config_apply_env(&c, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].why))
			fail_msg("%s=%s: error \"%s\" lacks \"%s\"", bad[i].var, bad[i].val, err, bad[i].why);
		assert_memory_equal(&before, &c, sizeof(c));
	}
	/* Empty counts as unset. */
	clear_identity_env();
	setenv("CA_ADDR", "", 1);
	config_defaults(&c);
	assert_int_equal(config_apply_env(&c, err, sizeof(err)), 0);
	assert_string_equal(c.ca_addr, "");
	clear_identity_env();
}

/* PROXY_CONFIG (pilot-agent's ProxyConfig JSON): its discoveryAddress
 * over the file, XDS_ADDRESS over it; the keys we do not have ignored, a
 * bad value of one we have refused by name. */
static void
test_proxy_config_env(void **state)
{
	struct config c;
	char err[256];

	(void)state;
	clear_identity_env();
	unsetenv("XDS_ADDRESS");
	config_defaults(&c);
	assert_int_equal(load("{\"proxy\":{\"discoveryAddress\":\"file:15012\"}}", &c, err, sizeof(err)), 0);
	setenv("PROXY_CONFIG", "{\"discoveryAddress\":\"pc.istio-system.svc:15012\",\"concurrency\":3,"
	    "\"holdApplicationUntilProxyStarts\":true,\"proxyMetadata\":{\"A\":\"b\"}}", 1);
	assert_int_equal(config_apply_env(&c, err, sizeof(err)), 0);
	assert_string_equal(c.xds_address, "pc.istio-system.svc:15012");
	assert_int_equal(c.concurrency, 3);
	setenv("XDS_ADDRESS", "http://127.0.0.1:15010", 1);
	assert_int_equal(config_apply_env(&c, err, sizeof(err)), 0);
	assert_string_equal(c.xds_address, "http://127.0.0.1:15010");
	unsetenv("XDS_ADDRESS");
	/* Refused whole: a bad value of a key we have, or not JSON. */
	config_defaults(&c);
	setenv("PROXY_CONFIG", "{\"discoveryAddress\":\"no port\"}", 1);
	assert_int_equal(config_apply_env(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "PROXY_CONFIG"));
	assert_non_null(strstr(err, "proxy.discoveryAddress"));
	assert_string_equal(c.xds_address, "");
	setenv("PROXY_CONFIG", "discoveryAddress: x", 1);
	assert_int_equal(config_apply_env(&c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "PROXY_CONFIG"));
	unsetenv("PROXY_CONFIG");
}

static void
test_keep_fixed(void **state)
{
	struct config run, next;
	char err[256], changed[256];

	config_defaults(&run);
	next = run;
	assert_int_equal(config_keep_fixed(&next, &run, changed, sizeof(changed)), 0);
	assert_string_equal(changed, "");
	assert_int_equal(load("{\"proxy\":{\"concurrency\":9,\"interceptionMode\":\"TPROXY\",\"proxyListenPort\":1,"
	    "\"proxyInboundListenPort\":2,\"proxyAdminPort\":3,\"healthPort\":4,\"adminAddress\":\"::1\","
	    "\"logLevel\":\"trace\",\"connectTimeout\":\"1s\",\"idleTimeout\":\"2s\","
	    "\"terminationDrainDuration\":\"3s\",\"exitOnZeroActiveConnections\":true}}", &next, err, sizeof(err)), 0);
	assert_int_equal(config_keep_fixed(&next, &run, changed, sizeof(changed)), 7);
	assert_string_equal(changed, "proxy.concurrency, proxy.interceptionMode, proxy.proxyListenPort, "
	    "proxy.proxyInboundListenPort, proxy.proxyAdminPort, proxy.adminAddress, proxy.healthPort");
	assert_int_equal(next.concurrency, run.concurrency);
	assert_int_equal(next.mode, run.mode);
	assert_int_equal(next.outbound_port, 15001);
	assert_int_equal(next.inbound_port, 15006);
	assert_int_equal(next.admin_port, 15000);
	assert_int_equal(next.health_port, 15021);
	assert_string_equal(next.admin_address, "127.0.0.1");
	assert_int_equal(next.log_level, LL_TRACE);
	assert_int_equal(next.connect_timeout_ms, 1000);
	assert_int_equal(next.idle_timeout_ms, 2000);
	assert_int_equal(next.drain_ms, 3000);
	assert_true(next.exit_on_zero);
	/* A short buffer truncates the list, not the count. */
	next.concurrency = 9;
	next.outbound_port = 1;
	assert_int_equal(config_keep_fixed(&next, &run, changed, 10), 2);
	assert_int_equal(strlen(changed), 9);
}

/* Issue 8, "Static resources": "mesh" holds the MeshConfig keys we honour
 * (outboundTrafficPolicy.mode), with the strictness of "proxy": bad values,
 * unknown and duplicate keys at every level are refused with their path. */
static void
test_mesh(void **state)
{
	static const struct { const char *json, *want; } bad[] = {
		{ "{\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":\"DENY\"}}}",
		  "mesh.outboundTrafficPolicy.mode: expected \"ALLOW_ANY\" or \"REGISTRY_ONLY\", got \"DENY\"" },
		{ "{\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":1}}}",
		  "mesh.outboundTrafficPolicy.mode: expected \"ALLOW_ANY\" or \"REGISTRY_ONLY\", got 1" },
		{ "{\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":\"allow_any\"}}}",
		  "mesh.outboundTrafficPolicy.mode: expected" },
		{ "{\"mesh\":{\"outboundTrafficPolicy\":{\"mod\":\"ALLOW_ANY\"}}}",
		  "mesh.outboundTrafficPolicy.mod: unknown key" },
		{ "{\"mesh\":{\"outboundPolicy\":{}}}", "mesh.outboundPolicy: unknown key" },
		{ "{\"mesh\":{\"outboundTrafficPolicy\":\"ALLOW_ANY\"}}", "mesh.outboundTrafficPolicy: expected an object" },
		{ "{\"mesh\":[]}", "mesh: expected an object" },
		{ "{\"mesh\":{\"concurrency\":2}}", "mesh.concurrency: unknown key" },
		{ "{\"proxy\":{\"outboundTrafficPolicy\":{\"mode\":\"ALLOW_ANY\"}}}",
		  "proxy.outboundTrafficPolicy: unknown key" },
		{ "{\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":\"ALLOW_ANY\",\"mode\":\"REGISTRY_ONLY\"}}}",
		  "mesh.outboundTrafficPolicy.mode: duplicate key" },
		{ "{\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":\"ALLOW_ANY\"},\"outboundTrafficPolicy\":{}}}",
		  "mesh.outboundTrafficPolicy: duplicate key" },
		{ "{\"mesh\":{},\"mesh\":{}}", "mesh: duplicate key" },
		/* Not half-applied: the good key before the bad one is dropped too. */
		{ "{\"proxy\":{\"concurrency\":7},\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":\"X\"}}}",
		  "mesh.outboundTrafficPolicy.mode: expected" },
	};
	struct config c, before;
	char err[256];

	config_defaults(&c);
	assert_int_equal(c.outbound_policy, OUTBOUND_ALLOW_ANY);
	assert_int_equal(load("{\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":\"REGISTRY_ONLY\"}}}", &c, err,
	    sizeof(err)), 0);
	assert_int_equal(c.outbound_policy, OUTBOUND_REGISTRY_ONLY);
	assert_int_equal(load("{\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":\"ALLOW_ANY\"}}}", &c, err,
	    sizeof(err)), 0);
	assert_int_equal(c.outbound_policy, OUTBOUND_ALLOW_ANY);
	/* Empty objects at each level keep the default. */
	assert_int_equal(load("{\"mesh\":{\"outboundTrafficPolicy\":{}}}", &c, err, sizeof(err)), 0);
	assert_int_equal(load("{\"mesh\":{}}", &c, err, sizeof(err)), 0);
	assert_int_equal(c.outbound_policy, OUTBOUND_ALLOW_ANY);
	before = c;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(load(bad[i].json, &c, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].want))
			fail_msg("case %zu: %s\n  got:  %s\n  want: %s", i, bad[i].json, err, bad[i].want);
		assert_memory_equal(&c, &before, sizeof(c));
	}

	/* The command line's path, and the dump (which must load back). */
	assert_int_equal(config_set(&c, "mesh.outboundTrafficPolicy.mode", "REGISTRY_ONLY", err, sizeof(err)), 0);
	assert_int_equal(c.outbound_policy, OUTBOUND_REGISTRY_ONLY);
	assert_int_equal(config_set(&c, "mesh.outboundTrafficPolicy.mode", "REGISTRY_ONLYx", err, sizeof(err)),
	    -EINVAL);
	assert_non_null(strstr(err, "mesh.outboundTrafficPolicy.mode: expected"));
	assert_int_equal(config_set(&c, "mesh.outboundTrafficPolicy", "ALLOW_ANY", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "mesh.outboundTrafficPolicy: unknown key");
	assert_int_equal(c.outbound_policy, OUTBOUND_REGISTRY_ONLY);
	cJSON *j = config_to_json(&c);
	char *txt = cJSON_PrintUnformatted(j);
	assert_non_null(strstr(txt, "\"mesh\":{\"outboundTrafficPolicy\":{\"mode\":\"REGISTRY_ONLY\"},"
	    "\"protocolDetectionTimeout\":\"0s\",\"accessLogFile\":\"\",\"accessLogEncoding\":\"TEXT\","
	    "\"useWaypoints\":false}"));
	config_defaults(&before);
	assert_int_equal(load(txt, &before, err, sizeof(err)), 0);
	assert_memory_equal(&c, &before, sizeof(c));
	free(txt);
	cJSON_Delete(j);

	/* A live key: a reload applies it. */
	struct config run;
	char changed[64];
	config_defaults(&run);
	assert_int_equal(config_keep_fixed(&c, &run, changed, sizeof(changed)), 0);
	assert_int_equal(c.outbound_policy, OUTBOUND_REGISTRY_ONLY);
}

/* Issue 8: "resources" is a list (each element decoded, and refused alone
 * when bad, by src/resources.c); a file not even shaped so is refused whole,
 * with the path. */
static void
test_resources_shape(void **state)
{
	static const struct { const char *json, *want; } bad[] = {
		{ "{\"resources\":{}}", "resources: expected a list of resources" },
		{ "{\"resources\":null}", "resources: expected a list of resources" },
		{ "{\"resources\":\"x\"}", "resources: expected a list of resources" },
		{ "{\"resources\":[],\"resources\":[]}", "resources: duplicate key" },
		{ "{\"resource\":[]}", "resource: unknown key" },
		{ "{\"proxy\":{\"resources\":[]}}", "proxy.resources: unknown key" },
	};
	struct config c, before;
	const cJSON *list = (const cJSON *)&c;	/* must be overwritten */
	char err[256];

	config_defaults(&c);
	before = c;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(load(bad[i].json, &c, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].want))
			fail_msg("case %zu: %s\n  got:  %s\n  want: %s", i, bad[i].json, err, bad[i].want);
		assert_memory_equal(&c, &before, sizeof(c));
	}
	/* Good shapes; what the objects hold is not looked at here. */
	assert_int_equal(load("{\"resources\":[]}", &c, err, sizeof(err)), 0);
	assert_int_equal(load("{\"proxy\":{\"concurrency\":3},\"resources\":[{\"@type\":\"x\"},{}]}", &c, err,
	    sizeof(err)), 0);
	assert_int_equal(c.concurrency, 3);
	/* Elements that are no objects are the loader's to refuse, one by one. */
	assert_int_equal(load("{\"resources\":[{},3,null,[]]}", &c, err, sizeof(err)), 0);

	/* config_load_tree hands the list over from the one parse. */
	static const char txt[] = "{\"resources\":[{\"a\":1},{\"b\":2}],\"proxy\":{}}";
	cJSON *root = cJSON_Parse(txt);
	assert_int_equal(config_load_tree(root, &c, &list, err, sizeof(err)), 0);
	assert_non_null(list);
	assert_int_equal(cJSON_GetArraySize(list), 2);
	assert_ptr_equal(list, cJSON_GetObjectItemCaseSensitive(root, "resources"));
	cJSON_Delete(root);
	root = cJSON_Parse("{\"proxy\":{}}");
	assert_int_equal(config_load_tree(root, &c, &list, err, sizeof(err)), 0);
	assert_null(list);
	cJSON_Delete(root);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_are_istio_sidecar),
		cmocka_unit_test(test_valid_file_applies),
		cmocka_unit_test(test_errors_name_the_path),
		cmocka_unit_test(test_never_half_applied),
		cmocka_unit_test(test_dump_round_trips),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_duplicate_keys_refused),
		cmocka_unit_test(test_trailing_data_refused),
		cmocka_unit_test(test_nul_refused),
		cmocka_unit_test(test_lax_numbers_refused),
		cmocka_unit_test(test_config_set_strict),
		cmocka_unit_test(test_keep_fixed),
		cmocka_unit_test(test_identity_keys),
		cmocka_unit_test(test_identity_env),
		cmocka_unit_test(test_proxy_config_env),
		cmocka_unit_test(test_mesh),
		cmocka_unit_test(test_resources_shape),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
