/* conn: transports for one socket end (raw TCP now) and watcher arming. */
#include "autoconfig.h"

#include <errno.h>
#include <sys/socket.h>

#include "conn.h"

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
	return shutdown(c->fd, SHUT_WR) < 0 ? -errno : 0;
}

const struct conn_ops raw_ops = {
	.name = "raw",
	.recv = raw_recv,
	.send = raw_send,
	.shutdown_wr = raw_shutdown_wr,
	.can_splice = true,
};

void
conn_want(struct ev_loop *loop, struct conn *c, int events)
{
	if (c->events == events)
		return;
	if (c->events)
		ev_io_stop(loop, &c->io);
	c->events = events;
	if (events) {
		ev_io_set(&c->io, c->fd, events);
		ev_io_start(loop, &c->io);
	}
}
