/* config.c - argv and -o option parsing and validation.
 *
 * No file system access and no libfuse in config_parse(): it is pure string
 * work so that unit tests and the fuzzer can drive it.  Options we own are
 * removed from the -o list; everything else is collected in fuse_opts for
 * libfuse, which refuses what it does not know before mounting.
 */
#include "config.h"
#include "meta.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "metrics.h"

static const char usage_1[] =
	"usage: efscache SOURCE MOUNTPOINT [-f] [-d] [-o OPT[,OPT...]]\n"
	"\n"
	"Mount SOURCE (a slow NFS-like directory such as an Amazon EFS mount) at\n"
	"MOUNTPOINT and serve repeated reads from a checksum-validated local cache.\n"
	"\n"
	"general options:\n"
	"  -f                     stay in the foreground\n"
	"  -d                     debug output (implies -f)\n"
	"  -o OPT[,OPT...]        mount options, see below\n"
	"  -h, --help             print this help and exit\n"
	"  -V, --version          print the version and exit\n"
	"\n"
	"efscache options (SIZE takes K, M, G or T suffixes, powers of 1024):\n"
	"  -o cache_dir=PATH      cached data and metadata (default /tmp/efscache)\n"
	"  -o cache_size=SIZE     upper bound on the cache's disk usage (default 10G)\n"
	"  -o cache_min_free=PCT%|SIZE\n"
	"                         keep this much free on cache_dir's file system\n"
	"                         (default 10%)\n"
	"  -o ttl=SECONDS|never   how stale the tree may be: an open trusts a\n"
	"                         validation younger than this and names and\n"
	"                         attributes are cached at least this long; 0 keeps\n"
	"                         close-to-open (default); never for immutable trees\n"
	"  -o immutable           the tree never changes while mounted: ro and\n"
	"                         ttl=never, and the kernel opens files and\n"
	"                         directories without asking the daemon (no request\n"
	"                         per open or close); locks are this host's only, no\n"
	"                         passthrough\n"
	"\n";

/* The rest of the usage text (one string literal may not be longer than
 * ISO C's 4095 characters). */
static const char usage_2[] =
	"metadata caching (as the NFS client of an EFS mount; default: as fresh as\n"
	"EFS with its recommended mount options):\n"
	"  -o acregmin=S,acregmax=S\n"
	"                         a file's attributes may be S seconds old, the\n"
	"                         window growing from min to max while the file does\n"
	"                         not change (default 3 and 60)\n"
	"  -o acdirmin=S,acdirmax=S\n"
	"                         the same for directories and the names in them\n"
	"                         (default 30 and 60)\n"
	"  -o actimeo=S           all four windows at once\n"
	"  -o lookupcache=all|positive|none\n"
	"                         cache names found and not found (all, default),\n"
	"                         only names found, or none\n"
	"  -o nocto               an open trusts attributes still inside their window\n"
	"                         instead of asking the source (default cto: every\n"
	"                         open asks once, so it sees every change made before)\n"
	"  -o strict              no metadata caching: every lookup and stat asks the\n"
	"                         source (actimeo=0,lookupcache=none)\n"
	"  -o index_mem=SIZE      memory the directory index keeps of snapshots once\n"
	"                         they answered (default 8M); the others are read\n"
	"                         back from cache_dir when asked\n"
	"  -o chunk_size=SIZE     unit of caching and checksumming, a power of two\n"
	"                         from 64K to 64M (default 1M)\n"
	"  -o prefetch=N          parallel fetch workers for readahead and warm,\n"
	"                         0 to 64 (default 8)\n"
	"  -o siblings=N          when a small file (1M or less) is opened cold, fetch\n"
	"                         up to N other small files of its directory ahead, in\n"
	"                         parallel (8M at most), 0 to 1024 (default 64; 0: off,\n"
	"                         as with prefetch=0: it uses as many workers); also\n"
	"                         what a listing reads back ahead from cache_dir\n"
	"  -o verify=once|always|never\n"
	"                         verify a cached chunk's checksum before its first\n"
	"                         use by this daemon (default), on every read, or never\n"
	"  -o passthrough=auto|off\n"
	"                         auto (default): on -o ro mounts, serve reads of fully\n"
	"                         cached files by kernel passthrough to the cache's data\n"
	"                         file when libfuse, kernel and privilege allow; off on\n"
	"                         read-write mounts.  off: never\n"
	"  -o max_threads=N       FUSE worker threads, 1 to 1024 (default 16)\n"
	"  -o ro                  refuse writes (EROFS)\n"
	"  -o metrics=[ADDR:]PORT serve Prometheus metrics over HTTP at\n"
	"                         http://ADDR:PORT/metrics (ADDR defaults to 127.0.0.1;\n"
	"                         [::1]:PORT for IPv6); off by default\n"
	"  -o price_per_gb=USD    EFS Elastic's read price, to value the bytes served\n"
	"                         from the cache in dollars (default: none)\n"
	"  -o require_source_mount[=FSTYPE]\n"
	"                         refuse to start unless SOURCE is a mount point (of\n"
	"                         type FSTYPE, as /proc/self/mountinfo names it: nfs4\n"
	"                         for EFS, and efs is taken to mean nfs4); off by\n"
	"                         default.  Whatever this says, a daemon whose SOURCE\n"
	"                         is mounted over, unmounted or replaced while it runs\n"
	"                         unmounts and exits 1, for its supervisor to restart\n"
	"\n"
	"standard FUSE options are passed to libfuse, e.g. allow_other (which turns\n"
	"on default_permissions), default_permissions, fsname=NAME, subtype=NAME.\n";

