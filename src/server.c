/* server: the process-wide state the control thread owns and the control path
 * that publishes configuration (see server.h). */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "accesslog.h"
#include "identity.h"
#include "log.h"
#include "model.h"
#include "peerauth.h"
#include "resources.h"
#include "server.h"
#include "worker.h"
#include "xds.h"
#include "xtls.h"

/* The resource gauges follow MODEL_TYPES' order (SM_RESOURCES_ADDRESS + t). */
_Static_assert(SM_RESOURCES_LISTENER - SM_RESOURCES_ADDRESS == MRES__COUNT - 1,
    "one server.resources_* gauge per model type, in MODEL_TYPES order");
_Static_assert(SM_RESOURCES_CLUSTER - SM_RESOURCES_ADDRESS == MRES_CLUSTER,
    "server.resources_* gauges in MODEL_TYPES order");

struct server server;

/* Who this proxy's workload is, for PeerAuthentication (namespace and
 * labels, as pilot-agent reads them): read again at every load, since the
 * downward-API labels file follows the pod's labels. */
static int
load_self(void)
{
	struct pa_self self = { 0 };
	char warn[320];
	int rc;

	if ((rc = pa_self_load(&self, NULL, warn, sizeof(warn))) < 0)
		return rc;
	if (warn[0])
		log_warn("%s", warn);
	pa_self_install(&self);
	return 0;
}

int
server_load(struct config *cfg, const struct model *prev, struct model **model,
    struct res_report *rep, char *err, size_t errlen)
{
	const cJSON *list = NULL;
	cJSON *root = NULL;
	struct mres **res = NULL;
	size_t nres = 0;
	char why[448];
	int rc;

	config_defaults(cfg);
	if (server.config_path) {
		/* Parsed once: the settings and the resources come from one tree. */
		if ((rc = config_read_file(server.config_path, &root, why, sizeof(why))) < 0 ||
		    (rc = config_load_tree(root, cfg, &list, why, sizeof(why))) < 0) {
			snprintf(err, errlen, "%s: %s", server.config_path, why);
			goto out;
		}
	}
	if ((rc = config_apply_env(cfg, why, sizeof(why))) < 0) {
		snprintf(err, errlen, "%s", why);
		goto out;
	}
	for (size_t i = 0; i < server.noverrides; i++) {
		const struct config_override *o = &server.overrides[i];
		if ((rc = config_set(cfg, o->path, o->value, why, sizeof(why))) < 0) {
			snprintf(err, errlen, "command line: %s", why);
			goto out;
		}
	}
	rc = 0;
	if (model && (rc = load_self()) < 0)
		snprintf(err, errlen, "out of memory reading the pod's labels");
	else if (model && !(*model = resources_build_keep(list, prev, rep, &res, &nres))) {
		res_report_free(rep);
		snprintf(err, errlen, "%s: out of memory building the mesh model",
		    server.config_path ? server.config_path : "(built-in defaults)");
		rc = -ENOMEM;
	}
	if (model && rc == 0) {
		resources_free_list(server.static_res, server.nstatic);
		server.static_res = res;
		server.nstatic = nres;
	}
out:
	cJSON_Delete(root);
	/* The file's parse tree was the largest thing on the heap, and freed
	 * chunks below the top stay in the process (a 600-resource file kept
	 * 2 MiB of RSS, half the idle target): give them back to the kernel. */
	if (root)
		malloc_trim(0);
	return rc;
}

int
server_load_config(struct config *cfg, char *err, size_t errlen)
{
	return server_load(cfg, NULL, NULL, NULL, err, errlen);
}

void
server_note_refusals(const struct res_report *rep, const char *src)
{
	/* One line per refused resource, past the per-call-site rate limit (a
	 * file with 20 bad resources must show 20): the file bounds them, and
	 * the log queue bounds their memory. */
	bool show = (int)LL_WARN <= (int)__atomic_load_n(&log_threshold, __ATOMIC_RELAXED);

	for (size_t i = 0; show && i < rep->nlines; i++)
		log_msg(NULL, LL_WARN, __func__, "%s: resource refused: %s", src, rep->lines[i]);
	if (show && rep->refused > rep->nlines)
		log_msg(NULL, LL_WARN, __func__, "%s: %zu more resources refused (out of memory for their messages)",
		    src, rep->refused - rep->nlines);
	server.stats[SM_RESOURCES_REFUSED] += rep->refused;
}

/* The inbound mTLS modes, when they change: what STRICT/PERMISSIVE applies
 * and which policies said so. */
static void
log_peerauth(const struct peerauth *pa)
{
	char ports[256] = "";
	size_t o = 0;

	for (size_t i = 0; i < pa->nports && o < sizeof(ports) - 32; i++)
		o += (size_t)snprintf(ports + o, sizeof(ports) - o, ", port %u %s", pa->ports[i].port,
		    pa_mode_str((enum pa_mode)pa->ports[i].mode));
	log_info("inbound mTLS: %s%s (PeerAuthentication mesh %s, namespace %s, workload %s)",
	    pa_mode_str(pa->mode), ports, pa->mesh[0] ? pa->mesh : "-", pa->ns[0] ? pa->ns : "-",
	    pa->workload[0] ? pa->workload : "-");
}

/* server_reload's publication: the access log file is reopened. */
static bool reopen_logs;

