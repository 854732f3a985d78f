/* certsrc: picks where this proxy's certificate comes from, once at start,
 * in pilot-agent's order (certsrc.h), and starts that source. */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "certsrc.h"
#include "log.h"

static enum certsrc_kind running = CERTSRC_NONE;
static char name[300] = "none";

const char *const certsrc_kind_names[] = {
	[CERTSRC_NONE] = "none", [CERTSRC_FILES] = "files", [CERTSRC_SDS] = "sds",
	[CERTSRC_CA] = "istio-ca",
};

/* Istio's file-mounted layout: all three, or it is not the files source. */
static bool
has_cert_files(const char *dir)
{
	static const char *const names[] = { CERTSRC_CHAIN_FILE, CERTSRC_KEY_FILE, CERTSRC_ROOTS_FILE };
	char path[512];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= sizeof(path) ||
		    access(path, F_OK) < 0)
			return false;
	}
	return true;
}

enum certsrc_kind
certsrc_pick(const struct config *cfg, const char *etc_certs, const char **dir)
{
	/* Files first: a directory the operator named (--cert-dir,
	 * OUTRIGGER_CERT_DIR, identity.certDir, in that order of precedence:
	 * config.c) is a decision; then Istio's VM layout when it is really
	 * there (pilot-agent's FILE_MOUNTED_CERTS / PROV_CERT use it); then a
	 * local agent that already holds a certificate (SDS); the CA last,
	 * since it needs a token, a root and the network. */
	*dir = NULL;
	if (cfg->cert_dir[0]) {
		*dir = cfg->cert_dir;
		return CERTSRC_FILES;
	}
	if (etc_certs && has_cert_files(etc_certs)) {
		*dir = etc_certs;
		return CERTSRC_FILES;
	}
	if (cfg->sds_socket[0])
		return CERTSRC_SDS;
	if (cfg->ca_addr[0])
		return CERTSRC_CA;
	return CERTSRC_NONE;
}

int
certsrc_start(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen)
{
	const char *dir;
	struct stat st;
	int rc = 0;

	running = certsrc_pick(cfg, CERTSRC_ETC_CERTS, &dir);
	switch (running) {
	case CERTSRC_FILES:
		/* A named directory that is not there is a mistake to report at
		 * start; files missing inside it may still be written later. */
		if (stat(dir, &st) < 0) {
			rc = -errno;
			snprintf(err, errlen, "certificate directory %s: %s", dir, strerror(-rc));
			running = CERTSRC_NONE;
			return rc;
		}
		if (!S_ISDIR(st.st_mode)) {
			snprintf(err, errlen, "certificate directory %s: not a directory", dir);
			running = CERTSRC_NONE;
			return -ENOTDIR;
		}
		snprintf(name, sizeof(name), "files %s", dir);
		rc = certsrc_files_start(loop, dir, err, errlen);
		break;
	case CERTSRC_SDS:
		snprintf(name, sizeof(name), "sds unix:%s", cfg->sds_socket);
		rc = certsrc_sds_start(loop, cfg, err, errlen);
		break;
	case CERTSRC_CA:
		snprintf(name, sizeof(name), "istio-ca %s", cfg->ca_addr);
		rc = certsrc_ca_start(loop, cfg, err, errlen);
		break;
	case CERTSRC_NONE:
		snprintf(name, sizeof(name), "none");
		break;
	}
	if (rc < 0) {
		running = CERTSRC_NONE;
		snprintf(name, sizeof(name), "none");
		return rc;
	}
	if (running == CERTSRC_NONE)
		log_info("certificate source: none (no --cert-dir, %s/{%s,%s,%s}, identity.sdsSocket or CA_ADDR): "
		    "plaintext only", CERTSRC_ETC_CERTS, CERTSRC_CHAIN_FILE, CERTSRC_KEY_FILE, CERTSRC_ROOTS_FILE);
	else
		log_info("certificate source: %s", name);
	return 0;
}

void
certsrc_stop(void)
{
	switch (running) {
	case CERTSRC_FILES: certsrc_files_stop(); break;
	case CERTSRC_SDS: certsrc_sds_stop(); break;
	case CERTSRC_CA: certsrc_ca_stop(); break;
	case CERTSRC_NONE: break;
	}
	running = CERTSRC_NONE;
}

const char *
certsrc_name(void)
{
	return name;
}