const char *const config_usage[] = {usage_1, usage_2, NULL};

static void seterr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (!err || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
}

int config_parse_size(const char *s, uint64_t *out, char *err, size_t errlen)
{
	const char *p = s;
	uint64_t v = 0;
	unsigned shift = 0;

	if (!*p) {
		seterr(err, errlen, "empty size");
		return -EINVAL;
	}
	if (!isdigit((unsigned char)*p)) {
		seterr(err, errlen, "not a size: expected a number with an optional K, M, G or T");
		return -EINVAL;
	}
	while (isdigit((unsigned char)*p)) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10) {
			seterr(err, errlen, "size too large");
			return -ERANGE;
		}
		v = v * 10 + d;
		p++;
	}
	switch (*p) {
	case '\0':
		break;
	case 'k': case 'K': shift = 10; p++; break;
	case 'm': case 'M': shift = 20; p++; break;
	case 'g': case 'G': shift = 30; p++; break;
	case 't': case 'T': shift = 40; p++; break;
	default:
		seterr(err, errlen, "unknown suffix '%s' (use K, M, G or T)", p);
		return -EINVAL;
	}
	if (*p) {
		seterr(err, errlen, "trailing characters '%s' after the size", p);
		return -EINVAL;
	}
	if (shift && v > (UINT64_MAX >> shift)) {
		seterr(err, errlen, "size too large");
		return -ERANGE;
	}
	*out = v << shift;
	return 0;
}

const char *config_fmt_size(uint64_t bytes, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	unsigned i;

	for (i = 4; i > 0; i--) {
		uint64_t unit = 1ULL << (10 * i);
		if (bytes >= unit && bytes % unit == 0) {
			snprintf(buf, len, "%" PRIu64 "%c", bytes / unit, units[i - 1]);
			return buf;
		}
	}
	snprintf(buf, len, "%" PRIu64, bytes);
	return buf;
}

/* Parse a bounded unsigned decimal; -EINVAL on junk or out of range. */
static int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (!isdigit((unsigned char)*s))
			return -EINVAL;
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int append_fuse_opt(struct efs_config *cfg, const char *opt)
{
	size_t old = strlen(cfg->fuse_opts), add = strlen(opt);
	char *n = realloc(cfg->fuse_opts, old + add + 2);

	if (!n)
		return -ENOMEM;
	if (old)
		n[old++] = ',';
	memcpy(n + old, opt, add + 1);
	cfg->fuse_opts = n;
	return 0;
}

static bool has_fuse_opt(const struct efs_config *cfg, const char *name)
{
	size_t n = strlen(name);
	const char *p = cfg->fuse_opts;

	while (*p) {
		if (!strncmp(p, name, n) && (p[n] == ',' || p[n] == '\0'))
			return true;
		p = strchr(p, ',');
		if (!p)
			break;
		p++;
	}
	return false;
}

