/* Unit tests for outbound Istio mTLS in src/tunnel.c: a tunnel to an
 * Istio-mTLS peer (WDS LEGACY_ISTIO_MTLS, or EDS tlsMode "istio") speaks
 * TLS to a server made directly with OpenSSL on a thread (not our xtls):
 * what that server saw (SNI, ALPN offer, our client certificate), the peer
 * identity kept on the tunnel, session resumption, and the refusals
 * (another identity, another root) counted by reason and retried on the
 * service's next endpoint. Certificates from devca (src/devca.c). */
#include "autoconfig.h"
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "devca.h"
#include "identity.h"
#include "json.h"
#include "resources.h"
#include "snapshot.h"
#include "tunnel.h"
#include "xtls.h"
#include "testlo.h"

#define ID_CLIENT "spiffe://cluster.local/ns/default/sa/client"
#define ID_SERVER "spiffe://cluster.local/ns/default/sa/server"

static struct {
	EVP_PKEY *rkey, *okey, *ckey, *skey;
	X509 *root, *other, *client, *server, *server_other_root;
	struct certbundle *cb;		/* the client proxy's bundle, contexts prepared */
} pki;

/* ---- a TLS server from OpenSSL itself, one connection at a time ---- */

struct seen {
	char sni[320];
	unsigned char alpn[64];		/* the client's offer, wire format */
	size_t alpn_len;
	char client_uri[256];
	bool reused;
	bool ok;			/* handshake done and "ping" echoed */
};

struct tlsd {
	int lfd;
	SSL_CTX *ctx;
	int n;				/* connections to serve */
	struct seen seen[4];
	pthread_t th;
};

static int
alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
    unsigned inlen, void *arg)
{
	struct seen *s = SSL_get_app_data(ssl);

	(void)arg;
	memcpy(s->alpn, in, inlen < sizeof(s->alpn) ? inlen : sizeof(s->alpn));
	s->alpn_len = inlen;
	/* As `openssl s_server -alpn istio` (an Envoy sidecar selects none). */
	return SSL_select_next_proto((unsigned char **)out, outlen, (const unsigned char *)"\5istio", 6, in,
	    inlen) == OPENSSL_NPN_NEGOTIATED ? SSL_TLSEXT_ERR_OK : SSL_TLSEXT_ERR_NOACK;
}

static void
uri_of(X509 *x, char *out, size_t len)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);

	*out = 0;
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

		if (g->type == GEN_URI)
			snprintf(out, len, "%.*s", ASN1_STRING_length(g->d.uniformResourceIdentifier),
			    (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier));
	}
	GENERAL_NAMES_free(gens);
}

static void *
tlsd_main(void *arg)
{
	struct tlsd *d = arg;

	for (int i = 0; i < d->n; i++) {
		struct pollfd p = { .fd = d->lfd, .events = POLLIN };
		struct seen *s = &d->seen[i];
		char buf[4];
		int fd, flags;
		SSL *ssl;

		if (poll(&p, 1, 5000) != 1 || (fd = accept(d->lfd, NULL, NULL)) < 0)
			return NULL;
		flags = fcntl(fd, F_GETFL);
		fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &(struct timeval){ 5, 0 }, sizeof(struct timeval));
		ssl = SSL_new(d->ctx);
		SSL_set_app_data(ssl, s);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) != 1)
			ERR_print_errors_fp(stderr);
		else {
			const char *sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
			X509 *peer = SSL_get1_peer_certificate(ssl);

			snprintf(s->sni, sizeof(s->sni), "%s", sn ? sn : "");
			if (peer)
				uri_of(peer, s->client_uri, sizeof(s->client_uri));
			X509_free(peer);
			s->reused = SSL_session_reused(ssl);
			if (SSL_read(ssl, buf, 4) == 4 && SSL_write(ssl, buf, 4) == 4)
				s->ok = true;
			/* Until the proxy closes (the client closed). */
			while (SSL_read(ssl, buf, 1) > 0)
				;
		}
		SSL_free(ssl);
		close(fd);
	}
	return NULL;
}

/* A server presenting cert (issued for key) that trusts only the mesh root
 * for client certificates (required), on ip (a port the kernel picks: *addr). */
