/* authz: L4 authorization with ztunnel's semantics, compiled per snapshot. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "authz.h"
#include "identity.h"
#include "istio/security/authorization.pb-c.h"
#include "istio/workload/workload.pb-c.h"

#define S(x) ((x) ? (x) : "")

/* ---- The slot registry (names written by the control thread only) ---- */

static char *slot_names[AUTHZ_SLOTS];
static unsigned nslots = 1;	/* slot 0 is NONE */
/* Per slot, the compiled policies (of live struct authz) that count into
 * it: atomic, taken by authz_build (control thread), dropped by
 * authz_free (whichever thread frees the snapshot, with release order). A
 * worker counts only through a snapshot it holds, so at 0 nobody can
 * count into the slot any more. */
static unsigned slot_refs[AUTHZ_SLOTS];
/* slot_names[] against the readers of another thread (scrapes): a slot's
 * name changes when the slot is reused. */
static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static void (*slot_reset)(unsigned slot);

bool
authz_slot_name(unsigned slot, char *buf, size_t len)
{
	bool ok = false;

	if (slot == AUTHZ_SLOT_NONE || slot == AUTHZ_SLOT_OVERFLOW) {
		snprintf(buf, len, "%s", slot == AUTHZ_SLOT_NONE ? "" : "overflow");
		return true;
	}
	pthread_mutex_lock(&slot_lock);
	if (slot < __atomic_load_n(&nslots, __ATOMIC_ACQUIRE) && slot_names[slot]) {
		snprintf(buf, len, "%s", slot_names[slot]);
		ok = true;
	}
	pthread_mutex_unlock(&slot_lock);
	return ok;
}

unsigned
authz_nslots(void)
{
	return __atomic_load_n(&nslots, __ATOMIC_ACQUIRE);
}

bool
authz_full(void)
{
	return __atomic_load_n(&nslots, __ATOMIC_ACQUIRE) >= AUTHZ_SLOT_OVERFLOW;
}

void
authz_set_slot_reset(void (*fn)(unsigned slot))
{
	slot_reset = fn;
}

/* The slot of name, assigned on first sight (linear: 1,000 names at
 * snapshot build, control thread). With every slot assigned, one no live
 * snapshot's policy counts into (refs 0: its policy is gone from every
 * snapshot still held) is reused: its counters are reset first (the
 * hook: the workers' counters; no worker writes them any more), then its
 * name replaced. Else the overflow slot. */
static unsigned
slot_of(const char *name)
{
	unsigned i, n = nslots;
	char *dup, *old;

	for (i = 1; i < n; i++)
		if (strcmp(slot_names[i], name) == 0)
			return i;
	if (!(dup = strdup(name)))
		return AUTHZ_SLOT_OVERFLOW;
	if (n < AUTHZ_SLOT_OVERFLOW) {
		pthread_mutex_lock(&slot_lock);
		slot_names[n] = dup;
		__atomic_store_n(&nslots, n + 1, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&slot_lock);
		return n;
	}
	for (i = 1; i < n; i++)
		if (__atomic_load_n(&slot_refs[i], __ATOMIC_ACQUIRE) == 0)
			break;
	if (i == n) {
		free(dup);
		return AUTHZ_SLOT_OVERFLOW;
	}
	if (slot_reset)
		slot_reset(i);
	pthread_mutex_lock(&slot_lock);
	old = slot_names[i];
	slot_names[i] = dup;
	pthread_mutex_unlock(&slot_lock);
	free(old);
	return i;
}

static void
slot_hold(unsigned slot, int d)
{
	if (slot != AUTHZ_SLOT_NONE && slot != AUTHZ_SLOT_OVERFLOW)
		__atomic_add_fetch(&slot_refs[slot], (unsigned)d, __ATOMIC_RELEASE);
}

const char *
authz_verdict_str(enum authz_verdict v)
{
	return v == AUTHZ_DENY ? "deny" : "allow";
}

const char *
authz_result_why(const struct authz_result *res)
{
	if (res->policy)
		return res->policy;
	if (res->no_workload)
		return "(no local workload known, and policies exist that could bind it)";
	return res->verdict == AUTHZ_DENY ? "(no ALLOW policy matched)" : "(no policy)";
}

/* ---- The compiled form ---- */

enum { SM_EXACT, SM_PREFIX, SM_SUFFIX, SM_PRESENCE };

