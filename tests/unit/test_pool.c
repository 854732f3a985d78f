/* Unit tests for src/pool.c: idle caches shrink (issue 7 §5: up to 512 pipe
 * descriptors and 4 MiB per worker were kept forever) and the descriptor
 * budget counts sessions and pipes, cached ones included. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>

#include "metrics.h"
#include "pool.h"

static void
fill(struct pool *p, unsigned npipes, unsigned nchunks)
{
	struct pipe *pp[64];
	struct chunk *c[64];

	for (unsigned i = 0; i < npipes; i++)
		assert_non_null(pp[i] = pool_pipe_get(p));
	for (unsigned i = 0; i < nchunks; i++)
		assert_non_null(c[i] = pool_chunk_get(p));
	for (unsigned i = 0; i < npipes; i++)
		pool_pipe_put(p, pp[i], 0);
	for (unsigned i = 0; i < nchunks; i++)
		pool_chunk_put(p, c[i]);
}

static void
test_idle_cache_shrinks_to_floor(void **state)
{
	struct worker_stats ws = { 0 };
	struct pool p;

	pool_init(&p, 256, ws.w);
	fill(&p, 40, 40);
	assert_int_equal(ws.w[WM_PIPES_CACHED], 40);
	assert_int_equal(ws.w[WM_CHUNKS_CACHED], 40);
	/* First tick: what was cached at the previous tick (nothing) was idle. */
	pool_trim(&p);
	assert_int_equal(p.npipes_free, 40);
	/* Nothing used since: half of it goes, then half again, ... */
	pool_trim(&p);
	assert_int_equal(p.npipes_free, 20);
	assert_int_equal(p.nchunks_free, 20);
	assert_int_equal(ws.w[WM_PIPES_CACHED], 20);
	assert_int_equal(ws.w[WM_CHUNKS_CACHED], 20);
	for (int i = 0; i < 20; i++)
		pool_trim(&p);
	assert_int_equal(p.npipes_free, POOL_TRIM_FLOOR);
	assert_int_equal(p.nchunks_free, POOL_TRIM_FLOOR);
	assert_int_equal(ws.w[WM_PIPES_CACHED], POOL_TRIM_FLOOR);
	pool_destroy(&p);
	assert_int_equal(ws.w[WM_PIPES_CACHED], 0);
	assert_int_equal(ws.w[WM_CHUNKS_CACHED], 0);
}

static void
test_used_cache_is_kept(void **state)
{
	struct worker_stats ws = { 0 };
	struct pool p;

	pool_init(&p, 256, ws.w);
	fill(&p, 30, 0);
	pool_trim(&p);
	pool_trim(&p);
	assert_int_equal(p.npipes_free, 15);
	/* 10 of the 15 are taken and returned before the next tick: only the
	 * other 5 were idle, so 3 (half, rounded up) go. */
	fill(&p, 10, 0);
	pool_trim(&p);
	assert_int_equal(p.npipes_free, 12);
	pool_destroy(&p);
}

static void
test_fd_budget(void **state)
{
	struct worker_stats ws = { 0 };
	struct pool p;
	struct pipe *a, *b;

	pool_init(&p, 256, ws.w);
	p.fd_budget = 10;
	ws.w[WM_SESSIONS_IN_USE] = 3;	/* 6 descriptors */
	assert_int_equal(pool_fds_used(&p), 6);
	assert_non_null(a = pool_pipe_get(&p));	/* 8 */
	assert_non_null(b = pool_pipe_get(&p));	/* 10 */
	/* A third pipe would not fit. */
	assert_int_equal(pool_fds_used(&p), 10);
	assert_null(pool_pipe_get(&p));
	assert_int_equal(errno, EMFILE);
	assert_false(pool_fd_room(&p, 2));
	/* A cached pipe still counts, and is given up to make room for a session. */
	pool_pipe_put(&p, a, 0);
	assert_int_equal(pool_fds_used(&p), 10);
	assert_true(pool_fd_room(&p, 2));
	assert_int_equal(p.npipes_free, 0);
	assert_int_equal(pool_fds_used(&p), 8);
	pool_pipe_put(&p, b, 0);
	ws.w[WM_SESSIONS_IN_USE] = 0;
	pool_destroy(&p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_idle_cache_shrinks_to_floor),
		cmocka_unit_test(test_used_cache_is_kept),
		cmocka_unit_test(test_fd_budget),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
