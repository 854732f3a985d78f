/* validate: --run-validation, istio-validation's self-test.
 *
 * istio (tools/istio-iptables/pkg/validation): listen on the loopback
 * address at the outbound (15001) and inbound (15006) capture ports, connect
 * from loopback to 127.0.0.6:15002 (::6 for an IPv6 pod) once a second, and
 * pass when a listener accepts a connection whose SO_ORIGINAL_DST port is
 * 15002 (--iptables-probe-port).  Running as the proxy uid (1337), the
 * connection only gets there through the nat rule
 *   -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337
 *   -j ISTIO_IN_REDIRECT
 * so a pass proves the rules are in place and effective.  After
 * --probe-timeout the caller exits 126 (istio constants.ValidationErrorCode),
 * which istio-cni's repair controller looks for. */
#ifndef OR_INIT_VALIDATE_H
#define OR_INIT_VALIDATE_H

#include <stdbool.h>

#include "flags.h"

/* Run the probe.  0 when it passed, -ETIMEDOUT when it did not within the
 * timeout, another -errno when the listeners could not be set up. */
int validate_run(const struct init_config *c, bool ipv6);

#endif
