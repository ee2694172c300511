/* stats.c - `efscachectl stats`: the counters of the mount's daemon.
 *
 * Contract: one getxattr of CTL_XATTR_STATS, decoded by ctlproto.c.  --raw
 * prints the daemon's lines as they came; --json / --format=prometheus
 * render them with metrics.c (as the daemon's HTTP endpoint does, without its
 * process_* series: those are the daemon's own); the default text lists
 * every line with its help, then the ratios, the mean fetch latency and the
 * EFS reads saved (in dollars only with --price-per-gb).  Lines this
 * build does not know are still printed.  Changes nothing.  No locks.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "metrics.h"
#include "stats.h"

static bool is_byte_counter(const char *name)
{
	size_t n = strlen(name);

	return !strncmp(name, "bytes_", 6) || (n > 6 && !strcmp(name + n - 6, "_bytes"));
}

/* "what  12.5% (a of b)"; "(none yet)" when whole is 0. */
static void print_ratio(const char *what, uint64_t part, uint64_t whole, bool bytes)
{
	char a[32], b[32];

	if (!whole) {
		printf("%-24s     - (none yet)\n", what);
		return;
	}
	if (bytes) {
		human(part, a, sizeof(a));
		human(whole, b, sizeof(b));
	} else {
		snprintf(a, sizeof(a), "%" PRIu64, part);
		snprintf(b, sizeof(b), "%" PRIu64, whole);
	}
	printf("%-24s %5.1f%% (%s of %s)\n", what, 100.0 * (double)part / (double)whole, a, b);
}

/* Print the stats text rendered by metrics.c; returns the exit status. */
static int print_rendered(const char *path, const char *text, enum metrics_format fmt,
			  double price)
{
	const struct metrics_opts o = {.price_per_gb = price, .process = false};
	char *out = metrics_render(text, fmt, &o);

	if (!out) {
		path_error(path, ENOMEM);
		return EXIT_FAIL;
	}
	fputs(out, stdout);
	free(out);
	return fflush(stdout) ? EXIT_FAIL : 0;
}

/* The default output: every line (text is consumed), then the summary. */
static void print_text(const char *path, char *text, const struct ctl_stats *st, double price)
{
	uint64_t hits = st->counter[ST_hits], misses = st->counter[ST_misses];
	uint64_t bc = st->counter[ST_bytes_from_cache], bs = st->counter[ST_bytes_from_source];
	uint64_t bb = st->counter[ST_bytes_bypassed], saved = st->counter[ST_bytes_saved];
	char a[32], b[32];
	double cost;

	printf("efscache statistics for %s\n\n", path);
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		char *val = strchr(line, ' ');
		char hb[32];
		uint64_t v;

		if (!val)
			continue;
		*val++ = '\0';
		if (!strncmp(line, "fetch_latency_us_", 17))
			continue; /* summarised below */
		if (is_byte_counter(line) && sscanf(val, "%" SCNu64, &v) == 1) {
			printf("%-24s %12s  %s\n", line, human(v, hb, sizeof(hb)),
			       ctl_stats_help(line));
		} else if (!strcmp(line, "cache_dir") || !strcmp(line, "mountpoint")) {
			printf("%-24s %s\n", line, val);
		} else {
			printf("%-24s %12s  %s\n", line, val, ctl_stats_help(line));
		}
	}
	putchar('\n');
	print_ratio("hit ratio (chunks)", hits, hits + misses, false);
	print_ratio("hit ratio (bytes)", bc, bc + bs + bb, true);
	if (st->cache_size_bytes)
		printf("%-24s %5.1f%% (%s of %s)\n", "cache usage",
		       100.0 * (double)st->cache_usage_bytes / (double)st->cache_size_bytes,
		       human(st->cache_usage_bytes, a, sizeof(a)),
		       human(st->cache_size_bytes, b, sizeof(b)));
	if (st->fetch_count)
		printf("%-24s %.2f ms mean over %" PRIu64 " fetch%s\n", "fetch latency",
		       (double)st->fetch_sum_us / 1000.0 / (double)st->fetch_count, st->fetch_count,
		       st->fetch_count == 1 ? "" : "es");
	if (price < 0) {
		printf("%-24s %s (in dollars with --price-per-gb: EFS Elastic throughput "
		       "bills reads per GB; Bursting and Provisioned do not)\n",
		       "EFS reads saved", human(saved, a, sizeof(a)));
		return;
	}
	cost = metrics_cost(saved, price);
	/* cents for real money, more digits while it is still small */
	printf("%-24s %s, worth $%.*f at $%.4f/GB read with Elastic throughput\n",
	       "EFS reads saved", human(saved, a, sizeof(a)), cost >= 1 ? 2 : 4, cost, price);
}

int cmd_stats(int argc, char **argv)
{
	enum { OPT_FORMAT = 256, OPT_JSON, OPT_PRICE };
	static const struct option opts[] = {
	    {"raw", no_argument, NULL, 'r'},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"format", required_argument, NULL, OPT_FORMAT},
	    {"price-per-gb", required_argument, NULL, OPT_PRICE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	enum { FMT_TEXT, FMT_RAW, FMT_JSON, FMT_PROM } fmt = FMT_TEXT;
	double price = METRICS_DEFAULT_PRICE_PER_GB;
	struct ctl_stats *st;
	const char *path;
	char *text;
	int c, r, ret;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'r') {
			fmt = FMT_RAW;
		} else if (c == OPT_JSON) {
			fmt = FMT_JSON;
		} else if (c == OPT_FORMAT) {
			if (!strcmp(optarg, "text"))
				fmt = FMT_TEXT;
			else if (!strcmp(optarg, "json"))
				fmt = FMT_JSON;
			else if (!strcmp(optarg, "prometheus"))
				fmt = FMT_PROM;
			else {
				usage_error("stats: bad --format '%s': expected text, json or "
					    "prometheus",
					    optarg);
				return EXIT_USAGE;
			}
		} else if (c == OPT_PRICE) {
			if (metrics_parse_price(optarg, &price) < 0) {
				usage_error("stats: bad --price-per-gb '%s': expected USD per GB, "
					    "0 to 1000",
					    optarg);
				return EXIT_USAGE;
			}
		} else if (c == 'h') {
			return print_usage();
		} else {
			bad_option("stats", c, argv);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		usage_error("stats takes one MOUNTPOINT");
		return EXIT_USAGE;
	}
	path = argv[optind];
	r = get_stats(path, &text, &st);
	if (r < 0) {
		xattr_error(path, r == -EBADMSG ? ENODATA : -r);
		return EXIT_FAIL;
	}
	if (fmt == FMT_RAW) {
		fputs(text, stdout);
		ret = fflush(stdout) ? EXIT_FAIL : 0;
	} else if (fmt == FMT_JSON || fmt == FMT_PROM) {
		ret = print_rendered(path, text, fmt == FMT_JSON ? METRICS_JSON : METRICS_PROMETHEUS,
				     price);
	} else {
		print_text(path, text, st, price);
		ret = fflush(stdout) ? EXIT_FAIL : 0;
	}
	free(text);
	free(st);
	return ret;
}
