/* conn: one end of a proxied connection: the raw TCP transport, arming for
 * what the owner wants, and the worker's hang-up watch. */
#include "autoconfig.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "conn.h"
#include "sock.h"

/* --- raw TCP ------------------------------------------------------------ */

static int
raw_handshake(struct conn *c)
{
	int err;

	if (!c->connecting)
		return 0;
	/* Called once the socket is writable: connected, or failed with
	 * SO_ERROR (readable too then: see conn_io_cb). */
	if (!c->connect_seen && (err = sock_error(c->fd)) != 0)
		return err;
	c->connecting = false;
	return 0;
}

static ssize_t
raw_recv(struct conn *c, void *buf, size_t len)
{
	ssize_t n = recv(c->fd, buf, len, 0);
	return n < 0 ? -errno : n;
}

static ssize_t
raw_send(struct conn *c, const void *buf, size_t len)
{
	ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
	return n < 0 ? -errno : n;
}

static int
raw_shutdown_wr(struct conn *c)
{
	if (shutdown(c->fd, SHUT_WR) < 0)
		return -errno;
	c->shut_wr = true;
	return 0;
}

/* A connect waits for writable, and readable too: a failed one is both
 * (EPOLLERR), a good one writable alone unless the server spoke first. */
static int
raw_want(struct conn *c, int what)
{
	if (what == CONN_HS && c->connecting)
		return EV_WRITE | EV_READ;
	return what == CONN_RD ? EV_READ : EV_WRITE;	/* CONN_WR, CONN_HS */
}

static size_t
raw_pending(struct conn *c)
{
	return 0;
}

static size_t
raw_unsent(struct conn *c)
{
	int n = 0;

	if (ioctl(c->fd, SIOCOUTQ, &n) < 0 || n < 0)
		return 0;
	/* Our FIN takes one sequence number in SIOCOUTQ but carries no data: a
	 * peer in CLOSE_WAIT may delay its ACK by 40 ms, and waiting for it
	 * protects no byte. */
	if (c->shut_wr && n > 0)
		n--;
	return (size_t)n;
}

static int
raw_error(struct conn *c)
{
	return sock_error(c->fd);
}

static void
raw_close(struct conn *c, enum conn_close how)
{
	if (how == CONN_ABORT)
		sock_close_rst(c->fd);
	else
		close(c->fd);
}

const struct conn_ops raw_ops = {
	.name = "raw",
	.handshake = raw_handshake,
	.recv = raw_recv,
	.send = raw_send,
	.shutdown_wr = raw_shutdown_wr,
	.want = raw_want,
	.pending = raw_pending,
	.unsent = raw_unsent,
	.error = raw_error,
	.close = raw_close,
	.can_splice = true,
};

/* --- arming --------------------------------------------------------------- */

/* Tell the owner what c may now try, from the events its watcher saw. */
static void
conn_dispatch(struct conn *c, int revents)
{
	int what = 0;

	for (int bit = CONN_RD; bit <= CONN_HS; bit <<= 1)
		if ((c->wants & bit) && (revents & c->ops->want(c, bit)))
			what |= bit;
	/* A fed event (pending bytes) carries EV_CUSTOM. */
	if ((revents & EV_CUSTOM) && (c->wants & CONN_RD))
		what |= CONN_RD;
	if (what)
		c->ready(c, what);
}

static void
conn_readyq_cb(struct readyq_ent *e, int revents)
{
	struct conn *c = (struct conn *)((char *)e - offsetof(struct conn, rq));

	conn_dispatch(c, revents);
}

/* The socket watcher fired. */
static void
conn_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct conn *c = io->data;

	/* An outgoing connect done and good: no getsockopt(SO_ERROR), which
	 * was one system call in 25 per proxied connection. Decided with the
	 * events asked for when the poll reported these. */
	if (c->connecting && (revents & (EV_WRITE | EV_READ)) == EV_WRITE && (c->events & EV_READ))
		c->connect_seen = true;
	/* A fed event (pending bytes) is called back at once; the poll's wait
	 * their turn. A queued conn is taken out when closed (conn_close). */
	if ((revents & EV_CUSTOM) || !readyq_defer(loop, &c->rq, conn_readyq_cb, revents))
		conn_dispatch(c, revents);
}