void
server_publish(struct snapshot *s)
{
	struct snapshot *old = server.snap;

	s->cert_source = server.cert_source;	/* before any worker can see s */
	server.snap = s;
	if (!old || old->peerauth->mode != s->peerauth->mode || old->peerauth->nports != s->peerauth->nports ||
	    (s->peerauth->nports && memcmp(old->peerauth->ports, s->peerauth->ports,
	    s->peerauth->nports * sizeof(*s->peerauth->ports)) != 0))
		log_peerauth(s->peerauth);
	server.stats[SM_CONFIG_GENERATION] = s->generation;
	server.stats[SM_MODEL_BUILDS]++;
	for (int t = 0; t < MRES__COUNT; t++)
		server.stats[SM_RESOURCES_ADDRESS + t] = model_count(s->model, (enum mres_type)t);
	/* The log level is process-wide, not per connection (set when the
	 * setting changes: a runtime /logging?level= holds until then); so is the
	 * access log (a changed destination is opened here; SIGHUP reopens
	 * a file for log rotation). */
	if (!old || old->cfg.log_level != s->cfg.log_level)	/* /logging's level stays till then */
		__atomic_store_n(&log_threshold, s->cfg.log_level, __ATOMIC_RELAXED);
	(void)accesslog_configure(s->cfg.access_log_file, s->cfg.access_log_encoding, reopen_logs);
	workers_publish(s);
	snapshot_unref(old);
}

int
server_reload(void)
{
	const char *src = server.config_path ? server.config_path : "(built-in defaults)";
	struct res_report rep;
	struct model *model;
	struct snapshot *s;
	struct config next;
	char err[512], fixed[256];
	int rc, nfixed;

	if ((rc = server_load(&next, server.snap->model, &model, &rep, err, sizeof(err))) < 0) {
		server.stats[SM_CONFIG_RELOAD_FAILURE]++;
		log_error("reload refused, keeping configuration generation %llu: %s",
		    (unsigned long long)server.snap->generation, err);
		/* SIGHUP is also log rotation's signal: reopen all the same. */
		(void)accesslog_configure(server.snap->cfg.access_log_file, server.snap->cfg.access_log_encoding, true);
		return rc;
	}
	/* With xDS the file's resources are a part of the model: the xDS
	 * client rebuilds it from them and its state, and publishes it; this
	 * generation takes that model, not the file's alone. */
	if (xds_active()) {
		if (xds_set_static(server.static_res, server.nstatic) < 0)
			log_error("reload: out of memory rebuilding the xDS model; the running resources stay");
		model_free(model);
		model = model_ref(server.snap->model);
	}
	nfixed = config_keep_fixed(&next, &server.snap->cfg, fixed, sizeof(fixed));
	if ((s = snapshot_new(&next, model, server.snap->generation + 1)) && server.snap->certs)
		s->certs = certbundle_ref(server.snap->certs);
	if (!s) {
		res_report_free(&rep);
		server.stats[SM_CONFIG_RELOAD_FAILURE]++;
		log_error("reload refused, keeping configuration generation %llu: out of memory",
		    (unsigned long long)server.snap->generation);
		return -ENOMEM;
	}
	if (nfixed)
		log_warn("reload: %s changed but needs a restart; keeping the running value%s", fixed,
		    nfixed > 1 ? "s" : "");
	server_note_refusals(&rep, src);
	server.stats[SM_CONFIG_RESTART_PENDING] = nfixed > 0;
	server.stats[SM_CONFIG_RELOAD_SUCCESS]++;
	reopen_logs = true;
	server_publish(s);
	reopen_logs = false;
	if (rep.refused)
		log_warn("reload: %s applied as configuration generation %llu with %zu of %zu resources refused "
		    "(%zu kept their previous version)", src, (unsigned long long)s->generation, rep.refused,
		    rep.nresources, rep.kept);
	else
		log_info("reload: %s applied as configuration generation %llu (new connections use it)", src,
		    (unsigned long long)s->generation);
	res_report_free(&rep);
	return 0;
}

int
server_set_certs(struct certbundle *b)
{
	struct snapshot *s;
	char err[256];
	int rc;

	if ((rc = xtls_prepare(b, err, sizeof(err))) < 0) {
		server.stats[SM_CERT_REFUSED]++;
		log_error("certificate from %s refused: %s; the running one serves on", b->source, err);
		certbundle_unref(b);
		return rc;
	}
	if (!(s = snapshot_new(&server.snap->cfg, model_ref(server.snap->model), server.snap->generation + 1))) {
		server.stats[SM_CERT_REFUSED]++;
		log_error("certificate from %s: out of memory; the running one serves on", b->source);
		certbundle_unref(b);
		return -ENOMEM;
	}
	s->certs = b;
	server.stats[SM_CERT_UPDATES]++;
	server.stats[SM_CERT_EXPIRY_TIMESTAMP] = (uint64_t)b->not_after;
	log_info("certificate %s from %s (serial %s, valid until %ld) serves new connections "
	    "(configuration generation %llu)", b->identity, b->source, b->serial, (long)b->not_after,
	    (unsigned long long)s->generation);
	server_publish(s);
	return 0;
}

int
server_set_model(struct model *m, const char *src)
{
	struct snapshot *s;

	if (!(s = snapshot_new(&server.snap->cfg, m, server.snap->generation + 1))) {
		log_error("%s: out of memory building the snapshot; generation %llu serves on", src,
		    (unsigned long long)server.snap->generation);
		return -ENOMEM;
	}
	if (server.snap->certs)
		s->certs = certbundle_ref(server.snap->certs);
	server_publish(s);
	log_debug("%s: configuration generation %llu serves new connections", src,
	    (unsigned long long)s->generation);
	return 0;
}
