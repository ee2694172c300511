/* metrics.c - render the stats text as Prometheus text or JSON.
 *
 * Stateless: metrics_render() parses the "name value" lines into a table,
 * then walks the lists of stats.h (counters, gauges), ctlproto.h's cache
 * and inode lines (each with its kind), the histogram, the dollar series
 * (only with a price) and the process_* series (only if asked), in that
 * order, writing into an open_memstream.  Lines it does not know are
 * appended at the end (untyped / plain numbers).
 */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

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

/* A JSON string body: backslash, quote and control characters escaped. */
void metrics_put_json_string(FILE *f, const char *s)
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

/* Length of the well-formed UTF-8 sequence at s (1 to 4), or 0 if the byte
 * at s does not start one (overlong forms, surrogates and code points past
 * U+10FFFF included). */
static size_t utf8_len(const unsigned char *s)
{
	unsigned char c = s[0];
	size_t n;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

void metrics_put_label_value(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		size_t n = utf8_len(p);

		if (n == 0) {
			fputs("\xef\xbf\xbd", f); /* U+FFFD for a byte that is not UTF-8 */
			p++;
		} else if (*p == '\\' || *p == '"') {
			fprintf(f, "\\%c", *p++);
		} else if (*p == '\n') {
			fputs("\\n", f);
			p++;
		} else {
			fwrite(p, 1, n, f);
			p += n;
		}
	}
}

/* # HELP text: backslash and line feed escaped. */
static void put_help(FILE *f, const char *name, const char *help)
{
	fprintf(f, "# HELP %s ", name);
	for (; *help; help++) {
		if (*help == '\\')
			fputs("\\\\", f);
		else if (*help == '\n')
			fputs("\\n", f);
		else
			fputc(*help, f);
	}
	fputc('\n', f);
}

/* The labels every efscache_* sample carries, without braces: empty or
 * mountpoint="...". */
struct labels {
	char *text;
	size_t len;
};

/* name{labels} value, with HELP and TYPE before it. */
static void prom_metric(FILE *f, const struct labels *l, const char *name, const char *type,
			const char *help, const char *value)
{
	put_help(f, name, help);
	fprintf(f, "# TYPE %s %s\n%s%s%s%s %s\n", name, type, name, l->len ? "{" : "",
		l->text, l->len ? "}" : "", value);
}

double metrics_cost(uint64_t bytes, double price_per_gb)
{
	return (double)bytes / GB * price_per_gb;
}

/* The line `name`'s Prometheus name: efscache_BASE (gauges) or
 * efscache_BASE_total (counters); BASE as prom_base(), but cache_size_bytes
 * is the limit. */
static void prom_name(const char *name, bool counter, char *out, size_t len)
{
	char base[96];

	if (!strcmp(name, "cache_size_bytes"))
		snprintf(base, sizeof(base), "cache_limit_bytes");
	else
		prom_base(name, base, sizeof(base));
	snprintf(out, len, "efscache_%s%s", base, counter ? "_total" : "");
}

static void render_process(FILE *f)
{
	struct metrics_process p;
	char v[64];
	const struct labels none = {(char[]){""}, 0};

	if (metrics_process_read(&p) < 0)
		return;
	snprintf(v, sizeof(v), "%.2f", p.cpu_seconds);
	prom_metric(f, &none, "process_cpu_seconds_total", "counter",
		    "Total user and system CPU time spent in seconds.", v);
	if (p.open_fds >= 0) {
		snprintf(v, sizeof(v), "%ld", p.open_fds);
		prom_metric(f, &none, "process_open_fds", "gauge", "Number of open file descriptors.",
			    v);
	}
	if (p.max_fds >= 0) {
		snprintf(v, sizeof(v), "%ld", p.max_fds);
		prom_metric(f, &none, "process_max_fds", "gauge",
			    "Maximum number of open file descriptors.", v);
	}
	snprintf(v, sizeof(v), "%" PRIu64, p.virtual_bytes);
	prom_metric(f, &none, "process_virtual_memory_bytes", "gauge",
		    "Virtual memory size in bytes.", v);
	snprintf(v, sizeof(v), "%" PRIu64, p.resident_bytes);
	prom_metric(f, &none, "process_resident_memory_bytes", "gauge",
		    "Resident memory size in bytes.", v);
	snprintf(v, sizeof(v), "%.2f", p.start_time_seconds);
	prom_metric(f, &none, "process_start_time_seconds", "gauge",
		    "Start time of the process since unix epoch in seconds.", v);
}

