/* conn: one end of a proxied connection: the raw TCP transport, arming for
 * what the owner wants, and the worker's hang-up watch. */
#ifndef OR_CONN_H
#define OR_CONN_H

#include "conn-t.h"

extern const struct conn_ops raw_ops;

/* Set c up on loop: fd (or -1), transport ops, owner and its callback. The
 * hang-up watch hupfd may be -1. Nothing is armed yet. */
void conn_init(struct conn *c, struct ev_loop *loop, int fd, const struct conn_ops *ops,
    conn_ready_fn *ready, void *owner, int hupfd);

/* Arm c for what the owner wants now (CONN_RD | CONN_WR | CONN_HS, 0 for
 * nothing). Bytes the transport already holds (pending) make it call back at
 * once for CONN_RD, as the socket may never become readable for them. */
void conn_arm(struct conn *c, int wants);

/* Watch c for a reset or hang-up while nothing else watches it (a side whose
 * reading is paused by back-pressure, or whose end of stream was read). The
 * owner is called with CONN_HUP. Idempotent; needs a socket and a hupfd. */
void conn_watch_hup(struct conn *c);

/* End c (see enum conn_close) and disarm it. Safe on a closed conn. */
void conn_close(struct conn *c, enum conn_close how);

static inline bool
conn_open(const struct conn *c)
{
	return c->ops != NULL;
}

/* A worker's hang-up watch: an edge-triggered epoll set in which sockets are
 * registered for errors and hang-ups only, itself watched by the loop. */
struct hupwatch {
	int fd;
	ev_io io;
};

/* Open h and start watching it on loop; 0 or -errno (then h->fd is -1). */
int hupwatch_start(struct hupwatch *h, struct ev_loop *loop);
void hupwatch_stop(struct hupwatch *h, struct ev_loop *loop);

#endif
