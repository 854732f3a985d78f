/* xtls: the TLS transport (OpenSSL 3) behind the conn ops table, the TLS
 * contexts of a certificate bundle, the control-plane client context, and
 * the per-worker client session cache. See HACKING.md, "TLS transport". */
#include "autoconfig.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "metrics.h"
#include "sock.h"
#include "xrec.h"
#include "xtls.h"

const char *const xtls_fail_names[] = { "none", "protocol", "no_cert", "untrusted", "expired", "identity", "io" };

/* Istio's inbound TLS 1.2 cipher suites (reference/xds-hbone.md §4.2); TLS
 * 1.3 keeps OpenSSL's default suites (all AEAD). */
#define XTLS_CIPHERS_12 "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256"
/* What Envoy (BoringSSL) offers by default, less nothing we lack: no
 * finite-field groups, whose keys cost more per handshake. */
#define XTLS_GROUPS "X25519:P-256:P-384"
/* The server's session id context: a session (ticket) is only resumed by a
 * context that issued it, and OpenSSL refuses to resume a session that
 * verified a client certificate without one. */
#define XTLS_SID_CTX "outrigger-mesh"

/* --- what a context is for -------------------------------------------------- */

enum ctx_kind {
	CTX_MESH_SERVER,	/* inbound mTLS: a client SPIFFE ID of our trust domain */
	CTX_MESH_CLIENT,	/* outbound mTLS: the expected SPIFFE IDs */
	CTX_CONTROL,		/* the CA, xDS: the chain, then verify_name if given */
};

/* Attached to each SSL_CTX we make (ex_data, freed with the context): an SSL
 * may outlive the bundle that made its context, so nothing points into b. */
struct ctxinfo {
	enum ctx_kind kind;
	char td[256];		/* our trust domain (mesh contexts) */
	uint64_t gen;		/* which context: never reused (see sessions) */
};

/* Context generations: a client session is only offered through the
 * context that verified its peer (same roots, same expectations), never
 * through the next bundle's, whose roots may no longer trust that peer. */
static uint64_t ctx_gen;

static int ctxinfo_idx = -1;
static pthread_once_t ctxinfo_once = PTHREAD_ONCE_INIT;

static void
ctxinfo_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
	free(ptr);
}

static void
ctxinfo_init(void)
{
	ctxinfo_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctxinfo_free);
}

static const struct ctxinfo *
ctxinfo_of(SSL_CTX *ctx)
{
	return ctxinfo_idx < 0 ? NULL : SSL_CTX_get_ex_data(ctx, ctxinfo_idx);
}

/* --- per-connection state ------------------------------------------------ */

struct xtls {
	SSL *ssl;
	const struct ctxinfo *info;	/* of SSL_get_SSL_CTX(ssl): lives as long */
	/* The socket events each operation needs next (SSL_ERROR_WANT_*). */
	short hs_ev, rd_ev, wr_ev;
	bool client;
	bool hs_done;
	bool failed;		/* the handshake or a record failed: sticky */
	bool shut_pending;	/* close_notify queued but not yet on the socket */
	bool wr_blocked;	/* the last SSL_write left a record in OpenSSL's buffer */
	int err;		/* -errno of the failure */
	enum xtls_fail fail;
	int verr, vdepth;	/* the first X509 verify error, and at which depth */
	char *detail;		/* why it failed (for logs), or NULL */
	char *peer_id;		/* the peer's SPIFFE ID after the handshake, or NULL */
	char alpn[32];		/* the negotiated ALPN value, "" none */
	/* Client: what the peer must be. Copied; freed after the handshake. */
	char **sans;
	size_t nsans;
	char *verify_name;
	struct xtls_sessions *sessions;
	char *session_key;
	/* Kept from the handshake for what the conn reports (the SSL may be
	 * gone: see hand_over). */
	const char *version;	/* SSL_get_version's static name */
	bool resumed;
	/* The hand-over to our record layer (xrec.h) once the handshake is
	 * over: the application traffic secrets (keylog callback), how many
	 * records each direction protected with them (message callback, from
	 * the Finished of that direction on), and whether anything stands in
	 * its way. rec set: ssl is NULL and the ops speak through rec. */
	struct xrec *rec;
	uint8_t csec[XREC_MAX_SECRET], ssec[XREC_MAX_SECRET];
	uint8_t csec_len, ssec_len;
	bool rd_app, wr_app;	/* each direction's Finished went by */
	bool key_update;	/* a KeyUpdate either way: secrets no longer _0 */
	bool got_ticket;	/* client: a NewSessionTicket was read */
	bool got_data;		/* application bytes were read through OpenSSL */
	bool no_hand_over;	/* never (the secrets are wiped) */
	uint64_t rd_recs, wr_recs;
};


static void
xtls_free(struct xtls *x)
{
	if (!x)
		return;
	SSL_free(x->ssl);
	xrec_free(x->rec);
	OPENSSL_cleanse(x->csec, sizeof(x->csec));
	OPENSSL_cleanse(x->ssec, sizeof(x->ssec));
	for (size_t i = 0; i < x->nsans; i++)
		free(x->sans[i]);
	free(x->sans);
	free(x->verify_name);
	free(x->session_key);
	free(x->detail);
	free(x->peer_id);
	free(x);
}

static void
drop_expectations(struct xtls *x)
{
	for (size_t i = 0; i < x->nsans; i++)
		free(x->sans[i]);
	free(x->sans);
	x->sans = NULL;
	x->nsans = 0;
	free(x->verify_name);
	x->verify_name = NULL;
}

static void
set_detail(struct xtls *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
set_detail(struct xtls *x, const char *fmt, ...)
{
	char buf[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(x->detail);
	x->detail = strdup(buf);
}

/* --- SPIFFE identity of a certificate --------------------------------------- */

/* The one SPIFFE URI SAN of cert into out, and its trust domain into td:
 * identity.c's check (x509_spiffe_id: exactly one URI SAN, an Istio
 * workload ID), the one the bundles' own leaves pass. 0, -ENOENT (none),
 * -EINVAL (several, or no workload SPIFFE ID). */
static int
cert_spiffe(X509 *cert, char *out, size_t len, char *td, size_t tdlen)
{
	struct spiffe sp;
	int rc = x509_spiffe_id(cert, out, len, &sp);

	if (rc == 0)
		snprintf(td, tdlen, "%s", sp.td);
	return rc == -ENOSPC ? -EINVAL : rc;
}

/* Does cert carry the URI SAN uri (exactly)? */
static bool
cert_has_uri(X509 *cert, const char *uri)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	size_t ul = strlen(uri);
	bool found = false;

	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && !found; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type != GEN_URI)
			continue;
		int n = ASN1_STRING_length(g->d.uniformResourceIdentifier);
		found = (size_t)n == ul &&
		    memcmp(ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), uri, ul) == 0;
	}
	GENERAL_NAMES_free(gens);
	return found;
}

