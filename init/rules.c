/* rules: the rule builder (see rules.h).
 *
 * Every rule below cites the istio-iptables behaviour it reproduces; the
 * numbering follows reference/interception.md §1.5. */
#include "autoconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ilog.h"
#include "rules.h"
#include "strbuf.h"

/* Placeholder in an argument list: replaced by the family's value
 * (istio's AppendVersionedRule / constants.IPVersionSpecific). */
static const char ver_marker[] = "<ver>";
#define VER ver_marker

/* Tables in the order iptables-restore input lists them (alphabetical,
 * as istio's buildRestore sorts them). */
static const char *const tables[] = { "mangle", "nat", "raw" };

bool rules_builtin_chain(const char *chain)
{
	static const char *const builtin[] = { "PREROUTING", "INPUT", "FORWARD",
					       "OUTPUT", "POSTROUTING" };

	for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		if (strcmp(chain, builtin[i]) == 0)
			return true;
	return false;
}

/* Append one rule; args is a NULL-terminated list, VER replaced by ver. */
static void add_va(struct ruleset *rs, unsigned fam, const char *table,
		   const char *chain, int pos, const char *ver, va_list ap)
{
	const char *a;
	struct rule *r;
	char **argv = NULL;
	size_t argc = 0;

	if (rs->err)
		return;
	if (rs->n == rs->cap) {
		size_t cap = rs->cap ? rs->cap * 2 : 64;
		struct rule *nv = realloc(rs->v, cap * sizeof(*nv));
		if (nv == NULL)
			goto nomem;
		rs->v = nv;
		rs->cap = cap;
	}
	while ((a = va_arg(ap, const char *)) != NULL) {
		char **nv = realloc(argv, (argc + 2) * sizeof(*nv));
		if (nv == NULL)
			goto nomem;
		argv = nv;
		if ((argv[argc] = strdup(a == VER ? ver : a)) == NULL)
			goto nomem;
		argv[++argc] = NULL;
	}
	r = &rs->v[rs->n++];
	r->fam = fam;
	r->table = table;
	r->chain = chain;
	r->insert_pos = pos;
	r->argv = argv;
	r->argc = argc;
	return;
nomem:
	for (size_t i = 0; i < argc; i++)
		free(argv[i]);
	free(argv);
	rs->err = -ENOMEM;
}

/* AppendRule / InsertRule (pos > 0) for the families in fam. */
__attribute__((sentinel))
static void add(struct ruleset *rs, unsigned fam, const char *table,
		const char *chain, int pos, ...)
{
	va_list ap;

	va_start(ap, pos);
	add_va(rs, fam, table, chain, pos, NULL, ap);
	va_end(ap);
}

/* AppendVersionedRule: the same rule for both families, VER standing for
 * v4 in the IPv4 copy and v6 in the IPv6 copy. */
__attribute__((sentinel))
static void addv(struct ruleset *rs, const char *v4, const char *v6,
		 const char *table, const char *chain, int pos, ...)
{
	va_list ap;

	va_start(ap, pos);
	add_va(rs, RULE_V4, table, chain, pos, v4, ap);
	va_end(ap);
	va_start(ap, pos);
	add_va(rs, RULE_V6, table, chain, pos, v6, ap);
	va_end(ap);
}

/* Family of a CIDR/host for AppendRuleV4/V6. */
static unsigned fam_of(int af)
{
	return af == AF_INET6 ? RULE_V6 : RULE_V4;
}

/* §1.5 step 7, istio handleInboundPortsInclude: inbound capture, in nat
 * (REDIRECT) or mangle (TPROXY).  Nothing at all when -b is empty. */
