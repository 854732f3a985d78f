/* sds: the Envoy Secret Discovery Service client, the certificate source
 * for a proxy next to pilot-agent or a SPIRE agent (certsrc_sds_start in
 * certsrc.h runs it). This header is the pure half: DiscoveryResponse bytes
 * to the secrets they carry, and the DiscoveryRequest bytes we send; the
 * unit tests and the fuzz target call them. */
#ifndef OR_SDS_H
#define OR_SDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SDS_SECRET_TYPE "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
#define SDS_STREAM_PATH "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"
/* The names pilot-agent serves (pkg/security: WorkloadKeyCertResourceName,
 * RootCertReqResourceName) and a SPIRE agent's defaults (default_svid_name,
 * default_bundle_name). */
#define SDS_CERT_NAME "default"
#define SDS_ROOTS_NAME "ROOTCA"

/* The largest PEM one DataSource may hold (inline or a file). */
#define SDS_PEM_MAX (1u << 20)

/* What one DiscoveryResponse says. The strings are NUL-terminated copies
 * (free with sds_response_free). In state of the world SDS, as with RDS and
 * EDS, a response holds only some of the names asked for (pilot-agent sends
 * just "default" at a rotation): has_cert / has_roots say which halves it
 * replaces. */
struct sds_response {
	char *version, *nonce;
	bool has_cert, has_roots;
	char *chain, *key, *roots;	/* PEM text */
	size_t chainlen, keylen, rootslen;
	unsigned ignored;		/* Secrets of names we did not ask for */
};

/* Decodes msg (a DiscoveryResponse). A "default" Secret (or, as a SPIRE
 * agent names it when asked for everything, one named by a spiffe:// ID)
 * must be a tls_certificate with certificate_chain and private_key; a
 * "ROOTCA" one (or one named spiffe://<trust domain>) a validation_context
 * with trusted_ca (several are concatenated: federated bundles). Each
 * DataSource may be inline_bytes, inline_string, filename (a regular file,
 * read now) or environment_variable; none may be empty or above
 * SDS_PEM_MAX. Refused (-EINVAL, err says why): bytes that do not decode,
 * a type_url other than the Secret's, two certificates, a certificate form
 * we do not take (pkcs12, password-protected key), a validation context
 * without trusted_ca (the SPIFFE validator config), an unreadable file, PEM
 * that does not parse as certificates / a key. version and nonce are filled
 * whenever the outer message decodes, also on refusal (the NACK needs the
 * nonce). 0 or -errno (-ENOMEM). */
int sds_response_decode(const uint8_t *msg, size_t len, struct sds_response *r, char *err,
    size_t errlen);
void sds_response_free(struct sds_response *r);

/* Who we say we are on the first request of a stream (config.core.v3.Node). */
struct sds_node {
	char id[512];		/* "sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local" */
	char cluster[256];
};

/* The node from POD_NAME, POD_NAMESPACE and INSTANCE_IP, as pilot-agent
 * builds its Envoy's (a missing one is an empty part). */
void sds_node_from_env(struct sds_node *n);

/* Packs a DiscoveryRequest for "default" and "ROOTCA": the node when node
 * is not NULL (first request of a stream), version (the last one applied),
 * nonce (the response answered; "" on the first), and error (NULL: an ACK;
 * else a NACK, error_detail {INVALID_ARGUMENT, error}). *out is malloc'd.
 * 0 or -ENOMEM. */
int sds_request_pack(const struct sds_node *node, const char *version, const char *nonce,
    const char *error, uint8_t **out, size_t *len);

#endif
