/* Unit tests for src/accesslog.c: the TEXT and JSON lines (JSON parsed back
 * with cJSON: every key of Istio's default JSON format and ours; the
 * escaping of bytes a peer chose), the cut of oversized fields, the
 * start time, the lane in log.c's queue (a full one drops and counts), and
 * the /logging endpoint that switches it (admin_logging). */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accesslog.h"
#include "admin.h"
#include "config.h"
#include "log.h"
#include "metrics.h"

static struct accesslog_rec
sample(void)
{
	struct accesslog_rec r = {
		.start = 1700000000.123,	/* 2023-11-14T22:13:20.123Z */
		.duration_ms = 42,
		.direction = "inbound",
		.listener = "inbound",
		.downstream_remote = "10.0.0.1:40000",
		.downstream_local = "10.0.0.2:8080",
		.upstream_host = "10.0.0.2:8080",
		.upstream_cluster = "inbound|8080||",
		.bytes_received = 1234,
		.bytes_sent = 5678,
		.response_flags = "UF,URX",
		.termination = "rbac_access_denied_matched_policy[shop/deny]",
		.source_principal = "spiffe://cluster.local/ns/a/sa/b",
		.destination_principal = "spiffe://cluster.local/ns/shop/sa/server",
		.authz_policy = "shop/deny",
		.authz_decision = "deny",
	};
	return r;
}

/* Istio's EnvoyJSONLogFormatIstio keys, then ours. */
static const char *const json_keys[] = {
	"start_time", "route_name", "method", "path", "protocol", "response_code", "response_flags",
	"response_code_details", "connection_termination_details", "bytes_received", "bytes_sent",
	"duration", "upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority",
	"upstream_host", "upstream_cluster", "upstream_local_address", "downstream_local_address",
	"downstream_remote_address", "requested_server_name", "upstream_transport_failure_reason",
	"direction", "listener", "source_principal", "destination_principal", "authorization_policy",
	"authorization_decision",
};

static const char *
jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void
test_json_every_key(void **state)
{
	struct accesslog_rec r = sample();
	char buf[8192];
	size_t n = accesslog_format(&r, AL_JSON, buf, sizeof(buf));

	assert_true(n > 2);
	assert_int_equal(buf[n - 1], '\n');
	assert_int_equal(strlen(buf), n);
	assert_null(memchr(buf, '\n', n - 1));	/* one line */
	cJSON *j = cJSON_Parse(buf);
	assert_non_null(j);
	for (size_t i = 0; i < sizeof(json_keys) / sizeof(json_keys[0]); i++) {
		if (!cJSON_HasObjectItem(j, json_keys[i]))
			fail_msg("key %s missing in %s", json_keys[i], buf);
	}
	assert_int_equal(cJSON_GetArraySize(j), (int)(sizeof(json_keys) / sizeof(json_keys[0])));
	assert_string_equal(jstr(j, "start_time"), "2023-11-14T22:13:20.123Z");
	assert_int_equal(cJSON_GetObjectItem(j, "duration")->valueint, 42);
	assert_int_equal(cJSON_GetObjectItem(j, "bytes_received")->valueint, 1234);
	assert_int_equal(cJSON_GetObjectItem(j, "bytes_sent")->valueint, 5678);
	assert_int_equal(cJSON_GetObjectItem(j, "response_code")->valueint, 0);
	assert_string_equal(jstr(j, "response_flags"), "UF,URX");
	assert_string_equal(jstr(j, "upstream_cluster"), "inbound|8080||");
	assert_string_equal(jstr(j, "downstream_remote_address"), "10.0.0.1:40000");
	assert_string_equal(jstr(j, "downstream_local_address"), "10.0.0.2:8080");
	assert_string_equal(jstr(j, "upstream_host"), "10.0.0.2:8080");
	assert_string_equal(jstr(j, "source_principal"), "spiffe://cluster.local/ns/a/sa/b");
	assert_string_equal(jstr(j, "destination_principal"), "spiffe://cluster.local/ns/shop/sa/server");
	assert_string_equal(jstr(j, "authorization_policy"), "shop/deny");
	assert_string_equal(jstr(j, "authorization_decision"), "deny");
	assert_string_equal(jstr(j, "connection_termination_details"),
	    "rbac_access_denied_matched_policy[shop/deny]");
	/* HTTP-only fields: null on TCP (Envoy's "-"). */
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "method")));
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "user_agent")));
	cJSON_Delete(j);
}