static void inbound(struct ruleset *rs, const struct init_config *c)
{
	bool tproxy = c->mode == MODE_TPROXY;
	const char *table = tproxy ? "mangle" : "nat";
	char tpmark[48];

	if (!c->inbound_all && c->inbound_ports.n == 0)
		return;
	if (tproxy) {
		/* Marked packets are routed to lo by "ip rule fwmark M lookup T". */
		add(rs, RULE_BOTH, "mangle", CH_DIVERT, 0, "-j", "MARK", "--set-mark",
		    c->tproxy_mark, NULL);
		add(rs, RULE_BOTH, "mangle", CH_DIVERT, 0, "-j", "ACCEPT", NULL);
		snprintf(tpmark, sizeof(tpmark), "%s/0xffffffff", c->tproxy_mark);
		addv(rs, "127.0.0.1/32", "::1/128", "mangle", CH_TPROXY, 0, "!", "-d",
		     VER, "-p", "tcp", "-j", "TPROXY", "--tproxy-mark", tpmark,
		     "--on-port", c->inbound_capture_port, NULL);
	}
	add(rs, RULE_BOTH, table, "PREROUTING", 0, "-p", "tcp", "-j", CH_INBOUND, NULL);
	if (c->inbound_all) {
		/* -d only means something with -b '*' (istio #11660). */
		for (size_t i = 0; i < c->local_exclude_ports.n; i++)
			add(rs, RULE_BOTH, table, CH_INBOUND, 0, "-p", "tcp", "--dport",
			    c->local_exclude_ports.v[i], "-j", "RETURN", NULL);
		if (tproxy) {
			/* Established flows go straight to the local socket;
			 * new ones are TPROXYed. */
			add(rs, RULE_BOTH, "mangle", CH_INBOUND, 0, "-p", "tcp", "-m",
			    "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j",
			    CH_DIVERT, NULL);
			add(rs, RULE_BOTH, "mangle", CH_INBOUND, 0, "-p", "tcp", "-j",
			    CH_TPROXY, NULL);
		} else {
			add(rs, RULE_BOTH, "nat", CH_INBOUND, 0, "-p", "tcp", "-j",
			    CH_IN_REDIRECT, NULL);
		}
		return;
	}
	for (size_t i = 0; i < c->inbound_ports.n; i++) {
		const char *port = c->inbound_ports.v[i];
		if (tproxy) {
			add(rs, RULE_BOTH, "mangle", CH_INBOUND, 0, "-p", "tcp", "--dport",
			    port, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
			    "-j", CH_DIVERT, NULL);
			add(rs, RULE_BOTH, "mangle", CH_INBOUND, 0, "-p", "tcp", "--dport",
			    port, "-j", CH_TPROXY, NULL);
		} else {
			add(rs, RULE_BOTH, "nat", CH_INBOUND, 0, "-p", "tcp", "--dport", port,
			    "-j", CH_IN_REDIRECT, NULL);
		}
	}
}

/* §1.5 steps 11-12: loop prevention and hairpin for each proxy uid/gid. */
static void owner_rules(struct ruleset *rs, const struct init_config *c,
			const char *lo4, const char *match, const char *id,
			bool dns, bool loopback_included)
{
	char dports[48];

	/* app -> own VIP -> proxy (client side) -> pod IP over lo: send it
	 * back into the inbound listener.  With DNS capture port 53 is left
	 * out so the agent's answers do not loop through the proxy.  Istio
	 * does this for the uid rules only: its gid rule keeps the plain
	 * "! --dport 15008" form (goldens dns-uid-gid, cni dns.txt). */
	if (dns && strcmp(match, "--uid-owner") == 0) {
		snprintf(dports, sizeof(dports), "53,%s", c->inbound_tunnel_port);
		addv(rs, lo4, "::1/128", "nat", CH_OUTPUT, 0, "-o", "lo", "!", "-d", VER,
		     "-p", "tcp", "-m", "multiport", "!", "--dports", dports, "-m",
		     "owner", match, id, "-j", CH_IN_REDIRECT, NULL);
	} else {
		addv(rs, lo4, "::1/128", "nat", CH_OUTPUT, 0, "-o", "lo", "!", "-d", VER,
		     "-p", "tcp", "!", "--dport", c->inbound_tunnel_port, "-m", "owner",
		     match, id, "-j", CH_IN_REDIRECT, NULL);
	}
	/* app -> app over lo is not captured, unless -i names a loopback
	 * range explicitly (istio HasLoopBackIP). */
	if (!loopback_included) {
		if (dns)
			add(rs, RULE_BOTH, "nat", CH_OUTPUT, 0, "-o", "lo", "-p", "tcp", "!",
			    "--dport", "53", "-m", "owner", "!", match, id, "-j", "RETURN",
			    NULL);
		else
			add(rs, RULE_BOTH, "nat", CH_OUTPUT, 0, "-o", "lo", "-m", "owner", "!",
			    match, id, "-j", "RETURN", NULL);
	}
	/* The proxy's own traffic, any protocol: never captured (loops). */
	add(rs, RULE_BOTH, "nat", CH_OUTPUT, 0, "-m", "owner", match, id, "-j",
	    "RETURN", NULL);
}

