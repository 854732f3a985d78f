/* sds: the Envoy SDS client (state of the world StreamSecrets over a Unix
 * socket, as Envoy talks to pilot-agent): asks for "default" and "ROOTCA",
 * checks what comes into a certbundle, hands it to server_set_certs(), and
 * ACKs or NACKs every response; reconnects with jittered backoff while the
 * last good certificate serves on. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "certsrc.h"
#include "ctltarget.h"
#include "grpc.h"
#include "identity.h"
#include "log.h"
#include "sds.h"
#include "server.h"
#include "xds.h"

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"

typedef Envoy__Service__Discovery__V3__DiscoveryResponse DiscoveryResponse;
typedef Envoy__Service__Discovery__V3__DiscoveryRequest DiscoveryRequest;
typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;
typedef Envoy__Config__Core__V3__DataSource DataSource;

/* ---- decoding ----------------------------------------------------------- */

static char *
dup_n(const void *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s) {
		if (n)
			memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

/* A file named by a DataSource: regular files only (a FIFO or a device
 * would block the control thread or never end), at most SDS_PEM_MAX. */
static int
read_pem_file(const char *path, char **out, size_t *outlen, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	ssize_t n;
	int fd, rc;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return rc == -ENOMEM ? rc : -EINVAL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s is not a regular file", path);
		rc = -EINVAL;
		goto out;
	}
	if (st.st_size > (off_t)SDS_PEM_MAX) {
		snprintf(err, errlen, "%s is larger than %u bytes", path, SDS_PEM_MAX);
		rc = -EINVAL;
		goto out;
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		rc = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size && (n = read(fd, buf + got, (size_t)st.st_size - got)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
			rc = -EINVAL;
			goto out;
		}
		got += (size_t)n;
	}
	buf[got] = '\0';
	*out = buf;
	*outlen = got;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

/* The bytes of a DataSource, as a NUL-terminated copy. what names the field
 * for err. */
static int
datasource_bytes(const DataSource *ds, const char *what, char **out, size_t *outlen, char *err,
    size_t errlen)
{
	const char *p = NULL, *env;
	size_t n = 0;
	char sub[200];
	int rc;

	if (!ds) {
		snprintf(err, errlen, "%s is missing", what);
		return -EINVAL;
	}
	switch (ds->specifier_case) {
	case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
		p = (const char *)ds->inline_bytes.data;
		n = ds->inline_bytes.len;
		break;
	case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
		p = ds->inline_string;
		n = strlen(p);
		break;
	case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE:
		if (!(env = getenv(ds->environment_variable))) {
			snprintf(err, errlen, "%s: environment variable \"%.64s\" is not set", what,
			    ds->environment_variable);
			return -EINVAL;
		}
		p = env;
		n = strlen(p);
		break;
	case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME:
		if ((rc = read_pem_file(ds->filename, out, outlen, sub, sizeof(sub))) < 0) {
			snprintf(err, errlen, "%s: %s", what, sub);
			return rc;
		}
		if (*outlen == 0) {
			free(*out);
			*out = NULL;
			snprintf(err, errlen, "%s: %.100s is empty", what, ds->filename);
			return -EINVAL;
		}
		return 0;
	default:
		snprintf(err, errlen, "%s has no source (a form we do not read)", what);
		return -EINVAL;
	}
	if (n == 0) {
		snprintf(err, errlen, "%s is empty", what);
		return -EINVAL;
	}
	if (n > SDS_PEM_MAX) {
		snprintf(err, errlen, "%s is larger than %u bytes", what, SDS_PEM_MAX);
		return -EINVAL;
	}
	if (!(*out = dup_n(p, n)))
		return -ENOMEM;
	*outlen = n;
	return 0;
}

/* A first look at the PEM, so that garbage is NACKed even while the other
 * half has not come yet (certbundle_from_pem checks everything once both
 * are known): at least one certificate, or a private key. */
/* Never a passphrase: without a callback OpenSSL's default one would prompt
 * on /dev/tty or stdin for a block with encryption headers, and block the
 * control thread. */
static int
no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

static bool
pem_has_certs(const char *pem, size_t len)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	X509 *x = NULL;
	bool ok;

	if (!b)
		return false;
	ok = (x = PEM_read_bio_X509(b, NULL, no_password, NULL)) != NULL;
	X509_free(x);
	BIO_free(b);
	ERR_clear_error();
	return ok;
}

