/* sock: socket addresses and socket set-up (listen, connect, original destination). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sock.h"

/* linux/netfilter_ipv6/ip6_tables.h: IP6T_SO_ORIGINAL_DST is 80, like SO_ORIGINAL_DST. */
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

int
sock_addr_parse(const char *host, uint16_t port, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	struct sockaddr_in *in4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;

	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		return 0;
	}
	return -EINVAL;
}

socklen_t
sock_addr_len(const struct sockaddr_storage *sa)
{
	switch (sa->ss_family) {
	case AF_INET: return sizeof(struct sockaddr_in);
	case AF_INET6: return sizeof(struct sockaddr_in6);
	default: return 0;
	}
}

const char *
sock_addr_str(const struct sockaddr_storage *sa, char *buf, size_t len)
{
	return sock_sa_str((const struct sockaddr *)sa, buf, len);
}

const char *
sock_sa_str(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(in4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	} else {
		snprintf(buf, len, "(family %u)", sa->sa_family);
	}
	return buf;
}

bool
sock_addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

uint16_t
sock_addr_port(const struct sockaddr_storage *sa)
{
	if (sa->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

void
sock_addr_set_port(struct sockaddr_storage *sa, uint16_t port)
{
	if (sa->ss_family == AF_INET)
		((struct sockaddr_in *)sa)->sin_port = htons(port);
	else if (sa->ss_family == AF_INET6)
		((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

static int
set_transparent(int fd, int family)
{
	int one = 1;

	if (family == AF_INET6)
		return setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)) == 0 ? 0 : -errno;
	return setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) == 0 ? 0 : -errno;
}

int
sock_listen(const struct sockaddr_storage *sa, int backlog, bool reuseport, bool transparent)
{
	int fd, one = 1, rc;

	fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		goto bad;
	if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto bad;
	if (sa->ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		goto bad;
	if (transparent && (rc = set_transparent(fd, sa->ss_family)) < 0) {
		errno = -rc;
		goto bad;
	}
	if (bind(fd, (const struct sockaddr *)sa, sock_addr_len(sa)) < 0)
		goto bad;
	if (listen(fd, backlog) < 0)
		goto bad;
	return fd;
bad:
	rc = -errno;
	close(fd);
	return rc;
}

int
sock_original_dst(int fd, bool tproxy, struct sockaddr_storage *out)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);

	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0)
		return -errno;
	if (tproxy) {
		/* TPROXY keeps the packet's destination: the local address is the original one. */
		*out = local;
		return 0;
	}
	len = sizeof(*out);
	memset(out, 0, sizeof(*out));
	if (local.ss_family == AF_INET6) {
		if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, out, &len) < 0)
			return errno == ENOENT ? -ENOENT : -errno;
	} else {
		if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, &len) < 0)
			return errno == ENOENT ? -ENOENT : -errno;
	}
	/* No NAT happened: the "original" destination is the listener itself.
	 * Connecting there would accept our own connection again, forever. */
	if (sock_addr_equal(out, &local))
		return -ENOENT;
	return 0;
}

int
sock_connect(const struct sockaddr_storage *dst, const struct sockaddr_storage *src,
    bool transparent, uint32_t mark)
{
	int fd, rc, one = 1;

	fd = socket(dst->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
	if (fd < 0)
		return -errno;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (transparent && (rc = set_transparent(fd, dst->ss_family)) < 0) {
		errno = -rc;
		goto bad;
	}
	if (mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0)
		goto bad;
	if (src) {
		/* Source address only: let connect() pick the port for this 4-tuple.
		 * Without it, bind(port 0) must find a port free for every destination
		 * and slows to a crawl once TIME_WAIT sockets from 127.0.0.6 pile up
		 * (seen in tests/bench: connect-per-request). Works for IPv6 too. */
		if (sock_addr_port(src) == 0)
			(void)setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		if (bind(fd, (const struct sockaddr *)src, sock_addr_len(src)) < 0)
			goto bad;
	}
	if (connect(fd, (const struct sockaddr *)dst, sock_addr_len(dst)) < 0 && errno != EINPROGRESS)
		goto bad;
	return fd;
bad:
	rc = -errno;
	close(fd);
	return rc;
}

int
sock_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

void
sock_close_rst(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

size_t
sock_pod_ips(struct sockaddr_storage *out, size_t max)
{
	const char *env = getenv("INSTANCE_IPS");
	size_t k = 0;

	if (!env || !*env)
		env = getenv("INSTANCE_IP");
	while (env && *env && k < max) {
		const char *end = strchr(env, ',');
		size_t n = end ? (size_t)(end - env) : strlen(env);
		char buf[64];

		if (n < sizeof(buf)) {
			memcpy(buf, env, n);
			buf[n] = 0;
			if (sock_addr_parse(buf, 0, &out[k]) == 0)
				k++;
		}
		env = end ? end + 1 : NULL;
	}
	return k;
}