/* Is cert (the peer's leaf, its chain verified) the peer x expects? 0, or
 * -EACCES with x->detail set. */
static int
check_identity(struct xtls *x, X509 *cert)
{
	char id[SPIFFE_ID_MAX], td[256];
	int rc;

	if (x->info->kind == CTX_CONTROL) {
		/* DNS names are checked by OpenSSL (SSL_set1_host). */
		if (x->verify_name && strncmp(x->verify_name, "spiffe://", 9) == 0 &&
		    !cert_has_uri(cert, x->verify_name)) {
			set_detail(x, "server certificate has no URI SAN %s", x->verify_name);
			return -EACCES;
		}
		return 0;
	}
	if ((rc = cert_spiffe(cert, id, sizeof(id), td, sizeof(td))) < 0) {
		set_detail(x, "%s certificate: %s", x->client ? "server" : "client",
		    rc == -ENOENT ? "no SPIFFE URI SAN" : "not exactly one SPIFFE URI SAN");
		return -EACCES;
	}
	if (x->client && x->nsans) {
		for (size_t i = 0; i < x->nsans; i++)
			if (strcmp(id, x->sans[i]) == 0)
				return 0;
		set_detail(x, "server identity %s is not one expected (%s%s)", id, x->sans[0],
		    x->nsans > 1 ? ", ..." : "");
		return -EACCES;
	}
	if (strcmp(td, x->info->td) != 0) {
		set_detail(x, "peer identity %s is not of trust domain %s", id, x->info->td);
		return -EACCES;
	}
	return 0;
}

static enum xtls_fail
verify_fail(int verr)
{
	switch (verr) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
	case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
	case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
		return XTLS_FAIL_EXPIRED;
	case X509_V_ERR_APPLICATION_VERIFICATION:
	case X509_V_ERR_HOSTNAME_MISMATCH:
	case X509_V_ERR_EMAIL_MISMATCH:
	case X509_V_ERR_IP_ADDRESS_MISMATCH:
		return XTLS_FAIL_IDENTITY;
	default:
		return XTLS_FAIL_UNTRUSTED;
	}
}

/* Verification of the peer's chain: OpenSSL's result for each certificate,
 * then, at the leaf, the identity. The first error is kept for
 * xtls_failure(). */
static int
verify_cb(int ok, X509_STORE_CTX *sc)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(sc, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct xtls *x = ssl ? SSL_get_app_data(ssl) : NULL;
	int depth = X509_STORE_CTX_get_error_depth(sc);

	if (!x)
		return ok;
	if (!ok) {
		if (!x->verr) {
			x->verr = X509_STORE_CTX_get_error(sc);
			x->vdepth = depth;
			set_detail(x, "%s certificate (depth %d): %s", x->client ? "server" : "client", depth,
			    X509_verify_cert_error_string(x->verr));
		}
		return 0;
	}
	if (depth != 0)
		return 1;
	if (check_identity(x, X509_STORE_CTX_get_current_cert(sc)) < 0) {
		X509_STORE_CTX_set_error(sc, X509_V_ERR_APPLICATION_VERIFICATION);
		x->verr = X509_V_ERR_APPLICATION_VERIFICATION;
		x->vdepth = 0;
		return 0;
	}
	return 1;
}

/* --- session cache ------------------------------------------------------------ */

/* A TLS 1.3 ticket is for one connection (RFC 8446 C.4; OpenSSL marks a
 * session not resumable once a handshake resumed it), and a server sends
 * one per handshake: so a peer's entry holds a few, each taken out when
 * offered. Connections that overlap then each find one of their own (with
 * one session per peer, a connection that started while another was
 * resuming with it made a full handshake). Up to 64 per peer: clients in
 * step (a pool of 16 that all reconnect at once) find one each; a session
 * is about 1.5 KiB (its ticket; the peer certificate is shared with the
 * sessions it came from), and the worker's max bounds them all. */
#define TICKETS_PER_PEER 64

struct sess_ent {
	char *key;
	uint64_t used;		/* LRU tick */
	unsigned n;		/* t[0] the oldest */
	struct {
		SSL_SESSION *sess;
		uint64_t gen;	/* ctxinfo.gen of the context that made it */
	} t[TICKETS_PER_PEER];
};

struct xtls_sessions {
	size_t max, total, n;	/* sessions at most, sessions, entries */
	uint64_t tick;
	struct sess_ent *e;
};

struct xtls_sessions *
xtls_sessions_new(size_t max)
{
	struct xtls_sessions *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->max = max ? max : 1;
	/* Every entry holds a session: never more entries than sessions. */
	if (!(s->e = calloc(s->max, sizeof(*s->e)))) {
		free(s);
		return NULL;
	}
	return s;
}

/* Frees e's oldest session; an entry left empty goes (the last moves into
 * its place: pointers into s->e are stale after). */
static void
ent_pop(struct xtls_sessions *s, struct sess_ent *e)
{
	SSL_SESSION_free(e->t[0].sess);
	e->n--;
	memmove(&e->t[0], &e->t[1], e->n * sizeof(e->t[0]));
	s->total--;
	if (e->n == 0) {
		free(e->key);
		*e = s->e[--s->n];
	}
}

void
xtls_sessions_free(struct xtls_sessions *s)
{
	if (!s)
		return;
	while (s->n)
		ent_pop(s, &s->e[0]);
	free(s->e);
	free(s);
}

static struct sess_ent *
sessions_find(struct xtls_sessions *s, const char *key)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->e[i].key, key) == 0)
			return &s->e[i];
	return NULL;
}

static void
sessions_drop(struct xtls_sessions *s, const char *key)
{
	struct sess_ent *e;

	while ((e = sessions_find(s, key)))
		ent_pop(s, e);
}

/* Takes the reference to sess (or frees it). Full: the least recently used
 * peer's oldest session goes; a peer's oldest when it has its fill. */
