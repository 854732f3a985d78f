/* flags: outrigger-init's command line and environment (see flags.h).
 *
 * The names, environment bindings and defaults are istio-iptables' wire
 * facts (tools/istio-iptables/pkg/cmd/root.go, constants.go, config.go);
 * the parser follows pflag's syntax, which is what pilot-agent's cobra
 * command accepts: "-p 15001", "-p=15001", "-p15001", "--envoy-port 15001",
 * "--envoy-port=15001", booleans "--dry-run" / "--dry-run=false".  Go's own
 * flag package also allows a single dash before a long name, so we take
 * "-dry-run" too when it cannot be a short flag. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"
#include "ilog.h"

/* How the parser treats an option's value. */
enum flag_type {
	FT_STRING, /* takes a value: "--x v" or "--x=v" */
	FT_BOOL,   /* "--x" means true; "--x=false" */
};

/* One row of the option table. */
struct flag_def {
	char shortname;        /* 0: none */
	const char *name;      /* long name; NULL: environment only */
	const char *env;       /* bound variable; NULL: none */
	const char *alias_env; /* boolean alias OR'ed in (istio config.go) */
	enum flag_type type;
	const char *def;       /* default as text; NULL: computed */
	const char *help;
};

/* The table.  istio binds every flag except -p to the upper-cased,
 * underscored name of its long form (pkg/flag BindEnv). */
