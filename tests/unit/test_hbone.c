/* Unit tests for src/hbone.c: CONNECT authorities. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "hbone.h"

static void
ok(const char *s, int family, const char *ip, unsigned port)
{
	struct sockaddr_storage ss;
	char buf[64];

	assert_int_equal(hbone_authority_parse(s, strlen(s), &ss), 0);
	assert_int_equal(ss.ss_family, family);
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
		assert_int_equal(ntohs(a->sin_port), port);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
		assert_int_equal(ntohs(a->sin6_port), port);
	}
	assert_string_equal(buf, ip);
}

static void
bad(const char *s)
{
	struct sockaddr_storage ss;

	assert_int_equal(hbone_authority_parse(s, strlen(s), &ss), -EINVAL);
}

static void
test_good(void **state)
{
	ok("10.1.2.3:8080", AF_INET, "10.1.2.3", 8080);
	ok("127.0.0.1:1", AF_INET, "127.0.0.1", 1);
	ok("0.0.0.0:65535", AF_INET, "0.0.0.0", 65535);
	ok("[fd00::1]:80", AF_INET6, "fd00::1", 80);
	ok("[::ffff:10.0.0.1]:443", AF_INET6, "::ffff:10.0.0.1", 443);
	ok("[2001:db8::a:b:c]:15008", AF_INET6, "2001:db8::a:b:c", 15008);
}

static void
test_bad(void **state)
{
	static const char *const v[] = {
		"", ":", "10.1.2.3", "10.1.2.3:", ":80", "10.1.2.3:0", "10.1.2.3:65536",
		"10.1.2.3:99999999999", "10.1.2.3:+80", "10.1.2.3:-1", "10.1.2.3: 80", "10.1.2.3:80 ",
		" 10.1.2.3:80", "10.1.2.3:8a", "10.1.2:80", "10.1.2.256:80", "010.1.2.3:80",
		"host.example:80", "reviews.default.svc.cluster.local:9080", "fd00::1:80", "[fd00::1]",
		"[fd00::1]:", "[fd00::1:80", "fd00::1]:80", "[10.1.2.3]:80", "[fd00::1%eth0]:80",
		"[]:80", "[fd00::1]x:80", "10.1.2.3:80:80", "10.1.2.3:0080x",
	};

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		print_message("%s\n", v[i]);
		bad(v[i]);
	}
}

/* Not NUL-terminated: only len bytes are looked at. */
static void
test_len(void **state)
{
	struct sockaddr_storage ss;
	const char *s = "10.1.2.3:80garbage";

	assert_int_equal(hbone_authority_parse(s, 11, &ss), 0);
	assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 80);
	assert_int_equal(hbone_authority_parse(s, 12, &ss), -EINVAL);
	char big[300];
	memset(big, '1', sizeof(big));
	assert_int_equal(hbone_authority_parse(big, sizeof(big), &ss), -EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_len),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
