/* Unit tests for src/lb.c on hand-built service ports: round-robin order,
 * what is never a candidate, the failover order between attempts and its
 * bound, ztunnel's locality ranks (STRICT, FAILOVER, NETWORK first) and
 * capacity weights. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "lb.h"
#include "istio/workload/workload.pb-c.h"

#define NEP 8

struct fx {
	struct mservice svc;
	struct msvc_port sp;
	struct mworkload wl[NEP];
	struct mendpoint ep[NEP];
	int scopes[6];
	struct lb_state st;
};

static void
fx_init(struct fx *f, size_t n)
{
	memset(f, 0, sizeof(*f));
	f->svc.lb_mode = MLB_ROUND_ROBIN;
	f->svc.lb_scopes = f->scopes;
	f->sp.svc = &f->svc;
	f->sp.eps = f->ep;
	f->sp.neps = n;
	for (size_t i = 0; i < n; i++) {
		struct sockaddr_in *a = &f->ep[i].addr.in4;
		f->wl[i].uid = "w";
		f->wl[i].healthy = true;
		f->wl[i].capacity = 1;
		f->wl[i].node = f->wl[i].cluster_id = f->wl[i].network = "";
		f->wl[i].locality = (struct mlocality){ "", "", "" };
		f->ep[i].wl = &f->wl[i];
		f->ep[i].port = 8080;
		a->sin_family = AF_INET;
		a->sin_port = htons(8080);
		a->sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)i);
	}
}

static void
fx_scopes(struct fx *f, enum mlb_mode mode, size_t n, ...)
{
	va_list ap;
	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		f->scopes[i] = va_arg(ap, int);
	va_end(ap);
	f->svc.lb_mode = mode;
	f->svc.nlb_scopes = n;
}

/* The endpoint index of a new connection's first pick, or -1. */
static int
pick0(struct fx *f, const struct mworkload *src)
{
	struct lb_pick p = { 0 };
	const struct mendpoint *ep = lb_choose(&f->st, NULL, &f->sp, src, &p);
	return ep ? (int)(ep - f->ep) : -1;
}

/* Every attempt of one connection, as endpoint indexes; returns how many. */
static size_t
attempts(struct fx *f, const struct mworkload *src, int *out, size_t max)
{
	struct lb_pick p = { 0 };
	size_t n = 0;
	const struct mendpoint *ep;
	while (n < max && (ep = lb_choose(&f->st, NULL, &f->sp, src, &p))) {
		out[n++] = (int)(ep - f->ep);
		p.attempt++;
	}
	return n;
}

/* The constants lb.h keeps equal the generated enum of workload.proto. */
static void
test_scope_values(void **state)
{
	assert_int_equal(LB_SCOPE_REGION, ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__REGION);
	assert_int_equal(LB_SCOPE_ZONE, ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__ZONE);
	assert_int_equal(LB_SCOPE_SUBZONE, ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__SUBZONE);
	assert_int_equal(LB_SCOPE_NODE, ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NODE);
	assert_int_equal(LB_SCOPE_CLUSTER, ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__CLUSTER);
	assert_int_equal(LB_SCOPE_NETWORK, ISTIO__WORKLOAD__LOAD_BALANCING__SCOPE__NETWORK);
}

/* Consecutive connections take the endpoints in order, wrapping. */
static void
test_round_robin_order(void **state)
{
	struct fx f;
	fx_init(&f, 3);
	for (int i = 0; i < 7; i++)
		assert_int_equal(pick0(&f, NULL), i % 3);
	lb_state_free(&f.st);
}

/* A new snapshot's state carries on the rotation of the one before
 * (lb_state_follow): a reload does not send the next connection back to the
 * first endpoint. Review of issue 8: each reload (and every xDS push to
 * come) restarted every service's round robin at endpoint 0, so with
 * frequent pushes the first endpoints took most of the connections. */
static void
test_round_robin_across_snapshots(void **state)
{
	struct fx f;
	struct lb_state next = { 0 };

	fx_init(&f, 3);
	assert_int_equal(pick0(&f, NULL), 0);
	for (int gen = 1; gen <= 4; gen++) {
		lb_state_follow(&next, &f.st);
		lb_state_free(&f.st);
		f.st = next;
		next = (struct lb_state){ 0 };
		assert_int_equal(pick0(&f, NULL), gen % 3);
	}
	lb_state_free(&f.st);
}