static const struct flag_def defs[F__COUNT] = {
	[F_ENVOY_PORT] = { 'p', "envoy-port", NULL, NULL, FT_STRING, "15001",
		"port every captured outbound TCP connection is redirected to" },
	[F_INBOUND_CAPTURE_PORT] = { 'z', "inbound-capture-port", "INBOUND_CAPTURE_PORT", NULL, FT_STRING, "15006",
		"port inbound connections are redirected (or TPROXYed) to" },
	[F_INBOUND_TUNNEL_PORT] = { 'e', "inbound-tunnel-port", "INBOUND_TUNNEL_PORT", NULL, FT_STRING, "15008",
		"HBONE port, never captured" },
	[F_PROXY_UID] = { 'u', "proxy-uid", "PROXY_UID", NULL, FT_STRING, NULL,
		"comma list of uids whose traffic is not captured (default: uid of $ENVOY_USER, else 1337)" },
	[F_PROXY_GID] = { 'g', "proxy-gid", "PROXY_GID", NULL, FT_STRING, NULL,
		"comma list of gids whose traffic is not captured (default: the proxy uid)" },
	[F_MODE] = { 'm', "istio-inbound-interception-mode", "ISTIO_INBOUND_INTERCEPTION_MODE", NULL, FT_STRING, "",
		"inbound interception: REDIRECT (default) or TPROXY" },
	[F_INBOUND_PORTS] = { 'b', "istio-inbound-ports", "ISTIO_INBOUND_PORTS", NULL, FT_STRING, "",
		"inbound ports to capture: '*' or a comma list; empty: none" },
	[F_LOCAL_EXCLUDE_PORTS] = { 'd', "istio-local-exclude-ports", "ISTIO_LOCAL_EXCLUDE_PORTS", NULL, FT_STRING, "",
		"inbound ports not captured when -b is '*'" },
	[F_EXCLUDE_INTERFACES] = { 'c', "istio-exclude-interfaces", "ISTIO_EXCLUDE_INTERFACES", NULL, FT_STRING, "",
		"interfaces whose traffic is captured neither way" },
	[F_SERVICE_CIDR] = { 'i', "istio-service-cidr", "ISTIO_SERVICE_CIDR", NULL, FT_STRING, "",
		"outbound destinations to capture: '*' or a CIDR list; empty: none" },
	[F_SERVICE_EXCLUDE_CIDR] = { 'x', "istio-service-exclude-cidr", "ISTIO_SERVICE_EXCLUDE_CIDR", NULL, FT_STRING, "",
		"outbound destination CIDRs never captured" },
	[F_OUTBOUND_PORTS] = { 'q', "istio-outbound-ports", "ISTIO_OUTBOUND_PORTS", NULL, FT_STRING, "",
		"outbound TCP ports captured whatever the destination" },
	[F_OUTBOUND_PORTS_EXCLUDE] = { 'o', "istio-local-outbound-ports-exclude", "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", NULL, FT_STRING, "",
		"outbound ports (TCP and UDP) never captured" },
	[F_KUBE_VIRT_INTERFACES] = { 'k', "kube-virt-interfaces", "KUBE_VIRT_INTERFACES", NULL, FT_STRING, "",
		"interfaces whose inbound traffic is treated as outbound" },
	[F_TPROXY_MARK] = { 't', "istio-inbound-tproxy-mark", "ISTIO_INBOUND_TPROXY_MARK", NULL, FT_STRING, "1337",
		"packet mark used in TPROXY mode" },
	[F_TPROXY_TABLE] = { 'r', "istio-inbound-tproxy-route-table", "ISTIO_INBOUND_TPROXY_ROUTE_TABLE", NULL, FT_STRING, "133",
		"policy routing table used in TPROXY mode" },
	[F_DRY_RUN] = { 'n', "dry-run", "DRY_RUN", NULL, FT_BOOL, "false",
		"print the rules instead of applying them" },
	[F_PROBE_PORT] = { 0, "iptables-probe-port", "IPTABLES_PROBE_PORT", NULL, FT_STRING, "15002",
		"original destination port of the validation probe" },
	[F_PROBE_TIMEOUT] = { 0, "probe-timeout", "PROBE_TIMEOUT", NULL, FT_STRING, "5s",
		"how long --run-validation tries (Go duration)" },
	[F_SKIP_RULE_APPLY] = { 0, "skip-rule-apply", "SKIP_RULE_APPLY", NULL, FT_BOOL, "false",
		"do not program any rule (with --run-validation)" },
	[F_RUN_VALIDATION] = { 0, "run-validation", "RUN_VALIDATION", NULL, FT_BOOL, "false",
		"check that the rules redirect a probe connection" },
	[F_REDIRECT_DNS] = { 0, "redirect-dns", "REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE", FT_BOOL, "false",
		"redirect DNS (port 53) to the agent on 15053" },
	[F_CAPTURE_ALL_DNS] = { 0, "capture-all-dns", "CAPTURE_ALL_DNS", NULL, FT_BOOL, "false",
		"capture DNS to any server, not only resolv.conf's" },
	[F_DROP_INVALID] = { 0, "drop-invalid", "DROP_INVALID", "INVALID_DROP", FT_BOOL, "false",
		"drop packets conntrack considers INVALID" },
	[F_DUAL_STACK] = { 0, "dual-stack", "DUAL_STACK", "ISTIO_DUAL_STACK", FT_BOOL, "false",
		"program IPv6 rules when the pod has any IPv6 address" },
	[F_NETWORK_NAMESPACE] = { 0, "network-namespace", "NETWORK_NAMESPACE", NULL, FT_STRING, "",
		"network namespace (path) to program instead of the current one" },
	[F_CNI_MODE] = { 0, "cni-mode", "CNI_MODE", NULL, FT_BOOL, "false",
		"called from a CNI plugin: per-pod xtables lock" },
	[F_RECONCILE] = { 0, "reconcile", "RECONCILE", NULL, FT_BOOL, "false",
		"replace rules that differ from the wanted ones" },
	[F_CLEANUP_ONLY] = { 0, "cleanup-only", "CLEANUP_ONLY", NULL, FT_BOOL, "false",
		"remove the rules and chains, then exit" },
	[F_FORCE_APPLY] = { 0, "force-apply", "FORCE_APPLY", NULL, FT_BOOL, "false",
		"apply without checking what is already there" },
	[F_NATIVE_NFTABLES] = { 0, "native-nftables", "NATIVE_NFTABLES", NULL, FT_BOOL, "false",
		"program nftables directly (one nft transaction)" },
	[F_FORCE_IPTABLES_BINARY] = { 0, "force-iptables-binary", "FORCE_IPTABLES_BINARY", NULL, FT_STRING, "",
		"use iptables 'legacy' or 'nft' instead of detecting" },
	[F_OWNER_GROUPS] = { 0, NULL, "ISTIO_OUTBOUND_OWNER_GROUPS", NULL, FT_STRING, "*",
		"groups whose outbound traffic is captured" },
	[F_OWNER_GROUPS_EXCLUDE] = { 0, NULL, "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", NULL, FT_STRING, "",
		"groups whose outbound traffic is not captured" },
	[F_IPV4_LOOPBACK_CIDR] = { 0, NULL, "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", NULL, FT_STRING, "127.0.0.1/32",
		"IPv4 loopback range treated as localhost" },
	[F_ENVOY_USER] = { 0, NULL, "ENVOY_USER", NULL, FT_STRING, "istio-proxy",
		"user whose uid is the default -u" },
	[F_LOG_OUTPUT_LEVEL] = { 0, "log_output_level", NULL, NULL, FT_STRING, "default:info",
		"pilot-agent log level, e.g. default:debug" },
	[F_LOG_AS_JSON] = { 0, "log_as_json", NULL, NULL, FT_BOOL, "false", "accepted, ignored" },
	[F_LOG_TARGET] = { 0, "log_target", NULL, NULL, FT_STRING, "stdout", "accepted, ignored" },
	[F_LOG_CALLER] = { 0, "log_caller", NULL, NULL, FT_STRING, "", "accepted, ignored" },
	[F_LOG_STACKTRACE_LEVEL] = { 0, "log_stacktrace_level", NULL, NULL, FT_STRING, "default:none", "accepted, ignored" },
	[F_LOG_ROTATE] = { 0, "log_rotate", NULL, NULL, FT_STRING, "", "accepted, ignored" },
	[F_LOG_ROTATE_MAX_AGE] = { 0, "log_rotate_max_age", NULL, NULL, FT_STRING, "30", "accepted, ignored" },
	[F_LOG_ROTATE_MAX_BACKUPS] = { 0, "log_rotate_max_backups", NULL, NULL, FT_STRING, "1000", "accepted, ignored" },
	[F_LOG_ROTATE_MAX_SIZE] = { 0, "log_rotate_max_size", NULL, NULL, FT_STRING, "104857600", "accepted, ignored" },
	[F_HELP] = { 'h', "help", NULL, NULL, FT_BOOL, "false", "print this help" },
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

const char *flags_name(enum init_flag f)
{
	static char buf[F__COUNT][96];
	const struct flag_def *d = &defs[f];

	if (buf[f][0] != '\0')
		return buf[f];
	if (d->name == NULL)
		snprintf(buf[f], sizeof(buf[f]), "%s", d->env);
	else if (d->shortname)
		snprintf(buf[f], sizeof(buf[f]), "-%c/--%s", d->shortname, d->name);
	else
		snprintf(buf[f], sizeof(buf[f]), "--%s", d->name);
	return buf[f];
}

int flags_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "t", "T", "TRUE", "true", "True" };
	static const char *const no[] = { "0", "f", "F", "FALSE", "false", "False" };

	for (size_t i = 0; i < 6; i++) {
		if (strcmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int flags_parse_duration(const char *s, long *ms)
{
	/* Go time.ParseDuration units, expressed in nanoseconds. */
	static const struct {
		const char *unit;
		double ns;
	} units[] = {
		{ "ns", 1 }, { "us", 1e3 }, { "\xc2\xb5s", 1e3 }, { "\xce\xbcs", 1e3 },
		{ "ms", 1e6 }, { "s", 1e9 }, { "m", 60e9 }, { "h", 3600e9 },
	};
	double total = 0;
	const char *p = s;
	bool neg = false;

	if (*p == '-' || *p == '+')
		neg = (*p++ == '-');
	if (strcmp(p, "0") == 0) {
		*ms = 0;
		return 0;
	}
	if (*p == '\0')
		return -EINVAL;
	while (*p != '\0') {
		char *end;
		double v;
		size_t best = 0, ulen = 0;

		if (!isdigit((unsigned char)*p) && *p != '.')
			return -EINVAL;
		errno = 0;
		v = strtod(p, &end);
		if (end == p || errno != 0)
			return -EINVAL;
		/* strtod also takes exponents and hex; Go does not. */
		for (const char *q = p; q < end; q++)
			if (!isdigit((unsigned char)*q) && *q != '.')
				return -EINVAL;
		p = end;
		/* longest unit that matches ("ms" before "m") */
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t l = strlen(units[i].unit);
			if (strncmp(p, units[i].unit, l) == 0 && l > ulen) {
				best = i;
				ulen = l;
			}
		}
		if (ulen == 0)
			return -EINVAL;
		total += v * units[best].ns;
		p += ulen;
	}
	if (neg || total / 1e6 > (double)LONG_MAX)
		return -EINVAL;
	*ms = (long)(total / 1e6);
	return 0;
}

void strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

int strlist_add(struct strlist *l, const char *s)
{
	char **nv = realloc(l->v, (l->n + 1) * sizeof(*nv));

	if (nv == NULL)
		return -ENOMEM;
	l->v = nv;
	if ((l->v[l->n] = strdup(s)) == NULL)
		return -ENOMEM;
	l->n++;
	return 0;
}

int strlist_split(struct strlist *l, const char *s)
{
	const char *p = s;

	while (p != NULL && *p != '\0') {
		const char *comma = strchr(p, ',');
		const char *end = comma ? comma : p + strlen(p);
		char item[256];
		size_t len;

		while (p < end && isspace((unsigned char)*p))
			p++;
		while (end > p && isspace((unsigned char)end[-1]))
			end--;
		len = (size_t)(end - p);
		if (len >= sizeof(item))
			len = sizeof(item) - 1;
		/* istio's config.Split drops empty items ("a,,b"). */
		if (len > 0) {
			memcpy(item, p, len);
			item[len] = '\0';
			if (strlist_add(l, item) < 0)
				return -ENOMEM;
		}
		p = comma ? comma + 1 : NULL;
	}
	return 0;
}

/* Strict unsigned decimal: digits only, no sign, no leading zero. */
static int parse_udec(const char *s, unsigned long long max, unsigned long long *out)
{
	unsigned long long v = 0;

	if (*s == '\0' || (s[0] == '0' && s[1] != '\0'))
		return -EINVAL;
	for (const char *p = s; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		v = v * 10 + (unsigned)(*p - '0');
		if (v > max)
			return -EINVAL;
	}
	*out = v;
	return 0;
}

static int parse_port(const char *s, char out[8])
{
	unsigned long long v;

	if (parse_udec(s, 65535, &v) < 0 || v == 0)
		return -EINVAL;
	snprintf(out, 8, "%hu", (unsigned short)v);
	return 0;
}

int cidr_parse(const char *s, struct cidr *c)
{
	char addr[64];
	const char *slash = strchr(s, '/');
	unsigned long long plen;
	unsigned char bin[16];
	char canon[INET6_ADDRSTRLEN];
	size_t alen;

	if (slash == NULL || slash == s)
		return -EINVAL;
	alen = (size_t)(slash - s);
	if (alen >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, addr, bin) == 1) {
		c->family = AF_INET;
		if (parse_udec(slash + 1, 32, &plen) < 0)
			return -EINVAL;
		c->loopback = bin[0] == 127;
	} else if (inet_pton(AF_INET6, addr, bin) == 1) {
		static const unsigned char one[16] = { [15] = 1 };
		c->family = AF_INET6;
		if (parse_udec(slash + 1, 128, &plen) < 0)
			return -EINVAL;
		c->loopback = memcmp(bin, one, 16) == 0;
	} else {
		return -EINVAL;
	}
	/* istio keeps the prefix as given (netip.Prefix.String does not mask);
	 * only the address spelling is canonicalised. */
	inet_ntop(c->family, bin, canon, sizeof(canon));
	snprintf(c->text, sizeof(c->text), "%s/%llu", canon, plen);
	return 0;
}