static bool
pem_has_key(const char *pem, size_t len)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *k = NULL;
	bool ok;

	if (!b)
		return false;
	/* No passphrase: an encrypted key fails here, as it must (Envoy's
	 * password field is not taken). */
	ok = (k = PEM_read_bio_PrivateKey(b, NULL, no_password, NULL)) != NULL;
	EVP_PKEY_free(k);
	BIO_free(b);
	ERR_clear_error();
	return ok;
}

static bool
is_spiffe_name(const char *name)
{
	return strncmp(name, "spiffe://", 9) == 0;
}

/* Appends PEM text to *dst (roots from several validation contexts). */
static int
append_pem(char **dst, size_t *dstlen, const char *src, size_t srclen)
{
	size_t n = *dstlen + srclen + 1;
	char *p;

	if (n > SDS_PEM_MAX + 1)
		return -E2BIG;
	if (!(p = realloc(*dst, n + 1)))
		return -ENOMEM;
	memcpy(p + *dstlen, src, srclen);
	n = *dstlen + srclen;
	if (n && p[n - 1] != '\n')
		p[n++] = '\n';
	p[n] = '\0';
	*dst = p;
	*dstlen = n;
	return 0;
}

static int
decode_secret(const Secret *s, struct sds_response *r, char *err, size_t errlen)
{
	const Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tc;
	const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc;
	char *pem = NULL;
	size_t len = 0;
	char what[160];
	int rc;

	switch (s->type_case) {
	case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE:
		if (strcmp(s->name, SDS_CERT_NAME) != 0 && !is_spiffe_name(s->name))
			break;
		tc = s->tls_certificate;
		if (r->has_cert) {
			snprintf(err, errlen, "secret \"%.64s\": a second certificate in one response", s->name);
			return -EINVAL;
		}
		if (tc->pkcs12 || tc->password) {
			snprintf(err, errlen, "secret \"%.64s\": pkcs12 and password-protected keys are not supported",
			    s->name);
			return -EINVAL;
		}
		snprintf(what, sizeof(what), "secret \"%.64s\" certificate_chain", s->name);
		if ((rc = datasource_bytes(tc->certificate_chain, what, &r->chain, &r->chainlen, err, errlen)) < 0)
			return rc;
		snprintf(what, sizeof(what), "secret \"%.64s\" private_key", s->name);
		if ((rc = datasource_bytes(tc->private_key, what, &r->key, &r->keylen, err, errlen)) < 0)
			return rc;
		if (!pem_has_certs(r->chain, r->chainlen)) {
			snprintf(err, errlen, "secret \"%.64s\": certificate_chain holds no PEM certificate", s->name);
			return -EINVAL;
		}
		if (!pem_has_key(r->key, r->keylen)) {
			snprintf(err, errlen, "secret \"%.64s\": private_key holds no PEM private key", s->name);
			return -EINVAL;
		}
		r->has_cert = true;
		return 0;
	case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT:
		if (strcmp(s->name, SDS_ROOTS_NAME) != 0 && !is_spiffe_name(s->name))
			break;
		vc = s->validation_context;
		snprintf(what, sizeof(what), "secret \"%.64s\" trusted_ca", s->name);
		if (!vc->trusted_ca) {
			snprintf(err, errlen, "%s is missing (only trusted CA bundles are taken, "
			    "not a SPIFFE validator config)", what);
			return -EINVAL;
		}
		if ((rc = datasource_bytes(vc->trusted_ca, what, &pem, &len, err, errlen)) < 0)
			return rc;
		if (!pem_has_certs(pem, len)) {
			snprintf(err, errlen, "%s holds no PEM certificate", what);
			rc = -EINVAL;
		} else if ((rc = append_pem(&r->roots, &r->rootslen, pem, len)) == -E2BIG) {
			snprintf(err, errlen, "trusted CAs are larger than %u bytes", SDS_PEM_MAX);
			rc = -EINVAL;
		}
		free(pem);
		if (rc < 0)
			return rc;
		r->has_roots = true;
		return 0;
	default:
		break;
	}
	/* A name or kind we did not ask for (servers may send more): not ours
	 * to judge. A "default" or "ROOTCA" of the wrong kind is an error. */
	if (strcmp(s->name, SDS_CERT_NAME) == 0 || strcmp(s->name, SDS_ROOTS_NAME) == 0) {
		snprintf(err, errlen, "secret \"%s\" is not a %s", s->name,
		    strcmp(s->name, SDS_CERT_NAME) == 0 ? "tls_certificate" : "validation_context");
		return -EINVAL;
	}
	r->ignored++;
	return 0;
}

