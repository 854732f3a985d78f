/* lb: which endpoint of a service port a connection goes to: round robin by
 * default, the locality-aware modes of istio.workload.LoadBalancing as
 * ztunnel applies them, capacity weights, and the next endpoint when a
 * connect fails. Per-worker state, no atomics. */
#ifndef OR_LB_H
#define OR_LB_H

#include <stdint.h>

#include "model.h"

/* istio.workload.LoadBalancing.Scope (workload.proto); model.h keeps the
 * values as ints, test_lb checks these against the generated enum. */
enum lb_scope {
	LB_SCOPE_REGION = 1,
	LB_SCOPE_ZONE = 2,
	LB_SCOPE_SUBZONE = 3,
	LB_SCOPE_NODE = 4,
	LB_SCOPE_CLUSTER = 5,
	LB_SCOPE_NETWORK = 6,
};

/* How many endpoints one connection tries before it is reset. The attempts
 * share one connect timeout (tunnel.c, attempt_ms), so more attempts means
 * less time for each. Envoy's default retry policy for TCP is one attempt,
 * ztunnel makes one; five covers a rolling restart that took down a few
 * endpoints at once. */
#define LB_MAX_ATTEMPTS 5

/* One worker's round-robin counters for one model: rr[msvc_port.id]. Lives
 * in the worker's view of a snapshot (struct wsnap), so only that worker's
 * thread touches it. Allocated on the first pick (the model is immutable, so
 * its size never changes); on OOM picks fall back to a per-state counter. */
struct lb_state {
	uint32_t *rr;
	uint32_t n;
	uint32_t fallback;
	uint32_t base;		/* added to every ticket: where the states before left off */
	uint32_t taken;		/* tickets taken from this state */
};

void lb_state_free(struct lb_state *st);

/* Makes st, the state of a worker's new snapshot, carry on where prev (its
 * state for the snapshot before) left off, so that a reload does not send
 * every service's next connection back to its first endpoint. */
void lb_state_follow(struct lb_state *st, const struct lb_state *prev);

/* One connection's choice, kept on the tunnel for its retries. */
struct lb_pick {
	uint32_t start;		/* the round-robin ticket of attempt 0 */
	uint8_t attempt;	/* 0 for the first pick */
	uint8_t max;		/* attempts allowed: min(candidates, LB_MAX_ATTEMPTS) */
};

/* The endpoint for attempt p->attempt of one connection to port sp, from the
 * source workload src (NULL: unknown, taken as a workload with no locality
 * on the default network). Attempt 0 takes a round-robin ticket from st and
 * fills p; later attempts (the caller increments p->attempt after a failed
 * connect) take the next untried endpoint: the rest of the best rank first,
 * then (FAILOVER only) the next ranks. Returns the endpoint, or NULL when
 * there is none (no endpoint admitted, STRICT found no match, or the
 * attempts are used up). */
const struct mendpoint *lb_choose(struct lb_state *st, const struct model *m,
    const struct msvc_port *sp, const struct mworkload *src, struct lb_pick *p);

#endif