struct smatch {
	uint8_t kind;
	const char *s;
	size_t len;
};

struct cidr {
	sa_family_t family;
	uint8_t bits;
	uint8_t addr[16];
};

struct samatch {
	const char *ns, *sa;
};

/* Each kind: the positive values and the negative ones. */
struct amatch {
	struct smatch *ns[2], *pr[2];
	size_t nns[2], npr[2];
	struct cidr *src[2], *dstip[2];
	size_t nsrc[2], ndstip[2];
	uint16_t *port[2];
	size_t nport[2];
	struct samatch *sa[2];
	size_t nsa[2];
	bool empty;	/* no field set: ztunnel skips it (never matches) */
};

struct aclause {
	struct amatch *m;
	size_t n;
};

struct agroup {
	struct aclause *c;
	size_t n;
};

struct apolicy {
	const struct mres *res;
	const char *name;	/* "ns/name" (the resource's) */
	const char *ns;
	int scope, action;	/* Istio__Security__Scope / Action values */
	bool dry_run;
	unsigned slot;
	struct agroup *g;
	size_t ng;
};

/* The policies bound to one workload besides the GLOBAL ones, in order:
 * DENY, then ALLOW, then the rest (AUDIT, dry_run). */
struct abind {
	const struct mres *wl;	/* the workload's Address resource: the key */
	uint32_t *pol;
	uint32_t n, ndeny, nallow;
};

struct authz {
	struct apolicy *p;
	size_t np;
	struct abind global;	/* wl NULL */
	struct abind *wl;	/* sorted by wl pointer */
	size_t nwl;
	/* Enforcing policies (ALLOW or DENY, not dry_run) that bind through a
	 * namespace or a workload's list: with no local workload known, one of
	 * them may be this pod's, so authz_check denies (fail closed). */
	size_t nbound_enforcing;
	void **allocs;		/* everything else malloc'ed */
	size_t nallocs, allocs_cap;
};

static void *
aalloc(struct authz *a, size_t n, size_t size)
{
	void *p;

	if (a->nallocs == a->allocs_cap) {
		size_t cap = a->allocs_cap ? a->allocs_cap * 2 : 64;
		void **np = realloc(a->allocs, cap * sizeof(*np));

		if (!np)
			return NULL;
		a->allocs = np;
		a->allocs_cap = cap;
	}
	if (!(p = calloc(n ? n : 1, size)))
		return NULL;
	a->allocs[a->nallocs++] = p;
	return p;
}

static int
compile_sm(struct authz *a, Istio__Security__StringMatch **in, size_t n, struct smatch **out, size_t *nout)
{
	size_t i, k = 0;

	if (!n)
		return 0;
	if (!(*out = aalloc(a, n, sizeof(**out))))
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct smatch *m = &(*out)[k];

		switch (in[i]->match_type_case) {
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT:
			m->kind = SM_EXACT, m->s = S(in[i]->exact);
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX:
			m->kind = SM_PREFIX, m->s = S(in[i]->prefix);
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX:
			m->kind = SM_SUFFIX, m->s = S(in[i]->suffix);
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE:
			m->kind = SM_PRESENCE, m->s = "";
			break;
		default:
			continue;	/* refused by the check; as ztunnel, dropped */
		}
		m->len = strlen(m->s);
		k++;
	}
	*nout = k;
	return 0;
}

static int
compile_cidr(struct authz *a, Istio__Security__Address **in, size_t n, struct cidr **out, size_t *nout)
{
	size_t i, k = 0;

	if (!n)
		return 0;
	if (!(*out = aalloc(a, n, sizeof(**out))))
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct cidr *c = &(*out)[k];
		size_t len = in[i]->address.len;

		if (len != 4 && len != 16)
			continue;
		c->family = len == 4 ? AF_INET : AF_INET6;
		c->bits = (uint8_t)(in[i]->length > len * 8 ? len * 8 : in[i]->length);
		memcpy(c->addr, in[i]->address.data, len);
		k++;
	}
	*nout = k;
	return 0;
}

