/* efscachectl.c - inspect and steer a running efscache, or check a cache_dir.
 *
 * Queries (stats, status) are getxattr of the mount's reserved names
 * (ctlproto.h); a path whose file system does not know them answers ENODATA
 * or ENOTSUP, which is how a path that is not on an efscache mount is
 * recognised.  Actions (evict, verify) go to the daemon's control socket in
 * its cache_dir, whose path the stats query gives; only root and the mount's
 * owner can reach it (control.c).  `verify CACHE_DIR`
 * is the one offline command: it opens the cache_dir with store_open(),
 * which takes the daemon's lock, so it never runs beside a daemon.
 *
 * warm: the main thread walks the trees and queues files; N workers open
 * each file through the mount and read it with 1 MiB preads, which makes
 * the daemon fetch and store it.  A file larger than one segment (16 MiB,
 * or a chunk if chunks are larger) is split into segments that other
 * workers pick up first, so one big file is fetched in parallel too.  The
 * kernel's page cache of each file is dropped before reading (pages still
 * cached there would never reach the daemon) and after each segment (they
 * are of no use once the daemon has the data).  On a TTY a progress thread
 * redraws one status line.
 *
 * Locks: warm's queue, counters of finished files and stderr output are
 * under w->mu; byte counters are relaxed atomics.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "checksum.h"
#include "config.h"
#include "metrics.h"
#include "ctlproto.h"
#include "stats.h"
#include "store.h"

#define PROG "efscachectl"

#define XATTR_STATS CTL_XATTR_STATS
#define XATTR_STATUS CTL_XATTR_STATUS

#define EXIT_FAIL 1
#define EXIT_USAGE 2

#define REPLY_MAX (64 * 1024)	/* stats and verify replies are a few hundred bytes */
#define WARM_READ (1 << 20)	/* bytes per read(2) while warming */
#define WARM_SEGMENT (16 << 20) /* a bigger file is split into segments this size */
#define WARM_DEFAULT_JOBS 4
#define WARM_MAX_JOBS 256
#define CONNECT_TRIES 30 /* 100 ms apart: while the daemon binds its socket */
#define RATE_SAMPLES 20 /* progress redraws the rate is averaged over (5 s) */

static const char usage_text[] =
    "usage: " PROG " COMMAND [OPTIONS] PATH...\n"
    "\n"
    "Inspect and control a mounted efscache through its mount point.\n"
    "\n"
    "commands:\n"
    "  stats [--raw|--json|--format=FMT] [--price-per-gb=USD] MOUNTPOINT\n"
    "                             counters of the mount's daemon and the EFS\n"
    "                             reads they saved; FMT is text (default), json\n"
    "                             or prometheus (for node_exporter's textfile\n"
    "                             collector); --raw prints one \"name value\"\n"
    "                             line each; USD per GB read (default 0.03)\n"
    "  status [--json] PATH...    per file: size, cached bytes, chunks, state,\n"
    "                             last validation; directories are recursed\n"
    "                             and get a total line\n"
    "  warm [-j N] PATH...        read files and trees through the mount so the\n"
    "                             daemon caches them, with N parallel readers\n"
    "                             (default 4)\n"
    "  evict PATH...              drop the cached data of files and trees (*)\n"
    "  verify MOUNTPOINT          re-hash every cached chunk in the daemon; bad\n"
    "                             chunks are removed; shows progress on a TTY;\n"
    "                             joins a verify already running (*)\n"
    "  verify CACHE_DIR           the same offline, on a cache_dir no daemon uses\n"
    "\n"
    "options:\n"
    "  -h, --help                 print this help and exit\n"
    "  -V, --version              print the version and exit\n"
    "\n"
    "PATH may be any path on an efscache mount.  (*) acts on the cache: only root\n"
    "and the mount's owner may (others get \"Operation not permitted\"); stats\n"
    "and status are open to anyone who can see the path and change nothing.\n"
    "Exit status: 0 on success, 1 if anything failed (or verify found bad data),\n"
    "2 on a usage error.\n";

/* ---- output helpers ----------------------------------------------------- */

/* stderr is shared by the error messages and warm's progress line: whoever
 * writes takes out_mu and erases the progress line first. */
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static bool out_line_shown; /* protected by out_mu */

static void clear_line_locked(void)
{
	if (out_line_shown) {
		fputs("\r\033[K", stderr);
		out_line_shown = false;
	}
}

/* "efscachectl: " and the message on stderr. */
static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void report(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&out_mu);
	clear_line_locked();
	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	pthread_mutex_unlock(&out_mu);
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs(PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry '" PROG " --help' for more information.\n", stderr);
}

/* getopt returned '?' or ':' for the command cmd: say why. */
static void bad_option(const char *cmd, int c, char **argv)
{
	if (c == ':')
		usage_error("%s: option '%s' needs a value", cmd, argv[optind - 1]);
	else if (optopt)
		usage_error("%s: unknown option '-%c'", cmd, optopt);
	else
		usage_error("%s: unknown option '%s'", cmd, argv[optind - 1]);
}

/* "efscachectl: PATH: strerror(err)"; err is a positive errno. */
static void path_error(const char *path, int err)
{
	report("%s: %s", path, strerror(err));
}

static void not_on_mount(const char *path)
{
	report("%s is not on an efscache mount", path);
}

static bool not_ours(int err)
{
	return err == ENODATA || err == ENOTSUP || err == EOPNOTSUPP;
}

/* Report a failed xattr call on path in the words the user needs. */
static void xattr_error(const char *path, int err)
{
	if (not_ours(err))
		not_on_mount(path);
	else
		path_error(path, err);
}

/* "512 B", "3.8 KiB", "1.5 GiB". */
static const char *human(uint64_t v, char *buf, size_t len)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double d = (double)v;
	unsigned i = 0;

	if (v < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", v);
		return buf;
	}
	d /= 1024;
	while (d >= 1024 && i < 5) {
		d /= 1024;
		i++;
	}
	snprintf(buf, len, "%.1f %s", d, units[i]);
	return buf;
}

static double mib(uint64_t v)
{
	return (double)v / (1024.0 * 1024.0);
}

static double now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	bool slash = a && dir[a - 1] != '/';
	char *p = malloc(a + slash + b + 1);

	if (!p)
		return NULL;
	memcpy(p, dir, a);
	if (slash)
		p[a] = '/';
	memcpy(p + a + slash, name, b + 1);
	return p;
}

/* ---- talking to the daemon ---------------------------------------------- */

