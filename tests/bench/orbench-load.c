/* orbench-load: the open-loop load generator of the benchmark harness
 * (tests/bench). One thread, epoll, non-blocking sockets, nanosecond clock.
 * It talks to orbench-server (whose first-byte convention it follows) and
 * prints one JSON line with what it measured.
 *
 * Why open loop: a closed-loop client sends the next request only when the
 * previous answer came back, so a stall delays the requests that would have
 * seen it and they are never measured ("coordinated omission").  With
 * --rate R, request i is due at start + i/R whatever happened before; it is
 * sent as soon as the loop gets there (a late loop sends a burst) and its
 * latency is measured from that intended time, so queueing anywhere, the
 * client included, shows in the percentiles.  --rate 0 is closed loop, used
 * only for throughput at saturation.  Latencies are kept in a preallocated
 * array (one 8-byte sample per operation, bounded by --count) and sorted at
 * the end: exact percentiles, no bucket error.
 *
 * Modes:
 *   bulk      --conns N connections each write as fast as they can for
 *             --duration s ('S' + data), then half-close; the server answers
 *             how many bytes it received.  Throughput = bytes received by the
 *             server / time until the last answer.
 *   pingpong  --conns N persistent connections; each operation writes --size
 *             bytes and waits for the same number echoed.  Open loop: an
 *             operation goes to an idle connection if there is one, else it
 *             is pipelined behind the least busy one.
 *   connect   one new connection per operation: connect, write --size bytes,
 *             read them back, close.  Closed loop: --conns in flight.  Open
 *             loop: at most --conns in flight; the rest wait in a queue (and
 *             the wait counts in their latency).
 *   idle      open --conns connections (--conns-parallel connects at a time),
 *             exchange one byte on each (proving the path end to end), print
 *             "HOLDING <ok> <failed>" on stdout, hold them --hold s, check
 *             each still echoes a byte, close, report.
 *
 * Every run is bounded by --duration (plus a short drain) and --count.
 *
 *   orbench-load --mode M --host IP --port P [--conns N] [--rate R]
 *                [--size B] [--duration S] [--count N] [--hold S]
 *                [--conns-parallel N] [--drain S]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

#define NS 1000000000ull
#define BULK_CHUNK 65536
#define MAX_SAMPLES (16u << 20)

enum mode { MODE_BULK, MODE_PINGPONG, MODE_CONNECT, MODE_IDLE };
enum cstate { CS_FREE, CS_CONNECTING, CS_OPEN, CS_DONE };

/* One client connection. q is the FIFO of the intended (open loop) or actual
 * (closed loop) start times of the operations outstanding on it. */
struct lconn {
	int fd;
	enum cstate st;
	uint64_t tosend;        /* bytes still to write for queued operations */
	uint64_t rcvd;          /* bytes of the current answer received */
	uint64_t *q;
	unsigned qhead, qlen, qcap;
	uint64_t t0;            /* connect/idle: start of this operation */
	uint64_t bytes;         /* bulk: bytes written; sink answer parsed here */
	char line[64];
	unsigned linelen;
	bool shut;
	bool sunk;
};

static struct {
	enum mode mode;
	struct sockaddr_in dst;
	unsigned conns, parallel;
	double rate, duration, hold, drain;
	uint64_t count;
	size_t size;
} opt = { .mode = MODE_PINGPONG, .conns = 16, .parallel = 256, .rate = 0, .duration = 5,
	  .hold = 5, .drain = 3, .count = 10000000, .size = 1024 };

