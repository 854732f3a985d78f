/* nft: the --native-nftables backend (see nft.h). */
#include "autoconfig.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "nft.h"
#include "strbuf.h"

const char *nft_table_name(const char *table)
{
	if (strcmp(table, "nat") == 0)
		return "istio-proxy-nat";
	if (strcmp(table, "mangle") == 0)
		return "istio-proxy-mangle";
	return "istio-proxy-raw";
}

const char *nft_cleanup_script(void)
{
	return "add table inet istio-proxy-mangle\n"
	       "delete table inet istio-proxy-mangle\n"
	       "add table inet istio-proxy-nat\n"
	       "delete table inet istio-proxy-nat\n"
	       "add table inet istio-proxy-raw\n"
	       "delete table inet istio-proxy-raw\n";
}

/* "ISTIO_IN_REDIRECT" -> "istio-in-redirect", "PREROUTING" -> "prerouting". */
static void chain_name(char *out, size_t len, const char *chain)
{
	size_t i;

	for (i = 0; chain[i] != '\0' && i + 1 < len; i++)
		out[i] = chain[i] == '_' ? '-' : (char)tolower((unsigned char)chain[i]);
	out[i] = '\0';
}

/* Base chain declarations (istio-nftables constants): nat at -100 (dstnat),
 * mangle at -150 with a route-type output chain (re-route on mark), raw at
 * -300 (before conntrack, for the CT zones). */
static const char *base_spec(const char *table, const char *chain)
{
	bool pre = strcmp(chain, "PREROUTING") == 0;

	if (strcmp(table, "nat") == 0)
		return pre ? "{ type nat hook prerouting priority -100 ; }"
			   : "{ type nat hook output priority -100 ; }";
	if (strcmp(table, "mangle") == 0)
		return pre ? "{ type filter hook prerouting priority -150 ; }"
			   : "{ type route hook output priority -150 ; }";
	return pre ? "{ type filter hook prerouting priority -300 ; }"
		   : "{ type filter hook output priority -300 ; }";
}

/* One iptables rule, parsed into what nft needs. */
struct xt_rule {
	const char *iif, *oif, *proto;
	const char *saddr, *daddr;
	bool saddr_neg, daddr_neg;
	const char *sport, *dport, *dports;
	bool dport_neg, dports_neg;
	struct {
		const char *key; /* "skuid" / "skgid" */
		const char *id;
		bool neg;
	} owner[80];
	size_t nowner;
	const char *ctstate;
	const char *mark, *connmark;
	bool mark_neg;
	const char *target;
	const char *to_port, *set_mark, *tproxy_mark, *on_port, *zone;
	bool save_mark, restore_mark;
};