/* getxattr into buf (NUL-terminated); returns the length or -errno. */
static ssize_t get_reserved(const char *path, const char *name, char *buf, size_t len)
{
	ssize_t n = getxattr(path, name, buf, len - 1);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return n;
}

/* The value of "name value" line `key` in text, or NULL. */
static const char *kv_find(const char *text, const char *key, size_t *vlen)
{
	size_t klen = strlen(key);
	const char *p = text;

	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);

		if (n > klen && !strncmp(p, key, klen) && p[klen] == ' ') {
			*vlen = n - klen - 1;
			return p + klen + 1;
		}
		p += n + (eol ? 1 : 0);
	}
	return NULL;
}

static bool kv_u64(const char *text, const char *key, uint64_t *out)
{
	size_t vlen;
	const char *v = kv_find(text, key, &vlen);
	char tmp[32], *end;

	if (!v || !vlen || vlen >= sizeof(tmp))
		return false;
	memcpy(tmp, v, vlen);
	tmp[vlen] = '\0';
	errno = 0;
	*out = strtoull(tmp, &end, 10);
	return !errno && *end == '\0' && tmp[0] != '-';
}

struct file_status {
	char state[16];
	uint64_t size, cached, chunk_size, chunks, chunks_cached, chunks_verified;
	uint64_t last_validated;
};

static int parse_status(const char *text, struct file_status *st)
{
	size_t vlen;
	const char *v = kv_find(text, "state", &vlen);

	if (!v || vlen >= sizeof(st->state))
		return -EBADMSG;
	memcpy(st->state, v, vlen);
	st->state[vlen] = '\0';
	if (!kv_u64(text, "size", &st->size) || !kv_u64(text, "cached_bytes", &st->cached) ||
	    !kv_u64(text, "chunk_size", &st->chunk_size) || !kv_u64(text, "chunks", &st->chunks) ||
	    !kv_u64(text, "chunks_cached", &st->chunks_cached) ||
	    !kv_u64(text, "chunks_verified", &st->chunks_verified) ||
	    !kv_u64(text, "last_validated", &st->last_validated))
		return -EBADMSG;
	return 0;
}

/* Status of a path (fd < 0) or an open file.  0 or -errno; -EBADMSG when
 * the reply is not ours. */
static int get_status(const char *path, int fd, struct file_status *st)
{
	char buf[4096];
	ssize_t n = fd >= 0 ? fgetxattr(fd, XATTR_STATUS, buf, sizeof(buf) - 1)
			    : getxattr(path, XATTR_STATUS, buf, sizeof(buf) - 1);

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return parse_status(buf, st);
}

/* Check that path is on an efscache mount; reports and returns false if not. */
static bool probe_mount(const char *path)
{
	struct file_status st;
	int r = get_status(path, -1, &st);

	if (r == -EBADMSG)
		not_on_mount(path);
	else if (r < 0)
		xattr_error(path, -r);
	return r == 0;
}

/* ---- the control socket (evict, verify) ----------------------------------- */

struct ctl_conn {
	int fd;
	struct ctl_reader rd;
	char *cache_dir;
};

/* Say why `what` on path is refused, and what to do. */
static void denied(const char *what, const char *path, const char *cache_dir)
{
	struct stat st;
	char owner[48] = "the mount's owner";

	if (cache_dir && stat(cache_dir, &st) == 0)
		snprintf(owner, sizeof(owner), "the mount's owner (uid %ld)", (long)st.st_uid);
	report("%s %s: %s: only root and %s may %s; queries (stats, status) are open to "
	       "all. Run it as one of them, e.g. with sudo",
	       what, path, strerror(EPERM), owner, what);
}

/* Connect to the daemon serving path (any path on its mount).  Reports and
 * returns -errno on failure; -EPERM when the caller may not act. */
static int ctl_open(const char *what, const char *path, struct ctl_conn *cc)
{
	char *buf = malloc(REPLY_MAX);
	const char *v;
	size_t vlen;
	ssize_t n;
	int r;

	memset(cc, 0, sizeof(*cc));
	cc->fd = -1;
	if (!buf) {
		path_error(path, ENOMEM);
		return -ENOMEM;
	}
	n = get_reserved(path, XATTR_STATS, buf, REPLY_MAX);
	if (n < 0) {
		xattr_error(path, (int)-n);
		r = (int)n;
		goto out_free;
	}
	v = kv_find(buf, "cache_dir", &vlen);
	if (!v || !(cc->cache_dir = strndup(v, vlen))) {
		not_on_mount(path);
		r = -EBADMSG;
		goto out_free;
	}
	/* The daemon binds its socket just after mounting, and again within a
	 * second when cache_dir was recreated: give it that long. */
	for (int tries = 0; tries < CONNECT_TRIES; tries++) {
		r = ctl_connect(cc->cache_dir);
		if (r != -ENOENT && r != -ECONNREFUSED)
			break;
		usleep(100 * 1000);
	}
	if (r == -EACCES || r == -EPERM) {
		denied(what, path, cc->cache_dir);
		r = -EPERM;
	} else if (r < 0) {
		report("%s %s: cannot reach the daemon's control socket in '%s': %s", what, path,
		       cc->cache_dir, strerror(-r));
	} else {
		cc->fd = r;
		ctl_reader_init(&cc->rd, r);
		r = 0;
	}
out_free:
	free(buf);
	return r;
}

static void ctl_close(struct ctl_conn *cc)
{
	if (cc->fd >= 0)
		close(cc->fd);
	free(cc->cache_dir);
	cc->fd = -1;
	cc->cache_dir = NULL;
}

/* Read replies to a request until `done`; progress messages go to fn. */
static int ctl_wait_done(struct ctl_conn *cc, struct ctl_msg *done,
			 void (*fn)(const struct ctl_msg *m, void *arg), void *arg)
{
	for (;;) {
		int r = ctl_recv(&cc->rd, done);

		if (r < 0)
			return r;
		if (done->kind == CTL_DONE)
			return 0;
		if (done->kind == CTL_PROGRESS && fn)
			fn(done, arg);
	}
}

/* Send req and read replies until `done`.  A daemon that refused the
 * connection has sent its `done` and closed: read it even if sending
 * failed.  0 or -errno. */
static int ctl_request(struct ctl_conn *cc, const struct ctl_msg *req, struct ctl_msg *done,
		       void (*fn)(const struct ctl_msg *m, void *arg), void *arg)
{
	int r = ctl_send(cc->fd, req);

	if (r == 0 || r == -EPIPE || r == -ECONNRESET) {
		int w = ctl_wait_done(cc, done, fn, arg);
		r = w == 0 ? 0 : r < 0 ? r : w;
	}
	return r;
}

