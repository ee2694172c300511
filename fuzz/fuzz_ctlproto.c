/* fuzz_ctlproto.c - libFuzzer target: the control protocol's parser.
 *
 * The daemon parses lines from any process that reached its socket.  Each
 * input is parsed as one line (up to its first NUL); whatever it is, the
 * parser returns 0 or -EBADMSG, never crashes or reads out of bounds, and a
 * line it accepts formats back into one it accepts with the same meaning.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctlproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1), out[CTL_LINE_MAX];
	struct ctl_msg m, back;
	size_t n;

	if (!line)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	if (ctl_parse(line, &m) == 0) {
		n = ctl_format(&m, out, sizeof(out));
		if (n >= sizeof(out))
			abort();
		out[n - 1] = '\0';
		if (ctl_parse(out, &back) != 0 || back.kind != m.kind || back.has != m.has ||
		    memcmp(back.v, m.v, sizeof(m.v)))
			abort();
	}
	free(line);
	return 0;
}
