/* lb: endpoint choice for a service port (round robin, locality ranks as
 * ztunnel's load_balance(), capacity weights, failover between attempts). */
#include "autoconfig.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "lb.h"

void
lb_state_free(struct lb_state *st)
{
	free(st->rr);
	st->rr = NULL;
	st->n = 0;
}

void
lb_state_follow(struct lb_state *st, const struct lb_state *prev)
{
	st->base = prev->base + prev->taken;
}

/* The next round-robin ticket of port sp. The new model's port ids are its
 * own, so a port's count cannot carry over; the worker's running total
 * (base) can, which keeps a service's rotation going across reloads. */
static uint32_t
lb_ticket(struct lb_state *st, const struct model *m, const struct msvc_port *sp)
{
	if (!st->rr && m) {
		uint32_t n = model_nports(m);
		if (n && (st->rr = calloc(n, sizeof(*st->rr))))
			st->n = n;
	}
	st->taken++;
	if (sp->id < st->n)
		return st->base + st->rr[sp->id]++;
	return st->base + st->fallback++;
}

static bool
str_eq(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

/* What an unknown source compares as: a workload with nothing set. */
static const struct mworkload lb_no_source = {
	.locality = { "", "", "" },
};

/* ztunnel's rank of an endpoint for a locality-aware mode (state.rs,
 * load_balance): one point per routing preference matched, in order, stopping
 * at the first miss. When NETWORK comes first it is a gate instead: a
 * network match lifts the endpoint above every endpoint of another network
 * (rank += len - 1) and a miss skips to the next scope without stopping.
 * STRICT admits only endpoints matching every scope. -1: not a candidate. */
static int
lb_rank(const struct mservice *svc, const struct mworkload *src, const struct mworkload *wl)
{
	size_t n = svc->nlb_scopes, i;
	bool network_first = n > 0 && svc->lb_scopes[0] == LB_SCOPE_NETWORK;
	int rank = 0, adjust = 0;

	for (i = 0; i < n; i++) {
		bool match;
		switch (svc->lb_scopes[i]) {
		case LB_SCOPE_REGION: match = str_eq(src->locality.region, wl->locality.region); break;
		case LB_SCOPE_ZONE: match = str_eq(src->locality.zone, wl->locality.zone); break;
		case LB_SCOPE_SUBZONE: match = str_eq(src->locality.subzone, wl->locality.subzone); break;
		case LB_SCOPE_NODE: match = str_eq(src->node, wl->node); break;
		case LB_SCOPE_CLUSTER: match = str_eq(src->cluster_id, wl->cluster_id); break;
		case LB_SCOPE_NETWORK:
			match = str_eq(src->network, wl->network);
			if (network_first) {
				if (!match)
					continue;
				adjust = (int)n - 1;
			}
			break;
		default:
			/* The builder refuses unknown scopes; one that got here
			 * matches nothing, which is what a miss means. */
			match = false;
			break;
		}
		if (!match)
			break;
		rank++;
	}
	if (svc->lb_mode == MLB_STRICT && rank != (int)n)
		return -1;
	return rank + adjust;
}

/* -1 when endpoint i cannot be picked at all: capacity 0 (ztunnel's weighted
 * choice never takes a zero weight) or no address of the VIP's family. */
static int
ep_rank(const struct msvc_port *sp, size_t i, const struct mworkload *src)
{
	const struct mendpoint *ep = &sp->eps[i];
	const struct mservice *svc = sp->svc;

	if (!ep->wl || ep->wl->capacity == 0 || ep->addr.sa.sa_family == AF_UNSPEC)
		return -1;
	if (!svc || (svc->lb_mode != MLB_STRICT && svc->lb_mode != MLB_FAILOVER))
		return 0;
	return lb_rank(svc, src, ep->wl);
}

/* One rank class: the endpoints of rank r, their count and capacities. */
struct lb_class {
	int rank;
	size_t count;
	uint64_t weight;
	bool equal;		/* every capacity the same: plain round robin */
};

/* The best class below rank `below`; false when there is none. */
static bool
lb_class_below(const struct msvc_port *sp, const struct mworkload *src, int below, struct lb_class *c)
{
	uint32_t cap0 = 0;

	*c = (struct lb_class){ .rank = -1 };
	for (size_t i = 0; i < sp->neps; i++) {
		int r = ep_rank(sp, i, src);
		if (r < 0 || r >= below)
			continue;
		if (r > c->rank) {
			c->rank = r;
			c->count = 0;
			c->weight = 0;
			c->equal = true;
			cap0 = sp->eps[i].wl->capacity;
		}
		if (r == c->rank) {
			c->count++;
			c->weight += sp->eps[i].wl->capacity;
			c->equal = c->equal && sp->eps[i].wl->capacity == cap0;
		}
	}
	return c->rank >= 0;
}

/* Endpoint index of the j-th member (in index order) of class c. */
static size_t
lb_member(const struct msvc_port *sp, const struct mworkload *src, const struct lb_class *c, size_t j)
{
	for (size_t i = 0; i < sp->neps; i++)
		if (ep_rank(sp, i, src) == c->rank && j-- == 0)
			return i;
	return 0;	/* not reached: j < c->count */
}

/* Which member the ticket starts at. Equal capacities: ticket mod count, so
 * consecutive connections take the endpoints in order. Otherwise the ticket's
 * point in a Weyl sequence (its multiple of the golden ratio, mod 1), which
 * is evenly spread over [0, 1) for consecutive tickets, scaled to the total
 * capacity: each member's share of tickets approaches its capacity's share
 * (ztunnel draws the same weights at random). */
static size_t
lb_start(const struct msvc_port *sp, const struct mworkload *src, const struct lb_class *c,
    uint32_t ticket)
{
	if (c->equal)
		return ticket % c->count;
	double u = (double)(uint32_t)(ticket * 2654435769u) / 4294967296.0;
	uint64_t x = (uint64_t)(u * (double)c->weight), acc = 0;
	size_t j = 0;
	for (size_t i = 0; i < sp->neps; i++) {
		if (ep_rank(sp, i, src) != c->rank)
			continue;
		acc += sp->eps[i].wl->capacity;
		if (x < acc)
			return j;
		j++;
	}
	return c->count - 1;	/* rounding at the top end */
}

const struct mendpoint *
lb_choose(struct lb_state *st, const struct model *m, const struct msvc_port *sp,
    const struct mworkload *src, struct lb_pick *p)
{
	struct lb_class c;
	size_t k;
	bool first = true;
	int below = INT_MAX;

	if (!src)
		src = &lb_no_source;
	if (p->attempt == 0) {
		size_t total = 0;
		for (size_t i = 0; i < sp->neps; i++)
			total += ep_rank(sp, i, src) >= 0;
		/* Only FAILOVER falls through to lower ranks (below); the other
		 * modes have one class, so every candidate is in it. */
		p->max = (uint8_t)(total < LB_MAX_ATTEMPTS ? total : LB_MAX_ATTEMPTS);
		if (total == 0)
			return NULL;
		p->start = lb_ticket(st, m, sp);
	}
	if (p->attempt >= p->max)
		return NULL;
	k = p->attempt;
	while (lb_class_below(sp, src, below, &c)) {
		if (k < c.count) {
			size_t s = first ? lb_start(sp, src, &c, p->start) : p->start % c.count;
			return &sp->eps[lb_member(sp, src, &c, (s + k) % c.count)];
		}
		/* ztunnel picks only from the best rank; a connect failure is
		 * ours to handle, and FAILOVER means "prefer", so the next
		 * rank is tried. STRICT and round robin have one class. */
		if (!sp->svc || sp->svc->lb_mode != MLB_FAILOVER)
			return NULL;
		k -= c.count;
		below = c.rank;
		first = false;
	}
	return NULL;
}
