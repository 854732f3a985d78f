/* proxyv2: the PROXY protocol v2 header toward the app (proxyv2.h). */
#include "proxyv2.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>

/* Byte 13: version 2 (high nibble), command PROXY (1). Byte 14: family
 * (high nibble: 1 INET, 2 INET6) and transport (low: 1 STREAM). */
#define V2_PROXY 0x21
#define FAM_INET_STREAM 0x11
#define FAM_INET6_STREAM 0x21

/* a as 16 bytes of IPv6 (IPv4 mapped) and its port, network order. */
static void
as_v6(const struct sockaddr *a, uint8_t ip[16], uint8_t port[2])
{
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)a;

		memset(ip, 0, 10);
		ip[10] = ip[11] = 0xff;
		memcpy(ip + 12, &s->sin_addr, 4);
		memcpy(port, &s->sin_port, 2);
	} else {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)a;

		memcpy(ip, &s->sin6_addr, 16);
		memcpy(port, &s->sin6_port, 2);
	}
}

int
proxyv2_build(uint8_t *out, size_t cap, const struct sockaddr *src, const struct sockaddr *dst,
    const char *src_id)
{
	size_t idlen = src_id ? strlen(src_id) : 0, alen, len;
	uint8_t *p;
	bool v4;

	if ((src->sa_family != AF_INET && src->sa_family != AF_INET6) ||
	    (dst->sa_family != AF_INET && dst->sa_family != AF_INET6))
		return -EAFNOSUPPORT;
	if (idlen > 512)
		return -EINVAL;
	v4 = src->sa_family == AF_INET && dst->sa_family == AF_INET;
	alen = v4 ? 12 : 36;
	len = 16 + alen + (idlen ? 3 + idlen : 0);
	if (cap < len)
		return -ENOSPC;
	memcpy(out, PROXYV2_SIG, PROXYV2_SIG_LEN);
	out[12] = V2_PROXY;
	out[13] = v4 ? FAM_INET_STREAM : FAM_INET6_STREAM;
	out[14] = (uint8_t)((len - 16) >> 8);
	out[15] = (uint8_t)(len - 16);
	p = out + 16;
	if (v4) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)src, *d = (const struct sockaddr_in *)dst;

		/* src addr, dst addr, src port, dst port: the spec's order. */
		memcpy(p, &s->sin_addr, 4);
		memcpy(p + 4, &d->sin_addr, 4);
		memcpy(p + 8, &s->sin_port, 2);
		memcpy(p + 10, &d->sin_port, 2);
	} else {
		as_v6(src, p, p + 32);
		as_v6(dst, p + 16, p + 34);
	}
	p += alen;
	if (idlen) {
		p[0] = PROXYV2_TLV_AUTHORITY;
		p[1] = (uint8_t)(idlen >> 8);
		p[2] = (uint8_t)idlen;
		memcpy(p + 3, src_id, idlen);
	}
	return (int)len;
}