/* The daemon's answer to a request: 0 or -errno (reported). */
static int ctl_result(const char *what, const char *path, struct ctl_conn *cc, int r,
		      const struct ctl_msg *done)
{
	int err = r < 0 ? -r : (int)ctl_get(done, CTL_F_error);

	if (r == -ECONNRESET) {
		report("%s %s: the daemon closed the control connection (unmounted?)", what, path);
		return r;
	}
	if (err == EPERM)
		denied(what, path, cc->cache_dir);
	else if (err)
		report("%s %s: %s", what, path, strerror(err));
	return -err;
}

/* ---- walking trees ------------------------------------------------------- */

/* Called for each regular file; returns 0, or -1 once it reported an error. */
typedef int (*walk_fn)(const char *path, const struct stat *st, void *arg);

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Visit the regular files under dir (sorted by name, symlinks not followed,
 * other file systems skipped).  Returns the number of errors reported. */
static unsigned walk_dir(const char *dir, dev_t dev, walk_fn fn, void *arg)
{
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0, cap = 0;
	unsigned errors = 0;
	struct dirent *e;

	if (!d) {
		path_error(dir, errno);
		return 1;
	}
	errno = 0;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			char **nn = realloc(names, ncap * sizeof(*nn));
			if (!nn)
				break;
			names = nn;
			cap = ncap;
		}
		if (!(names[n] = strdup(e->d_name)))
			break;
		n++;
		errno = 0;
	}
	if (errno) {
		path_error(dir, errno);
		errors++;
	}
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		char *p = path_join(dir, names[i]);
		struct stat st;

		if (!p) {
			path_error(dir, ENOMEM);
			errors++;
		} else if (fstatat(dirfd(d), names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) { /* gone meanwhile: nothing to do */
				path_error(p, errno);
				errors++;
			}
		} else if (st.st_dev != dev) {
			/* another file system mounted inside: not ours */
		} else if (S_ISDIR(st.st_mode)) {
			errors += walk_dir(p, dev, fn, arg);
		} else if (S_ISREG(st.st_mode)) {
			if (fn(p, &st, arg) < 0)
				errors++;
		}
		free(p);
		free(names[i]);
	}
	free(names);
	closedir(d);
	return errors;
}

/* Visit path itself if it is a regular file (symlinks followed), or the
 * files under it if it is a directory.  *is_dir tells which. */
static unsigned walk(const char *path, walk_fn fn, void *arg, bool *is_dir)
{
	struct stat st;

	*is_dir = false;
	if (stat(path, &st) < 0) {
		path_error(path, errno);
		return 1;
	}
	if (S_ISDIR(st.st_mode)) {
		*is_dir = true;
		return walk_dir(path, st.st_dev, fn, arg);
	}
	if (!S_ISREG(st.st_mode)) {
		report("%s: not a regular file or directory", path);
		return 1;
	}
	return fn(path, &st, arg) < 0 ? 1 : 0;
}

/* ---- stats --------------------------------------------------------------- */

static const char *extra_help(const char *name)
{
	static const char *const extra[][2] = {
	    {"cache_entries", "files the daemon has a cache entry for"},
	    {"cache_usage_bytes", "disk space used by cached data and metadata"},
	    {"cache_size_bytes", "the cache_size limit"},
	    {"cache_dir", "where the cache lives"},
	};

	for (int i = 0; i < ST__COUNT; i++)
		if (!strcmp(stats_name((enum stat_id)i), name))
			return stats_help((enum stat_id)i);
	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
		if (!strcmp(extra[i][0], name))
			return extra[i][1];
	return "";
}

static bool is_byte_counter(const char *name)
{
	size_t n = strlen(name);

	return !strncmp(name, "bytes_", 6) || (n > 6 && !strcmp(name + n - 6, "_bytes"));
}

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
	char *out = metrics_render(text, fmt, price);

	if (!out) {
		path_error(path, ENOMEM);
		return EXIT_FAIL;
	}
	fputs(out, stdout);
	free(out);
	return fflush(stdout) ? EXIT_FAIL : 0;
}

static int cmd_stats(int argc, char **argv)
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
	uint64_t hits = 0, misses = 0, bc = 0, bs = 0, bb = 0, usage = 0, limit = 0;
	uint64_t fetches = 0, fetch_us = 0, served = 0, saved;
	const char *path;
	char *buf, *line;
	ssize_t n;
	int c, ret;

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
			fputs(usage_text, stdout);
			return 0;
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
	buf = malloc(REPLY_MAX);
	if (!buf) {
		path_error(path, ENOMEM);
		return EXIT_FAIL;
	}
	n = get_reserved(path, XATTR_STATS, buf, REPLY_MAX);
	if (n < 0 || !strstr(buf, "reads ")) {
		xattr_error(path, n < 0 ? (int)-n : ENODATA);
		free(buf);
		return EXIT_FAIL;
	}
	if (fmt == FMT_RAW) {
		fputs(buf, stdout);
		free(buf);
		return fflush(stdout) ? EXIT_FAIL : 0;
	}
	if (fmt == FMT_JSON || fmt == FMT_PROM) {
		ret = print_rendered(path, buf, fmt == FMT_JSON ? METRICS_JSON : METRICS_PROMETHEUS,
				     price);
		free(buf);
		return ret;
	}
	kv_u64(buf, "hits", &hits);
	kv_u64(buf, "misses", &misses);
	kv_u64(buf, "bytes_from_cache", &bc);
	kv_u64(buf, "bytes_from_source", &bs);
	kv_u64(buf, "bytes_bypassed", &bb);
	kv_u64(buf, "cache_usage_bytes", &usage);
	kv_u64(buf, "cache_size_bytes", &limit);
	kv_u64(buf, "bytes_served", &served);
	kv_u64(buf, "fetch_latency_us_count", &fetches);
	kv_u64(buf, "fetch_latency_us_sum", &fetch_us);
	printf("efscache statistics for %s\n\n", path);
	for (line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
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
			       extra_help(line));
		} else if (!strcmp(line, "cache_dir")) {
			printf("%-24s %s\n", line, val);
		} else {
			printf("%-24s %12s  %s\n", line, val, extra_help(line));
		}
	}
	putchar('\n');
	print_ratio("hit ratio (chunks)", hits, hits + misses, false);
	print_ratio("hit ratio (bytes)", bc, bc + bs + bb, true);
	if (limit) {
		char a[32], b[32];
		printf("%-24s %5.1f%% (%s of %s)\n", "cache usage",
		       100.0 * (double)usage / (double)limit, human(usage, a, sizeof(a)),
		       human(limit, b, sizeof(b)));
	}
	if (fetches)
		printf("%-24s %.2f ms mean over %" PRIu64 " fetch%s\n", "fetch latency",
		       (double)fetch_us / 1000.0 / (double)fetches, fetches,
		       fetches == 1 ? "" : "es");
	{
		char a[32];
		double cost;

		saved = metrics_saved_bytes(served, bs, bb);
		cost = metrics_cost(saved, price);
		/* cents for real money, more digits while it is still small */
		printf("%-24s %s, worth $%.*f at $%.4f/GB read (see --price-per-gb)\n",
		       "EFS reads saved", human(saved, a, sizeof(a)), cost >= 1 ? 2 : 4, cost,
		       price);
	}
	free(buf);
	return fflush(stdout) ? EXIT_FAIL : 0;
}

