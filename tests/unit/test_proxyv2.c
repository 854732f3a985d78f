/* Unit tests for src/proxyv2.c: the header's bytes written out by hand from
 * HAProxy's proxy-protocol.txt §2.2 (signature, ver_cmd, fam, len, the
 * address block, TLVs), for IPv4, IPv6, a mix, no identity, and the
 * errors; and HAProxy (accept-proxy), an independent parser, reading our
 * headers over loopback and answering with the addresses it took from them
 * (skipped only when haproxy is not installed: packaging/install-deps.sh
 * installs it, for the bench). */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proxyv2.h"
#include "sock.h"
#include "testlo.h"

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

/* Sends header + an HTTP/1.0 request to HAProxy at port; its answer's
 * body (what it read from the header) into out. */
static void
ask_haproxy(uint16_t port, const uint8_t *hdr, int n, char *out, size_t cap)
{
	struct sockaddr_storage a;
	char req[PROXYV2_MAX + 64], resp[2048];
	size_t off = 0;
	int fd = -1;

	assert_int_equal(sock_addr_parse("127.0.0.1", port, &a), 0);
	/* HAProxy may still be starting: a few tries, bounded. */
	for (int i = 0; i < 100; i++) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(fd >= 0);
		if (connect(fd, (struct sockaddr *)&a, sizeof(struct sockaddr_in)) == 0)
			break;
		close(fd);
		fd = -1;
		usleep(20000);
	}
	assert_true(fd >= 0);
	memcpy(req, hdr, (size_t)n);
	memcpy(req + n, "GET / HTTP/1.0\r\n\r\n", 18);
	assert_int_equal(send(fd, req, (size_t)n + 18, 0), n + 18);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		assert_int_equal(poll(&p, 1, 5000), 1);
		r = recv(fd, resp + off, sizeof(resp) - 1 - off, 0);
		assert_true(r >= 0);
		if (r == 0)
			break;
		off += (size_t)r;
	}
	resp[off] = '\0';
	close(fd);
	assert_non_null(strstr(resp, " 200 "));
	snprintf(out, cap, "%s", strstr(resp, "\r\n\r\n") ? strstr(resp, "\r\n\r\n") + 4 : "");
}

static void
test_haproxy_reads_it(void **state)
{
	struct sockaddr_in s = v4("10.1.2.3", 41000), d = v4("10.4.5.6", 8080);
	struct sockaddr_in6 s6 = v6("fd00::7", 5555), d6 = v6("fd00::8", 9090);
	char cfg[] = "/tmp/test_proxyv2.XXXXXX", body[256];
	struct sockaddr_storage free_port;
	uint8_t hdr[PROXYV2_MAX];
	uint16_t port;
	pid_t pid;
	FILE *f;
	int fd, lfd, n, st;

	(void)state;
	if (system("command -v haproxy >/dev/null 2>&1") != 0)
		skip();
	lfd = listen_lo(&free_port);	/* a free port for HAProxy */
	port = sock_addr_port(&free_port);
	close(lfd);
	fd = mkstemp(cfg);
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	fprintf(f, "global\n  log stderr local0\ndefaults\n  mode http\n  timeout client 5s\n"
	    "  timeout connect 5s\n  timeout server 5s\nfrontend pp\n  bind 127.0.0.1:%u accept-proxy\n"
	    "  http-request return status 200 content-type text/plain lf-string \"%%[src] %%[src_port] %%[dst] %%[dst_port]\"\n",
	    port);
	fclose(f);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execlp("haproxy", "haproxy", "-db", "-q", "-f", cfg, (char *)NULL);
		_exit(127);
	}
	n = proxyv2_build(hdr, sizeof(hdr), (struct sockaddr *)&s, (struct sockaddr *)&d, id);
	ask_haproxy(port, hdr, n, body, sizeof(body));
	assert_string_equal(body, "10.1.2.3 41000 10.4.5.6 8080");
	n = proxyv2_build(hdr, sizeof(hdr), (struct sockaddr *)&s6, (struct sockaddr *)&d6, id);
	ask_haproxy(port, hdr, n, body, sizeof(body));
	assert_string_equal(body, "fd00::7 5555 fd00::8 9090");
	/* A TLV whose length runs past the header: HAProxy must refuse it
	 * (so the accepted ones above were parsed TLVs and all). */
	n = proxyv2_build(hdr, sizeof(hdr), (struct sockaddr *)&s, (struct sockaddr *)&d, id);
	hdr[30] = (uint8_t)(hdr[30] + 1);
	{
		struct sockaddr_storage a;
		char buf[PROXYV2_MAX + 32];
		int c = socket(AF_INET, SOCK_STREAM, 0);
		ssize_t r;

		assert_int_equal(sock_addr_parse("127.0.0.1", port, &a), 0);
		assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(struct sockaddr_in)), 0);
		memcpy(buf, hdr, (size_t)n);
		memcpy(buf + n, "GET / HTTP/1.0\r\n\r\n", 18);
		assert_int_equal(send(c, buf, (size_t)n + 18, MSG_NOSIGNAL), n + 18);
		struct pollfd p = { .fd = c, .events = POLLIN };
		assert_int_equal(poll(&p, 1, 5000), 1);
		r = recv(c, buf, sizeof(buf), 0);
		assert_true(r <= 0);	/* closed or reset: no answer */
		close(c);
	}
	kill(pid, SIGTERM);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	unlink(cfg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv4_with_identity),
		cmocka_unit_test(test_ipv6_no_identity),
		cmocka_unit_test(test_mixed_families_mapped),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_haproxy_reads_it),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
