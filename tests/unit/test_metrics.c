/* test_metrics.c - metrics.c's Prometheus and JSON rendering, the price
 * parser and the summary line, from stats text built by ctl_stats_format(). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ctlproto.h"
#include "metrics.h"
#include "stats.h"

/* Stats text as the daemon writes it (ctl_stats_format): the counters of s,
 * the cache's fields of x, then the lines more. */
static char *daemon_text(struct efs_stats *s, struct ctl_stats *x, const char *more)
{
	size_t n;
	char *buf;

	stats_snapshot(s, x);
	n = ctl_stats_format(x, NULL, 0);
	buf = malloc(n + strlen(more) + 1);
	ctl_stats_format(x, buf, n + 1);
	strcpy(buf + n, more);
	return buf;
}

static void test_prometheus(void)
{
	struct efs_stats s = {0};
	char *text, *out;

	stats_add(&s, ST_hits, 3);
	stats_add(&s, ST_bytes_from_cache, 2ULL << 30);
	stats_add(&s, ST_bytes_served, 3ULL << 30);
	stats_add(&s, ST_bytes_from_source, 1ULL << 30);
	stats_add(&s, ST_open_files, 2);
	stats_sub(&s, ST_open_files, 1);
	/* Two fetches: one of 0 us (first bucket), one in the +Inf bucket. */
	stats_fetch_done(&s, stats_now_us());
	stats_fetch_done(&s, stats_now_us() - 20000000);
	text = daemon_text(&s,
			   &(struct ctl_stats){.cache_entries = 4,
					       .cache_usage_bytes = 8192,
					       .cache_size_bytes = 1024,
					       .cache_dir = "/var/cache/\"q\""},
			   "new_counter 7\n");
	out = metrics_render(text, METRICS_PROMETHEUS, 0.5);
	CHECK(out != NULL);
	CHECK_STR_CONTAINS(out, "# TYPE efscache_hits_total counter\nefscache_hits_total 3\n");
	CHECK_STR_CONTAINS(out, "efscache_from_cache_bytes_total 2147483648\n");
	CHECK_STR_CONTAINS(out, "# TYPE efscache_open_files gauge\nefscache_open_files 1\n");
	CHECK_STR_CONTAINS(out, "efscache_cache_limit_bytes 1024\n");
	CHECK_STR_CONTAINS(out, "efscache_cache_usage_bytes 8192\n");
	CHECK_STR_CONTAINS(out, "cache_dir=\"/var/cache/\\\"q\\\"\"} 1\n");
	CHECK_STR_CONTAINS(out, "# TYPE efscache_fetch_duration_seconds histogram\n");
	CHECK_STR_CONTAINS(out, "efscache_fetch_duration_seconds_bucket{le=\"0.0001\"} 1\n");
	CHECK_STR_CONTAINS(out, "efscache_fetch_duration_seconds_bucket{le=\"10\"} 1\n");
	CHECK_STR_CONTAINS(out, "efscache_fetch_duration_seconds_bucket{le=\"+Inf\"} 2\n");
	CHECK_STR_CONTAINS(out, "efscache_fetch_duration_seconds_count 2\n");
	/* 2 GiB at $0.50/GB */
	CHECK_STR_CONTAINS(out, "efscache_efs_saved_bytes 2147483648\n");
	CHECK_STR_CONTAINS(out, "efscache_efs_saved_dollars 1.000000\n");
	/* A line it does not know is kept, untyped. */
	CHECK_STR_CONTAINS(out, "# TYPE efscache_new_counter untyped\nefscache_new_counter 7\n");
	CHECK(!strstr(out, "fetch_latency_us"));
	free(out);
	free(text);
}

static void test_json(void)
{
	struct efs_stats s = {0};
	char *text, *out;

	stats_add(&s, ST_misses, 5);
	text = daemon_text(&s, &(struct ctl_stats){.cache_dir = "/c\\d"}, "");
	out = metrics_render(text, METRICS_JSON, 0.03);
	CHECK(out != NULL);
	CHECK_STR_CONTAINS(out, "\"misses\": 5,");
	CHECK_STR_CONTAINS(out, "\"open_files\": 0,");
	CHECK_STR_CONTAINS(out, "\"cache_dir\": \"/c\\\\d\"");
	CHECK_STR_CONTAINS(out, "\"fetch_latency_seconds\": {\"buckets\": [{\"le\": 0.0001, ");
	CHECK_STR_CONTAINS(out, "\"efs_saved\": {\"bytes\": 0, \"price_per_gb_usd\": 0.030000");
	free(out);
	free(text);
}

static void test_price_and_summary(void)
{
	struct efs_stats s = {0};
	char line[256], *text;
	double p = -1;

	CHECK(metrics_parse_price("0.03", &p) == 0 && p == 0.03);
	CHECK(metrics_parse_price("0", &p) == 0 && p == 0);
	CHECK(metrics_parse_price("", &p) < 0);
	CHECK(metrics_parse_price("-1", &p) < 0);
	CHECK(metrics_parse_price("1e9", &p) < 0);
	CHECK(metrics_parse_price("nan", &p) < 0);
	CHECK(metrics_parse_price("0.03$", &p) < 0);
	CHECK(metrics_cost(1ULL << 30, 0.03) == 0.03);
	CHECK(metrics_saved_bytes(10, 3, 2) == 5);
	CHECK(metrics_saved_bytes(10, 8, 4) == 0); /* prefetched, not yet read */

	stats_add(&s, ST_hits, 9);
	stats_add(&s, ST_bytes_from_source, 3ULL << 20);
	text = daemon_text(&s,
			   &(struct ctl_stats){.cache_usage_bytes = 1048576,
					       .cache_size_bytes = 10737418240ULL,
					       .cache_dir = "/c"},
			   "");
	metrics_summary(text, line, sizeof(line));
	CHECK_STR_CONTAINS(line, "9 hits, 0 misses");
	CHECK_STR_CONTAINS(line, "3.0M from source");
	CHECK_STR_CONTAINS(line, "cache 1.0M of 10.0G");
	CHECK(!strchr(line, '\n'));
	free(text);
}

int main(void)
{
	test_prometheus();
	test_json();
	test_price_and_summary();
	return check_done("test_metrics");
}
