/* main: command line, configuration, start-up, signals and drain: the control
 * thread of outrigger. */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "appscrape.h"
#include "certsrc.h"
#include "config.h"
#include "devca.h"
#include "log.h"
#include "ondemand.h"
#include "model.h"
#include "resources.h"
#include "xds.h"
#include "server.h"
#include "snapshot.h"
#include "worker.h"

/* Exit codes: 1 runtime failure, 2 usage or configuration error. */
#define EXIT_CONFIG 2

static ev_timer drain_timer;
static ev_tstamp drain_deadline;
static ev_signal sig_term, sig_int, sig_hup, sig_usr1, sig_usr2, sig_alrm;

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: outrigger [-c FILE] [--concurrency N] [--log-level LEVEL] [--cert-dir DIR]\n"
	    "       outrigger --check-config [-c FILE]\n"
	    "       outrigger --dump-config [-c FILE]\n"
	    "       outrigger --help-config | --version | --help\n"
	    "       outrigger ca init|issue ...   (a development CA: outrigger ca --help)\n"
	    "\n"
	    "  -c, --config FILE     JSON configuration (default: the built-in sidecar defaults)\n"
	    "      --concurrency N   worker threads (overrides proxy.concurrency)\n"
	    "      --log-level L     error, warn, info, debug, trace (overrides proxy.logLevel)\n"
	    "      --cert-dir DIR    certificate files cert-chain.pem, key.pem, root-cert.pem\n"
	    "                        (overrides OUTRIGGER_CERT_DIR and identity.certDir)\n"
	    "      --check-config    check the configuration and its resources and exit\n"
	    "                        (0 valid; 2 invalid, every problem on stderr)\n"
	    "      --dump-config     print the effective configuration as JSON and exit\n"
	    "      --help-config     list every configuration key with its default\n"
	    "\n"
	    "  SIGHUP re-reads FILE (and reapplies the options above): a refused resource\n"
	    "  keeps its running version; SIGTERM drains.\n"
	    "  -V, --version         print the version and exit\n");
}

/* Raise the soft open-files limit to the hard one: each proxied connection
 * holds two sockets, and pipes while bytes are in flight. */
static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("cannot raise the open-files limit: %s", strerror(errno));
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		log_info("open-files limit %llu (about %llu proxied connections)",
		    (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_cur / 3);
}

static void
drain_check_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	uint64_t active = workers_active_connections();

	if ((active == 0 && server.snap->cfg.exit_on_zero) || ev_now(loop) >= drain_deadline) {
		if (active)
			log_info("drain period over: closing %llu connections", (unsigned long long)active);
		else
			log_info("drained: no connections left");
		ev_timer_stop(loop, t);
		ev_break(loop, EVBREAK_ALL);
	}
}

static void
signal_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
	const struct config *cfg = &server.snap->cfg;

	if (server.draining) {
		/* A second signal: stop now. */
		log_info("signal %d during drain: stopping now", s->signum);
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	log_info("signal %d: draining inbound for %s%u ms", s->signum, cfg->exit_on_zero ? "up to " : "",
	    cfg->drain_ms);
	server.draining = true;
	workers_drain();
	drain_deadline = ev_now(loop) + cfg->drain_ms / 1000.0;
	ev_timer_init(&drain_timer, drain_check_cb, 0.1, 0.1);
	ev_timer_start(loop, &drain_timer);
}

/* --check-config: every problem of the file on stderr, then the verdict.
 * Returns the exit code (0 valid, 2 invalid). */
static int
check_config(const char *path)
{
	const char *src = path ? path : "(built-in defaults)";
	struct res_report rep;
	struct model *model;
	struct config cfg;
	char err[512];
	int rc;

	if ((rc = server_load(&cfg, NULL, &model, &rep, err, sizeof(err))) < 0) {
		fprintf(stderr, "outrigger: %s\n", err);
		return rc == -ENOMEM ? 1 : EXIT_CONFIG;
	}
	for (size_t i = 0; i < rep.nlines; i++)
		fprintf(stderr, "%s: %s\n", src, rep.lines[i]);
	if (rep.refused) {
		fprintf(stderr, "outrigger: configuration %s is invalid: %zu of %zu resources refused\n", src,
		    rep.refused, rep.nresources);
		rc = EXIT_CONFIG;
	} else {
		printf("outrigger: configuration %s is valid (%zu resources)\n", src, rep.nresources);
		for (int t = 0; t < MRES__COUNT; t++) {
			size_t n = model_count(model, (enum mres_type)t);
			if (n)
				printf("  %zu %s\n", n, mres_type_names[t]);
		}
		rc = 0;
	}
	res_report_free(&rep);
	model_free(model);
	return rc;
}

