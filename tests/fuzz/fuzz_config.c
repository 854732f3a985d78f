/* Fuzz target: the configuration loaders of src/config.c on arbitrary bytes:
 * the JSON file loader, and config_set() (the command line's entry) on
 * "path=value". Whatever the input, it either loads or is refused with a
 * message; a refused input never changes the configuration, and a loaded one
 * survives a dump and reload unchanged. */
#include "autoconfig.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_set(const uint8_t *data, size_t size)
{
	const uint8_t *eq = memchr(data, '=', size);
	struct config cfg, before;
	char err[256], *path, *value;

	if (!eq || !(path = malloc(size + 1)))
		return;
	memcpy(path, data, size);
	path[size] = '\0';	/* a NUL inside just ends the string, as argv would */
	path[eq - data] = '\0';
	value = path + (eq - data) + 1;
	config_defaults(&cfg);
	before = cfg;
	err[0] = '\0';
	if (config_set(&cfg, path, value, err, sizeof(err)) < 0 &&
	    (memcmp(&cfg, &before, sizeof(cfg)) != 0 || err[0] == '\0'))
		__builtin_trap();
	free(path);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config cfg, before, again;
	char err[256];

	config_defaults(&cfg);
	before = cfg;
	err[0] = '\0';
	if (config_load_json((const char *)data, size, &cfg, err, sizeof(err)) < 0) {
		if (memcmp(&cfg, &before, sizeof(cfg)) != 0 || err[0] == '\0')
			__builtin_trap();
	} else {
		cJSON *j = config_to_json(&cfg);
		char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
		if (txt) {
			config_defaults(&again);
			if (config_load_json(txt, strlen(txt), &again, err, sizeof(err)) < 0 ||
			    memcmp(&cfg, &again, sizeof(cfg)) != 0)
				__builtin_trap();
		}
		free(txt);
		cJSON_Delete(j);
	}
	fuzz_set(data, size);
	return 0;
}