void
sds_response_free(struct sds_response *r)
{
	free(r->version);
	free(r->nonce);
	if (r->key)
		OPENSSL_cleanse(r->key, r->keylen);
	free(r->chain);
	free(r->key);
	free(r->roots);
	memset(r, 0, sizeof(*r));
}

int
sds_response_decode(const uint8_t *msg, size_t len, struct sds_response *r, char *err, size_t errlen)
{
	DiscoveryResponse *resp;
	Secret *s;
	size_t i;
	int rc = 0;

	memset(r, 0, sizeof(*r));
	if (!(resp = envoy__service__discovery__v3__discovery_response__unpack(NULL, len, msg))) {
		snprintf(err, errlen, "DiscoveryResponse does not decode");
		return -EINVAL;
	}
	if (!(r->version = strdup(resp->version_info)) || !(r->nonce = strdup(resp->nonce))) {
		rc = -ENOMEM;
		goto out;
	}
	if (resp->type_url[0] && strcmp(resp->type_url, SDS_SECRET_TYPE) != 0) {
		snprintf(err, errlen, "type_url \"%.100s\" is not %s", resp->type_url, SDS_SECRET_TYPE);
		rc = -EINVAL;
		goto out;
	}
	for (i = 0; i < resp->n_resources; i++) {
		const Google__Protobuf__Any *any = resp->resources[i];

		if (strcmp(any->type_url, SDS_SECRET_TYPE) != 0) {
			snprintf(err, errlen, "resources[%zu]: type_url \"%.100s\" is not %s", i, any->type_url,
			    SDS_SECRET_TYPE);
			rc = -EINVAL;
			goto out;
		}
		if (!(s = envoy__extensions__transport_sockets__tls__v3__secret__unpack(NULL, any->value.len,
		    any->value.data))) {
			snprintf(err, errlen, "resources[%zu]: Secret does not decode", i);
			rc = -EINVAL;
			goto out;
		}
		rc = decode_secret(s, r, err, errlen);
		envoy__extensions__transport_sockets__tls__v3__secret__free_unpacked(s, NULL);
		if (rc < 0)
			goto out;
	}
out:
	envoy__service__discovery__v3__discovery_response__free_unpacked(resp, NULL);
	if (rc < 0) {
		/* Keep version and nonce for the NACK; drop what decoded. */
		char *v = r->version, *n = r->nonce;

		r->version = r->nonce = NULL;
		sds_response_free(r);
		r->version = v;
		r->nonce = n;
		if (rc == -ENOMEM)
			snprintf(err, errlen, "out of memory");
	}
	return rc;
}

/* ---- requests ----------------------------------------------------------- */

void
sds_node_from_env(struct sds_node *n)
{
	/* One Node builder for SDS and xDS (xds_node.c). */
	xds_node_names(n->id, sizeof(n->id), n->cluster, sizeof(n->cluster));
}

int
sds_request_pack(const struct sds_node *node, const char *version, const char *nonce,
    const char *error, uint8_t **out, size_t *len)
{
	DiscoveryRequest req = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
	Envoy__Config__Core__V3__Node nd = ENVOY__CONFIG__CORE__V3__NODE__INIT;
	Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
	char *names[] = { (char *)SDS_CERT_NAME, (char *)SDS_ROOTS_NAME };

	if (node) {
		nd.id = (char *)node->id;
		nd.cluster = (char *)node->cluster;
		/* A version string, not a build version: a SPIRE agent sends
		 * its SPIFFE validator config (which we do not take) instead of
		 * trusted_ca to an Envoy build >= 1.18. */
		nd.user_agent_name = (char *)"outrigger";
		nd.user_agent_version_type_case =
		    ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION;
		nd.user_agent_version = (char *)PACKAGE_VERSION;
		req.node = &nd;
	}
	req.version_info = (char *)(version ? version : "");
	req.response_nonce = (char *)(nonce ? nonce : "");
	req.type_url = (char *)SDS_SECRET_TYPE;
	req.n_resource_names = 2;
	req.resource_names = names;
	if (error) {
		st.code = GRPC_INVALID_ARGUMENT;
		st.message = (char *)error;
		req.error_detail = &st;
	}
	*len = envoy__service__discovery__v3__discovery_request__get_packed_size(&req);
	if (!(*out = malloc(*len ? *len : 1)))
		return -ENOMEM;
	envoy__service__discovery__v3__discovery_request__pack(&req, *out);
	return 0;
}