/* Unset fields: null (and "-" for the flags, as Envoy prints none). */
static void
test_json_unset(void **state)
{
	struct accesslog_rec r = { .start = 0 };
	char buf[8192];

	accesslog_format(&r, AL_JSON, buf, sizeof(buf));
	cJSON *j = cJSON_Parse(buf);
	assert_non_null(j);
	assert_string_equal(jstr(j, "response_flags"), "-");
	assert_string_equal(jstr(j, "start_time"), "1970-01-01T00:00:00.000Z");
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "source_principal")));
	assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "authorization_policy")));
	cJSON_Delete(j);
}

/* A principal with quotes, backslashes, a newline, controls and a byte that
 * is not UTF-8: still one line of valid JSON that gives the bytes back. */
static void
test_json_escaping(void **state)
{
	static const char odd[] = "spiffe://td/ns/\"x\"/sa/a\\b\nc\x01\x7f\xff end";
	struct accesslog_rec r = sample();
	char buf[8192];

	r.source_principal = odd;
	r.authz_policy = "ns/\"}{";
	size_t n = accesslog_format(&r, AL_JSON, buf, sizeof(buf));
	assert_null(memchr(buf, '\n', n - 1));
	for (size_t i = 0; i < n - 1; i++)
		assert_true((unsigned char)buf[i] >= 0x20 && (unsigned char)buf[i] < 0x7f);
	cJSON *j = cJSON_Parse(buf);
	assert_non_null(j);
	/* The byte that is not UTF-8 comes back as U+FFFD (written \ufffd, so the
	 * line is ASCII); the other bytes as they were. */
	assert_string_equal(jstr(j, "source_principal"), "spiffe://td/ns/\"x\"/sa/a\\b\nc\x01\x7f\xef\xbf\xbd end");
	assert_string_equal(jstr(j, "authorization_policy"), "ns/\"}{");
	cJSON_Delete(j);
}

/* Fields of any length: the line stays one whole JSON object. */
static void
test_json_oversized_fields(void **state)
{
	static char huge[20000];
	struct accesslog_rec r = sample();
	char buf[12288];

	memset(huge, '"', sizeof(huge) - 1);	/* each escaped to two bytes */
	r.source_principal = r.destination_principal = r.authz_policy = r.upstream_cluster = huge;
	r.termination = r.upstream_host = r.downstream_local = r.downstream_remote = huge;
	size_t n = accesslog_format(&r, AL_JSON, buf, sizeof(buf));
	assert_true(n < sizeof(buf));
	assert_int_equal(buf[n - 1], '\n');
	cJSON *j = cJSON_Parse(buf);
	assert_non_null(j);
	assert_true(strlen(jstr(j, "source_principal")) > 100);
	assert_string_equal(jstr(j, "authorization_decision"), "deny");	/* the last key still there */
	cJSON_Delete(j);
	/* A buffer too small for the line: cut, still terminated. */
	char small[64];
	n = accesslog_format(&r, AL_JSON, small, sizeof(small));
	assert_int_equal(n, strlen(small));
	assert_int_equal(small[n - 1], '\n');
}

/* Split a TEXT line on spaces (quoted fields hold no space: "-" on TCP). */
static int
fields(char *line, char **f, int max)
{
	int n = 0;

	for (char *p = strtok(line, " \n"); p && n < max; p = strtok(NULL, " \n"))
		f[n++] = p;
	return n;
}