static int parse_rule(const struct rule *r, struct xt_rule *x)
{
	bool neg = false;
	const char *module = "";

	memset(x, 0, sizeof(*x));
	for (size_t i = 0; i < r->argc; i++) {
		const char *a = r->argv[i];
		const char *v = i + 1 < r->argc ? r->argv[i + 1] : NULL;

		if (strcmp(a, "!") == 0) {
			neg = true;
			continue;
		}
		if (strcmp(a, "--save-mark") == 0) {
			x->save_mark = true;
			continue;
		}
		if (strcmp(a, "--restore-mark") == 0) {
			x->restore_mark = true;
			continue;
		}
		if (v == NULL)
			return -EINVAL;
		i++;
		if (strcmp(a, "-i") == 0)
			x->iif = v;
		else if (strcmp(a, "-o") == 0)
			x->oif = v;
		else if (strcmp(a, "-p") == 0)
			x->proto = v;
		else if (strcmp(a, "-s") == 0)
			x->saddr = v, x->saddr_neg = neg;
		else if (strcmp(a, "-d") == 0)
			x->daddr = v, x->daddr_neg = neg;
		else if (strcmp(a, "--sport") == 0)
			x->sport = v;
		else if (strcmp(a, "--dport") == 0)
			x->dport = v, x->dport_neg = neg;
		else if (strcmp(a, "--dports") == 0)
			x->dports = v, x->dports_neg = neg;
		else if (strcmp(a, "-m") == 0)
			module = v;
		else if (strcmp(a, "--uid-owner") == 0 || strcmp(a, "--gid-owner") == 0) {
			if (x->nowner == sizeof(x->owner) / sizeof(x->owner[0]))
				return -EINVAL;
			x->owner[x->nowner].key = a[2] == 'u' ? "skuid" : "skgid";
			x->owner[x->nowner].id = v;
			x->owner[x->nowner++].neg = neg;
		} else if (strcmp(a, "--ctstate") == 0)
			x->ctstate = v;
		else if (strcmp(a, "--mark") == 0) {
			if (strcmp(module, "connmark") == 0)
				x->connmark = v;
			else
				x->mark = v, x->mark_neg = neg;
		} else if (strcmp(a, "-j") == 0)
			x->target = v;
		else if (strcmp(a, "--to-ports") == 0 || strcmp(a, "--to-port") == 0)
			x->to_port = v;
		else if (strcmp(a, "--set-mark") == 0)
			x->set_mark = v;
		else if (strcmp(a, "--tproxy-mark") == 0)
			x->tproxy_mark = v;
		else if (strcmp(a, "--on-port") == 0)
			x->on_port = v;
		else if (strcmp(a, "--zone") == 0)
			x->zone = v;
		else
			return -EINVAL;
		neg = false;
	}
	return x->target ? 0 : -EINVAL;
}

/* "ip" or "ip6" for a rule: its family, or the address it matches. */
static const char *ipfam(const struct rule *r, const struct xt_rule *x)
{
	const char *addr = x->daddr ? x->daddr : x->saddr;

	if (r->fam == RULE_V6)
		return "ip6";
	if (r->fam == RULE_V4)
		return "ip";
	return addr != NULL && strchr(addr, ':') != NULL ? "ip6" : "ip";
}

static void put_rule(struct strbuf *b, const struct rule *r, const struct xt_rule *x,
		     const char *tname)
{
	const char *fam = ipfam(r, x);
	char chain[64], target[64];

	chain_name(chain, sizeof(chain), r->chain);
	if (r->insert_pos > 1)
		sb_printf(b, "insert rule inet %s %s index %d", tname, chain,
			  r->insert_pos - 1);
	else
		sb_printf(b, "%s rule inet %s %s", r->insert_pos ? "insert" : "add",
			  tname, chain);
	/* A rule istio adds to one family only but that matches no address
	 * (e.g. the "-j RETURN" closing the IPv4 include list) must not
	 * catch the other family in an inet table. */
	if (r->fam != RULE_BOTH && x->saddr == NULL && x->daddr == NULL)
		sb_printf(b, " meta nfproto %s", r->fam == RULE_V6 ? "ipv6" : "ipv4");
	if (x->iif)
		sb_printf(b, " iifname %s", x->iif);
	if (x->oif)
		sb_printf(b, " oifname %s", x->oif);
	if (x->proto)
		sb_printf(b, " meta l4proto %s", x->proto);
	if (x->saddr)
		sb_printf(b, " %s saddr %s%s", fam, x->saddr_neg ? "!= " : "", x->saddr);
	if (x->daddr)
		sb_printf(b, " %s daddr %s%s", fam, x->daddr_neg ? "!= " : "", x->daddr);
	if (x->sport)
		sb_printf(b, " %s sport %s", x->proto, x->sport);
	if (x->dport)
		sb_printf(b, " %s dport %s%s", x->proto, x->dport_neg ? "!= " : "", x->dport);
	if (x->dports) {
		sb_printf(b, " %s dport %s{ ", x->proto, x->dports_neg ? "!= " : "");
		for (const char *p = x->dports; *p; p++) {
			if (*p == ',')
				sb_printf(b, ", ");
			else
				sb_printf(b, "%c", *p);
		}
		sb_printf(b, " }");
	}
	for (size_t i = 0; i < x->nowner; i++)
		sb_printf(b, " %s %s%s", x->owner[i].key, x->owner[i].neg ? "!= " : "",
			  x->owner[i].id);
	if (x->ctstate) {
		sb_printf(b, " ct state ");
		for (const char *p = x->ctstate; *p; p++)
			sb_printf(b, "%c", tolower((unsigned char)*p));
	}
	if (x->mark)
		sb_printf(b, " meta mark %s%s", x->mark_neg ? "!= " : "", x->mark);
	if (x->connmark)
		sb_printf(b, " ct mark %s", x->connmark);

	if (strcmp(x->target, "TPROXY") == 0) {
		/* The mask is /0xffffffff: a plain "meta mark set". */
		char mark[24];
		snprintf(mark, sizeof(mark), "%s", x->tproxy_mark ? x->tproxy_mark : "");
		if (strchr(mark, '/'))
			*strchr(mark, '/') = '\0';
		sb_printf(b, " tproxy %s to :%s meta mark set %s counter accept\n", fam,
			  x->on_port, mark);
		return;
	}
	sb_printf(b, " counter");
	if (strcmp(x->target, "RETURN") == 0)
		sb_printf(b, " return");
	else if (strcmp(x->target, "ACCEPT") == 0)
		sb_printf(b, " accept");
	else if (strcmp(x->target, "DROP") == 0)
		sb_printf(b, " drop");
	else if (strcmp(x->target, "REDIRECT") == 0)
		sb_printf(b, " redirect to :%s", x->to_port);
	else if (strcmp(x->target, "MARK") == 0)
		sb_printf(b, " meta mark set %s", x->set_mark);
	else if (strcmp(x->target, "CONNMARK") == 0)
		sb_printf(b, "%s", x->save_mark ? " ct mark set meta mark" : " meta mark set ct mark");
	else if (strcmp(x->target, "CT") == 0)
		sb_printf(b, " ct zone set %s", x->zone);
	else {
		chain_name(target, sizeof(target), x->target);
		sb_printf(b, " jump %s", target);
	}
	sb_printf(b, "\n");
}

