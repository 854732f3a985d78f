/* Fuzz target: the peek-based protocol detection (src/sniff.c), which reads
 * the first bytes anyone who can reach port 15006 sends. Besides not
 * crashing: a verdict on a prefix never contradicts the whole (a cut is
 * MORE, asking for more than it has), and what is returned is in bounds. */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sniff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sniff_hello h, hp;
	enum sniff_verdict v = sniff_tls(data, size, &h);
	size_t cut;

	if (v == SNIFF_MORE && (h.need <= (size < SNIFF_MAX ? size : SNIFF_MAX) || h.need > SNIFF_MAX))
		__builtin_trap();
	if (h.alpn_len > sizeof(h.alpn) || memchr(h.sni, 0, sizeof(h.sni)) == NULL)
		__builtin_trap();
	for (size_t i = 0; i < h.alpn_len; i += 1 + h.alpn[i])
		if (h.alpn[i] == 0 || i + 1 + h.alpn[i] > h.alpn_len)
			__builtin_trap();
	/* A shorter input either decides the same way already or asks for more. */
	for (int i = 0; i < 3 && v != SNIFF_MORE && size <= SNIFF_MAX; i++) {
		cut = i == 0 ? size / 2 : i == 1 ? size / 3 : size - 1;
		enum sniff_verdict vp = sniff_tls(data, cut, &hp);
		if (vp != SNIFF_MORE && vp != v)
			__builtin_trap();
		if (vp == SNIFF_MORE && hp.need <= cut)
			__builtin_trap();
	}
	(void)sniff_alpn_has(&h, "istio");
	return 0;
}
