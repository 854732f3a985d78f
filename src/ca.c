/* ca: the Istio CA client (certsrc_ca_start). A fresh ECDSA P-256 key and a
 * CSR carrying only the SPIFFE URI SAN go to
 * /istio.v1.auth.IstioCertificateService/CreateCertificate over gRPC on TLS
 * (the CA's root from a file), with pilot-agent's headers; the signed chain
 * becomes a certbundle for server_set_certs(). Rotation at pilot-agent's
 * grace ratio (half life, with jitter); failures retry with jittered
 * exponential backoff while the running certificate serves on. Control
 * thread only (xds-hbone.md §1.7, §2). */
#include "autoconfig.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certsrc.h"
#include "ctltarget.h"
#include "grpc.h"
#include "identity.h"
#include "istio/security/v1alpha1/ca.pb-c.h"
#include "log.h"
#include "metrics.h"
#include "server.h"
#include "xtls.h"

#define CA_PATH "/istio.v1.auth.IstioCertificateService/CreateCertificate"
#define CA_DEADLINE_S 10.0	/* one CreateCertificate, connect included */
#define BACKOFF_MIN_S 1.0
#define BACKOFF_MAX_S 60.0
#define RESP_MAX (1 << 20)	/* a certificate chain: far less */
/* pilot-agent's SECRET_GRACE_PERIOD_RATIO and its jitter. */
#define GRACE_RATIO 0.5
#define GRACE_JITTER 0.01

static struct {
	bool running;
	struct ev_loop *loop;
	char addr[256];		/* host:port, without a scheme */
	bool plaintext;		/* "http://" (tests only) */
	char verify_name[256];	/* the name the CA's certificate must carry */
	char root_file[256], token_file[256], cluster_id[64];
	char spiffe[SPIFFE_ID_MAX];
	char source[300];	/* "istio-ca host:port": the bundle's source */
	int64_t ttl_s;
	ev_timer timer;		/* the next attempt: rotation or retry */
	double backoff;		/* the next failure's delay, before jitter */
	/* The attempt in flight. */
	struct grpc_chan *ch;
	struct grpc_call *call;
	EVP_PKEY *key;
	uint8_t *resp;
	size_t resp_len;
	int nmsgs;
} ca;

/* The key and CSR as ztunnel makes them: ECDSA P-256, SHA-256, an empty
 * subject and one critical URI SAN, the SPIFFE ID. PEM into *csr (free). */
static int
make_csr(EVP_PKEY **keyp, char **csr, char *err, size_t errlen)
{
	EVP_PKEY *key = NULL;
	X509_REQ *req = NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *gens = NULL;
	GENERAL_NAME *gen = NULL;
	ASN1_IA5STRING *uri = NULL;
	X509_EXTENSION *ext = NULL;
	BIO *bio = NULL;
	BUF_MEM *mem;
	int rc = -ENOMEM;

	if (!(key = EVP_EC_gen("P-256")) || !(req = X509_REQ_new()) || !X509_REQ_set_version(req, 0) ||
	    !X509_REQ_set_pubkey(req, key))
		goto bad;
	if (!(gens = sk_GENERAL_NAME_new_null()) || !(gen = GENERAL_NAME_new()) || !(uri = ASN1_IA5STRING_new()) ||
	    !ASN1_STRING_set(uri, ca.spiffe, (int)strlen(ca.spiffe)))
		goto bad;
	GENERAL_NAME_set0_value(gen, GEN_URI, uri);
	uri = NULL;
	if (!sk_GENERAL_NAME_push(gens, gen))
		goto bad;
	gen = NULL;
	if (!(ext = X509V3_EXT_i2d(NID_subject_alt_name, 1, gens)) || !(exts = sk_X509_EXTENSION_new_null()) ||
	    !sk_X509_EXTENSION_push(exts, ext))
		goto bad;
	ext = NULL;
	if (!X509_REQ_add_extensions(req, exts) || !X509_REQ_sign(req, key, EVP_sha256()))
		goto bad;
	if (!(bio = BIO_new(BIO_s_mem())) || !PEM_write_bio_X509_REQ(bio, req))
		goto bad;
	BIO_get_mem_ptr(bio, &mem);
	if (!(*csr = strndup(mem->data, mem->length)))
		goto bad;
	*keyp = key;
	key = NULL;
	rc = 0;
bad:
	if (rc < 0) {
		unsigned long e = ERR_peek_last_error();
		snprintf(err, errlen, "cannot make the key and CSR: %s", e ? ERR_reason_error_string(e) : "out of memory");
		ERR_clear_error();
	}
	BIO_free(bio);
	X509_EXTENSION_free(ext);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	ASN1_IA5STRING_free(uri);
	GENERAL_NAME_free(gen);
	sk_GENERAL_NAME_pop_free(gens, GENERAL_NAME_free);
	X509_REQ_free(req);
	EVP_PKEY_free(key);
	return rc;
}