/* Does the text name a long option of the table?  Returns its index or -1. */
static int find_long(const char *name, size_t len)
{
	for (int i = 0; i < F__COUNT; i++) {
		if (defs[i].name != NULL && strlen(defs[i].name) == len &&
		    strncmp(defs[i].name, name, len) == 0)
			return i;
	}
	return -1;
}

static int find_short(char c)
{
	for (int i = 0; i < F__COUNT; i++)
		if (defs[i].shortname == c && c != 0)
			return i;
	return -1;
}

int flags_parse(struct init_config *c, int argc, char **argv, char *err,
		size_t errlen)
{
	int i = 1;

	memset(c, 0, sizeof(*c));
	/* pilot-agent's sub-command word: "outrigger-init istio-iptables ..." */
	if (i < argc && strcmp(argv[i], "istio-iptables") == 0)
		i++;
	for (; i < argc; i++) {
		const char *a = argv[i];
		const char *value = NULL;
		int f = -1;
		size_t nlen;
		const char *eq;

		if (strcmp(a, "--") == 0) {
			if (i + 1 < argc) {
				seterr(err, errlen, "unexpected argument \"%s\"", argv[i + 1]);
				return -EINVAL;
			}
			break;
		}
		if (a[0] != '-' || a[1] == '\0') {
			seterr(err, errlen, "unexpected argument \"%s\" (outrigger-init takes only flags)", a);
			return -EINVAL;
		}
		if (a[1] == '-') {
			const char *name = a + 2;
			eq = strchr(name, '=');
			nlen = eq ? (size_t)(eq - name) : strlen(name);
			f = find_long(name, nlen);
			if (f < 0) {
				seterr(err, errlen, "unknown flag \"--%.*s\"", (int)nlen, name);
				return -EINVAL;
			}
			if (eq)
				value = eq + 1;
		} else {
			const char *name = a + 1;
			eq = strchr(name, '=');
			nlen = eq ? (size_t)(eq - name) : strlen(name);
			/* Go's flag package: "-dry-run" is a long name. */
			if (nlen > 1 && (f = find_long(name, nlen)) >= 0) {
				if (eq)
					value = eq + 1;
			} else {
				f = find_short(name[0]);
				if (f < 0) {
					seterr(err, errlen, "unknown shorthand flag '%c' in \"%s\"", name[0], a);
					return -EINVAL;
				}
				if (name[1] == '=')
					value = name + 2;
				else if (name[1] != '\0') {
					if (defs[f].type == FT_BOOL) {
						seterr(err, errlen, "unknown flag \"%s\"", a);
						return -EINVAL;
					}
					value = name + 1; /* "-p15001" */
				}
			}
		}
		if (value == NULL) {
			if (defs[f].type == FT_BOOL) {
				value = "true";
			} else if (i + 1 < argc) {
				value = argv[++i]; /* "-x ''" gives an empty value */
			} else {
				seterr(err, errlen, "flag needs an argument: %s", a);
				return -EINVAL;
			}
		}
		if (defs[f].type == FT_BOOL) {
			bool b;
			if (flags_parse_bool(value, &b) < 0) {
				seterr(err, errlen, "invalid boolean value \"%s\" for flag %s",
				       value, flags_name(f));
				return -EINVAL;
			}
		}
		c->val[f] = value;
		c->src[f] = SRC_FLAG;
		c->src_name[f] = a;
	}
	if (c->val[F_HELP] != NULL && strcmp(c->val[F_HELP], "false") != 0)
		return 1;

	/* Environment, then defaults, for what the command line left unset.
	 * An empty variable counts as unset (istio's env.Register). */
	for (int f = 0; f < F__COUNT; f++) {
		if (c->src[f] == SRC_FLAG)
			continue;
		if (defs[f].env != NULL) {
			const char *e = getenv(defs[f].env);
			if (e != NULL && *e != '\0') {
				c->val[f] = e;
				c->src[f] = SRC_ENV;
				c->src_name[f] = defs[f].env;
				continue;
			}
		}
		c->val[f] = defs[f].def;
		c->src[f] = SRC_DEFAULT;
		c->src_name[f] = flags_name(f);
	}

	/* -u default: the uid of $ENVOY_USER (istio-proxy), else 1337. */
	if (c->val[F_PROXY_UID] == NULL) {
		struct passwd *pw = getpwnam(c->val[F_ENVOY_USER]);
		if (pw != NULL)
			snprintf(c->uid_default, sizeof(c->uid_default), "%u", (unsigned)pw->pw_uid);
		else
			snprintf(c->uid_default, sizeof(c->uid_default), "1337");
		c->val[F_PROXY_UID] = c->uid_default;
		if (pw != NULL && pw->pw_gid != pw->pw_uid && c->val[F_PROXY_GID] == NULL)
			ilog_warn("user %s has uid %u but gid %u; -g defaults to the uid as in istio-iptables, pass -g %u if the proxy runs with its own group",
				  c->val[F_ENVOY_USER], (unsigned)pw->pw_uid,
				  (unsigned)pw->pw_gid, (unsigned)pw->pw_gid);
	}
	/* -g default: the same text as -u (istio config.go). */
	if (c->val[F_PROXY_GID] == NULL)
		c->val[F_PROXY_GID] = c->val[F_PROXY_UID];
	return 0;
}

