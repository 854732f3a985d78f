/* server: the process-wide state the control thread owns (see server.h). */
#include "autoconfig.h"

#include "server.h"

struct server server;