static char *
key_pem(EVP_PKEY *key, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	BUF_MEM *mem;
	char *out = NULL;

	if (bio && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
		BIO_get_mem_ptr(bio, &mem);
		if ((out = malloc(mem->length + 1))) {
			memcpy(out, mem->data, mem->length);
			out[mem->length] = '\0';
			*len = mem->length;
		}
	}
	BIO_free(bio);
	return out;
}

static double
jitter(double s)
{
	uint32_t r = 0;

	/* +-20 %: sidecars that failed together do not retry together. */
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = (uint32_t)random();
	return s * (0.8 + 0.4 * ((double)r / 4294967295.0));
}

static void
schedule(double after_s)
{
	ev_timer_stop(ca.loop, &ca.timer);
	ev_timer_set(&ca.timer, after_s > 0 ? after_s : 0, 0);
	ev_timer_start(ca.loop, &ca.timer);
}

static void
attempt_end(void)
{
	/* Freed while inside its callback is fine: grpc defers it. */
	grpc_chan_free(ca.ch);
	ca.ch = NULL;
	ca.call = NULL;
	EVP_PKEY_free(ca.key);
	ca.key = NULL;
	free(ca.resp);
	ca.resp = NULL;
	ca.resp_len = 0;
	ca.nmsgs = 0;
}

static void
failed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Every failure ends here: logged, counted, retried after the backoff. */
static void
failed(const char *fmt, ...)
{
	char why[512];
	va_list ap;
	double d = jitter(ca.backoff);

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	server.stats[SM_CA_FAILURES]++;
	log_warn("istio-ca %s: no certificate: %s; retrying in %.1f s%s", ca.addr, why, d,
	    server.snap && server.snap->certs ? " (the running certificate serves on)" : "");
	ca.backoff = fmin(ca.backoff * 2, BACKOFF_MAX_S);
	attempt_end();
	schedule(d);
}

static void
on_message(struct grpc_call *call, void *ud, const uint8_t *msg, size_t len)
{
	(void)call, (void)ud;
	/* A unary response is one message; keep the first, count the rest. */
	if (ca.nmsgs++ || len > RESP_MAX)
		return;
	if ((ca.resp = malloc(len ? len : 1))) {
		memcpy(ca.resp, msg, len);
		ca.resp_len = len;
	}
}

/* The response into chain (every element, the leaf first) and the root of
 * trust. The roots are the response's last certificate (the mesh root, as
 * pilot-agent serves ROOTCA) and the CA root file's certificates (the
 * istio-ca-root-cert bundle, which holds both roots during a root
 * migration). */
