/* fuzz_ctlproto.c - libFuzzer target: the control protocol's parsers.
 *
 * The daemon parses lines from any process that reached its socket.  Each
 * input is parsed as one line (up to its first NUL); whatever it is, the
 * parser returns 0 or -EBADMSG, never crashes or reads out of bounds, and a
 * line it accepts formats back into one it accepts with the same meaning.
 * The same input is also decoded as the text of the status and stats
 * queries (what efscachectl reads from the xattrs), with the same rules.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctlproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Accepted query text encodes into text that decodes to the same struct. */
#define QUERY_ROUNDTRIP(type, format, parse, text)                                                 \
	do {                                                                                       \
		static type a_, b_;                                                                \
		if (parse(text, &a_) == 0) {                                                       \
			size_t n_ = format(&a_, NULL, 0);                                          \
			char *t_ = malloc(n_ + 1);                                                 \
			if (!t_)                                                                   \
				break;                                                             \
			if (format(&a_, t_, n_ + 1) != n_ || parse(t_, &b_) != 0 ||                \
			    memcmp(&a_, &b_, sizeof(a_)))                                          \
				abort();                                                           \
			free(t_);                                                                  \
		} else if (parse(text, &a_) != -EBADMSG) {                                         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

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
	QUERY_ROUNDTRIP(struct ctl_file_status, ctl_status_format, ctl_status_parse, line);
	QUERY_ROUNDTRIP(struct ctl_stats, ctl_stats_format, ctl_stats_parse, line);
	free(line);
	return 0;
}
