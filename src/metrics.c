/* metrics: the tables generated from the lists in metrics.h. */
#include "autoconfig.h"

#include "metrics.h"

const char *const listener_names[LST__COUNT] = {
#define X(e, name) [LST_##e] = name,
	LISTENERS(X)
#undef X
};

const struct metric_desc listener_metric_desc[LM__COUNT] = {
#define X(e, n, kind, help) [LM_##e] = { #n, help, METRIC_##kind },
	LISTENER_METRICS(X)
#undef X
};

const struct metric_desc worker_metric_desc[WM__COUNT] = {
#define X(e, n, kind, help) [WM_##e] = { #n, help, METRIC_##kind },
	WORKER_METRICS(X)
#undef X
};

const struct metric_desc server_metric_desc[SM__COUNT] = {
#define X(e, n, kind, help) [SM_##e] = { #n, help, METRIC_##kind },
	SERVER_METRICS(X)
#undef X
};