/* The reasons bad() gives for the kinds of value used more than once. */
#define WHY_PORT  "not a port number (1-65535)"
#define WHY_ID    "not a numeric id (0-4294967294)"
#define WHY_GROUP "not a group name or gid"
#define WHY_IFACE "not an interface name"

/* Error helper: "invalid value "V" for flag -p/--envoy-port: why". */
static int bad(const struct init_config *c, enum init_flag f, const char *value,
	       char *err, size_t errlen, const char *why)
{
	if (c->src[f] == SRC_ENV)
		seterr(err, errlen, "invalid value \"%s\" for environment variable %s (%s): %s",
		       value, defs[f].env, defs[f].name ? flags_name(f) : "no flag", why);
	else if (defs[f].name == NULL)
		seterr(err, errlen, "invalid value \"%s\" for environment variable %s: %s",
		       value, defs[f].env, why);
	else
		seterr(err, errlen, "invalid value \"%s\" for flag %s: %s", value,
		       flags_name(f), why);
	return -EINVAL;
}

/* The item checks of parse_list(), one per kind of list: true when the
 * item is acceptable as it stands (it is stored as given). */

/* Strict decimal, so the text is already what parse_port() would print. */
static bool port_ok(const char *s)
{
	char p[8];

	return parse_port(s, p) == 0;
}

