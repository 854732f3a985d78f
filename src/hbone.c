/* hbone: the HBONE server's pure front end: CONNECT authorities. */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "hbone.h"

/* "ip:port" or "[v6]:port": a literal IP (inet_pton's strict forms, no
 * scope), a port 1..65535 in plain decimal with no sign or space. */
int
hbone_authority_parse(const char *auth, size_t len, struct sockaddr_storage *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *colon, *end = auth + len;
	size_t hlen;
	bool v6 = len > 0 && auth[0] == '[';

	if (len == 0 || len > INET6_ADDRSTRLEN + 8)
		return -EINVAL;
	if (v6) {
		const char *rb = memchr(auth, ']', len);
		if (!rb || rb + 1 >= end || rb[1] != ':')
			return -EINVAL;
		hlen = (size_t)(rb - auth - 1);
		memcpy(host, auth + 1, hlen < sizeof(host) ? hlen : 0);
		colon = rb + 1;
	} else {
		colon = memchr(auth, ':', len);
		if (!colon)
			return -EINVAL;
		hlen = (size_t)(colon - auth);
		memcpy(host, auth, hlen < sizeof(host) ? hlen : 0);
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	host[hlen] = 0;
	const char *p = colon + 1;
	if (p == end || end - p > 5)
		return -EINVAL;
	unsigned port = 0;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		port = port * 10 + (unsigned)(*p - '0');
	}
	if (port == 0 || port > 65535)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			return -EINVAL;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)out;
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return -EINVAL;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
	}
	return 0;
}
