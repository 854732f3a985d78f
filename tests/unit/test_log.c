/* Unit tests for src/log.c: the per-call-site rate limit and the queue that
 * keeps a consumer which does not read from blocking the caller (issue 7 §5:
 * workers blocked in fputs(stderr) when stderr was a pipe nobody read). */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

static void
test_site_burst_then_summary(void **state)
{
	struct log_site s = { 0 };
	unsigned long long report;
	unsigned printed = 0;

	for (int i = 0; i < 100; i++) {
		if (log_site_admit(&s, 1000, &report))
			printed++;
		assert_int_equal(report, 0);
	}
	assert_int_equal(printed, LOG_SITE_BURST);
	/* The next second: printed again, with the count of what was held back. */
	assert_true(log_site_admit(&s, 1001, &report));
	assert_int_equal(report, 100 - LOG_SITE_BURST);
	assert_true(log_site_admit(&s, 1001, &report));
	assert_int_equal(report, 0);
}

static void
test_site_limit_in_log_msg(void **state)
{
	int p[2];
	char buf[65536];
	ssize_t n;
	uint64_t sup0 = log_lines_suppressed();

	assert_int_equal(pipe2(p, O_NONBLOCK), 0);
	assert_int_equal(log_start(p[1], 65536), 0);
	for (int i = 0; i < 50; i++)
		log_warn("connect failed %d", i);	/* one call site */
	log_stop();
	n = read(p[0], buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	unsigned lines = 0;
	for (char *q = buf; (q = strstr(q, "connect failed")); q++)
		lines++;
	/* Within one second only the burst gets through (a tick of the coarse
	 * clock during the loop lets at most one more burst through). */
	assert_true(lines >= LOG_SITE_BURST && lines <= 2 * LOG_SITE_BURST);
	assert_int_equal(log_lines_suppressed() - sup0, 50 - lines);
	close(p[0]);
	close(p[1]);
}

/* Reads fd until end of file (the write end closed). */
static void *
drain(void *arg)
{
	char buf[4096];

	while (read(*(int *)arg, buf, sizeof(buf)) > 0)
		;
	return NULL;
}

/* A consumer that never reads: the caller is never blocked, lines beyond the
 * queue are dropped and counted, and once the consumer reads, a line says how
 * many were lost. */
static void
test_full_consumer_drops_not_blocks(void **state)
{
	int p[2];
	uint64_t d0 = log_lines_dropped();

	assert_int_equal(pipe(p), 0);	/* blocking write end, like a real stderr */
	(void)fcntl(p[1], F_SETPIPE_SZ, 4096);
	assert_int_equal(log_start(p[1], 8192), 0);
	/* Debug lines are not rate-limited: only the queue bounds them. If a
	 * write blocked the caller, this loop would never end. */
	log_threshold = LL_DEBUG;
	for (int i = 0; i < 20000; i++)
		log_debug("line %d with some padding to fill the pipe quickly ..............", i);
	log_threshold = LL_INFO;
	assert_true(log_lines_dropped() - d0 > 10000);

	/* The consumer catches up: read until the "dropped" report arrives. */
	char buf[4096];
	char tail[8192] = "";
	bool seen = false;
	for (int rounds = 0; rounds < 2000 && !seen; rounds++) {
		struct pollfd pfd = { .fd = p[0], .events = POLLIN };
		if (poll(&pfd, 1, 1000) <= 0)
			break;
		ssize_t n = read(p[0], buf, sizeof(buf) - 1);
		if (n <= 0)
			break;
		buf[n] = '\0';
		/* Keep the last bytes so a report split across reads is still found. */
		size_t tl = strlen(tail);
		if (tl + (size_t)n >= sizeof(tail)) {
			memmove(tail, tail + tl / 2, tl - tl / 2 + 1);
			tl = strlen(tail);
		}
		memcpy(tail + tl, buf, (size_t)n + 1);
		seen = strstr(tail, "log lines dropped") != NULL;
	}
	assert_true(seen);
	/* The log thread may still hold a full queue for the pipe: keep reading
	 * while it stops, or log_stop() gives up on a thread stuck in write()
	 * and the next log_start() fails (-EALREADY): a flake under load. */
	pthread_t drainer;
	assert_int_equal(pthread_create(&drainer, NULL, drain, &p[0]), 0);
	log_stop();
	close(p[1]);
	pthread_join(drainer, NULL);
	close(p[0]);
	/* Stopped for real: the logger can start again. */
	int sink[2];
	assert_int_equal(pipe2(sink, O_NONBLOCK), 0);
	assert_int_equal(log_start(sink[1], 8192), 0);
	log_stop();
	close(sink[0]);
	close(sink[1]);
}

/* Text a peer chose (a ClientHello's SNI, a gRPC server's grpc-message)
 * goes into lines: a control character in it must not start a line of its
 * own (a forged entry) nor reach a terminal as an escape. One call, one line. */
static void
test_control_characters_escaped(void **state)
{
	int p[2];
	char buf[4096];
	ssize_t n;

	assert_int_equal(pipe2(p, O_NONBLOCK), 0);
	assert_int_equal(log_start(p[1], 65536), 0);
	log_warn("sni %s", "evil\n2026-01-01T00:00:00.000Z error w0 main: forged\r\x1b[2J\x7f");
	log_stop();
	n = read(p[0], buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "sni evil?2026-01-01T00:00:00.000Z error w0 main: forged??[2J?"));
	assert_ptr_equal(strchr(buf, '\n'), buf + n - 1);	/* one line */
	close(p[0]);
	close(p[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_site_burst_then_summary),
		cmocka_unit_test(test_site_limit_in_log_msg),
		cmocka_unit_test(test_full_consumer_drops_not_blocks),
		cmocka_unit_test(test_control_characters_escaped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