/* ---- the client ------------------------------------------------------- */

#define BACKOFF_BASE_S 0.5
#define BACKOFF_MAX_S 15.0

static struct {
	struct ev_loop *loop;
	char address[280];		/* "unix:/path" */
	char source[128];		/* "sds unix:/path": certbundle source, logs */
	struct sds_node node;
	struct grpc_chan *ch;
	struct grpc_call *call;
	ev_timer retry;
	unsigned failures;		/* attempts since the last good stream */
	bool got_message;		/* on this stream */
	bool outage;			/* logged as down, not yet back */
	bool running;
	/* The last good state: what the running bundle was made of (or, before
	 * both halves came, the half we have). */
	char *version;
	char *chain, *key, *roots;
	size_t chainlen, keylen, rootslen;
	bool applied;			/* a bundle made of chain/key/roots is serving */
} sds;

static void stream_open(void);

static void
set_str(char **dst, char *src, size_t *dstlen, size_t srclen)
{
	if (*dst && dstlen && *dst != src)
		OPENSSL_cleanse(*dst, *dstlen);
	free(*dst);
	*dst = src;
	if (dstlen)
		*dstlen = srclen;
}

static bool
same(const char *a, size_t alen, const char *b, size_t blen)
{
	return a && b && alen == blen && memcmp(a, b, alen) == 0;
}

static void
send_request(const char *nonce, const char *error, bool first)
{
	uint8_t *msg;
	size_t len;

	if (!sds.call)
		return;
	if (sds_request_pack(first ? &sds.node : NULL, sds.version, nonce, error, &msg, &len) < 0) {
		log_error("SDS %s: out of memory for a request", sds.address);
		return;
	}
	if (grpc_call_send(sds.call, msg, len, false) < 0)
		log_error("SDS %s: cannot queue a request", sds.address);
	free(msg);
}

/* Applies a decoded response over the last good state. 0: ACK; else -EINVAL
 * with err (NACK). */
static int
apply(struct sds_response *r, char *err, size_t errlen)
{
	const char *chain = r->has_cert ? r->chain : sds.chain, *key = r->has_cert ? r->key : sds.key;
	const char *roots = r->has_roots ? r->roots : sds.roots;
	size_t chainlen = r->has_cert ? r->chainlen : sds.chainlen;
	size_t keylen = r->has_cert ? r->keylen : sds.keylen;
	size_t rootslen = r->has_roots ? r->rootslen : sds.rootslen;
	struct certbundle *b = NULL;
	int rc;

	if (chain && roots) {
		if (sds.applied && same(chain, chainlen, sds.chain, sds.chainlen) &&
		    same(key, keylen, sds.key, sds.keylen) && same(roots, rootslen, sds.roots, sds.rootslen))
			goto keep;	/* nothing changed: no new snapshot */
		if ((rc = certbundle_from_pem(chain, chainlen, key, keylen, roots, rootslen, sds.source,
		    time(NULL), &b, err, errlen)) < 0) {
			server.stats[SM_CERT_REFUSED]++;	/* as the files source counts it */
			return rc == -ENOMEM ? rc : -EINVAL;
		}
		if ((rc = server_set_certs(b)) < 0) {	/* it took b's reference */
			snprintf(err, errlen, "the TLS contexts could not be built (%s)", strerror(-rc));
			return -EINVAL;
		}
		sds.applied = true;
	} else if (r->has_cert || r->has_roots) {
		log_info("SDS %s: %s received; waiting for %s", sds.address,
		    chain ? "certificate" : "trusted CAs", chain ? SDS_ROOTS_NAME : SDS_CERT_NAME);
	}
keep:
	if (r->has_cert) {
		set_str(&sds.chain, r->chain, &sds.chainlen, r->chainlen);
		set_str(&sds.key, r->key, &sds.keylen, r->keylen);
		r->chain = r->key = NULL;
	}
	if (r->has_roots) {
		set_str(&sds.roots, r->roots, &sds.rootslen, r->rootslen);
		r->roots = NULL;
	}
	set_str(&sds.version, r->version, NULL, 0);
	r->version = NULL;
	return 0;
}