static void
sessions_put(struct xtls_sessions *s, const char *key, SSL_SESSION *sess, uint64_t gen)
{
	struct sess_ent *e;

	if (s->total == s->max) {
		struct sess_ent *lru = &s->e[0];
		for (size_t i = 1; i < s->n; i++)
			if (s->e[i].used < lru->used)
				lru = &s->e[i];
		ent_pop(s, lru);
	}
	if (!(e = sessions_find(s, key))) {
		char *k = strdup(key);
		if (!k) {
			SSL_SESSION_free(sess);
			return;
		}
		e = &s->e[s->n++];
		*e = (struct sess_ent){ .key = k };
	} else if (e->n == TICKETS_PER_PEER) {
		ent_pop(s, e);	/* e->n stays > 0: e is not moved */
	}
	e->t[e->n].sess = sess;
	e->t[e->n].gen = gen;
	e->n++;
	s->total++;
	e->used = ++s->tick;
}

/* A new session (TLS 1.2: at the end of the handshake; TLS 1.3: each ticket,
 * read after it) goes into the conn's cache under its key. */
static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct xtls *x = SSL_get_app_data(ssl);

	if (!x || !x->sessions || !x->session_key || x->failed || !SSL_SESSION_is_resumable(sess))
		return 0;
	sessions_put(x->sessions, x->session_key, sess, x->info->gen);
	return 1;
}

/* Is the validity of cert good now? */
static bool
cert_current(X509 *cert)
{
	return X509_cmp_current_time(X509_get0_notBefore(cert)) < 0 &&
	    X509_cmp_current_time(X509_get0_notAfter(cert)) > 0;
}

/* --- what the hand-over to our record layer needs ------------------------------ */

/* Conns go to our record layer after the handshake unless
 * OUTRIGGER_TLS_RECORDS=openssl (or a test) says otherwise. */
static int own_records = -1;	/* read by the workers: atomics */

void
xtls_set_own_records(bool on)
{
	__atomic_store_n(&own_records, on, __ATOMIC_RELAXED);
}

/* First called by ctx_new (the control thread, before any worker has a
 * context). */
static bool
own_records_on(void)
{
	int on = __atomic_load_n(&own_records, __ATOMIC_RELAXED);

	if (on < 0) {
		const char *e = getenv("OUTRIGGER_TLS_RECORDS");
		on = !(e && strcmp(e, "openssl") == 0);
		__atomic_store_n(&own_records, on, __ATOMIC_RELAXED);
	}
	return on;
}

/* NSS key log lines (one per secret): we keep the two application traffic
 * secrets, "CLIENT_TRAFFIC_SECRET_0 <client random> <secret>" and the
 * server's, and nothing is logged anywhere. */
static void
keylog_cb(const SSL *ssl, const char *line)
{
	struct xtls *x = SSL_get_app_data(ssl);
	const char *hex = strrchr(line, ' ');
	uint8_t *dst, *len;
	size_t n = 0;

	if (!x || !hex || x->no_hand_over)
		return;
	if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
		dst = x->csec;
		len = &x->csec_len;
	} else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
		dst = x->ssec;
		len = &x->ssec_len;
	} else {
		return;
	}
	/* Hex digits, no separator ('\0'); too long or not hex: none. */
	if (OPENSSL_hexstr2buf_ex(dst, XREC_MAX_SECRET, &n, hex + 1, '\0') != 1)
		n = 0;
	ERR_clear_error();
	*len = (uint8_t)n;
}

/* Counts the protected records of each direction after its Finished: the
 * sequence numbers our layer goes on from. The header of a record is
 * reported when it is built (write) or read, and a Finished after its
 * record's header: so the Finished's own record, under the handshake keys,
 * is not counted. A KeyUpdate (either way) moves the secrets past _0: no
 * hand-over then. */
static void
msg_cb(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl, void *arg)
{
	struct xtls *x = SSL_get_app_data(ssl);
	const uint8_t *p = buf;

	(void)version; (void)arg;
	if (!x || len < 1)
		return;
	if (type == SSL3_RT_HEADER && p[0] == SSL3_RT_APPLICATION_DATA) {
		if (write_p && x->wr_app)
			x->wr_recs++;
		else if (!write_p && x->rd_app)
			x->rd_recs++;
	} else if (type == SSL3_RT_HANDSHAKE) {
		if (p[0] == SSL3_MT_FINISHED)
			*(write_p ? &x->wr_app : &x->rd_app) = true;
		else if (p[0] == SSL3_MT_KEY_UPDATE)
			x->key_update = true;
		else if (p[0] == SSL3_MT_NEWSESSION_TICKET && !write_p)
			x->got_ticket = true;
	}
}

/* --- contexts ------------------------------------------------------------------ */

static void
ssl_err(char *err, size_t errlen, const char *what)
{
	char e[160] = "";
	unsigned long ec = ERR_peek_last_error();

	if (ec)
		ERR_error_string_n(ec, e, sizeof(e));
	snprintf(err, errlen, "%s%s%s", what, *e ? ": " : "", e);
	ERR_clear_error();
}

/* A context with what every one of ours shares. */
static SSL_CTX *
ctx_new(const SSL_METHOD *m, enum ctx_kind kind, const char *td, char *err, size_t errlen)
{
	struct ctxinfo *info = NULL;
	SSL_CTX *ctx = NULL;

	pthread_once(&ctxinfo_once, ctxinfo_init);
	if (ctxinfo_idx < 0 || !(ctx = SSL_CTX_new(m)) || !(info = calloc(1, sizeof(*info)))) {
		ssl_err(err, errlen, "SSL_CTX_new");
		goto bad;
	}
	info->kind = kind;
	info->gen = __atomic_add_fetch(&ctx_gen, 1, __ATOMIC_RELAXED);
	snprintf(info->td, sizeof(info->td), "%s", td ? td : "");
	if (!SSL_CTX_set_ex_data(ctx, ctxinfo_idx, info)) {
		ssl_err(err, errlen, "SSL_CTX_set_ex_data");
		goto bad;
	}
	info = NULL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_cipher_list(ctx, XTLS_CIPHERS_12) ||
	    !SSL_CTX_set1_groups_list(ctx, XTLS_GROUPS)) {
		ssl_err(err, errlen, "TLS parameters");
		goto bad;
	}
	/* Buffers only while records are in flight (an idle conn holds none);
	 * SSL_write returns per record, and the flow may retry from a chunk it
	 * has moved (memmove) or grown. A FIN without close_notify ends the
	 * stream as Envoy does (BoringSSL reads it as EOF): many apps behind
	 * a mesh peer do not send close_notify. No renegotiation (TLS 1.2).
	 * The chain sent is the bundle's, never one OpenSSL builds from the
	 * trust store at each handshake (as Envoy: cert-chain.pem as given). */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_NO_AUTO_CHAIN | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_COMPRESSION);
	/* Mesh conns may go to our record layer after the handshake. */
	if (kind != CTX_CONTROL && own_records_on()) {
		SSL_CTX_set_keylog_callback(ctx, keylog_cb);
		SSL_CTX_set_msg_callback(ctx, msg_cb);
	}
	return ctx;
