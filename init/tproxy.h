/* tproxy: the policy routing TPROXY needs, and the ::6 inbound address.
 *
 * TPROXY marks inbound packets (--tproxy-mark, default 1337); a policy
 * rule sends marked packets to a table (default 133) whose only route says
 * "everything is local, via lo", so the kernel delivers them to the proxy's
 * transparent socket (istio tools/common/tproxy/run_linux.go):
 *     ip rule add fwmark 1337 lookup 133
 *     ip route add local default dev lo table 133      (and -6, ::/0)
 * IPv6 loopback is a single /128, so the proxy's inbound passthrough source
 * ::6 (the IPv6 twin of 127.0.0.6) has to be put on lo explicitly. */
#ifndef OR_INIT_TPROXY_H
#define OR_INIT_TPROXY_H

#include <stdbool.h>

#include "flags.h"

/* Add the rule (once: skipped when present) and the route (replace) for
 * IPv4, and for IPv6 when ipv6.  With dry_run only log the commands.
 * 0 or -EIO. */
int tproxy_setup(const struct init_config *c, bool ipv6, bool dry_run);

/* Remove them (every copy of the rule); errors ignored. */
void tproxy_cleanup(const struct init_config *c);

/* Make sure ::6/128 is on lo.  0 or -EIO. */
int tproxy_ipv6_lo(bool dry_run);

#endif
