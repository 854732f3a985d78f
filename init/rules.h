/* rules: the rule builder.  Flags + pod facts in, an ordered rule list out.
 *
 * This is a pure function (no exec, no system calls beyond malloc) so the
 * unit tests can drive it and compare against istio's golden files.  The
 * order of the rules is istio-iptables' (tools/istio-iptables/pkg/capture/
 * run.go, reference/interception.md §1.5-1.7); each rule keeps the exact
 * iptables argument order istio prints, because --dry-run must print the
 * same iptables-restore input.  The nftables backend (nft.c) translates the
 * same list, so both backends agree by construction. */
#ifndef OR_INIT_RULES_H
#define OR_INIT_RULES_H

#include <stdbool.h>
#include <stddef.h>

#include "flags.h"
#include "podinfo.h"

/* Address families a rule is for (iptables vs ip6tables). */
#define RULE_V4   1u
#define RULE_V6   2u
#define RULE_BOTH 3u

/* One rule: "-A CHAIN ARGS" (insert_pos 0) or "-I CHAIN POS ARGS". */
struct rule {
	unsigned fam;        /* RULE_V4, RULE_V6 or RULE_BOTH */
	const char *table;   /* "mangle", "nat" or "raw" (static) */
	const char *chain;   /* static */
	int insert_pos;      /* 0: append; N >= 1: iptables -I position */
	char **argv;         /* owned, argc entries, NULL-terminated */
	size_t argc;
};

/* An ordered rule list.  err is sticky: once an allocation fails every
 * further add is dropped and rules_build() returns it. */
struct ruleset {
	struct rule *v;
	size_t n, cap;
	int err;
};

/* A list of iptables argument vectors (each NULL-terminated, without the
 * binary name), e.g. the cleanup commands. */
struct cmdlist {
	char ***v;
	size_t n;
};

/* istio's chain names (constants.go). */
#define CH_INBOUND     "ISTIO_INBOUND"
#define CH_REDIRECT    "ISTIO_REDIRECT"
#define CH_IN_REDIRECT "ISTIO_IN_REDIRECT"
#define CH_OUTPUT      "ISTIO_OUTPUT"
#define CH_OUTPUT_DNS  "ISTIO_OUTPUT_DNS"
#define CH_DIVERT      "ISTIO_DIVERT"
#define CH_TPROXY      "ISTIO_TPROXY"
#define CH_DROP        "ISTIO_DROP"

/* Outbound mark (istio constants.OutboundMark) and the agent's DNS port. */
#define OUTBOUND_MARK  "1338"
#define DNS_AGENT_PORT "15053"

/* Build every rule for c and p into rs (which must be zeroed).  Returns 0
 * or -ENOMEM.  Free with rules_free() in both cases. */
int rules_build(const struct init_config *c, const struct pod_facts *p,
		struct ruleset *rs);
void rules_free(struct ruleset *rs);

/* Is this a built-in chain (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING)? */
bool rules_builtin_chain(const char *chain);

/* Non-built-in chains of (fam, table) in declaration order: the chains that
 * hold rules and the ISTIO_* chains jumped to, by first appearance.  Fills at
 * most max names, returns how many there are. */
size_t rules_chains(const struct ruleset *rs, unsigned fam, const char *table,
		    const char **out, size_t max);

/* Does fam have any rule in table? */
bool rules_table_used(const struct ruleset *rs, unsigned fam, const char *table);

/* iptables-restore input for one family (RULE_V4 or RULE_V6): tables in
 * alphabetical order, each "* table", its "-N" lines, its rules in insertion
 * order, "COMMIT" (istio builder buildRestore).  Empty string when the
 * family has no rule.  Returns malloc'd text or NULL on ENOMEM. */
char *rules_restore_text(const struct ruleset *rs, unsigned fam);

/* What --dry-run prints: the IPv4 input, then, when ipv6, the line
 * "# ip6tables-restore" and the IPv6 input.  malloc'd or NULL. */
char *rules_dry_run_text(const struct ruleset *rs, bool ipv6);

/* "-A CHAIN ARGS" / "-I CHAIN N ARGS" as one line (for logs), malloc'd. */
char *rules_line(const struct rule *r);

/* r as an iptables command without the binary, "-t TABLE OP CHAIN ARGS"
 * (op "-C", "-D"), NULL-terminated.  The strings are r's, not copies;
 * argv must hold r->argc + 5 entries. */
void rules_cmd(const struct rule *r, const char *op, char **argv);

/* How the text builders (here and nft.c) hand over a struct strbuf (from
 * src/strbuf.h): the text, malloc'd, "" when nothing was appended, or NULL
 * when an append failed.  b is left empty either way. */
struct strbuf;
char *rules_text_take(struct strbuf *b);

/* Cleanup commands for one family (istio BuildCleanupV4/V6): the rules in
 * reverse order as "-t T -D CHAIN ARGS", then "-t T -F C" for every chain,
 * then "-t T -X C".  With all_chains every chain name istio ever creates in
 * nat, mangle and raw is flushed and deleted too, so a cleanup run with
 * other flags than the apply still removes our chains.  0 or -ENOMEM. */
int rules_cleanup(const struct ruleset *rs, unsigned fam, bool all_chains,
		  struct cmdlist *out);

/* Append a copy of the NULL-terminated argv a.  0 or -ENOMEM. */
int cmdlist_add(struct cmdlist *l, char *const *a);
void cmdlist_free(struct cmdlist *l);

#endif