/* Per-port counters: two ports of one model do not share a sequence. */
static void
test_round_robin_per_port(void **state)
{
	struct fx a, b;
	struct lb_state st = { 0 };
	uint32_t rr[2] = { 0, 0 };
	struct lb_pick p;

	fx_init(&a, 3);
	fx_init(&b, 3);
	b.sp.id = 1;
	st.rr = rr;
	st.n = 2;
	p = (struct lb_pick){ 0 };
	assert_ptr_equal(lb_choose(&st, NULL, &a.sp, NULL, &p), &a.ep[0]);
	p = (struct lb_pick){ 0 };
	assert_ptr_equal(lb_choose(&st, NULL, &a.sp, NULL, &p), &a.ep[1]);
	p = (struct lb_pick){ 0 };
	assert_ptr_equal(lb_choose(&st, NULL, &b.sp, NULL, &p), &b.ep[0]);
	assert_int_equal(rr[0], 2);
	assert_int_equal(rr[1], 1);
}

/* No endpoint: NULL (the tunnel's "no healthy upstream"). Capacity 0 and an
 * endpoint without an address of the VIP's family are never picked. The
 * health policy itself is the builder's: what is in eps is admitted. */
static void
test_candidates(void **state)
{
	struct fx f;
	int got[NEP];

	fx_init(&f, 0);
	assert_int_equal(pick0(&f, NULL), -1);
	fx_init(&f, 3);
	f.wl[1].capacity = 0;
	f.ep[2].addr.sa.sa_family = AF_UNSPEC;
	for (int i = 0; i < 4; i++)
		assert_int_equal(pick0(&f, NULL), 0);
	assert_int_equal(attempts(&f, NULL, got, NEP), 1);
	f.wl[0].capacity = 0;
	assert_int_equal(pick0(&f, NULL), -1);
	lb_state_free(&f.st);
}

/* Attempt k takes the next untried endpoint after the first pick, each once,
 * and at most LB_MAX_ATTEMPTS of them. */
static void
test_failover_order(void **state)
{
	struct fx f;
	int got[NEP];

	fx_init(&f, 3);
	(void)pick0(&f, NULL);	/* the next connection starts at 1 */
	assert_int_equal(attempts(&f, NULL, got, NEP), 3);
	assert_int_equal(got[0], 1);
	assert_int_equal(got[1], 2);
	assert_int_equal(got[2], 0);

	fx_init(&f, NEP);
	assert_int_equal(attempts(&f, NULL, got, NEP), LB_MAX_ATTEMPTS);
	for (int i = 0; i < LB_MAX_ATTEMPTS; i++)
		assert_int_equal(got[i], i);
	lb_state_free(&f.st);
}

/* STRICT: only endpoints matching every scope; none: NULL. */
static void
test_strict(void **state)
{
	struct fx f;
	struct mworkload src = { .node = "", .cluster_id = "", .network = "",
		.locality = { "eu", "eu-1", "" } };
	int got[NEP];

	fx_init(&f, 4);
	fx_scopes(&f, MLB_STRICT, 2, LB_SCOPE_REGION, LB_SCOPE_ZONE);
	f.wl[0].locality = (struct mlocality){ "us", "eu-1", "" };
	f.wl[1].locality = (struct mlocality){ "eu", "eu-1", "" };
	f.wl[2].locality = (struct mlocality){ "eu", "eu-2", "" };
	f.wl[3].locality = (struct mlocality){ "eu", "eu-1", "" };
	for (int i = 0; i < 4; i++)
		assert_int_equal(pick0(&f, &src), i % 2 ? 3 : 1);
	/* Retries stay within the matching set. */
	assert_int_equal(attempts(&f, &src, got, NEP), 2);
	src.locality.zone = "eu-3";
	assert_int_equal(pick0(&f, &src), -1);
	/* An unknown source has no locality: only endpoints without one match. */
	assert_int_equal(pick0(&f, NULL), -1);
	f.wl[2].locality = (struct mlocality){ "", "", "" };
	assert_int_equal(pick0(&f, NULL), 2);
	lb_state_free(&f.st);
}

