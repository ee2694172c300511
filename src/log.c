/* log.c - leveled logging with a pluggable sink.
 *
 * State: the level and the sink, both set at startup before threads
 * exist.  Each line is formatted into a stack buffer and handed to the sink
 * in one call, so lines from concurrent threads do not interleave.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

static enum log_level max_level = LOG_LVL_INFO;
static log_sink_fn sink;
static void *sink_arg;

void log_set_level(enum log_level max)
{
	max_level = max;
}

enum log_level log_get_level(void)
{
	return max_level;
}

void log_set_sink(log_sink_fn fn, void *arg)
{
	sink = fn;
	sink_arg = arg;
}

static void syslog_sink(enum log_level lvl, const char *line, void *arg)
{
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	(void)arg;
	syslog(prio[lvl], "%s", line);
}

void log_use_syslog(const char *ident)
{
	openlog(ident, LOG_PID, LOG_DAEMON);
	log_set_sink(syslog_sink, NULL);
}

void log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
{
	char line[1024]; /* a longer message is cut: lines name a path or two */

	if (lvl > max_level)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (sink) {
		sink(lvl, line, sink_arg);
		return;
	}
	fprintf(stderr, "efscache: %s\n", line);
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(lvl, fmt, ap);
	va_end(ap);
}

void log_errno(enum log_level lvl, int err, const char *fmt, ...)
{
	char head[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(head, sizeof(head), fmt, ap);
	va_end(ap);
	log_msg(lvl, "%s: %s", head, strerror(err));
}
