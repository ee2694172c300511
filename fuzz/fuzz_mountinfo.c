/* fuzz_mountinfo.c - libFuzzer target: lines of /proc/self/mountinfo.
 *
 * srcwatch_parse_line() reads what the kernel writes, but a path in it is
 * anyone's (a mount point named with spaces, backslashes, "-" or newlines
 * in octal escapes).  Whatever the input, it must return 0 with every field
 * set and inside the line, or -EINVAL; never crash or read out of bounds.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "srcwatch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inside(const char *s, const char *line, size_t size)
{
	if (!s || s < line || s > line + size || strlen(s) > size)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1);
	struct srcwatch_mnt m;
	int r;

	if (!line)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	r = srcwatch_parse_line(line, &m);
	if (r == 0) {
		inside(m.root, line, size);
		inside(m.mountpoint, line, size);
		inside(m.fstype, line, size);
		inside(m.source, line, size);
	} else if (r != -EINVAL) {
		abort();
	}
	free(line);
	return 0;
}
