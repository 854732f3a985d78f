/* ondemand: on-demand workload discovery (xds.onDemand). A connection to a
 * destination the snapshot does not know waits while the control thread
 * subscribes to "<network>/<ip>" (xds_subscribe); concurrent connections to
 * one destination share one lookup; the answer (or xds.onDemandTimeout,
 * then mesh.outboundTrafficPolicy) releases them. What was looked up stays
 * subscribed in a bounded cache (xds.onDemandCacheSize, least recently used
 * first; xds.onDemandIdle) and is unsubscribed when evicted. */
#ifndef OR_ONDEMAND_H
#define OR_ONDEMAND_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "config.h"

/* Control thread. Starts when cfg has xds.onDemand and an xDS server. */
int ondemand_start(struct ev_loop *loop, const struct config *cfg);
void ondemand_stop(void);
bool ondemand_enabled(void);

/* The xDS client, after each Address response is applied and published:
 * the names and aliases found, and the names removed (xds_result). */
void ondemand_note(const char *const *found, size_t nfound, const char *const *gone, size_t ngone);

/* The lookup name of an address: "<network>/<ip>" (ztunnel's and istiod's
 * alias form; network may be ""). Returns snprintf's length. */
int ondemand_name(char *out, size_t len, const char *network, const struct sockaddr_storage *a);

#endif
