/* fuzz_config.c - libFuzzer target: argv parsing and -o option lists.
 *
 * The input is split at NUL bytes into argv words.  Whatever the input, the
 * parser must return 0 or a negative errno with a message, never crash,
 * leak or read out of bounds (run under ASan).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1), *argv[34], err[256];
	struct efs_config cfg;
	int argc = 0, r;
	size_t i = 0;

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	copy[size] = '\0';
	argv[argc++] = (char *)"efscache";
	while (i <= size && argc < 33) {
		argv[argc++] = copy + i;
		i += strlen(copy + i) + 1;
	}
	argv[argc] = NULL;
	r = config_parse(&cfg, argc, argv, err, sizeof(err));
	if (r == 0) {
		char buf[32];

		config_fmt_size(cfg.cache_size, buf, sizeof(buf));
		config_free(&cfg);
	} else if (r != -EINVAL && r != -ENOMEM) {
		abort();
	} else if (!err[0]) {
		abort(); /* every refusal says why */
	}
	free(copy);
	return 0;
}
