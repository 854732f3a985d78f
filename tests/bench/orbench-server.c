/* orbench-server: the backend of the benchmark harness (tests/bench). One
 * thread, one epoll loop, one port; each connection picks its behaviour from
 * its first byte, so that a contender forwarding to a fixed upstream (nginx,
 * which cannot read the original destination) still reaches every mode:
 *
 *   'S'   sink: read and discard until end of stream, then answer one line
 *         "SUNK <bytes>\n" (bytes after the 'S') and close.  Bulk throughput
 *         is counted here, at the receiver, not at the sender.
 *   else  echo: write back every byte read (the first one included) until the
 *         peer closes.  Ping-pong, connect-per-request and idle-hold use it.
 *
 * Back-pressure: when a write is short the rest is kept and reading stops
 * until the socket drains; no unbounded buffering.  An idle connection holds
 * no buffer.  Prints "READY <port>" on stdout once listening.  Bounded: exits
 * after --max-seconds (default 3600) even if nobody stops it.
 *
 *   orbench-server [--addr A] [--port P] [--max-seconds S]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IOBUF 65536
#define LISTEN_TAG UINT64_MAX

enum mode { M_NEW, M_ECHO, M_SINK };

/* One accepted connection, indexed by its descriptor. pend holds what a short
 * write left over (echo) or the SUNK line (sink); NULL while nothing waits. */
struct sconn {
	int fd;
	enum mode mode;
	bool closing;           /* sink: the answer is queued, close once sent */
	uint64_t sunk;
	char *pend;
	size_t plen, poff;
};

static struct sconn **conns;
static size_t nconns_max;
static int ep;
static char iobuf[IOBUF];
static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
conn_free(struct sconn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	conns[c->fd] = NULL;
	free(c->pend);
	free(c);
}

static void
conn_events(struct sconn *c, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.u64 = (uint64_t)c->fd };
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Queue buf[0..len) behind anything pending and try to send it now.
 * Returns -1 when the connection is gone (freed). */
static int
conn_send(struct sconn *c, const char *buf, size_t len)
{
	if (!c->pend) {
		while (len) {
			ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
			if (n > 0) {
				buf += n;
				len -= (size_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			conn_free(c);
			return -1;
		}
		if (!len)
			return 0;
	}
	char *p = realloc(c->pend, c->plen + len);
	if (!p) {
		conn_free(c);
		return -1;
	}
	memcpy(p + c->plen, buf, len);
	c->pend = p;
	c->plen += len;
	conn_events(c, EPOLLOUT);
	return 0;
}

static void
conn_flush(struct sconn *c)
{
	while (c->poff < c->plen) {
		ssize_t n = send(c->fd, c->pend + c->poff, c->plen - c->poff, MSG_NOSIGNAL);
		if (n > 0) {
			c->poff += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		conn_free(c);
		return;
	}
	free(c->pend);
	c->pend = NULL;
	c->plen = c->poff = 0;
	if (c->closing) {
		conn_free(c);
		return;
	}
	conn_events(c, EPOLLIN);
}

static void
conn_read(struct sconn *c)
{
	/* Bounded rounds per wake-up so one busy sender cannot starve the rest. */
	for (int round = 0; round < 16; round++) {
		ssize_t n = recv(c->fd, iobuf, sizeof(iobuf), 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			conn_free(c);
			return;
		}
		if (n == 0) {
			if (c->mode == M_SINK) {
				char line[64];
				int l = snprintf(line, sizeof(line), "SUNK %" PRIu64 "\n", c->sunk);
				c->closing = true;
				if (conn_send(c, line, (size_t)l) == 0 && !c->pend)
					conn_free(c);
				return;
			}
			conn_free(c);
			return;
		}
		const char *p = iobuf;
		size_t len = (size_t)n;
		if (c->mode == M_NEW) {
			if (p[0] == 'S') {
				c->mode = M_SINK;
				p++;
				len--;
			} else {
				c->mode = M_ECHO;
			}
		}
		if (c->mode == M_SINK) {
			c->sunk += len;
			continue;
		}
		if (conn_send(c, p, len) < 0)
			return;
		if (c->pend)
			return;         /* back-pressure: wait for EPOLLOUT */
		if ((size_t)n < sizeof(iobuf))
			return;
	}
}

static void
do_accept(int lfd)
{
	for (int i = 0; i < 256; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE)
				fprintf(stderr, "orbench-server: accept: %s\n", strerror(errno));
			return;
		}
		if ((size_t)fd >= nconns_max) {
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct sconn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		conns[fd] = c;
		struct epoll_event e = { .events = EPOLLIN, .data.u64 = (uint64_t)fd };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) {
			conns[fd] = NULL;
			close(fd);
			free(c);
		}
	}
}

static void
usage(void)
{
	fprintf(stderr, "usage: orbench-server [--addr A] [--port P] [--max-seconds S]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *addr = "0.0.0.0";
	int port = 8080;
	double max_seconds = 3600;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--addr") && i + 1 < argc)
			addr = argv[++i];
		else if (!strcmp(argv[i], "--port") && i + 1 < argc)
			port = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--max-seconds") && i + 1 < argc)
			max_seconds = atof(argv[++i]);
		else
			usage();
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);

	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	nconns_max = rl.rlim_cur == RLIM_INFINITY ? 1048576 : rl.rlim_cur;
	conns = calloc(nconns_max, sizeof(*conns));
	if (!conns) {
		perror("calloc");
		return 1;
	}

	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
		usage();
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0) {
		perror("orbench-server: listen");
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event le = { .events = EPOLLIN, .data.u64 = LISTEN_TAG };
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
	printf("READY %d\n", port);
	fflush(stdout);

	double deadline = now_s() + max_seconds;
	struct epoll_event evs[256];
	while (!stop && now_s() < deadline) {
		int n = epoll_wait(ep, evs, 256, 1000);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == LISTEN_TAG) {
				do_accept(lfd);
				continue;
			}
			struct sconn *c = conns[evs[i].data.u64];
			if (!c)
				continue;
			if (evs[i].events & EPOLLOUT)
				conn_flush(c);
			else if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				conn_read(c);
		}
	}
	return 0;
}