/* A uid or gid: (uid_t)-1 means "no change" to the kernel, so refuse it. */
static bool id_ok(const char *s)
{
	unsigned long long v;

	return parse_udec(s, 4294967294ULL, &v) == 0;
}

/* A group for -m owner --gid-owner: a number or a plain group name. */
static bool group_ok(const char *g)
{
	bool ok = strlen(g) < 64 && g[0] != '-' && g[0] != '!';

	for (const char *p = g; *p && ok; p++)
		ok = isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.';
	return ok;
}

/* IFNAMSIZ is 16 with the NUL; iptables takes a trailing '+'. */
static bool iface_ok(const char *n)
{
	bool ok = strlen(n) < 16 && n[0] != '-' && n[0] != '!';

	for (const char *p = n; *p && ok; p++)
		ok = isgraph((unsigned char)*p) && *p != '/' && *p != '"' &&
		     *p != '\'' && *p != '{' && *p != '}' && *p != ';';
	return ok;
}

static bool cidr_ok(const char *s)
{
	struct cidr c;

	return cidr_parse(s, &c) == 0;
}

/* Split option f's value into out (istio config.Split) and check every item
 * with ok; the first refused item is reported with why.  0, -EINVAL or
 * -ENOMEM; out holds the items either way (flags_free releases them). */
