/* xrec: our own TLS 1.3 record layer for an established conn. OpenSSL does
 * the handshake; once it is over and nothing is in flight, xtls.c hands
 * the traffic secrets and record counts to an xrec and frees the SSL,
 * which with its session and the peer's decoded certificate is most of an
 * idle mTLS conn's memory (HACKING.md, "TLS transport"). What is left: the
 * two AEAD contexts, the secrets, and buffers only while a record is held.
 *
 * The layer speaks RFC 8446 §5 (records, padding, alerts) and the
 * post-handshake messages a TLS 1.3 peer may send: NewSessionTicket
 * (skipped), KeyUpdate (keys rotated; answered when asked, before our next
 * data record); anything else is a protocol failure. It sends its own
 * KeyUpdate every XREC_KU_RECORDS records, well under AES-GCM's limit. */
#ifndef OR_XREC_H
#define OR_XREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define XREC_MAX_SECRET 48	/* SHA-384 */
#define XREC_MAX_PLAIN 16384	/* 2^14, a record's content at most */

/* A record layer on socket fd (not owned), our side a server or a client,
 * for cipher suite `suite`
 * (0x1301 TLS_AES_128_GCM_SHA256, 0x1302 TLS_AES_256_GCM_SHA384, 0x1303
 * TLS_CHACHA20_POLY1305_SHA256), from the current traffic secrets (hlen
 * bytes each: the suite's hash length) and the number of records already
 * protected under each (the next sequence numbers). NULL: an unknown
 * suite, a wrong length, or no memory. */
struct xrec *xrec_new(int fd, bool server, uint16_t suite, const uint8_t *rd_secret,
    const uint8_t *wr_secret, size_t hlen, uint64_t rd_seq, uint64_t wr_seq);
void xrec_free(struct xrec *r);

/* The conn ops' contracts (conn-t.h): bytes, 0 for end of stream
 * (close_notify, or a FIN between records), -EAGAIN (the socket), or a
 * sticky -errno: -EPROTO for a bad record or a fatal alert from the peer,
 * -ECONNRESET for a FIN inside a record, the socket's errno. */
ssize_t xrec_recv(struct xrec *r, void *buf, size_t len);
/* One record of at most XREC_MAX_PLAIN bytes per call. A record the socket
 * did not take is kept and sent first by the next call (or xrec_flush),
 * which then reports its bytes: -EAGAIN until then, and the caller retries
 * with the same bytes (SSL_MODE_ENABLE_PARTIAL_WRITE's contract). */
ssize_t xrec_send(struct xrec *r, const void *buf, size_t len);
/* close_notify: 0 on the socket, -EAGAIN held (xrec_flush pushes it), or
 * -errno. Nothing is sent after it. */
int xrec_shutdown(struct xrec *r);
/* Push a held record: 0 none left, -EAGAIN, -errno. */
int xrec_flush(struct xrec *r);
/* Decrypted bytes not yet read; 1 when no bytes but an end of stream or a
 * failure is known and waits for recv (no socket event would come for it). */
size_t xrec_pending(const struct xrec *r);
/* A record (data, KeyUpdate or close_notify) held for the socket. */
bool xrec_blocked(const struct xrec *r);
/* Why it failed ("" while it has not), for the log line. */
const char *xrec_detail(const struct xrec *r);
/* Records sent under the current write key, and KeyUpdates sent and read
 * (tests, stats). */
uint64_t xrec_wr_seq(const struct xrec *r);
unsigned xrec_key_updates(const struct xrec *r, bool sent);

/* Tests: send our own KeyUpdate after this many records (0: the default). */
void xrec_set_ku_records(uint64_t n);
/* Tests and the fuzz target, as a peer would: seal n bytes of content type
 * `type` under the write key into out (n + 22 bytes): its length or -1;
 * move the write key on as a KeyUpdate sent would (0 or -1). */
int xrec_seal(struct xrec *r, uint8_t type, const void *pt, size_t n, uint8_t *out);
int xrec_rekey_wr(struct xrec *r);

#endif
