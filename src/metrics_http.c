/* metrics_http.c - serve metrics.h's output over HTTP with libmicrohttpd.
 *
 * Only GET and HEAD of three fixed paths; everything else is 404 or 405.
 * No state besides the callback: each request renders a new snapshot, with
 * the daemon's own process_* series.  /healthz answers from this thread
 * alone: it touches neither the FUSE data path nor the source.
 * Connections are capped and time out, so a stuck scraper cannot pile up.
 *
 * The loop is libmicrohttpd's internal thread on epoll (poll where epoll is
 * missing), never select(): the daemon holds an fd per inode and per open
 * file, and select() cannot watch an fd numbered 1024 or more, so a
 * connection accepted past that was dropped and every scrape failed.
 */
#include "metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

#define CONTENT_PROM "text/plain; version=0.0.4; charset=utf-8"
#define CONTENT_JSON "application/json"

struct metrics_http {
	struct MHD_Daemon *d;
	struct metrics_opts opts;
	metrics_text_fn fn;
	void *arg;
};

/* The stats text, malloc'd, or NULL. */
static char *snapshot(struct metrics_http *m)
{
	size_t cap = 8192, need;
	char *buf;

	for (;;) {
		buf = malloc(cap);
		if (!buf)
			return NULL;
		need = m->fn(m->arg, buf, cap);
		if (need < cap)
			return buf;
		free(buf);
		cap = need + 1;
	}
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
			     char *body)
{
	struct MHD_Response *resp;
	enum MHD_Result r;

	resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	r = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return r;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version, const char *upload_data,
			      size_t *upload_data_size, void **con_cls)
{
	struct metrics_http *m = cls;
	enum metrics_format fmt;
	char *text, *body;

	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
			     strdup("only GET and HEAD\n"));
	if (!strcmp(url, "/healthz"))
		return reply(c, MHD_HTTP_OK, "text/plain", strdup("ok\n"));
	if (!strcmp(url, "/metrics"))
		fmt = METRICS_PROMETHEUS;
	else if (!strcmp(url, "/metrics.json"))
		fmt = METRICS_JSON;
	else
		return reply(c, MHD_HTTP_NOT_FOUND, "text/plain",
			     strdup("try /metrics, /metrics.json or /healthz\n"));
	text = snapshot(m);
	body = text ? metrics_render(text, fmt, &m->opts) : NULL;
	free(text);
	if (!body)
		return MHD_NO;
	return reply(c, MHD_HTTP_OK, fmt == METRICS_JSON ? CONTENT_JSON : CONTENT_PROM, body);
}

int metrics_http_start(struct metrics_http **out, const char *host, unsigned port,
		       double price_per_gb, metrics_text_fn fn, void *arg, char *err, size_t errlen)
{
	struct sockaddr_storage ss = {0};
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;
	struct metrics_http *m;

	if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
		flags |= MHD_USE_EPOLL;
	else if (MHD_is_feature_supported(MHD_FEATURE_POLL) == MHD_YES)
		flags |= MHD_USE_POLL;
	else {
		snprintf(err, errlen, "metrics: this libmicrohttpd has neither epoll nor poll, and "
				      "select() fails past 1024 fds");
		return -ENOTSUP;
	}

	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		flags |= MHD_USE_IPv6;
	} else {
		snprintf(err, errlen, "metrics: '%s' is not an IP address", host);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "metrics: out of memory");
		return -ENOMEM;
	}
	m->opts = (struct metrics_opts){.price_per_gb = price_per_gb, .process = true};
	m->fn = fn;
	m->arg = arg;
	errno = 0;
	m->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle, m, MHD_OPTION_SOCK_ADDR,
				(struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
	if (!m->d) {
		int e = errno ? errno : EADDRINUSE;

		snprintf(err, errlen, "metrics: cannot listen on %s port %u: %s", host, port,
			 strerror(e));
		free(m);
		return -e;
	}
	*out = m;
	return 0;
}

void metrics_http_stop(struct metrics_http *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->d);
	free(m);
}
