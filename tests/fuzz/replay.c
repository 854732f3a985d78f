/* Replays fuzz inputs through a target without libFuzzer, so that `make check`
 * runs every target over its seed corpus in ordinary (and sanitizer) builds. */
#include "autoconfig.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		FILE *fp = fopen(argv[i], "rb");
		if (!fp) {
			perror(argv[i]);
			return 1;
		}
		static uint8_t buf[1 << 20];
		size_t n = fread(buf, 1, sizeof(buf), fp);
		fclose(fp);
		/* Copy to an exact-size allocation so ASan sees reads past the end. */
		uint8_t *exact = malloc(n ? n : 1);
		if (!exact)
			return 1;
		for (size_t j = 0; j < n; j++)
			exact[j] = buf[j];
		LLVMFuzzerTestOneInput(exact, n);
		free(exact);
	}
	printf("replayed %d inputs\n", argc - 1);
	return 0;
}
