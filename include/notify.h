/* notify.h - systemd's readiness protocol (sd_notify), without libsystemd.
 *
 * A message is "KEY=VALUE" lines sent as one datagram to the AF_UNIX socket
 * named by $NOTIFY_SOCKET (a path, or an abstract name when it starts with
 * '@').  Without $NOTIFY_SOCKET every call is a no-op, so the daemon calls
 * these unconditionally.
 */
#ifndef EFS_NOTIFY_H
#define EFS_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

/* Send msg (e.g. "READY=1\nSTATUS=serving").  Returns 1 if sent, 0 when
 * $NOTIFY_SOCKET is not set, or -errno. */
int notify_send(const char *msg);

/* printf-style notify_send(). */
int notify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Builds the one-line STATUS= text into buf (no newline). */
typedef void (*notify_status_fn)(void *arg, char *buf, size_t len);

struct notify_status;

/* If $NOTIFY_SOCKET is set, start a thread that sends "STATUS=<fn()>" every
 * interval_s seconds; *out is NULL otherwise.  0 or -errno. */
int notify_status_start(struct notify_status **out, unsigned interval_s, notify_status_fn fn,
			void *arg);
/* Stop and join the thread (NULL is fine). */
void notify_status_stop(struct notify_status *ns);

#endif
