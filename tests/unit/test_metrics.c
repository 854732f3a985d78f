/* Unit tests for src/metrics.c and the /stats exposition (issue 7 §5: every
 * worker metric was declared a gauge, and 96-byte names would truncate long
 * names such as Istio's cluster names). */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "metrics.h"

static void
test_prometheus_types(void **state)
{
	struct strbuf sb = { 0 };

	admin_render_stats(&sb, "prometheus");
	assert_false(sb.oom);
	assert_non_null(strstr(sb.p, "# TYPE outrigger_listener_downstream_cx_total counter\n"));
	assert_non_null(strstr(sb.p, "# TYPE outrigger_listener_downstream_cx_active gauge\n"));
	assert_non_null(strstr(sb.p, "# TYPE outrigger_listener_upstream_cx_overflow counter\n"));
	assert_non_null(strstr(sb.p, "# TYPE outrigger_pipes_cached gauge\n"));
	assert_non_null(strstr(sb.p, "# TYPE outrigger_log_lines_dropped counter\n"));
	assert_non_null(strstr(sb.p, "# TYPE outrigger_log_lines_suppressed counter\n"));
	assert_non_null(strstr(sb.p, "# TYPE outrigger_listener_upstream_cx_connect_ms histogram\n"));
	assert_non_null(strstr(sb.p,
	    "outrigger_listener_upstream_cx_connect_ms_bucket{listener=\"outbound\",le=\"+Inf\"} 0\n"));
	assert_non_null(strstr(sb.p, "outrigger_listener_upstream_cx_connect_ms_count{listener=\"inbound\"} 0\n"));
	/* Every family is declared once with the kind of its list entry. */
	for (int m = 0; m < LM__COUNT; m++) {
		char want[256];
		snprintf(want, sizeof(want), "# TYPE outrigger_listener_%s %s\n", listener_metric_desc[m].name,
		    metric_kind_names[listener_metric_desc[m].kind]);
		assert_non_null(strstr(sb.p, want));
	}
	sb_free(&sb);
}

static void
test_histogram_lines(void **state)
{
	struct hist h = { 0 }, sum = { 0 };
	struct strbuf sb = { 0 };

	hist_observe(&h, 300);		/* 0.3 ms: le 0.5 */
	hist_observe(&h, 1000);		/* 1 ms: le 1 (bounds are inclusive) */
	hist_observe(&h, 7000);		/* le 10 */
	hist_observe_s(&h, -1.0);	/* clamped to 0 */
	hist_observe(&h, 4000000000ULL);	/* beyond the last bound: +Inf */
	hist_accumulate(&sum, &h);
	hist_accumulate(&sum, &h);	/* two workers */
	prom_histogram(&sb, "x_ms", "listener=\"a\"", &sum);
	assert_false(sb.oom);
	assert_non_null(strstr(sb.p, "x_ms_bucket{listener=\"a\",le=\"0.5\"} 4\n"));
	assert_non_null(strstr(sb.p, "x_ms_bucket{listener=\"a\",le=\"1\"} 6\n"));
	assert_non_null(strstr(sb.p, "x_ms_bucket{listener=\"a\",le=\"5\"} 6\n"));
	assert_non_null(strstr(sb.p, "x_ms_bucket{listener=\"a\",le=\"10\"} 8\n"));
	assert_non_null(strstr(sb.p, "x_ms_bucket{listener=\"a\",le=\"3600000\"} 8\n"));
	assert_non_null(strstr(sb.p, "x_ms_bucket{listener=\"a\",le=\"+Inf\"} 10\n"));
	assert_non_null(strstr(sb.p, "x_ms_sum{listener=\"a\"} 8000016.600\n"));
	assert_non_null(strstr(sb.p, "x_ms_count{listener=\"a\"} 10\n"));
	sb_free(&sb);
	prom_histogram(&sb, "y_ms", NULL, &h);
	assert_non_null(strstr(sb.p, "y_ms_bucket{le=\"+Inf\"} 5\n"));
	assert_non_null(strstr(sb.p, "y_ms_count 5\n"));
	sb_free(&sb);
}