static void
on_message(struct grpc_call *call, void *ud, const uint8_t *msg, size_t len)
{
	struct sds_response r;
	char err[512];
	int rc;

	(void)call;
	(void)ud;
	if (!sds.got_message) {
		sds.got_message = true;
		sds.failures = 0;
		server.stats[SM_SDS_CONNECTED] = 1;
		if (sds.outage)
			log_info("SDS %s: connected again", sds.address);
		sds.outage = false;
	}
	if ((rc = sds_response_decode(msg, len, &r, err, sizeof(err))) == 0)
		rc = apply(&r, err, sizeof(err));
	if (rc < 0) {
		server.stats[SM_SDS_REJECTED]++;
		log_error("SDS %s: response version \"%.64s\" refused: %s; the running certificate serves on",
		    sds.address, r.version ? r.version : "", err);
		send_request(r.nonce ? r.nonce : "", err, false);
	} else {
		server.stats[SM_SDS_UPDATES]++;
		log_debug("SDS %s: version \"%.64s\" applied", sds.address, sds.version);
		send_request(r.nonce, NULL, false);
	}
	sds_response_free(&r);
}

static void
on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	stream_open();
}

static void
schedule_retry(void)
{
	double d = ctl_backoff(BACKOFF_BASE_S, BACKOFF_MAX_S, sds.failures);

	sds.failures++;
	ev_timer_set(&sds.retry, d, 0.0);
	ev_timer_start(sds.loop, &sds.retry);
}

static void
on_done(struct grpc_call *call, void *ud, int status, const char *message)
{
	(void)call;
	(void)ud;
	sds.call = NULL;
	server.stats[SM_SDS_CONNECTED] = 0;
	if (!sds.running)
		return;
	if (!sds.got_message)
		server.stats[SM_SDS_CONNECT_FAIL]++;
	/* Once per outage: the first failure after a good stream (or at
	 * start); the rest are counted. */
	if (!sds.outage) {
		log_warn("SDS %s: stream ended (grpc-status %d%s%s); reconnecting, %s", sds.address, status,
		    message && *message ? ": " : "", message ? message : "",
		    sds.applied ? "the running certificate serves on" : "no certificate yet");
		sds.outage = true;
	}
	schedule_retry();
}

static const struct grpc_handler handler = { .message = on_message, .done = on_done };

static void
stream_open(void)
{
	sds.got_message = false;
	if (!(sds.call = grpc_call_start(sds.ch, SDS_STREAM_PATH, NULL, 0, 0, &handler, NULL))) {
		log_error("SDS %s: out of memory for a stream; retrying", sds.address);
		server.stats[SM_SDS_CONNECT_FAIL]++;
		schedule_retry();
		return;
	}
	/* Envoy's first request of a stream: the node, the version last
	 * applied (the server may skip resending it), no nonce. */
	send_request("", NULL, true);
}

int
certsrc_sds_start(struct ev_loop *loop, const struct config *cfg, char *err, size_t errlen)
{
	struct grpc_target t = { 0 };
	const char *path = cfg->sds_socket;

	if (path[0] != '/') {
		snprintf(err, errlen, "identity.sdsSocket \"%s\" is not an absolute path", path);
		return -EINVAL;
	}
	if (strlen(path) >= 108) {	/* sockaddr_un.sun_path */
		snprintf(err, errlen, "identity.sdsSocket \"%s\" is too long for a Unix socket", path);
		return -EINVAL;
	}
	memset(&sds, 0, sizeof(sds));
	sds.loop = loop;
	snprintf(sds.address, sizeof(sds.address), "unix:%s", path);
	snprintf(sds.source, sizeof(sds.source), "sds %.120s", sds.address);
	sds_node_from_env(&sds.node);
	t.address = sds.address;
	t.authority = "localhost";	/* what Envoy sends over a pipe address */
	if (!(sds.ch = grpc_chan_new(loop, &t))) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ev_timer_init(&sds.retry, on_retry, 0.0, 0.0);
	sds.running = true;
	log_info("SDS %s: asking for \"%s\" and \"%s\" as %s", sds.address, SDS_CERT_NAME, SDS_ROOTS_NAME,
	    sds.node.id);
	stream_open();
	return 0;
}

void
certsrc_sds_stop(void)
{
	if (!sds.running)
		return;
	sds.running = false;
	ev_timer_stop(sds.loop, &sds.retry);
	if (sds.call)
		grpc_call_cancel(sds.call);
	sds.call = NULL;
	grpc_chan_free(sds.ch);
	sds.ch = NULL;
	set_str(&sds.chain, NULL, &sds.chainlen, 0);
	set_str(&sds.key, NULL, &sds.keylen, 0);
	set_str(&sds.roots, NULL, &sds.rootslen, 0);
	set_str(&sds.version, NULL, NULL, 0);
	server.stats[SM_SDS_CONNECTED] = 0;
}
