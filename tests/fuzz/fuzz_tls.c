/* Fuzz target: our TLS server conn (src/xtls.c) on arbitrary bytes from a
 * client: the input is what the client sends (a ClientHello and what
 * follows), fed through a socketpair to xtls_start_server()'s handshake
 * and, if it completes, a read. Reaches OpenSSL's record and handshake
 * parsing through our callbacks (ALPN selection over the client's list,
 * the verify callback, the failure mapping). Whatever the input: a
 * handshake that fails with a reason, or waits for more, never a crash. */
#include "autoconfig.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "conn.h"
#include "xtls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static SSL_CTX *sctx;

/* A self-signed P-256 leaf with a SPIFFE URI SAN, made once. */
static void
init(void)
{
	struct certbundle *b = calloc(1, sizeof(*b));
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_EXTENSION *ext;
	char err[256];

	if (!b || !k || !x)
		abort();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400 * 365);
	X509_set_pubkey(x, k);
	ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "URI:spiffe://cluster.local/ns/default/sa/fuzz");
	if (!ext || !X509_add_ext(x, ext, -1) || !X509_sign(x, k, EVP_sha256()))
		abort();
	X509_EXTENSION_free(ext);
	b->refs = 1;
	b->leaf = x;
	b->key = k;
	b->chain = sk_X509_new_null();
	b->roots = sk_X509_new_null();
	X509_up_ref(x);
	sk_X509_push(b->roots, x);
	strcpy(b->id.td, "cluster.local");
	if (xtls_prepare(b, err, sizeof(err)) < 0)
		abort();
	sctx = b->server_ctx;
	SSL_CTX_up_ref(sctx);
	certbundle_unref(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conn c;
	int sv[2], rc = -EAGAIN;
	char buf[4096], detail[256];

	if (!sctx)
		init();
	if (size > 100000 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
		return 0;
	int big = 262144;
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	if (size && send(sv[1], data, size, MSG_NOSIGNAL) < 0) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	shutdown(sv[1], SHUT_WR);
	conn_init(&c, NULL, sv[0], &raw_ops, NULL, NULL, -1);
	if (xtls_start_server(&c, sctx) < 0) {
		close(sv[0]);
		close(sv[1]);
		return 0;
	}
	/* Bounded: each call consumes input or fails; the input is finite. */
	for (int i = 0; i < 64 && rc == -EAGAIN; i++)
		rc = c.ops->handshake(&c);
	if (rc == 0)
		for (int i = 0; i < 64 && c.ops->recv(&c, buf, sizeof(buf)) > 0; i++)
			;
	enum xtls_fail f = xtls_failure(&c, detail, sizeof(detail));
	if (rc < 0 && rc != -EAGAIN && f == XTLS_FAIL_NONE)
		abort();	/* a failure always says why */
	(void)xtls_alpn(&c);
	(void)xtls_peer_id(&c);
	c.ops->close(&c, CONN_ABORT);
	close(sv[1]);
	ERR_clear_error();
	return 0;
}
