/* podinfo: the facts about the pod that decide which rules are built.
 *
 * istio-iptables looks at the pod's addresses to decide whether to program
 * IPv6 at all (config.go getLocalIP) and reads /etc/resolv.conf for the DNS
 * servers whose port 53 it captures (capture/run.go SetupDNSRedir).  These
 * are gathered here, once, so the rule builder stays a pure function of
 * (config, facts). */
#ifndef OR_INIT_PODINFO_H
#define OR_INIT_PODINFO_H

#include <stdbool.h>

#include "flags.h"

/* Inputs to the rule builder that come from the pod, not the flags. */
struct pod_facts {
	bool enable_ipv6;      /* build ip6tables rules / IPv6 nft rules */
	struct strlist dns_v4; /* resolv.conf nameservers, IPv4 */
	struct strlist dns_v6; /* resolv.conf nameservers, IPv6 */
};

/* Decide IPv6 as istio does: walk the addresses (IPv4 before IPv6, as the
 * kernel dumps them), skip loopback and link-local; the first usable
 * address decides.  With dual_stack the walk continues and any IPv6
 * address turns IPv6 on.  *ipv6 is false when there is no usable address.
 * Returns 0 or -errno from getifaddrs(). */
int podinfo_detect_ipv6(bool dual_stack, bool *ipv6);

/* Append the "nameserver" addresses of a resolv.conf to v4/v6 (scoped
 * IPv6 addresses are skipped).  A missing file is not an error (0). */
int podinfo_read_resolv(const char *path, struct strlist *v4, struct strlist *v6);

/* Release the lists. */
void podinfo_free(struct pod_facts *p);

#endif
