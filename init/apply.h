/* apply: put the rule list into the kernel, check what is there, take it
 * out again.
 *
 * iptables: istio-iptables' behaviour (reference/interception.md §1.9):
 *  - per family, pick the iptables flavour: --force-iptables-binary wins;
 *    else legacy only when iptables-legacy already holds rules (a node that
 *    still runs legacy), else nft, else plain "iptables"; "works" means its
 *    -save runs and a no-op probe rule can be added to the nat table and
 *    removed again (istio #57380: probe nat, not filter);
 *  - one "iptables-restore --noflush" per family, input on stdin, so each
 *    family is applied atomically; legacy gets --wait=30 (xtables lock);
 *    when IPv6 fails after IPv4 succeeded, IPv4 is cleaned up again;
 *  - before applying, compare with what is installed (iptables-save and
 *    "iptables -C" per rule): nothing there -> apply; the same -> nothing to
 *    do; different -> --reconcile cleans up and re-applies behind DROP
 *    guardrails, otherwise apply anyway with a warning;
 *  - cleanup deletes our rules in reverse order, then flushes and deletes
 *    our chains, ignoring errors.
 * nftables (--native-nftables): one "nft -f -" transaction; cleanup deletes
 * the three tables. */
#ifndef OR_INIT_APPLY_H
#define OR_INIT_APPLY_H

#include <stdbool.h>

#include "flags.h"
#include "rules.h"

/* The binaries for one family. */
struct xt_bin {
	char iptables[40]; /* "iptables-nft", "ip6tables-legacy", "iptables" */
	char restore[48];
	char save[48];
	bool legacy;       /* needs --wait (xtables lock) */
};

/* Pick the binaries for fam (RULE_V4/RULE_V6).  0, or -ENOENT when no
 * flavour works (message logged). */
int xt_detect(const struct init_config *c, unsigned fam, struct xt_bin *out);

/* Apply rs with iptables (both families when ipv6), with the drift check.
 * 0 or a negative errno; on failure nothing of ours is left installed. */
int apply_iptables(const struct init_config *c, const struct ruleset *rs, bool ipv6);

/* Remove rs (and any ISTIO_* chain and jump to one) from both families;
 * errors are ignored.  Returns 0. */
int cleanup_iptables(const struct init_config *c, const struct ruleset *rs);

/* Apply the nft script of rs in one transaction.  0 or negative errno. */
int apply_nft(const struct ruleset *rs, bool ipv6);

/* Delete our nft tables.  0 or negative errno. */
int cleanup_nft(void);

#endif
