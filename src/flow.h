/* flow: the relay engine. It moves bytes both ways between two conns of any
 * transport, with back-pressure, half-close, resets passed on as resets, an
 * idle timeout and a lingering close. It knows no tunnel, no TLS and no
 * HTTP/2: conns call it back through their readiness callback, and it tells
 * its owner when both conns are closed. */
#ifndef OR_FLOW_H
#define OR_FLOW_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "conn-t.h"
#include "pool.h"

/* One direction. Bytes in flight sit in a pipe (splice) or a chunk (ops
 * recv/send), taken from the worker's pool only while inflight > 0. */
struct flow {
	struct pipe *pipe;
	struct chunk *chunk;
	size_t inflight;
	bool full;	/* the destination cannot take more now: stop reading the source */
	bool eof;	/* nothing more will be read from the source */
	bool done;	/* end of stream delivered (shutdown) or flow aborted */
	bool no_splice;	/* no pipe could be had: this flow copies through a chunk */
	bool bulk;	/* the last read was large: splice the next burst */
};

/* Why a relay ended early (struct relay's ended): a side was reset (or its
 * write failed) while forwarding, or the idle timeout closed it. */
enum {
	RELAY_END_DS_RESET = 1,
	RELAY_END_US_RESET = 2,
	RELAY_END_IDLE = 4,
};

enum relay_state {
	RELAY_IDLE,		/* not started: the conns belong to the pipeline */
	RELAY_FORWARDING,	/* bytes flow */
	RELAY_LINGER,		/* both flows done; a side waits until closing it loses nothing */
	RELAY_DONE,		/* both conns closed */
};

struct relay;
/* Both conns are closed and every buffer is back in the pool: the owner may
 * free the relay. Called once; the relay is not touched after. */
typedef void relay_done_fn(struct relay *r);

/* Two conns and the two flows between them. ds is the side that called us
 * (downstream), us the side we called (upstream): metrics are named so. */
struct relay {
	unsigned worker_id;		/* log tag "[w%u c%llu]" of the owner */
	unsigned long long id;
	enum relay_state state;
	struct conn ds, us;
	struct flow d2u, u2d;
	struct ev_loop *loop;
	struct pool *pool;
	uint64_t *stats;		/* the listener's LM_* counters */
	ev_timer timer;			/* idle timeout (and the hang-up watch's delay), then linger ticks */
	ev_tstamp idle;			/* seconds, 0 = none */
	ev_tstamp last_io;
	ev_tstamp linger_until;
	bool hup_due;			/* a side waits to be put in the hang-up watch */
	/* Bytes of this relay: read from downstream (and sent on upstream), and
	 * written to downstream; for telemetry and access logs. */
	uint64_t rx_bytes, tx_bytes;
	uint8_t ended;			/* RELAY_END_* bits: how it ended, for the owner's response flags */
	relay_done_fn *done;
};

const char *relay_state_str(enum relay_state s);

/* How long a side may be neither read nor written before it goes into the
 * hang-up watch (seconds; 0.05). Tests change it. */
extern ev_tstamp flow_hup_delay;

/* Prepare r (zeroed by the caller) on loop; nothing runs until relay_start. */
void relay_init(struct relay *r, struct ev_loop *loop, struct pool *pool, uint64_t *stats,
    relay_done_fn *done);

/* Before relay_start, while the upstream connects: read what the
 * downstream (past its handshake) already sent into the d2u flow, so that it
 * can leave with the connect instead of events later (HAProxy's speculative
 * I/O). Returns bytes read, 0 at its end of stream, -EAGAIN for nothing (or
 * bytes already held), another -errno when the downstream failed. Whatever
 * is held is kept across connect attempts and dropped by relay_abort. */
ssize_t relay_prefetch(struct relay *r);

/* Before relay_start: send what d2u holds on the upstream, which may still
 * be connecting. Bytes sent (then the upstream is connected), -EAGAIN (not
 * yet, or nothing held), or another -errno (the connect failed). */
ssize_t relay_push(struct relay *r);

/* Both conns are open and past their handshakes: take them over (their
 * readiness callbacks now lead here) and start moving bytes; what d2u holds
 * goes to the upstream at once. idle: seconds without a byte either way
 * before both are closed, 0 for never. Returns false when the relay ended
 * at once (r is gone then: done was called). */
bool relay_start(struct relay *r, ev_tstamp idle);

/* End at once: both sides see a reset (a truncated stream must never look
 * complete), buffers go back to the pool, then done. For failures mid-stream,
 * the end of a drain, and worker stop. Also before relay_start. */
void relay_abort(struct relay *r);

#endif