static int
compile_match(struct authz *a, const Istio__Security__Match *in, struct amatch *m)
{
	size_t i;
	int rc = 0;

	rc |= compile_sm(a, in->namespaces, in->n_namespaces, &m->ns[0], &m->nns[0]);
	rc |= compile_sm(a, in->not_namespaces, in->n_not_namespaces, &m->ns[1], &m->nns[1]);
	rc |= compile_sm(a, in->principals, in->n_principals, &m->pr[0], &m->npr[0]);
	rc |= compile_sm(a, in->not_principals, in->n_not_principals, &m->pr[1], &m->npr[1]);
	rc |= compile_cidr(a, in->source_ips, in->n_source_ips, &m->src[0], &m->nsrc[0]);
	rc |= compile_cidr(a, in->not_source_ips, in->n_not_source_ips, &m->src[1], &m->nsrc[1]);
	rc |= compile_cidr(a, in->destination_ips, in->n_destination_ips, &m->dstip[0], &m->ndstip[0]);
	rc |= compile_cidr(a, in->not_destination_ips, in->n_not_destination_ips, &m->dstip[1], &m->ndstip[1]);
	if (rc)
		return -ENOMEM;
	for (int neg = 0; neg < 2; neg++) {
		uint32_t *ports = neg ? in->not_destination_ports : in->destination_ports;
		size_t np = neg ? in->n_not_destination_ports : in->n_destination_ports;
		Istio__Security__ServiceAccountMatch **sa = neg ? in->not_service_accounts : in->service_accounts;
		size_t nsa = neg ? in->n_not_service_accounts : in->n_service_accounts;

		if (np) {
			if (!(m->port[neg] = aalloc(a, np, sizeof(uint16_t))))
				return -ENOMEM;
			for (i = 0; i < np; i++)
				if (ports[i] && ports[i] <= 65535)
					m->port[neg][m->nport[neg]++] = (uint16_t)ports[i];
		}
		if (nsa) {
			if (!(m->sa[neg] = aalloc(a, nsa, sizeof(struct samatch))))
				return -ENOMEM;
			for (i = 0; i < nsa; i++)
				m->sa[neg][m->nsa[neg]++] = (struct samatch){ S(sa[i]->namespace_), S(sa[i]->serviceaccount) };
		}
	}
	/* ztunnel's is_empty() looks at the lists as converted (rbac.rs: a
	 * StringMatch with nothing set and an address IpNet refuses are
	 * filter_map'ed away first), and an empty match is skipped: it never
	 * matches. So here, on what compiled: a match whose every value was
	 * dropped must not match everything (the validation refuses those
	 * values; authz_build does not rely on it). */
	m->empty = true;
	for (int neg = 0; neg < 2; neg++)
		if (m->nns[neg] || m->npr[neg] || m->nsrc[neg] || m->ndstip[neg] || m->nport[neg] || m->nsa[neg])
			m->empty = false;
	return 0;
}

static int
compile_policy(struct authz *a, const struct mres *r, struct apolicy *p)
{
	const Istio__Security__Authorization *in = (const void *)r->msg;
	size_t g, c, k;

	p->res = r;
	p->name = r->name;
	p->ns = S(in->namespace_);
	p->scope = in->scope;
	p->action = in->action;
	p->dry_run = in->dry_run;
	p->slot = slot_of(r->name);
	slot_hold(p->slot, 1);
	p->ng = in->n_groups;
	if (p->ng && !(p->g = aalloc(a, p->ng, sizeof(*p->g))))
		return -ENOMEM;
	for (g = 0; g < p->ng; g++) {
		const Istio__Security__Group *ig = in->groups[g];

		p->g[g].n = ig->n_rules;
		if (ig->n_rules && !(p->g[g].c = aalloc(a, ig->n_rules, sizeof(struct aclause))))
			return -ENOMEM;
		for (c = 0; c < ig->n_rules; c++) {
			const Istio__Security__Rules *ir = ig->rules[c];
			struct aclause *cl = &p->g[g].c[c];

			cl->n = ir->n_matches;
			if (cl->n && !(cl->m = aalloc(a, cl->n, sizeof(struct amatch))))
				return -ENOMEM;
			for (k = 0; k < cl->n; k++)
				if (compile_match(a, ir->matches[k], &cl->m[k]) < 0)
					return -ENOMEM;
		}
	}
	return 0;
}

/* ---- Evaluation ---- */

/* What the matches read, derived once per connection. */
struct aconn {
	const char *id;		/* the SPIFFE ID without "spiffe://" ("" none) */
	size_t idlen;
	const char *ns, *sa;	/* from the ID (NULL: none) */
	struct spiffe parsed;
	sa_family_t sfam, dfam;
	const uint8_t *sip, *dip;
	uint16_t dport;
};