static void render_prometheus(FILE *f, struct table *t, const struct metrics_opts *o)
{
	static const uint64_t bounds[STATS_FETCH_NBOUNDS] = {STATS_FETCH_BOUNDS_US};
	struct labels l = {NULL, 0};
	char name[160], v[64];
	struct kv *kv;
	FILE *lf = open_memstream(&l.text, &l.len);

	if (!lf)
		return;
	if ((kv = find(t, "mountpoint"))) {
		fputs("mountpoint=\"", lf);
		metrics_put_label_value(lf, kv->value);
		fputc('"', lf);
		kv->used = true;
	}
	if (fclose(lf) != 0) {
		free(l.text);
		return;
	}

	put_help(f, "efscache_info", "the daemon's version and cache_dir");
	fprintf(f, "# TYPE efscache_info gauge\nefscache_info{%s%sversion=\"" EFSCACHE_VERSION
		   "\",cache_dir=\"",
		l.text, l.len ? "," : "");
	if ((kv = find(t, "cache_dir"))) {
		metrics_put_label_value(f, kv->value);
		kv->used = true;
	}
	fputs("\"} 1\n", f);

	/* stats.h's counters and gauges, then ctlproto.h's cache and inode
	 * lines: everything with a known kind, in the daemon's order. */
	for (size_t i = 0; i < t->n; i++) {
		const char *kind;

		kv = &t->kv[i];
		kind = ctl_stats_kind(kv->name);
		if (kv->used || !kind || !strcmp(kind, "text") || !is_number(kv->value))
			continue;
		kv->used = true;
		prom_name(kv->name, !strcmp(kind, "counter"), name, sizeof(name));
		prom_metric(f, &l, name, kind, ctl_stats_help(kv->name), kv->value);
	}

	if (find(t, HIST_PREFIX "count")) {
		char key[96];

		put_help(f, "efscache_fetch_duration_seconds",
			 "time to read one chunk from the source");
		fputs("# TYPE efscache_fetch_duration_seconds histogram\n", f);
		for (int i = 0; i < STATS_FETCH_NBOUNDS; i++) {
			snprintf(key, sizeof(key), HIST_PREFIX "le_%" PRIu64, bounds[i]);
			fprintf(f,
				"efscache_fetch_duration_seconds_bucket{%s%sle=\"%g\"} %" PRIu64 "\n",
				l.text, l.len ? "," : "", (double)bounds[i] / 1e6, u64_of(t, key));
		}
		fprintf(f,
			"efscache_fetch_duration_seconds_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n",
			l.text, l.len ? "," : "", u64_of(t, HIST_PREFIX "le_inf"));
		fprintf(f, "efscache_fetch_duration_seconds_sum%s%s%s %.6f\n", l.len ? "{" : "",
			l.text, l.len ? "}" : "", (double)u64_of(t, HIST_PREFIX "sum") / 1e6);
		fprintf(f, "efscache_fetch_duration_seconds_count%s%s%s %" PRIu64 "\n",
			l.len ? "{" : "", l.text, l.len ? "}" : "",
			u64_of(t, HIST_PREFIX "count"));
	}

	if (o->price_per_gb >= 0 && find(t, "bytes_saved")) {
		snprintf(v, sizeof(v), "%.6f", o->price_per_gb);
		prom_metric(f, &l, "efscache_efs_read_price_dollars_per_gb", "gauge",
			    "EFS Elastic throughput read price given with price_per_gb (USD per "
			    "2^30 bytes)",
			    v);
		snprintf(v, sizeof(v), "%.6f", metrics_cost(u64_of(t, "bytes_saved"), o->price_per_gb));
		prom_metric(f, &l, "efscache_saved_dollars_total", "counter",
			    "efscache_saved_bytes_total at that price: what those reads would "
			    "have cost with Elastic throughput",
			    v);
	}

	for (size_t i = 0; i < t->n; i++) {
		char key[96];

		kv = &t->kv[i];
		if (kv->used || !strncmp(kv->name, HIST_PREFIX, strlen(HIST_PREFIX)) ||
		    !is_number(kv->value))
			continue;
		prom_base(kv->name, key, sizeof(key));
		snprintf(name, sizeof(name), "efscache_%s", key);
		prom_metric(f, &l, name, "untyped",
			    "a stats line this efscache build does not know (a newer daemon's)",
			    kv->value);
	}
	if (o->process)
		render_process(f);
	free(l.text);
}

