/* certsrc: where this proxy's certificate comes from, chosen once at start
 * in pilot-agent's order: files (--cert-dir, OUTRIGGER_CERT_DIR, then
 * /etc/certs when its three files exist), else Envoy SDS over a Unix socket
 * (identity.sdsSocket), else the Istio CA (CA_ADDR), else none (plaintext
 * only; mTLS is refused and counted). Every source runs on the control
 * thread's loop and hands each new, checked bundle to server_set_certs();
 * a refused one is logged and counted, and the running bundle serves on. */
#ifndef OR_CERTSRC_H
#define OR_CERTSRC_H

#include <ev.h>
#include <stddef.h>

#include "config.h"

/* Istio's file-mounted layout (and its VM directory). */
#define CERTSRC_CHAIN_FILE "cert-chain.pem"
#define CERTSRC_KEY_FILE "key.pem"
#define CERTSRC_ROOTS_FILE "root-cert.pem"
#define CERTSRC_ETC_CERTS "/etc/certs"

enum certsrc_kind { CERTSRC_NONE, CERTSRC_FILES, CERTSRC_SDS, CERTSRC_CA };
extern const char *const certsrc_kind_names[];

/* The choice certsrc_start() makes, without starting anything: files in
 * cfg->cert_dir (set by --cert-dir, OUTRIGGER_CERT_DIR or identity.certDir),
 * else in etc_certs when its three files exist, else SDS, else the CA, else
 * none. *dir is the directory for CERTSRC_FILES, else NULL. */
enum certsrc_kind certsrc_pick(const struct config *cfg, const char *etc_certs, const char **dir);

/* Starts the source cfg names (see above). Files are loaded before this
 * returns, so the first snapshot already serves with them; the CA and SDS
 * deliver later (readiness waits for them). 0, or -errno with err when the
 * source is misconfigured (a --cert-dir that does not exist, ...). */
int certsrc_start(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen);
void certsrc_stop(void);

/* What the running source is, for /config_dump and the start-up line:
 * "files /etc/certs", "sds unix:/...", "istio-ca host:15012", "none". */
const char *certsrc_name(void);

/* The three sources; certsrc_start() picks one. Each returns 0 or -errno.
 * The files source (certsrc_files.c) loads dir's three files before it
 * returns (a refusal then is logged and counted, not fatal: the files may
 * be written later) and checks them every second (size, mtime, inode): a
 * change is loaded once it has stood still for a check, and a refusal is
 * retried quietly until the files have stood still for 3 s, since a writer
 * may be between the key and the chain; only then is it logged and counted
 * (server.cert_refused), once per version of the files. */
int certsrc_files_start(struct ev_loop *loop, const char *dir, char *err, size_t errlen);
void certsrc_files_stop(void);
/* The check interval and the settling time (1 s, 3 s), for the tests. */
void certsrc_files_tune(double poll_s, double settle_s);
int certsrc_sds_start(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen);
void certsrc_sds_stop(void);
int certsrc_ca_start(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen);
void certsrc_ca_stop(void);

#endif