static bool
sm_match(const struct smatch *m, const char *s, size_t len)
{
	switch (m->kind) {
	case SM_EXACT:
		return len == m->len && memcmp(s, m->s, len) == 0;
	case SM_PREFIX:
		return len >= m->len && memcmp(s, m->s, m->len) == 0;
	case SM_SUFFIX:
		return len >= m->len && memcmp(s + len - m->len, m->s, m->len) == 0;
	default:
		return len > 0;
	}
}

static bool
cidr_match(const struct cidr *c, sa_family_t fam, const uint8_t *ip)
{
	unsigned full = c->bits / 8, rest = c->bits % 8;

	if (!ip || fam != c->family)
		return false;
	if (memcmp(c->addr, ip, full) != 0)
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));

		return (c->addr[full] & mask) == (ip[full] & mask);
	}
	return true;
}

/* One kind: any positive (or none given) and no negative. */
#define KIND(arr, narr, pred) ({ \
	bool ok_ = true; \
	for (int neg_ = 0; neg_ < 2 && ok_; neg_++) { \
		bool any_ = false; \
		for (size_t i_ = 0; i_ < (narr)[neg_] && !any_; i_++) { \
			__typeof__(&(arr)[0][0]) v_ = &(arr)[neg_][i_]; \
			any_ = (pred); \
		} \
		ok_ = neg_ ? !any_ : ((narr)[0] == 0 || any_); \
	} \
	ok_; })

static bool
match_one(const struct amatch *m, const struct aconn *c)
{
	if (m->empty)
		return false;
	return KIND(m->dstip, m->ndstip, cidr_match(v_, c->dfam, c->dip)) &&
	    KIND(m->src, m->nsrc, cidr_match(v_, c->sfam, c->sip)) &&
	    KIND(m->port, m->nport, *v_ == c->dport) &&
	    KIND(m->sa, m->nsa, c->ns && strcmp(v_->ns, c->ns) == 0 && strcmp(v_->sa, c->sa) == 0) &&
	    KIND(m->pr, m->npr, sm_match(v_, c->id, c->idlen)) &&
	    KIND(m->ns, m->nns, sm_match(v_, c->ns ? c->ns : "", c->ns ? strlen(c->ns) : 0));
}

static bool
policy_matches(const struct apolicy *p, const struct aconn *c)
{
	size_t g, k, j;

	for (g = 0; g < p->ng; g++) {
		bool rule = true;

		for (k = 0; k < p->g[g].n && rule; k++) {
			const struct aclause *cl = &p->g[g].c[k];
			bool any = cl->n == 0;

			for (j = 0; j < cl->n && !any; j++)
				any = match_one(&cl->m[j], c);
			rule = any;
		}
		if (rule)
			return true;
	}
	return false;
}

static void
conn_facts(const struct authz_conn *in, struct aconn *c)
{
	memset(c, 0, sizeof(*c));	/* every field: an address of no IP family leaves its own zero */
	c->id = "";
	/* The peer's identity only when it parses strictly as
	 * spiffe://<td>/ns/<ns>/sa/<sa> (identity.c, bounded lengths): ztunnel
	 * takes a certificate's SAN that Identity::from_str refuses as no
	 * identity at all (tls/certificate.rs), so such a peer matches no
	 * principal, namespace or service account, not even presence, and
	 * every not* of them; a principal is never compared raw (rbac.rs
	 * matches_principal wants the spiffe:// it strips). */
	if (in->peer_id && spiffe_parse(in->peer_id, strlen(in->peer_id), &c->parsed) == 0) {
		c->id = in->peer_id + 9;
		c->idlen = strlen(c->id);
		c->ns = c->parsed.ns;
		c->sa = c->parsed.sa;
	}
	if (in->src && in->src->sa_family == AF_INET) {
		c->sfam = AF_INET;
		c->sip = (const uint8_t *)&((const struct sockaddr_in *)in->src)->sin_addr;
	} else if (in->src && in->src->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)in->src)->sin6_addr.s6_addr;

		/* An IPv4 client on a dual-stack socket (::ffff:a.b.c.d) is the IPv4
		 * address, as ztunnel canonicalizes before its checks. */
		if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a)) {
			c->sfam = AF_INET;
			c->sip = a + 12;
		} else {
			c->sfam = AF_INET6;
			c->sip = a;
		}
	}
	if (in->dst && in->dst->sa_family == AF_INET) {
		c->dfam = AF_INET;
		c->dip = (const uint8_t *)&((const struct sockaddr_in *)in->dst)->sin_addr;
		c->dport = ntohs(((const struct sockaddr_in *)in->dst)->sin_port);
	} else if (in->dst && in->dst->sa_family == AF_INET6) {
		const uint8_t *a = ((const struct sockaddr_in6 *)in->dst)->sin6_addr.s6_addr;
		bool mapped = IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a);

		c->dfam = mapped ? AF_INET : AF_INET6;
		c->dip = mapped ? a + 12 : a;
		c->dport = ntohs(((const struct sockaddr_in6 *)in->dst)->sin6_port);
	}
}

