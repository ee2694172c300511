/* log.h - the project's small logging API.
 *
 * Four levels (nothing logs at info today: log_msg(LOG_LVL_INFO, ...) if
 * needed), printf-checked, with an errno-appending variant.  The sink is
 * pluggable: stderr in the foreground, syslog once daemonized, a capture
 * buffer in unit tests.  Only top layers (main, fsops) log at warning or
 * error; modules return -errno and log at debug at most.
 */
#ifndef EFS_LOG_H
#define EFS_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* A sink receives one formatted line without a trailing newline. */
typedef void (*log_sink_fn)(enum log_level lvl, const char *line, void *arg);

void log_set_level(enum log_level max);
enum log_level log_get_level(void);
/* Replace the sink; NULL restores stderr.  Not thread-safe: call at startup. */
void log_set_sink(log_sink_fn fn, void *arg);
/* Route to syslog(3) with the given identity (after daemonizing). */
void log_use_syslog(const char *ident);

void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_get_level() >= LOG_LVL_DEBUG)                                              \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__);                                       \
	} while (0)

/* Like log_msg, appending ": strerror(err)"; err is a positive errno. */
void log_errno(enum log_level lvl, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Log at most once per flag: for "cache degraded" style messages. */
#define log_once(flag, lvl, ...)                                                                   \
	do {                                                                                       \
		if (!__atomic_exchange_n(&(flag), true, __ATOMIC_RELAXED))                         \
			log_msg(lvl, __VA_ARGS__);                                                 \
	} while (0)

#endif
