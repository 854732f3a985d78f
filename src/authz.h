/* authz: L4 authorization (istio.security.Authorization), ztunnel's
 * semantics (reference xds-hbone.md §1.3): the snapshot's policies compiled
 * once per snapshot into an immutable structure with, per workload, the
 * policies bound to it; the data path evaluates it without allocating. */
#ifndef OR_AUTHZ_H
#define OR_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "model.h"

enum authz_verdict { AUTHZ_ALLOW = 0, AUTHZ_DENY = 1 };
const char *authz_verdict_str(enum authz_verdict v);	/* "allow", "deny" */

/* Per-policy counters: a process-wide registry of policy names ("ns/name")
 * to stable slots, assigned by the control thread at snapshot build.
 * AUTHZ_SLOT_NONE means "no policy decided" (default allow, or no ALLOW
 * policy matched: then the deny counts go to AUTHZ_SLOT_NONE too). Once
 * all slots are assigned, a new name takes the slot of a policy that no
 * live snapshot has any more (nobody can count into it: a worker counts
 * only through a snapshot it holds), whose counters are reset first
 * (authz_set_slot_reset); with none free, AUTHZ_SLOT_OVERFLOW (exported
 * as "overflow") collects it until a later snapshot finds one. */
#define AUTHZ_SLOTS 1024
#define AUTHZ_SLOT_NONE 0
#define AUTHZ_SLOT_OVERFLOW (AUTHZ_SLOTS - 1)
/* Copies the name of a slot into buf ("" for NONE, "overflow" for
 * OVERFLOW); false for a slot not assigned. Any thread. */
bool authz_slot_name(unsigned slot, char *buf, size_t len);
/* Slots assigned so far (1 + the highest slot in use). */
unsigned authz_nslots(void);
/* Whether every slot is assigned: the overflow slot is shown from then on
 * (/stats authz.overflow.*, Prometheus policy="overflow"). */
bool authz_full(void);
/* fn(slot) zeroes every worker's two counters of slot before the slot is
 * reused (control thread; no worker writes them then). NULL: none. */
void authz_set_slot_reset(void (*fn)(unsigned slot));

/* What a connection brings to the check. src, dst: IPv4 or IPv6 socket
 * addresses (dst: the local workload's address and port the client asked
 * for); peer_id: the verified SPIFFE ID or NULL (plaintext). */
struct authz_conn {
	const struct sockaddr *src, *dst;
	const char *peer_id;
};

/* The decision: verdict, and the deciding policy (slot and name; NONE and
 * NULL for the default allow and for "no ALLOW policy matched"); dry_run
 * and AUDIT matches are counted in the per-policy counters when counters
 * is given to authz_check. */
struct authz_result {
	enum authz_verdict verdict;
	unsigned slot;
	const char *policy;	/* "ns/name" or NULL */
	bool no_workload;	/* denied: no local workload, and policies that could bind it exist */
};

/* Why res decided, for the logs: the policy's name, or what decided
 * without one. */
const char *authz_result_why(const struct authz_result *res);

struct authz;

/* Compiles m's Authorization resources (already validated by model_build,
 * authz_policy_check) and binds them to m's workloads. The result points
 * into m's messages: free it before m. NULL only on OOM. */
struct authz *authz_build(const struct model *m);
void authz_free(struct authz *a);
/* Policies compiled (tests, /stats). */
size_t authz_count(const struct authz *a);

/* Evaluates the policies bound to local: DENY first, then ALLOW; no ALLOW
 * policy bound = allow; dry_run policies and AUDIT ones are evaluated but
 * never decide. local NULL (no WDS Workload at the destination): denied
 * (res->no_workload) when an enforcing NAMESPACE or WORKLOAD_SELECTOR
 * policy exists, since it could be the pod's (ztunnel refuses every such
 * connection); else only the GLOBAL policies apply. counters (may be NULL):
 * an array of 2 * AUTHZ_SLOTS per-worker counters, [slot*2 + verdict],
 * incremented for the decision and for every matching dry_run / AUDIT
 * policy (AUDIT: counted as allow). No allocation. */
enum authz_verdict authz_check(const struct authz *a, const struct mworkload *local, const struct authz_conn *c,
    struct authz_result *res, uint64_t *counters);

/* Validation of one resource (the model's check, a NACK by name): 0, or
 * -EINVAL with why set to "<field path>: why". */
struct Istio__Security__Authorization;
int authz_policy_check(const struct Istio__Security__Authorization *p, char *why, size_t len);

/* /config_dump: [{"name","scope","action","dry_run","workloads":[uid...]}].
 * NULL on OOM. */
struct cJSON;
struct cJSON *authz_to_json(const struct authz *a);

#endif