/* ---- status --------------------------------------------------------------- */

struct status_ctx {
	bool header_done;
	bool json;      /* one JSON object per file instead of table rows */
	bool *json_sep; /* a file object was printed: the next needs a comma */
	uint64_t files, size, cached, chunks, chunks_cached, chunks_verified;
};

static void fmt_when(uint64_t epoch, char *buf, size_t len)
{
	time_t t = (time_t)epoch;
	struct tm tm;

	if (!epoch || !localtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(buf, len, "never");
}

static void fmt_pct(uint64_t part, uint64_t whole, char *buf, size_t len)
{
	if (!whole)
		snprintf(buf, len, "-");
	else /* floor: 100% only when complete */
		snprintf(buf, len, "%u%%", (unsigned)(part >= whole ? 100 : part * 100 / whole));
}

static void status_header(struct status_ctx *s)
{
	if (s->header_done)
		return;
	s->header_done = true;
	printf("%10s %10s %4s %11s %8s  %-11s  %-19s  %s\n", "SIZE", "CACHED", "%", "CHUNKS",
	       "VERIFIED", "STATE", "LAST VALIDATED", "PATH");
}

static int status_one(const char *path, const struct stat *sb, void *arg)
{
	struct status_ctx *s = arg;
	struct file_status st;
	char a[32], b[32], pct[8], ch[32], when[32];
	int r = get_status(path, -1, &st);

	if (r == -EBADMSG) {
		not_on_mount(path);
		return -1;
	}
	if (r < 0) {
		xattr_error(path, -r);
		return -1;
	}
	/* An uncached file has no record: show what the mount reports. */
	if (!strcmp(st.state, "uncached") && !st.size) {
		st.size = (uint64_t)sb->st_size;
		if (st.chunk_size)
			st.chunks = (st.size + st.chunk_size - 1) / st.chunk_size;
	}
	if (s->json) {
		printf("%s\n    {\"path\": \"", *s->json_sep ? "," : "");
		metrics_put_json_string(stdout, path);
		printf("\", \"size\": %" PRIu64 ", \"cached_bytes\": %" PRIu64
		       ", \"chunk_size\": %" PRIu64 ", \"chunks\": %" PRIu64
		       ", \"chunks_cached\": %" PRIu64 ", \"chunks_verified\": %" PRIu64
		       ", \"state\": \"",
		       st.size, st.cached, st.chunk_size, st.chunks, st.chunks_cached,
		       st.chunks_verified);
		metrics_put_json_string(stdout, st.state);
		printf("\", \"last_validated\": %" PRIu64 "}", st.last_validated);
		*s->json_sep = true;
		goto count;
	}
	status_header(s);
	fmt_pct(st.cached, st.size, pct, sizeof(pct));
	fmt_when(st.last_validated, when, sizeof(when));
	snprintf(ch, sizeof(ch), "%" PRIu64 "/%" PRIu64, st.chunks_cached, st.chunks);
	printf("%10s %10s %4s %11s %8" PRIu64 "  %-11s  %-19s  %s\n", human(st.size, a, sizeof(a)),
	       human(st.cached, b, sizeof(b)), pct, ch, st.chunks_verified, st.state, when, path);
count:
	s->files++;
	s->size += st.size;
	s->cached += st.cached;
	s->chunks += st.chunks;
	s->chunks_cached += st.chunks_cached;
	s->chunks_verified += st.chunks_verified;
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct status_ctx total = {0};
	bool json = false, json_sep = false, dir_sep = false;
	unsigned errors = 0;
	int c;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'j') {
			json = true;
			continue;
		}
		if (c == 'h') {
			fputs(usage_text, stdout);
			return 0;
		}
		bad_option("status", c, argv);
		return EXIT_USAGE;
	}
	if (optind >= argc) {
		usage_error("status needs at least one PATH");
		return EXIT_USAGE;
	}
	/* JSON: {"files": [...], "directories": [totals...]}; the totals are
	 * kept until the files are done. */
	char *dirs_json = NULL;
	size_t dirs_len = 0;
	FILE *dirs = json ? open_memstream(&dirs_json, &dirs_len) : NULL;

	if (json && !dirs) {
		path_error(argv[optind], ENOMEM);
		return EXIT_FAIL;
	}
	if (json)
		fputs("{\n  \"files\": [", stdout);
	for (int i = optind; i < argc; i++) {
		struct status_ctx s = {.header_done = total.header_done, .json = json,
				       .json_sep = &json_sep};
		char a[32], b[32], pct[8], ch[32], files[32];
		bool is_dir;

		if (!probe_mount(argv[i])) {
			errors++;
			continue;
		}
		errors += walk(argv[i], status_one, &s, &is_dir);
		total.header_done = s.header_done;
		if (!is_dir)
			continue;
		if (json) {
			fprintf(dirs, "%s\n    {\"path\": \"", dir_sep ? "," : "");
			metrics_put_json_string(dirs, argv[i]);
			fprintf(dirs,
				"\", \"files\": %" PRIu64 ", \"size\": %" PRIu64
				", \"cached_bytes\": %" PRIu64 ", \"chunks\": %" PRIu64
				", \"chunks_cached\": %" PRIu64 ", \"chunks_verified\": %" PRIu64 "}",
				s.files, s.size, s.cached, s.chunks, s.chunks_cached,
				s.chunks_verified);
			dir_sep = true;
			continue;
		}
		status_header(&total);
		fmt_pct(s.cached, s.size, pct, sizeof(pct));
		snprintf(ch, sizeof(ch), "%" PRIu64 "/%" PRIu64, s.chunks_cached, s.chunks);
		snprintf(files, sizeof(files), "%" PRIu64 " file%s", s.files,
			 s.files == 1 ? "" : "s");
		printf("%10s %10s %4s %11s %8" PRIu64 "  %-11s  %-19s  %s (total)\n",
		       human(s.size, a, sizeof(a)), human(s.cached, b, sizeof(b)), pct, ch,
		       s.chunks_verified, files, "", argv[i]);
	}
	if (json) {
		fclose(dirs);
		printf("\n  ],\n  \"directories\": [%s\n  ]\n}\n", dirs_json ? dirs_json : "");
		free(dirs_json);
	}
	if (fflush(stdout))
		errors++;
	return errors ? EXIT_FAIL : 0;
}

