/* Unit tests for src/admin.c: the request-line parser (untrusted bytes from
 * the readiness port) and the counter formats. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "admin.h"
#include "server.h"

static int
parse(const char *s, struct admin_req *r)
{
	return admin_parse_request(s, strlen(s), r);
}

static void
test_parse_ok(void **state)
{
	struct admin_req r;

	assert_int_equal(parse("GET /stats?format=json&x=1 HTTP/1.1\r\nHost: a\r\n\r\n", &r), 0);
	assert_int_equal(r.method_len, 3);
	assert_memory_equal(r.method, "GET", 3);
	assert_int_equal(r.path_len, 6);
	assert_memory_equal(r.path, "/stats", 6);
	assert_int_equal(r.query_len, 15);
	assert_memory_equal(r.query, "format=json&x=1", 15);
	assert_int_equal(parse("HEAD /healthz/ready HTTP/1.0\r\n\r\n", &r), 0);
	assert_null(r.query);
	assert_int_equal(r.path_len, 14);
}

/* Issue 7 §5: requests whose lines end in a bare LF (printf | nc, some
 * probes) were never answered. RFC 9112 §2.2 lets a server accept them. */
static void
test_parse_bare_lf(void **state)
{
	struct admin_req r;

	assert_int_equal(parse("GET /ready HTTP/1.1\n\n", &r), 0);
	assert_int_equal(r.path_len, 6);
	assert_memory_equal(r.path, "/ready", 6);
	assert_int_equal(parse("GET /stats?format=json HTTP/1.0\nHost: a\nX: y\n\n", &r), 0);
	assert_int_equal(r.query_len, 11);
	/* Mixed endings. */
	assert_int_equal(parse("HEAD /healthz/ready HTTP/1.1\r\nHost: a\n\r\n", &r), 0);
	assert_int_equal(parse("GET / HTTP/1.1\r\n\n", &r), 0);
	assert_int_equal(r.path_len, 1);
	/* Not complete yet, or malformed, as with CRLF. */
	assert_int_equal(parse("GET /ready HTTP/1.1\n", &r), -EAGAIN);
	assert_int_equal(parse("GET /ready HTTP/1.1\nHost: a\n", &r), -EAGAIN);
	assert_int_equal(parse("GET /ready\n\n", &r), -EINVAL);
	assert_int_equal(parse("\n\n", &r), -EINVAL);
	assert_int_equal(parse("GET /re\rady HTTP/1.1\n\n", &r), -EINVAL);
}

static void
test_parse_incomplete(void **state)
{
	struct admin_req r;

	assert_int_equal(parse("GET /stats HTTP/1.1\r\nHost: a\r\n", &r), -EAGAIN);
	assert_int_equal(parse("", &r), -EAGAIN);
	assert_int_equal(parse("GET", &r), -EAGAIN);
}

static void
test_parse_bad(void **state)
{
	static const char *const bad[] = {
		"get /stats HTTP/1.1\r\n\r\n",
		"GET stats HTTP/1.1\r\n\r\n",
		"GET /stats HTTP/2.0\r\n\r\n",
		"GET /stats\r\n\r\n",
		"GET  /stats HTTP/1.1\r\n\r\n",
		" /stats HTTP/1.1\r\n\r\n",
		"GET /st ats HTTP/1.1\r\n\r\n",
		"GET /stats HTTP/1.1 \r\n\r\n",
		"\r\n\r\n",
	};
	struct admin_req r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse(bad[i], &r) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
}

static void
test_parse_head_too_large(void **state)
{
	static char big[9000];
	struct admin_req r;

	memset(big, 'a', sizeof(big));
	memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
	assert_int_equal(admin_parse_request(big, sizeof(big), &r), -EINVAL);
}

static void
test_stats_formats(void **state)
{
	struct strbuf sb = { 0 };

	server.concurrency = 3;
	admin_render_stats(&sb, "text");
	assert_false(sb.oom);
	assert_non_null(strstr(sb.p, "server.concurrency: 3\n"));
	/* Sorted by name. */
	assert_true(strstr(sb.p, "server.concurrency") < strstr(sb.p, "server.live"));
	sb_free(&sb);
	admin_render_stats(&sb, "json");
	assert_non_null(strstr(sb.p, "{\"name\":\"server.concurrency\",\"value\":3}"));
	sb_free(&sb);
	admin_render_stats(&sb, "prometheus");
	assert_non_null(strstr(sb.p, "# TYPE outrigger_listener_downstream_cx_total counter\n"));
	assert_non_null(strstr(sb.p, "outrigger_listener_downstream_cx_active{listener=\"inbound\"} 0\n"));
	sb_free(&sb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_ok),
		cmocka_unit_test(test_parse_bare_lf),
		cmocka_unit_test(test_parse_incomplete),
		cmocka_unit_test(test_parse_bad),
		cmocka_unit_test(test_parse_head_too_large),
		cmocka_unit_test(test_stats_formats),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