static void
test_text_shape(void **state)
{
	struct accesslog_rec r = sample();
	char buf[8192], *f[64];

	accesslog_format(&r, AL_TEXT, buf, sizeof(buf));
	int n = fields(buf, f, 64);
	/* Istio's EnvoyTextLogFormat: [START_TIME] "METHOD PATH PROTOCOL" CODE FLAGS DETAILS
	 * TERMINATION "FAILURE" RX TX DURATION SVC_TIME "XFF" "UA" "REQID" "AUTHORITY"
	 * "UPSTREAM_HOST" CLUSTER UPSTREAM_LOCAL DOWNSTREAM_LOCAL DOWNSTREAM_REMOTE SNI ROUTE,
	 * then ours: direction listener source destination policy decision. */
	assert_int_equal(n, 30);
	assert_string_equal(f[0], "[2023-11-14T22:13:20.123Z]");
	assert_string_equal(f[1], "\"-");
	assert_string_equal(f[2], "-");
	assert_string_equal(f[3], "-\"");
	assert_string_equal(f[4], "0");
	assert_string_equal(f[5], "UF,URX");
	assert_string_equal(f[6], "-");
	assert_string_equal(f[7], "rbac_access_denied_matched_policy[shop/deny]");
	assert_string_equal(f[8], "\"-\"");
	assert_string_equal(f[9], "1234");
	assert_string_equal(f[10], "5678");
	assert_string_equal(f[11], "42");
	assert_string_equal(f[12], "-");
	assert_string_equal(f[16], "\"-\"");
	assert_string_equal(f[17], "\"10.0.0.2:8080\"");
	assert_string_equal(f[18], "inbound|8080||");
	assert_string_equal(f[19], "-");
	assert_string_equal(f[20], "10.0.0.2:8080");
	assert_string_equal(f[21], "10.0.0.1:40000");
	assert_string_equal(f[22], "-");
	assert_string_equal(f[23], "-");
	assert_string_equal(f[24], "inbound");
	assert_string_equal(f[25], "inbound");
	assert_string_equal(f[26], "spiffe://cluster.local/ns/a/sa/b");
	assert_string_equal(f[27], "spiffe://cluster.local/ns/shop/sa/server");
	assert_string_equal(f[28], "shop/deny");
	assert_string_equal(f[29], "deny");
}

/* A peer's principal with spaces, quotes and a newline cannot add a field or a line. */
static void
test_text_escaping(void **state)
{
	struct accesslog_rec r = sample();
	char buf[8192], *f[64];

	r.source_principal = "a b\"c\nd\x01\xff";
	size_t n = accesslog_format(&r, AL_TEXT, buf, sizeof(buf));
	assert_null(memchr(buf, '\n', n - 1));
	assert_int_equal(fields(buf, f, 64), 30);
	assert_string_equal(f[26], "a?b?c?d??");
	/* No flags, nothing known: "-". */
	struct accesslog_rec e = { .start = 0 };
	accesslog_format(&e, AL_TEXT, buf, sizeof(buf));
	assert_int_equal(fields(buf, f, 64), 30);
	assert_string_equal(f[5], "-");
	assert_string_equal(f[17], "\"-\"");
	assert_string_equal(f[29], "-");
}

static void
test_encoding_parse(void **state)
{
	enum accesslog_encoding e;

	assert_int_equal(accesslog_encoding_parse("JSON", &e), 0);
	assert_int_equal(e, AL_JSON);
	assert_int_equal(accesslog_encoding_parse("text", &e), 0);
	assert_int_equal(e, AL_TEXT);
	assert_int_equal(accesslog_encoding_parse("yaml", &e), -EINVAL);
	assert_string_equal(accesslog_encoding_str(AL_JSON), "JSON");
}