bad:
	free(info);
	SSL_CTX_free(ctx);
	return NULL;
}

/* An X509_STORE holding roots only. */
static X509_STORE *
store_of(STACK_OF(X509) *roots)
{
	X509_STORE *st = X509_STORE_new();

	if (!st)
		return NULL;
	for (int i = 0; i < sk_X509_num(roots); i++)
		if (!X509_STORE_add_cert(st, sk_X509_value(roots, i))) {
			X509_STORE_free(st);
			return NULL;
		}
	return st;
}

static int
ctx_use_bundle(SSL_CTX *ctx, const struct certbundle *b, char *err, size_t errlen)
{
	if (SSL_CTX_use_certificate(ctx, b->leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, b->key) != 1 ||
	    (b->chain && SSL_CTX_set1_chain(ctx, b->chain) != 1) || SSL_CTX_check_private_key(ctx) != 1) {
		ssl_err(err, errlen, "certificate or key");
		return -EINVAL;
	}
	return 0;
}

static int
ctx_trust(SSL_CTX *ctx, STACK_OF(X509) *roots, char *err, size_t errlen)
{
	X509_STORE *st = store_of(roots);

	if (!st) {
		ssl_err(err, errlen, "roots");
		return -ENOMEM;
	}
	SSL_CTX_set_cert_store(ctx, st);
	return 0;
}

/* ALPN (server): the application protocol when the client offers one we
 * know, h2 first (Envoy's inbound list is ["h2", "http/1.1"]); never an
 * istio* value, which only matched a filter chain in Envoy: no ALPN then,
 * and the handshake goes on. */
static int
alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
    unsigned inlen, void *arg)
{
	static const unsigned char prefs[][9] = { "\x02h2", "\x08http/1.1" };
	(void)ssl; (void)arg;

	for (size_t p = 0; p < sizeof(prefs) / sizeof(prefs[0]); p++)
		for (unsigned i = 0; i < inlen; i += 1u + in[i])
			if (i + 1u + in[i] <= inlen && in[i] == prefs[p][0] &&
			    memcmp(in + i + 1, prefs[p] + 1, in[i]) == 0) {
				*out = in + i + 1;
				*outlen = in[i];
				return SSL_TLSEXT_ERR_OK;
			}
	return SSL_TLSEXT_ERR_NOACK;
}

/* ALPN (HBONE server): h2 or the handshake fails (no_application_protocol). */
static int
alpn_h2_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
    unsigned inlen, void *arg)
{
	(void)ssl; (void)arg;
	for (unsigned i = 0; i < inlen; i += 1u + in[i])
		if (i + 3u <= inlen && in[i] == 2 && in[i + 1] == 'h' && in[i + 2] == '2') {
			*out = in + i + 1;
			*outlen = 2;
			return SSL_TLSEXT_ERR_OK;
		}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* The HBONE server's context (reference xds-hbone.md §3.1): as the mesh
 * server's (client certificate of our trust domain required) but TLS 1.3
 * only, ztunnel's two AES-GCM suites, ALPN h2 only, no tickets (ztunnel's
 * client does not resume). */
static SSL_CTX *
hbone_server_ctx(struct certbundle *b, char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_new(TLS_server_method(), CTX_MESH_SERVER, b->id.td, err, errlen);

	if (!ctx)
		return NULL;
	if (ctx_use_bundle(ctx, b, err, errlen) < 0 || ctx_trust(ctx, b->roots, err, errlen) < 0)
		goto bad;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256")) {
		ssl_err(err, errlen, "HBONE TLS parameters");
		goto bad;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_h2_cb, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	return ctx;
bad:
	SSL_CTX_free(ctx);
	return NULL;
}