static int parse_list(struct init_config *c, enum init_flag f, struct strlist *out,
		      bool (*ok)(const char *item), const char *why, char *err,
		      size_t errlen)
{
	if (strlist_split(out, c->val[f]) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < out->n; i++)
		if (!ok(out->v[i]))
			return bad(c, f, out->v[i], err, errlen, why);
	return 0;
}

/* A CIDR list (-i without '*', -x): parse_list(), then each item typed. */
static int parse_cidrs(struct init_config *c, enum init_flag f, struct cidrlist *out,
		       const char *why, char *err, size_t errlen)
{
	struct strlist items = { 0 };
	int rc = parse_list(c, f, &items, cidr_ok, why, err, errlen);

	if (rc == 0 && items.n > 0 && (out->v = calloc(items.n, sizeof(*out->v))) == NULL)
		rc = -ENOMEM;
	for (size_t i = 0; rc == 0 && i < items.n; i++)
		cidr_parse(items.v[i], &out->v[out->n++]);
	strlist_free(&items);
	return rc;
}

static int get_bool(struct init_config *c, enum init_flag f, bool *out, char *err,
		    size_t errlen)
{
	if (flags_parse_bool(c->val[f], out) < 0)
		return bad(c, f, c->val[f], err, errlen, "not a boolean (true/false)");
	/* istio config.go ORs the legacy aliases in. */
	if (defs[f].alias_env != NULL) {
		const char *a = getenv(defs[f].alias_env);
		bool b;
		if (a != NULL && *a != '\0') {
			if (flags_parse_bool(a, &b) < 0) {
				seterr(err, errlen, "invalid value \"%s\" for environment variable %s (alias of %s): not a boolean (true/false)",
				       a, defs[f].alias_env, flags_name(f));
				return -EINVAL;
			}
			*out = *out || b;
		}
	}
	return 0;
}