static void
accept_response(void)
{
	Istio__V1__Auth__IstioCertificateResponse *r = NULL;
	char *chain = NULL, *roots = NULL, *keypem = NULL, *file = NULL, err[256];
	size_t clen = 0, rlen = 0, klen = 0, flen = 0;
	struct certbundle *b = NULL;
	time_t refresh;
	int rc;

	if (ca.nmsgs != 1 || !ca.resp) {
		failed("the CA answered %d messages, not one IstioCertificateResponse", ca.nmsgs);
		return;
	}
	if (!(r = istio__v1__auth__istio_certificate_response__unpack(NULL, ca.resp_len, ca.resp)) ||
	    r->n_cert_chain == 0) {
		failed("the CA answered garbage (%s)", r ? "an empty cert_chain" : "not an IstioCertificateResponse");
		goto out;
	}
	for (size_t i = 0; i < r->n_cert_chain; i++)
		clen += strlen(r->cert_chain[i]) + 1;
	if (ctl_read_file(ca.root_file, &file, &flen) < 0)
		flen = 0;	/* the response's root alone; the file was read at connect */
	const char *last = r->cert_chain[r->n_cert_chain - 1];
	if (!(chain = malloc(clen + 1)) || !(roots = malloc(strlen(last) + flen + 3)) ||
	    !(keypem = key_pem(ca.key, &klen))) {
		failed("out of memory");
		goto out;
	}
	chain[0] = '\0';
	for (size_t i = 0; i < r->n_cert_chain; i++) {
		strcat(chain, r->cert_chain[i]);
		if (r->cert_chain[i][0] && r->cert_chain[i][strlen(r->cert_chain[i]) - 1] != '\n')
			strcat(chain, "\n");
	}
	clen = strlen(chain);
	/* A one-element answer is the leaf alone: the file is the only root. */
	rlen = (size_t)snprintf(roots, strlen(last) + flen + 3, "%s\n%s",
	    r->n_cert_chain > 1 ? last : "", file ? file : "");
	if ((rc = certbundle_from_pem(chain, clen, keypem, klen, roots, rlen, ca.source, time(NULL), &b,
	    err, sizeof(err))) < 0) {
		failed("the CA's certificate is refused: %s", err);
		server.stats[SM_CERT_REFUSED]++;
		goto out;
	}
	refresh = certbundle_refresh_at(b, GRACE_RATIO, GRACE_JITTER);
	if (strcmp(b->identity, ca.spiffe) != 0)
		log_warn("istio-ca %s: asked for %s, the CA signed %s (the token's identity): using it",
		    ca.addr, ca.spiffe, b->identity);
	if (server_set_certs(b) < 0) {	/* takes b; logs and counts */
		failed("the certificate could not be put in service");
		goto out;
	}
	double in = difftime(refresh, time(NULL));
	log_info("istio-ca %s: certificate %s issued; next rotation in %.0f s", ca.addr, ca.spiffe, in);
	ca.backoff = BACKOFF_MIN_S;
	attempt_end();
	schedule(in < 1 ? 1 : in);
out:
	istio__v1__auth__istio_certificate_response__free_unpacked(r, NULL);
	free(chain);
	free(roots);
	if (keypem)
		OPENSSL_cleanse(keypem, klen);
	free(keypem);
	free(file);
}

static void
on_done(struct grpc_call *call, void *ud, int status, const char *msg)
{
	(void)call, (void)ud;
	ca.call = NULL;
	if (status != GRPC_OK) {
		failed("CreateCertificate: %s%s%s", grpc_status_str(status), *msg ? ": " : "", msg);
		return;
	}
	accept_response();
}

static const struct grpc_handler handler = { on_message, on_done };