static void render_json(FILE *f, struct table *t, const struct metrics_opts *o)
{
	static const uint64_t bounds[STATS_FETCH_NBOUNDS] = {STATS_FETCH_BOUNDS_US};
	uint64_t saved = u64_of(t, "bytes_saved");
	struct metrics_process p;
	char key[96];

	fputs("{\n  \"version\": \"" EFSCACHE_VERSION "\"", f);
	for (size_t i = 0; i < t->n; i++) {
		struct kv *kv = &t->kv[i];

		if (!strncmp(kv->name, HIST_PREFIX, strlen(HIST_PREFIX)))
			continue;
		fputs(",\n  \"", f);
		metrics_put_json_string(f, kv->name);
		fputs("\": ", f);
		if (is_number(kv->value) && kv->value[0] != '-' && kv->value[0] != '+') {
			fputs(kv->value, f);
		} else {
			fputc('"', f);
			metrics_put_json_string(f, kv->value);
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
	fprintf(f, ",\n  \"efs_saved\": {\"bytes\": %" PRIu64, saved);
	if (o->price_per_gb >= 0)
		fprintf(f, ", \"price_per_gb_usd\": %.6f, \"cost_usd\": %.6f", o->price_per_gb,
			metrics_cost(saved, o->price_per_gb));
	fputc('}', f);
	if (o->process && metrics_process_read(&p) == 0)
		fprintf(f,
			",\n  \"process\": {\"start_time_seconds\": %.2f, \"cpu_seconds\": %.2f, "
			"\"resident_memory_bytes\": %" PRIu64 ", \"virtual_memory_bytes\": %" PRIu64
			", \"open_fds\": %ld, \"max_fds\": %ld}",
			p.start_time_seconds, p.cpu_seconds, p.resident_bytes, p.virtual_bytes,
			p.open_fds, p.max_fds);
	fputs("\n}\n", f);
}

char *metrics_render(const char *stats_text, enum metrics_format fmt,
		     const struct metrics_opts *opts)
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
		render_prometheus(f, &t, opts);
	else
		render_json(f, &t, opts);
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

/* The first number after "key " in the file at path; 0 or -errno. */
static int read_key_u64(const char *path, const char *key, uint64_t *out)
{
	char line[256];
	size_t klen = strlen(key);
	int r = -ENOENT;
	FILE *f = fopen(path, "re");

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, key, klen) && line[klen] == ' ') {
			*out = strtoull(line + klen + 1, NULL, 10);
			r = 0;
			break;
		}
	}
	fclose(f);
	return r;
}

/* Entries of /proc/self/fd, without the one this count opens. */
static long count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	long n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

int metrics_process_read(struct metrics_process *p)
{
	unsigned long long utime, stime, start, vsize;
	long long rss;
	uint64_t btime = 0;
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	struct rlimit rl;
	char buf[1024], *paren;
	size_t n;
	int r;
	FILE *f = fopen("/proc/self/stat", "re");

	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* pid (comm) state ...: comm may hold spaces and parentheses. */
	paren = strrchr(buf, ')');
	if (!paren || tck <= 0 || page <= 0)
		return -EIO;
	/* fields 14, 15 (utime, stime), 22 (starttime), 23 (vsize), 24 (rss) */
	if (sscanf(paren + 1,
		   " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d "
		   "%*d %llu %llu %lld",
		   &utime, &stime, &start, &vsize, &rss) != 5)
		return -EIO;
	r = read_key_u64("/proc/stat", "btime", &btime);
	if (r < 0)
		return r;
	p->cpu_seconds = (double)(utime + stime) / (double)tck;
	p->start_time_seconds = (double)btime + (double)start / (double)tck;
	p->virtual_bytes = vsize;
	p->resident_bytes = rss > 0 ? (uint64_t)rss * (uint64_t)page : 0;
	p->open_fds = count_fds();
	p->max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
			     ? (long)rl.rlim_cur
			     : -1;
	return 0;
}
