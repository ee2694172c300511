/* metrics.c - render the stats text as Prometheus text or JSON.
 *
 * Stateless: metrics_render() parses the "name value" lines into a table,
 * then walks the lists of stats.h (counters, gauges), the cache's usage
 * lines and the histogram, in that order, writing into an open_memstream.
 * Lines it does not know are appended at the end (untyped / plain numbers).
 */
#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctlproto.h"
#include "stats.h"

#define HIST_PREFIX "fetch_latency_us_"
#define GB (1024.0 * 1024.0 * 1024.0)

struct kv {
	const char *name;
	const char *value;
	bool used;
};

struct table {
	struct kv *kv;
	size_t n;
};

/* Lines the cache adds after the counters: name, Prometheus name (the help
 * is ctlproto's, ctl_stats_help()). */
static const char *const extra_gauges[][2] = {
    {"cache_entries", "efscache_cache_entries"},
    {"cache_usage_bytes", "efscache_cache_usage_bytes"},
    {"cache_size_bytes", "efscache_cache_limit_bytes"},
};

/* Split text (modified in place) into the table; 0 or -ENOMEM. */
static int parse(char *text, struct table *t)
{
	size_t cap = 0;
	char *save = NULL, *line;

	t->kv = NULL;
	t->n = 0;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(line, ' ');

		if (!sp)
			continue;
		*sp = '\0';
		if (t->n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct kv *nk = realloc(t->kv, ncap * sizeof(*nk));

			if (!nk)
				return -ENOMEM;
			t->kv = nk;
			cap = ncap;
		}
		t->kv[t->n++] = (struct kv){line, sp + 1, false};
	}
	return 0;
}

static struct kv *find(struct table *t, const char *name)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->kv[i].name, name))
			return &t->kv[i];
	return NULL;
}

static bool is_number(const char *s)
{
	char *end;

	if (!*s)
		return false;
	strtod(s, &end);
	return *end == '\0';
}

static uint64_t u64_of(struct table *t, const char *name)
{
	struct kv *kv = find(t, name);

	return kv ? strtoull(kv->value, NULL, 10) : 0;
}

/* "bytes_from_cache" -> "from_cache_bytes"; others unchanged. */
static void prom_base(const char *name, char *out, size_t len)
{
	if (!strncmp(name, "bytes_", 6))
		snprintf(out, len, "%s_bytes", name + 6);
	else
		snprintf(out, len, "%s", name);
}

/* A label value or JSON string: backslash, quote and newline escaped. */
static void put_escaped(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", (unsigned char)*s);
		else
			fputc(*s, f);
	}
}

void metrics_put_json_string(FILE *f, const char *s)
{
	put_escaped(f, s);
}

static void prom_metric(FILE *f, const char *name, const char *type, const char *help,
			const char *value)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", name, help, name, type, name, value);
}

uint64_t metrics_saved_bytes(uint64_t served, uint64_t from_source, uint64_t bypassed)
{
	uint64_t read = from_source + bypassed;

	return served > read ? served - read : 0;
}

static uint64_t saved_of(struct table *t)
{
	return metrics_saved_bytes(u64_of(t, "bytes_served"), u64_of(t, "bytes_from_source"),
				   u64_of(t, "bytes_bypassed"));
}

double metrics_cost(uint64_t bytes, double price_per_gb)
{
	return (double)bytes / GB * price_per_gb;
}

static void render_prometheus(FILE *f, struct table *t, double price)
{
	static const uint64_t bounds[STATS_FETCH_NBOUNDS] = {STATS_FETCH_BOUNDS_US};
	char name[160], key[96], v[64];
	struct kv *kv;

	fputs("# HELP efscache_info the daemon's version and cache_dir\n"
	      "# TYPE efscache_info gauge\n"
	      "efscache_info{version=\"" EFSCACHE_VERSION "\",cache_dir=\"",
	      f);
	kv = find(t, "cache_dir");
	if (kv) {
		put_escaped(f, kv->value);
		kv->used = true;
	}
	fputs("\"} 1\n", f);

	for (int i = 0; i < ST__COUNT; i++) {
		bool counter = i < ST__NCOUNTERS;

		if (!(kv = find(t, stats_name((enum stat_id)i))))
			continue;
		kv->used = true;
		prom_base(kv->name, key, sizeof(key));
		snprintf(name, sizeof(name), "efscache_%s%s", key, counter ? "_total" : "");
		prom_metric(f, name, counter ? "counter" : "gauge", stats_help((enum stat_id)i),
			    kv->value);
	}
	for (size_t i = 0; i < sizeof(extra_gauges) / sizeof(extra_gauges[0]); i++) {
		if (!(kv = find(t, extra_gauges[i][0])))
			continue;
		kv->used = true;
		prom_metric(f, extra_gauges[i][1], "gauge", ctl_stats_help(extra_gauges[i][0]),
			    kv->value);
	}

	if (find(t, HIST_PREFIX "count")) {
		fputs("# HELP efscache_fetch_duration_seconds time to read one chunk from the "
		      "source\n# TYPE efscache_fetch_duration_seconds histogram\n",
		      f);
		for (int i = 0; i < STATS_FETCH_NBOUNDS; i++) {
			snprintf(key, sizeof(key), HIST_PREFIX "le_%" PRIu64, bounds[i]);
			fprintf(f,
				"efscache_fetch_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
				(double)bounds[i] / 1e6, u64_of(t, key));
		}
		fprintf(f, "efscache_fetch_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
			u64_of(t, HIST_PREFIX "le_inf"));
		fprintf(f, "efscache_fetch_duration_seconds_sum %.6f\n",
			(double)u64_of(t, HIST_PREFIX "sum") / 1e6);
		fprintf(f, "efscache_fetch_duration_seconds_count %" PRIu64 "\n",
			u64_of(t, HIST_PREFIX "count"));
	}

	if (find(t, "bytes_served")) {
		snprintf(v, sizeof(v), "%" PRIu64, saved_of(t));
		prom_metric(f, "efscache_efs_saved_bytes", "gauge",
			    "bytes served to readers that were not read from the source (EFS)", v);
		snprintf(v, sizeof(v), "%.6f", price);
		prom_metric(f, "efscache_efs_read_price_dollars_per_gb", "gauge",
			    "EFS read price used for efscache_efs_saved_dollars", v);
		snprintf(v, sizeof(v), "%.6f", metrics_cost(saved_of(t), price));
		prom_metric(f, "efscache_efs_saved_dollars", "gauge",
			    "what efscache_efs_saved_bytes would have cost to read from EFS", v);
	}

	for (size_t i = 0; i < t->n; i++) {
		kv = &t->kv[i];
		if (kv->used || !strncmp(kv->name, HIST_PREFIX, strlen(HIST_PREFIX)) ||
		    !is_number(kv->value))
			continue;
		prom_base(kv->name, key, sizeof(key));
		fprintf(f, "# TYPE efscache_%s untyped\nefscache_%s %s\n", key, key, kv->value);
	}
}