/* FAILOVER: the best rank only for the first pick (ztunnel); retries go
 * through the rest of that rank, then the next ranks in order. */
static void
test_failover_ranks(void **state)
{
	struct fx f;
	struct mworkload src = { .node = "n1", .cluster_id = "", .network = "",
		.locality = { "eu", "eu-1", "a" } };
	int got[NEP];

	fx_init(&f, 5);
	fx_scopes(&f, MLB_FAILOVER, 3, LB_SCOPE_REGION, LB_SCOPE_ZONE, LB_SCOPE_SUBZONE);
	f.wl[0].locality = (struct mlocality){ "us", "us-1", "a" };	/* rank 0 */
	f.wl[1].locality = (struct mlocality){ "eu", "eu-2", "a" };	/* rank 1 */
	f.wl[2].locality = (struct mlocality){ "eu", "eu-1", "b" };	/* rank 2 */
	f.wl[3].locality = (struct mlocality){ "eu", "eu-1", "a" };	/* rank 3 */
	f.wl[4].locality = (struct mlocality){ "eu", "eu-1", "a" };	/* rank 3 */
	assert_int_equal(pick0(&f, &src), 3);
	assert_int_equal(pick0(&f, &src), 4);
	assert_int_equal(attempts(&f, &src, got, NEP), 5);
	assert_int_equal(got[0], 3);
	assert_int_equal(got[1], 4);
	assert_int_equal(got[2], 2);
	assert_int_equal(got[3], 1);
	assert_int_equal(got[4], 0);
	/* A mismatch stops the count: region miss, zone match is still rank 0. */
	f.wl[3].locality = (struct mlocality){ "us", "eu-1", "a" };
	f.wl[4].locality = (struct mlocality){ "us", "eu-1", "a" };
	assert_int_equal(pick0(&f, &src), 2);
	lb_state_free(&f.st);
}

/* NETWORK first: same-network endpoints rank above all others, whatever the
 * other scopes say; a network miss goes on to the other scopes. */
static void
test_network_first(void **state)
{
	struct fx f;
	struct mworkload src = { .node = "", .cluster_id = "", .network = "net1",
		.locality = { "eu", "", "" } };

	fx_init(&f, 3);
	fx_scopes(&f, MLB_FAILOVER, 2, LB_SCOPE_NETWORK, LB_SCOPE_REGION);
	f.wl[0].network = "net2";
	f.wl[0].locality.region = "eu";		/* miss, then region: rank 1 */
	f.wl[1].network = "net1";
	f.wl[1].locality.region = "us";		/* network: 1 + adjust 1 = 2 */
	f.wl[2].network = "net2";		/* rank 0 */
	assert_int_equal(pick0(&f, &src), 1);
	f.wl[1].network = "net3";
	assert_int_equal(pick0(&f, &src), 0);
	lb_state_free(&f.st);
}

/* Capacities: each endpoint's share of first picks follows its capacity. */
static void
test_capacity(void **state)
{
	struct fx f;
	int count[3] = { 0, 0, 0 };

	fx_init(&f, 3);
	f.wl[0].capacity = 1;
	f.wl[1].capacity = 3;
	f.wl[2].capacity = 4000000000u;	/* sums past 32 bits */
	for (int i = 0; i < 1000; i++)
		count[pick0(&f, NULL)]++;
	assert_true(count[2] > 990);
	fx_init(&f, 3);
	f.wl[0].capacity = 1;
	f.wl[1].capacity = 3;
	f.wl[2].capacity = 6;
	memset(count, 0, sizeof(count));
	for (int i = 0; i < 10000; i++)
		count[pick0(&f, NULL)]++;
	assert_true(count[0] > 900 && count[0] < 1100);
	assert_true(count[1] > 2850 && count[1] < 3150);
	assert_true(count[2] > 5850 && count[2] < 6150);
	lb_state_free(&f.st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scope_values),
		cmocka_unit_test(test_round_robin_order),
		cmocka_unit_test(test_round_robin_across_snapshots),
		cmocka_unit_test(test_round_robin_per_port),
		cmocka_unit_test(test_candidates),
		cmocka_unit_test(test_failover_order),
		cmocka_unit_test(test_strict),
		cmocka_unit_test(test_failover_ranks),
		cmocka_unit_test(test_network_first),
		cmocka_unit_test(test_capacity),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
