/* nft: the --native-nftables backend.
 *
 * istio-nftables (tools/istio-nftables) programs the same interception in
 * three "inet" tables, istio-proxy-nat, istio-proxy-mangle and
 * istio-proxy-raw, with the iptables chain names lower-cased and dashed
 * (ISTIO_OUTPUT -> istio-output) and base chains "prerouting"/"output"
 * (reference/interception.md §1.10).  We translate the rule list of rules.c
 * rule by rule, so both backends carry the same decisions in the same order,
 * and apply the whole script as one atomic "nft -f -" transaction. */
#ifndef OR_INIT_NFT_H
#define OR_INIT_NFT_H

#include <stdbool.h>

#include "rules.h"

/* The nft script for rs: per used table "add table", "flush table" (so a
 * re-run replaces instead of duplicating), its chains, then every rule in
 * insertion order; IPv6-only rules only when ipv6.  malloc'd, NULL on
 * ENOMEM or -EINVAL for a rule it cannot translate (*err set). */
char *nft_script(const struct ruleset *rs, bool ipv6, int *err);

/* Script deleting our three tables; succeeds whether they exist or not
 * ("add table" then "delete table" in one transaction).  Static text. */
const char *nft_cleanup_script(void);

/* nft's table name for an iptables table ("nat" -> "istio-proxy-nat"). */
const char *nft_table_name(const char *table);

#endif
