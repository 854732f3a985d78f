/* Fuzz target: our TLS 1.3 record layer (src/xrec.c) on what a peer that
 * holds the keys may send after the handshake. The input's first byte
 * picks the suite, our role and the first sequence number; then chunks of [op][len: 2 bytes][len bytes]:
 *   op % 4 == 0: the bytes go to the socket as they are (framing, garbage);
 *   op % 4 == 1: sealed by the peer as one record whose inner plaintext
 *                the bytes are (content, type, padding: the inner parser
 *                sees alerts, post-handshake messages, any type); if it
 *                is a KeyUpdate message the peer's key moves on after it;
 *   op % 4 == 2: our side reads, the first byte (+1) bytes at a time;
 *   op % 4 == 3: our side sends the bytes (a KeyUpdate answer first when
 *                one is owed); the peer's socket end is drained.
 * Then end of stream, and our side reads to the end. Whatever the input:
 * bytes, an end of stream or a sticky failure, never a crash. */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "xrec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
drain(int fd)
{
	char buf[65536];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint16_t suites[] = { 0x1301, 0x1302, 0x1303 };
	static const size_t hlens[] = { 32, 48, 32 };
	static uint8_t rec[XREC_MAX_PLAIN + 64], buf[XREC_MAX_PLAIN + 64];
	uint8_t a[48], b[48];
	struct xrec *us, *peer;
	int sv[2], k;
	ssize_t n = 0;

	if (size < 1 || size > 65536 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return 0;
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	k = data[0] % 3;
	memset(a, 0xa5, sizeof(a));
	memset(b, 0x5a, sizeof(b));
	/* data[0] also says whether we serve (no ticket may come to us) and
	 * where the sequence numbers start. */
	us = xrec_new(sv[0], data[0] & 4, suites[k], a, b, hlens[k], data[0] >> 3, 0);
	peer = xrec_new(sv[1], !(data[0] & 4), suites[k], b, a, hlens[k], 0, data[0] >> 3);
	if (!us || !peer)
		abort();
	data++;
	size--;
	while (size >= 3) {
		uint8_t op = data[0];
		size_t len = (size_t)data[1] << 8 | data[2];
		const uint8_t *p = data + 3;

		if (len > size - 3)
			len = size - 3;
		data += 3 + len;
		size -= 3 + len;
		switch (op % 4) {
		case 0:
			(void)send(sv[1], p, len, MSG_DONTWAIT);
			break;
		case 1:
			if (len < 1 || len - 1 > XREC_MAX_PLAIN)
				break;
			if ((k = xrec_seal(peer, p[len - 1], p, len - 1, rec)) > 0)
				(void)send(sv[1], rec, (size_t)k, MSG_DONTWAIT);
			if (len >= 6 && p[0] == 24 && p[5] == 22 && xrec_rekey_wr(peer) < 0)
				abort();
			break;
		case 2:
			n = xrec_recv(us, buf, len ? (size_t)p[0] + 1 : sizeof(buf));
			if (n > 0 && xrec_pending(us) > XREC_MAX_PLAIN)
				abort();
			break;
		case 3:
			n = xrec_send(us, p, len);
			if (n > (ssize_t)len)
				abort();
			drain(sv[1]);
			break;
		}
	}
	shutdown(sv[1], SHUT_WR);
	for (int i = 0; i < 10000; i++) {
		n = xrec_recv(us, buf, sizeof(buf));
		if (n <= 0 && n != -EAGAIN)
			break;
	}
	/* The end, or the failure, stays. */
	if (n <= 0 && n != -EAGAIN && xrec_recv(us, buf, sizeof(buf)) != n)
		abort();
	(void)xrec_shutdown(us);
	xrec_free(us);
	xrec_free(peer);
	close(sv[0]);
	close(sv[1]);
	return 0;
}