/* ---- evict ---------------------------------------------------------------- */

struct evict_ctx {
	struct ctl_conn cc;
	uint64_t files, files_dropped, bytes, chunks;
	bool denied; /* stop at the first refusal: every file would say the same */
};

static int evict_one(const char *path, const struct stat *sb, void *arg)
{
	struct evict_ctx *ev = arg;
	struct ctl_msg req, done;
	uint64_t bytes, chunks;
	bool transport;
	char hb[32];
	int r;

	if (ev->denied)
		return -1;
	if (ev->cc.fd < 0) {
		r = ctl_open("evict", path, &ev->cc);
		ev->denied = r == -EPERM;
		if (r < 0)
			return -1;
	}
	ev->files++;
	/* st_ino through the mount is the source's: the daemon's cache key. */
	ctl_msg_init(&req, CTL_EVICT);
	ctl_set(&req, CTL_F_ino, (uint64_t)sb->st_ino);
	r = ctl_request(&ev->cc, &req, &done, NULL, NULL);
	transport = r < 0;
	r = ctl_result("evict", path, &ev->cc, r, &done);
	if (r < 0) {
		ev->denied = r == -EPERM;
		if (transport)
			ctl_close(&ev->cc); /* connect again for the next file */
		return -1;
	}
	bytes = ctl_get(&done, CTL_F_bytes_dropped);
	chunks = ctl_get(&done, CTL_F_chunks_dropped);
	if (bytes) {
		printf("dropped %s (%" PRIu64 " chunk%s): %s\n", human(bytes, hb, sizeof(hb)),
		       chunks, chunks == 1 ? "" : "s", path);
		ev->files_dropped++;
		ev->bytes += bytes;
		ev->chunks += chunks;
	}
	return 0;
}

static int cmd_evict(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct evict_ctx ev = {.cc.fd = -1};
	unsigned errors = 0;
	char hb[32];
	int c;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage_text, stdout);
			return 0;
		}
		bad_option("evict", c, argv);
		return EXIT_USAGE;
	}
	if (optind >= argc) {
		usage_error("evict needs at least one PATH");
		return EXIT_USAGE;
	}
	for (int i = optind; i < argc; i++) {
		bool is_dir;

		if (ev.denied)
			break;
		if (!probe_mount(argv[i])) {
			errors++;
			continue;
		}
		errors += walk(argv[i], evict_one, &ev, &is_dir);
	}
	ctl_close(&ev.cc);
	if (ev.denied) {
		fflush(stdout);
		return EXIT_FAIL;
	}
	printf("evicted %s (%" PRIu64 " chunk%s) from %" PRIu64 " of %" PRIu64 " file%s\n",
	       human(ev.bytes, hb, sizeof(hb)), ev.chunks, ev.chunks == 1 ? "" : "s",
	       ev.files_dropped, ev.files, ev.files == 1 ? "" : "s");
	if (fflush(stdout))
		errors++;
	return errors ? EXIT_FAIL : 0;
}

/* ---- warm ----------------------------------------------------------------- */

struct warm_file {
	char *path;
	int fd;
	int err;	   /* first error, positive errno; under w->mu */
	unsigned pending;  /* segments not finished; under w->mu */
	uint64_t expected; /* size counted in w->bytes_total */
};

struct warm_item {
	struct warm_item *next;
	struct warm_file *f;
	uint64_t off, len; /* len 0 = the whole file (first item of a file) */
};

struct warm {
	pthread_mutex_t mu;
	pthread_cond_t cv;	       /* work queued, or the scan ended */
	struct warm_item *head, *tail; /* under mu */
	bool scan_done;		       /* under mu */
	bool finished;		       /* under mu: workers are done, progress stops */
	pthread_cond_t done_cv;	       /* finished changed */
	bool tty;
	/* Recent (time, bytes_read) samples for the rate; progress thread only. */
	double sample_t[RATE_SAMPLES];
	uint64_t sample_b[RATE_SAMPLES];
	unsigned nsamples;
	uint64_t files_total, files_done, files_failed, files_skipped; /* under mu */
	uint64_t bytes_total, bytes_done, bytes_read;		       /* atomic */
	double start;
};

static uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void add(uint64_t *p, int64_t v)
{
	__atomic_fetch_add(p, (uint64_t)v, __ATOMIC_RELAXED);
}

static void warm_push_locked(struct warm *w, struct warm_item *it, bool front)
{
	if (front) {
		it->next = w->head;
		w->head = it;
		if (!w->tail)
			w->tail = it;
	} else {
		it->next = NULL;
		if (w->tail)
			w->tail->next = it;
		else
			w->head = it;
		w->tail = it;
	}
	pthread_cond_broadcast(&w->cv);
}

static struct warm_item *warm_pop(struct warm *w)
{
	struct warm_item *it;

	pthread_mutex_lock(&w->mu);
	while (!w->head && !w->scan_done)
		pthread_cond_wait(&w->cv, &w->mu);
	it = w->head;
	if (it) {
		w->head = it->next;
		if (!w->head)
			w->tail = NULL;
	}
	pthread_mutex_unlock(&w->mu);
	return it;
}

/* One segment (or a whole file) is finished; the last one closes the file. */
static void warm_finish(struct warm *w, struct warm_file *f, int err, bool skipped)
{
	bool last;

	pthread_mutex_lock(&w->mu);
	if (err && !f->err)
		f->err = err;
	last = --f->pending == 0;
	if (last) {
		w->files_done++;
		if (f->err)
			w->files_failed++;
		else if (skipped)
			w->files_skipped++;
	}
	pthread_mutex_unlock(&w->mu);
	if (!last)
		return;
	if (f->err)
		path_error(f->path, f->err);
	if (f->fd >= 0)
		close(f->fd);
	free(f->path);
	free(f);
}

