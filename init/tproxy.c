/* tproxy: policy routing for TPROXY and ::6 on lo (see tproxy.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, accept4, setns, strdup */
#endif

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "exec.h"
#include "ilog.h"
#include "sbuf.h"
#include "tproxy.h"

/* Is "ip [-6] rule list fwmark M lookup T" non-empty? */
static bool rule_present(const char *famflag, const struct init_config *c)
{
	char *argv[] = { (char *)"ip", (char *)famflag, (char *)"rule", (char *)"list",
			 (char *)"fwmark", (char *)c->tproxy_mark, (char *)"lookup",
			 (char *)c->tproxy_table, NULL };
	struct sbuf out = { 0 };
	char *text;
	bool present;

	if (exec_run(argv, NULL, &out, EXEC_STDERR_QUIET) != 0) {
		free(sbuf_done(&out));
		return false;
	}
	text = sbuf_done(&out);
	present = text != NULL && strstr(text, "lookup") != NULL;
	free(text);
	return present;
}

int tproxy_setup(const struct init_config *c, bool ipv6, bool dry_run)
{
	for (int v6 = 0; v6 <= (ipv6 ? 1 : 0); v6++) {
		const char *ff = v6 ? "-6" : "-4";
		char *rule[] = { (char *)"ip", (char *)ff, (char *)"rule", (char *)"add",
				 (char *)"fwmark", (char *)c->tproxy_mark, (char *)"lookup",
				 (char *)c->tproxy_table, NULL };
		char *route[] = { (char *)"ip", (char *)ff, (char *)"route", (char *)"replace",
				  (char *)"local", (char *)(v6 ? "::/0" : "0.0.0.0/0"),
				  (char *)"dev", (char *)"lo", (char *)"table",
				  (char *)c->tproxy_table, NULL };

		if (dry_run) {
			ilog_info("dry-run: would run: %s", exec_line(rule));
			ilog_info("dry-run: would run: %s", exec_line(route));
			continue;
		}
		/* "ip rule add" does not deduplicate: add only when absent so
		 * that a second run stays idempotent. */
		if (!rule_present(ff, c) &&
		    exec_run(rule, NULL, NULL, EXEC_STDERR_PASS) != 0) {
			ilog_error("%s failed", exec_line(rule));
			return -EIO;
		}
		if (exec_run(route, NULL, NULL, EXEC_STDERR_PASS) != 0) {
			ilog_error("%s failed", exec_line(route));
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
		const char *ff = v6 ? "-6" : "-4";
		char *rule[] = { (char *)"ip", (char *)ff, (char *)"rule", (char *)"del",
				 (char *)"fwmark", (char *)c->tproxy_mark, (char *)"lookup",
				 (char *)c->tproxy_table, NULL };
		char *route[] = { (char *)"ip", (char *)ff, (char *)"route", (char *)"del",
				  (char *)"local", (char *)(v6 ? "::/0" : "0.0.0.0/0"),
				  (char *)"dev", (char *)"lo", (char *)"table",
				  (char *)c->tproxy_table, NULL };

		/* A rule may have been added more than once by other tools. */
		for (int i = 0; i < 16 && exec_run(rule, NULL, NULL, EXEC_STDERR_QUIET) == 0; i++)
			;
		exec_run(route, NULL, NULL, EXEC_STDERR_QUIET);
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