char *nft_script(const struct ruleset *rs, bool ipv6, int *err)
{
	static const char *const tables[] = { "mangle", "nat", "raw" };
	unsigned fams = ipv6 ? RULE_BOTH : RULE_V4;
	struct strbuf b = { 0 };

	*err = 0;
	for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
		const char *tname = nft_table_name(tables[t]);
		const char *chains[64];
		size_t nc;
		char cname[64];

		if (!rules_table_used(rs, fams, tables[t]))
			continue;
		sb_printf(&b, "add table inet %s\n", tname);
		sb_printf(&b, "flush table inet %s\n", tname);
		for (int k = 0; k < 2; k++) {
			const char *base = k ? "OUTPUT" : "PREROUTING";
			bool used = false;
			for (size_t i = 0; i < rs->n && !used; i++)
				used = (rs->v[i].fam & fams) &&
				       strcmp(rs->v[i].table, tables[t]) == 0 &&
				       strcmp(rs->v[i].chain, base) == 0;
			if (used)
				sb_printf(&b, "add chain inet %s %s %s\n", tname,
					  k ? "output" : "prerouting",
					  base_spec(tables[t], base));
		}
		nc = rules_chains(rs, fams, tables[t], chains, 64);
		for (size_t i = 0; i < nc && i < 64; i++) {
			chain_name(cname, sizeof(cname), chains[i]);
			sb_printf(&b, "add chain inet %s %s\n", tname, cname);
		}
		for (size_t i = 0; i < rs->n; i++) {
			const struct rule *r = &rs->v[i];
			struct xt_rule x;

			if (!(r->fam & fams) || strcmp(r->table, tables[t]) != 0)
				continue;
			if (parse_rule(r, &x) < 0) {
				*err = -EINVAL;
				sb_free(&b);
				return NULL;
			}
			put_rule(&b, r, &x, tname);
		}
	}
	{
		char *s = rules_text_take(&b);
		if (s == NULL)
			*err = -ENOMEM;
		return s;
	}
}
