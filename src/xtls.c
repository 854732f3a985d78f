/* xtls: the TLS transport (placeholder until the transport lands: every
 * entry refuses, so nothing can believe it has TLS). */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>

#include "xtls.h"

const char *const xtls_fail_names[] = { "none", "protocol", "no_cert", "untrusted", "expired", "identity", "io" };

int
xtls_prepare(struct certbundle *b, char *err, size_t errlen)
{
	(void)b;
	snprintf(err, errlen, "TLS is not built in yet");
	return -ENOSYS;
}

/* Placeholders for the outbound branch until the transport is merged
 * (xtls branch): they refuse, so nothing believes it has TLS. */
const struct conn_ops xtls_ops = { .name = "tls-placeholder" };

struct xtls_sessions *
xtls_sessions_new(size_t max)
{
	(void)max;
	return NULL;
}

void
xtls_sessions_free(struct xtls_sessions *s)
{
	(void)s;
}

int
xtls_start_client(struct conn *c, SSL_CTX *ctx, const struct xtls_client_opts *o)
{
	(void)c, (void)ctx, (void)o;
	return -ENOSYS;
}

const char *xtls_peer_id(const struct conn *c) { (void)c; return ""; }
const char *xtls_alpn(const struct conn *c) { (void)c; return ""; }
const char *xtls_version(const struct conn *c) { (void)c; return ""; }
bool xtls_resumed(const struct conn *c) { (void)c; return false; }

enum xtls_fail
xtls_failure(const struct conn *c, char *detail, size_t len)
{
	(void)c;
	snprintf(detail, len, "TLS is not built in yet");
	return XTLS_FAIL_PROTOCOL;
}
