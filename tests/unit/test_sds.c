/* Unit tests for src/sds.c's pure half: DiscoveryResponse -> the secrets
 * (every DataSource form, partial responses, SPIRE's names, each refusal,
 * version and nonce kept for the NACK) and the DiscoveryRequest we send.
 * Responses are built here with protobuf-c from our protos (checked against
 * Envoy's by check-schema.py); tests/e2e/test_sds.py runs the same paths
 * against a python3-grpcio server on the real Envoy protos. */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "testbait.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "devca.h"
#include "grpc.h"
#include "sds.h"

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;
typedef Envoy__Config__Core__V3__DataSource DataSource;

static char *cert_pem, *key_pem, *root_pem;
static char tmpdir[64];

/* What the builders below allocate, freed at teardown (LeakSanitizer). */
static void *arena[1024];
static size_t narena;

static void *
keep(void *p)
{
	assert_non_null(p);
	assert_true(narena < sizeof(arena) / sizeof(arena[0]));
	arena[narena++] = p;
	return p;
}

static char *
bio_str(BIO *b)
{
	char *data, *out;
	long n = BIO_get_mem_data(b, &data);

	out = strndup(data, (size_t)n);
	BIO_free(b);
	return out;
}

static int
setup(void **state)
{
	const char *uri = "spiffe://cluster.local/ns/default/sa/client";
	struct devca_cert rs = { .ca = true, .org = "t", .cn = "root", .not_before = time(NULL) - 60,
		.not_after = time(NULL) + 86400 };
	struct devca_cert ls = { .uris = &uri, .nuris = 1, .not_before = time(NULL) - 60,
		.not_after = time(NULL) + 3600 };
	EVP_PKEY *rk = devca_key(), *lk = devca_key();
	X509 *root = devca_cert(&rs, rk, NULL, NULL), *leaf = devca_cert(&ls, lk, root, rk);
	BIO *b;

	(void)state;
	assert_non_null(root);
	assert_non_null(leaf);
	b = BIO_new(BIO_s_mem());
	assert_true(PEM_write_bio_X509(b, leaf));
	cert_pem = bio_str(b);
	b = BIO_new(BIO_s_mem());
	assert_true(PEM_write_bio_PrivateKey(b, lk, NULL, NULL, 0, NULL, NULL));
	key_pem = bio_str(b);
	b = BIO_new(BIO_s_mem());
	assert_true(PEM_write_bio_X509(b, root));
	root_pem = bio_str(b);
	X509_free(root);
	X509_free(leaf);
	EVP_PKEY_free(rk);
	EVP_PKEY_free(lk);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_sds.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	return 0;
}

