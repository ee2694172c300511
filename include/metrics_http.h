/* metrics_http.h - the daemon's optional HTTP endpoint (libmicrohttpd).
 *
 *   GET /metrics       Prometheus text exposition (metrics.h)
 *   GET /metrics.json  the same as JSON
 *   GET /healthz       "ok"
 *
 * Off unless -o metrics=ADDR:PORT is given; ADDR defaults to 127.0.0.1.
 * Served from libmicrohttpd's own thread; each request calls text_fn for a
 * fresh snapshot of the counters.
 */
#ifndef EFS_METRICS_HTTP_H
#define EFS_METRICS_HTTP_H

#include <stddef.h>

/* Writes the stats text into buf; returns the length needed (like
 * fsops_stats_text()). */
typedef size_t (*metrics_text_fn)(void *arg, char *buf, size_t len);

struct metrics_http;

/* Listen on host (an IPv4 or IPv6 literal) and port.  0 or -errno with the
 * reason in err. */
int metrics_http_start(struct metrics_http **out, const char *host, unsigned port,
		       double price_per_gb, metrics_text_fn fn, void *arg, char *err,
		       size_t errlen);
/* Stop listening and free (NULL is fine). */
void metrics_http_stop(struct metrics_http *m);

#endif