/* §1.5 step 13, istio handleCaptureByOwnerGroup. */
static void owner_groups(struct ruleset *rs, const struct init_config *c)
{
	if (c->owner_groups_all) {
		for (size_t i = 0; i < c->owner_groups_exclude.n; i++)
			add(rs, RULE_BOTH, "nat", CH_OUTPUT, 0, "-m", "owner", "--gid-owner",
			    c->owner_groups_exclude.v[i], "-j", "RETURN", NULL);
		return;
	}
	/* One rule: traffic of none of the listed groups is not captured.
	 * Built by hand because the argument count is variable. */
	{
		struct rule *r;
		size_t argc = c->owner_groups.n * 5 + 2, k = 0;
		char **argv;

		if (rs->err)
			return;
		add(rs, RULE_BOTH, "nat", CH_OUTPUT, 0, NULL);
		if (rs->err)
			return;
		r = &rs->v[rs->n - 1];
		argv = calloc(argc + 1, sizeof(*argv));
		if (argv == NULL) {
			rs->err = -ENOMEM;
			return;
		}
		for (size_t i = 0; i < c->owner_groups.n; i++) {
			argv[k++] = strdup("-m");
			argv[k++] = strdup("owner");
			argv[k++] = strdup("!");
			argv[k++] = strdup("--gid-owner");
			argv[k++] = strdup(c->owner_groups.v[i]);
		}
		argv[k++] = strdup("-j");
		argv[k++] = strdup("RETURN");
		free(r->argv);
		r->argv = argv;
		r->argc = argc;
		for (size_t i = 0; i < argc; i++)
			if (argv[i] == NULL)
				rs->err = -ENOMEM;
	}
}

/* §1.7, istio SetupDNSRedir + addConntrackZoneDNSUDP. */
/* DNS over proto to each resolv.conf server, IPv4 ones first, redirected to
 * the agent.  istio spells the port option "--to-ports" for TCP and
 * "--to-port" for UDP; to_port_opt keeps the golden text. */
static void dns_server_redirects(struct ruleset *rs, const struct pod_facts *p,
				 const char *proto, const char *to_port_opt)
{
	char host[80];

	for (int f = 0; f < 2; f++) {
		const struct strlist *srv = f ? &p->dns_v6 : &p->dns_v4;
		for (size_t i = 0; i < srv->n; i++) {
			snprintf(host, sizeof(host), "%s/%s", srv->v[i], f ? "128" : "32");
			add(rs, f ? RULE_V6 : RULE_V4, "nat", CH_OUTPUT_DNS, 0, "-p", proto,
			    "--dport", "53", "-d", host, "-j", "REDIRECT", to_port_opt,
			    DNS_AGENT_PORT, NULL);
		}
	}
}

