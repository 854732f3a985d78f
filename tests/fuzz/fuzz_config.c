/* Fuzz target: the JSON configuration loader (src/config.c) on arbitrary bytes.
 * Whatever the input, it either loads or is refused with a message; the
 * configuration is never half-applied. */
#include "autoconfig.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config cfg, before;
	char err[256];

	config_defaults(&cfg);
	before = cfg;
	err[0] = '\0';
	if (config_load_json((const char *)data, size, &cfg, err, sizeof(err)) < 0) {
		if (memcmp(&cfg, &before, sizeof(cfg)) != 0 || err[0] == '\0')
			__builtin_trap();
	}
	return 0;
}