/* SIGHUP: reload. Refused files are logged and counted by server_reload(). */
static void
reload_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
	log_info("SIGHUP: reloading the configuration");
	(void)server_reload();
}

/* SIGUSR1, SIGUSR2, SIGALRM have no use yet. Their default action is to kill
 * the process with no drain, so a stray kill -USR1 (log rotation scripts send
 * it) would drop every connection: they are logged and ignored instead. */
static void
ignored_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
	const char *name = s->signum == SIGUSR1 ? "SIGUSR1" : s->signum == SIGUSR2 ? "SIGUSR2" : "SIGALRM";

	log_warn("%s received: ignored (no use for it; SIGHUP reloads, SIGTERM drains)", name);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "concurrency", required_argument, NULL, 'n' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "cert-dir", required_argument, NULL, 'd' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "dump-config", no_argument, NULL, 'D' },
		{ "help-config", no_argument, NULL, 'H' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cfg_path = NULL, *opt_level = NULL, *opt_conc = NULL, *opt_certs = NULL;
	bool check = false, dump = false;
	struct config cfg;
	char err[512];
	static struct appscrape_cfg app_scrape;
	int c, rc;

	/* Descriptors 0-2 closed at exec (a service manager's ">&-"): the
	 * first sockets would take them, and log or access-log lines meant
	 * for stdout / stderr would go into an epoll or a connection. */
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) < 0 && errno == EBADF && open("/dev/null", O_RDWR) != fd)
			return 2;
	/* "outrigger ca ...": a tool of its own, with its own options. */
	if (argc >= 2 && strcmp(argv[1], "ca") == 0)
		return devca_main(argc - 1, argv + 1);
	while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cfg_path = optarg; break;
		case 'n': opt_conc = optarg; break;
		case 'l': opt_level = optarg; break;
		case 'd': opt_certs = optarg; break;
		case 'C': check = true; break;
		case 'D': dump = true; break;
		case 'H': config_print_schema(); return 0;
		case 'V': printf("outrigger %s\n", PACKAGE_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_CONFIG;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outrigger: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return EXIT_CONFIG;
	}

	/* Command-line overrides go through the same schema entry as the file
	 * (config_set), at start and at every reload. */
	struct config_override ovr[3];
	size_t novr = 0;
	if (opt_conc)
		ovr[novr++] = (struct config_override){ "proxy.concurrency", opt_conc };
	if (opt_level)
		ovr[novr++] = (struct config_override){ "proxy.logLevel", opt_level };
	if (opt_certs)
		ovr[novr++] = (struct config_override){ "identity.certDir", opt_certs };
	server.config_path = cfg_path;
	server.overrides = ovr;
	server.noverrides = novr;
	/* Any's types resolve through json_pb's registry, filled once here. */
	if ((rc = model_register_types()) < 0) {
		fprintf(stderr, "outrigger: registering the resource types: %s\n", strerror(-rc));
		return 1;
	}
	if (check)
		return check_config(cfg_path);
	struct res_report rep = { 0 };
	struct model *model = NULL;
	if ((rc = server_load(&cfg, NULL, dump ? NULL : &model, &rep, err, sizeof(err))) < 0) {
		fprintf(stderr, "outrigger: %s\n", err);
		return rc == -ENOMEM ? 1 : EXIT_CONFIG;
	}
	if (dump) {
		cJSON *j = config_to_json(&cfg);
		char *txt = j ? cJSON_Print(j) : NULL;
		if (!txt) {
			fprintf(stderr, "outrigger: out of memory\n");
			cJSON_Delete(j);
			return 1;
		}
		printf("%s\n", txt);
		free(txt);
		cJSON_Delete(j);
		return 0;
	}

	signal(SIGPIPE, SIG_IGN);
	/* From here on no thread writes stderr itself: a consumer that stops
	 * reading must not stop the workers (or the admin port). */
	if ((rc = log_start(STDERR_FILENO, LOG_QUEUE_BYTES)) < 0)
		log_warn("log thread: %s; writing logs synchronously", strerror(-rc));
	raise_nofile();

	server.started = time(NULL);
	server.concurrency = (unsigned)cfg.concurrency;
	/* Refused resources are logged and counted; the rest apply and the
	 * proxy starts (as an xDS NACK leaves the accepted ones in place). */
	server_note_refusals(&rep, cfg_path ? cfg_path : "(built-in defaults)");
	if (rep.refused)
		log_warn("%zu of %zu resources refused; starting with the others", rep.refused, rep.nresources);
	res_report_free(&rep);
	const char *certdir;
	server.cert_source = certsrc_pick(&cfg, CERTSRC_ETC_CERTS, &certdir) != CERTSRC_NONE;
	struct snapshot *first = snapshot_new(&cfg, model, 1);
	if (!first) {
		log_error("out of memory");
		return 1;
	}
	server_publish(first);	/* no worker yet: just the current snapshot */

	struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
	if (!loop) {
		log_error("cannot create the event loop");
		return 1;
	}
	/* Handlers before anything is bound: a SIGHUP during start-up waits for
	 * the loop instead of killing the process. */
	ev_signal_init(&sig_term, signal_cb, SIGTERM);
	ev_signal_init(&sig_int, signal_cb, SIGINT);
	ev_signal_start(loop, &sig_term);
	ev_signal_start(loop, &sig_int);
	ev_signal_init(&sig_hup, reload_cb, SIGHUP);
	ev_signal_init(&sig_usr1, ignored_cb, SIGUSR1);
	ev_signal_init(&sig_usr2, ignored_cb, SIGUSR2);
	ev_signal_init(&sig_alrm, ignored_cb, SIGALRM);
	ev_signal_start(loop, &sig_hup);
	ev_signal_start(loop, &sig_usr1);
	ev_signal_start(loop, &sig_usr2);
	ev_signal_start(loop, &sig_alrm);
	/* The certificate before the ports and the workers: with files, the
	 * first snapshot they get already serves with it, and a --cert-dir
	 * that is not there stops the start before anything is bound. */
	if ((rc = certsrc_start(loop, &cfg, err, sizeof(err))) < 0) {
		log_error("%s", err);
		snapshot_unref(server.snap);
		log_stop();
		return EXIT_CONFIG;
	}
	/* xDS after the certificate source (its TLS may use the mesh roots)
	 * and before the workers: a state file's resources are in the first
	 * snapshot they serve. */
	if ((rc = xds_start(loop, &cfg, server.static_res, server.nstatic, err, sizeof(err))) < 0) {
		log_error("%s", err);
		certsrc_stop();
		snapshot_unref(server.snap);
		log_stop();
		return EXIT_CONFIG;
	}
	/* The app's metrics for 15020, as the injector passes the pod's
	 * prometheus.io annotations; pilot-agent refuses to start on a bad one. */
	if (appscrape_parse_env(getenv(APPSCRAPE_ENV), (unsigned)cfg.status_port, &app_scrape, err,
	    sizeof(err)) < 0) {
		log_error("%s", err);
		xds_stop();
		certsrc_stop();
		snapshot_unref(server.snap);
		log_stop();
		return EXIT_CONFIG;
	}
	if (app_scrape.ntargets && !cfg.status_port)
		log_warn("%s is set but proxy.statusPort is 0: the app's metrics are not merged", APPSCRAPE_ENV);
	if (admin_start(loop, cfg.admin_address, cfg.admin_port, cfg.health_port, (unsigned)cfg.prometheus_port,
	    (unsigned)cfg.status_port, &app_scrape, err, sizeof(err)) < 0) {
		log_error("%s", err);
		xds_stop();
		certsrc_stop();
		return 1;
	}

	/* On demand before the workers: they read ondemand_enabled() as set. */
	if (ondemand_start(loop, &cfg) < 0) {
		log_error("on-demand discovery: out of memory");
		xds_stop();
		certsrc_stop();
		admin_stop();
		snapshot_unref(server.snap);
		return 1;
	}

	/* Workers never take process signals: they are all the control thread's. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = workers_start((unsigned)cfg.concurrency, server.snap, err, sizeof(err));
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc < 0) {
		log_error("%s", err);
		ondemand_stop();
		xds_stop();
		certsrc_stop();
		admin_stop();
		snapshot_unref(server.snap);
		return 1;
	}

	server.live = true;
	log_info("outrigger %s: outbound :%u, inbound :%u (%s), admin %s:%u, health :%u, %d workers",
	    PACKAGE_VERSION, cfg.outbound_port, cfg.inbound_port,
	    cfg.mode == INTERCEPT_TPROXY ? "TPROXY" : "REDIRECT", cfg.admin_address, cfg.admin_port,
	    cfg.health_port, cfg.concurrency);

	ev_run(loop, 0);

	server.live = false;
	workers_stop();
	ondemand_stop();	/* after the workers: their waiters are gone */
	xds_stop();
	certsrc_stop();
	admin_stop();
	resources_free_list(server.static_res, server.nstatic);
	server.static_res = NULL;
	server.nstatic = 0;
	ev_signal_stop(loop, &sig_term);
	ev_signal_stop(loop, &sig_int);
	ev_signal_stop(loop, &sig_hup);
	ev_signal_stop(loop, &sig_usr1);
	ev_signal_stop(loop, &sig_usr2);
	ev_signal_stop(loop, &sig_alrm);
	snapshot_unref(server.snap);
	server.snap = NULL;
	ev_loop_destroy(loop);
	log_info("stopped");
	log_stop();
	return 0;
}