static void dns_rules(struct ruleset *rs, const struct init_config *c,
		      const struct pod_facts *p)
{
	char host[80];
	unsigned fam;

	/* raw: split DNS into conntrack zones (istio #33469, PR #33572). */
	add(rs, RULE_BOTH, "raw", "OUTPUT", 0, "-j", CH_OUTPUT_DNS, NULL);
	/* nat: after the uid/gid RETURNs so the agent's upstream queries are
	 * not looped back to it.  Jumped to per family only where the chain
	 * will have redirects: with --capture-all-dns, or for a family with
	 * servers (Istio >= 1.25, PR #53998; capture golden tproxy: no v6
	 * servers, no v6 nat ISTIO_OUTPUT_DNS at all). */
	fam = (c->capture_all_dns || p->dns_v4.n ? RULE_V4 : 0) |
	      (c->capture_all_dns || p->dns_v6.n ? RULE_V6 : 0);
	add(rs, fam, "nat", CH_OUTPUT, 0, "-j", CH_OUTPUT_DNS, NULL);
	/* No UDP :53 RETURN per proxy uid/gid here any more: Istio 1.25 (PR
	 * #53998) dropped them, the proxy's traffic has already returned in
	 * ISTIO_OUTPUT. */
	if (c->capture_all_dns) {
		add(rs, RULE_BOTH, "nat", CH_OUTPUT_DNS, 0, "-p", "tcp", "--dport", "53",
		    "-j", "REDIRECT", "--to-ports", DNS_AGENT_PORT, NULL);
		add(rs, RULE_BOTH, "nat", CH_OUTPUT_DNS, 0, "-p", "udp", "--dport", "53",
		    "-j", "REDIRECT", "--to-port", DNS_AGENT_PORT, NULL);
	} else {
		/* Only resolv.conf's servers: a local resolver (dnsmasq) that
		 * forwards upstream must not be looped back to the agent. */
		dns_server_redirects(rs, p, "tcp", "--to-ports");
		dns_server_redirects(rs, p, "udp", "--to-port");
	}
	/* Zone 1: the agent's queries to upstream resolvers; zone 2: the
	 * agent's answers to the app. */
	for (int g = 0; g < 2; g++) {
		const struct strlist *ids = g ? &c->gids : &c->uids;
		const char *match = g ? "--gid-owner" : "--uid-owner";
		for (size_t i = 0; i < ids->n; i++) {
			add(rs, RULE_BOTH, "raw", CH_OUTPUT_DNS, 0, "-p", "udp", "--dport", "53",
			    "-m", "owner", match, ids->v[i], "-j", "CT", "--zone", "1", NULL);
			add(rs, RULE_BOTH, "raw", CH_OUTPUT_DNS, 0, "-p", "udp", "--sport",
			    DNS_AGENT_PORT, "-m", "owner", match, ids->v[i], "-j", "CT",
			    "--zone", "2", NULL);
		}
	}
	/* The inbound zone chain is hooked up per family only where it will have
	 * rules: with --capture-all-dns, or for a family with servers (Istio's
	 * tproxy golden: no v6 servers, no v6 raw ISTIO_INBOUND). */
	if (c->capture_all_dns || p->dns_v4.n)
		add(rs, c->capture_all_dns ? RULE_BOTH : RULE_V4, "raw", "PREROUTING", 0, "-j",
		    CH_INBOUND, NULL);
	if (!c->capture_all_dns && p->dns_v6.n)
		add(rs, RULE_V6, "raw", "PREROUTING", 0, "-j", CH_INBOUND, NULL);
	/* Zone 2: the app's queries; zone 1: the resolvers' answers. */
	if (c->capture_all_dns) {
		add(rs, RULE_BOTH, "raw", CH_OUTPUT_DNS, 0, "-p", "udp", "--dport", "53",
		    "-j", "CT", "--zone", "2", NULL);
		add(rs, RULE_BOTH, "raw", CH_INBOUND, 0, "-p", "udp", "--sport", "53", "-j",
		    "CT", "--zone", "1", NULL);
		return;
	}
	for (int f = 0; f < 2; f++) {
		const struct strlist *srv = f ? &p->dns_v6 : &p->dns_v4;
		for (size_t i = 0; i < srv->n; i++) {
			snprintf(host, sizeof(host), "%s/%s", srv->v[i], f ? "128" : "32");
			add(rs, f ? RULE_V6 : RULE_V4, "raw", CH_OUTPUT_DNS, 0, "-p", "udp",
			    "--dport", "53", "-d", host, "-j", "CT", "--zone", "2", NULL);
			add(rs, f ? RULE_V6 : RULE_V4, "raw", CH_INBOUND, 0, "-p", "udp",
			    "--sport", "53", "-s", host, "-j", "CT", "--zone", "1", NULL);
		}
	}
}