int
xtls_prepare(struct certbundle *b, char *err, size_t errlen)
{
	SSL_CTX *srv = NULL, *cli = NULL, *hb = NULL;
	int rc = -EINVAL;

	if (!b->leaf || !b->key || !b->roots || sk_X509_num(b->roots) < 1 || !b->id.td[0]) {
		snprintf(err, errlen, "bundle without leaf, key, roots or trust domain");
		return -EINVAL;
	}
	if (!(srv = ctx_new(TLS_server_method(), CTX_MESH_SERVER, b->id.td, err, errlen)) ||
	    (rc = ctx_use_bundle(srv, b, err, errlen)) < 0 || (rc = ctx_trust(srv, b->roots, err, errlen)) < 0)
		goto bad;
	SSL_CTX_set_verify(srv, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
	SSL_CTX_set_alpn_select_cb(srv, alpn_select_cb, NULL);
	/* Resumption by stateless tickets (their keys are this context's, so a
	 * new bundle starts afresh); no server-side cache, which would hold
	 * every session (and its client certificate) until it expired. One
	 * ticket per handshake: each costs a write and the client keeps one. */
	SSL_CTX_set_session_cache_mode(srv, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(srv, 1);
	if (!SSL_CTX_set_session_id_context(srv, (const unsigned char *)XTLS_SID_CTX, sizeof(XTLS_SID_CTX) - 1)) {
		ssl_err(err, errlen, "session id context");
		rc = -ENOMEM;
		goto bad;
	}
	if (!(cli = ctx_new(TLS_client_method(), CTX_MESH_CLIENT, b->id.td, err, errlen)) ||
	    (rc = ctx_use_bundle(cli, b, err, errlen)) < 0 || (rc = ctx_trust(cli, b->roots, err, errlen)) < 0)
		goto bad;
	SSL_CTX_set_verify(cli, SSL_VERIFY_PEER, verify_cb);
	SSL_CTX_set_session_cache_mode(cli, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(cli, new_session_cb);
	if (!(hb = hbone_server_ctx(b, err, errlen))) {
		rc = -EINVAL;
		goto bad;
	}
	SSL_CTX_free(b->server_ctx);
	SSL_CTX_free(b->client_ctx);
	SSL_CTX_free(b->hbone_server_ctx);
	b->server_ctx = srv;
	b->client_ctx = cli;
	b->hbone_server_ctx = hb;
	return 0;
bad:
	SSL_CTX_free(srv);
	SSL_CTX_free(cli);
	SSL_CTX_free(hb);
	return rc < 0 ? rc : -EINVAL;
}

/* Never a passphrase prompt (OpenSSL's default callback reads /dev/tty or
 * stdin) for a PEM block with encryption headers: refused. */
static int
no_password(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return -1;
}

SSL_CTX *
xtls_ctx_control(const char *roots_pem, size_t len, const struct certbundle *b, char *err, size_t errlen)
{
	STACK_OF(X509) *roots = sk_X509_new_null();
	SSL_CTX *ctx = NULL;
	BIO *bio = NULL;
	X509 *x;

	if (!roots || len > INT_MAX || !(bio = BIO_new_mem_buf(roots_pem, (int)len))) {
		snprintf(err, errlen, "out of memory");
		goto bad;
	}
	while ((x = PEM_read_bio_X509(bio, NULL, no_password, NULL)))
		if (!sk_X509_push(roots, x)) {
			X509_free(x);
			snprintf(err, errlen, "out of memory");
			goto bad;
		}
	ERR_clear_error();	/* the end of the PEM text */
	if (sk_X509_num(roots) == 0) {
		snprintf(err, errlen, "no certificate in the roots PEM");
		goto bad;
	}
	if (!(ctx = ctx_new(TLS_client_method(), CTX_CONTROL, NULL, err, errlen)) ||
	    ctx_trust(ctx, roots, err, errlen) < 0 || (b && ctx_use_bundle(ctx, b, err, errlen) < 0))
		goto bad;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	BIO_free(bio);
	sk_X509_pop_free(roots, X509_free);
	return ctx;
bad:
	BIO_free(bio);
	sk_X509_pop_free(roots, X509_free);
	SSL_CTX_free(ctx);
	return NULL;
}

/* --- the socket under the SSL ------------------------------------------------------ */

/* OpenSSL's socket BIO writes with write(2): a peer gone away raises
 * SIGPIPE in any program that has not ignored it (a test, a tool linking
 * the library). Ours sends with MSG_NOSIGNAL, as raw_ops does, and
 * otherwise behaves as the socket BIO (retry flags on EAGAIN, errno kept
 * for SSL_ERROR_SYSCALL). */
static BIO_METHOD *sock_meth;
static pthread_once_t sock_meth_once = PTHREAD_ONCE_INIT;

static int
sbio_fd(BIO *b)
{
	return (int)(intptr_t)BIO_get_data(b);
}

static bool
sbio_retry(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK || err == EINTR || err == EINPROGRESS;
}

static int
sbio_write(BIO *b, const char *buf, int len)
{
	ssize_t n;

	BIO_clear_retry_flags(b);
	n = send(sbio_fd(b), buf, (size_t)len, MSG_NOSIGNAL);
	if (n < 0 && sbio_retry(errno))
		BIO_set_retry_write(b);
	return (int)n;
}

static int
sbio_read(BIO *b, char *buf, int len)
{
	ssize_t n;

	BIO_clear_retry_flags(b);
	n = recv(sbio_fd(b), buf, (size_t)len, 0);
	if (n < 0 && sbio_retry(errno))
		BIO_set_retry_read(b);
	return (int)n;
}

static long
sbio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b; (void)num; (void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int
sbio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void
sock_meth_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR,
	    "outrigger socket");

	if (m && BIO_meth_set_write(m, sbio_write) && BIO_meth_set_read(m, sbio_read) &&
	    BIO_meth_set_ctrl(m, sbio_ctrl) && BIO_meth_set_create(m, sbio_create))
		sock_meth = m;
	else
		BIO_meth_free(m);
}

/* The SSL reads and writes fd through our BIO. */
static bool
ssl_set_sock(SSL *ssl, int fd)
{
	BIO *b;

	pthread_once(&sock_meth_once, sock_meth_init);
	if (!sock_meth || !(b = BIO_new(sock_meth)))
		return false;
	BIO_set_data(b, (void *)(intptr_t)fd);
	SSL_set_bio(ssl, b, b);	/* one reference, both ways */
	return true;
}

/* --- starting a conn -------------------------------------------------------------- */

static struct xtls *
xtls_new(SSL_CTX *ctx, int fd, bool client)
{
	const struct ctxinfo *info = ctxinfo_of(ctx);
	struct xtls *x;

	if (!info || !(x = calloc(1, sizeof(*x))))
		return NULL;
	x->info = info;
	x->client = client;
	x->hs_ev = client ? EV_WRITE : EV_READ;
	x->rd_ev = EV_READ;
	x->wr_ev = EV_WRITE;
	if (!(x->ssl = SSL_new(ctx)) || !ssl_set_sock(x->ssl, fd) || !SSL_set_app_data(x->ssl, x)) {
		xtls_free(x);
		ERR_clear_error();
		return NULL;
	}
	if (client)
		SSL_set_connect_state(x->ssl);
	else
		SSL_set_accept_state(x->ssl);
	return x;
}

int
xtls_start_server(struct conn *c, SSL_CTX *ctx)
{
	struct xtls *x;

	if (c->fd < 0 || !ctx)
		return -EINVAL;
	if (!(x = xtls_new(ctx, c->fd, false)))
		return -ENOMEM;
	c->ops = &xtls_ops;
	c->tx = x;
	return 0;
}

/* Offer (and take out of the cache) the oldest session for o->session_key
 * if it is still good for what this conn expects (the session's peer
 * certificate, checked as a fresh chain's leaf would be), and made through
 * this very context (its
 * roots verified that peer): a session never stands in for another
 * identity, nor outlives the roots that trusted it. */
static void
offer_session(struct xtls *x)
{
	struct sess_ent *e;

	while ((e = sessions_find(x->sessions, x->session_key))) {
		SSL_SESSION *sess = e->t[0].sess;
		X509 *peer = SSL_SESSION_get0_peer(sess);

		/* Made under another bundle (a rotation since: its peer was
		 * verified against roots that may not be ours any more), used up,
		 * or past its lifetime: gone. */
		if (e->t[0].gen != x->info->gen || !SSL_SESSION_is_resumable(sess) ||
		    (uint64_t)SSL_SESSION_get_time(sess) + (uint64_t)SSL_SESSION_get_timeout(sess) <=
		    (uint64_t)time(NULL)) {
			ent_pop(x->sessions, e);
			continue;
		}
		if (!peer || !cert_current(peer) || check_identity(x, peer) < 0) {
			/* Not for what this conn expects: kept, not offered. */
			free(x->detail);
			x->detail = NULL;
			return;
		}
		e->used = ++x->sessions->tick;
		if (!SSL_set_session(x->ssl, sess))
			ERR_clear_error();
		ent_pop(x->sessions, e);	/* the conn holds its own reference */
		return;
	}
}

int
xtls_start_client(struct conn *c, SSL_CTX *ctx, const struct xtls_client_opts *o)
{
	static const struct xtls_client_opts none;
	struct xtls *x;

	if (c->fd < 0 || !ctx)
		return -EINVAL;
	if (!o)
		o = &none;
	if (!(x = xtls_new(ctx, c->fd, true)))
		return -ENOMEM;
	if (o->nsans) {
		if (!(x->sans = calloc(o->nsans, sizeof(*x->sans))))
			goto nomem;
		for (size_t i = 0; i < o->nsans; i++, x->nsans++)
			if (!(x->sans[i] = strdup(o->sans[i])))
				goto nomem;
	}
	if (o->verify_name) {
		if (!(x->verify_name = strdup(o->verify_name)))
			goto nomem;
		if (strncmp(o->verify_name, "spiffe://", 9) != 0 && !SSL_set1_host(x->ssl, o->verify_name))
			goto nomem;
	}
	if (o->sni && !SSL_set_tlsext_host_name(x->ssl, o->sni))
		goto nomem;
	/* SSL_set_alpn_protos returns 0 on success. */
	if (o->alpn && o->alpn_len && (o->alpn_len > UINT_MAX || SSL_set_alpn_protos(x->ssl, o->alpn, (unsigned)o->alpn_len) != 0))
		goto nomem;
	if (o->sessions && o->session_key && x->info->kind != CTX_CONTROL) {
		x->sessions = o->sessions;
		if (!(x->session_key = strdup(o->session_key)))
			goto nomem;
		offer_session(x);
	}
	c->ops = &xtls_ops;
	c->tx = x;
	return 0;
nomem:
	ERR_clear_error();
	xtls_free(x);
	return -ENOMEM;
}

/* --- the ops -------------------------------------------------------------------- */

/* Record a failure once; returns its -errno. */
static int
xtls_failed(struct xtls *x, enum xtls_fail f, int err)
{
	if (!x->failed) {
		x->failed = true;
		x->fail = f;
		x->err = err;
		/* A refused peer's session is not offered again (a conn that
		 * failed later, a reset mid-stream, says nothing against it). */
		if (x->client && !x->hs_done && x->sessions && x->session_key)
			sessions_drop(x->sessions, x->session_key);
	}
	return x->err;
}

/* An SSL call failed with SSL_get_error() e (not WANT_*): why. */
static int
ssl_failure(struct xtls *x, int e, const char *when)
{
	unsigned long ec = ERR_peek_last_error();
	int reason = ERR_GET_REASON(ec);
	enum xtls_fail f = XTLS_FAIL_PROTOCOL;
	char s[160] = "";

	if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SSL && !ec)) {
		int err = errno && e == SSL_ERROR_SYSCALL ? -errno : -ECONNRESET;
		if (!x->failed)
			set_detail(x, "%s: %s", when, e == SSL_ERROR_SYSCALL && errno ? strerror(errno) :
			    "connection closed");
		ERR_clear_error();
		return xtls_failed(x, XTLS_FAIL_IO, err);
	}
	if (x->verr) {
		/* The detail was set where verification failed. */
		f = verify_fail(x->verr);
	} else {
		switch (reason) {
		case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
			f = XTLS_FAIL_NO_CERT;
			break;
		case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
			f = XTLS_FAIL_EXPIRED;
			break;
		case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
		case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
		case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
		case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
			f = XTLS_FAIL_UNTRUSTED;
			break;
		}
		if (!x->failed) {
			ERR_error_string_n(ec, s, sizeof(s));
			set_detail(x, "%s: %s", when, s);
		}
	}
	ERR_clear_error();
	return xtls_failed(x, f, -EPROTO);
}