static void
attempt(struct ev_loop *loop, ev_timer *w, int revents)
{
	Istio__V1__Auth__IstioCertificateRequest req = ISTIO__V1__AUTH__ISTIO_CERTIFICATE_REQUEST__INIT;
	char *csr = NULL, *token = NULL, *rootpem = NULL, *bearer = NULL, err[256];
	uint8_t *body = NULL;
	size_t rootlen = 0, blen;
	SSL_CTX *tls = NULL;
	int rc;

	(void)w, (void)revents;
	attempt_end();
	server.stats[SM_CA_REQUESTS]++;
	if ((rc = ctl_read_token(ca.token_file, &token)) < 0) {
		failed("cannot read the token file %s: %s", ca.token_file,
		    rc == -ENODATA ? "empty" : rc == -EINVAL ? "a control character in it" : strerror(-rc));
		goto out;
	}
	if (!ca.plaintext) {
		if ((rc = ctl_read_file(ca.root_file, &rootpem, &rootlen)) < 0) {
			failed("cannot read the CA root %s: %s", ca.root_file, strerror(-rc));
			goto out;
		}
		/* Re-read each time: the istio-ca-root-cert bundle changes at a
		 * root rotation. */
		if (!(tls = xtls_ctx_control(rootpem, rootlen, NULL, err, sizeof(err)))) {
			failed("the CA root %s: %s", ca.root_file, err);
			goto out;
		}
	}
	if (make_csr(&ca.key, &csr, err, sizeof(err)) < 0) {
		failed("%s", err);
		goto out;
	}
	req.csr = csr;
	req.validity_duration = ca.ttl_s;
	blen = istio__v1__auth__istio_certificate_request__get_packed_size(&req);
	if (!(body = malloc(blen ? blen : 1)) || asprintf(&bearer, "Bearer %s", token) < 0) {
		bearer = NULL;
		failed("out of memory");
		goto out;
	}
	istio__v1__auth__istio_certificate_request__pack(&req, body);
	struct grpc_target t = { .address = ca.addr, .tls = tls, .verify_name = tls ? ca.verify_name : NULL };
	struct grpc_md md[] = { { "authorization", bearer }, { "clusterid", ca.cluster_id } };
	if (!(ca.ch = grpc_chan_new(loop, &t)) ||
	    !(ca.call = grpc_call_start(ca.ch, CA_PATH, md, 2, CA_DEADLINE_S, &handler, NULL)) ||
	    grpc_call_send(ca.call, body, blen, true) < 0) {
		failed("out of memory");
		goto out;
	}
	log_debug("istio-ca %s: CreateCertificate for %s (%lld s)", ca.addr, ca.spiffe, (long long)ca.ttl_s);
out:
	SSL_CTX_free(tls);	/* the channel holds its own reference */
	free(body);
	free(csr);
	ctl_free_secret(bearer);
	ctl_free_secret(token);
	free(rootpem);
}

int
certsrc_ca_start(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen)
{
	struct ctl_target tgt;
	struct spiffe id;
	int rc;

	if (ca.running)
		certsrc_ca_stop();
	memset(&ca, 0, sizeof(ca));
	if (ctl_target_parse(cfg->ca_addr, &tgt) < 0) {
		snprintf(err, errlen, "identity.caAddress %s: expected host:port", cfg->ca_addr);
		return -EINVAL;
	}
	ca.plaintext = tgt.plaintext;
	snprintf(ca.addr, sizeof(ca.addr), "%s", tgt.addr);
	snprintf(ca.verify_name, sizeof(ca.verify_name), "%s", tgt.verify_name);
	if ((rc = identity_from_env(&id, err, errlen)) < 0)
		return rc;
	if ((rc = spiffe_format(ca.spiffe, sizeof(ca.spiffe), cfg->trust_domain[0] ? cfg->trust_domain : id.td,
	    id.ns, id.sa)) < 0) {
		snprintf(err, errlen, "no SPIFFE ID from trust domain %s, namespace %s, service account %s",
		    cfg->trust_domain, id.ns, id.sa);
		return rc;
	}
	snprintf(ca.root_file, sizeof(ca.root_file), "%s", cfg->ca_root);
	snprintf(ca.token_file, sizeof(ca.token_file), "%s", cfg->token_file);
	/* ztunnel's default when CLUSTER_ID is not set. */
	snprintf(ca.cluster_id, sizeof(ca.cluster_id), "%s", cfg->cluster_id[0] ? cfg->cluster_id : "Kubernetes");
	snprintf(ca.source, sizeof(ca.source), "istio-ca %s", ca.addr);
	ca.ttl_s = cfg->cert_ttl_s;
	ca.loop = loop;
	ca.backoff = BACKOFF_MIN_S;
	ev_timer_init(&ca.timer, attempt, 0, 0);
	ca.running = true;
	if (ca.plaintext)
		log_warn("istio-ca %s: PLAINTEXT (http://): for tests only, the token goes in clear", ca.addr);
	log_info("istio-ca %s: asking for %s (%lld s), server name %s, root %s, token %s, clusterid %s",
	    ca.addr, ca.spiffe, (long long)ca.ttl_s, ca.plaintext ? "-" : ca.verify_name,
	    ca.plaintext ? "-" : ca.root_file, ca.token_file, ca.cluster_id);
	schedule(0);
	return 0;
}

void
certsrc_ca_stop(void)
{
	if (!ca.running)
		return;
	ev_timer_stop(ca.loop, &ca.timer);
	attempt_end();	/* the call ends with its channel, done not called */
	ca.running = false;
}
