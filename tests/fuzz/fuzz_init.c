/* Fuzz target: outrigger-init's inputs from the pod spec and the pod: the
 * flags (annotations end up there), and /etc/resolv.conf, then the rule
 * builder and both renderers on whatever was accepted. Input: resolv.conf
 * text, a NUL, then NUL-separated arguments. Never a crash; a refused input
 * always comes with a message. */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <stdio.h>
#include <unistd.h>

#include "flags.h"
#include "nft.h"
#include "podinfo.h"
#include "rules.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char buf[1 << 16];
	char *argv[64], err[512], path[64];
	int argc = 0;
	struct init_config c;
	struct pod_facts p = { 0 };

	if (size >= sizeof(buf))
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';

	/* resolv.conf: through a memfd, the parser reads a path. */
	size_t rlen = strlen(buf);
	int fd = memfd_create("resolv", 0);
	if (fd < 0)
		return 0;
	if (write(fd, buf, rlen) != (ssize_t)rlen) {
		close(fd);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	(void)podinfo_read_resolv(path, &p.dns_v4, &p.dns_v6);
	close(fd);

	argv[argc++] = (char *)"outrigger-init";
	for (size_t off = rlen + 1; off <= size && argc < 63; off += strlen(buf + off) + 1)
		argv[argc++] = buf + off;
	argv[argc] = NULL;

	memset(&c, 0, sizeof(c));
	err[0] = '\0';
	int rc = flags_parse(&c, argc, argv, err, sizeof(err));
	if (rc == 0)
		rc = flags_finish(&c, err, sizeof(err));
	if (rc < 0 && err[0] == '\0')
		__builtin_trap();
	if (rc == 0) {
		struct ruleset rs;
		memset(&rs, 0, sizeof(rs));
		p.enable_ipv6 = size & 1;
		if (rules_build(&c, &p, &rs) == 0) {
			free(rules_dry_run_text(&rs, p.enable_ipv6));
			int nerr = 0;
			free(nft_script(&rs, p.enable_ipv6, &nerr));
		}
		rules_free(&rs);
	}
	flags_free(&c);
	podinfo_free(&p);
	return 0;
}