static int set_string(char **dst, const char *v)
{
	char *s = strdup(v);

	if (!s)
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

#define BAD(...)                                                                                   \
	do {                                                                                       \
		seterr(err, errlen, __VA_ARGS__);                                                  \
		return -EINVAL;                                                                    \
	} while (0)

/* One -o item, already split at commas. */
static int parse_one_opt(struct efs_config *cfg, char *opt, char *err, size_t errlen)
{
	char why[160];
	char *eq = strchr(opt, '=');
	const char *val = eq ? eq + 1 : NULL;
	uint64_t u;
	int r;

	if (eq)
		*eq = '\0';

#define NEED_VALUE()                                                                               \
	do {                                                                                       \
		if (!val || !*val)                                                                 \
			BAD("option '%s' needs a value", opt);                                     \
	} while (0)

	if (!strcmp(opt, "cache_dir")) {
		NEED_VALUE();
		if (val[0] != '/')
			BAD("bad value for option 'cache_dir': '%s': must be an absolute path", val);
		r = set_string(&cfg->cache_dir, val);
	} else if (!strcmp(opt, "cache_size")) {
		NEED_VALUE();
		if (config_parse_size(val, &cfg->cache_size, why, sizeof(why)))
			BAD("bad value for option 'cache_size': '%s': %s", val, why);
		if (cfg->cache_size == 0)
			BAD("bad value for option 'cache_size': '%s': must be greater than 0", val);
		r = 0;
	} else if (!strcmp(opt, "cache_min_free")) {
		size_t n;

		NEED_VALUE();
		n = strlen(val);
		if (val[n - 1] == '%') {
			char num[32];

			if (n - 1 >= sizeof(num) || n == 1)
				BAD("bad value for option 'cache_min_free': '%s': not a percentage", val);
			memcpy(num, val, n - 1);
			num[n - 1] = '\0';
			if (parse_uint(num, 0, 99, &u))
				BAD("bad value for option 'cache_min_free': '%s': percentage must be "
				    "a whole number from 0 to 99",
				    val);
			cfg->min_free_pct = (int)u;
			cfg->min_free_bytes = 0;
		} else {
			if (config_parse_size(val, &cfg->min_free_bytes, why, sizeof(why)))
				BAD("bad value for option 'cache_min_free': '%s': %s (or give PCT%%)",
				    val, why);
			cfg->min_free_pct = -1;
		}
		r = 0;
	} else if (!strcmp(opt, "index_mem")) {
		NEED_VALUE();
		if (config_parse_size(val, &cfg->index_mem, why, sizeof(why)))
			BAD("bad value for option 'index_mem': '%s': %s", val, why);
		if (cfg->index_mem > CONFIG_MAX_INDEX_MEM)
			BAD("bad value for option 'index_mem': '%s': at most 1G", val);
		r = 0;
	} else if (!strcmp(opt, "ttl")) {
		NEED_VALUE();
		if (!strcmp(val, "never")) {
			cfg->ttl = CONFIG_TTL_NEVER;
		} else {
			if (parse_uint(val, 0, 315360000, &u))
				BAD("bad value for option 'ttl': '%s': expected seconds (0 to "
				    "315360000) or 'never'",
				    val);
			cfg->ttl = (int64_t)u;
		}
		cfg->ttl_given = true;
		r = 0;
	} else if (!strcmp(opt, "actimeo") || !strcmp(opt, "acregmin") ||
		   !strcmp(opt, "acregmax") || !strcmp(opt, "acdirmin") ||
		   !strcmp(opt, "acdirmax")) {
		NEED_VALUE();
		if (parse_uint(val, 0, CONFIG_MAX_SECONDS, &u))
			BAD("bad value for option '%s': '%s': expected whole seconds from 0 to %d",
			    opt, val, CONFIG_MAX_SECONDS);
		if (!strcmp(opt, "actimeo"))
			cfg->acregmin = cfg->acregmax = cfg->acdirmin = cfg->acdirmax = (uint32_t)u;
		else if (!strcmp(opt, "acregmin"))
			cfg->acregmin = (uint32_t)u;
		else if (!strcmp(opt, "acregmax"))
			cfg->acregmax = (uint32_t)u;
		else if (!strcmp(opt, "acdirmin"))
			cfg->acdirmin = (uint32_t)u;
		else
			cfg->acdirmax = (uint32_t)u;
		r = 0;
	} else if (!strcmp(opt, "lookupcache")) {
		NEED_VALUE();
		if (!strcmp(val, "all"))
			cfg->lookupcache = LOOKUPCACHE_ALL;
		else if (!strcmp(val, "positive") || !strcmp(val, "pos"))
			cfg->lookupcache = LOOKUPCACHE_POSITIVE;
		else if (!strcmp(val, "none"))
			cfg->lookupcache = LOOKUPCACHE_NONE;
		else
			BAD("bad value for option 'lookupcache': '%s': expected all, positive or "
			    "none",
			    val);
		r = 0;
	} else if (!strcmp(opt, "cto") || !strcmp(opt, "nocto")) {
		if (val)
			BAD("option '%s' takes no value", opt);
		cfg->nocto = !strcmp(opt, "nocto");
		r = 0;
	} else if (!strcmp(opt, "strict")) {
		if (val)
			BAD("option 'strict' takes no value");
		/* Every lookup and getattr asks the source; every open validates. */
		cfg->acregmin = cfg->acregmax = cfg->acdirmin = cfg->acdirmax = 0;
		cfg->lookupcache = LOOKUPCACHE_NONE;
		cfg->nocto = false;
		r = 0;
	} else if (!strcmp(opt, "chunk_size")) {
		NEED_VALUE();
		if (config_parse_size(val, &u, why, sizeof(why)))
			BAD("bad value for option 'chunk_size': '%s': %s", val, why);
		if (u < CONFIG_MIN_CHUNK_SIZE || u > CONFIG_MAX_CHUNK_SIZE || (u & (u - 1)))
			BAD("bad value for option 'chunk_size': '%s': must be a power of two "
			    "from 64K to 64M",
			    val);
		cfg->chunk_size = u;
		r = 0;
	} else if (!strcmp(opt, "prefetch")) {
		NEED_VALUE();
		if (parse_uint(val, 0, CONFIG_MAX_PREFETCH, &u))
			BAD("bad value for option 'prefetch': '%s': expected a number from 0 to %d",
			    val, CONFIG_MAX_PREFETCH);
		cfg->prefetch = (unsigned)u;
		r = 0;
	} else if (!strcmp(opt, "siblings")) {
		NEED_VALUE();
		if (parse_uint(val, 0, CONFIG_MAX_SIBLINGS, &u))
			BAD("bad value for option 'siblings': '%s': expected a number from 0 to %d",
			    val, CONFIG_MAX_SIBLINGS);
		cfg->siblings = (unsigned)u;
		r = 0;
	} else if (!strcmp(opt, "metrics")) {
		char host[64];
		const char *port = val;
		unsigned char addr[16];

		NEED_VALUE();
		strcpy(host, "127.0.0.1");
		if (val[0] == '[') { /* [v6]:PORT */
			const char *end = strchr(val, ']');

			if (!end || end[1] != ':' || (size_t)(end - val - 1) >= sizeof(host))
				BAD("bad value for option 'metrics': '%s': expected [ADDR]:PORT", val);
			memcpy(host, val + 1, (size_t)(end - val - 1));
			host[end - val - 1] = '\0';
			port = end + 2;
		} else if (strchr(val, ':')) {
			const char *colon = strrchr(val, ':');

			if ((size_t)(colon - val) >= sizeof(host))
				BAD("bad value for option 'metrics': '%s': address too long", val);
			memcpy(host, val, (size_t)(colon - val));
			host[colon - val] = '\0';
			port = colon + 1;
		}
		if (inet_pton(AF_INET, host, addr) != 1 && inet_pton(AF_INET6, host, addr) != 1)
			BAD("bad value for option 'metrics': '%s': '%s' is not an IP address", val,
			    host);
		if (parse_uint(port, 1, 65535, &u))
			BAD("bad value for option 'metrics': '%s': port must be 1 to 65535", val);
		r = set_string(&cfg->metrics_host, host);
		cfg->metrics_port = (unsigned)u;
	} else if (!strcmp(opt, "price_per_gb")) {
		NEED_VALUE();
		if (metrics_parse_price(val, &cfg->price_per_gb))
			BAD("bad value for option 'price_per_gb': '%s': expected a price in USD "
			    "from 0 to 1000",
			    val);
		r = 0;
	} else if (!strcmp(opt, "require_source_mount")) {
		cfg->require_source_mount = true;
		if (!val) {
			free(cfg->source_fstype);
			cfg->source_fstype = NULL;
			r = 0;
		} else {
			size_t n = strspn(val, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					       "0123456789._+-");

			if (!*val || val[n] || n > 31)
				BAD("bad value for option 'require_source_mount': '%s': expected a "
				    "file system type such as nfs4 (letters, digits, '.', '_', "
				    "'+', '-'; at most 31)",
				    val);
			/* mount -t efs (amazon-efs-utils) mounts NFS 4.1: mountinfo says nfs4. */
			r = set_string(&cfg->source_fstype, strcmp(val, "efs") ? val : "nfs4");
		}
	} else if (!strcmp(opt, "max_threads")) {
		NEED_VALUE();
		if (parse_uint(val, 1, 1024, &u))
			BAD("bad value for option 'max_threads': '%s': expected a number from 1 "
			    "to 1024",
			    val);
		cfg->max_threads = (unsigned)u;
		r = 0;
	} else if (!strcmp(opt, "verify")) {
		NEED_VALUE();
		if (!strcmp(val, "once"))
			cfg->verify = VERIFY_ONCE;
		else if (!strcmp(val, "always"))
			cfg->verify = VERIFY_ALWAYS;
		else if (!strcmp(val, "never"))
			cfg->verify = VERIFY_NEVER;
		else
			BAD("bad value for option 'verify': '%s': expected once, always or never",
			    val);
		r = 0;
	} else if (!strcmp(opt, "passthrough")) {
		NEED_VALUE();
		if (!strcmp(val, "auto"))
			cfg->passthrough = true;
		else if (!strcmp(val, "off"))
			cfg->passthrough = false;
		else
			BAD("bad value for option 'passthrough': '%s': expected auto or off", val);
		r = 0;
	} else if (!strcmp(opt, "ro") || !strcmp(opt, "rw")) {
		if (val)
			BAD("option '%s' takes no value", opt);
		cfg->ro = !strcmp(opt, "ro");
		cfg->rw_given = !cfg->ro;
		r = append_fuse_opt(cfg, opt);
	} else if (!strcmp(opt, "immutable")) {
		if (val)
			BAD("option 'immutable' takes no value");
		cfg->immutable = true;
		r = 0;
	} else if (!strcmp(opt, "debug")) {
		if (val)
			BAD("option 'debug' takes no value");
		cfg->debug = cfg->foreground = true;
		r = 0;
	} else if (!strcmp(opt, "allow_other")) {
		if (val)
			BAD("option 'allow_other' takes no value");
		cfg->allow_other = true;
		r = append_fuse_opt(cfg, opt);
	} else {
		/* Not ours: libfuse validates it.  Keep "name=value" intact. */
		if (eq)
			*eq = '=';
		if (!*opt)
			return 0; /* "-o a,,b" */
		r = append_fuse_opt(cfg, opt);
	}
	if (r == -ENOMEM)
		BAD("out of memory");
	return r;
#undef NEED_VALUE
}

static int parse_opt_list(struct efs_config *cfg, const char *list, char *err, size_t errlen)
{
	char *copy = strdup(list), *save = NULL, *tok;
	int r = 0;

	if (!copy)
		BAD("out of memory");
	/* An empty item between commas is harmless; strtok_r skips it. */
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		r = parse_one_opt(cfg, tok, err, errlen);
		if (r)
			break;
	}
	free(copy);
	return r;
}