static int ep;
static struct lconn *cs;
static uint64_t *samples;
static uint64_t nsamples, samples_cap;
static uint64_t ops, errors, bytes_total, late, max_lag;
static char *wbuf, rbuf[BULK_CHUNK];

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void
die(const char *what)
{
	fprintf(stderr, "orbench-load: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void
record(uint64_t lat)
{
	if (nsamples < samples_cap)
		samples[nsamples++] = lat;
}

static void
q_push(struct lconn *c, uint64_t t)
{
	if (c->qlen == c->qcap) {
		unsigned ncap = c->qcap ? c->qcap * 2 : 8;
		uint64_t *nq = malloc(ncap * sizeof(*nq));
		if (!nq)
			die("malloc");
		for (unsigned i = 0; i < c->qlen; i++)
			nq[i] = c->q[(c->qhead + i) % c->qcap];
		free(c->q);
		c->q = nq;
		c->qhead = 0;
		c->qcap = ncap;
	}
	c->q[(c->qhead + c->qlen) % c->qcap] = t;
	c->qlen++;
}

static uint64_t
q_pop(struct lconn *c)
{
	uint64_t t = c->q[c->qhead];
	c->qhead = (c->qhead + 1) % c->qcap;
	c->qlen--;
	return t;
}

static void
set_events(struct lconn *c, uint32_t ev)
{
	struct epoll_event e = { .events = ev, .data.ptr = c };
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Start a non-blocking connect on c. Returns 0 or -errno. */
static int
conn_start(struct lconn *c)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&opt.dst, sizeof(opt.dst)) < 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		return -e;
	}
	c->fd = fd;
	c->st = CS_CONNECTING;
	c->tosend = c->rcvd = 0;
	c->linelen = 0;
	c->shut = c->sunk = false;
	struct epoll_event e = { .events = EPOLLOUT, .data.ptr = c };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
		die("epoll_ctl");
	return 0;
}