/* §1.5 step 18, istio handleOutboundIncludeRules for one family. */
static void outbound_include(struct ruleset *rs, const struct init_config *c,
			     unsigned fam)
{
	const struct cidrlist *inc = &c->include_cidrs;

	if (inc->wildcard) {
		add(rs, fam, "nat", CH_OUTPUT, 0, "-j", CH_REDIRECT, NULL);
		/* kube-virt NICs: their inbound traffic is the VM's outbound. */
		for (size_t i = 0; i < c->kubevirt_ifaces.n; i++)
			add(rs, fam, "nat", "PREROUTING", 1, "-i", c->kubevirt_ifaces.v[i],
			    "-j", CH_REDIRECT, NULL);
		return;
	}
	for (size_t k = 0; k < inc->n; k++) {
		if (fam_of(inc->v[k].family) != fam)
			continue;
		for (size_t i = 0; i < c->kubevirt_ifaces.n; i++)
			add(rs, fam, "nat", "PREROUTING", 1, "-i", c->kubevirt_ifaces.v[i],
			    "-d", inc->v[k].text, "-j", CH_REDIRECT, NULL);
		add(rs, fam, "nat", CH_OUTPUT, 0, "-d", inc->v[k].text, "-j", CH_REDIRECT,
		    NULL);
	}
	/* No closing "-j RETURN": older istio-iptables had one after a CIDR list,
	 * current Istio does not (capture testdata tproxy.golden); the chain ends
	 * and the packet is not redirected either way. */
}

/* §1.6, the rest of TPROXY mode (mangle OUTPUT/PREROUTING marks). */
static void tproxy_rules(struct ruleset *rs, const struct init_config *c)
{
	/* Keep the mark original_src put on the proxy's upstream packets
	 * for the whole connection. */
	add(rs, RULE_BOTH, "mangle", "PREROUTING", 0, "-p", "tcp", "-m", "mark",
	    "--mark", c->tproxy_mark, "-j", "CONNMARK", "--save-mark", NULL);
	/* proxy -> app packets already carry the mark: leave them. */
	add(rs, RULE_BOTH, "mangle", "OUTPUT", 0, "-p", "tcp", "-o", "lo", "-m", "mark",
	    "--mark", c->tproxy_mark, "-j", "RETURN", NULL);
	/* app -> VIP -> proxy outbound -(1338)-> proxy inbound -> app */
	for (int g = 0; g < 2; g++) {
		const struct strlist *ids = g ? &c->gids : &c->uids;
		const char *match = g ? "--gid-owner" : "--uid-owner";
		for (size_t i = 0; i < ids->n; i++)
			addv(rs, "127.0.0.1/32", "::1/128", "mangle", "OUTPUT", 0, "!", "-d",
			     VER, "-p", "tcp", "-o", "lo", "-m", "owner", match, ids->v[i],
			     "-j", "MARK", "--set-mark", OUTBOUND_MARK, NULL);
	}
	/* Replies of TPROXYed connections follow the policy route to lo. */
	add(rs, RULE_BOTH, "mangle", "OUTPUT", 0, "-p", "tcp", "-m", "connmark",
	    "--mark", c->tproxy_mark, "-j", "CONNMARK", "--restore-mark", NULL);
	/* No second interception of what is already marked. */
	add(rs, RULE_BOTH, "mangle", CH_INBOUND, 1, "-p", "tcp", "-m", "mark",
	    "--mark", c->tproxy_mark, "-j", "RETURN", NULL);
	/* The proxy's inbound passthrough (127.0.0.6 / ::6) to the app. */
	add(rs, RULE_V4, "mangle", CH_INBOUND, 2, "-p", "tcp", "-s", "127.0.0.6/32",
	    "-i", "lo", "-j", "RETURN", NULL);
	add(rs, RULE_V6, "mangle", CH_INBOUND, 2, "-p", "tcp", "-s", "::6/128", "-i",
	    "lo", "-j", "RETURN", NULL);
	/* app -> app by pod IP (not marked 1338 by the proxy). */
	add(rs, RULE_BOTH, "mangle", CH_INBOUND, 3, "-p", "tcp", "-i", "lo", "-m", "mark",
	    "!", "--mark", OUTBOUND_MARK, "-j", "RETURN", NULL);
}

int rules_build(const struct init_config *c, const struct pod_facts *p,
		struct ruleset *rs)
{
	bool tproxy = c->mode == MODE_TPROXY;
	bool dns = c->redirect_dns;
	bool loopback_included = false;
	const char *lo4 = c->ipv4_loopback_cidr;

	if (dns && !c->capture_all_dns && p->dns_v4.n == 0 && p->dns_v6.n == 0) {
		ilog_warn("--redirect-dns is set but there is no nameserver in resolv.conf and no --capture-all-dns: DNS capture disabled");
		dns = false;
	}
	for (size_t i = 0; i < c->include_cidrs.n; i++)
		loopback_included |= c->include_cidrs.v[i].loopback;