int config_parse(struct efs_config *cfg, int argc, char *const argv[], char *err, size_t errlen)
{
	int i, r = 0;

	memset(cfg, 0, sizeof(*cfg));
	cfg->cache_size = CONFIG_DEFAULT_CACHE_SIZE;
	cfg->min_free_pct = CONFIG_DEFAULT_MIN_FREE_PCT;
	cfg->index_mem = CONFIG_DEFAULT_INDEX_MEM;
	cfg->ttl = 0;
	cfg->acregmin = CONFIG_DEFAULT_ACREGMIN;
	cfg->acregmax = CONFIG_DEFAULT_ACREGMAX;
	cfg->acdirmin = CONFIG_DEFAULT_ACDIRMIN;
	cfg->acdirmax = CONFIG_DEFAULT_ACDIRMAX;
	cfg->lookupcache = LOOKUPCACHE_ALL;
	cfg->chunk_size = CONFIG_DEFAULT_CHUNK_SIZE;
	cfg->prefetch = CONFIG_DEFAULT_PREFETCH;
	cfg->siblings = CONFIG_DEFAULT_SIBLINGS;
	cfg->max_threads = CONFIG_DEFAULT_MAX_THREADS;
	cfg->verify = VERIFY_ONCE;
	cfg->passthrough = true;
	cfg->price_per_gb = METRICS_DEFAULT_PRICE_PER_GB;
	cfg->fuse_opts = calloc(1, 1);
	cfg->cache_dir = strdup(CONFIG_DEFAULT_CACHE_DIR);
	if (!cfg->fuse_opts || !cfg->cache_dir) {
		seterr(err, errlen, "out of memory");
		r = -ENOMEM;
		goto err_free;
	}

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			cfg->show_help = true;
		} else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
			cfg->show_version = true;
		} else if (!strcmp(a, "-f")) {
			cfg->foreground = true;
		} else if (!strcmp(a, "-d")) {
			cfg->debug = cfg->foreground = true;
		} else if (!strcmp(a, "-o")) {
			if (i + 1 >= argc) {
				seterr(err, errlen, "option '-o' needs an argument");
				r = -EINVAL;
				goto err_free;
			}
			r = parse_opt_list(cfg, argv[++i], err, errlen);
			if (r)
				goto err_free;
		} else if (!strncmp(a, "-o", 2)) {
			r = parse_opt_list(cfg, a + 2, err, errlen);
			if (r)
				goto err_free;
		} else if (a[0] == '-' && a[1] != '\0') {
			seterr(err, errlen, "unknown option '%s' (see --help)", a);
			r = -EINVAL;
			goto err_free;
		} else if (!cfg->source) {
			r = set_string(&cfg->source, a);
		} else if (!cfg->mountpoint) {
			r = set_string(&cfg->mountpoint, a);
		} else {
			seterr(err, errlen, "unexpected argument '%s': only SOURCE and MOUNTPOINT "
					    "are taken",
			       a);
			r = -EINVAL;
			goto err_free;
		}
		if (r) {
			seterr(err, errlen, "out of memory");
			goto err_free;
		}
	}
	if (cfg->show_help || cfg->show_version)
		return 0;
	if (!cfg->source) {
		seterr(err, errlen, "missing SOURCE and MOUNTPOINT (see --help)");
		r = -EINVAL;
		goto err_free;
	}
	if (!cfg->mountpoint) {
		seterr(err, errlen, "missing MOUNTPOINT (see --help)");
		r = -EINVAL;
		goto err_free;
	}
	if (cfg->cache_size < cfg->chunk_size) {
		char a[32], b[32];

		seterr(err, errlen,
		       "bad value for option 'cache_size': '%s': smaller than chunk_size (%s)",
		       config_fmt_size(cfg->cache_size, a, sizeof(a)),
		       config_fmt_size(cfg->chunk_size, b, sizeof(b)));
		r = -EINVAL;
		goto err_free;
	}
	if (cfg->immutable) {
		/* Immutable means read-only and never revalidated: the kernel
		 * keeps pages and names without asking (fsops.c, op_init). */
		if (cfg->ttl_given && cfg->ttl != CONFIG_TTL_NEVER) {
			seterr(err, errlen,
			       "option 'immutable' cannot be combined with 'ttl=%lld': an "
			       "immutable tree is never revalidated (ttl=never)",
			       (long long)cfg->ttl);
			r = -EINVAL;
			goto err_free;
		}
		if (cfg->rw_given) {
			seterr(err, errlen, "option 'immutable' cannot be combined with 'rw': an "
					    "immutable mount is read-only");
			r = -EINVAL;
			goto err_free;
		}
		cfg->ttl = CONFIG_TTL_NEVER;
		if (!cfg->ro) {
			cfg->ro = true;
			r = append_fuse_opt(cfg, "ro");
			if (r) {
				seterr(err, errlen, "out of memory");
				goto err_free;
			}
		}
	}
	/* With allow_other the kernel must check permissions: we run as root. */
	if (cfg->allow_other && !has_fuse_opt(cfg, "default_permissions")) {
		r = append_fuse_opt(cfg, "default_permissions");
		if (r) {
			seterr(err, errlen, "out of memory");
			goto err_free;
		}
	}
	return 0;

