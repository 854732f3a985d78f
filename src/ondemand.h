/* ondemand: on-demand workload discovery (xds.onDemand). A connection to a
 * destination the snapshot does not know waits while the control thread
 * subscribes to "<network>/<ip>" (xds_subscribe); concurrent connections to
 * one destination share one lookup; the answer (or xds.onDemandTimeout,
 * then mesh.outboundTrafficPolicy) releases them. What was looked up stays
 * subscribed in a bounded cache (xds.onDemandCacheSize, least recently used
 * first; xds.onDemandIdle) and is unsubscribed when evicted. HACKING.md,
 * "On-demand discovery". */
#ifndef OR_ONDEMAND_H
#define OR_ONDEMAND_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

/* A negative answer (not found, or the lookup timed out) is kept this long:
 * connections to that address go on as unknown at once, and istiod is not
 * asked again before it passes (a scan of unknown addresses must not become
 * a flood of subscriptions). */
#define ONDEMAND_NEGATIVE_S 5.0
/* Lookups queued from the workers to the control thread, at most; a
 * connection that finds the queue full goes on as unknown at once. */
#define ONDEMAND_QUEUE_MAX 1024

/* Control thread. Starts when cfg has xds.onDemand and an xDS server (and
 * delta: under state of the world there is no subscription by name, so it
 * stays off with a warning). Call before the workers start (they read
 * ondemand_enabled() without a barrier of their own). 0 or -ENOMEM. */
int ondemand_start(struct ev_loop *loop, const struct config *cfg);
void ondemand_stop(void);
/* Whether on demand runs: a plain load (set before the workers start,
 * cleared after they stop), so the data path pays one branch. */
extern bool ondemand_on;
static inline bool
ondemand_enabled(void)
{
	return ondemand_on;
}

/* The xDS client, after each Address response is applied and published:
 * the names and aliases found, and the names removed (xds_result). */
void ondemand_note(const char *const *found, size_t nfound, const char *const *gone, size_t ngone);

/* The lookup name of an address: "<network>/<ip>" (ztunnel's and istiod's
 * alias form; network may be ""). An IPv4-mapped IPv6 address is named as
 * the IPv4 address (the model keys it so). Returns snprintf's length, -1
 * for a family that is neither. */
int ondemand_name(char *out, size_t len, const char *network, const struct sockaddr_storage *a);

/* ---- The data path (worker threads) ---- */

/* An address as the cache keys it: family 4 or 6, IPv4 in the first 4 bytes. */
struct od_key {
	uint8_t fam;
	uint8_t addr[16];
};

/* A connection waiting for a lookup (the tunnel's; ondemand links it in its
 * worker's list). resume runs on the worker's thread, at most once, after
 * the worker has adopted the snapshot that holds the answer; found says
 * whether the address is now known (else: not found, or the lookup timed
 * out). The waiter is unlinked before resume is called. */
struct od_wait {
	struct od_wait *prev, *next;
	struct od_key k;
	unsigned worker;
	void (*resume)(struct od_wait *wt, bool found);
	void *owner;
};

/* A connection on worker wid to dst, which its snapshot does not know.
 * 0: wt waits (resume comes, or call ondemand_cancel). -ENOENT: a negative
 * answer for dst is cached: go on as unknown. -EAGAIN: the queue to the
 * control thread is full: go on as unknown (counted). -EINVAL: no such
 * worker or family. now: the worker loop's ev_now. */
int ondemand_wait(struct od_wait *wt, unsigned wid, const struct sockaddr_storage *dst, double now);
/* The waiting connection ends (timeout, reset, worker stop): unlinked. */
void ondemand_cancel(struct od_wait *wt);
/* A connection resolved to dst, known to its snapshot: its last-use stamp
 * (a relaxed store into a table the control thread's sweep reads; written
 * only when the second changed). No lock, no allocation. */
void ondemand_touch(const struct sockaddr_storage *dst, double now);

/* ---- The cache, for tests (control thread) ---- */

/* The state of the lookup of name ("<network>/<ip>"): */
enum od_state { OD_NONE, OD_LOOKING, OD_FOUND, OD_MISSING };
enum od_state ondemand_state(const char *name);
/* How many names are subscribed on demand now. */
size_t ondemand_cached(void);
/* Run the periodic sweep (timeouts, idle expiry, negative expiry) at now. */
void ondemand_sweep(double now);
/* Take the workers' queued lookups now, at time now (the ev_async's work). */
void ondemand_drain(double now);
/* Where answers go (default: worker_post to every worker). A test hook. */
struct od_answer {
	struct od_key k;
	bool found;
	double neg_until;	/* not found: cached until then (0: not cached) */
};
typedef void ondemand_deliver_fn(const struct od_answer *a, size_t n);
void ondemand_set_deliver(ondemand_deliver_fn *fn);
/* ondemand_note's clock (a test hook; 0: the control loop's ev_now). */
void ondemand_set_time(double now);
/* The answers for worker wid, as its mailbox delivers them (default
 * delivery calls it on each worker's thread). */
void ondemand_answers(unsigned wid, const struct od_answer *a, size_t n, double now);

#endif