/* An idle conn holds no record buffer (the target: < 16 KiB per
 * idle conn). SSL_MODE_RELEASE_BUFFERS frees a buffer once a record is
 * consumed, but not the read buffer after the handshake's last message or a
 * post-handshake one (the TLS 1.3 ticket): that is 16.7 KiB on one side of
 * every conn. SSL_free_buffers() refuses when bytes are still held (and
 * since 3.0.14 when a record is processed but unread); pending is checked
 * first anyway. */
static void
release_buffers(struct xtls *x)
{
	if (!x->wr_blocked && !x->shut_pending && SSL_pending(x->ssl) == 0)
		(void)SSL_free_buffers(x->ssl);
}

/* This conn stays with OpenSSL: its secrets are not kept. */
static void
never_hand_over(struct xtls *x)
{
	if (x->info->kind != CTX_CONTROL)
		__atomic_fetch_add(&process_stats[PM_TLS_OPENSSL_RECORDS], 1, __ATOMIC_RELAXED);
	x->no_hand_over = true;
	OPENSSL_cleanse(x->csec, sizeof(x->csec));
	OPENSSL_cleanse(x->ssec, sizeof(x->ssec));
	x->csec_len = x->ssec_len = 0;
}

/* The SSL goes, our record layer takes the conn (xrec.h): once the
 * handshake is over, in TLS 1.3 with one of its AEAD suites, with both
 * secrets known and no KeyUpdate since, and nothing in flight in OpenSSL
 * (no byte read ahead or decrypted and unread, no message read in part, no
 * record held for the socket, no close_notify either way). A client that
 * resumes waits for its ticket (taken into the session cache through
 * OpenSSL) or the first data, whichever comes first. Not now: nothing
 * changes, OpenSSL goes on, and it is tried again later. */
static void
hand_over(struct conn *c, struct xtls *x)
{
	const SSL_CIPHER *ciph;
	uint16_t suite;
	struct xrec *rec;

	if (x->rec || x->no_hand_over || !x->hs_done || x->failed)
		return;
	/* For good: TLS 1.2, another suite, a KeyUpdate gone by (the
	 * secrets are no longer _0), a max_fragment_length (RFC 6066) the
	 * peer asked for (our records are up to 2^14). */
	if (x->info->kind == CTX_CONTROL || !own_records_on() || x->key_update ||
	    SSL_version(x->ssl) != TLS1_3_VERSION || !(ciph = SSL_get_current_cipher(x->ssl)) ||
	    SSL_SESSION_get_max_fragment_length(SSL_get0_session(x->ssl)) != TLSEXT_max_fragment_length_DISABLED ||
	    !x->rd_app || !x->wr_app || !x->csec_len || x->csec_len != x->ssec_len) {
		never_hand_over(x);
		return;
	}
	suite = (uint16_t)(SSL_CIPHER_get_id(ciph) & 0xffff);
	/* Not now: something in flight. A post-handshake message read in
	 * part (a ticket over several records) is held outside the read
	 * buffer, so neither SSL_pending nor SSL_has_pending sees it: the
	 * SSL is then not "init finished". */
	if (x->wr_blocked || x->shut_pending || SSL_get_shutdown(x->ssl) || SSL_pending(x->ssl) > 0 ||
	    SSL_has_pending(x->ssl) || !SSL_is_init_finished(x->ssl))
		return;
	if (x->client && x->sessions && !x->got_ticket && !x->got_data)
		return;
	if (!(rec = xrec_new(c->fd, !x->client, suite, x->client ? x->ssec : x->csec,
	    x->client ? x->csec : x->ssec, x->csec_len, x->rd_recs, x->wr_recs))) {
		never_hand_over(x);
		return;
	}
	/* SSL_free takes a session for a bad one without close_notify sent
	 * (see xtls_close): this one is good, and the cache may hold it. */
	SSL_set_shutdown(x->ssl, SSL_SENT_SHUTDOWN);
	SSL_free(x->ssl);
	x->ssl = NULL;
	x->rec = rec;
	OPENSSL_cleanse(x->csec, sizeof(x->csec));
	OPENSSL_cleanse(x->ssec, sizeof(x->ssec));
	x->rd_ev = EV_READ;
	x->wr_ev = EV_WRITE;
	__atomic_fetch_add(&process_stats[PM_TLS_OWN_RECORDS], 1, __ATOMIC_RELAXED);
}

