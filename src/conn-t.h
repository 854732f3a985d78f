/* conn-t.h: the types of one end of a proxied connection and of its
 * transport ops table. Raw TCP is one transport; TLS and HTTP/2 streams slot
 * in beside it, and nothing above the ops table tests which one it has. */
#ifndef OR_CONN_T_H
#define OR_CONN_T_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "readyq.h"

struct conn;

/* What an owner wants to do with a conn, or was told it now may try. A
 * transport maps each to the socket events that let it progress: for raw TCP
 * reading waits for EV_READ, but a TLS read may need the socket writable
 * (SSL_ERROR_WANT_WRITE) and an HTTP/2 stream waits on its session. */
enum {
	CONN_RD = 1,		/* receive application bytes */
	CONN_WR = 2,		/* send application bytes */
	CONN_HS = 4,		/* finish the handshake (connect, TLS) */
	CONN_HUP = 8,		/* (ready only) the peer reset or hung up while not watched */
};

/* How a conn ends. */
enum conn_close {
	CONN_GRACEFUL,		/* what we sent is delivered, then end of stream: FIN,
				 * close_notify, END_STREAM */
	CONN_ABORT,		/* the peer must see a failure: RST, RST_STREAM */
};

/* A transport. recv/send return bytes moved, 0 for end of stream (recv only),
 * -EAGAIN when they cannot progress now (then want() says on what), or
 * another -errno when the conn failed. */
struct conn_ops {
	const char *name;
	/* Progress the handshake: 0 done, -EAGAIN in progress, -errno failed.
	 * Raw TCP: an outgoing connect completing. */
	int (*handshake)(struct conn *c);
	ssize_t (*recv)(struct conn *c, void *buf, size_t len);
	/* A send that returned -EAGAIN is retried with the same bytes (TLS). */
	ssize_t (*send)(struct conn *c, const void *buf, size_t len);
	/* End of stream on our sending side; reading goes on (half-close). */
	int (*shutdown_wr)(struct conn *c);
	/* The socket events (EV_READ | EV_WRITE, or 0 when something other than
	 * the socket will call back) that would let `what` (one CONN_*) progress. */
	int (*want)(struct conn *c, int what);
	/* Application bytes already received and held by the transport: they
	 * can be read without the socket becoming readable. */
	size_t (*pending)(struct conn *c);
	/* Bytes sent that the peer has not yet acknowledged (all layers). */
	size_t (*unsent)(struct conn *c);
	/* After CONN_HUP: the reset that ended it as -errno, or 0 for a clean end. */
	int (*error)(struct conn *c);
	/* End the conn and free the transport's state; the conn is dead after. */
	void (*close)(struct conn *c, enum conn_close how);
	/* The bytes are the application's own, on a plain socket, so the kernel
	 * may move them through a pipe with splice(2) without us reading them. */
	bool can_splice;
};

/* Called with what the owner may now try (CONN_* bits). */
typedef void conn_ready_fn(struct conn *c, int what);

/* One end. The conn owns its socket watcher; the owner arms it with
 * conn_arm() for what it wants, and is called back through `ready`. */
struct conn {
	int fd;			/* -1 for transports with no socket of their own */
	const struct conn_ops *ops;
	void *tx;		/* the transport's state (SSL *, stream, ...) */
	struct ev_loop *loop;
	conn_ready_fn *ready;
	void *owner;		/* the owner's context, for ready */
	ev_io io;
	int events;		/* what io is armed for */
	int wants;		/* CONN_* the owner armed for */
	int hupfd;		/* the worker's hang-up watch (epoll), or -1 */
	bool hup_watched;	/* fd is registered in hupfd */
	bool connecting;	/* raw: an outgoing connect not yet complete */
	bool connect_seen;	/* the watcher saw it writable and not readable:
				 * connected (a failed connect is EPOLLERR, which
				 * libev reports as both), no SO_ERROR to ask */
	bool shut_wr;		/* raw: our FIN was sent */
	struct readyq_ent rq;	/* in the loop's queue of ready sockets (sched.h) */

	/* The relay's view of this side (flow.c). */
	bool rdead;	/* a read failed (reset): nothing more is read from it */
	bool wdead;	/* a write failed or it was reset: nothing more is written to it */
	bool fin;	/* its end of stream was read: no unread bytes are left in it */
	bool rst_on_close; /* its peer reset: pass the reset on once our bytes are acked */
};

#endif