int flags_finish(struct init_config *c, char *err, size_t errlen)
{
	static const struct {
		enum init_flag f;
		size_t off;
	} bools[] = {
		{ F_DRY_RUN, offsetof(struct init_config, dry_run) },
		{ F_SKIP_RULE_APPLY, offsetof(struct init_config, skip_rule_apply) },
		{ F_RUN_VALIDATION, offsetof(struct init_config, run_validation) },
		{ F_REDIRECT_DNS, offsetof(struct init_config, redirect_dns) },
		{ F_CAPTURE_ALL_DNS, offsetof(struct init_config, capture_all_dns) },
		{ F_DROP_INVALID, offsetof(struct init_config, drop_invalid) },
		{ F_DUAL_STACK, offsetof(struct init_config, dual_stack) },
		{ F_CNI_MODE, offsetof(struct init_config, cni_mode) },
		{ F_RECONCILE, offsetof(struct init_config, reconcile) },
		{ F_CLEANUP_ONLY, offsetof(struct init_config, cleanup_only) },
		{ F_FORCE_APPLY, offsetof(struct init_config, force_apply) },
		{ F_NATIVE_NFTABLES, offsetof(struct init_config, native_nftables) },
	};
	static const struct {
		enum init_flag f;
		size_t off;
	} ports[] = {
		{ F_ENVOY_PORT, offsetof(struct init_config, proxy_port) },
		{ F_INBOUND_CAPTURE_PORT, offsetof(struct init_config, inbound_capture_port) },
		{ F_INBOUND_TUNNEL_PORT, offsetof(struct init_config, inbound_tunnel_port) },
	};
	const char *v;
	unsigned long long n;
	bool b;
	int rc;

	for (size_t i = 0; i < sizeof(bools) / sizeof(bools[0]); i++) {
		if ((rc = get_bool(c, bools[i].f, &b, err, errlen)) < 0)
			return rc;
		*(bool *)((char *)c + bools[i].off) = b;
	}
	if ((rc = get_bool(c, F_LOG_AS_JSON, &b, err, errlen)) < 0)
		return rc;

	for (size_t i = 0; i < sizeof(ports) / sizeof(ports[0]); i++) {
		v = c->val[ports[i].f];
		if (parse_port(v, (char *)c + ports[i].off) < 0)
			return bad(c, ports[i].f, v, err, errlen, WHY_PORT);
	}
	v = c->val[F_PROBE_PORT];
	if (parse_udec(v, 65535, &n) < 0 || n == 0)
		return bad(c, F_PROBE_PORT, v, err, errlen, WHY_PORT);
	c->probe_port = (unsigned)n;

	if ((rc = parse_list(c, F_PROXY_UID, &c->uids, id_ok, WHY_ID, err, errlen)) < 0 ||
	    (rc = parse_list(c, F_PROXY_GID, &c->gids, id_ok, WHY_ID, err, errlen)) < 0)
		return rc;

	v = c->val[F_MODE];
	if (strcmp(v, "") == 0 || strcmp(v, "REDIRECT") == 0)
		c->mode = MODE_REDIRECT;
	else if (strcmp(v, "TPROXY") == 0)
		c->mode = MODE_TPROXY;
	else
		return bad(c, F_MODE, v, err, errlen, "must be REDIRECT or TPROXY");

	v = c->val[F_INBOUND_PORTS];
	if (strcmp(v, "*") == 0)
		c->inbound_all = true;
	else if ((rc = parse_list(c, F_INBOUND_PORTS, &c->inbound_ports, port_ok, WHY_PORT,
				  err, errlen)) < 0)
		return rc;
	if ((rc = parse_list(c, F_LOCAL_EXCLUDE_PORTS, &c->local_exclude_ports, port_ok,
			     WHY_PORT, err, errlen)) < 0 ||
	    (rc = parse_list(c, F_OUTBOUND_PORTS, &c->outbound_ports, port_ok, WHY_PORT,
			     err, errlen)) < 0 ||
	    (rc = parse_list(c, F_OUTBOUND_PORTS_EXCLUDE, &c->outbound_ports_exclude,
			     port_ok, WHY_PORT, err, errlen)) < 0 ||
	    (rc = parse_list(c, F_EXCLUDE_INTERFACES, &c->exclude_ifaces, iface_ok,
			     WHY_IFACE, err, errlen)) < 0 ||
	    (rc = parse_list(c, F_KUBE_VIRT_INTERFACES, &c->kubevirt_ifaces, iface_ok,
			     WHY_IFACE, err, errlen)) < 0)
		return rc;

	v = c->val[F_SERVICE_CIDR];
	if (strcmp(v, "*") == 0)
		c->include_cidrs.wildcard = true;
	else if ((rc = parse_cidrs(c, F_SERVICE_CIDR, &c->include_cidrs,
				   "not '*' or an address/prefix-length CIDR", err, errlen)) < 0)
		return rc;
	v = c->val[F_SERVICE_EXCLUDE_CIDR];
	/* istio run.go: "invalid value for OUTBOUND_IP_RANGES_EXCLUDE" on '*'. */
	if (strcmp(v, "*") == 0)
		return bad(c, F_SERVICE_EXCLUDE_CIDR, v, err, errlen,
			   "'*' is not allowed here (it would exclude everything)");
	if ((rc = parse_cidrs(c, F_SERVICE_EXCLUDE_CIDR, &c->exclude_cidrs,
			      "not an address/prefix-length CIDR", err, errlen)) < 0)
		return rc;

	v = c->val[F_TPROXY_MARK];
	if (parse_udec(v, 4294967295ULL, &n) < 0 || n == 0)
		return bad(c, F_TPROXY_MARK, v, err, errlen, "not a packet mark (1-4294967295)");
	snprintf(c->tproxy_mark, sizeof(c->tproxy_mark), "%llu", n);
	v = c->val[F_TPROXY_TABLE];
	if (parse_udec(v, 4294967295ULL, &n) < 0 || n == 0 || (n >= 253 && n <= 255))
		return bad(c, F_TPROXY_TABLE, v, err, errlen,
			   "not a routing table id (1-4294967295, not 253-255: default, main, local)");
	snprintf(c->tproxy_table, sizeof(c->tproxy_table), "%llu", n);

	v = c->val[F_PROBE_TIMEOUT];
	if (flags_parse_duration(v, &c->probe_timeout_ms) < 0 || c->probe_timeout_ms <= 0)
		return bad(c, F_PROBE_TIMEOUT, v, err, errlen,
			   "not a positive Go duration (e.g. 5s, 500ms, 1m30s)");

	c->network_namespace = c->val[F_NETWORK_NAMESPACE];

	v = c->val[F_FORCE_IPTABLES_BINARY];
	if (strcmp(v, "") == 0)
		c->force_binary = XT_FORCE_NONE;
	else if (strcmp(v, "legacy") == 0)
		c->force_binary = XT_FORCE_LEGACY;
	else if (strcmp(v, "nft") == 0)
		c->force_binary = XT_FORCE_NFT;
	else
		return bad(c, F_FORCE_IPTABLES_BINARY, v, err, errlen, "must be legacy or nft");

	/* istio config.ParseInterceptFilter: the exclude list only counts when
	 * the include list is '*'. */
	v = c->val[F_OWNER_GROUPS];
	if (strcmp(v, "*") == 0) {
		c->owner_groups_all = true;
	} else {
		if ((rc = parse_list(c, F_OWNER_GROUPS, &c->owner_groups, group_ok, WHY_GROUP,
				     err, errlen)) < 0)
			return rc;
		if (c->owner_groups.n > INIT_MAX_OWNER_GROUPS) {
			char why[96];
			snprintf(why, sizeof(why), "more than %d groups (%zu)",
				 INIT_MAX_OWNER_GROUPS, c->owner_groups.n);
			return bad(c, F_OWNER_GROUPS, v, err, errlen, why);
		}
	}
	if ((rc = parse_list(c, F_OWNER_GROUPS_EXCLUDE, &c->owner_groups_exclude, group_ok,
			     WHY_GROUP, err, errlen)) < 0)
		return rc;

	v = c->val[F_IPV4_LOOPBACK_CIDR];
	{
		struct cidr lc;
		const char *slash = strchr(v, '/');
		if (cidr_parse(v, &lc) < 0 || lc.family != AF_INET || !lc.loopback ||
		    atoi(slash + 1) < 8)
			return bad(c, F_IPV4_LOOPBACK_CIDR, v, err, errlen,
				   "not an IPv4 loopback CIDR with a prefix of /8 to /32");
		snprintf(c->ipv4_loopback_cidr, sizeof(c->ipv4_loopback_cidr), "%s", lc.text);
	}

	v = c->val[F_LOG_OUTPUT_LEVEL];
	{
		/* "default:debug,foo:info" or "debug": the default scope decides. */
		struct strlist scopes = { 0 };
		if (strlist_split(&scopes, v) < 0)
			return -ENOMEM;
		for (size_t i = 0; i < scopes.n; i++) {
			char *colon = strchr(scopes.v[i], ':');
			const char *lvl = colon ? colon + 1 : scopes.v[i];
			enum ilog_level l;
			if (colon && strncmp(scopes.v[i], "default:", 8) != 0)
				continue;
			if (ilog_level_parse(lvl, &l) < 0) {
				strlist_free(&scopes);
				return bad(c, F_LOG_OUTPUT_LEVEL, v, err, errlen,
					   "level must be none, error, warn, info or debug");
			}
			ilog_threshold = l;
		}
		strlist_free(&scopes);
	}
	return 0;
}