static const struct abind *
find_bind(const struct authz *a, const struct mworkload *wl)
{
	size_t lo = 0, hi = a->nwl;

	if (!wl)
		return NULL;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (a->wl[mid].wl == wl->res)
			return &a->wl[mid];
		if ((uintptr_t)a->wl[mid].wl < (uintptr_t)wl->res)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static inline void
count(uint64_t *counters, unsigned slot, enum authz_verdict v)
{
	if (counters) {
		uint64_t *p = &counters[slot * 2 + v];

		__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
	}
}

enum authz_verdict
authz_check(const struct authz *a, const struct mworkload *local, const struct authz_conn *cin,
    struct authz_result *res, uint64_t *counters)
{
	const struct abind *lists[2] = { &a->global, find_bind(a, local) };
	struct aconn c;
	bool have_allow = false, allowed = false;
	const struct apolicy *allow_by = NULL;
	size_t l, i;

	res->verdict = AUTHZ_ALLOW;
	res->slot = AUTHZ_SLOT_NONE;
	res->policy = NULL;
	res->no_workload = false;
	if (!local && a->nbound_enforcing) {
		/* No WDS Workload at the destination: ztunnel refuses such a
		 * connection outright (no local workload, no RBAC context:
		 * proxy/inbound*.rs). We refuse it only when a policy that is
		 * not GLOBAL could be the pod's: judging it by the GLOBAL ones
		 * alone would be fail-open. */
		res->verdict = AUTHZ_DENY;
		res->no_workload = true;
		goto out;
	}
	if (!lists[0]->n && !lists[1])
		goto out;	/* nothing bound: allow, no work */
	conn_facts(cin, &c);
	/* The observers first (dry_run, AUDIT): they are counted whatever decides. */
	for (l = 0; l < 2; l++) {
		const struct abind *b = lists[l];

		for (i = b ? b->ndeny + b->nallow : 0; b && i < b->n; i++) {
			const struct apolicy *p = &a->p[b->pol[i]];

			if (policy_matches(p, &c))
				count(counters, p->slot, p->action == ISTIO__SECURITY__ACTION__DENY ?
				    AUTHZ_DENY : AUTHZ_ALLOW);
		}
	}
	for (l = 0; l < 2; l++) {
		const struct abind *b = lists[l];

		for (i = 0; b && i < b->ndeny; i++) {
			const struct apolicy *p = &a->p[b->pol[i]];

			if (policy_matches(p, &c)) {
				res->verdict = AUTHZ_DENY;
				res->slot = p->slot;
				res->policy = p->name;
				goto out;
			}
		}
	}
	for (l = 0; l < 2 && !allowed; l++) {
		const struct abind *b = lists[l];

		for (i = 0; b && i < b->nallow && !allowed; i++) {
			const struct apolicy *p = &a->p[b->pol[b->ndeny + i]];

			have_allow = true;
			if (policy_matches(p, &c)) {
				allowed = true;
				allow_by = p;
			}
		}
	}
	if (allow_by) {
		res->slot = allow_by->slot;
		res->policy = allow_by->name;
	} else if (have_allow) {
		res->verdict = AUTHZ_DENY;
	}
out:
	count(counters, res->slot, res->verdict);
	return res->verdict;
}

/* ---- Building ---- */

/* Whether p binds every workload. ztunnel's PolicyStore files a GLOBAL
 * policy, and a NAMESPACE one by its namespace, under by_namespace[ns],
 * GLOBAL under "" whatever its namespace; assert_rbac reads the workload's
 * namespace's list and ""'s: a NAMESPACE policy of namespace "" is global. */
static bool
is_global(const struct apolicy *p)
{
	return p->scope == ISTIO__SECURITY__SCOPE__GLOBAL ||
	    (p->scope == ISTIO__SECURITY__SCOPE__NAMESPACE && !*p->ns);
}

static int
rank(const struct apolicy *p)
{
	if (p->dry_run || (p->action != ISTIO__SECURITY__ACTION__DENY && p->action != ISTIO__SECURITY__ACTION__ALLOW))
		return 2;
	return p->action == ISTIO__SECURITY__ACTION__DENY ? 0 : 1;
}

/* Fills b with the policies idx[0..n) in rank order. */
static int
fill_bind(struct authz *a, struct abind *b, const uint32_t *idx, size_t n)
{
	if (!n)
		return 0;
	if (!(b->pol = aalloc(a, n, sizeof(uint32_t))))
		return -ENOMEM;
	for (int r = 0; r < 3; r++)
		for (size_t i = 0; i < n; i++)
			if (rank(&a->p[idx[i]]) == r) {
				b->pol[b->n++] = idx[i];
				if (r == 0)
					b->ndeny++;
				else if (r == 1)
					b->nallow++;
			}
	return 0;
}

static int
cmp_bind(const void *x, const void *y)
{
	uintptr_t a = (uintptr_t)((const struct abind *)x)->wl, b = (uintptr_t)((const struct abind *)y)->wl;

	return a < b ? -1 : a > b;
}

static int
cmp_pol(const void *x, const void *y)
{
	return strcmp(((const struct apolicy *)x)->name, ((const struct apolicy *)y)->name);
}

struct authz *
authz_build(const struct model *m)
{
	struct authz *a = calloc(1, sizeof(*a));
	size_t np = model_count(m, MRES_AUTHORIZATION), nres = model_count(m, MRES_ADDRESS), i, j;
	uint32_t *idx = NULL;
	size_t nidx;

	if (!a)
		return NULL;
	if (np && !(a->p = aalloc(a, np, sizeof(*a->p))))
		goto oom;
	for (i = 0; i < np; i++)
		if (compile_policy(a, model_resource(m, MRES_AUTHORIZATION, i), &a->p[a->np++]) < 0)
			goto oom;
	/* Sorted by name, for the workloads' references (model_resource's
	 * order need not be). */
	if (a->np > 1)
		qsort(a->p, a->np, sizeof(*a->p), cmp_pol);
	if (!(idx = malloc((a->np ? a->np : 1) * sizeof(*idx))))
		goto oom;
	for (nidx = 0, i = 0; i < a->np; i++) {
		if (is_global(&a->p[i]))
			idx[nidx++] = (uint32_t)i;
		else if (rank(&a->p[i]) < 2)
			a->nbound_enforcing++;
	}
	if (fill_bind(a, &a->global, idx, nidx) < 0)
		goto oom;
	if (a->np) {
		if (!(a->wl = aalloc(a, nres, sizeof(*a->wl))))
			goto oom;
		for (i = 0; i < nres; i++) {
			const struct mres *r = model_resource(m, MRES_ADDRESS, i);
			const Istio__Workload__Address *ad = (const void *)r->msg;
			const Istio__Workload__Workload *w;

			if (ad->type_case != ISTIO__WORKLOAD__ADDRESS__TYPE_WORKLOAD || !(w = ad->workload))
				continue;
			nidx = 0;
			for (j = 0; j < a->np; j++) {
				const struct apolicy *p = &a->p[j];
				bool bound = false;

				/* ztunnel's assert_rbac: the namespace's policies, the
				 * global ones, and every policy the Workload lists by
				 * key, whatever its scope (a listed policy applies even
				 * when NAMESPACE of another namespace). A global one is
				 * in the global list already: evaluated once. */
				if (is_global(p))
					continue;
				if (p->scope == ISTIO__SECURITY__SCOPE__NAMESPACE)
					bound = strcmp(p->ns, S(w->namespace_)) == 0;
				for (size_t k = 0; k < w->n_authorization_policies && !bound; k++)
					bound = strcmp(S(w->authorization_policies[k]), p->name) == 0;
				if (bound)
					idx[nidx++] = (uint32_t)j;
			}
			if (!nidx)
				continue;
			a->wl[a->nwl].wl = r;
			if (fill_bind(a, &a->wl[a->nwl++], idx, nidx) < 0)
				goto oom;
		}
		qsort(a->wl, a->nwl, sizeof(*a->wl), cmp_bind);
	}
	free(idx);
	return a;
oom:
	free(idx);
	authz_free(a);
	return NULL;
}

void
authz_free(struct authz *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->np; i++)
		slot_hold(a->p[i].slot, -1);
	for (size_t i = 0; i < a->nallocs; i++)
		free(a->allocs[i]);
	free(a->allocs);
	free(a);
}