/* The settings: MeshConfig's names, the encoding checked by name. */
static void
test_config_keys(void **state)
{
	struct config c;
	char err[256];
	const char good[] = "{\"mesh\":{\"accessLogFile\":\"/dev/stdout\",\"accessLogEncoding\":\"JSON\"}}";
	const char bad[] = "{\"mesh\":{\"accessLogEncoding\":\"XML\"}}";

	config_defaults(&c);
	assert_string_equal(c.access_log_file, "");
	assert_int_equal(c.access_log_encoding, AL_TEXT);
	assert_int_equal(config_load_json(good, strlen(good), &c, err, sizeof(err)), 0);
	assert_string_equal(c.access_log_file, "/dev/stdout");
	assert_int_equal(c.access_log_encoding, AL_JSON);
	assert_true(config_load_json(bad, strlen(bad), &c, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "mesh.accessLogEncoding"));
	assert_int_equal(c.access_log_encoding, AL_JSON);	/* untouched */
}

/* Through the log thread to the access log's own descriptor, apart from the
 * log lines; a lane that is full drops the line and counts it; a new
 * descriptor takes the lines after it. */
static void
test_lane_and_drops(void **state)
{
	int logp[2], a[2], b[2];
	char buf[70000];
	struct accesslog_rec r = sample();

	assert_int_equal(pipe2(logp, O_NONBLOCK), 0);
	assert_int_equal(pipe2(a, O_NONBLOCK), 0);
	assert_int_equal(pipe2(b, O_NONBLOCK), 0);
	assert_int_equal(log_start(logp[1], 4096), 0);
	log_access_fd(a[1], false);
	accesslog_enabled = true;
	accesslog_encoding = AL_TEXT;
	accesslog_emit(&r);
	log_warn("a log line");
	for (int i = 0; i < 100; i++) {
		usleep(10000);
		if (read(a[0], buf, sizeof(buf) - 1) > 0)
			break;
		assert_true(i < 99);
	}
	assert_non_null(strstr(buf, "inbound|8080||"));
	usleep(20000);
	ssize_t n = read(logp[0], buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = 0;
	assert_non_null(strstr(buf, "a log line"));
	assert_null(strstr(buf, "inbound|8080||"));	/* not among the log lines */

	/* Fill pipe b, make it the destination: the log thread waits in write,
	 * the lane fills (4 KiB), and lines are dropped and counted. */
	while (write(b[1], buf, sizeof(buf)) > 0)
		;
	log_access_fd(b[1], false);
	uint64_t d0 = __atomic_load_n(&process_stats[PM_ACCESS_LOG_DROPPED], __ATOMIC_RELAXED);
	for (int i = 0; i < 200; i++)
		accesslog_emit(&r);
	uint64_t d1 = __atomic_load_n(&process_stats[PM_ACCESS_LOG_DROPPED], __ATOMIC_RELAXED);
	assert_true(d1 > d0);
	assert_true(d1 - d0 < 200);	/* the lane took some */
	/* Drain b so the thread can finish. */
	for (int i = 0; i < 100; i++) {
		while (read(b[0], buf, sizeof(buf)) > 0)
			;
		usleep(5000);
	}
	accesslog_enabled = false;
	log_access_fd(-1, false);
	log_stop();
	for (int i = 0; i < 2; i++) {
		close(a[i]);
		close(b[i]);
		close(logp[i]);
	}
}

/* /logging: Envoy's form; a GET never changes state; bad input changes nothing. */
static void
test_logging_endpoint(void **state)
{
	struct strbuf sb = { 0 };
	enum log_level before = log_threshold;

	assert_int_equal(admin_logging(NULL, 0, false, &sb), 200);
	assert_non_null(strstr(sb.p, "active loggers:"));
	assert_non_null(strstr(sb.p, "access log: off"));
	sb_free(&sb);
	/* A GET that would change state: 405. */
	assert_int_equal(admin_logging("level=debug", 11, false, &sb), 405);
	assert_int_equal(log_threshold, before);
	sb_free(&sb);
	assert_int_equal(admin_logging("level=debug&access_log_encoding=json", 36, true, &sb), 200);
	assert_int_equal(log_threshold, LL_DEBUG);
	assert_int_equal(accesslog_encoding, AL_JSON);
	assert_non_null(strstr(sb.p, "outrigger: debug"));
	sb_free(&sb);
	/* Bad input: 400, nothing applied (not even the good half). */
	assert_int_equal(admin_logging("level=info&access_log=maybe", 27, true, &sb), 400);
	assert_int_equal(log_threshold, LL_DEBUG);
	sb_free(&sb);
	assert_int_equal(admin_logging("level=loud", 10, true, &sb), 400);
	sb_free(&sb);
	assert_int_equal(admin_logging("colour=red", 10, true, &sb), 400);
	sb_free(&sb);
	assert_int_equal(admin_logging("access_log", 10, true, &sb), 400);
	sb_free(&sb);
	/* On with no destination: /dev/stdout (Istio's usual one). */
	assert_int_equal(admin_logging("access_log=on", 13, true, &sb), 200);
	assert_true(accesslog_enabled);
	assert_string_equal(accesslog_destination(), "/dev/stdout");
	assert_non_null(strstr(sb.p, "access log: on"));
	sb_free(&sb);
	assert_int_equal(admin_logging("access_log=off&access_log_encoding=TEXT", 39, true, &sb), 200);
	assert_false(accesslog_enabled);
	assert_int_equal(accesslog_encoding, AL_TEXT);
	sb_free(&sb);
	log_threshold = before;
}

/* The settings at publication: a path opened and the log on; the same path
 * again changes nothing (a /logging switch holds); "" off; reopen after a
 * rename writes to a new file of the same name. */
static void
test_configure_and_reopen(void **state)
{
	char dir[] = "/tmp/al-test-XXXXXX", path[64], moved[64], buf[8192];
	struct accesslog_rec r = sample();

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/access.log", dir);
	snprintf(moved, sizeof(moved), "%s/access.log.1", dir);
	assert_int_equal(accesslog_configure(path, AL_TEXT, false), 0);
	assert_true(accesslog_enabled);
	accesslog_emit(&r);
	accesslog_set_enabled(false);
	assert_int_equal(accesslog_configure(path, AL_TEXT, false), 0);
	assert_false(accesslog_enabled);	/* the switch holds while the setting is unchanged */
	accesslog_set_enabled(true);
	assert_int_equal(rename(path, moved), 0);
	assert_int_equal(accesslog_configure(path, AL_JSON, true), 0);
	assert_int_equal(accesslog_encoding, AL_JSON);
	accesslog_emit(&r);
	int fd = open(moved, O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n > 0);
	buf[n] = 0;
	assert_non_null(strstr(buf, "[2023-11-14T22:13:20.123Z]"));
	assert_null(strchr(buf, '{'));
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n > 0);
	buf[n] = 0;
	assert_int_equal(buf[0], '{');
	/* An unopenable path: an error, the previous destination stays. */
	assert_true(accesslog_configure("/nonexistent-dir/x.log", AL_JSON, false) < 0);
	assert_string_equal(accesslog_destination(), path);
	/* The same setting again (a reload) does not retry; a reopen (SIGHUP)
	 * does, once its directory is there (it was never retried: outsider
	 * review). */
	char later[340], laterdir[300];
	snprintf(laterdir, sizeof(laterdir), "%s/later", dir);
	snprintf(later, sizeof(later), "%s/x.log", laterdir);
	assert_true(accesslog_configure(later, AL_JSON, false) < 0);
	assert_true(accesslog_configure(later, AL_JSON, true) < 0);
	assert_string_equal(accesslog_destination(), path);
	assert_int_equal(mkdir(laterdir, 0755), 0);
	assert_int_equal(accesslog_configure(later, AL_JSON, false), 0);	/* no retry on a reload... */
	assert_string_equal(accesslog_destination(), path);
	assert_int_equal(accesslog_configure(later, AL_JSON, true), 0);	/* ...on SIGHUP */
	assert_string_equal(accesslog_destination(), later);
	assert_true(accesslog_enabled);
	assert_int_equal(accesslog_configure("", AL_TEXT, false), 0);
	unlink(later);
	rmdir(laterdir);
	assert_false(accesslog_enabled);
	unlink(path);
	unlink(moved);
	rmdir(dir);
}

