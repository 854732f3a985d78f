/* tunnel: one captured TCP connection carried to its original destination:
 * upstream connect, then bytes both ways with half-close, back-pressure,
 * connect and idle timeouts; splice(2) when both ends are plain sockets. */
#ifndef OR_TUNNEL_H
#define OR_TUNNEL_H

#include <stdbool.h>
#include <sys/socket.h>

#include "conn-t.h"
#include "metrics.h"
#include "pool.h"

struct worker;
struct wsnap;

enum tunnel_state {
	TUN_CONNECTING,		/* upstream connect in progress; downstream not read */
	TUN_ESTABLISHED,	/* bytes flow */
	TUN_LINGER,		/* both flows done; a side waits until closing it loses nothing */
	TUN_CLOSED,
};

/* One direction. Bytes in flight sit in a pipe (splice) or a chunk (ops
 * recv/send), taken from the worker's pool only while inflight > 0. */
struct flow {
	struct pipe *pipe;
	struct chunk *chunk;
	size_t inflight;
	bool full;	/* the pipe refused more: wait for the output to drain */
	bool eof;	/* nothing more will be read from the source */
	bool done;	/* end of stream delivered (shutdown) or flow aborted */
	bool no_splice;	/* no pipe could be had: this flow copies through a chunk */
	bool bulk;	/* the last read was large: splice the next burst */
};

struct tunnel {
	unsigned worker_id;		/* log tag "[w%u c%llu]" */
	unsigned long long id;
	struct worker *w;
	enum listener_kind lst;
	enum tunnel_state state;
	struct conn ds, us;		/* downstream (accepted), upstream (connected) */
	struct flow d2u, u2d;
	ev_timer timer;			/* connect timeout, then idle timeout */
	ev_tstamp last_io;
	ev_tstamp linger_until;		/* TUN_LINGER deadline */
	struct wsnap *snap;		/* the configuration this connection started with */
	struct sockaddr_storage dst;	/* original destination */
	struct tunnel *prev, *next;	/* worker's list */
};

const char *tunnel_state_str(enum tunnel_state s);

/* Take over an accepted socket fd from listener kind on worker w: find the
 * original destination, connect, and carry the bytes. Never fails to the
 * caller: a connection that cannot be served is closed and counted. */
void tunnel_accept(struct worker *w, enum listener_kind kind, int fd);

/* tunnel_accept() with the destination given: for tests and for callers
 * that chose the destination themselves. Returns the tunnel, or NULL when it
 * was closed at once (the failure is counted). */
struct tunnel *tunnel_start(struct worker *w, enum listener_kind kind, int fd,
    const struct sockaddr_storage *dst);

/* Close every tunnel of w (worker stop). */
void tunnel_close_all(struct worker *w);

#endif