	/* 1. Excluded NICs: neither direction captured. */
	for (size_t i = 0; i < c->exclude_ifaces.n; i++) {
		add(rs, RULE_BOTH, "nat", "PREROUTING", 0, "-i", c->exclude_ifaces.v[i],
		    "-j", "RETURN", NULL);
		add(rs, RULE_BOTH, "nat", "OUTPUT", 0, "-o", c->exclude_ifaces.v[i], "-j",
		    "RETURN", NULL);
	}
	if (tproxy) {
		for (size_t i = 0; i < c->exclude_ifaces.n; i++) {
			add(rs, RULE_BOTH, "mangle", "PREROUTING", 0, "-i",
			    c->exclude_ifaces.v[i], "-j", "RETURN", NULL);
			add(rs, RULE_BOTH, "mangle", "OUTPUT", 0, "-o", c->exclude_ifaces.v[i],
			    "-j", "RETURN", NULL);
		}
	}
	/* 2. kube-virt NICs: their inbound is not inbound capture. */
	for (size_t i = 0; i < c->kubevirt_ifaces.n; i++)
		add(rs, RULE_BOTH, "nat", "PREROUTING", 1, "-i", c->kubevirt_ifaces.v[i],
		    "-j", "RETURN", NULL);
	/* 3. Out-of-window packets are dropped instead of reset. */
	if (c->drop_invalid) {
		add(rs, RULE_BOTH, "mangle", "PREROUTING", 0, "-m", "conntrack",
		    "--ctstate", "INVALID", "-j", CH_DROP, NULL);
		add(rs, RULE_BOTH, "mangle", CH_DROP, 0, "-j", "DROP", NULL);
	}
	/* 4. HBONE always reaches the proxy directly. */
	add(rs, RULE_BOTH, "nat", CH_INBOUND, 0, "-p", "tcp", "--dport",
	    c->inbound_tunnel_port, "-j", "RETURN", NULL);
	/* 5-6. The two redirect targets. */
	add(rs, RULE_BOTH, "nat", CH_REDIRECT, 0, "-p", "tcp", "-j", "REDIRECT",
	    "--to-ports", c->proxy_port, NULL);
	add(rs, RULE_BOTH, "nat", CH_IN_REDIRECT, 0, "-p", "tcp", "-j", "REDIRECT",
	    "--to-ports", c->inbound_capture_port, NULL);
	/* 7. Inbound. */
	inbound(rs, c);
	/* 8. Outbound: all protocols, DNS over UDP is decided inside
	 * (istio #50915). */
	add(rs, RULE_BOTH, "nat", "OUTPUT", 0, "-j", CH_OUTPUT, NULL);
	/* 9. -o: before anything redirects. */
	for (size_t i = 0; i < c->outbound_ports_exclude.n; i++) {
		add(rs, RULE_BOTH, "nat", CH_OUTPUT, 0, "-p", "tcp", "--dport",
		    c->outbound_ports_exclude.v[i], "-j", "RETURN", NULL);
		add(rs, RULE_BOTH, "nat", CH_OUTPUT, 0, "-p", "udp", "--dport",
		    c->outbound_ports_exclude.v[i], "-j", "RETURN", NULL);
	}
	/* 10. The proxy's inbound passthrough binds 127.0.0.6 / ::6. */
	addv(rs, "127.0.0.6/32", "::6/128", "nat", CH_OUTPUT, 0, "-o", "lo", "-s", VER,
	     "-j", "RETURN", NULL);
	/* 11-12. */
	for (size_t i = 0; i < c->uids.n; i++)
		owner_rules(rs, c, lo4, "--uid-owner", c->uids.v[i], dns, loopback_included);
	for (size_t i = 0; i < c->gids.n; i++)
		owner_rules(rs, c, lo4, "--gid-owner", c->gids.v[i], dns, loopback_included);
	/* 13. */
	owner_groups(rs, c);
	/* 14. */
	if (dns)
		dns_rules(rs, c, p);
	/* 15. Explicit localhost: Envoy-aware apps, container to container. */
	addv(rs, lo4, "::1/128", "nat", CH_OUTPUT, 0, "-d", VER, "-j", "RETURN", NULL);
	/* 16. -x before any include. */
	for (int f = 0; f < 2; f++)
		for (size_t i = 0; i < c->exclude_cidrs.n; i++)
			if ((c->exclude_cidrs.v[i].family == AF_INET6) == (f == 1))
				add(rs, f ? RULE_V6 : RULE_V4, "nat", CH_OUTPUT, 0, "-d",
				    c->exclude_cidrs.v[i].text, "-j", "RETURN", NULL);
	/* 17. -q: these ports whatever the destination. */
	for (size_t i = 0; i < c->outbound_ports.n; i++)
		add(rs, RULE_BOTH, "nat", CH_OUTPUT, 0, "-p", "tcp", "--dport",
		    c->outbound_ports.v[i], "-j", CH_REDIRECT, NULL);
	/* 18. -i, per family (IPv6 only when enabled, as istio). */
	outbound_include(rs, c, RULE_V4);
	if (p->enable_ipv6)
		outbound_include(rs, c, RULE_V6);
	/* 19. */
	if (tproxy)
		tproxy_rules(rs, c);
	return rs->err;
}

