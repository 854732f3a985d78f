/* xds_state: the last acknowledged xDS state on disk (xds.stateFile), so a
 * restart with istiod unreachable serves at once. Written atomically (a
 * temporary file beside it, fsync, rename, fsync of the directory): a crash
 * leaves the old file or the new one, never a mix. The format is our own
 * protobuf message (src/proto/outrigger/xds_state.proto): per type its
 * version_info and its resources as discovery Resource messages (name,
 * version, aliases, the Any). */
#ifndef OR_XDS_STATE_H
#define OR_XDS_STATE_H

#include <stddef.h>

#include "xds_store.h"

/* 0 or -errno (err says what failed; the previous file stays whole). On
 * 0, err is "" or a warning: the directory's fsync failed (the new file is
 * in place; a crash may bring back the old one, whole). */
int xds_state_save(const char *path, const struct xds_store *s, char *err, size_t errlen);

/* Loads path into s (empty). Every entry is decoded and validated as a
 * response would be; a bad one is skipped and counted in *skipped (a
 * damaged file must not keep a proxy from starting). 0, -ENOENT (no file),
 * -EINVAL (not a state file: err says why), -ENOMEM. */
int xds_state_load(const char *path, struct xds_store *s, size_t *skipped, char *err, size_t errlen);

#endif
