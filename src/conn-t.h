/* conn-t.h: the types of one socket end of a proxied connection and of its
 * transport ops table (raw now; TLS and HTTP/2 streams slot in beside it). */
#ifndef OR_CONN_T_H
#define OR_CONN_T_H

#include <ev.h>
#include <stdbool.h>
#include <sys/types.h>

struct conn;

/* A transport. The tunnel and codecs call these and never test which one it
 * is. recv/send return bytes moved, 0 for end of stream (recv), or -errno
 * (-EAGAIN when the socket would block). */
struct conn_ops {
	const char *name;
	ssize_t (*recv)(struct conn *c, void *buf, size_t len);
	ssize_t (*send)(struct conn *c, const void *buf, size_t len);
	int (*shutdown_wr)(struct conn *c);
	/* The bytes are the application's own, on a plain socket, so the kernel
	 * may move them through a pipe with splice(2) without us reading them. */
	bool can_splice;
};

/* One end: a socket, its transport and its libev watcher. `events` mirrors
 * what the watcher is armed for, so re-arming is skipped when nothing changed. */
struct conn {
	int fd;
	const struct conn_ops *ops;
	ev_io io;
	int events;
	bool rdead;	/* a read failed (reset): nothing more is read from it */
	bool wdead;	/* a write failed or it was reset: nothing more is written to it */
	bool fin;	/* its end of stream was read: no unread bytes are left in it */
	bool rst_on_close; /* its peer reset: pass the reset on once our bytes are acked */
	bool lingering;	/* the tunnel is over; waiting before close (see tunnel_end) */
};

#endif