/* The handshake completed: what the conn reports from now on. A resumed
 * session sent no certificate, so its peer certificate (kept in the
 * session) is checked again as a fresh one would be. */
static int
handshake_done(struct xtls *x)
{
	X509 *peer = SSL_get0_peer_certificate(x->ssl);
	const unsigned char *a;
	unsigned alen;
	char id[SPIFFE_ID_MAX], td[256];

	if (SSL_session_reused(x->ssl) && x->info->kind != CTX_CONTROL) {
		if (!peer)
			return xtls_failed(x, XTLS_FAIL_NO_CERT, -EPROTO);
		if (!cert_current(peer)) {
			set_detail(x, "resumed session: peer certificate expired");
			return xtls_failed(x, XTLS_FAIL_EXPIRED, -EPROTO);
		}
		if (check_identity(x, peer) < 0)
			return xtls_failed(x, XTLS_FAIL_IDENTITY, -EPROTO);
	}
	if (peer && cert_spiffe(peer, id, sizeof(id), td, sizeof(td)) == 0 && !(x->peer_id = strdup(id)))
		return xtls_failed(x, XTLS_FAIL_IO, -ENOMEM);
	SSL_get0_alpn_selected(x->ssl, &a, &alen);
	if (a && alen < sizeof(x->alpn)) {
		memcpy(x->alpn, a, alen);
		x->alpn[alen] = 0;
	}
	x->version = SSL_get_version(x->ssl);
	x->resumed = SSL_session_reused(x->ssl);
	drop_expectations(x);
	x->hs_done = true;
	return 0;
}

static int
xtls_handshake(struct conn *c)
{
	struct xtls *x = c->tx;
	int rc, e;

	if (x->failed)
		return x->err;
	if (x->hs_done)
		return 0;
	if (c->connecting) {
		/* Called once the socket is writable: connected, or SO_ERROR
		 * (conn.c's raw_handshake). */
		int err = c->connect_seen ? 0 : sock_error(c->fd);
		if (err) {
			set_detail(x, "connect: %s", strerror(-err));
			return xtls_failed(x, XTLS_FAIL_IO, err);
		}
		c->connecting = false;
	}
	ERR_clear_error();
	errno = 0;
	rc = SSL_do_handshake(x->ssl);
	if (rc == 1) {
		if ((rc = handshake_done(x)) < 0)
			return rc;
		hand_over(c, x);
		if (!x->rec)
			release_buffers(x);
		return 0;
	}
	e = SSL_get_error(x->ssl, rc);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		x->hs_ev = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
		return -EAGAIN;
	}
	return ssl_failure(x, e, "handshake");
}

/* close_notify queued by shutdown_wr but blocked: push it, then our FIN. */
static void
flush_shutdown(struct conn *c, struct xtls *x)
{
	if (x->rec) {
		if (xrec_flush(x->rec) == -EAGAIN)
			return;
		x->shut_pending = false;
		if (shutdown(c->fd, SHUT_WR) == 0)
			c->shut_wr = true;
		return;
	}
	ERR_clear_error();
	int rc = SSL_shutdown(x->ssl);
	if (rc < 0) {
		int e = SSL_get_error(x->ssl, rc);
		ERR_clear_error();
		if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
			return;
	}
	x->shut_pending = false;
	if (shutdown(c->fd, SHUT_WR) == 0)
		c->shut_wr = true;
}

/* What our record layer returned, a failure recorded as the SSL's are. */
static ssize_t
rec_result(struct xtls *x, ssize_t n, const char *when)
{
	if (n >= 0 || n == -EAGAIN)
		return n;
	if (!x->failed)
		set_detail(x, "%s: %s", when, xrec_detail(x->rec));
	return xtls_failed(x, n == -EPROTO ? XTLS_FAIL_PROTOCOL : XTLS_FAIL_IO, (int)n);
}

static ssize_t
xtls_recv(struct conn *c, void *buf, size_t len)
{
	struct xtls *x = c->tx;
	int n, e;

	if (x->failed)
		return x->err;
	if (x->shut_pending)
		flush_shutdown(c, x);
	if (x->rec)
		return rec_result(x, xrec_recv(x->rec, buf, len), "read");
	ERR_clear_error();
	errno = 0;
	n = SSL_read(x->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
	if (n > 0) {
		x->rd_ev = EV_READ;
		x->got_data = true;
		return n;
	}
	e = SSL_get_error(x->ssl, n);
	switch (e) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		x->rd_ev = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
		hand_over(c, x);
		if (!x->rec)
			release_buffers(x);
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		/* close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) a FIN without it. */
		x->rd_ev = EV_READ;
		return 0;
	case SSL_ERROR_SYSCALL:
		if (errno == 0) {
			ERR_clear_error();
			return 0;
		}
		/* fall through */
	default:
		return ssl_failure(x, e, "read");
	}
}

static ssize_t
xtls_send(struct conn *c, const void *buf, size_t len)
{
	struct xtls *x = c->tx;
	int n, e;

	if (x->failed)
		return x->err;
	if (x->rec)
		return rec_result(x, xrec_send(x->rec, buf, len), "write");
	ERR_clear_error();
	errno = 0;
	n = SSL_write(x->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
	if (n > 0) {
		x->wr_ev = EV_WRITE;
		x->wr_blocked = false;
		return n;
	}
	e = SSL_get_error(x->ssl, n);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		x->wr_ev = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
		x->wr_blocked = true;
		return -EAGAIN;
	}
	return ssl_failure(x, e, "write");
}