err_free:
	config_free(cfg);
	return r;
}

void config_free(struct efs_config *cfg)
{
	free(cfg->source);
	free(cfg->mountpoint);
	free(cfg->cache_dir);
	free(cfg->fuse_opts);
	free(cfg->metrics_host);
	free(cfg->source_fstype);
	memset(cfg, 0, sizeof(*cfg));
}

/* True if path equals dir or lies below it (both absolute, no trailing /). */
static bool path_within(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (n == 1 && dir[0] == '/')
		return true;
	return !strncmp(path, dir, n) && (path[n] == '\0' || path[n] == '/');
}

/* Resolve the parent directory of p but keep the last component as given,
 * so that a cache_dir that is itself a symlink is still seen (and refused)
 * as one, and one that does not exist yet can be named. */
static char *resolve_parent(const char *p)
{
	char *dup = strdup(p), *slash, *parent, *r = NULL;
	size_t n;

	if (!dup)
		return NULL;
	n = strlen(dup);
	while (n > 1 && dup[n - 1] == '/')
		dup[--n] = '\0';
	slash = strrchr(dup, '/');
	if (!slash || !slash[1] || !strcmp(slash + 1, ".") || !strcmp(slash + 1, "..")) {
		/* "/", "x/." or "x/..": only a real directory can be meant. */
		free(dup);
		return realpath(p, NULL);
	}
	*slash = '\0';
	parent = realpath(slash == dup ? "/" : dup, NULL);
	if (parent) {
		size_t pl = strlen(parent), bl = strlen(slash + 1);
		r = malloc(pl + bl + 2);
		if (r)
			snprintf(r, pl + bl + 2, "%s/%s", strcmp(parent, "/") ? parent : "",
				 slash + 1);
		free(parent);
	}
	free(dup);
	return r;
}

