/* proxyv2: the PROXY protocol version 2 header (HAProxy's proxy-protocol.txt,
 * §2.2) that an inbound connection to the app starts with when the local
 * workload's applicationTunnel says PROXY (reference xds-hbone.md §3.5):
 * command PROXY, STREAM over AF_INET or AF_INET6, src = the original
 * client, dst = the HBONE target, and one TLV, ztunnel's 0xD0 with the
 * source's SPIFFE ID. A pure builder (the writer is tunnel.c's connecting
 * stage): no parser of untrusted input, so no fuzz target. */
#ifndef OR_PROXYV2_H
#define OR_PROXYV2_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXYV2_SIG "\r\n\r\n\0\r\nQUIT\n"	/* 12 bytes */
#define PROXYV2_SIG_LEN 12
#define PROXYV2_TLV_AUTHORITY 0xD0	/* ztunnel's PROXY_PROTOCOL_AUTHORITY_TLV: the source SPIFFE ID */
/* The largest header proxyv2_build writes: 16 fixed, 36 of IPv6 addresses,
 * a TLV of at most 512 value bytes (SPIFFE_ID_MAX). */
#define PROXYV2_MAX (16 + 36 + 3 + 512)

/* Writes into out (cap bytes) the header for a connection from src to dst
 * (both AF_INET or AF_INET6; a mix is written as AF_INET6 with the IPv4
 * one mapped, ::ffff:a.b.c.d, since the header has one family) and, when
 * src_id is neither NULL nor "", the TLV 0xD0 carrying it (without its NUL).
 * Returns the header's length, -EAFNOSUPPORT for another family, -EINVAL
 * for an identity longer than 512 bytes, -ENOSPC when cap is short. */
int proxyv2_build(uint8_t *out, size_t cap, const struct sockaddr *src, const struct sockaddr *dst,
    const char *src_id);

#endif
