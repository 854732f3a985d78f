/* sock: socket addresses and socket set-up (listen, connect, original destination). */
#ifndef OR_SOCK_H
#define OR_SOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest text sock_addr_str() writes: "[v6%scope]:65535" and a NUL. */
#define SOCK_ADDR_STRLEN 64

/* Parse a numeric IPv4 or IPv6 address (no brackets) with the given port.
 * Returns 0 or -EINVAL. */
int sock_addr_parse(const char *host, uint16_t port, struct sockaddr_storage *out);

/* Length of a sockaddr of this family (0 for an unknown family). */
socklen_t sock_addr_len(const struct sockaddr_storage *sa);

/* "1.2.3.4:80" or "[::1]:80" into buf (at least SOCK_ADDR_STRLEN); returns buf. */
const char *sock_addr_str(const struct sockaddr_storage *sa, char *buf, size_t len);
/* The same for any IP socket address (a union msockaddr, say, which is not
 * aligned as a sockaddr_storage must be). */
const char *sock_sa_str(const struct sockaddr *sa, char *buf, size_t len);

/* This pod's addresses as the injector sets them: INSTANCE_IPS (a comma-
 * separated list), else INSTANCE_IP; the first max that parse into out
 * (port 0). Returns how many. */
size_t sock_pod_ips(struct sockaddr_storage *out, size_t max);

/* Same address and port. */
bool sock_addr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

uint16_t sock_addr_port(const struct sockaddr_storage *sa);
void sock_addr_set_port(struct sockaddr_storage *sa, uint16_t port);

/* Listening socket: non-blocking, close-on-exec, SO_REUSEADDR, and
 * SO_REUSEPORT when reuseport (one socket per worker, the kernel spreads
 * connections), IP_TRANSPARENT when transparent (TPROXY inbound), IPV6_V6ONLY
 * for v6 so that v4 and v6 listeners can coexist. Returns fd or -errno. */
int sock_listen(const struct sockaddr_storage *sa, int backlog, bool reuseport, bool transparent);

/* Where a captured connection was going. REDIRECT: the conntrack NAT entry
 * (SO_ORIGINAL_DST; IPv6 uses IP6T_SO_ORIGINAL_DST, the same option number at
 * SOL_IPV6). TPROXY: the socket's local address is the original destination.
 * Returns 0, -ENOENT when the connection was not redirected (it was made to
 * the listener itself, which would loop), or -errno. */
int sock_original_dst(int fd, bool tproxy, struct sockaddr_storage *out);

/* Non-blocking connect to dst, optionally bound to src first. With
 * transparent, the source may be a foreign address (IP_TRANSPARENT, TPROXY
 * original source) and the socket carries mark. Returns the fd (connect in
 * progress or done) or -errno. */
int sock_connect(const struct sockaddr_storage *dst, const struct sockaddr_storage *src,
    bool transparent, uint32_t mark);

/* Pending error of a connecting socket (SO_ERROR) as -errno, or 0. */
int sock_error(int fd);

/* Close so that the peer sees a reset (SO_LINGER 0), as a proxy must when it
 * cannot reach the destination the client asked for. */
void sock_close_rst(int fd);

#endif