static int
teardown(void **state)
{
	char cmd[128];

	(void)state;
	free(cert_pem);
	free(key_pem);
	free(root_pem);
	while (narena)
		free(arena[--narena]);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- building responses ---- */

enum form { INLINE_BYTES, INLINE_STRING, FILENAME, ENVVAR, NONE };

/* A DataSource for text in the given form (text must outlive it). */
static DataSource *
ds(const char *text, enum form f)
{
	DataSource *d = keep(calloc(1, sizeof(*d)));
	char path[128], var[32];
	static int n;
	FILE *fp;

	envoy__config__core__v3__data_source__init(d);
	switch (f) {
	case INLINE_BYTES:
		d->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES;
		d->inline_bytes.data = (uint8_t *)text;
		d->inline_bytes.len = strlen(text);
		break;
	case INLINE_STRING:
		d->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
		d->inline_string = (char *)text;
		break;
	case FILENAME:
		snprintf(path, sizeof(path), "%s/f%d.pem", tmpdir, n++);
		assert_non_null(fp = fopen(path, "w"));
		fputs(text, fp);
		fclose(fp);
		d->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME;
		d->filename = keep(strdup(path));
		break;
	case ENVVAR:
		snprintf(var, sizeof(var), "TEST_SDS_PEM_%d", n++);
		setenv(var, text, 1);
		d->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE;
		d->environment_variable = keep(strdup(var));
		break;
	case NONE:
		break;
	}
	return d;
}

static Secret *
cert_secret(const char *name, const char *chain, const char *key, enum form f)
{
	Secret *s = keep(calloc(1, sizeof(*s)));
	Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate *tc = keep(calloc(1, sizeof(*tc)));

	envoy__extensions__transport_sockets__tls__v3__secret__init(s);
	envoy__extensions__transport_sockets__tls__v3__tls_certificate__init(tc);
	s->name = (char *)name;
	s->type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE;
	s->tls_certificate = tc;
	tc->certificate_chain = chain ? ds(chain, f) : NULL;
	tc->private_key = key ? ds(key, f) : NULL;
	return s;
}

static Secret *
roots_secret(const char *name, const char *roots, enum form f)
{
	Secret *s = keep(calloc(1, sizeof(*s)));
	Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *vc = keep(calloc(1, sizeof(*vc)));

	envoy__extensions__transport_sockets__tls__v3__secret__init(s);
	envoy__extensions__transport_sockets__tls__v3__certificate_validation_context__init(vc);
	s->name = (char *)name;
	s->type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT;
	s->validation_context = vc;
	vc->trusted_ca = roots ? ds(roots, f) : NULL;
	return s;
}

/* A packed DiscoveryResponse of the secrets (NULL-terminated); any_type
 * NULL: the Secret's. */
static uint8_t *
response(size_t *len, const char *resp_type, const char *any_type, Secret *const *secrets)
{
	Envoy__Service__Discovery__V3__DiscoveryResponse r = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
	Google__Protobuf__Any *anys[8], any[8];
	uint8_t *out;
	size_t n = 0;

	for (; *secrets; secrets++, n++) {
		google__protobuf__any__init(&any[n]);
		any[n].type_url = (char *)(any_type ? any_type : SDS_SECRET_TYPE);
		any[n].value.len = envoy__extensions__transport_sockets__tls__v3__secret__get_packed_size(*secrets);
		any[n].value.data = malloc(any[n].value.len + 1);
		envoy__extensions__transport_sockets__tls__v3__secret__pack(*secrets, any[n].value.data);
		anys[n] = &any[n];
	}
	r.version_info = (char *)"v7";
	r.nonce = (char *)"nonce-7";
	r.type_url = (char *)(resp_type ? resp_type : SDS_SECRET_TYPE);
	r.n_resources = n;
	r.resources = anys;
	*len = envoy__service__discovery__v3__discovery_response__get_packed_size(&r);
	out = malloc(*len + 1);
	envoy__service__discovery__v3__discovery_response__pack(&r, out);
	for (size_t i = 0; i < n; i++)
		free(any[i].value.data);
	return out;
}

static int
decode(Secret *const *secrets, struct sds_response *r, char *err)
{
	size_t len;
	uint8_t *msg = response(&len, NULL, NULL, secrets);
	int rc = sds_response_decode(msg, len, r, err, 512);

	free(msg);
	return rc;
}

/* ---- tests ---- */

static void
check_both(enum form f)
{
	Secret *s[] = { cert_secret("default", cert_pem, key_pem, f), roots_secret("ROOTCA", root_pem, f), NULL };
	struct sds_response r;
	char err[512] = "";

	assert_int_equal(decode(s, &r, err), 0);
	assert_string_equal(r.version, "v7");
	assert_string_equal(r.nonce, "nonce-7");
	assert_true(r.has_cert);
	assert_true(r.has_roots);
	assert_string_equal(r.chain, cert_pem);
	assert_int_equal(r.chainlen, strlen(cert_pem));
	assert_string_equal(r.key, key_pem);
	assert_string_equal(r.roots, root_pem);
	assert_int_equal(r.ignored, 0);
	sds_response_free(&r);
}

static void
test_forms(void **state)
{
	(void)state;
	check_both(INLINE_BYTES);	/* pilot-agent's and SPIRE's */
	check_both(INLINE_STRING);
	check_both(FILENAME);
	check_both(ENVVAR);
}

static void
test_partial(void **state)
{
	Secret *c[] = { cert_secret("default", cert_pem, key_pem, INLINE_BYTES), NULL };
	Secret *rt[] = { roots_secret("ROOTCA", root_pem, INLINE_BYTES), NULL };
	Secret *none[] = { NULL };
	struct sds_response r;
	char err[512];

	(void)state;
	/* A rotation from pilot-agent: "default" alone. */
	assert_int_equal(decode(c, &r, err), 0);
	assert_true(r.has_cert);
	assert_false(r.has_roots);
	assert_null(r.roots);
	sds_response_free(&r);
	assert_int_equal(decode(rt, &r, err), 0);
	assert_false(r.has_cert);
	assert_true(r.has_roots);
	sds_response_free(&r);
	assert_int_equal(decode(none, &r, err), 0);
	assert_false(r.has_cert || r.has_roots);
	assert_string_equal(r.nonce, "nonce-7");
	sds_response_free(&r);
}

static void
test_spire_names(void **state)
{
	/* SPIRE asked for everything names the SVID by its SPIFFE ID and each
	 * bundle by its trust domain; several bundles are all trusted. */
	Secret *s[] = { cert_secret("spiffe://example.org/ns/a/sa/b", cert_pem, key_pem, INLINE_BYTES),
		roots_secret("spiffe://example.org", root_pem, INLINE_BYTES),
		roots_secret("spiffe://federated.org", cert_pem, INLINE_BYTES),
		roots_secret("some-gateway-secret", root_pem, INLINE_BYTES),
		cert_secret("other-cert", cert_pem, key_pem, INLINE_BYTES), NULL };
	struct sds_response r;
	char err[512], want[8192];

	(void)state;
	assert_int_equal(decode(s, &r, err), 0);
	assert_true(r.has_cert && r.has_roots);
	snprintf(want, sizeof(want), "%s%s", root_pem, cert_pem);
	assert_string_equal(r.roots, want);
	assert_int_equal(r.ignored, 2);
	sds_response_free(&r);
}

/* Every refusal keeps version and nonce (the NACK carries them) and drops
 * what decoded. */
static void
refused(Secret *const *s, const char *want_err)
{
	struct sds_response r;
	char err[512] = "";

	assert_int_equal(decode(s, &r, err), -EINVAL);
	if (!strstr(err, want_err))
		fail_msg("error \"%s\" does not contain \"%s\"", err, want_err);
	assert_string_equal(r.version, "v7");
	assert_string_equal(r.nonce, "nonce-7");
	assert_false(r.has_cert || r.has_roots);
	assert_null(r.chain);
	assert_null(r.roots);
	sds_response_free(&r);
}

static void
test_refusals(void **state)
{
	char dir_ds[128], fifo[128];
	Secret *fifo_s, *dir_s, *p12;

	(void)state;
	{ Secret *s[] = { cert_secret("default", "garbage", key_pem, INLINE_BYTES), NULL };
	  refused(s, "certificate_chain holds no PEM certificate"); }
	{ Secret *s[] = { cert_secret("default", cert_pem, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", INLINE_BYTES), NULL };
	  refused(s, "private_key holds no PEM private key"); }
	{ Secret *s[] = { cert_secret("default", cert_pem, NULL, INLINE_BYTES), NULL };
	  refused(s, "private_key is missing"); }
	{ Secret *s[] = { cert_secret("default", "", key_pem, INLINE_BYTES), NULL };
	  refused(s, "certificate_chain is empty"); }
	{ Secret *s[] = { cert_secret("default", cert_pem, key_pem, NONE), NULL };
	  refused(s, "has no source"); }
	{ Secret *s[] = { roots_secret("ROOTCA", "garbage", INLINE_BYTES), NULL };
	  refused(s, "trusted_ca holds no PEM certificate"); }
	{ Secret *s[] = { roots_secret("ROOTCA", NULL, INLINE_BYTES), NULL };
	  refused(s, "not a SPIFFE validator config"); }
	{ Secret *s[] = { roots_secret("default", root_pem, INLINE_BYTES), NULL };
	  refused(s, "secret \"default\" is not a tls_certificate"); }
	{ Secret *s[] = { cert_secret("ROOTCA", cert_pem, key_pem, INLINE_BYTES), NULL };
	  refused(s, "secret \"ROOTCA\" is not a validation_context"); }
	{ Secret *s[] = { cert_secret("default", cert_pem, key_pem, INLINE_BYTES),
		cert_secret("spiffe://cluster.local/ns/a/sa/b", cert_pem, key_pem, INLINE_BYTES), NULL };
	  refused(s, "a second certificate"); }
	{ Secret *s[] = { roots_secret("ROOTCA", root_pem, INLINE_BYTES),
		cert_secret("default", cert_pem, "junk", INLINE_BYTES), NULL };
	  refused(s, "private_key holds no PEM private key"); }
	/* An environment variable that is not set. */
	{ Secret *s[] = { cert_secret("default", cert_pem, key_pem, ENVVAR), NULL };
	  unsetenv(s[0]->tls_certificate->private_key->environment_variable);
	  refused(s, "is not set"); }

	/* Files: missing, a directory, a FIFO (would block), empty. */
	{ Secret *s[] = { cert_secret("default", cert_pem, key_pem, FILENAME), NULL };
	  s[0]->tls_certificate->certificate_chain->filename = (char *)"/nonexistent/chain.pem";
	  refused(s, "cannot open /nonexistent/chain.pem"); }
	snprintf(dir_ds, sizeof(dir_ds), "%s", tmpdir);
	dir_s = cert_secret("default", cert_pem, key_pem, FILENAME);
	dir_s->tls_certificate->private_key->filename = dir_ds;
	{ Secret *s[] = { dir_s, NULL }; refused(s, "is not a regular file"); }
	snprintf(fifo, sizeof(fifo), "%s/fifo", tmpdir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	fifo_s = roots_secret("ROOTCA", root_pem, FILENAME);
	fifo_s->validation_context->trusted_ca->filename = fifo;
	{ Secret *s[] = { fifo_s, NULL }; refused(s, "is not a regular file"); }
	{ Secret *s[] = { roots_secret("ROOTCA", "", FILENAME), NULL }; refused(s, "is empty"); }

	/* Forms we do not take. */
	p12 = cert_secret("default", cert_pem, key_pem, INLINE_BYTES);
	p12->tls_certificate->pkcs12 = ds("xx", INLINE_BYTES);
	{ Secret *s[] = { p12, NULL }; refused(s, "pkcs12"); }
}

static void
test_wire_refusals(void **state)
{
	Secret *s[] = { cert_secret("default", cert_pem, key_pem, INLINE_BYTES), NULL };
	static const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
	struct sds_response r;
	char err[512] = "";
	uint8_t *msg;
	size_t len;

	(void)state;
	/* Not a DiscoveryResponse at all: no nonce to answer with. */
	assert_int_equal(sds_response_decode(garbage, sizeof(garbage), &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "does not decode"));
	assert_null(r.nonce);
	sds_response_free(&r);

	msg = response(&len, "type.googleapis.com/envoy.config.cluster.v3.Cluster", NULL, s);
	assert_int_equal(sds_response_decode(msg, len, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "type_url \"type.googleapis.com/envoy.config.cluster.v3.Cluster\""));
	assert_string_equal(r.nonce, "nonce-7");
	sds_response_free(&r);
	free(msg);

	msg = response(&len, NULL, "type.googleapis.com/envoy.api.v2.auth.Secret", s);
	assert_int_equal(sds_response_decode(msg, len, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "resources[0]: type_url"));
	sds_response_free(&r);
	free(msg);

	/* An Any whose value is no Secret: the Secret's bytes cut short. */
	msg = response(&len, NULL, NULL, s);
	{
		Envoy__Service__Discovery__V3__DiscoveryResponse *d =
		    envoy__service__discovery__v3__discovery_response__unpack(NULL, len, msg);
		uint8_t *again;
		size_t n;

		assert_non_null(d);
		d->resources[0]->value.len = 7;
		n = envoy__service__discovery__v3__discovery_response__get_packed_size(d);
		again = malloc(n);
		envoy__service__discovery__v3__discovery_response__pack(d, again);
		assert_int_equal(sds_response_decode(again, n, &r, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "resources[0]: Secret does not decode"));
		assert_string_equal(r.version, "v7");
		sds_response_free(&r);
		free(again);
		envoy__service__discovery__v3__discovery_response__free_unpacked(d, NULL);
	}
	free(msg);
}

static void
test_request(void **state)
{
	Envoy__Service__Discovery__V3__DiscoveryRequest *q;
	struct sds_node node;
	uint8_t *msg;
	size_t len;

	(void)state;
	setenv("POD_NAME", "client-5b9c", 1);
	setenv("POD_NAMESPACE", "demo", 1);
	setenv("INSTANCE_IP", "10.1.2.3", 1);
	unsetenv("ISTIO_META_WORKLOAD_NAME");
	sds_node_from_env(&node);
	assert_string_equal(node.id, "sidecar~10.1.2.3~client-5b9c.demo~demo.svc.cluster.local");
	/* pilot-agent's serviceClusterOrDefault (xds_node.c). */
	assert_string_equal(node.cluster, "istio-proxy.demo");
	setenv("ISTIO_META_WORKLOAD_NAME", "client", 1);
	sds_node_from_env(&node);
	assert_string_equal(node.cluster, "client.demo");

	/* The first request: node, both names, no version, no nonce. */
	assert_int_equal(sds_request_pack(&node, NULL, "", NULL, &msg, &len), 0);
	q = envoy__service__discovery__v3__discovery_request__unpack(NULL, len, msg);
	assert_non_null(q);
	assert_non_null(q->node);
	assert_string_equal(q->node->id, node.id);
	assert_string_equal(q->node->cluster, "client.demo");
	assert_string_equal(q->node->user_agent_name, "outrigger");
	/* A version string, never a build version (see sds_request_pack). */
	assert_int_equal(q->node->user_agent_version_type_case,
	    ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION);
	assert_string_equal(q->type_url, SDS_SECRET_TYPE);
	assert_int_equal(q->n_resource_names, 2);
	assert_string_equal(q->resource_names[0], "default");
	assert_string_equal(q->resource_names[1], "ROOTCA");
	assert_string_equal(q->version_info, "");
	assert_string_equal(q->response_nonce, "");
	assert_null(q->error_detail);
	envoy__service__discovery__v3__discovery_request__free_unpacked(q, NULL);
	free(msg);

	/* A NACK: the last good version, the nonce answered, error_detail. */
	assert_int_equal(sds_request_pack(NULL, "3", "n9", "leaf expired", &msg, &len), 0);
	q = envoy__service__discovery__v3__discovery_request__unpack(NULL, len, msg);
	assert_non_null(q);
	assert_null(q->node);
	assert_string_equal(q->version_info, "3");
	assert_string_equal(q->response_nonce, "n9");
	assert_non_null(q->error_detail);
	assert_int_equal(q->error_detail->code, GRPC_INVALID_ARGUMENT);
	assert_string_equal(q->error_detail->message, "leaf expired");
	assert_int_equal(q->n_resource_names, 2);
	envoy__service__discovery__v3__discovery_request__free_unpacked(q, NULL);
	free(msg);
}

/* Responses encoded by the real protobuf library from the real Envoy protos
 * (tests/fuzz/make-sds-corpus.py wrote them; certificates from openssl). */
static uint8_t *
read_corpus(const char *name, size_t *len)
{
	const char *srcdir = getenv("srcdir");
	char path[512];
	uint8_t *buf = malloc(1 << 16);
	FILE *f;

	snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/sds/%s", srcdir ? srcdir : ".", name);
	assert_non_null(f = fopen(path, "rb"));
	*len = fread(buf, 1, 1 << 16, f);
	fclose(f);
	return buf;
}

static void
test_real_encodings(void **state)
{
	struct sds_response r;
	char err[512] = "";
	uint8_t *msg;
	size_t len;

	(void)state;
	msg = read_corpus("both-inline-bytes", &len);
	assert_int_equal(sds_response_decode(msg, len, &r, err, sizeof(err)), 0);
	assert_string_equal(r.version, "1");
	assert_string_equal(r.nonce, "n1");
	assert_true(r.has_cert && r.has_roots);
	assert_non_null(strstr(r.chain, "-----BEGIN CERTIFICATE-----"));
	assert_non_null(strstr(r.key, "PRIVATE KEY-----"));
	assert_non_null(strstr(r.roots, "-----BEGIN CERTIFICATE-----"));
	sds_response_free(&r);
	free(msg);

	msg = read_corpus("spire-names", &len);
	assert_int_equal(sds_response_decode(msg, len, &r, err, sizeof(err)), 0);
	assert_true(r.has_cert && r.has_roots);
	/* Two bundles (spiffe://cluster.local, spiffe://other.org), one after the other. */
	assert_non_null(strstr(strstr(r.roots, "-----END CERTIFICATE-----"), "-----BEGIN CERTIFICATE-----"));
	sds_response_free(&r);
	free(msg);

	msg = read_corpus("cert-only", &len);
	assert_int_equal(sds_response_decode(msg, len, &r, err, sizeof(err)), 0);
	assert_true(r.has_cert && !r.has_roots);
	sds_response_free(&r);
	free(msg);

	msg = read_corpus("garbage-pem", &len);
	assert_int_equal(sds_response_decode(msg, len, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "holds no PEM certificate"));
	assert_string_equal(r.nonce, "n1");
	sds_response_free(&r);
	free(msg);

	msg = read_corpus("wrong-kind-filename", &len);
	assert_int_equal(sds_response_decode(msg, len, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "secret \"ROOTCA\" is not a validation_context"));
	sds_response_free(&r);
	free(msg);
}

/* A PEM block with encryption headers: OpenSSL asks its password callback
 * for it, and with none given its default one prompts on /dev/tty or, without
 * a terminal, reads stdin: the control thread would block on a line that
 * never comes. The secret must be refused at once, without a prompt. */
static const char encrypted_cert[] =
	"-----BEGIN CERTIFICATE-----\n"
	"Proc-Type: 4,ENCRYPTED\n"
	"DEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n"
	"\n"
	"AAECAwQFBgcICQoLDA0ODw==\n"
	"-----END CERTIFICATE-----\n";

/* stdin as a pipe holding a few lines of bait: OpenSSL's default password
 * callback (no callback given) prompts and reads a line from /dev/tty or,
 * without a terminal, stdin. After the call, the bait must be all there,
 * and the call quick (an alarm interrupts a prompt on a terminal). */
static void
test_encrypted_pem_never_prompts(void **state)
{
	struct bait b;

	(void)state;
	bait_set(&b);
	refused((Secret *const[]){ cert_secret(SDS_CERT_NAME, encrypted_cert, key_pem, INLINE_BYTES), NULL },
	    "holds no PEM certificate");
	refused((Secret *const[]){ roots_secret(SDS_ROOTS_NAME, encrypted_cert, INLINE_BYTES), NULL },
	    "holds no PEM certificate");
	bait_check(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_forms),
		cmocka_unit_test(test_partial),
		cmocka_unit_test(test_spire_names),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_wire_refusals),
		cmocka_unit_test(test_request),
		cmocka_unit_test(test_real_encodings),
		cmocka_unit_test(test_encrypted_pem_never_prompts),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