/* Read [off, off+len) (len UINT64_MAX: to EOF); returns 0 or a positive errno. */
static int warm_read(struct warm *w, int fd, void *buf, uint64_t off, uint64_t len)
{
	uint64_t done = 0;
	int err = 0;

	while (done < len) {
		size_t want = len - done < WARM_READ ? (size_t)(len - done) : WARM_READ;
		ssize_t n = pread(fd, buf, want, (off_t)(off + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			break;
		}
		if (n == 0)
			break;
		done += (uint64_t)n;
		add(&w->bytes_done, n);
		add(&w->bytes_read, n);
	}
	/* The daemon has the data now; the kernel's copy is of no use. */
	posix_fadvise(fd, (off_t)off, len == UINT64_MAX ? 0 : (off_t)len, POSIX_FADV_DONTNEED);
	return err;
}

/* First item of a file: open it, skip it if already cached, queue its other
 * segments, read the first. */
static void warm_open(struct warm *w, struct warm_file *f, void *buf)
{
	struct file_status st;
	uint64_t size, seg;
	struct stat sb;
	int err;

	f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0 || fstat(f->fd, &sb) < 0) {
		err = errno;
		add(&w->bytes_done, (int64_t)f->expected);
		warm_finish(w, f, err, false);
		return;
	}
	size = (uint64_t)sb.st_size;
	add(&w->bytes_total, (int64_t)(size - f->expected));
	f->expected = size;
	seg = WARM_SEGMENT;
	if (get_status(NULL, f->fd, &st) == 0) {
		/* The open validated the file: a complete, valid entry needs no reads. */
		if (!strcmp(st.state, "valid") && st.size == size && st.cached == size) {
			add(&w->bytes_done, (int64_t)size);
			warm_finish(w, f, 0, true);
			return;
		}
		if (st.chunk_size > 0)
			seg = (seg + st.chunk_size - 1) / st.chunk_size * st.chunk_size;
	}
	/* Pages the kernel still holds would be served without asking the daemon. */
	posix_fadvise(f->fd, 0, 0, POSIX_FADV_DONTNEED);
	if (size > seg) {
		uint64_t nseg = (size + seg - 1) / seg;
		struct warm_item **items = calloc(nseg, sizeof(*items));
		uint64_t made = 0;

		for (uint64_t i = 1; items && i < nseg; i++, made++) {
			items[i] = malloc(sizeof(**items));
			if (!items[i])
				break;
			items[i]->f = f;
			items[i]->off = i * seg;
			items[i]->len = i + 1 == nseg ? UINT64_MAX : seg;
		}
		if (made + 1 < nseg) {
			/* Out of memory: read it all here instead. */
			for (uint64_t i = 1; items && i <= made; i++)
				free(items[i]);
			made = 0;
			seg = UINT64_MAX;
		}
		pthread_mutex_lock(&w->mu);
		f->pending += (unsigned)made;
		/* Front of the queue, in order: idle workers join this file first. */
		for (uint64_t i = made; i >= 1; i--)
			warm_push_locked(w, items[i], true);
		pthread_mutex_unlock(&w->mu);
		free(items);
	} else {
		seg = UINT64_MAX;
	}
	err = warm_read(w, f->fd, buf, 0, seg);
	warm_finish(w, f, err, false);
}

static void *warm_worker(void *arg)
{
	struct warm *w = arg;
	void *buf = malloc(WARM_READ);
	struct warm_item *it;

	while ((it = warm_pop(w))) {
		if (!buf) {
			warm_finish(w, it->f, ENOMEM, false);
		} else if (it->len == 0) {
			warm_open(w, it->f, buf);
		} else {
			warm_finish(w, it->f, warm_read(w, it->f->fd, buf, it->off, it->len),
				    false);
		}
		free(it);
	}
	free(buf);
	return NULL;
}

static void fmt_eta(double secs, char *buf, size_t len)
{
	unsigned long s;

	if (secs < 0 || secs > 99 * 3600.0) {
		snprintf(buf, len, "--:--");
		return;
	}
	s = (unsigned long)(secs + 0.5);
	if (s >= 3600)
		snprintf(buf, len, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
	else
		snprintf(buf, len, "%lu:%02lu", s / 60, s % 60);
}

/* Draw the progress line; w->mu held, takes out_mu. */
static void draw_progress_locked(struct warm *w)
{
	uint64_t done = ld(&w->bytes_done), total = ld(&w->bytes_total), rd = ld(&w->bytes_read);
	double now = now_mono(), rate = 0;
	unsigned slot = w->nsamples % RATE_SAMPLES, oldest;
	char a[32], b[32], eta[32], line[256];
	struct winsize ws;
	size_t width = 80;
	int n;

	/* MiB/s over the last few seconds: small files and big ones differ. */
	w->sample_t[slot] = now;
	w->sample_b[slot] = rd;
	w->nsamples++;
	oldest = w->nsamples > RATE_SAMPLES ? w->nsamples % RATE_SAMPLES : 0;
	if (now - w->sample_t[oldest] > 0.1)
		rate = mib(rd - w->sample_b[oldest]) / (now - w->sample_t[oldest]);
	else if (now - w->start > 0)
		rate = mib(rd) / (now - w->start);
	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1)
		width = ws.ws_col;
	if (done > total)
		total = done;
	if (!w->scan_done || rate <= 0)
		snprintf(eta, sizeof(eta), "--:--");
	else
		fmt_eta(mib(total - done) / rate, eta, sizeof(eta));
	n = snprintf(line, sizeof(line),
		     "warm: %s / %s%s, %" PRIu64 " / %" PRIu64 "%s files, %.1f MiB/s, ETA %s",
		     human(done, a, sizeof(a)), human(total, b, sizeof(b)), w->scan_done ? "" : "+",
		     w->files_done, w->files_total, w->scan_done ? "" : "+", rate, eta);
	if (n > 0 && (size_t)n >= width)
		line[width - 1] = '\0';
	pthread_mutex_lock(&out_mu);
	fprintf(stderr, "\r%s\033[K", line);
	fflush(stderr);
	out_line_shown = true;
	pthread_mutex_unlock(&out_mu);
}

