/* conn: transports for one socket end (raw TCP now) and watcher arming. */
#ifndef OR_CONN_H
#define OR_CONN_H

#include "conn-t.h"

extern const struct conn_ops raw_ops;

/* Arm c's watcher for events (EV_READ | EV_WRITE, or 0 to stop it) on loop. */
void conn_want(struct ev_loop *loop, struct conn *c, int events);

#endif
