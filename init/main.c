/* main: outrigger-init, the pod's traffic interception helper.
 *
 * A drop-in for istio-iptables: invoked as "outrigger-init [flags]" or, as
 * pilot-agent's sub-command is, "outrigger-init istio-iptables [flags]".
 * The steps are istio's: read flags and environment, refuse bad input
 * before touching anything (exit 2), look at the pod (IPv6? DNS servers?),
 * build the rules, then print them (--dry-run), remove them
 * (--cleanup-only) or apply them (exit 1 on failure), and finally, with
 * --run-validation, prove they redirect (exit 126 on failure). */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apply.h"
#include "flags.h"
#include "ilog.h"
#include "nft.h"
#include "podinfo.h"
#include "rules.h"
#include "tproxy.h"
#include "validate.h"

/* Enter the pod's network namespace (--network-namespace, CNI mode). */
static int enter_netns(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		ilog_error("--network-namespace %s: %s", path, strerror(errno));
		return -errno;
	}
	if (setns(fd, CLONE_NEWNET) < 0) {
		int e = errno;
		ilog_error("--network-namespace %s: setns: %s", path, strerror(e));
		close(fd);
		return -e;
	}
	close(fd);
	return 0;
}

/* The pod facts, with the two test/diagnostic overrides documented in the
 * man page (OUTRIGGER_INIT_IPV6, OUTRIGGER_INIT_RESOLV_CONF). */
static int gather(const struct init_config *c, struct pod_facts *p)
{
	const char *force6 = getenv("OUTRIGGER_INIT_IPV6");
	const char *resolv = getenv("OUTRIGGER_INIT_RESOLV_CONF");
	int rc;

	if (force6 != NULL && *force6 != '\0') {
		if (flags_parse_bool(force6, &p->enable_ipv6) < 0) {
			ilog_error("invalid value \"%s\" for environment variable OUTRIGGER_INIT_IPV6: not a boolean", force6);
			return -EINVAL;
		}
	} else if ((rc = podinfo_detect_ipv6(c->dual_stack, &p->enable_ipv6)) < 0) {
		ilog_warn("cannot list the pod's addresses (%s): IPv6 disabled", strerror(-rc));
		p->enable_ipv6 = false;
	}
	ilog_info("ENABLE_INBOUND_IPV6=%s", p->enable_ipv6 ? "true" : "false");
	if (c->redirect_dns && !c->capture_all_dns) {
		if (resolv == NULL || *resolv == '\0')
			resolv = "/etc/resolv.conf";
		if ((rc = podinfo_read_resolv(resolv, &p->dns_v4, &p->dns_v6)) < 0)
			ilog_warn("cannot read %s: %s", resolv, strerror(-rc));
	}
	return 0;
}

/* --dry-run: the restore input (or nft script) on stdout; what else would
 * run (routes, cleanup commands) on stderr. */
static int dry_run(const struct init_config *c, const struct ruleset *rs,
		   const struct pod_facts *p)
{
	char *text;
	int err = 0;

	if (c->cleanup_only) {
		if (c->native_nftables) {
			fputs(nft_cleanup_script(), stdout);
			return 0;
		}
		for (unsigned fam = RULE_V4; fam <= RULE_V6; fam++) {
			struct cmdlist cl = { 0 };
			if (rules_cleanup(rs, fam, true, &cl) < 0) {
				cmdlist_free(&cl);
				return -ENOMEM;
			}
			for (size_t i = 0; i < cl.n; i++) {
				fputs(fam == RULE_V6 ? "ip6tables" : "iptables", stdout);
				for (char **a = cl.v[i]; *a; a++)
					printf(" %s", *a);
				putchar('\n');
			}
			cmdlist_free(&cl);
		}
		return 0;
	}
	if (c->native_nftables)
		text = nft_script(rs, p->enable_ipv6, &err);
	else
		text = rules_dry_run_text(rs, p->enable_ipv6);
	if (text == NULL)
		return err ? err : -ENOMEM;
	fputs(text, stdout);
	free(text);
	if (c->mode == MODE_TPROXY)
		tproxy_setup(c, p->enable_ipv6, true);
	if (p->enable_ipv6)
		tproxy_ipv6_lo(true);
	return 0;
}

/* Apply everything; on failure leave nothing half-installed. */
static int apply(const struct init_config *c, const struct ruleset *rs,
		 const struct pod_facts *p)
{
	int rc;

	if (c->native_nftables)
		rc = apply_nft(rs, p->enable_ipv6);
	else
		rc = apply_iptables(c, rs, p->enable_ipv6);
	if (rc < 0)
		return rc;
	if (c->mode == MODE_TPROXY && (rc = tproxy_setup(c, p->enable_ipv6, false)) < 0)
		goto undo;
	if (p->enable_ipv6 && (rc = tproxy_ipv6_lo(false)) < 0)
		goto undo;
	return 0;
undo:
	ilog_error("removing the rules again after the failure");
	if (c->native_nftables)
		cleanup_nft();
	else
		cleanup_iptables(c, rs);
	tproxy_cleanup(c);
	return rc;
}

int main(int argc, char **argv)
{
	struct init_config c;
	struct pod_facts p = { 0 };
	struct ruleset rs = { 0 };
	char err[512] = "";
	int rc, status = INIT_EXIT_OK;

	rc = flags_parse(&c, argc, argv, err, sizeof(err));
	if (rc == 1) {
		flags_usage(stdout);
		return INIT_EXIT_OK;
	}
	if (rc < 0 || (rc = flags_finish(&c, err, sizeof(err))) < 0) {
		fprintf(stderr, "outrigger-init: %s\n",
			err[0] ? err : "out of memory");
		fprintf(stderr, "Run 'outrigger-init --help' for usage.\n");
		flags_free(&c);
		return INIT_EXIT_USAGE;
	}
	if (!c.owner_groups_all && c.owner_groups_exclude.n > 0)
		ilog_warn("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE is ignored because ISTIO_OUTBOUND_OWNER_GROUPS is not '*'");
	if (c.cni_mode && c.network_namespace[0] != '\0')
		/* istio: the pod's netns path is the pod-scoped xtables lock
		 * (iptables >= 1.8.6 reads XTABLES_LOCKFILE). */
		setenv("XTABLES_LOCKFILE", c.network_namespace, 1);
	if (c.network_namespace[0] != '\0' && enter_netns(c.network_namespace) < 0) {
		status = INIT_EXIT_APPLY;
		goto out;
	}
	if (gather(&c, &p) < 0) {
		status = INIT_EXIT_USAGE;
		goto out;
	}
	if (rules_build(&c, &p, &rs) < 0) {
		ilog_error("out of memory");
		status = INIT_EXIT_APPLY;
		goto out;
	}
	if (c.dry_run) {
		status = dry_run(&c, &rs, &p) < 0 ? INIT_EXIT_APPLY : INIT_EXIT_OK;
		goto out;
	}
	if (c.cleanup_only) {
		if (c.native_nftables)
			cleanup_nft();
		else
			cleanup_iptables(&c, &rs);
		tproxy_cleanup(&c);
		goto out;
	}
	if (!c.skip_rule_apply && apply(&c, &rs, &p) < 0) {
		status = INIT_EXIT_APPLY;
		goto out;
	}
	if (c.run_validation) {
		rc = validate_run(&c, p.enable_ipv6);
		if (rc < 0) {
			if (rc != -ETIMEDOUT)
				ilog_error("validation could not run: %s", strerror(-rc));
			status = INIT_EXIT_VALIDATION;
		}
	}
out:
	rules_free(&rs);
	podinfo_free(&p);
	flags_free(&c);
	return status;
}