static void *warm_progress(void *arg)
{
	struct warm *w = arg;
	struct timespec ts;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		/* Every 250 ms; a warm that ends sooner never shows a line. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 250 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		while (!w->finished &&
		       pthread_cond_timedwait(&w->done_cv, &w->mu, &ts) != ETIMEDOUT)
			;
		if (w->finished)
			break;
		draw_progress_locked(w);
	}
	pthread_mutex_unlock(&w->mu);
	pthread_mutex_lock(&out_mu);
	clear_line_locked();
	pthread_mutex_unlock(&out_mu);
	return NULL;
}

static int warm_queue_file(const char *path, const struct stat *st, void *arg)
{
	struct warm *w = arg;
	struct warm_file *f = calloc(1, sizeof(*f));
	struct warm_item *it = malloc(sizeof(*it));

	if (!f || !it || !(f->path = strdup(path))) {
		free(f);
		free(it);
		path_error(path, ENOMEM);
		return -1;
	}
	f->fd = -1;
	f->pending = 1;
	f->expected = (uint64_t)st->st_size;
	it->f = f;
	it->off = it->len = 0;
	add(&w->bytes_total, st->st_size);
	pthread_mutex_lock(&w->mu);
	w->files_total++;
	warm_push_locked(w, it, false);
	pthread_mutex_unlock(&w->mu);
	return 0;
}

static int cmd_warm(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"jobs", required_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct warm w = {.tty = isatty(STDERR_FILENO) == 1};
	unsigned long jobs = WARM_DEFAULT_JOBS;
	pthread_t *workers, progress;
	unsigned started = 0, errors = 0;
	bool progress_started = false;
	double el;
	int c;

	while ((c = getopt_long(argc, argv, ":hj:", opts, NULL)) != -1) {
		char *end;

		if (c == 'h') {
			fputs(usage_text, stdout);
			return 0;
		}
		if (c != 'j') {
			bad_option("warm", c, argv);
			return EXIT_USAGE;
		}
		errno = 0;
		jobs = strtoul(optarg, &end, 10);
		if (errno || *end || !*optarg || jobs < 1 || jobs > WARM_MAX_JOBS) {
			usage_error("warm: -j takes a number from 1 to %d, not '%s'", WARM_MAX_JOBS,
				    optarg);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage_error("warm needs at least one PATH");
		return EXIT_USAGE;
	}
	workers = calloc(jobs, sizeof(*workers));
	if (!workers) {
		path_error(argv[optind], ENOMEM);
		return EXIT_FAIL;
	}
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cv, NULL);
	pthread_cond_init(&w.done_cv, NULL);
	w.start = now_mono();
	for (unsigned long i = 0; i < jobs; i++) {
		if (pthread_create(&workers[i], NULL, warm_worker, &w))
			break;
		started++;
	}
	if (!started) {
		report("cannot start worker threads");
		free(workers);
		return EXIT_FAIL;
	}
	if (w.tty && pthread_create(&progress, NULL, warm_progress, &w) == 0)
		progress_started = true;
	for (int i = optind; i < argc; i++) {
		bool is_dir;

		if (!probe_mount(argv[i])) {
			errors++;
			continue;
		}
		errors += walk(argv[i], warm_queue_file, &w, &is_dir);
	}
	pthread_mutex_lock(&w.mu);
	w.scan_done = true;
	pthread_cond_broadcast(&w.cv);
	pthread_mutex_unlock(&w.mu);
	for (unsigned i = 0; i < started; i++)
		pthread_join(workers[i], NULL);
	free(workers);
	pthread_mutex_lock(&w.mu);
	w.finished = true;
	pthread_cond_broadcast(&w.done_cv);
	pthread_mutex_unlock(&w.mu);
	if (progress_started)
		pthread_join(progress, NULL);

	el = now_mono() - w.start;
	printf("warmed %" PRIu64 " file%s, %.1f MiB in %.1f s (%.1f MiB/s)",
	       w.files_done - w.files_failed, w.files_done - w.files_failed == 1 ? "" : "s",
	       mib(w.bytes_read), el, el > 0 ? mib(w.bytes_read) / el : 0.0);
	if (w.files_skipped)
		printf(", %" PRIu64 " already cached", w.files_skipped);
	if (w.files_failed)
		printf(", %" PRIu64 " failed", w.files_failed);
	putchar('\n');
	errors += (unsigned)w.files_failed;
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cv);
	pthread_cond_destroy(&w.done_cv);
	if (fflush(stdout))
		errors++;
	return errors ? EXIT_FAIL : 0;
}

/* ---- verify --------------------------------------------------------------- */

static void verify_progress(const struct ctl_msg *m, void *arg)
{
	uint64_t total = ctl_get(m, CTL_F_chunks_total), done = ctl_get(m, CTL_F_chunks_checked);
	char hb[32];

	(void)arg;
	pthread_mutex_lock(&out_mu);
	fprintf(stderr, "\r\033[Kverify: %" PRIu64 "/%" PRIu64 " chunks (%.0f%%), %s, %" PRIu64
		" bad", done, total, total ? 100.0 * (double)done / (double)total : 100.0,
		human(ctl_get(m, CTL_F_bytes_checked), hb, sizeof(hb)),
		ctl_get(m, CTL_F_chunks_bad));
	fflush(stderr);
	out_line_shown = true;
	pthread_mutex_unlock(&out_mu);
}

/* Verify through the daemon's control socket, progress on a TTY. */
static int verify_mount(const char *path)
{
	struct ctl_conn cc;
	struct ctl_msg req, done;
	uint64_t checked, bad, bytes;
	char hb[32];
	int r;

	if (ctl_open("verify", path, &cc) < 0)
		return EXIT_FAIL;
	ctl_msg_init(&req, CTL_VERIFY);
	r = ctl_request(&cc, &req, &done, isatty(STDERR_FILENO) ? verify_progress : NULL, NULL);
	pthread_mutex_lock(&out_mu);
	clear_line_locked();
	pthread_mutex_unlock(&out_mu);
	r = ctl_result("verify", path, &cc, r, &done);
	ctl_close(&cc);
	if (r < 0)
		return EXIT_FAIL;
	checked = ctl_get(&done, CTL_F_chunks_checked);
	bad = ctl_get(&done, CTL_F_chunks_bad);
	bytes = ctl_get(&done, CTL_F_bytes_checked);
	if (ctl_get(&done, CTL_F_joined))
		printf("joined a verify that was already running\n");
	printf("chunks checked  %" PRIu64 "\n", checked);
	printf("bytes checked   %s\n", human(bytes, hb, sizeof(hb)));
	printf("chunks bad      %" PRIu64 "%s\n", bad,
	       bad ? " (removed; they will be fetched again)" : "");
	if (bad) {
		report("%s: %" PRIu64 " bad chunk%s found and removed", path, bad,
		       bad == 1 ? "" : "s");
		return EXIT_FAIL;
	}
	return fflush(stdout) ? EXIT_FAIL : 0;
}

static bool is_cache_dir(const char *path)
{
	char *lock = path_join(path, "lock"), *layout = path_join(path, "v1");
	struct stat a, b;
	bool yes = lock && layout && lstat(lock, &a) == 0 && S_ISREG(a.st_mode) &&
		   lstat(layout, &b) == 0 && S_ISDIR(b.st_mode);

	free(lock);
	free(layout);
	return yes;
}

struct key_list {
	struct store_key *keys;
	size_t n, cap;
	bool nomem;
};

static void collect_key(const struct store_key *k, void *arg)
{
	struct key_list *l = arg;

	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 256;
		struct store_key *nk = realloc(l->keys, ncap * sizeof(*nk));
		if (!nk) {
			l->nomem = true;
			return;
		}
		l->keys = nk;
		l->cap = ncap;
	}
	l->keys[l->n++] = *k;
}

