/* bench_xtls: memory per idle TLS connection (issue 9, "Performance": under
 * 16 KiB per side). Opens N mTLS pairs over loopback TCP, both ends ours
 * (xtls_ops), runs every handshake, one small exchange each way (so the
 * client has read its TLS 1.3 ticket and buffers were used), then idles
 * and reports malloc'd bytes per connection side (mallinfo2: heap in use
 * after minus before, divided by 2N), and the same with the variations
 * below. Reports; asserts nothing. Built by tests/bench/bench-xtls.sh
 * without sanitizers (ASan's allocator would hide the heap).
 *
 *     bench_xtls CERTDIR [N]   (CERTDIR from tests/unit/xtls-certs.py)
 */
#include "autoconfig.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "conn.h"
#include "sock.h"
#include "xtls.h"

static const char *certdir;

/* BENCH_XTLS_TRACK=1: OpenSSL's allocations by file:line, live ones summed
 * at the measure point (where the bytes per conn go). */
struct blk {
	struct blk *prev, *next;
	size_t size;
	const char *file;
	int line;
	int gen;
	long pad;
};
static struct blk live = { .prev = &live, .next = &live };
static int gen;

static void *
t_malloc(size_t n, const char *file, int line)
{
	struct blk *b = malloc(sizeof(*b) + n);
	if (!b)
		return NULL;
	*b = (struct blk){ .prev = &live, .next = live.next, .size = n, .file = file, .line = line, .gen = gen };
	live.next->prev = b;
	live.next = b;
	return b + 1;
}

static void
t_free(void *p, const char *file, int line)
{
	if (!p)
		return;
	struct blk *b = (struct blk *)p - 1;
	b->prev->next = b->next;
	b->next->prev = b->prev;
	free(b);
}

static void *
t_realloc(void *p, size_t n, const char *file, int line)
{
	if (!p)
		return t_malloc(n, file, line);
	void *q = t_malloc(n, file, line);
	if (!q)
		return NULL;
	struct blk *b = (struct blk *)p - 1;
	memcpy(q, p, b->size < n ? b->size : n);
	t_free(p, file, line);
	return q;
}

static void
t_report(int conns)
{
	struct agg { const char *file; int line; size_t bytes, n; } a[512];
	int na = 0;
	for (struct blk *b = live.next; b != &live; b = b->next) {
		if (b->gen != gen)
			continue;
		int i;
		for (i = 0; i < na; i++)
			if (a[i].line == b->line && strcmp(a[i].file, b->file) == 0)
				break;
		if (i == na) {
			if (na == 512)
				continue;
			a[na++] = (struct agg){ b->file, b->line, 0, 0 };
		}
		a[i].bytes += b->size;
		a[i].n++;
	}
	for (int i = 0; i < na; i++)
		for (int j = i + 1; j < na; j++)
			if (a[j].bytes > a[i].bytes) {
				struct agg t = a[i]; a[i] = a[j]; a[j] = t;
			}
	for (int i = 0; i < na && i < 40; i++)
		fprintf(stderr, "%8.0f B/conn %6.1f allocs  %s:%d\n", (double)a[i].bytes / conns,
		    (double)a[i].n / conns, a[i].file, a[i].line);
}
static struct ev_loop *loop;

static struct certbundle *
bundle(const char *name)
{
	struct certbundle *b = calloc(1, sizeof(*b));
	char path[512], err[256];
	FILE *f;
	X509 *x;

	b->refs = 1;
	b->chain = sk_X509_new_null();
	b->roots = sk_X509_new_null();
	snprintf(path, sizeof(path), "%s/%s/cert-chain.pem", certdir, name);
	if (!(f = fopen(path, "r")))
		goto bad;
	b->leaf = PEM_read_X509(f, NULL, NULL, NULL);
	while ((x = PEM_read_X509(f, NULL, NULL, NULL)))
		sk_X509_push(b->chain, x);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s/key.pem", certdir, name);
	if (!(f = fopen(path, "r")))
		goto bad;
	b->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	snprintf(path, sizeof(path), "%s/ca/root-cert.pem", certdir);
	if (!(f = fopen(path, "r")))
		goto bad;
	while ((x = PEM_read_X509(f, NULL, NULL, NULL)))
		sk_X509_push(b->roots, x);
	fclose(f);
	ERR_clear_error();
	snprintf(b->id.td, sizeof(b->id.td), "cluster.local");
	if (xtls_prepare(b, err, sizeof(err)) < 0) {
		fprintf(stderr, "xtls_prepare: %s\n", err);
		exit(1);
	}
	return b;
bad:
	fprintf(stderr, "%s: %s\n", path, strerror(errno));
	exit(1);
}

struct end {
	struct conn c;
	int hs;
	int phase;	/* 0 handshake, 1 sent, 2 got the peer's byte */
};

static void
ready(struct conn *c, int what)
{
	struct end *e = c->owner;
	char b[64];

	if (e->hs == -EAGAIN) {
		e->hs = c->ops->handshake(c);
		if (e->hs == -EAGAIN) {
			conn_arm(c, CONN_HS);
			return;
		}
		if (e->hs < 0) {
			conn_arm(c, 0);
			return;
		}
	}
	if (e->phase == 0 && c->ops->send(c, "x", 1) == 1)
		e->phase = 1;
	if (e->phase == 1) {
		ssize_t n = c->ops->recv(c, b, sizeof(b));
		if (n > 0)
			e->phase = 2;
	}
	/* Keep reading: the client takes in its ticket after the byte. */
	if (e->phase == 2) {
		while (c->ops->recv(c, b, sizeof(b)) > 0)
			;
		if (getenv("FREEBUF"))
			SSL_free_buffers(xtls_ssl(c));
	}
	conn_arm(c, e->phase == 0 ? CONN_WR : CONN_RD);
}