size_t
authz_count(const struct authz *a)
{
	return a->np;
}

static const char *
scope_str(int s)
{
	return s == ISTIO__SECURITY__SCOPE__GLOBAL ? "GLOBAL" : s == ISTIO__SECURITY__SCOPE__NAMESPACE ? "NAMESPACE" :
	    "WORKLOAD_SELECTOR";
}

static const char *
action_str(int s)
{
	return s == ISTIO__SECURITY__ACTION__ALLOW ? "ALLOW" : s == ISTIO__SECURITY__ACTION__DENY ? "DENY" : "AUDIT";
}

struct cJSON *
authz_to_json(const struct authz *a)
{
	cJSON *arr = cJSON_CreateArray();

	if (!arr)
		return NULL;
	for (size_t i = 0; i < a->np; i++) {
		const struct apolicy *p = &a->p[i];
		cJSON *o = cJSON_CreateObject(), *wls;

		if (!o || !cJSON_AddItemToArray(arr, o))
			goto oom;
		if (!cJSON_AddStringToObject(o, "name", p->name) || !cJSON_AddStringToObject(o, "scope", scope_str(p->scope)) ||
		    !cJSON_AddStringToObject(o, "action", action_str(p->action)) ||
		    !cJSON_AddBoolToObject(o, "dry_run", p->dry_run) || !(wls = cJSON_AddArrayToObject(o, "workloads")))
			goto oom;
		if (is_global(p)) {
			if (!cJSON_AddItemToArray(wls, cJSON_CreateString("*")))
				goto oom;
			continue;
		}
		for (size_t k = 0; k < a->nwl; k++) {
			const struct abind *b = &a->wl[k];

			for (size_t j = 0; j < b->n; j++)
				if (b->pol[j] == i) {
					const Istio__Workload__Address *ad = (const void *)b->wl->msg;
					cJSON *n = cJSON_CreateString(S(ad->workload->uid));

					if (!n || !cJSON_AddItemToArray(wls, n))
						goto oom;
					break;
				}
		}
	}
	return arr;
oom:
	cJSON_Delete(arr);
	return NULL;
}