static int verify_cache_dir(const char *path)
{
	struct key_list keys = {0};
	uint64_t records = 0, bad_records = 0, checked = 0, bad = 0, bytes = 0;
	unsigned errors = 0;
	struct store *s;
	void *buf = NULL;
	size_t buflen = 0;
	char err[512] = "", hb[32];
	int r;

	r = store_open(&s, path, err, sizeof(err));
	if (r == -EBUSY) {
		report("%s: cache_dir is in use by a running efscache; run verify on its "
		       "MOUNTPOINT instead",
		       path);
		return EXIT_FAIL;
	}
	if (r < 0) {
		if (err[0])
			report("%s", err);
		else
			path_error(path, -r);
		return EXIT_FAIL;
	}
	r = store_scan(s, collect_key, &keys);
	if (r < 0 || keys.nomem) {
		path_error(path, r < 0 ? -r : ENOMEM);
		errors++;
	}
	for (size_t i = 0; i < keys.n; i++) {
		const struct store_key *k = &keys.keys[i];
		struct store_slot *slots = NULL;
		struct store_file f;

		r = store_load(s, k, &f, &slots);
		if (r == -ENOENT)
			continue;
		records++;
		if (r == 0 && f.chunk_size > CONFIG_MAX_CHUNK_SIZE) {
			/* Checksummed but impossible: no daemon writes it. */
			free(slots);
			store_file_close(&f);
			r = -EBADMSG;
		}
		if (r == -EBADMSG) {
			bad_records++;
			report("%s: record %s is corrupt, removed", path, k->hex);
			r = store_remove(s, k);
			if (r < 0) {
				report("%s: cannot remove record %s: %s", path, k->hex,
				       strerror(-r));
				errors++;
			}
			continue;
		}
		if (r < 0) {
			report("%s: record %s: %s", path, k->hex, strerror(-r));
			errors++;
			continue;
		}
		if (buflen < f.chunk_size) {
			free(buf);
			buflen = f.chunk_size;
			buf = malloc(buflen);
			if (!buf) {
				buflen = 0;
				path_error(path, ENOMEM);
				errors++;
				free(slots);
				store_file_close(&f);
				break;
			}
		}
		for (uint32_t c = 0; c < f.nchunks; c++) {
			const char *why = NULL;

			if (!slots[c].len)
				continue;
			checked++;
			if (slots[c].len <= f.chunk_size)
				bytes += slots[c].len;
			r = store_verify_chunk(&f, c, &slots[c], buf, &why);
			if (r < 0 && !why)
				why = strerror(-r);
			if (!why)
				continue;
			bad++;
			report("%s: record %s chunk %u: %s, removed", path, k->hex, c, why);
			r = store_drop_chunk(&f, c);
			if (r < 0) {
				report("%s: record %s chunk %u: cannot remove: %s", path, k->hex, c,
				       strerror(-r));
				errors++;
			}
		}
		free(slots);
		store_file_close(&f);
	}
	free(buf);
	free(keys.keys);
	store_close(s);
	printf("records checked %" PRIu64 "\n", records);
	printf("records bad     %" PRIu64 "%s\n", bad_records, bad_records ? " (removed)" : "");
	printf("chunks checked  %" PRIu64 "\n", checked);
	printf("bytes checked   %s\n", human(bytes, hb, sizeof(hb)));
	printf("chunks bad      %" PRIu64 "%s\n", bad, bad ? " (removed)" : "");
	if (fflush(stdout))
		errors++;
	return errors || bad || bad_records ? EXIT_FAIL : 0;
}

static int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *path;
	char *buf;
	ssize_t n;
	int c, ret;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage_text, stdout);
			return 0;
		}
		bad_option("verify", c, argv);
		return EXIT_USAGE;
	}
	if (argc - optind != 1) {
		usage_error("verify takes one MOUNTPOINT or CACHE_DIR");
		return EXIT_USAGE;
	}
	path = argv[optind];
	buf = malloc(REPLY_MAX);
	if (!buf) {
		path_error(path, ENOMEM);
		return EXIT_FAIL;
	}
	/* The stats query tells a mount (and its cache_dir) from anything else. */
	n = get_reserved(path, XATTR_STATS, buf, REPLY_MAX);
	if (n >= 0) {
		ret = verify_mount(path);
	} else if (not_ours((int)-n) && is_cache_dir(path)) {
		ret = verify_cache_dir(path);
	} else if (not_ours((int)-n)) {
		report("%s is not on an efscache mount, nor a cache_dir", path);
		ret = EXIT_FAIL;
	} else {
		path_error(path, (int)-n);
		ret = EXIT_FAIL;
	}
	free(buf);
	return ret;
}

/* ---- main ----------------------------------------------------------------- */

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int argc, char **argv);
	} cmds[] = {
	    {"stats", cmd_stats}, {"status", cmd_status}, {"warm", cmd_warm},
	    {"evict", cmd_evict}, {"verify", cmd_verify},
	};
	const char *cmd;

	if (argc < 2) {
		usage_error("missing COMMAND");
		return EXIT_USAGE;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
		fputs(usage_text, stdout);
		return fflush(stdout) ? EXIT_FAIL : 0;
	}
	if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
		printf(PROG " " EFSCACHE_VERSION "\n");
		return fflush(stdout) ? EXIT_FAIL : 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(cmd, cmds[i].name)) {
			/* getopt sees the command as argv[0]. */
			optind = 1;
			opterr = 0;
			return cmds[i].fn(argc - 1, argv + 1);
		}
	}
	if (cmd[0] == '-')
		usage_error("unknown option '%s'", cmd);
	else
		usage_error("unknown command '%s'", cmd);
	return EXIT_USAGE;
}