static void
test_long_names_not_truncated(void **state)
{
	static const char cluster[] =
	    "outbound|8080||reviews-v2-canary.bookinfo-production-namespace.svc.cluster.local";
	char name[512];
	struct stat_rows rs = { 0 };
	struct strbuf sb = { 0 }, label = { 0 };

	snprintf(name, sizeof(name), "cluster.%s.upstream_cx_connect_fail_with_a_long_suffix", cluster);
	assert_true(strlen(name) > 96);
	stat_rows_add(&rs, 7, "%s", name);
	stat_rows_add(&rs, 1, "a.first");
	stat_rows_render(&rs, &sb, "text");
	assert_false(sb.oom);
	char want[600];
	snprintf(want, sizeof(want), "%s: 7\n", name);
	assert_non_null(strstr(sb.p, want));
	assert_true(strstr(sb.p, "a.first: 1\n") < strstr(sb.p, want));	/* sorted */
	sb_free(&sb);
	stat_rows_render(&rs, &sb, "json");
	snprintf(want, sizeof(want), "{\"name\":\"%s\",\"value\":7}", name);
	assert_non_null(strstr(sb.p, want));
	sb_free(&sb);
	stat_rows_free(&rs);

	/* A label value is escaped, never cut. */
	sb_printf(&label, "cluster_name=\"");
	prom_label_value(&label, cluster);
	prom_label_value(&label, "\"q\\");
	sb_printf(&label, "\"");
	prom_sample(&sb, "outrigger_cluster_upstream_cx_total", label.p, 3);
	snprintf(want, sizeof(want), "outrigger_cluster_upstream_cx_total{cluster_name=\"%s\\\"q\\\\\"} 3\n", cluster);
	assert_string_equal(sb.p, want);
	sb_free(&sb);
	sb_free(&label);
}

/* Prometheus refuses a whole scrape with a byte that is not UTF-8 (a label
 * value from a WDS field or a SPIFFE ID nobody validated): such bytes become
 * U+FFFD, well-formed UTF-8 stays, escapes as before (outsider review). */
static void
test_label_value_utf8(void **state)
{
	static const struct { const char *in, *want; } cases[] = {
		{ "caf\xc3\xa9", "caf\xc3\xa9" },			/* 2 bytes */
		{ "\xe2\x82\xac \xf0\x9f\x98\x80", "\xe2\x82\xac \xf0\x9f\x98\x80" },	/* 3, 4 */
		{ "a\xff" "b", "a\xef\xbf\xbd" "b" },			/* never UTF-8 */
		{ "\xc3", "\xef\xbf\xbd" },				/* cut by the end */
		{ "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },		/* overlong */
		{ "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },	/* a surrogate */
		{ "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },	/* past U+10FFFF */
		{ "q\"\\\n\xc3\xa9", "q\\\"\\\\\\n\xc3\xa9" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct strbuf sb = { 0 };

		prom_label_value(&sb, cases[i].in);
		sb_append(&sb, "", 0);
		assert_non_null(sb.p);
		assert_string_equal(sb.p, cases[i].want);
		sb_free(&sb);
	}
	assert_int_equal(utf8_seq((const unsigned char *)"\xc2\x80"), 2);
	assert_int_equal(utf8_seq((const unsigned char *)"\xc1\xbf"), 0);
	assert_int_equal(utf8_seq((const unsigned char *)"\xef\xbf\xbf"), 3);
	assert_int_equal(utf8_seq((const unsigned char *)"\xf4\x8f\xbf\xbf"), 4);
	assert_int_equal(utf8_seq((const unsigned char *)"\xe0\x9f\xbf"), 0);
	assert_int_equal(utf8_seq((const unsigned char *)""), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_label_value_utf8),
		cmocka_unit_test(test_prometheus_types),
		cmocka_unit_test(test_histogram_lines),
		cmocka_unit_test(test_long_names_not_truncated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
