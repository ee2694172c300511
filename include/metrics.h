/* metrics.h - the stats text as Prometheus text exposition or JSON.
 *
 * Input is the daemon's "name value" lines (struct ctl_stats as
 * ctl_stats_format() writes them and the user.efscache.stats xattr carries
 * them), so efscachectl and the daemon's HTTP endpoint render
 * exactly the same thing from one list (STATS_LIST/STATS_GAUGES in stats.h,
 * CTL_STATS_CACHE/CTL_STATS_INODES in ctlproto.h, each with its kind).
 *
 * Prometheus text format 0.0.4, following its naming conventions: every
 * series has # HELP and # TYPE; counters are efscache_NAME_total, with a
 * leading "bytes_" moved to the end ("bytes_from_cache" ->
 * efscache_from_cache_bytes_total); gauges efscache_NAME; the fetch latency
 * is the histogram efscache_fetch_duration_seconds.  Every efscache_* sample
 * carries the label mountpoint="PATH" (the daemon's own path), so the series
 * of two mounts on one host never clash (node_exporter's textfile collector
 * merges all files into one exposition).  A numeric line this build does not
 * know (a newer daemon's) is kept as an untyped efscache_NAME.  Label values
 * are escaped as the format says (backslash, double quote, line feed), and
 * bytes that are not UTF-8 become U+FFFD (the parsers refuse them).
 *
 * Money: only when a price is given (price_per_gb >= 0) are the two dollar
 * series added; the default is no price, because the per-GB read charge
 * exists only with EFS Elastic throughput (Bursting and Provisioned have
 * none), and a price is better applied by a recording rule
 * (docs/operations.md).
 */
#ifndef EFS_METRICS_H
#define EFS_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* No price: no dollar series, no dollar figures. */
#define METRICS_PRICE_UNSET (-1.0)
/* The default of -o price_per_gb and --price-per-gb: no price. */
#define METRICS_DEFAULT_PRICE_PER_GB METRICS_PRICE_UNSET
#define METRICS_MAX_PRICE_PER_GB 1000.0

enum metrics_format { METRICS_PROMETHEUS, METRICS_JSON };

struct metrics_opts {
	/* USD per GB (2^30 bytes, as AWS bills) read from EFS with Elastic
	 * throughput, or METRICS_PRICE_UNSET (< 0) */
	double price_per_gb;
	/* add the process_* series of the calling process (the daemon's own
	 * endpoint: in a textfile they would clash with node_exporter's) */
	bool process;
};

/* Render stats text in fmt.  Returns a malloc'd NUL-terminated string for
 * the caller to free, or NULL when out of memory. */
char *metrics_render(const char *stats_text, enum metrics_format fmt,
		     const struct metrics_opts *opts);

/* "0.03" -> 0.03: a non-negative decimal up to METRICS_MAX_PRICE_PER_GB.
 * 0 or -EINVAL. */
int metrics_parse_price(const char *s, double *out);

/* One line for systemd's STATUS=: hits, misses, bytes from cache and source,
 * cache usage.  Written into buf (NUL-terminated, truncated to len). */
void metrics_summary(const char *stats_text, char *buf, size_t len);

/* s as a JSON string body (no quotes): backslash, quote, controls escaped. */
void metrics_put_json_string(FILE *f, const char *s);

/* s as a Prometheus label value body (no quotes): backslash, double quote
 * and line feed escaped, bytes that are not UTF-8 replaced by U+FFFD. */
void metrics_put_label_value(FILE *f, const char *s);

/* Dollars that bytes would have cost at price_per_gb (>= 0). */
double metrics_cost(uint64_t bytes, double price_per_gb);

/* The calling process, as the Prometheus client libraries export it. */
struct metrics_process {
	double start_time_seconds; /* since the epoch */
	double cpu_seconds;        /* user + system */
	uint64_t resident_bytes, virtual_bytes;
	long open_fds; /* -1 if /proc/self/fd could not be read */
	long max_fds;  /* RLIMIT_NOFILE soft limit, -1 if unlimited */
};

/* Read /proc/self.  0 or -errno (nothing is valid then). */
int metrics_process_read(struct metrics_process *p);

#endif
