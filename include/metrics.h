/* metrics.h - the stats text as Prometheus text exposition or JSON.
 *
 * Input is the daemon's "name value" lines (struct ctl_stats as
 * ctl_stats_format() writes them and the user.efscache.stats xattr carries
 * them), so efscachectl and the daemon's HTTP endpoint render
 * exactly the same thing from one list (STATS_LIST/STATS_GAUGES in stats.h).
 *
 * Prometheus names: efscache_NAME_total for counters, with a leading
 * "bytes_" moved to the end ("bytes_from_cache" ->
 * efscache_from_cache_bytes_total); efscache_NAME for gauges; the fetch
 * latency as the histogram efscache_fetch_duration_seconds.  A numeric line
 * this file does not know is exported as an untyped efscache_NAME, so a new
 * counter never disappears from the output.
 */
#ifndef EFS_METRICS_H
#define EFS_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* EFS Standard, Elastic throughput, data read: USD per GB (2^30 bytes, as
 * AWS bills), us-east-1, as published on https://aws.amazon.com/efs/pricing/
 * on METRICS_PRICE_DATE.  Other regions and throughput modes differ: pass
 * the right price with --price-per-gb / -o price_per_gb. */
#define METRICS_DEFAULT_PRICE_PER_GB 0.03
#define METRICS_PRICE_DATE "2026-06"
#define METRICS_MAX_PRICE_PER_GB 1000.0

enum metrics_format { METRICS_PROMETHEUS, METRICS_JSON };

/* Render stats text in fmt; price_per_gb (>= 0) values the bytes served
 * from the cache instead of the source.  Returns a malloc'd NUL-terminated
 * string for the caller to free, or NULL when out of memory. */
char *metrics_render(const char *stats_text, enum metrics_format fmt, double price_per_gb);

/* "0.03" -> 0.03: a non-negative decimal up to METRICS_MAX_PRICE_PER_GB.
 * 0 or -EINVAL. */
int metrics_parse_price(const char *s, double *out);

/* One line for systemd's STATUS=: hits, misses, bytes from cache and source,
 * cache usage.  Written into buf (NUL-terminated, truncated to len). */
void metrics_summary(const char *stats_text, char *buf, size_t len);

/* s as a JSON string body (no quotes): backslash, quote, controls escaped. */
void metrics_put_json_string(FILE *f, const char *s);

/* Bytes the readers got that were not read from the source: bytes_served
 * minus bytes_from_source and bytes_bypassed, 0 if negative.  This is what
 * EFS would have served without efscache (reads answered by the kernel's
 * page cache never reach the daemon and are not included).  It can dip for
 * a moment while prefetched data is not yet read, so it is a gauge. */
uint64_t metrics_saved_bytes(uint64_t served, uint64_t from_source, uint64_t bypassed);

/* Dollars that bytes would have cost at price_per_gb. */
double metrics_cost(uint64_t bytes, double price_per_gb);

#endif
