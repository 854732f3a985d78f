/* flags: outrigger-init's command line and environment, istio-iptables style.
 *
 * One table (flags.c) gives every flag its short and long name, the
 * environment variable bound to it, the default and the help line, exactly
 * as istio-iptables (tools/istio-iptables/pkg/cmd/root.go) declares them, so
 * an injection template or a VM's cluster.env written for Istio works
 * unchanged.  Precedence is istio's: a flag on the command line wins over its
 * environment variable, which wins over the default.
 *
 * Parsing (flags_parse) only collects text; flags_finish() then checks every
 * value and converts it into the typed fields below.  Nothing is touched on
 * the system before both succeed, and an error names the flag (or the
 * environment variable) and the value. */
#ifndef OR_INIT_FLAGS_H
#define OR_INIT_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Every option outrigger-init knows, in the order --help lists them. */
enum init_flag {
	F_ENVOY_PORT,
	F_INBOUND_CAPTURE_PORT,
	F_INBOUND_TUNNEL_PORT,
	F_PROXY_UID,
	F_PROXY_GID,
	F_MODE,
	F_INBOUND_PORTS,
	F_LOCAL_EXCLUDE_PORTS,
	F_EXCLUDE_INTERFACES,
	F_SERVICE_CIDR,
	F_SERVICE_EXCLUDE_CIDR,
	F_OUTBOUND_PORTS,
	F_OUTBOUND_PORTS_EXCLUDE,
	F_KUBE_VIRT_INTERFACES,
	F_TPROXY_MARK,
	F_TPROXY_TABLE,
	F_DRY_RUN,
	F_PROBE_PORT,
	F_PROBE_TIMEOUT,
	F_SKIP_RULE_APPLY,
	F_RUN_VALIDATION,
	F_REDIRECT_DNS,
	F_CAPTURE_ALL_DNS,
	F_DROP_INVALID,
	F_DUAL_STACK,
	F_NETWORK_NAMESPACE,
	F_CNI_MODE,
	F_RECONCILE,
	F_CLEANUP_ONLY,
	F_FORCE_APPLY,
	F_NATIVE_NFTABLES,
	F_FORCE_IPTABLES_BINARY,
	/* environment only (istio constants.go): no flag */
	F_OWNER_GROUPS,
	F_OWNER_GROUPS_EXCLUDE,
	F_IPV4_LOOPBACK_CIDR,
	F_ENVOY_USER,
	/* pilot-agent's shared logging flags: accepted; the level is used */
	F_LOG_OUTPUT_LEVEL,
	F_LOG_AS_JSON,
	F_LOG_TARGET,
	F_LOG_CALLER,
	F_LOG_STACKTRACE_LEVEL,
	F_LOG_ROTATE,
	F_LOG_ROTATE_MAX_AGE,
	F_LOG_ROTATE_MAX_BACKUPS,
	F_LOG_ROTATE_MAX_SIZE,
	F_HELP,
	F__COUNT
};

/* Where a value came from; errors name the flag or the variable. */
enum flag_src {
	SRC_DEFAULT,
	SRC_ENV,
	SRC_FLAG,
};

/* A list of strings, each owned (malloc) by the list. */
struct strlist {
	char **v;
	size_t n;
};

/* One CIDR from -i/-x, as given but with the address in canonical form. */
struct cidr {
	int family;       /* AF_INET or AF_INET6 */
	char text[64];    /* "10.0.0.0/8", "fd00::/8" */
	bool loopback;    /* address is in 127/8 or ::1 */
};

/* -i/-x: "*" or a CIDR list (v4 and v6 mixed, split per family later). */
struct cidrlist {
	bool wildcard;
	struct cidr *v;
	size_t n;
};

/* Inbound interception mode (-m). */
enum init_mode {
	MODE_REDIRECT,
	MODE_TPROXY,
};

/* Which iptables binaries to use (--force-iptables-binary). */
enum xt_force {
	XT_FORCE_NONE,
	XT_FORCE_LEGACY,
	XT_FORCE_NFT,
};

