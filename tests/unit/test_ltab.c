/* Unit tests for src/ltab.c: the bounded per-worker label table (issue 12
 * telemetry): one entry per label set, the bound and its overflow set,
 * copied strings, and the scrape's merge of two workers by key. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ltab.h"
#include "metrics.h"

static const char *const lnames[2] = { "reporter", "source_workload" };
static const char *const names[LTAB_NVALS] = { "a_total", "b_total", "c_total", "d_total" };
static const char *const help[LTAB_NVALS] = { "A", "B", "C", "D" };

static void
test_same_key_same_entry(void **state)
{
	struct ltab t;
	char buf[8] = "x";
	const char *k1[2] = { "source", buf }, *k2[2] = { "source", "y" }, *k3[2] = { "sourcex", "" };

	(void)state;
	assert_int_equal(ltab_init(&t, 2, 10), 0);
	struct ltab_ent *e = ltab_get(&t, k1);
	assert_ptr_equal(ltab_get(&t, k1), e);
	assert_ptr_not_equal(ltab_get(&t, k2), e);
	assert_ptr_not_equal(ltab_get(&t, k3), e);
	assert_int_equal(t.count, 3);
	buf[0] = 'z';	/* the table holds its own copy */
	assert_string_equal(e->lab[1], "x");
	ltab_free(&t);
}

static void
test_bound_overflows(void **state)
{
	struct ltab t;
	char v[16];
	const char *k[2] = { "destination", v };

	(void)state;
	assert_int_equal(ltab_init(&t, 2, 3), 0);
	for (int i = 0; i < 5; i++) {
		snprintf(v, sizeof(v), "w%d", i);
		struct ltab_ent *e = ltab_get(&t, k);
		assert_true((i < 3) == (e != &t.overflow));
		stat_add(&e->val[0], 1);
	}
	assert_int_equal(t.count, 3);
	assert_int_equal(t.overflows, 2);
	assert_int_equal(t.overflow.val[0], 2);
	ltab_free(&t);
}

static void
test_render_merges_workers(void **state)
{
	struct ltab a, b;
	struct strbuf sb = { 0 };
	uint64_t ov;
	const char *k1[2] = { "source", "pro\"d" }, *k2[2] = { "destination", "x" };

	(void)state;
	assert_int_equal(ltab_init(&a, 2, 4), 0);
	assert_int_equal(ltab_init(&b, 2, 4), 0);
	stat_add(&ltab_get(&a, k1)->val[0], 2);
	stat_add(&ltab_get(&b, k2)->val[0], 1);
	stat_add(&ltab_get(&b, k1)->val[0], 3);
	stat_add(&ltab_get(&b, k1)->val[2], 100);
	struct ltab *tabs[2] = { &a, &b };
	ltab_render(&sb, tabs, 2, lnames, names, help, &ov);
	assert_false(sb.oom);
	assert_int_equal(ov, 0);
	assert_non_null(strstr(sb.p, "# TYPE a_total counter\n"));
	assert_non_null(strstr(sb.p, "a_total{reporter=\"source\",source_workload=\"pro\\\"d\"} 5\n"));
	assert_non_null(strstr(sb.p, "a_total{reporter=\"destination\",source_workload=\"x\"} 1\n"));
	assert_non_null(strstr(sb.p, "c_total{reporter=\"source\",source_workload=\"pro\\\"d\"} 100\n"));
	/* one line per key, not per worker */
	const char *p = strstr(sb.p, "a_total{reporter=\"source\"");
	assert_null(strstr(p + 1, "a_total{reporter=\"source\""));
	sb_free(&sb);
	ltab_free(&a);
	ltab_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_key_same_entry),
		cmocka_unit_test(test_bound_overflows),
		cmocka_unit_test(test_render_merges_workers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