static void render_json(FILE *f, struct table *t, double price)
{
	static const uint64_t bounds[STATS_FETCH_NBOUNDS] = {STATS_FETCH_BOUNDS_US};
	uint64_t saved = saved_of(t);
	char key[96];

	fputs("{\n  \"version\": \"" EFSCACHE_VERSION "\"", f);
	for (size_t i = 0; i < t->n; i++) {
		struct kv *kv = &t->kv[i];

		if (!strncmp(kv->name, HIST_PREFIX, strlen(HIST_PREFIX)))
			continue;
		fputs(",\n  \"", f);
		put_escaped(f, kv->name);
		fputs("\": ", f);
		if (is_number(kv->value) && kv->value[0] != '-' && kv->value[0] != '+') {
			fputs(kv->value, f);
		} else {
			fputc('"', f);
			put_escaped(f, kv->value);
			fputc('"', f);
		}
	}
	if (find(t, HIST_PREFIX "count")) {
		fputs(",\n  \"fetch_latency_seconds\": {\"buckets\": [", f);
		for (int i = 0; i < STATS_FETCH_NBOUNDS; i++) {
			snprintf(key, sizeof(key), HIST_PREFIX "le_%" PRIu64, bounds[i]);
			fprintf(f, "{\"le\": %g, \"count\": %" PRIu64 "}, ",
				(double)bounds[i] / 1e6, u64_of(t, key));
		}
		fprintf(f,
			"{\"le\": \"+Inf\", \"count\": %" PRIu64 "}], \"count\": %" PRIu64
			", \"sum\": %.6f}",
			u64_of(t, HIST_PREFIX "le_inf"), u64_of(t, HIST_PREFIX "count"),
			(double)u64_of(t, HIST_PREFIX "sum") / 1e6);
	}
	fprintf(f,
		",\n  \"efs_saved\": {\"bytes\": %" PRIu64
		", \"price_per_gb_usd\": %.6f, \"price_date\": \"" METRICS_PRICE_DATE
		"\", \"cost_usd\": %.6f}\n}\n",
		saved, price, metrics_cost(saved, price));
}

char *metrics_render(const char *stats_text, enum metrics_format fmt, double price_per_gb)
{
	char *copy = strdup(stats_text), *out = NULL;
	struct table t = {NULL, 0};
	size_t len = 0;
	FILE *f;

	if (!copy)
		return NULL;
	if (parse(copy, &t) < 0)
		goto out_free;
	f = open_memstream(&out, &len);
	if (!f)
		goto out_free;
	if (fmt == METRICS_PROMETHEUS)
		render_prometheus(f, &t, price_per_gb);
	else
		render_json(f, &t, price_per_gb);
	if (fclose(f) != 0) {
		free(out);
		out = NULL;
	}
out_free:
	free(t.kv);
	free(copy);
	return out;
}

/* 1536 -> "1.5K" (binary units, one decimal). */
static void human(uint64_t v, char *buf, size_t len)
{
	static const char units[] = "KMGTP";
	double d = (double)v;
	int u = -1;

	while (d >= 1024 && u < 4) {
		d /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%" PRIu64 "B", v);
	else
		snprintf(buf, len, "%.1f%c", d, units[u]);
}

void metrics_summary(const char *stats_text, char *buf, size_t len)
{
	char *copy = strdup(stats_text);
	struct table t = {NULL, 0};
	char a[16], b[16], c[16], d[16];

	if (!copy || parse(copy, &t) < 0) {
		snprintf(buf, len, "serving");
		goto out;
	}
	human(u64_of(&t, "bytes_from_cache"), a, sizeof(a));
	human(u64_of(&t, "bytes_from_source"), b, sizeof(b));
	human(u64_of(&t, "cache_usage_bytes"), c, sizeof(c));
	human(u64_of(&t, "cache_size_bytes"), d, sizeof(d));
	snprintf(buf, len,
		 "serving: %" PRIu64 " hits, %" PRIu64 " misses, %s from cache, %s from source, "
		 "cache %s of %s, %" PRIu64 " open",
		 u64_of(&t, "hits"), u64_of(&t, "misses"), a, b, c, d, u64_of(&t, "open_files"));
out:
	free(t.kv);
	free(copy);
}

int metrics_parse_price(const char *s, double *out)
{
	char *end;
	double v;

	if (!*s || !strchr("0123456789.", *s))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || v < 0 || v > METRICS_MAX_PRICE_PER_GB)
		return -EINVAL;
	*out = v;
	return 0;
}