static int resolve_dir(const char *what, char **path, char *err, size_t errlen)
{
	struct stat st;
	char *r = realpath(*path, NULL);

	if (!r) {
		int e = errno;
		seterr(err, errlen, "%s '%s': %s", what, *path, strerror(e));
		return -e;
	}
	if (stat(r, &st) < 0) {
		int e = errno;
		seterr(err, errlen, "%s '%s': %s", what, *path, strerror(e));
		free(r);
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		seterr(err, errlen, "%s '%s': %s", what, *path, strerror(ENOTDIR));
		free(r);
		return -ENOTDIR;
	}
	free(*path);
	*path = r;
	return 0;
}

int config_check_paths(struct efs_config *cfg, char *err, size_t errlen)
{
	char *cd;
	int r;

	r = resolve_dir("SOURCE", &cfg->source, err, errlen);
	if (r)
		return r;
	r = resolve_dir("MOUNTPOINT", &cfg->mountpoint, err, errlen);
	if (r)
		return r;
	if (path_within(cfg->mountpoint, cfg->source)) {
		seterr(err, errlen, "MOUNTPOINT '%s' is inside SOURCE '%s'", cfg->mountpoint,
		       cfg->source);
		return -EINVAL;
	}
	if (path_within(cfg->source, cfg->mountpoint)) {
		seterr(err, errlen, "SOURCE '%s' is inside MOUNTPOINT '%s'", cfg->source,
		       cfg->mountpoint);
		return -EINVAL;
	}
	cd = resolve_parent(cfg->cache_dir);
	if (!cd) {
		int e = errno;
		seterr(err, errlen, "cache_dir '%s': %s", cfg->cache_dir, strerror(e));
		return -e;
	}
	free(cfg->cache_dir);
	cfg->cache_dir = cd;
	if (path_within(cd, cfg->source)) {
		seterr(err, errlen, "cache_dir '%s' is inside SOURCE '%s'", cd, cfg->source);
		return -EINVAL;
	}
	if (path_within(cd, cfg->mountpoint)) {
		seterr(err, errlen, "cache_dir '%s' is inside MOUNTPOINT '%s'", cd, cfg->mountpoint);
		return -EINVAL;
	}
	return 0;
}