void rules_free(struct ruleset *rs)
{
	for (size_t i = 0; i < rs->n; i++) {
		for (size_t k = 0; k < rs->v[i].argc; k++)
			free(rs->v[i].argv[k]);
		free(rs->v[i].argv);
	}
	free(rs->v);
	memset(rs, 0, sizeof(*rs));
}

/* The ISTIO_* chain a rule jumps to, or NULL. */
static const char *jump_target(const struct rule *r)
{
	for (size_t i = 0; i + 1 < r->argc; i++)
		if (strcmp(r->argv[i], "-j") == 0 &&
		    strncmp(r->argv[i + 1], "ISTIO_", 6) == 0)
			return r->argv[i + 1];
	return NULL;
}

static bool seen(const char **names, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], s) == 0)
			return true;
	return false;
}

size_t rules_chains(const struct ruleset *rs, unsigned fam, const char *table,
		    const char **out, size_t max)
{
	const char *names[64];
	size_t n = 0;

	for (size_t i = 0; i < rs->n; i++) {
		const struct rule *r = &rs->v[i];
		const char *cand[2] = { r->chain, jump_target(r) };

		if (!(r->fam & fam) || strcmp(r->table, table) != 0)
			continue;
		for (int k = 0; k < 2; k++) {
			if (cand[k] == NULL || rules_builtin_chain(cand[k]) ||
			    seen(names, n, cand[k]) || n == 64)
				continue;
			names[n++] = cand[k];
		}
	}
	for (size_t i = 0; i < n && i < max; i++)
		out[i] = names[i];
	return n;
}

bool rules_table_used(const struct ruleset *rs, unsigned fam, const char *table)
{
	for (size_t i = 0; i < rs->n; i++)
		if ((rs->v[i].fam & fam) && strcmp(rs->v[i].table, table) == 0)
			return true;
	return false;
}

char *rules_text_take(struct strbuf *b)
{
	char *s = b->p;

	if (b->oom) {
		sb_free(b);
		return NULL;
	}
	*b = (struct strbuf){ 0 };
	return s != NULL ? s : strdup("");
}

/* "-A CHAIN ARGS" / "-I CHAIN N ARGS", without a newline. */
static void put_rule(struct strbuf *b, const struct rule *r)
{
	if (r->insert_pos > 0)
		sb_printf(b, "-I %s %d", r->chain, r->insert_pos);
	else
		sb_printf(b, "-A %s", r->chain);
	for (size_t k = 0; k < r->argc; k++)
		sb_printf(b, " %s", r->argv[k]);
}

char *rules_line(const struct rule *r)
{
	struct strbuf b = { 0 };

	put_rule(&b, r);
	return rules_text_take(&b);
}

/* The iptables-restore input of one family (see rules_restore_text). */
static void put_restore(struct strbuf *b, const struct ruleset *rs, unsigned fam)
{
	for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
		const char *chains[64];
		size_t nc;

		if (!rules_table_used(rs, fam, tables[t]))
			continue;
		/* istio buildRestore: "* table", every "-N" first, then the
		 * rules in insertion order, "COMMIT". */
		sb_printf(b, "* %s\n", tables[t]);
		nc = rules_chains(rs, fam, tables[t], chains, 64);
		for (size_t i = 0; i < nc && i < 64; i++)
			sb_printf(b, "-N %s\n", chains[i]);
		for (size_t i = 0; i < rs->n; i++) {
			const struct rule *r = &rs->v[i];
			if (!(r->fam & fam) || strcmp(r->table, tables[t]) != 0)
				continue;
			put_rule(b, r);
			sb_printf(b, "\n");
		}
		sb_printf(b, "COMMIT\n");
	}
}

