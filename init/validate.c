/* validate: --run-validation (see validate.h). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ilog.h"
#include "validate.h"

/* linux/netfilter_ipv4.h SO_ORIGINAL_DST and linux/netfilter_ipv6/
 * ip6_tables.h IP6T_SO_ORIGINAL_DST: both 80, at SOL_IP / SOL_IPV6. */
#define OR_SO_ORIGINAL_DST 80

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Fill a loopback (or probe) address of the family. */
static socklen_t mkaddr(struct sockaddr_storage *ss, bool v6, const char *host,
			unsigned port)
{
	memset(ss, 0, sizeof(*ss));
	if (v6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, host, &s6->sin6_addr);
		return sizeof(*s6);
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, host, &s4->sin_addr);
	return sizeof(*s4);
}

static int listen_on(bool v6, unsigned port)
{
	struct sockaddr_storage ss;
	socklen_t len = mkaddr(&ss, v6, v6 ? "::1" : "127.0.0.1", port);
	int one = 1, fd;

	fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0) {
		int e = errno;
		ilog_error("validation: cannot listen on %s:%u: %s", v6 ? "[::1]" : "127.0.0.1",
			   port, strerror(e));
		close(fd);
		return -e;
	}
	return fd;
}

/* Start one non-blocking probe connection; fd or -errno. */
static int probe_connect(bool v6, unsigned probe_port)
{
	struct sockaddr_storage src, dst;
	socklen_t slen = mkaddr(&src, v6, v6 ? "::1" : "127.0.0.1", 0);
	socklen_t dlen = mkaddr(&dst, v6, v6 ? "::6" : "127.0.0.6", probe_port);
	int fd;

	fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* From the loopback address, so the "-s 127.0.0.6 -j RETURN"
	 * passthrough rule does not match. */
	if (bind(fd, (struct sockaddr *)&src, slen) < 0 ||
	    (connect(fd, (struct sockaddr *)&dst, dlen) < 0 && errno != EINPROGRESS)) {
		int e = errno;
		ilog_debug("validation: connect: %s", strerror(e));
		close(fd);
		return -e;
	}
	return fd;
}

/* The original destination port of an accepted connection, or -errno. */
static int original_port(int fd, bool v6)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, OR_SO_ORIGINAL_DST, &ss, &len) < 0)
		return -errno;
	return v6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
		  : ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int validate_run(const struct init_config *c, bool ipv6)
{
	unsigned ports[2] = { (unsigned)atoi(c->proxy_port),
			      (unsigned)atoi(c->inbound_capture_port) };
	int lfd[2] = { -1, -1 }, cfd = -1, rc = -ETIMEDOUT;
	long deadline = now_ms() + c->probe_timeout_ms, next_try = 0;
	int attempts = 0;

	for (int i = 0; i < 2; i++) {
		if (i == 1 && ports[1] == ports[0])
			break;
		if ((lfd[i] = listen_on(ipv6, ports[i])) < 0) {
			rc = lfd[i];
			goto out;
		}
	}
	ilog_info("validation: listening on %s:%u and :%u, probing %s:%u as uid %u",
		  ipv6 ? "[::1]" : "127.0.0.1", ports[0], ports[1],
		  ipv6 ? "[::6]" : "127.0.0.6", c->probe_port, (unsigned)getuid());
	for (;;) {
		struct pollfd pfd[3];
		nfds_t n = 0;
		long now = now_ms(), wait;

		if (now >= deadline)
			break;
		if (cfd < 0 && now >= next_try) {
			attempts++;
			next_try = now + 1000; /* istio: one attempt a second */
			cfd = probe_connect(ipv6, c->probe_port);
		}
		wait = (cfd < 0 ? next_try : deadline) - now;
		if (deadline - now < wait)
			wait = deadline - now;
		for (int i = 0; i < 2; i++)
			if (lfd[i] >= 0)
				pfd[n++] = (struct pollfd){ .fd = lfd[i], .events = POLLIN };
		if (cfd >= 0)
			pfd[n++] = (struct pollfd){ .fd = cfd, .events = POLLOUT };
		if (poll(pfd, n, (int)(wait > 0 ? wait : 0)) < 0 && errno != EINTR) {
			rc = -errno;
			break;
		}
		for (nfds_t i = 0; i < n; i++) {
			if (!pfd[i].revents)
				continue;
			if (pfd[i].fd == cfd) {
				int err = 0;
				socklen_t el = sizeof(err);
				getsockopt(cfd, SOL_SOCKET, SO_ERROR, &err, &el);
				if (err != 0) {
					ilog_debug("validation: probe %d: %s", attempts, strerror(err));
					close(cfd);
					cfd = -1;
				}
				continue;
			}
			int afd = accept4(pfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
			if (afd < 0)
				continue;
			int port = original_port(afd, ipv6);
			close(afd);
			if (port == (int)c->probe_port) {
				ilog_info("validation passed: the probe to %s:%u was redirected to the capture listener (original destination port %d); iptables rules established",
					  ipv6 ? "[::6]" : "127.0.0.6", c->probe_port, port);
				rc = 0;
				goto out;
			}
			ilog_debug("validation: accepted a connection with original port %d", port);
		}
		/* A refused or finished probe is retried at the next tick. */
		if (cfd >= 0 && now_ms() >= next_try) {
			close(cfd);
			cfd = -1;
		}
	}
	ilog_error("validation failed: no connection to %s:%u reached %s:%u or :%u within %ldms (%d attempts). The interception rules are missing or not effective; note that the probe is only redirected when it runs as the proxy uid (-u, e.g. 1337). With istio-cni, pods failing here are repaired by cni.repair.",
		   ipv6 ? "[::6]" : "127.0.0.6", c->probe_port, ipv6 ? "[::1]" : "127.0.0.1",
		   ports[0], ports[1], c->probe_timeout_ms, attempts);
out:
	if (cfd >= 0)
		close(cfd);
	for (int i = 0; i < 2; i++)
		if (lfd[i] >= 0)
			close(lfd[i]);
	return rc;
}