/* ---- Validation ---- */

#define REFUSE(...) do { snprintf(why, len, __VA_ARGS__); return -EINVAL; } while (0)

static bool
bad_value(const char *s)
{
	if (!s || !*s)
		return true;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return true;
	return false;
}

static int
check_sm(Istio__Security__StringMatch **v, size_t n, const char *path, bool value_rules, char *why, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		const Istio__Security__StringMatch *m = v[i];
		const char *s = NULL;

		if (m->base.n_unknown_fields)
			REFUSE("%s[%zu]: unknown match field", path, i);
		switch (m->match_type_case) {
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_EXACT:
			s = m->exact;
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PREFIX:
			s = m->prefix;
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_SUFFIX:
			s = m->suffix;
			break;
		case ISTIO__SECURITY__STRING_MATCH__MATCH_TYPE_PRESENCE:
			continue;
		default:
			REFUSE("%s[%zu]: no match set (exact, prefix, suffix or presence)", path, i);
		}
		if (value_rules && bad_value(s))
			REFUSE("%s[%zu]: empty, whitespace or control character in \"%.64s\"", path, i, S(s));
	}
	return 0;
}

static int
check_addr(Istio__Security__Address **v, size_t n, const char *path, char *why, size_t len)
{
	for (size_t i = 0; i < n; i++) {
		size_t l = v[i]->address.len;

		if (v[i]->base.n_unknown_fields)
			REFUSE("%s[%zu]: unknown match field", path, i);
		if (l != 4 && l != 16)
			REFUSE("%s[%zu]: invalid CIDR: address of %zu bytes; want 4 or 16", path, i, l);
		if (v[i]->length > l * 8)
			REFUSE("%s[%zu]: invalid CIDR: prefix length %u exceeds %zu", path, i, v[i]->length, l * 8);
	}
	return 0;
}

