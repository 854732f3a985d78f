/* Unit tests for src/sock.c: address parsing and printing, and the original
 * destination refusing a connection that was not redirected (loop guard). */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sock.h"

static void
test_parse_and_print(void **state)
{
	struct sockaddr_storage a, b;
	char buf[SOCK_ADDR_STRLEN];

	assert_int_equal(sock_addr_parse("198.18.0.2", 8080, &a), 0);
	assert_string_equal(sock_addr_str(&a, buf, sizeof(buf)), "198.18.0.2:8080");
	assert_int_equal(sock_addr_port(&a), 8080);
	assert_int_equal(sock_addr_len(&a), sizeof(struct sockaddr_in));
	assert_int_equal(sock_addr_parse("fd00:198:18::2", 80, &b), 0);
	assert_string_equal(sock_addr_str(&b, buf, sizeof(buf)), "[fd00:198:18::2]:80");
	assert_int_equal(sock_addr_len(&b), sizeof(struct sockaddr_in6));
	assert_false(sock_addr_equal(&a, &b));
	sock_addr_set_port(&b, 443);
	assert_string_equal(sock_addr_str(&b, buf, sizeof(buf)), "[fd00:198:18::2]:443");
	assert_int_equal(sock_addr_parse("localhost", 80, &a), -EINVAL);
	assert_int_equal(sock_addr_parse("[::1]", 80, &a), -EINVAL);
	assert_int_equal(sock_addr_parse("1.2.3.4.5", 80, &a), -EINVAL);
	assert_int_equal(sock_addr_parse("", 80, &a), -EINVAL);
}

static void
test_equal(void **state)
{
	struct sockaddr_storage a, b;

	sock_addr_parse("127.0.0.6", 1, &a);
	sock_addr_parse("127.0.0.6", 1, &b);
	assert_true(sock_addr_equal(&a, &b));
	sock_addr_set_port(&b, 2);
	assert_false(sock_addr_equal(&a, &b));
	sock_addr_parse("::6", 1, &a);
	sock_addr_parse("::6", 1, &b);
	assert_true(sock_addr_equal(&a, &b));
}

/* A client that connects to the capture port directly (no NAT) must not be
 * "forwarded" to the listener itself: that would accept our own connection
 * again and again. */
static void
test_not_redirected_is_refused(void **state)
{
	struct sockaddr_storage sa, got;
	socklen_t len = sizeof(sa);
	int lfd, cfd, afd;

	sock_addr_parse("127.0.0.1", 0, &sa);
	lfd = sock_listen(&sa, 8, true, false);
	assert_true(lfd >= 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
	cfd = sock_connect(&sa, NULL, false, 0);
	assert_true(cfd >= 0);
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 2000), 1);
	afd = accept(lfd, NULL, NULL);
	assert_true(afd >= 0);
	int rc = sock_original_dst(afd, false, &got);
	/* -ENOENT: no conntrack NAT entry, or the entry points at ourselves. */
	assert_int_equal(rc, -ENOENT);
	/* TPROXY: the local address is the destination. */
	assert_int_equal(sock_original_dst(afd, true, &got), 0);
	assert_true(sock_addr_equal(&got, &sa));
	close(afd);
	close(cfd);
	close(lfd);
}

static void
test_connect_refused_reports_error(void **state)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);
	int lfd, cfd;

	/* A port that was just free. */
	sock_addr_parse("127.0.0.1", 0, &sa);
	lfd = sock_listen(&sa, 1, false, false);
	assert_true(lfd >= 0);
	getsockname(lfd, (struct sockaddr *)&sa, &len);
	close(lfd);
	cfd = sock_connect(&sa, NULL, false, 0);
	if (cfd >= 0) {
		struct pollfd p = { .fd = cfd, .events = POLLOUT };
		assert_int_equal(poll(&p, 1, 2000), 1);
		assert_int_equal(sock_error(cfd), -ECONNREFUSED);
		close(cfd);
	} else {
		assert_int_equal(cfd, -ECONNREFUSED);
	}
}

static void
test_bind_passthrough_source(void **state)
{
	struct sockaddr_storage dst, src, local;
	socklen_t len = sizeof(dst);
	int lfd, cfd;

	sock_addr_parse("127.0.0.1", 0, &dst);
	lfd = sock_listen(&dst, 8, false, false);
	assert_true(lfd >= 0);
	getsockname(lfd, (struct sockaddr *)&dst, &len);
	sock_addr_parse("127.0.0.6", 0, &src);
	cfd = sock_connect(&dst, &src, false, 0);
	assert_true(cfd >= 0);
	len = sizeof(local);
	getsockname(cfd, (struct sockaddr *)&local, &len);
	sock_addr_set_port(&local, 0);
	assert_true(sock_addr_equal(&local, &src));
	/* Regression (bench, connect per request): bind() of a source with port 0
	 * must leave the port to connect(), or it crawls once TIME_WAIT piles up. */
	int on = 0;
	len = sizeof(on);
	assert_int_equal(getsockopt(cfd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &on, &len), 0);
	assert_int_equal(on, 1);
	close(cfd);
	close(lfd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_and_print),
		cmocka_unit_test(test_equal),
		cmocka_unit_test(test_not_redirected_is_refused),
		cmocka_unit_test(test_connect_refused_reports_error),
		cmocka_unit_test(test_bind_passthrough_source),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
