/* Fuzz target: the names an xDS server sends back to on-demand discovery
 * (src/ondemand.c, ondemand_note: Resource names and aliases found, names
 * removed; parsed as "<network>/<ip>"). The input is lines; the first byte
 * says which lines are "found" and which "gone". Three lookups are in
 * flight. Besides not crashing: a response never adds or drops an entry
 * (only the sweep and new lookups do), and an entry no model knows is never
 * found. The xDS client is replaced (--wrap=xds_subscribe,
 * --wrap=xds_unsubscribe). */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "model.h"
#include "ondemand.h"
#include "server.h"
#include "snapshot.h"
#include "sock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int __wrap_xds_subscribe(enum mres_type t, const char *const *names, size_t n);
int __wrap_xds_unsubscribe(enum mres_type t, const char *const *names, size_t n);

int
__wrap_xds_subscribe(enum mres_type t, const char *const *names, size_t n)
{
	(void)t, (void)names, (void)n;
	return 0;
}

int
__wrap_xds_unsubscribe(enum mres_type t, const char *const *names, size_t n)
{
	(void)t, (void)names, (void)n;
	return 0;
}

static void
drop(const struct od_answer *a, size_t n)
{
	(void)a, (void)n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const ips[] = { "10.1.0.1", "2001:db8::1", "::ffff:10.1.0.2" };
	static struct ev_loop *loop;
	struct od_wait wt[3];
	struct config cfg;
	char *text, *names[64];
	size_t n = 0, split;

	if (!loop && !(loop = ev_loop_new(EVFLAG_AUTO)))
		return 0;
	config_defaults(&cfg);
	cfg.xds_on_demand = true;
	snprintf(cfg.xds_address, sizeof(cfg.xds_address), "http://127.0.0.1:1");
	cfg.concurrency = 1;
	if (!server.snap)
		server.snap = snapshot_new(&cfg, NULL, 1);	/* an empty model: nothing is known */
	ondemand_set_deliver(drop);
	if (ondemand_start(loop, &cfg) < 0)
		return 0;
	for (int i = 0; i < 3; i++) {
		struct sockaddr_storage a;
		memset(&wt[i], 0, sizeof(wt[i]));
		if (sock_addr_parse(ips[i], 80, &a) < 0 || ondemand_wait(&wt[i], 0, &a, 1.0) < 0)
			__builtin_trap();
	}
	ondemand_drain(1.0);
	size_t before = ondemand_cached();
	if (before != 3)
		__builtin_trap();
	if (!(text = malloc(size + 1)))
		goto out;
	memcpy(text, data, size);
	text[size] = '\0';
	split = size ? data[0] % 65 : 0;
	for (char *p = size ? text + 1 : text, *nl; n < 64 && *p; p = nl + 1) {
		names[n++] = p;
		if (!(nl = strchr(p, '\n')))
			break;
		*nl = '\0';
	}
	if (split > n)
		split = n;
	ondemand_set_time(2.0);
	ondemand_note((const char *const *)names, split, (const char *const *)names + split, n - split);
	if (ondemand_cached() != before)
		__builtin_trap();
	for (int i = 0; i < 3; i++) {
		char name[64];
		struct sockaddr_storage a;
		sock_addr_parse(ips[i], 80, &a);
		ondemand_name(name, sizeof(name), "", &a);
		if (ondemand_state(name) == OD_FOUND || ondemand_state(name) == OD_NONE)
			__builtin_trap();
	}
	free(text);
out:
	for (int i = 0; i < 3; i++)
		ondemand_cancel(&wt[i]);
	ondemand_stop();
	return 0;
}
