/* model_eds: the model's index of EDS endpoint addresses (ip:port) to the
 * cluster that lists them and whether they speak Istio mTLS (the endpoint
 * metadata envoy.transport_socket_match.tlsMode == "istio", which istiod
 * sets from the pod's security.istio.io/tlsMode label) or HBONE (tunnel
 * "http"; an HBONE endpoint may be an EnvoyInternalAddress naming its
 * target "ip:port"). Internal to the
 * model: model.c builds and frees it with the model; the data path asks
 * through model.h (model_eds_at, model_peer_tls). */
#ifndef OR_MODEL_EDS_H
#define OR_MODEL_EDS_H

#include <stddef.h>

#include "model.h"

struct meds;

/* Indexes the socket-address endpoints of n ClusterLoadAssignment
 * resources (res, name order; they were validated by the builder). res must
 * outlive the index (the model holds both). Adds the memory it takes to
 * *bytes. 0 and *out (NULL when there is no endpoint), or -ENOMEM. */
int meds_build(struct mres *const *res, size_t n, struct meds **out, size_t *bytes);
void meds_free(struct meds *e);

/* The entry of address a (ip and port), or false. */
bool meds_find(const struct meds *e, const struct sockaddr_storage *a, struct meds_hit *hit);
size_t meds_count(const struct meds *e);

/* An HBONE endpoint's target "ip:port" / "[v6]:port" (EnvoyInternalAddress
 * endpoint_id, or original_dst "local"): 0 with family, address (4 or 16
 * bytes) and port, or -EINVAL. Also the builder's check. */
int meds_target_parse(const char *s, int *family, unsigned char *a, uint16_t *port);

#endif
