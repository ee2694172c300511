/* notify.c - sd_notify: one datagram per message to $NOTIFY_SOCKET.
 *
 * The periodic STATUS= thread sleeps on a condition variable so that
 * notify_status_stop() wakes it at once; ns->stop is protected by ns->mu.
 */
#include "notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int notify_send(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t plen;
	socklen_t salen;
	ssize_t n;
	int fd, r;

	if (!path || !*path)
		return 0;
	plen = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || plen >= sizeof(sa.sun_path))
		return -EINVAL;
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract namespace, not NUL-terminated */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/'));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
	r = n < 0 ? -errno : 1;
	close(fd);
	return r;
}

int notify_sendf(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return notify_send(buf);
}

struct notify_status {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop; /* protected by mu */
	unsigned interval_s;
	notify_status_fn fn;
	void *arg;
};

static void *status_thread(void *arg)
{
	struct notify_status *ns = arg;
	char line[512];

	pthread_mutex_lock(&ns->mu);
	while (!ns->stop) {
		struct timespec until;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += ns->interval_s;
		while (!ns->stop && pthread_cond_timedwait(&ns->cv, &ns->mu, &until) == 0)
			;
		if (ns->stop)
			break;
		pthread_mutex_unlock(&ns->mu);
		ns->fn(ns->arg, line, sizeof(line));
		notify_sendf("STATUS=%s", line);
		pthread_mutex_lock(&ns->mu);
	}
	pthread_mutex_unlock(&ns->mu);
	return NULL;
}

int notify_status_start(struct notify_status **out, unsigned interval_s, notify_status_fn fn,
			void *arg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct notify_status *ns;
	pthread_condattr_t ca;
	int r;

	*out = NULL;
	if (!path || !*path)
		return 0;
	ns = calloc(1, sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	ns->interval_s = interval_s ? interval_s : 1;
	ns->fn = fn;
	ns->arg = arg;
	pthread_mutex_init(&ns->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ns->cv, &ca);
	pthread_condattr_destroy(&ca);
	r = pthread_create(&ns->thread, NULL, status_thread, ns);
	if (r) {
		pthread_cond_destroy(&ns->cv);
		pthread_mutex_destroy(&ns->mu);
		free(ns);
		return -r;
	}
	*out = ns;
	return 0;
}

void notify_status_stop(struct notify_status *ns)
{
	if (!ns)
		return;
	pthread_mutex_lock(&ns->mu);
	ns->stop = true;
	pthread_cond_signal(&ns->cv);
	pthread_mutex_unlock(&ns->mu);
	pthread_join(ns->thread, NULL);
	pthread_cond_destroy(&ns->cv);
	pthread_mutex_destroy(&ns->mu);
	free(ns);
}
