/* Unit tests for src/proxyv2.c: the header's bytes written out by hand from
 * HAProxy's proxy-protocol.txt §2.2 (signature, ver_cmd, fam, len, the
 * address block, TLVs), for IPv4, IPv6, a mix, no identity, and the
 * errors. An independent parser reads the same output in
 * tests/e2e/test_hbone_ext.py (HAProxy with accept-proxy). */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "proxyv2.h"

static struct sockaddr_in
v4(const char *ip, uint16_t port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	return a;
}

static struct sockaddr_in6
v6(const char *ip, uint16_t port)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
	return a;
}

static const char id[] = "spiffe://cluster.local/ns/default/sa/sleep";

static void
test_ipv4_with_identity(void **state)
{
	struct sockaddr_in s = v4("10.1.2.3", 40000), d = v4("10.4.5.6", 8080);
	uint8_t out[PROXYV2_MAX];
	/* 12 signature, 0x21 (v2, PROXY), 0x11 (INET, STREAM), length 12 + 3 + 42 = 57 */
	static const uint8_t head[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21, 0x11, 0x00, 57,
		10, 1, 2, 3, 10, 4, 5, 6, 0x9c, 0x40, 0x1f, 0x90,
		0xd0, 0x00, 42,
	};
	int n;

	(void)state;
	assert_int_equal(strlen(id), 42);
	n = proxyv2_build(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d, id);
	assert_int_equal(n, (int)sizeof(head) + 42);
	assert_memory_equal(out, head, sizeof(head));
	assert_memory_equal(out + sizeof(head), id, 42);
}

static void
test_ipv6_no_identity(void **state)
{
	struct sockaddr_in6 s = v6("fd00::1", 1), d = v6("fd00::2:3", 443);
	uint8_t out[PROXYV2_MAX];
	static const uint8_t want[16 + 36] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21, 0x21, 0x00, 36,
		0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
		0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 3,
		0x00, 0x01, 0x01, 0xbb,
	};

	(void)state;
	assert_int_equal(proxyv2_build(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d, NULL),
	    (int)sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
	/* "" is no identity either: no empty TLV. */
	assert_int_equal(proxyv2_build(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d, ""),
	    (int)sizeof(want));
}

/* One family per header: a v4 client to a v6 target goes as INET6 with
 * the client's address mapped. */
static void
test_mixed_families_mapped(void **state)
{
	struct sockaddr_in s = v4("192.0.2.7", 5000);
	struct sockaddr_in6 d = v6("2001:db8::9", 80);
	uint8_t out[PROXYV2_MAX];
	static const uint8_t mapped[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7 };

	(void)state;
	assert_int_equal(proxyv2_build(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d, NULL), 52);
	assert_int_equal(out[13], 0x21);
	assert_memory_equal(out + 16, mapped, 16);
	assert_memory_equal(out + 32, &d.sin6_addr, 16);
	assert_int_equal(out[48], 5000 >> 8);
	assert_int_equal(out[49], 5000 & 0xff);
	assert_int_equal(out[50], 0);
	assert_int_equal(out[51], 80);
}

static void
test_errors(void **state)
{
	struct sockaddr_in s = v4("10.0.0.1", 1), d = v4("10.0.0.2", 2);
	struct sockaddr un = { .sa_family = AF_UNIX };
	char big[514];
	uint8_t out[PROXYV2_MAX];

	(void)state;
	assert_int_equal(proxyv2_build(out, sizeof(out), &un, (struct sockaddr *)&d, NULL), -EAFNOSUPPORT);
	assert_int_equal(proxyv2_build(out, sizeof(out), (struct sockaddr *)&s, &un, NULL), -EAFNOSUPPORT);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(proxyv2_build(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d, big), -EINVAL);
	/* 512 bytes is the most, and fits PROXYV2_MAX even over IPv6. */
	big[512] = '\0';
	assert_int_equal(proxyv2_build(out, sizeof(out), (struct sockaddr *)&s, (struct sockaddr *)&d, big),
	    16 + 12 + 3 + 512);
	assert_int_equal(proxyv2_build(out, 27, (struct sockaddr *)&s, (struct sockaddr *)&d, NULL), -ENOSPC);
	assert_int_equal(proxyv2_build(out, 28, (struct sockaddr *)&s, (struct sockaddr *)&d, NULL), 28);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv4_with_identity),
		cmocka_unit_test(test_ipv6_no_identity),
		cmocka_unit_test(test_mixed_families_mapped),
		cmocka_unit_test(test_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