int
authz_policy_check(const Istio__Security__Authorization *p, char *why, size_t len)
{
	char path[96];

	if (p->base.n_unknown_fields)
		REFUSE("unknown match field (in the Authorization)");
	/* ztunnel converts both with TryFrom and NACKs a value it does not
	 * know (rbac.rs); AUDIT is our extension, kept. The model refuses
	 * unknown enum values already (pb_find_unknown_enum); this check holds
	 * for every caller of authz_build. */
	if ((int)p->scope < ISTIO__SECURITY__SCOPE__GLOBAL || (int)p->scope > ISTIO__SECURITY__SCOPE__WORKLOAD_SELECTOR)
		REFUSE("scope: unknown value %d; want GLOBAL, NAMESPACE or WORKLOAD_SELECTOR", (int)p->scope);
	if ((int)p->action < ISTIO__SECURITY__ACTION__ALLOW || (int)p->action > ISTIO__SECURITY__ACTION__AUDIT)
		REFUSE("action: unknown value %d; want ALLOW, DENY or AUDIT", (int)p->action);
	for (size_t g = 0; g < p->n_groups; g++) {
		const Istio__Security__Group *gr = p->groups[g];

		if (gr->base.n_unknown_fields)
			REFUSE("groups[%zu]: unknown match field", g);
		for (size_t r = 0; r < gr->n_rules; r++) {
			const Istio__Security__Rules *ru = gr->rules[r];

			if (ru->base.n_unknown_fields)
				REFUSE("groups[%zu].rules[%zu]: unknown match field", g, r);
			for (size_t k = 0; k < ru->n_matches; k++) {
				const Istio__Security__Match *m = ru->matches[k];
				int n = snprintf(path, sizeof(path), "groups[%zu].rules[%zu].matches[%zu]", g, r, k);
				char sub[160];

				(void)n;
				if (m->base.n_unknown_fields)
					REFUSE("%s: unknown match field", path);
#define SM(f, name, vr) do { snprintf(sub, sizeof(sub), "%s." name, path); \
	if (check_sm(m->f, m->n_##f, sub, vr, why, len) < 0) return -EINVAL; } while (0)
				SM(namespaces, "namespaces", true);
				SM(not_namespaces, "notNamespaces", true);
				SM(principals, "principals", true);
				SM(not_principals, "notPrincipals", true);
#undef SM
#define AD(f, name) do { snprintf(sub, sizeof(sub), "%s." name, path); \
	if (check_addr(m->f, m->n_##f, sub, why, len) < 0) return -EINVAL; } while (0)
				AD(source_ips, "sourceIps");
				AD(not_source_ips, "notSourceIps");
				AD(destination_ips, "destinationIps");
				AD(not_destination_ips, "notDestinationIps");
#undef AD
				for (int neg = 0; neg < 2; neg++) {
					uint32_t *ports = neg ? m->not_destination_ports : m->destination_ports;
					size_t np = neg ? m->n_not_destination_ports : m->n_destination_ports;
					Istio__Security__ServiceAccountMatch **sa = neg ? m->not_service_accounts :
					    m->service_accounts;
					size_t nsa = neg ? m->n_not_service_accounts : m->n_service_accounts;
					const char *pn = neg ? "notDestinationPorts" : "destinationPorts";
					const char *sn = neg ? "notServiceAccounts" : "serviceAccounts";

					for (size_t i = 0; i < np; i++)
						if (ports[i] == 0 || ports[i] > 65535)
							REFUSE("%s.%s[%zu]: port %u; want 1-65535", path, pn, i, ports[i]);
					for (size_t i = 0; i < nsa; i++) {
						if (sa[i]->base.n_unknown_fields)
							REFUSE("%s.%s[%zu]: unknown match field", path, sn, i);
						if (bad_value(sa[i]->serviceaccount) || bad_value(sa[i]->namespace_))
							REFUSE("%s.%s[%zu]: empty service account or namespace", path, sn, i);
					}
				}
			}
		}
	}
	return 0;
}