static void
tlsd_start_on(struct tlsd *d, const char *ip, X509 *cert, EVP_PKEY *key, int n, struct sockaddr_storage *addr)
{
	socklen_t len = sizeof(*addr);
	X509_STORE *st;

	memset(d, 0, sizeof(*d));
	d->n = n;
	assert_int_equal(sock_addr_parse(ip, 0, addr), 0);
	d->lfd = sock_listen(addr, 16, false, false);
	assert_true(d->lfd >= 0);
	getsockname(d->lfd, (struct sockaddr *)addr, &len);
	assert_non_null(d->ctx = SSL_CTX_new(TLS_server_method()));
	assert_int_equal(SSL_CTX_use_certificate(d->ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(d->ctx, key), 1);
	st = SSL_CTX_get_cert_store(d->ctx);
	X509_STORE_add_cert(st, pki.root);
	SSL_CTX_set_verify(d->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_session_id_context(d->ctx, (const unsigned char *)"t", 1);
	SSL_CTX_set_alpn_select_cb(d->ctx, alpn_cb, NULL);
	assert_int_equal(pthread_create(&d->th, NULL, tlsd_main, d), 0);
}

#define tlsd_start(d, cert, key, n, addr) tlsd_start_on(d, "127.0.0.1", cert, key, n, addr)

static void
tlsd_stop(struct tlsd *d)
{
	shutdown(d->lfd, SHUT_RDWR);
	pthread_join(d->th, NULL);
	close(d->lfd);
	SSL_CTX_free(d->ctx);
}

/* ---- the proxy side ---- */

struct fix {
	struct worker w;
	struct config cfg;
	int client;
	struct tunnel *t;
};

static void
spin(struct fix *f, double secs)
{
	double end = now() + secs;

	do {
		ev_run(f->w.loop, EVRUN_NOWAIT);
		poll(NULL, 0, 1);
	} while (now() < end);
}

static struct model *
mesh_model(const char *fmt, ...)
{
	char text[4096], err[256];
	struct res_report rep = { 0 };
	va_list ap;
	cJSON *list;
	struct model *m;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (!(list = json_parse_strict(text, strlen(text), err, sizeof(err))))
		fail_msg("%s: %s", text, err);
	assert_non_null(m = resources_build(list, NULL, &rep));
	if (rep.nlines)
		fail_msg("resource refused: %s", rep.lines[0]);
	res_report_free(&rep);
	cJSON_Delete(list);
	return m;
}

#define ADDR "{\"@type\":\"type.googleapis.com/istio.workload.Address\","
/* Service echo at VIP 10.255.0.1:80 (routed nowhere). */
#define SVC_ECHO(sans) ADDR "\"service\":{\"name\":\"echo\",\"namespace\":\"default\"," \
	"\"hostname\":\"echo.default.svc.cluster.local\",\"addresses\":[{\"address\":\"Cv8AAQ==\"}]," \
	"\"ports\":[{\"servicePort\":80,\"targetPort\":%d}],\"subjectAltNames\":[" sans "]}}"
/* A workload of echo at addr (base64) with service account sa, speaking Istio mTLS. */
#define WL_MTLS(uid, addr, sa) ADDR "\"workload\":{\"uid\":\"" uid "\",\"name\":\"" uid "\"," \
	"\"namespace\":\"default\",\"serviceAccount\":\"" sa "\",\"addresses\":[\"" addr "\"]," \
	"\"tunnelProtocol\":\"LEGACY_ISTIO_MTLS\"," \
	"\"services\":{\"default/echo.default.svc.cluster.local\":{\"ports\":[{\"servicePort\":80," \
	"\"targetPort\":%d}]}}}}"

static void
fix_init(struct fix *f, struct model *m, bool certs)
{
	memset(f, 0, sizeof(*f));
	config_defaults(&f->cfg);
	f->cfg.connect_timeout_ms = 3000;
	test_worker_init(&f->w, &f->cfg, 4);
	wsnap_retire(f->w.snap);
	struct snapshot *s = snapshot_new(&f->cfg, m, 1);
	assert_non_null(s);
	if (certs)
		s->certs = certbundle_ref(pki.cb);
	assert_non_null(f->w.snap = wsnap_new(s));
	assert_non_null(f->w.tls_sessions = xtls_sessions_new(16));
	f->client = -1;
}

static void
fix_fini(struct fix *f)
{
	tunnel_close_all(&f->w);
	if (f->client >= 0)
		close(f->client);
	xtls_sessions_free(f->w.tls_sessions);
	test_worker_fini(&f->w);
}

static uint64_t
lst(struct fix *f, enum listener_metric m)
{
	return f->w.stats.lst[LST_OUTBOUND][m];
}

/* A client connection through a new tunnel to dst; f->client and f->t. */
static void
open_tunnel(struct fix *f, const struct sockaddr_storage *dst)
{
	struct sockaddr_storage proxy;
	int plfd = listen_lo(&proxy), ds;

	if (f->client >= 0)
		close(f->client);
	f->client = sock_connect(&proxy, NULL, false, 0);
	assert_true(f->client >= 0);
	ds = accept_wait(plfd);
	close(plfd);
	f->t = tunnel_start(&f->w, LST_OUTBOUND, ds, dst);
}

/* Spins until the tunnel forwards or is gone (by its counters): true when it forwards. */
static bool
wait_forwarding(struct fix *f, uint64_t handshakes_before)
{
	double end = now() + 5;

	while (now() < end) {
		spin(f, 0.005);
		if (lst(f, LM_UPSTREAM_CX_TLS_HANDSHAKE) > handshakes_before)
			return true;
		if (lst(f, LM_DOWNSTREAM_CX_DESTROY) >= lst(f, LM_DOWNSTREAM_CX_TOTAL))
			return false;
	}
	fail_msg("the tunnel neither forwarded nor closed");
	return false;
}

/* ping through the tunnel and back. */
static void
ping(struct fix *f)
{
	char buf[4];
	size_t got = 0;
	double end = now() + 5;

	assert_int_equal(send(f->client, "ping", 4, MSG_NOSIGNAL), 4);
	while (got < 4 && now() < end) {
		ssize_t n = recv(f->client, buf + got, 4 - got, MSG_DONTWAIT);

		if (n > 0)
			got += (size_t)n;
		else if (n == 0)
			break;
		spin(f, 0.002);
	}
	assert_int_equal(got, 4);
	assert_memory_equal(buf, "ping", 4);
}

static struct sockaddr_storage
vip(void)
{
	struct sockaddr_storage a;

	assert_int_equal(sock_addr_parse("10.255.0.1", 80, &a), 0);
	return a;
}

/* Through a service VIP to a LEGACY_ISTIO_MTLS workload: the server saw
 * SNI outbound|80||host, an ALPN offer of exactly "istio", and our client
 * certificate; the tunnel keeps the server's SPIFFE ID. The second
 * connection resumes the first's session. */
static void
test_mtls_to_workload_and_resumption(void **state)
{
	struct sockaddr_storage app, dst = vip();
	struct tlsd d;
	struct fix f;

	(void)state;
	tlsd_start(&d, pki.server, pki.skey, 2, &app);
	fix_init(&f, mesh_model("[" SVC_ECHO("") "," WL_MTLS("wl-s", "fwAAAQ==", "server") "]",
	    sock_addr_port(&app), sock_addr_port(&app)), true);
	for (int i = 0; i < 2; i++) {
		open_tunnel(&f, &dst);
		assert_non_null(f.t);
		assert_true(wait_forwarding(&f, (uint64_t)i));
		assert_true(f.t->us_mtls);
		assert_non_null(f.t->peer_id);
		assert_string_equal(f.t->peer_id, ID_SERVER);
		ping(&f);
		spin(&f, 0.05);	/* the session ticket reaches the client side */
		close(f.client);
		f.client = -1;
		spin(&f, 0.1);
	}
	tlsd_stop(&d);
	for (int i = 0; i < 2; i++) {
		assert_true(d.seen[i].ok);
		assert_string_equal(d.seen[i].sni, "outbound|80||echo.default.svc.cluster.local");
		assert_int_equal(d.seen[i].alpn_len, 6);
		assert_memory_equal(d.seen[i].alpn, "\5istio", 6);
		assert_string_equal(d.seen[i].client_uri, ID_CLIENT);
	}
	assert_false(d.seen[0].reused);
	assert_true(d.seen[1].reused);
	assert_int_equal(lst(&f, LM_UPSTREAM_CX_TLS_HANDSHAKE), 2);
	assert_int_equal(lst(&f, LM_UPSTREAM_CX_TLS_RESUMED), 1);
	assert_int_equal(lst(&f, LM_UPSTREAM_CX_TLS_HANDSHAKE_FAIL), 0);
	fix_fini(&f);
}

/* An EDS endpoint with tlsMode "istio" (no workload known): SNI is its
 * cluster name, and the server's identity is only checked for our trust
 * domain. */
static void
test_mtls_to_eds_endpoint(void **state)
{
	struct sockaddr_storage app;
	struct tlsd d;
	struct fix f;

	(void)state;
	tlsd_start(&d, pki.server, pki.skey, 1, &app);
	fix_init(&f, mesh_model("[{\"@type\":\"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\","
	    "\"clusterName\":\"outbound|9090||db.data.svc.cluster.local\",\"endpoints\":[{\"lbEndpoints\":"
	    "[{\"endpoint\":{\"address\":{\"socketAddress\":{\"address\":\"127.0.0.1\",\"portValue\":%d}}},"
	    "\"metadata\":{\"filterMetadata\":{\"envoy.transport_socket_match\":{\"tlsMode\":\"istio\"}}}}]}]}]",
	    sock_addr_port(&app)), true);
	open_tunnel(&f, &app);
	assert_non_null(f.t);
	assert_true(wait_forwarding(&f, 0));
	assert_string_equal(f.t->peer_id, ID_SERVER);
	ping(&f);
	close(f.client);
	f.client = -1;
	spin(&f, 0.05);
	tlsd_stop(&d);
	assert_true(d.seen[0].ok);
	assert_string_equal(d.seen[0].sni, "outbound|9090||db.data.svc.cluster.local");
	assert_string_equal(d.seen[0].client_uri, ID_CLIENT);
	fix_fini(&f);
}

/* The server is not who the mesh says (the workload's service account is
 * "expected"; the certificate says "server"), or is from another root:
 * refused, counted by reason and as a connect failure; the client is reset.
 * Through a service with a second, good endpoint, the next one is tried. */
static void
test_mtls_wrong_peer_refused(void **state)
{
	struct sockaddr_storage app, app2, dst = vip();
	struct tlsd d, d2;
	struct fix f;
	char b;

	(void)state;
	for (int k = 0; k < 2; k++) {
		enum listener_metric why = k == 0 ? LM_UPSTREAM_CX_TLS_FAIL_IDENTITY : LM_UPSTREAM_CX_TLS_FAIL_UNTRUSTED;

		tlsd_start(&d, k == 0 ? pki.server : pki.server_other_root, pki.skey, 1, &app);
		fix_init(&f, mesh_model("[" SVC_ECHO("") "," WL_MTLS("wl-s", "fwAAAQ==", "%s") "]",
		    sock_addr_port(&app), k == 0 ? "expected" : "server", sock_addr_port(&app)), true);
		open_tunnel(&f, &dst);
		assert_false(wait_forwarding(&f, 0));
		assert_int_equal(recv(f.client, &b, 1, MSG_DONTWAIT), -1);
		assert_int_equal(errno, ECONNRESET);
		assert_int_equal(lst(&f, LM_UPSTREAM_CX_TLS_HANDSHAKE_FAIL), 1);
		assert_int_equal(lst(&f, why), 1);
		assert_int_equal(lst(&f, LM_UPSTREAM_CX_CONNECT_FAIL), 1);
		assert_int_equal(lst(&f, LM_UPSTREAM_CX_TLS_HANDSHAKE), 0);
		fix_fini(&f);
		tlsd_stop(&d);
	}

	/* wl-a (127.0.0.1) claims sa "expected" and fails; wl-b (127.0.0.2)
	 * is the real "server": the second attempt goes there. */
	tlsd_start(&d, pki.server, pki.skey, 1, &app);
	tlsd_start_on(&d2, "127.0.0.2", pki.server, pki.skey, 1, &app2);
	fix_init(&f, mesh_model("[" SVC_ECHO("") "," WL_MTLS("wl-a", "fwAAAQ==", "expected") ","
	    WL_MTLS("wl-b", "fwAAAg==", "server") "]", sock_addr_port(&app), sock_addr_port(&app),
	    sock_addr_port(&app2)), true);
	open_tunnel(&f, &dst);
	assert_true(wait_forwarding(&f, 0));
	assert_string_equal(f.t->peer->uid, "wl-b");
	ping(&f);
	assert_int_equal(lst(&f, LM_UPSTREAM_CX_TLS_FAIL_IDENTITY), 1);
	assert_int_equal(lst(&f, LM_UPSTREAM_CX_CONNECT_RETRY), 1);
	close(f.client);
	f.client = -1;
	spin(&f, 0.05);
	fix_fini(&f);
	tlsd_stop(&d);
	tlsd_stop(&d2);
}

/* A peer that takes the TCP connection but never answers the ClientHello:
 * the handshake outlives the connect budget, counted as a TLS failure (io)
 * and as a connect timeout, and the client is reset. */
static void
test_mtls_handshake_timeout(void **state)
{
	struct sockaddr_storage app, dst = vip();
	int lfd = listen_lo(&app);	/* never accepts: the kernel completes the TCP handshake */
	struct fix f;
	char b;
	double end;

	(void)state;
	fix_init(&f, mesh_model("[" SVC_ECHO("") "," WL_MTLS("wl-s", "fwAAAQ==", "server") "]",
	    sock_addr_port(&app), sock_addr_port(&app)), true);
	f.w.snap->s->cfg.connect_timeout_ms = 300;
	open_tunnel(&f, &dst);
	assert_non_null(f.t);
	end = now() + 3;
	while (lst(&f, LM_DOWNSTREAM_CX_DESTROY) == 0 && now() < end)
		spin(&f, 0.01);
	assert_int_equal(recv(f.client, &b, 1, MSG_DONTWAIT), -1);
	assert_int_equal(errno, ECONNRESET);
	assert_int_equal(lst(&f, LM_UPSTREAM_CX_TLS_HANDSHAKE_FAIL), 1);
	assert_int_equal(lst(&f, LM_UPSTREAM_CX_TLS_FAIL_IO), 1);
	assert_int_equal(lst(&f, LM_UPSTREAM_CX_CONNECT_TIMEOUT), 1);
	assert_int_equal(lst(&f, LM_UPSTREAM_CX_CONNECT_FAIL), 0);
	fix_fini(&f);
	close(lfd);
}

/* ---- certificates ---- */

static X509 *
leaf(const char *uri, EVP_PKEY *key, X509 *iss, EVP_PKEY *ikey)
{
	time_t t = time(NULL);
	const char *uris[] = { uri };
	struct devca_cert spec = { .uris = uris, .nuris = 1, .not_before = t - 60, .not_after = t + 86400 };
	X509 *x = devca_cert(&spec, key, iss, ikey);

	assert_non_null(x);
	return x;
}

static char *
pem(X509 *x, EVP_PKEY *k, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p, *out;
	long n;

	if (x)
		PEM_write_bio_X509(b, x);
	else
		PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(b, &p);
	out = strndup(p, (size_t)n);
	*len = (size_t)n;
	BIO_free(b);
	return out;
}

static int
setup(void **state)
{
	time_t t = time(NULL);
	struct devca_cert ca = { .ca = true, .org = "cluster.local", .cn = "root",
		.not_before = t - 3600, .not_after = t + 86400 * 10 };
	char err[256], *c, *k, *r;
	size_t cl, kl, rl;

	(void)state;
	pki.rkey = devca_key();
	pki.okey = devca_key();
	pki.ckey = devca_key();
	pki.skey = devca_key();
	pki.root = devca_cert(&ca, pki.rkey, NULL, NULL);
	ca.cn = "other root";
	pki.other = devca_cert(&ca, pki.okey, NULL, NULL);
	pki.client = leaf(ID_CLIENT, pki.ckey, pki.root, pki.rkey);
	pki.server = leaf(ID_SERVER, pki.skey, pki.root, pki.rkey);
	pki.server_other_root = leaf(ID_SERVER, pki.skey, pki.other, pki.okey);
	c = pem(pki.client, NULL, &cl);
	k = pem(NULL, pki.ckey, &kl);
	r = pem(pki.root, NULL, &rl);
	if (certbundle_from_pem(c, cl, k, kl, r, rl, "test", time(NULL), &pki.cb, err, sizeof(err)) < 0 ||
	    xtls_prepare(pki.cb, err, sizeof(err)) < 0) {
		fprintf(stderr, "setup: %s\n", err);
		return -1;
	}
	free(c);
	free(k);
	free(r);
	return 0;
}

static int
teardown(void **state)
{
	(void)state;
	certbundle_unref(pki.cb);
	X509_free(pki.root);
	X509_free(pki.other);
	X509_free(pki.client);
	X509_free(pki.server);
	X509_free(pki.server_other_root);
	EVP_PKEY_free(pki.rkey);
	EVP_PKEY_free(pki.okey);
	EVP_PKEY_free(pki.ckey);
	EVP_PKEY_free(pki.skey);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mtls_to_workload_and_resumption),
		cmocka_unit_test(test_mtls_to_eds_endpoint),
		cmocka_unit_test(test_mtls_wrong_peer_refused),
		cmocka_unit_test(test_mtls_handshake_timeout),
	};

	/* As main.c: OpenSSL writes to its socket with write(2), no MSG_NOSIGNAL. */
	signal(SIGPIPE, SIG_IGN);
	if (model_register_types() < 0)
		return 1;
	return cmocka_run_group_tests(tests, setup, teardown);
}
