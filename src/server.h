/* server: the process-wide state the control thread owns (current snapshot,
 * readiness, drain) and that the admin server reports. */
#ifndef OR_SERVER_H
#define OR_SERVER_H

#include <stdbool.h>
#include <time.h>

#include "snapshot.h"

struct server {
	struct snapshot *snap;	/* current configuration (control thread's reference) */
	bool live;		/* workers are serving */
	bool draining;		/* SIGTERM received: not ready, not accepting inbound */
	time_t started;
	unsigned concurrency;
};

extern struct server server;

#endif