/* A UTF-8 SPIFFE ID or policy name comes back the same from a JSON decoder
 * (each byte as \u00XX read as Latin-1: "cafÃ©"); a byte that is not UTF-8
 * is U+FFFD and the line still parses (outsider review). */
static void
test_json_utf8_round_trip(void **state)
{
	struct accesslog_rec r = { .start = 1, .source_principal = "spiffe://cluster.local/ns/caf\xc3\xa9/sa/x",
		.destination_principal = "bad\xff\xc3" };
	char buf[4096];
	cJSON *j;

	(void)state;
	accesslog_format(&r, AL_JSON, buf, sizeof(buf));
	assert_non_null(j = cJSON_Parse(buf));
	assert_string_equal(cJSON_GetObjectItem(j, "source_principal")->valuestring, r.source_principal);
	assert_string_equal(cJSON_GetObjectItem(j, "destination_principal")->valuestring, "bad\xef\xbf\xbd\xef\xbf\xbd");
	cJSON_Delete(j);
}

/* A full disk (here: a file size limit, which cuts a write short and then
 * fails it, as ENOSPC does): the lost lines are counted, and the line cut in
 * the middle is ended before the next one, which would otherwise be glued
 * to it (outsider review). */
static void
test_short_write_counted_and_line_ended(void **state)
{
	char path[] = "/tmp/al-full-XXXXXX", buf[512];
	const char l1[] = "first line, written whole: 40 bytes....\n";
	const char l2[] = "second line, cut after the 64th byte of the file....\n";
	struct rlimit old, lim;
	int fd = mkstemp(path);

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_IGN);
	log_access_fd(fd, false);
	uint64_t d0 = __atomic_load_n(&process_stats[PM_ACCESS_LOG_DROPPED], __ATOMIC_RELAXED);
	lim = old;
	lim.rlim_cur = 64;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	assert_int_equal(log_raw(l1, strlen(l1)), 0);
	assert_int_equal(log_raw(l2, strlen(l2)), 0);	/* 24 of its bytes fit */
	assert_int_equal(log_raw(l1, strlen(l1)), 0);	/* none fits */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	assert_int_equal(__atomic_load_n(&process_stats[PM_ACCESS_LOG_DROPPED], __ATOMIC_RELAXED) - d0, 2);
	assert_int_equal(log_raw("third\n", 6), 0);
	log_access_fd(-1, false);
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = 0;
	/* l1, 24 bytes of l2 ended by a newline, then "third" on a line of its own. */
	assert_int_equal(strncmp(buf, l1, strlen(l1)), 0);
	assert_int_equal(strncmp(buf + strlen(l1), l2, 24), 0);
	assert_string_equal(buf + strlen(l1) + 24, "\nthird\n");
	close(fd);
	unlink(path);
	signal(SIGXFSZ, SIG_DFL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_every_key),
		cmocka_unit_test(test_json_unset),
		cmocka_unit_test(test_json_escaping),
		cmocka_unit_test(test_json_oversized_fields),
		cmocka_unit_test(test_text_shape),
		cmocka_unit_test(test_text_escaping),
		cmocka_unit_test(test_encoding_parse),
		cmocka_unit_test(test_config_keys),
		cmocka_unit_test(test_lane_and_drops),
		cmocka_unit_test(test_logging_endpoint),
		cmocka_unit_test(test_configure_and_reopen),
		cmocka_unit_test(test_json_utf8_round_trip),
		cmocka_unit_test(test_short_write_counted_and_line_ended),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
