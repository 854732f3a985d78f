/* server: the process-wide state the control thread owns and the control path
 * that publishes configuration (see server.h). */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>

#include "log.h"
#include "server.h"
#include "worker.h"

struct server server;

int
server_load_config(struct config *cfg, char *err, size_t errlen)
{
	char why[448];
	int rc;

	config_defaults(cfg);
	if (server.config_path && (rc = config_load_file(server.config_path, cfg, why, sizeof(why))) < 0) {
		snprintf(err, errlen, "%s: %s", server.config_path, why);
		return rc;
	}
	for (size_t i = 0; i < server.noverrides; i++) {
		const struct config_override *o = &server.overrides[i];
		if ((rc = config_set(cfg, o->path, o->value, why, sizeof(why))) < 0) {
			snprintf(err, errlen, "command line: %s", why);
			return rc;
		}
	}
	return 0;
}

void
server_publish(struct snapshot *s)
{
	struct snapshot *old = server.snap;

	server.snap = s;
	server.stats[SM_CONFIG_GENERATION] = s->generation;
	/* The log level is process-wide, not per connection. */
	__atomic_store_n(&log_threshold, s->cfg.log_level, __ATOMIC_RELAXED);
	workers_publish(s);
	snapshot_unref(old);
}

int
server_reload(void)
{
	const char *src = server.config_path ? server.config_path : "(built-in defaults)";
	struct snapshot *s;
	struct config next;
	char err[512], fixed[256];
	int rc, nfixed;

	if ((rc = server_load_config(&next, err, sizeof(err))) < 0) {
		server.stats[SM_CONFIG_RELOAD_FAILURE]++;
		log_error("reload refused, keeping configuration generation %llu: %s",
		    (unsigned long long)server.snap->generation, err);
		return rc;
	}
	nfixed = config_keep_fixed(&next, &server.snap->cfg, fixed, sizeof(fixed));
	if (!(s = snapshot_new(&next, server.snap->generation + 1))) {
		server.stats[SM_CONFIG_RELOAD_FAILURE]++;
		log_error("reload refused, keeping configuration generation %llu: out of memory",
		    (unsigned long long)server.snap->generation);
		return -ENOMEM;
	}
	if (nfixed)
		log_warn("reload: %s changed but needs a restart; keeping the running value%s", fixed,
		    nfixed > 1 ? "s" : "");
	server.stats[SM_CONFIG_RESTART_PENDING] = nfixed > 0;
	server.stats[SM_CONFIG_RELOAD_SUCCESS]++;
	server_publish(s);
	log_info("reload: %s applied as configuration generation %llu (new connections use it)", src,
	    (unsigned long long)s->generation);
	return 0;
}