void flags_free(struct init_config *c)
{
	strlist_free(&c->uids);
	strlist_free(&c->gids);
	strlist_free(&c->inbound_ports);
	strlist_free(&c->local_exclude_ports);
	strlist_free(&c->exclude_ifaces);
	strlist_free(&c->outbound_ports);
	strlist_free(&c->outbound_ports_exclude);
	strlist_free(&c->kubevirt_ifaces);
	strlist_free(&c->owner_groups);
	strlist_free(&c->owner_groups_exclude);
	free(c->include_cidrs.v);
	free(c->exclude_cidrs.v);
	c->include_cidrs.v = c->exclude_cidrs.v = NULL;
	c->include_cidrs.n = c->exclude_cidrs.n = 0;
}

void flags_usage(FILE *out)
{
	fprintf(out,
		"usage: outrigger-init [istio-iptables] [flags]\n"
		"\n"
		"Program a pod's traffic interception for the outrigger (or Envoy) sidecar;\n"
		"a drop-in for istio-iptables.  Flags take precedence over their environment\n"
		"variables, which take precedence over the defaults.\n"
		"\nFlags:\n");
	for (int f = 0; f < F__COUNT; f++) {
		const struct flag_def *d = &defs[f];
		char left[80];

		if (d->name == NULL)
			continue;
		if (d->shortname)
			snprintf(left, sizeof(left), "-%c, --%s%s", d->shortname, d->name,
				 d->type == FT_STRING ? " VALUE" : "");
		else
			snprintf(left, sizeof(left), "    --%s%s", d->name,
				 d->type == FT_STRING ? " VALUE" : "");
		fprintf(out, "  %-44s %s", left, d->help);
		if (d->def != NULL && d->def[0] != '\0' && d->type == FT_STRING)
			fprintf(out, " (default %s)", d->def);
		if (d->env != NULL)
			fprintf(out, " [$%s%s%s]", d->env, d->alias_env ? ", $" : "",
				d->alias_env ? d->alias_env : "");
		fputc('\n', out);
	}
	fprintf(out, "\nEnvironment only:\n");
	for (int f = 0; f < F__COUNT; f++) {
		const struct flag_def *d = &defs[f];
		if (d->name != NULL)
			continue;
		fprintf(out, "  %-44s %s (default '%s')\n", d->env, d->help, d->def);
	}
	fprintf(out,
		"\nExit status: 0 success, 1 the rules could not be applied, 2 invalid\n"
		"usage or value, 126 --run-validation failed.\n");
}