void
conn_init(struct conn *c, struct ev_loop *loop, int fd, const struct conn_ops *ops,
    conn_ready_fn *ready, void *owner, int hupfd)
{
	*c = (struct conn){ .fd = fd, .ops = ops, .loop = loop, .ready = ready, .owner = owner,
	    .hupfd = hupfd };
	ev_init(&c->io, conn_io_cb);
	c->io.data = c;
}

static void
conn_set_events(struct conn *c, int events)
{
	if (c->events == events)
		return;
	if (c->events)
		ev_io_stop(c->loop, &c->io);
	c->events = events;
	if (events) {
		ev_io_set(&c->io, c->fd, events);
		ev_io_start(c->loop, &c->io);
	}
}

void
conn_arm(struct conn *c, int wants)
{
	int events = 0;

	if (!conn_open(c))
		return;
	c->wants = wants;
	for (int bit = CONN_RD; bit <= CONN_HS; bit <<= 1)
		if (wants & bit)
			events |= c->ops->want(c, bit);
	if (c->fd >= 0)
		conn_set_events(c, events);
	/* The socket may stay quiet while the transport holds bytes: call back
	 * from the loop, not from here (the owner is in the middle of an event). */
	if ((wants & CONN_RD) && c->ops->pending(c))
		ev_feed_event(c->loop, &c->io, EV_CUSTOM);
}

void
conn_close(struct conn *c, enum conn_close how)
{
	if (!conn_open(c))
		return;
	if (c->fd >= 0)
		conn_set_events(c, 0);
	ev_clear_pending(c->loop, &c->io);
	readyq_cancel(&c->rq);
	/* Closing the socket also removes it from the hang-up watch. */
	c->ops->close(c, how);
	c->ops = NULL;
	c->fd = -1;
	c->wants = 0;
	c->hup_watched = false;
}

/* --- the hang-up watch ------------------------------------------------------ */

/* A socket is in the watch with no events asked for, edge-triggered: epoll
 * always reports EPOLLERR and EPOLLHUP, so a reset (or both ends shut) on a
 * side we are not reading is seen once, at once, without the busy wake-ups a
 * level-triggered EV_READ would cost on a socket full of unread bytes. */
void
conn_watch_hup(struct conn *c)
{
	struct epoll_event ev = { .events = EPOLLET, .data.ptr = c };

	if (c->hup_watched || c->fd < 0 || c->hupfd < 0 || !conn_open(c))
		return;
	if (epoll_ctl(c->hupfd, EPOLL_CTL_ADD, c->fd, &ev) == 0)
		c->hup_watched = true;
}

static void
hupwatch_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct hupwatch *h = io->data;

	/* One event per call: delivering it may close other conns of the same
	 * connection, whose events a larger batch would still point at (closing
	 * a socket takes it out of the set, events and all). */
	for (int i = 0; i < 64; i++) {
		struct epoll_event ev;
		if (epoll_wait(h->fd, &ev, 1, 0) != 1)
			return;
		struct conn *c = ev.data.ptr;
		if (conn_open(c))
			c->ready(c, CONN_HUP);
	}
}

int
hupwatch_start(struct hupwatch *h, struct ev_loop *loop)
{
	h->fd = epoll_create1(EPOLL_CLOEXEC);
	if (h->fd < 0)
		return -errno;
	ev_io_init(&h->io, hupwatch_cb, h->fd, EV_READ);
	h->io.data = h;
	ev_io_start(loop, &h->io);
	return 0;
}

void
hupwatch_stop(struct hupwatch *h, struct ev_loop *loop)
{
	if (h->fd < 0)
		return;
	ev_io_stop(loop, &h->io);
	close(h->fd);
	h->fd = -1;
}
