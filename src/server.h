/* server: the process-wide state the control thread owns (current snapshot,
 * readiness, drain, how the configuration is loaded) and that the admin server
 * reports; and the control path that loads, builds and publishes snapshots. */
#ifndef OR_SERVER_H
#define OR_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "metrics.h"
#include "resources.h"
#include "snapshot.h"

/* A command-line setting, applied over the file at start and at every reload. */
struct config_override {
	const char *path;	/* "proxy.concurrency" */
	const char *value;	/* "4" */
};

struct server {
	struct snapshot *snap;	/* current configuration (control thread's reference) */
	bool live;		/* workers are serving */
	bool draining;		/* SIGTERM received: not ready, not accepting inbound */
	time_t started;
	unsigned concurrency;
	/* A certificate source is configured (certsrc_pick(), decided once at
	 * start): server_publish() stamps it on every snapshot, so that the
	 * data path knows whether mTLS can ever be terminated without asking
	 * the certificate sources (which sit above it). */
	bool cert_source;

	/* Where the configuration comes from, kept for reloads. */
	const char *config_path;	/* -c FILE; NULL: the built-in defaults */
	const struct config_override *overrides;
	size_t noverrides;

	/* The file's decoded resources of the last load (references): the
	 * xDS client builds every model over them (xds_set_static). */
	struct mres **static_res;
	size_t nstatic;

	uint64_t stats[SM__COUNT];	/* control thread only */
};

extern struct server server;

/* Defaults, then server.config_path, then server.overrides, into *cfg. 0, or
 * -errno with err saying where ("FILE: proxy.x: ..." or "command line: ...");
 * *cfg is only valid on success. */
int server_load_config(struct config *cfg, char *err, size_t errlen);

/* server_load_config(), and the file's "resources" built into *model over
 * prev (the running model at a reload, NULL at start) with what was refused
 * in *rep (free it with res_report_free; it is filled only on success). The
 * file is parsed once. Returns 0 when the file and the overrides are valid,
 * whatever resources were refused (the rest apply); -errno when they are not
 * (unreadable, invalid JSON, a bad "proxy" or "mesh" key, "resources" not a
 * list of objects) or out of memory, with nothing built. */
int server_load(struct config *cfg, const struct model *prev, struct model **model,
    struct res_report *rep, char *err, size_t errlen);

/* Logs every refusal of rep (one line each, "src: resources[3]...: why") and
 * counts them in server.resources_refused. Control thread only. */
void server_note_refusals(const struct res_report *rep, const char *src);

/* The control path: make s (the caller's reference, handed over) the current
 * snapshot and send it to every worker; counts the build and sets the
 * resource gauges from its model. Connections open keep the snapshot
 * they started with; new ones get s. SIGHUP calls it now; xDS and certificate
 * rotation will call it too. Control thread only. */
void server_publish(struct snapshot *s);

/* A certificate source (certsrc.h) has a new, checked bundle b (a
 * reference handed over): build its TLS contexts (xtls_prepare) and publish
 * a snapshot that serves with it, the same configuration and model as the
 * running one. Connections open keep theirs. On failure the running bundle
 * stays, the failure is logged (naming b's source) and counted. Control
 * thread only. 0 or -errno. */
int server_set_certs(struct certbundle *b);

/* The xDS client has a new model m (a reference handed over, also on
 * failure): publish a snapshot with the running configuration and
 * certificates and m. src names the change for the log ("xds"). Connections
 * open keep theirs. Control thread only. 0 or -ENOMEM (the running snapshot
 * stays). */
int server_set_model(struct model *m, const char *src);

/* SIGHUP: load the configuration again as at start, keep the "restart" keys
 * at their running values (logged as needing a restart), build the next
 * generation's model over the running one (a refused resource that was
 * running keeps its running version; refusals are logged and counted, and
 * the reload still counts as applied) and publish it. An unreadable or
 * invalid file is logged with its JSON path and counted as a failure, and
 * the running snapshot stays. 0 or -errno. */
int server_reload(void);

#endif