static void
conn_close(struct lconn *c)
{
	if (c->fd >= 0) {
		epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->st = CS_FREE;
	c->qlen = 0;
}

/* Write what is queued. Returns -1 on a failed connection (closed). */
static int
conn_write(struct lconn *c)
{
	while (c->tosend) {
		size_t n = c->tosend < BULK_CHUNK ? (size_t)c->tosend : BULK_CHUNK;
		ssize_t w = send(c->fd, wbuf, n, MSG_NOSIGNAL);
		if (w > 0) {
			c->tosend -= (uint64_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			set_events(c, EPOLLIN | EPOLLOUT);
			return 0;
		}
		return -1;
	}
	set_events(c, EPOLLIN);
	return 0;
}

static int
sock_err(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

/* ------------------------------------------------------------------ JSON out */

static int
u64cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double
pct(double p)
{
	if (!nsamples)
		return 0;
	/* Nearest rank: the smallest sample with at least p of them at or below. */
	uint64_t rank = (uint64_t)(p * (double)nsamples + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > nsamples)
		rank = nsamples;
	return samples[rank - 1] / 1000.0;
}

static const char *mode_names[] = { "bulk", "pingpong", "connect", "idle" };

static void
report(double elapsed, const char *extra)
{
	double sum = 0;
	qsort(samples, nsamples, sizeof(*samples), u64cmp);
	for (uint64_t i = 0; i < nsamples; i++)
		sum += (double)samples[i];
	printf("{\"mode\":\"%s\",\"conns\":%u,\"rate\":%.0f,\"size\":%zu,\"duration_s\":%.3f,"
	    "\"elapsed_s\":%.6f,\"ops\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"bytes\":%" PRIu64 ","
	    "\"ops_per_s\":%.1f,\"bytes_per_s\":%.1f,\"late_sends\":%" PRIu64 ",\"max_send_lag_us\":%.1f,"
	    "\"lat_us\":{\"n\":%" PRIu64 ",\"mean\":%.2f,\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,"
	    "\"p999\":%.2f,\"max\":%.2f}%s%s}\n",
	    mode_names[opt.mode], opt.conns, opt.rate, opt.size, opt.duration, elapsed, ops, errors,
	    bytes_total, elapsed > 0 ? ops / elapsed : 0, elapsed > 0 ? bytes_total / elapsed : 0,
	    late, max_lag / 1000.0, nsamples, nsamples ? sum / nsamples / 1000.0 : 0, pct(0.50),
	    pct(0.90), pct(0.99), pct(0.999), nsamples ? samples[nsamples - 1] / 1000.0 : 0,
	    extra ? "," : "", extra ? extra : "");
	fflush(stdout);
}


/* When the loop must wake: at the deadline, or earlier when the next
 * open-loop send is due. */
static uint64_t
next_wake(uint64_t deadline, bool sending, uint64_t start, uint64_t issued, double interval)
{
	uint64_t next = deadline;

	if (opt.rate > 0 && sending) {
		uint64_t due = start + (uint64_t)(issued * interval);
		if (due < next)
			next = due;
	}
	return next;
}

static int
wait_events(struct epoll_event *evs, int max, uint64_t until_ns)
{
	uint64_t now = now_ns();
	struct timespec ts = { 0, 0 };
	if (until_ns > now) {
		uint64_t d = until_ns - now;
		ts.tv_sec = (time_t)(d / NS);
		ts.tv_nsec = (long)(d % NS);
	}
	int n = epoll_pwait2(ep, evs, max, &ts, NULL);
	if (n < 0 && errno != EINTR)
		die("epoll_pwait2");
	return n < 0 ? 0 : n;
}

/* Open all opt.conns connections and wait until they are established (bulk,
 * pingpong). Returns how many failed. */
static unsigned
connect_all(void)
{
	unsigned pending = 0, failed = 0;
	struct epoll_event evs[256];
	uint64_t deadline = now_ns() + 10 * NS;

	for (unsigned i = 0; i < opt.conns; i++) {
		if (conn_start(&cs[i]) < 0) {
			failed++;
			continue;
		}
		pending++;
	}
	while (pending && now_ns() < deadline) {
		int n = wait_events(evs, 256, deadline);
		for (int i = 0; i < n; i++) {
			struct lconn *c = evs[i].data.ptr;
			if (c->st != CS_CONNECTING)
				continue;
			pending--;
			if (sock_err(c->fd)) {
				conn_close(c);
				failed++;
				continue;
			}
			c->st = CS_OPEN;
			set_events(c, EPOLLIN);
		}
	}
	for (unsigned i = 0; i < opt.conns; i++)
		if (cs[i].st == CS_CONNECTING) {
			conn_close(&cs[i]);
			failed++;
		}
	return failed;
}

/* ------------------------------------------------------------------ bulk */

static int
run_bulk(void)
{
	struct epoll_event evs[256];
	unsigned failed = connect_all(), open = opt.conns - failed, answered = 0;
	uint64_t start = now_ns(), stop_writing = start + (uint64_t)(opt.duration * NS);
	uint64_t deadline = stop_writing + (uint64_t)(opt.drain * NS) + 5 * NS, last = start;

	errors += failed;
	for (unsigned i = 0; i < opt.conns; i++) {
		struct lconn *c = &cs[i];
		if (c->st != CS_OPEN)
			continue;
		/* The first byte tells orbench-server to sink. */
		if (send(c->fd, "S", 1, MSG_NOSIGNAL) != 1) {
			conn_close(c);
			errors++;
			open--;
			continue;
		}
		set_events(c, EPOLLIN | EPOLLOUT);
	}
	while (answered < open && now_ns() < deadline) {
		uint64_t now = now_ns();
		int n = wait_events(evs, 256, now < stop_writing ? stop_writing : deadline);
		now = now_ns();
		for (int i = 0; i < n; i++) {
			struct lconn *c = evs[i].data.ptr;
			if (c->st != CS_OPEN)
				continue;
			if ((evs[i].events & EPOLLOUT) && !c->shut) {
				for (int r = 0; r < 16 && now < stop_writing; r++) {
					ssize_t w = send(c->fd, wbuf, BULK_CHUNK, MSG_NOSIGNAL);
					if (w > 0) {
						c->bytes += (uint64_t)w;
						continue;
					}
					if (w < 0 && (errno == EAGAIN || errno == EINTR))
						break;
					conn_close(c);
					errors++;
					open--;
					break;
				}
				if (c->st != CS_OPEN)
					continue;
			}
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
				ssize_t r = recv(c->fd, c->line + c->linelen, sizeof(c->line) - 1 - c->linelen, 0);
				if (r > 0) {
					c->linelen += (unsigned)r;
					c->line[c->linelen] = 0;
					if (strchr(c->line, '\n')) {
						unsigned long long b = 0;
						sscanf(c->line, "SUNK %llu", &b);
						bytes_total += b;
						ops++;
						answered++;
						last = now;
						c->sunk = true;
						conn_close(c);
						c->st = CS_DONE;
					}
				} else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
					conn_close(c);
					errors++;
					open--;
				}
			}
		}
		/* Writing time is over: half-close every connection, wait for answers. */
		if (now >= stop_writing) {
			for (unsigned i = 0; i < opt.conns; i++) {
				struct lconn *c = &cs[i];
				if (c->st == CS_OPEN && !c->shut) {
					shutdown(c->fd, SHUT_WR);
					c->shut = true;
					set_events(c, EPOLLIN);
				}
			}
		}
	}
	errors += open - answered;
	double elapsed = (double)(last - start) / NS;
	char extra[128];
	uint64_t written = 0;
	for (unsigned i = 0; i < opt.conns; i++)
		written += cs[i].bytes;
	snprintf(extra, sizeof(extra), "\"bytes_written\":%" PRIu64 ",\"gbit_per_s\":%.3f", written,
	    elapsed > 0 ? bytes_total * 8 / elapsed / 1e9 : 0);
	/* Bulk "operations" are the connections that reported; throughput is bytes. */
	report(elapsed, extra);
	return 0;
}

/* ------------------------------------------------------------------ pingpong */

static struct lconn *
pick_conn(unsigned *rr)
{
	struct lconn *best = NULL;
	for (unsigned k = 0; k < opt.conns; k++) {
		struct lconn *c = &cs[(*rr + k) % opt.conns];
		if (c->st != CS_OPEN)
			continue;
		if (c->qlen == 0) {
			*rr = (*rr + k + 1) % opt.conns;
			return c;
		}
		if (!best || c->qlen < best->qlen)
			best = c;
	}
	*rr = (*rr + 1) % opt.conns;
	return best;
}

static int
run_pingpong(void)
{
	struct epoll_event evs[256];
	unsigned failed = connect_all(), rr = 0;
	uint64_t start = now_ns(), end = start + (uint64_t)(opt.duration * NS);
	uint64_t deadline = end + (uint64_t)(opt.drain * NS), issued = 0, outstanding = 0, last = start;
	double interval = opt.rate > 0 ? NS / opt.rate : 0;

	errors += failed;
	if (failed == opt.conns) {
		report(0, NULL);
		return 1;
	}
	if (opt.rate <= 0) {
		/* Closed loop: one operation outstanding per connection. */
		for (unsigned i = 0; i < opt.conns && issued < opt.count; i++) {
			struct lconn *c = &cs[i];
			if (c->st != CS_OPEN)
				continue;
			q_push(c, now_ns());
			c->tosend += opt.size;
			issued++;
			outstanding++;
			if (conn_write(c) < 0) {
				errors += c->qlen;
				outstanding -= c->qlen;
				conn_close(c);
			}
		}
	}
	for (;;) {
		uint64_t now = now_ns();
		bool sending = now < end && issued < opt.count;
		if (!sending && outstanding == 0)
			break;
		if (now >= deadline)
			break;
		if (opt.rate > 0 && sending) {
			/* Open loop: issue everything that is due, each with its intended time. */
			for (;;) {
				uint64_t due = start + (uint64_t)(issued * interval);
				if (due > now || due >= end || issued >= opt.count)
					break;
				struct lconn *c = pick_conn(&rr);
				if (!c) {
					errors++;
					issued++;
					continue;
				}
				if (now - due > 1000000)
					late++;
				if (now - due > max_lag)
					max_lag = now - due;
				q_push(c, due);
				c->tosend += opt.size;
				issued++;
				outstanding++;
				if (c->qlen == 1 || c->tosend == opt.size) {
					if (conn_write(c) < 0) {
						errors += c->qlen;
						outstanding -= c->qlen;
						conn_close(c);
					}
				}
			}
		}
		int n = wait_events(evs, 256, next_wake(deadline, sending, start, issued, interval));
		for (int i = 0; i < n; i++) {
			struct lconn *c = evs[i].data.ptr;
			if (c->st != CS_OPEN)
				continue;
			if ((evs[i].events & EPOLLOUT) && c->tosend && conn_write(c) < 0)
				goto fail;
			if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
				continue;
			for (;;) {
				ssize_t r = recv(c->fd, rbuf, sizeof(rbuf), 0);
				if (r < 0 && (errno == EAGAIN || errno == EINTR))
					break;
				if (r <= 0)
					goto fail;
				c->rcvd += (uint64_t)r;
				bytes_total += (uint64_t)r;
				uint64_t t = now_ns();
				while (c->rcvd >= opt.size && c->qlen) {
					c->rcvd -= opt.size;
					record(t - q_pop(c));
					ops++;
					outstanding--;
					last = t;
					if (opt.rate <= 0 && t < end && issued < opt.count) {
						q_push(c, t);
						c->tosend += opt.size;
						issued++;
						outstanding++;
						if (conn_write(c) < 0)
							goto fail;
					}
				}
				if ((size_t)r < sizeof(rbuf))
					break;
			}
			continue;
fail:
			errors += c->qlen;
			outstanding -= c->qlen;
			conn_close(c);
		}
	}
	errors += outstanding;      /* never answered within the drain time */
	double elapsed = (double)((opt.rate > 0 ? (last > end ? last : end) : last) - start) / NS;
	for (unsigned i = 0; i < opt.conns; i++)
		if (cs[i].st == CS_OPEN)
			conn_close(&cs[i]);
	report(elapsed, NULL);
	return 0;
}

/* ------------------------------------------------------------------ connect */

static int
run_connect(void)
{
	struct epoll_event evs[256];
	uint64_t start = now_ns(), end = start + (uint64_t)(opt.duration * NS);
	uint64_t deadline = end + (uint64_t)(opt.drain * NS), issued = 0, last = start;
	unsigned inflight = 0, nfree = opt.conns;
	unsigned *freelist = malloc(opt.conns * sizeof(*freelist));
	/* Open loop: operations that are due but have no free slot wait here. */
	uint64_t *backlog = NULL, blhead = 0, bllen = 0, blcap = 0;
	double interval = opt.rate > 0 ? NS / opt.rate : 0;

	if (!freelist)
		die("malloc");
	for (unsigned i = 0; i < opt.conns; i++)
		freelist[i] = opt.conns - 1 - i;
	if (opt.rate > 0) {
		blcap = (uint64_t)(opt.rate * opt.duration) + 16;
		if (blcap > opt.count + 16)
			blcap = opt.count + 16;
		backlog = malloc(blcap * sizeof(*backlog));
		if (!backlog)
			die("malloc");
	}
	for (;;) {
		uint64_t now = now_ns();
		bool sending = now < end && issued < opt.count;
		if (!sending && inflight == 0 && bllen == 0)
			break;
		if (now >= deadline)
			break;
		if (opt.rate > 0 && sending) {
			for (;;) {
				uint64_t due = start + (uint64_t)(issued * interval);
				if (due > now || due >= end || issued >= opt.count || bllen >= blcap)
					break;
				backlog[(blhead + bllen) % blcap] = due;
				bllen++;
				issued++;
			}
		}
		/* Start operations while slots are free. */
		while (nfree) {
			uint64_t t0;
			if (opt.rate > 0) {
				if (!bllen)
					break;
				t0 = backlog[blhead];
				blhead = (blhead + 1) % blcap;
				bllen--;
				if (now - t0 > 1000000)
					late++;
				if (now - t0 > max_lag)
					max_lag = now - t0;
			} else {
				if (!sending)
					break;
				t0 = now;
				issued++;
			}
			struct lconn *c = &cs[freelist[--nfree]];
			c->t0 = t0;
			int rc = conn_start(c);
			if (rc < 0) {
				errors++;
				c->st = CS_FREE;
				freelist[nfree++] = (unsigned)(c - cs);
				if (rc == -EMFILE || rc == -EADDRNOTAVAIL || rc == -ENFILE)
					break;
				continue;
			}
			inflight++;
			if (opt.rate <= 0 && !(now < end && issued < opt.count))
				break;
		}
		int n = wait_events(evs, 256, next_wake(deadline, sending, start, issued, interval));
		for (int i = 0; i < n; i++) {
			struct lconn *c = evs[i].data.ptr;
			bool done = false, fail = false;
			if (c->st == CS_CONNECTING) {
				if (sock_err(c->fd)) {
					fail = true;
				} else {
					c->st = CS_OPEN;
					c->tosend = opt.size;
					if (conn_write(c) < 0)
						fail = true;
				}
			} else if (c->st == CS_OPEN) {
				if ((evs[i].events & EPOLLOUT) && c->tosend && conn_write(c) < 0)
					fail = true;
				if (!fail && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
					for (;;) {
						ssize_t r = recv(c->fd, rbuf, sizeof(rbuf), 0);
						if (r < 0 && (errno == EAGAIN || errno == EINTR))
							break;
						if (r <= 0) {
							fail = true;
							break;
						}
						c->rcvd += (uint64_t)r;
						if (c->rcvd >= opt.size) {
							done = true;
							break;
						}
					}
				}
			} else {
				continue;
			}
			if (done) {
				uint64_t t = now_ns();
				record(t - c->t0);
				ops++;
				bytes_total += c->rcvd;
				last = t;
			}
			if (done || fail) {
				if (fail)
					errors++;
				conn_close(c);
				freelist[nfree++] = (unsigned)(c - cs);
				inflight--;
			}
		}
	}
	errors += inflight + bllen;
	double elapsed = (double)((opt.rate > 0 ? (last > end ? last : end) : last) - start) / NS;
	for (unsigned i = 0; i < opt.conns; i++)
		if (cs[i].fd >= 0)
			conn_close(&cs[i]);
	report(elapsed, NULL);
	free(backlog);
	free(freelist);
	return 0;
}

/* ------------------------------------------------------------------ idle */

/* Exchange one byte on every connection in cs[] that is open (or connect them
 * first if connect is true). Returns how many answered. */
static unsigned
idle_round(bool connect, unsigned *failed, uint64_t *elapsed_ns)
{
	struct epoll_event evs[256];
	unsigned next = 0, inflight = 0, ok = 0;
	uint64_t start = now_ns(), deadline = start + (uint64_t)((opt.duration + opt.drain) * NS);

	*failed = 0;
	if (!connect) {
		for (unsigned i = 0; i < opt.conns; i++) {
			struct lconn *c = &cs[i];
			if (c->st != CS_OPEN)
				continue;
			c->rcvd = 0;
			c->tosend = 1;
			if (conn_write(c) < 0) {
				conn_close(c);
				(*failed)++;
				continue;
			}
			c->qlen = 1;
			inflight++;
		}
	}
	for (;;) {
		while (connect && next < opt.conns && inflight < opt.parallel) {
			struct lconn *c = &cs[next++];
			if (conn_start(c) < 0) {
				(*failed)++;
				continue;
			}
			inflight++;
		}
		if (inflight == 0 && (!connect || next >= opt.conns))
			break;
		if (now_ns() >= deadline)
			break;
		int n = wait_events(evs, 256, deadline);
		for (int i = 0; i < n; i++) {
			struct lconn *c = evs[i].data.ptr;
			if (c->st == CS_CONNECTING) {
				if (sock_err(c->fd)) {
					conn_close(c);
					(*failed)++;
					inflight--;
					continue;
				}
				c->st = CS_OPEN;
				c->qlen = 1;
				c->tosend = 1;
				if (conn_write(c) < 0) {
					conn_close(c);
					(*failed)++;
					inflight--;
				}
				continue;
			}
			if (c->st != CS_OPEN || !c->qlen)
				continue;
			if ((evs[i].events & EPOLLOUT) && c->tosend && conn_write(c) < 0) {
				conn_close(c);
				(*failed)++;
				inflight--;
				continue;
			}
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
				ssize_t r = recv(c->fd, rbuf, sizeof(rbuf), 0);
				if (r < 0 && (errno == EAGAIN || errno == EINTR))
					continue;
				if (r <= 0) {
					conn_close(c);
					(*failed)++;
					inflight--;
					continue;
				}
				c->qlen = 0;
				ok++;
				inflight--;
				set_events(c, 0);   /* idle: no events wanted */
			}
		}
	}
	/* Whatever did not answer in time counts as failed. */
	for (unsigned i = 0; i < opt.conns; i++) {
		struct lconn *c = &cs[i];
		if ((c->st == CS_OPEN && c->qlen) || c->st == CS_CONNECTING) {
			conn_close(c);
			(*failed)++;
		}
	}
	if (connect)
		*failed += opt.conns - next;
	*elapsed_ns = now_ns() - start;
	return ok;
}

