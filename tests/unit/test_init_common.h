/* Shared helpers of the outrigger-init unit tests: build a configuration
 * from an argument list (as the command line would), and compare text with
 * a golden file.
 *
 * Golden files live in tests/unit/golden.  They are found through
 * $GOLDEN_DIR, else $srcdir/tests/unit/golden ($srcdir is exported by the
 * automake test harness, so VPATH builds and distcheck work), else the
 * current directory's tests/unit/golden.  UPDATE_GOLDEN=1 rewrites the
 * files instead of comparing (review the diff before committing!). */
#ifndef OR_TEST_INIT_COMMON_H
#define OR_TEST_INIT_COMMON_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../init/flags.h"
#include "../../init/podinfo.h"
#include "../../init/rules.h"

/* Every variable outrigger-init reads: cleared before each case. */
static const char *const init_env_names[] = {
	"INBOUND_CAPTURE_PORT", "INBOUND_TUNNEL_PORT", "PROXY_UID", "PROXY_GID",
	"ISTIO_INBOUND_INTERCEPTION_MODE", "ISTIO_INBOUND_PORTS",
	"ISTIO_LOCAL_EXCLUDE_PORTS", "ISTIO_EXCLUDE_INTERFACES", "ISTIO_SERVICE_CIDR",
	"ISTIO_SERVICE_EXCLUDE_CIDR", "ISTIO_OUTBOUND_PORTS",
	"ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE", "KUBE_VIRT_INTERFACES",
	"ISTIO_INBOUND_TPROXY_MARK", "ISTIO_INBOUND_TPROXY_ROUTE_TABLE", "DRY_RUN",
	"IPTABLES_PROBE_PORT", "PROBE_TIMEOUT", "SKIP_RULE_APPLY", "RUN_VALIDATION",
	"REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE", "CAPTURE_ALL_DNS", "DROP_INVALID",
	"INVALID_DROP", "DUAL_STACK", "ISTIO_DUAL_STACK", "NETWORK_NAMESPACE",
	"CNI_MODE", "RECONCILE", "CLEANUP_ONLY", "FORCE_APPLY", "NATIVE_NFTABLES",
	"FORCE_IPTABLES_BINARY", "ISTIO_OUTBOUND_OWNER_GROUPS",
	"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
	"ENVOY_USER", "ENVOY_PORT", NULL,
};

static inline void init_env_clear(void)
{
	for (size_t i = 0; init_env_names[i] != NULL; i++)
		unsetenv(init_env_names[i]);
	/* No user of this name exists: -u defaults to 1337 as in istio's
	 * goldens, whatever accounts the test machine has. */
	setenv("ENVOY_USER", "outrigger-test-no-such-user", 1);
}

/* Parse args (NULL-terminated, without argv[0]) into c.  Returns what
 * flags_parse / flags_finish return; err gets the message. */
static inline int init_config_from(struct init_config *c, const char *const *args,
				   char *err, size_t errlen)
{
	char *argv[64];
	int argc = 0, rc;

	argv[argc++] = (char *)"outrigger-init";
	for (size_t i = 0; args != NULL && args[i] != NULL && argc < 63; i++)
		argv[argc++] = (char *)args[i];
	argv[argc] = NULL;
	err[0] = '\0';
	rc = flags_parse(c, argc, argv, err, errlen);
	if (rc != 0)
		return rc;
	return flags_finish(c, err, errlen);
}

static inline char *golden_path(const char *name)
{
	const char *dir = getenv("GOLDEN_DIR");
	const char *srcdir = getenv("srcdir");
	static char path[4096];

	if (dir != NULL && *dir != '\0')
		snprintf(path, sizeof(path), "%s/%s", dir, name);
	else if (srcdir != NULL && *srcdir != '\0')
		snprintf(path, sizeof(path), "%s/tests/unit/golden/%s", srcdir, name);
	else
		snprintf(path, sizeof(path), "tests/unit/golden/%s", name);
	return path;
}

static inline char *read_text(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	char chunk[4096];

	if (f == NULL)
		return NULL;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (len + n + 1 > cap) {
			cap = (len + n + 1) * 2;
			buf = realloc(buf, cap);
			if (buf == NULL) {
				fclose(f);
				return NULL;
			}
		}
		memcpy(buf + len, chunk, n);
		len += n;
	}
	fclose(f);
	if (buf == NULL)
		buf = calloc(1, 1);
	else
		buf[len] = '\0';
	return buf;
}

/* 0 when actual equals the golden file; prints a diff hint otherwise. */
static inline int golden_compare(const char *name, const char *actual)
{
	const char *path = golden_path(name);
	char *want;
	int rc;

	if (getenv("UPDATE_GOLDEN") != NULL) {
		FILE *f = fopen(path, "w");
		if (f == NULL)
			return -errno;
		fputs(actual, f);
		fclose(f);
		return 0;
	}
	want = read_text(path);
	if (want == NULL) {
		fprintf(stderr, "golden file %s: %s\n", path, strerror(errno));
		return -ENOENT;
	}
	rc = strcmp(want, actual) == 0 ? 0 : -1;
	if (rc != 0) {
		/* Point at the first differing line. */
		const char *a = actual, *w = want;
		int line = 1;
		while (*a && *a == *w) {
			if (*a == '\n')
				line++;
			a++;
			w++;
		}
		fprintf(stderr, "golden %s differs at line %d\n--- want\n%s--- got\n%s", path,
			line, want, actual);
	}
	free(want);
	return rc;
}

#endif