/* The whole configuration.  val/src are filled by flags_parse(); the typed
 * fields by flags_finish().  Release with flags_free(). */
struct init_config {
	const char *val[F__COUNT];     /* text of each option (not owned) */
	enum flag_src src[F__COUNT];
	const char *src_name[F__COUNT]; /* spelling used: "-p", "--dry-run", env name */
	char uid_default[24];           /* uid of $ENVOY_USER, when it exists */

	/* ports, canonical decimal text (rules print them) */
	char proxy_port[8];
	char inbound_capture_port[8];
	char inbound_tunnel_port[8];
	unsigned probe_port;
	struct strlist uids;            /* -u, numeric */
	struct strlist gids;            /* -g, numeric */
	enum init_mode mode;
	bool inbound_all;               /* -b '*' */
	struct strlist inbound_ports;   /* -b list */
	struct strlist local_exclude_ports; /* -d */
	struct strlist exclude_ifaces;  /* -c */
	struct cidrlist include_cidrs;  /* -i */
	struct cidrlist exclude_cidrs;  /* -x */
	struct strlist outbound_ports;  /* -q */
	struct strlist outbound_ports_exclude; /* -o */
	struct strlist kubevirt_ifaces; /* -k */
	char tproxy_mark[24];
	char tproxy_table[24];
	bool dry_run;
	long probe_timeout_ms;
	bool skip_rule_apply;
	bool run_validation;
	bool redirect_dns;
	bool capture_all_dns;
	bool drop_invalid;
	bool dual_stack;
	const char *network_namespace;  /* "" = current */
	bool cni_mode;
	bool reconcile;
	bool cleanup_only;
	bool force_apply;
	bool native_nftables;
	enum xt_force force_binary;
	bool owner_groups_all;          /* ISTIO_OUTBOUND_OWNER_GROUPS='*' */
	struct strlist owner_groups;    /* include list (when not '*') */
	struct strlist owner_groups_exclude;
	char ipv4_loopback_cidr[64];    /* "127.0.0.1/32" */
};

/* Exit codes (istio: constants.ValidationErrorCode = 126). */
#define INIT_EXIT_OK         0
#define INIT_EXIT_APPLY      1
#define INIT_EXIT_USAGE      2
#define INIT_EXIT_VALIDATION 126

/* Istio refuses more include owner groups than this (validation.go): they
 * are combined into a single "-m owner ! --gid-owner" rule. */
#define INIT_MAX_OWNER_GROUPS 64

/* Read argv (argv[0] is the program; a leading "istio-iptables" sub-command
 * word is skipped) and the environment into c->val/src.  Returns 0, 1 when
 * --help was asked for, or -EINVAL with a message in err (unknown flag,
 * missing value, bad boolean). */
int flags_parse(struct init_config *c, int argc, char **argv, char *err,
		size_t errlen);

/* Check every value and fill the typed fields.  Returns 0 or -EINVAL with
 * err naming the flag/variable and the value. */
int flags_finish(struct init_config *c, char *err, size_t errlen);

/* Release what flags_finish() allocated. */
void flags_free(struct init_config *c);

/* Print the --help text. */
void flags_usage(FILE *out);

/* Human name of option f for messages: "-p/--envoy-port" or the variable. */
const char *flags_name(enum init_flag f);

/* Parse a Go duration ("5s", "500ms", "1m30s", "1.5s") into milliseconds
 * (rounded down); 0 or -EINVAL. */
int flags_parse_duration(const char *s, long *ms);

/* Go strconv.ParseBool: 1 t T TRUE true True / 0 f F FALSE false False. */
int flags_parse_bool(const char *s, bool *out);

/* Split a comma list into l (empty items dropped, spaces trimmed, as
 * istio's config.Split).  0 or -ENOMEM. */
int strlist_split(struct strlist *l, const char *s);
/* Append a copy of s.  0 or -ENOMEM. */
int strlist_add(struct strlist *l, const char *s);
void strlist_free(struct strlist *l);

/* Parse "ADDR/LEN" into c; 0 or -EINVAL. */
int cidr_parse(const char *s, struct cidr *c);

#endif