char *rules_restore_text(const struct ruleset *rs, unsigned fam)
{
	struct strbuf b = { 0 };

	put_restore(&b, rs, fam);
	return rules_text_take(&b);
}

char *rules_dry_run_text(const struct ruleset *rs, bool ipv6)
{
	struct strbuf b = { 0 };

	put_restore(&b, rs, RULE_V4);
	if (ipv6) {
		/* A comment is valid restore input: the whole output can be
		 * split at this line and fed to the two restore commands. */
		sb_printf(&b, "# ip6tables-restore\n");
		put_restore(&b, rs, RULE_V6);
	}
	return rules_text_take(&b);
}

void rules_cmd(const struct rule *r, const char *op, char **argv)
{
	size_t k = 0;

	argv[k++] = (char *)"-t";
	argv[k++] = (char *)r->table;
	argv[k++] = (char *)op;
	argv[k++] = (char *)r->chain;
	for (size_t a = 0; a < r->argc; a++)
		argv[k++] = r->argv[a];
	argv[k] = NULL;
}

int cmdlist_add(struct cmdlist *l, char *const *a)
{
	size_t n = 0;
	char **copy;
	char ***nv;

	while (a[n] != NULL)
		n++;
	copy = calloc(n + 1, sizeof(*copy));
	if (copy == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if ((copy[i] = strdup(a[i])) == NULL) {
			for (size_t k = 0; k < i; k++)
				free(copy[k]);
			free(copy);
			return -ENOMEM;
		}
	}
	nv = realloc(l->v, (l->n + 1) * sizeof(*nv));
	if (nv == NULL) {
		for (size_t k = 0; k < n; k++)
			free(copy[k]);
		free(copy);
		return -ENOMEM;
	}
	l->v = nv;
	l->v[l->n++] = copy;
	return 0;
}

void cmdlist_free(struct cmdlist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		for (char **a = l->v[i]; *a != NULL; a++)
			free(*a);
		free(l->v[i]);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

int rules_cleanup(const struct ruleset *rs, unsigned fam, bool all_chains,
		  struct cmdlist *out)
{
	/* Every chain istio-iptables creates, per table (constants.go). */
	static const char *const known_nat[] = { CH_INBOUND, CH_REDIRECT, CH_IN_REDIRECT,
						 CH_OUTPUT, CH_OUTPUT_DNS, NULL };
	static const char *const known_mangle[] = { CH_INBOUND, CH_DIVERT, CH_TPROXY,
						    CH_DROP, NULL };
	static const char *const known_raw[] = { CH_OUTPUT_DNS, CH_INBOUND, NULL };
	static const char *const *const known[] = { known_mangle, known_nat, known_raw };

	/* Reverse order, "-A/-I" become "-D" (istio BuildCleanupV4/V6). */
	for (size_t i = rs->n; i-- > 0;) {
		const struct rule *r = &rs->v[i];
		char *argv[128];

		if (!(r->fam & fam) || r->argc > 120)
			continue;
		rules_cmd(r, "-D", argv);
		if (cmdlist_add(out, argv) < 0)
			return -ENOMEM;
	}
	/* Flush every chain first, then delete: a chain can only go once no
	 * other chain jumps to it. */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
			const char *chains[80];
			size_t nc = rules_chains(rs, fam, tables[t], chains, 64);

			if (nc > 64)
				nc = 64;
			if (all_chains)
				for (const char *const *k = known[t]; *k; k++)
					if (!seen(chains, nc, *k))
						chains[nc++] = *k;
			for (size_t i = 0; i < nc; i++) {
				char *argv[] = { (char *)"-t", (char *)tables[t],
						 (char *)(pass ? "-X" : "-F"),
						 (char *)chains[i], NULL };
				if (cmdlist_add(out, argv) < 0)
					return -ENOMEM;
			}
		}
	}
	return 0;
}
