/* test_metrics.c - metrics.c's Prometheus and JSON rendering, the label
 * escaper, the process figures, the price parser and the summary line, from
 * stats text built by ctl_stats_format(); stats.c's running bytes_saved. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ctlproto.h"
#include "metrics.h"
#include "stats.h"

static const struct metrics_opts no_price = {.price_per_gb = METRICS_PRICE_UNSET};

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

/* Every sample line of out (not a comment) has a # TYPE and a # HELP line
 * for its family before it; histogram samples belong to their family. */
static void check_every_family_typed(const char *out)
{
	char *copy = strdup(out), *save = NULL;

	for (char *ln = strtok_r(copy, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
		char fam[160], want[200];
		size_t n = strcspn(ln, "{ ");

		if (ln[0] == '#' || n >= sizeof(fam))
			continue;
		memcpy(fam, ln, n);
		fam[n] = '\0';
		for (const char *suf = "_bucket\0_sum\0_count\0"; *suf; suf += strlen(suf) + 1) {
			size_t k = strlen(suf);

			if (n > k && !strcmp(fam + n - k, suf) &&
			    strstr(out, "_duration_seconds histogram") &&
			    !strncmp(fam, "efscache_fetch_duration_seconds", n - k))
				fam[n - k] = '\0';
		}
		snprintf(want, sizeof(want), "# TYPE %s ", fam);
		CHECK_STR_CONTAINS(out, want);
		snprintf(want, sizeof(want), "# HELP %s ", fam);
		CHECK_STR_CONTAINS(out, want);
	}
	free(copy);
}

static void test_prometheus(void)
{
	struct efs_stats s = {0};
	char *text, *out;

	stats_add(&s, ST_hits, 3);
	stats_add(&s, ST_bytes_from_cache, 2ULL << 30);
	stats_add(&s, ST_bytes_served, 3ULL << 30);
	stats_add(&s, ST_bytes_from_source, 1ULL << 30);
	stats_add(&s, ST_source_lookups, 11);
	stats_add(&s, ST_open_files, 2);
	stats_sub(&s, ST_open_files, 1);
	/* Two fetches: one of 0 us (first bucket), one in the +Inf bucket. */
	stats_fetch_done(&s, stats_now_us());
	stats_fetch_done(&s, stats_now_us() - 20000000);
	text = daemon_text(&s,
			   &(struct ctl_stats){.cache_entries = 4,
					       .cache_usage_bytes = 8192,
					       .cache_size_bytes = 1024,
					       .inode_reopens = 6,
					       .inode_fds = 2,
					       .cache_dir = "/var/cache/\"q\"",
					       .mountpoint = "/mnt/m"},
			   "new_counter 7\n");
	out = metrics_render(text, METRICS_PROMETHEUS,
			     &(struct metrics_opts){.price_per_gb = 0.5});
	CHECK(out != NULL);
#define M "{mountpoint=\"/mnt/m\"}"
	CHECK_STR_CONTAINS(out, "# TYPE efscache_hits_total counter\nefscache_hits_total" M " 3\n");
	CHECK_STR_CONTAINS(out, "efscache_from_cache_bytes_total" M " 2147483648\n");
	CHECK_STR_CONTAINS(out, "# TYPE efscache_open_files gauge\nefscache_open_files" M " 1\n");
	CHECK_STR_CONTAINS(out, "efscache_cache_limit_bytes" M " 1024\n");
	CHECK_STR_CONTAINS(out, "efscache_cache_usage_bytes" M " 8192\n");
	CHECK_STR_CONTAINS(out, "efscache_source_lookups_total" M " 11\n");
	/* The inode and write-behind lines: typed, with help (untyped before). */
	CHECK_STR_CONTAINS(out, "# TYPE efscache_inode_reopens_total counter\n"
				"efscache_inode_reopens_total" M " 6\n");
	CHECK_STR_CONTAINS(out, "# TYPE efscache_inode_fds gauge\n");
	CHECK_STR_CONTAINS(out, "# TYPE efscache_inodes gauge\n");
	CHECK_STR_CONTAINS(out, "# TYPE efscache_write_behind_pending gauge\n");
	CHECK_STR_CONTAINS(out, "efscache_info{mountpoint=\"/mnt/m\",version=\"");
	CHECK_STR_CONTAINS(out, "cache_dir=\"/var/cache/\\\"q\\\"\"} 1\n");
	CHECK_STR_CONTAINS(out, "# TYPE efscache_fetch_duration_seconds histogram\n");
	CHECK_STR_CONTAINS(out, "efscache_fetch_duration_seconds_bucket{mountpoint=\"/mnt/m\","
				"le=\"0.0001\"} 1\n");
	CHECK_STR_CONTAINS(out, "le=\"10\"} 1\n");
	CHECK_STR_CONTAINS(out, "le=\"+Inf\"} 2\n");
	CHECK_STR_CONTAINS(out, "efscache_fetch_duration_seconds_count" M " 2\n");
	/* Saved: a counter, 3 GiB served - 1 GiB fetched; 2 GiB at $0.50/GB. */
	CHECK_STR_CONTAINS(out, "# TYPE efscache_saved_bytes_total counter\n"
				"efscache_saved_bytes_total" M " 2147483648\n");
	CHECK_STR_CONTAINS(out, "# TYPE efscache_saved_dollars_total counter\n"
				"efscache_saved_dollars_total" M " 1.000000\n");
	CHECK_STR_CONTAINS(out, "efscache_efs_read_price_dollars_per_gb" M " 0.500000\n");
	CHECK(!strstr(out, "efs_saved_bytes")); /* the old gauge is gone */
	/* A line it does not know is kept, untyped, with a help line. */
	CHECK_STR_CONTAINS(out, "# TYPE efscache_new_counter untyped\nefscache_new_counter" M " 7\n");
	CHECK(!strstr(out, "fetch_latency_us"));
	CHECK(!strstr(out, "process_")); /* only when asked */
	CHECK(!strstr(out, "efscache_mountpoint{") && !strstr(out, "efscache_cache_dir{"));
	check_every_family_typed(out);
	free(out);

	/* No price: no dollar series at all. */
	out = metrics_render(text, METRICS_PROMETHEUS, &no_price);
	CHECK(out && strstr(out, "efscache_saved_bytes_total") && !strstr(out, "dollars"));
	free(out);
	free(text);
#undef M
}

static void test_label_escaping(void)
{
	char *buf = NULL, *out, *text;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	struct efs_stats s = {0};

	/* Backslash, quote, line feed escaped; tab kept; UTF-8 kept; a stray
	 * byte, an overlong '/' and a surrogate become U+FFFD. */
	metrics_put_label_value(f, "a\\b\"c\nd\te\xc3\xa9\xff" "f\xc0\xaf" "g\xed\xa0\x80");
	fclose(f);
	CHECK(!strcmp(buf, "a\\\\b\\\"c\\nd\te\xc3\xa9\xef\xbf\xbd"
			   "f\xef\xbf\xbd\xef\xbf\xbdg\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"));
	free(buf);

	/* JSON's \u escapes are not Prometheus's: a control character in a
	 * path stays itself in a label (the old escaper wrote \u0001). */
	text = daemon_text(&s, &(struct ctl_stats){.cache_dir = "/c\001", .mountpoint = "/m\\n"},
			   "");
	out = metrics_render(text, METRICS_PROMETHEUS, &no_price);
	CHECK_STR_CONTAINS(out, "mountpoint=\"/m\\\\n\"");
	CHECK_STR_CONTAINS(out, "cache_dir=\"/c\001\"");
	CHECK(!strstr(out, "\\u00"));
	free(out);
	free(text);
}

static void test_json(void)
{
	struct efs_stats s = {0};
	char *text, *out;

	stats_add(&s, ST_misses, 5);
	text = daemon_text(&s, &(struct ctl_stats){.cache_dir = "/c\\d", .mountpoint = "/m"}, "");
	out = metrics_render(text, METRICS_JSON, &(struct metrics_opts){.price_per_gb = 0.03});
	CHECK(out != NULL);
	CHECK_STR_CONTAINS(out, "\"misses\": 5,");
	CHECK_STR_CONTAINS(out, "\"open_files\": 0,");
	CHECK_STR_CONTAINS(out, "\"cache_dir\": \"/c\\\\d\"");
	CHECK_STR_CONTAINS(out, "\"mountpoint\": \"/m\"");
	CHECK_STR_CONTAINS(out, "\"fetch_latency_seconds\": {\"buckets\": [{\"le\": 0.0001, ");
	CHECK_STR_CONTAINS(out, "\"efs_saved\": {\"bytes\": 0, \"price_per_gb_usd\": 0.030000");
	CHECK(!strstr(out, "\"process\""));
	free(out);
	out = metrics_render(text, METRICS_JSON,
			     &(struct metrics_opts){.price_per_gb = -1, .process = true});
	CHECK_STR_CONTAINS(out, "\"efs_saved\": {\"bytes\": 0}");
	CHECK_STR_CONTAINS(out, "\"process\": {\"start_time_seconds\": ");
	free(out);
	free(text);
}

/* bytes_saved follows served - fetched up, never down. */
static void test_saved_ratchet(void)
{
	struct efs_stats s = {0};
	static struct ctl_stats x;

	stats_add(&s, ST_bytes_from_source, 100); /* a cold read: fetched and served */
	stats_add(&s, ST_bytes_served, 100);
	stats_snapshot(&s, &x);
	CHECK(x.counter[ST_bytes_saved] == 0);
	stats_add(&s, ST_bytes_served, 100); /* read again from the cache */
	stats_snapshot(&s, &x);
	CHECK(x.counter[ST_bytes_saved] == 100);
	stats_add(&s, ST_bytes_from_source, 60); /* prefetched, not read yet */
	stats_snapshot(&s, &x);
	CHECK(x.counter[ST_bytes_saved] == 100); /* the difference dipped to 40 */
	stats_add(&s, ST_bytes_served, 60);      /* the reader catches up */
	stats_snapshot(&s, &x);
	CHECK(x.counter[ST_bytes_saved] == 100);
	stats_add(&s, ST_bytes_served, 30);
	stats_add(&s, ST_bytes_bypassed, 30); /* served from the source, uncached */
	stats_add(&s, ST_bytes_served, 50);
	stats_snapshot(&s, &x);
	CHECK(x.counter[ST_bytes_saved] == 150);
}

static void test_process_and_render(void)
{
	struct metrics_process p;
	struct efs_stats s = {0};
	char *text, *out;
	int fds[64];

	CHECK(metrics_process_read(&p) == 0);
	CHECK(p.start_time_seconds > 1.6e9 && p.resident_bytes > 0 && p.virtual_bytes > 0);
	CHECK(p.max_fds > 0 && p.open_fds >= 3);
	for (int i = 0; i < 64; i++)
		fds[i] = dup(1);
	{
		struct metrics_process q;

		CHECK(metrics_process_read(&q) == 0 && q.open_fds == p.open_fds + 64);
	}
	for (int i = 0; i < 64; i++)
		close(fds[i]);
	text = daemon_text(&s, &(struct ctl_stats){.cache_dir = "/c", .mountpoint = "/m"}, "");
	out = metrics_render(text, METRICS_PROMETHEUS,
			     &(struct metrics_opts){.price_per_gb = -1, .process = true});
	CHECK_STR_CONTAINS(out, "# TYPE process_start_time_seconds gauge\n"
				"process_start_time_seconds ");
	CHECK_STR_CONTAINS(out, "# TYPE process_resident_memory_bytes gauge\n");
	CHECK_STR_CONTAINS(out, "# TYPE process_open_fds gauge\n");
	CHECK_STR_CONTAINS(out, "# TYPE process_max_fds gauge\n");
	CHECK_STR_CONTAINS(out, "# TYPE process_cpu_seconds_total counter\n");
	CHECK(!strstr(out, "process_open_fds{")); /* the process's own: no mountpoint */
	check_every_family_typed(out);
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
	CHECK(METRICS_DEFAULT_PRICE_PER_GB < 0); /* no price unless one is given */

	stats_add(&s, ST_hits, 9);
	stats_add(&s, ST_bytes_from_source, 3ULL << 20);
	text = daemon_text(&s,
			   &(struct ctl_stats){.cache_usage_bytes = 1048576,
					       .cache_size_bytes = 10737418240ULL,
					       .cache_dir = "/c",
					       .mountpoint = "/m"},
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
	test_label_escaping();
	test_json();
	test_saved_ratchet();
	test_process_and_render();
	test_price_and_summary();
	return check_done("test_metrics");
}
