/* podinfo: the pod's addresses and DNS servers (see podinfo.h). */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "podinfo.h"

/* istio: !IsLoopback() && !IsLinkLocalUnicast() && !IsLinkLocalMulticast() */
static bool usable(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const unsigned char *b =
			(const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
		return b[0] != 127 && !(b[0] == 169 && b[1] == 254) &&
		       !(b[0] == 224 && b[1] == 0 && b[2] == 0);
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a))
			return a->s6_addr[12] != 127 &&
			       !(a->s6_addr[12] == 169 && a->s6_addr[13] == 254);
		return !IN6_IS_ADDR_LOOPBACK(a) && !IN6_IS_ADDR_LINKLOCAL(a) &&
		       !IN6_IS_ADDR_MC_LINKLOCAL(a) && !IN6_IS_ADDR_UNSPECIFIED(a);
	}
	return false;
}

int podinfo_detect_ipv6(bool dual_stack, bool *ipv6)
{
	struct ifaddrs *ifa, *i;
	int pass;

	*ipv6 = false;
	if (getifaddrs(&ifa) < 0)
		return -errno;
	/* Two passes give the kernel's dump order (all IPv4, then all IPv6)
	 * whatever order getifaddrs() happens to return. */
	for (pass = 0; pass < 2; pass++) {
		int fam = pass == 0 ? AF_INET : AF_INET6;
		for (i = ifa; i != NULL; i = i->ifa_next) {
			if (i->ifa_addr == NULL || i->ifa_addr->sa_family != fam ||
			    !usable(i->ifa_addr))
				continue;
			*ipv6 = fam == AF_INET6 &&
				!IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr);
			if (!dual_stack || *ipv6)
				goto out;
		}
	}
out:
	freeifaddrs(ifa);
	return 0;
}

int podinfo_read_resolv(const char *path, struct strlist *v4, struct strlist *v6)
{
	FILE *f = fopen(path, "r");
	char line[512];

	if (f == NULL)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), f) != NULL) {
		char addr[128];
		unsigned char bin[16];

		if (sscanf(line, " nameserver %127s", addr) != 1)
			continue;
		if (inet_pton(AF_INET, addr, bin) == 1) {
			if (strlist_add(v4, addr) < 0)
				goto nomem;
		} else if (inet_pton(AF_INET6, addr, bin) == 1) {
			char canon[INET6_ADDRSTRLEN];
			inet_ntop(AF_INET6, bin, canon, sizeof(canon));
			if (strlist_add(v6, canon) < 0)
				goto nomem;
		}
	}
	fclose(f);
	return 0;
nomem:
	fclose(f);
	return -ENOMEM;
}

void podinfo_free(struct pod_facts *p)
{
	strlist_free(&p->dns_v4);
	strlist_free(&p->dns_v6);
}
