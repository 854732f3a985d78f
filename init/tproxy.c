/* tproxy: policy routing for TPROXY and ::6 on lo (see tproxy.h). */
#include "autoconfig.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "ilog.h"
#include "strbuf.h"
#include "tproxy.h"

/* TPROXY's policy routing for one family as ip(8) commands:
 * "ip -4|-6 rule VERB fwmark MARK lookup TABLE" and
 * "ip -4|-6 route VERB local 0.0.0.0/0|::/0 dev lo table TABLE". */
struct policy_cmds {
	char *rule[9];
	char *route[11];
};

static void policy_cmds(struct policy_cmds *k, const struct init_config *c, bool v6,
			const char *rule_verb, const char *route_verb)
{
	char *ff = (char *)(v6 ? "-6" : "-4");

	*k = (struct policy_cmds){
		.rule = { (char *)"ip", ff, (char *)"rule", (char *)rule_verb,
			  (char *)"fwmark", (char *)c->tproxy_mark, (char *)"lookup",
			  (char *)c->tproxy_table, NULL },
		.route = { (char *)"ip", ff, (char *)"route", (char *)route_verb,
			   (char *)"local", (char *)(v6 ? "::/0" : "0.0.0.0/0"),
			   (char *)"dev", (char *)"lo", (char *)"table",
			   (char *)c->tproxy_table, NULL },
	};
}

/* Is "ip -4|-6 rule list fwmark M lookup T" non-empty? */
static bool rule_present(const struct init_config *c, bool v6)
{
	struct policy_cmds k;
	struct strbuf out = { 0 };
	bool present;

	policy_cmds(&k, c, v6, "list", "show"); /* only the rule is run */
	present = exec_run(k.rule, NULL, &out, EXEC_STDERR_QUIET) == 0 && !out.oom &&
		  out.p != NULL && strstr(out.p, "lookup") != NULL;
	sb_free(&out);
	return present;
}

int tproxy_setup(const struct init_config *c, bool ipv6, bool dry_run)
{
	for (int v6 = 0; v6 <= (ipv6 ? 1 : 0); v6++) {
		struct policy_cmds k;

		policy_cmds(&k, c, v6, "add", "replace");
		if (dry_run) {
			ilog_info("dry-run: would run: %s", exec_line(k.rule));
			ilog_info("dry-run: would run: %s", exec_line(k.route));
			continue;
		}
		/* "ip rule add" does not deduplicate: add only when absent so
		 * that a second run stays idempotent. */
		if (!rule_present(c, v6) &&
		    exec_run(k.rule, NULL, NULL, EXEC_STDERR_PASS) != 0) {
			ilog_error("%s failed", exec_line(k.rule));
			return -EIO;
		}
		if (exec_run(k.route, NULL, NULL, EXEC_STDERR_PASS) != 0) {
			ilog_error("%s failed", exec_line(k.route));
			return -EIO;
		}
		ilog_info("TPROXY policy routing (%s): fwmark %s -> table %s -> local via lo",
			  v6 ? "IPv6" : "IPv4", c->tproxy_mark, c->tproxy_table);
	}
	return 0;
}

void tproxy_cleanup(const struct init_config *c)
{
	for (int v6 = 0; v6 <= 1; v6++) {
		struct policy_cmds k;

		policy_cmds(&k, c, v6, "del", "del");
		/* A rule may have been added more than once by other tools. */
		for (int i = 0; i < 16 && exec_run(k.rule, NULL, NULL, EXEC_STDERR_QUIET) == 0; i++)
			;
		exec_run(k.route, NULL, NULL, EXEC_STDERR_QUIET);
	}
}

int tproxy_ipv6_lo(bool dry_run)
{
	char *argv[] = { (char *)"ip", (char *)"-6", (char *)"addr", (char *)"replace",
			 (char *)"::6/128", (char *)"dev", (char *)"lo", NULL };

	if (dry_run) {
		ilog_info("dry-run: would run: %s", exec_line(argv));
		return 0;
	}
	if (exec_run(argv, NULL, NULL, EXEC_STDERR_PASS) != 0) {
		ilog_error("%s failed: the proxy cannot bind ::6 for inbound passthrough",
			   exec_line(argv));
		return -EIO;
	}
	return 0;
}