static int
run_idle(void)
{
	unsigned failed, failed2;
	uint64_t t_open, t_check;
	unsigned ok = idle_round(true, &failed, &t_open);

	printf("HOLDING %u %u\n", ok, failed);
	fflush(stdout);
	/* Hold: no traffic at all; the proxies should sleep. */
	uint64_t until = now_ns() + (uint64_t)(opt.hold * NS);
	while (now_ns() < until) {
		uint64_t left = until - now_ns();
		struct timespec ts = { (time_t)(left / NS), (long)(left % NS) };
		nanosleep(&ts, NULL);
	}
	unsigned alive = idle_round(false, &failed2, &t_check);
	ops = ok;
	errors = failed + failed2;
	char extra[256];
	snprintf(extra, sizeof(extra), "\"established\":%u,\"failed\":%u,\"alive_after_hold\":%u,"
	    "\"open_s\":%.3f,\"open_per_s\":%.1f", ok, failed, alive, t_open / 1e9,
	    t_open ? ok / (t_open / 1e9) : 0);
	for (unsigned i = 0; i < opt.conns; i++)
		if (cs[i].fd >= 0)
			conn_close(&cs[i]);
	report(t_open / 1e9, extra);
	return 0;
}

/* ------------------------------------------------------------------ main */

static void
usage(void)
{
	fprintf(stderr,
	    "usage: orbench-load --mode bulk|pingpong|connect|idle --host IP --port P\n"
	    "         [--conns N] [--rate R] [--size B] [--duration S] [--count N]\n"
	    "         [--hold S] [--conns-parallel N] [--drain S]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *host = NULL;
	int port = 8080;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage();
		i++;
		if (!strcmp(a, "--mode")) {
			if (!strcmp(v, "bulk")) opt.mode = MODE_BULK;
			else if (!strcmp(v, "pingpong")) opt.mode = MODE_PINGPONG;
			else if (!strcmp(v, "connect")) opt.mode = MODE_CONNECT;
			else if (!strcmp(v, "idle")) opt.mode = MODE_IDLE;
			else usage();
		} else if (!strcmp(a, "--host")) host = v;
		else if (!strcmp(a, "--port")) port = atoi(v);
		else if (!strcmp(a, "--conns")) opt.conns = (unsigned)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--conns-parallel")) opt.parallel = (unsigned)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--rate")) opt.rate = atof(v);
		else if (!strcmp(a, "--size")) opt.size = (size_t)strtoul(v, NULL, 10);
		else if (!strcmp(a, "--duration")) opt.duration = atof(v);
		else if (!strcmp(a, "--count")) opt.count = strtoull(v, NULL, 10);
		else if (!strcmp(a, "--hold")) opt.hold = atof(v);
		else if (!strcmp(a, "--drain")) opt.drain = atof(v);
		else usage();
	}
	if (!host || opt.conns == 0 || opt.size == 0 || opt.duration <= 0 || opt.duration > 600 ||
	    opt.hold < 0 || opt.hold > 600 || opt.parallel == 0)
		usage();
	opt.dst.sin_family = AF_INET;
	opt.dst.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &opt.dst.sin_addr) != 1)
		usage();
	signal(SIGPIPE, SIG_IGN);

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	cs = calloc(opt.conns, sizeof(*cs));
	wbuf = malloc(BULK_CHUNK);
	if (ep < 0 || !cs || !wbuf)
		die("init");
	memset(wbuf, 'x', BULK_CHUNK);
	for (unsigned i = 0; i < opt.conns; i++)
		cs[i].fd = -1;
	/* One sample per operation, up to what the run can issue. */
	samples_cap = opt.count;
	if (opt.rate > 0 && (uint64_t)(opt.rate * opt.duration) + 1 < samples_cap)
		samples_cap = (uint64_t)(opt.rate * opt.duration) + 1;
	if (samples_cap > MAX_SAMPLES)
		samples_cap = MAX_SAMPLES;
	samples = malloc(samples_cap * sizeof(*samples));
	if (!samples)
		die("malloc");

	switch (opt.mode) {
	case MODE_BULK: return run_bulk();
	case MODE_PINGPONG: return run_pingpong();
	case MODE_CONNECT: return run_connect();
	case MODE_IDLE: return run_idle();
	}
	return 2;
}