/* TLS has no half-close of its own: close_notify says "no more from me",
 * then a FIN, as Envoy does. The peer's TLS stack reads end of stream
 * (OpenSSL: SSL_read 0, SSL_ERROR_ZERO_RETURN) and may keep sending: TLS
 * 1.3 allows it, and we keep reading. */
static int
xtls_shutdown_wr(struct conn *c)
{
	struct xtls *x = c->tx;
	int rc;

	if (x->failed)
		return x->err;
	if (x->rec) {
		if (x->shut_pending || c->shut_wr)
			return 0;
		if ((rc = (int)rec_result(x, xrec_shutdown(x->rec), "close_notify")) == -EAGAIN) {
			x->shut_pending = true;
			return 0;
		}
		if (rc < 0)
			return rc;
		if (shutdown(c->fd, SHUT_WR) < 0)
			return -errno;
		c->shut_wr = true;
		return 0;
	}
	if (SSL_get_shutdown(x->ssl) & SSL_SENT_SHUTDOWN && !x->shut_pending)
		return 0;
	ERR_clear_error();
	rc = SSL_shutdown(x->ssl);
	if (rc < 0) {
		int e = SSL_get_error(x->ssl, rc);
		ERR_clear_error();
		if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
			/* The socket is full: the next recv (or close) pushes it. */
			x->shut_pending = true;
			return 0;
		}
		return -EPIPE;
	}
	if (shutdown(c->fd, SHUT_WR) < 0)
		return -errno;
	c->shut_wr = true;
	return 0;
}

static int
xtls_want(struct conn *c, int what)
{
	struct xtls *x = c->tx;

	switch (what) {
	case CONN_HS:
		return c->connecting ? EV_WRITE | EV_READ : x->hs_ev;
	case CONN_RD:
		return x->rd_ev | (x->shut_pending ? EV_WRITE : 0);
	default:
		return x->wr_ev;
	}
}

/* Plaintext decrypted and not yet read. Only that: bytes of a record not
 * yet complete are still in the socket (no read-ahead), or, once read into
 * OpenSSL's buffer, need more from the socket, so the socket wakes us. */
static size_t
xtls_pending(struct conn *c)
{
	struct xtls *x = c->tx;
	int n;

	if (x->failed)
		return 0;
	if (x->rec)
		return xrec_pending(x->rec);
	n = SSL_pending(x->ssl);
	return n > 0 ? (size_t)n : 0;
}

static size_t
xtls_unsent(struct conn *c)
{
	struct xtls *x = c->tx;
	int n = 0;

	if (ioctl(c->fd, SIOCOUTQ, &n) < 0 || n < 0)
		n = 0;
	if (c->shut_wr && n > 0)
		n--;	/* our FIN: no data (see raw_unsent) */
	/* A record or close_notify OpenSSL or our layer still holds. */
	return (size_t)n + ((x->rec ? xrec_blocked(x->rec) : x->wr_blocked || x->shut_pending) ? 1 : 0);
}

static int
xtls_error(struct conn *c)
{
	return sock_error(c->fd);
}

/* Graceful: close_notify if not sent yet (best effort: the socket is not
 * waited for), then FIN. Abort: an RST, no close_notify, so the peer can
 * never take a cut stream for a complete one. */
static void
xtls_close(struct conn *c, enum conn_close how)
{
	struct xtls *x = c->tx;

	if (x && x->rec) {
		/* As SSL_shutdown: what is held first, then close_notify (once). */
		if (how == CONN_GRACEFUL && !x->failed && xrec_shutdown(x->rec) == -EAGAIN)
			(void)xrec_flush(x->rec);
	} else if (x && how == CONN_GRACEFUL && x->hs_done && !x->failed &&
	    (x->shut_pending || !(SSL_get_shutdown(x->ssl) & SSL_SENT_SHUTDOWN))) {
		ERR_clear_error();
		(void)SSL_shutdown(x->ssl);
		ERR_clear_error();
	}
	/* SSL_free marks the conn's session not resumable unless close_notify
	 * was sent (TLS 1.0's rule, RFC 2246 7.2.1; gone since TLS 1.1), and
	 * our cache holds that very session object: one reset or one close
	 * before the peer's ticket was read would cost the next connections a
	 * full handshake each. A handshake that completed and a conn that
	 * failed at most at the socket leave a good session. */
	if (x && x->ssl && x->hs_done && (!x->failed || x->fail == XTLS_FAIL_IO))
		SSL_set_shutdown(x->ssl, SSL_get_shutdown(x->ssl) | SSL_SENT_SHUTDOWN);
	if (how == CONN_ABORT)
		sock_close_rst(c->fd);
	else
		close(c->fd);
	xtls_free(x);
	c->tx = NULL;
}

const struct conn_ops xtls_ops = {
	.name = "tls",
	.handshake = xtls_handshake,
	.recv = xtls_recv,
	.send = xtls_send,
	.shutdown_wr = xtls_shutdown_wr,
	.want = xtls_want,
	.pending = xtls_pending,
	.unsent = xtls_unsent,
	.error = xtls_error,
	.close = xtls_close,
	.can_splice = false,
};

/* --- what a conn says about its TLS ------------------------------------------------- */

static struct xtls *
tls_of(const struct conn *c)
{
	return c && c->ops == &xtls_ops ? c->tx : NULL;
}

const char *
xtls_peer_id(const struct conn *c)
{
	struct xtls *x = tls_of(c);
	return x && x->hs_done && !x->failed && x->peer_id ? x->peer_id : "";
}

const char *
xtls_alpn(const struct conn *c)
{
	struct xtls *x = tls_of(c);
	return x && x->hs_done && !x->failed ? x->alpn : "";
}

const char *
xtls_version(const struct conn *c)
{
	struct xtls *x = tls_of(c);
	return x && x->hs_done && !x->failed && x->version ? x->version : "";
}

bool
xtls_resumed(const struct conn *c)
{
	struct xtls *x = tls_of(c);
	return x && x->hs_done && !x->failed && x->resumed;
}

enum xtls_fail
xtls_failure(const struct conn *c, char *detail, size_t len)
{
	struct xtls *x = tls_of(c);

	if (detail && len)
		snprintf(detail, len, "%s", x && x->failed && x->detail ? x->detail : "");
	return x && x->failed ? x->fail : XTLS_FAIL_NONE;
}

bool
xtls_own_records(const struct conn *c)
{
	struct xtls *x = tls_of(c);
	return x && x->rec;
}

SSL *
xtls_ssl(const struct conn *c)
{
	struct xtls *x = tls_of(c);
	return x ? x->ssl : NULL;
}