static size_t
heap(void)
{
	malloc_trim(0);
	return mallinfo2().uordblks;
}

/* One run: n pairs; returns bytes per side, or 0 when a handshake failed. */
static double
run(int n, SSL_CTX *cctx, SSL_CTX *sctx, struct xtls_sessions *sess, int *resumed)
{
	struct end *cl = calloc((size_t)n, sizeof(*cl)), *sv = calloc((size_t)n, sizeof(*sv));
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	static const unsigned char alpn[] = "\x05istio";
	struct xtls_client_opts o = { .alpn = alpn, .alpn_len = 6, .sessions = sess, .session_key = "peer",
		.sans = (const char *const[]){ "spiffe://cluster.local/ns/default/sa/server" }, .nsans = 1 };
	int lfd, ok = 0;

	sock_addr_parse("127.0.0.1", 0, &sa);
	lfd = sock_listen(&sa, 4096, false, false);
	getsockname(lfd, (struct sockaddr *)&sa, &sl);
	size_t before = heap();
	gen++;
	for (int i = 0; i < n; i++) {
		int cfd = sock_connect(&sa, NULL, false, 0), sfd;
		while ((sfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) < 0)
			ev_run(loop, EVRUN_NOWAIT);
		cl[i].hs = sv[i].hs = -EAGAIN;
		conn_init(&cl[i].c, loop, cfd, &raw_ops, ready, &cl[i], -1);
		conn_init(&sv[i].c, loop, sfd, &raw_ops, ready, &sv[i], -1);
		cl[i].c.connecting = true;
		if (xtls_start_client(&cl[i].c, cctx, &o) < 0 || xtls_start_server(&sv[i].c, sctx) < 0)
			exit(1);
		conn_arm(&cl[i].c, CONN_HS);
		conn_arm(&sv[i].c, CONN_HS);
		/* One at a time, so a resumed session comes from the one before. */
		for (int k = 0; k < 20000 && (cl[i].phase < 2 || sv[i].phase < 2) && cl[i].hs != -EPROTO &&
		    sv[i].hs != -EPROTO; k++) {
			ev_run(loop, EVRUN_NOWAIT);
			if (k > 100)
				usleep(100);
		}
		for (int k = 0; k < 50; k++)
			ev_run(loop, EVRUN_NOWAIT);
		ok += cl[i].phase == 2 && sv[i].phase == 2;
		*resumed += xtls_resumed(&cl[i].c);
	}
	size_t after = heap();
	if (getenv("BENCH_XTLS_TRACK"))
		t_report(2 * n);
	for (int i = 0; i < n; i++) {
		conn_close(&cl[i].c, CONN_GRACEFUL);
		conn_close(&sv[i].c, CONN_GRACEFUL);
	}
	close(lfd);
	free(cl);
	free(sv);
	for (int k = 0; k < 100; k++)
		ev_run(loop, EVRUN_NOWAIT);
	if (ok != n) {
		fprintf(stderr, "%d of %d pairs failed\n", n - ok, n);
		return 0;
	}
	/* The struct end (conn) itself is the caller's; not counted. */
	return ((double)after - (double)before) / (2.0 * n);
}

int
main(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[2]) : 500, resumed = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: bench_xtls CERTDIR [N]\n");
		return 2;
	}
	certdir = argv[1];
	if (getenv("BENCH_XTLS_TRACK"))
		CRYPTO_set_mem_functions(t_malloc, t_realloc, t_free);
	signal(SIGPIPE, SIG_IGN);
	loop = ev_default_loop(0);
	struct certbundle *srv = bundle("server"), *cli = bundle("client");
	struct xtls_sessions *sess = xtls_sessions_new(16);

	run(20, cli->client_ctx, srv->server_ctx, NULL, &resumed);	/* warm-up: OpenSSL's lazy tables */
	printf("idle mTLS connections: %d pairs, malloc'd bytes per side (mallinfo2), OpenSSL %s\n", n,
	    OpenSSL_version(OPENSSL_VERSION_STRING));
	resumed = 0;
	printf("  as shipped (RELEASE_BUFFERS, full handshakes): %8.0f\n",
	    run(n, cli->client_ctx, srv->server_ctx, NULL, &resumed));
	resumed = 0;
	double r = run(n, cli->client_ctx, srv->server_ctx, sess, &resumed);
	printf("  with the session cache (%d of %d resumed):       %8.0f\n", resumed, n, r);
	SSL_CTX_clear_mode(cli->client_ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_clear_mode(srv->server_ctx, SSL_MODE_RELEASE_BUFFERS);
	resumed = 0;
	printf("  without RELEASE_BUFFERS (SSL_free_buffers only):%7.0f\n",
	    run(n, cli->client_ctx, srv->server_ctx, NULL, &resumed));
	xtls_sessions_free(sess);
	certbundle_unref(srv);
	certbundle_unref(cli);
	return 0;
}
