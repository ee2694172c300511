/* test_config.c - option parsing and validation, no mount. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "meta.h"

#define ARGV(...) ((char *const[]){"efscache", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((const char *[]){"efscache", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(cfg, err, ...) config_parse(cfg, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), err, sizeof(err))

/* Parsing must fail and the message must mention every needle. */
static void expect_bad(const char *opt, const char *needle1, const char *needle2)
{
	struct efs_config cfg;
	char err[256] = "";
	int r = PARSE(&cfg, err, "/src", "/mnt", "-o", (char *)opt);

	CHECK(r == -EINVAL);
	CHECK_STR_CONTAINS(err, needle1);
	if (needle2)
		CHECK_STR_CONTAINS(err, needle2);
}

static void test_defaults(void)
{
	struct efs_config cfg;
	char err[256];

	CHECK(PARSE(&cfg, err, "/src", "/mnt") == 0);
	CHECK(!strcmp(cfg.source, "/src") && !strcmp(cfg.mountpoint, "/mnt"));
	CHECK(!strcmp(cfg.cache_dir, "/tmp/efscache"));
	CHECK(cfg.cache_size == 10ULL << 30);
	CHECK(cfg.min_free_pct == 10);
	CHECK(cfg.index_mem == 8ULL << 20);
	CHECK(cfg.ttl == 0);
	CHECK(cfg.verify == VERIFY_ONCE);
	CHECK(cfg.passthrough);
	CHECK(cfg.chunk_size >= (1u << 20) && cfg.chunk_size <= (8u << 20));
	CHECK(!cfg.ro && !cfg.foreground && !cfg.debug);
	CHECK(cfg.fuse_opts && cfg.fuse_opts[0] == '\0');
	config_free(&cfg);
}

static void test_good_values(void)
{
	struct efs_config cfg;
	char err[256];

	CHECK(PARSE(&cfg, err, "-f", "/src", "-o", "cache_size=512M,ttl=never,verify=always",
		    "/mnt", "-ochunk_size=1M,prefetch=0,cache_min_free=2G,cache_dir=/var/c,ro") ==
	      0);
	CHECK(cfg.foreground);
	CHECK(cfg.cache_size == 512ULL << 20);
	CHECK(cfg.ttl == CONFIG_TTL_NEVER);
	CHECK(cfg.verify == VERIFY_ALWAYS);
	CHECK(cfg.chunk_size == 1u << 20);
	CHECK(cfg.prefetch == 0);
	CHECK(cfg.min_free_pct == -1 && cfg.min_free_bytes == 2ULL << 30);
	CHECK(!strcmp(cfg.cache_dir, "/var/c"));
	CHECK(cfg.ro);
	CHECK(!strcmp(cfg.fuse_opts, "ro"));
	config_free(&cfg);

	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "ttl=30,verify=never,cache_min_free=0%") == 0);
	CHECK(cfg.ttl == 30 && cfg.verify == VERIFY_NEVER && cfg.min_free_pct == 0);
	config_free(&cfg);

	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "index_mem=0") == 0 && cfg.index_mem == 0);
	config_free(&cfg);
	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "index_mem=512K") == 0 &&
	      cfg.index_mem == 512ULL << 10);
	config_free(&cfg);

	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "passthrough=off") == 0);
	CHECK(!cfg.passthrough);
	CHECK(cfg.fuse_opts[0] == '\0'); /* ours, not handed to libfuse */
	config_free(&cfg);
	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "passthrough=off,passthrough=auto") == 0);
	CHECK(cfg.passthrough);
	config_free(&cfg);
}

static void test_passthrough_and_allow_other(void)
{
	struct efs_config cfg;
	char err[256];

	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "fsname=models,allow_other,,nodev") == 0);
	CHECK(!strcmp(cfg.fuse_opts, "fsname=models,allow_other,nodev,default_permissions"));
	CHECK(cfg.allow_other);
	config_free(&cfg);

	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "default_permissions,allow_other") == 0);
	CHECK(!strcmp(cfg.fuse_opts, "default_permissions,allow_other"));
	config_free(&cfg);

	CHECK(PARSE(&cfg, err, "-d", "/s", "/m") == 0);
	CHECK(cfg.debug && cfg.foreground);
	config_free(&cfg);
}

static void test_bad_values(void)
{
	expect_bad("index_mem=", "index_mem", "needs a value");
	expect_bad("index_mem=4Q", "index_mem", "4Q");
	expect_bad("index_mem=2G", "index_mem", "at most 1G");
	expect_bad("cache_size=10X", "cache_size", "10X");
	expect_bad("cache_size=0", "cache_size", "greater than 0");
	expect_bad("cache_size=", "cache_size", "needs a value");
	expect_bad("cache_size=99999999999999999999", "cache_size", "too large");
	expect_bad("cache_size=16777216T", "cache_size", "too large");
	expect_bad("cache_size=1.5G", "cache_size", "1.5G");
	expect_bad("cache_size=512K", "cache_size", "smaller than chunk_size");
	expect_bad("chunk_size=3M", "chunk_size", "power of two");
	expect_bad("chunk_size=1K", "chunk_size", "64K");
	expect_bad("chunk_size=128M", "chunk_size", "64M");
	expect_bad("prefetch=-1", "prefetch", "-1");
	expect_bad("prefetch=65", "prefetch", "0 to 64");
	expect_bad("verify=sometimes", "verify", "once, always or never");
	expect_bad("passthrough=on", "passthrough", "auto or off");
	expect_bad("passthrough", "passthrough", "passthrough");
	expect_bad("ttl=-5", "ttl", "-5");
	expect_bad("ttl=abc", "ttl", "never");
	expect_bad("cache_min_free=150%", "cache_min_free", "0 to 99");
	expect_bad("cache_min_free=%", "cache_min_free", "%");
	expect_bad("cache_min_free=lots", "cache_min_free", "lots");
	expect_bad("cache_dir=relative/path", "cache_dir", "absolute");
	expect_bad("max_threads=0", "max_threads", "1 to 1024");
	expect_bad("ro=1", "ro", "no value");
	expect_bad("actimeo=-1", "actimeo", "seconds");
	expect_bad("acregmin=3s", "acregmin", "3s");
	expect_bad("acdirmax=", "acdirmax", "needs a value");
	expect_bad("lookupcache=some", "lookupcache", "all, positive or none");
	expect_bad("nocto=1", "nocto", "no value");
	expect_bad("strict=yes", "strict", "no value");
}

static void test_metadata_options(void)
{
	struct efs_config cfg;
	char err[256];

	CHECK(PARSE(&cfg, err, "/s", "/m") == 0);
	CHECK(cfg.acregmin == 3 && cfg.acregmax == 60 && cfg.acdirmin == 30 && cfg.acdirmax == 60);
	CHECK(cfg.lookupcache == LOOKUPCACHE_ALL && !cfg.nocto);
	config_free(&cfg);

	/* Later options win, as in mount(8). */
	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "actimeo=7,acdirmax=90,lookupcache=positive,nocto") ==
	      0);
	CHECK(cfg.acregmin == 7 && cfg.acregmax == 7 && cfg.acdirmin == 7 && cfg.acdirmax == 90);
	CHECK(cfg.lookupcache == LOOKUPCACHE_POSITIVE && cfg.nocto);
	config_free(&cfg);

	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "nocto,strict") == 0);
	CHECK(cfg.acregmin == 0 && cfg.acregmax == 0 && cfg.acdirmin == 0 && cfg.acdirmax == 0);
	CHECK(cfg.lookupcache == LOOKUPCACHE_NONE && !cfg.nocto);
	config_free(&cfg);

	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "lookupcache=none,cto") == 0);
	CHECK(cfg.lookupcache == LOOKUPCACHE_NONE && !cfg.nocto);
	config_free(&cfg);
}

static void test_bad_argv(void)
{
	struct efs_config cfg;
	char err[256];

	CHECK(config_parse(&cfg, 1, ARGV("x") , err, sizeof(err)) == -EINVAL);
	CHECK_STR_CONTAINS(err, "missing SOURCE");
	CHECK(PARSE(&cfg, err, "/s") == -EINVAL);
	CHECK_STR_CONTAINS(err, "missing MOUNTPOINT");
	CHECK(PARSE(&cfg, err, "/s", "/m", "/x") == -EINVAL);
	CHECK_STR_CONTAINS(err, "'/x'");
	CHECK(PARSE(&cfg, err, "/s", "/m", "--frobnicate") == -EINVAL);
	CHECK_STR_CONTAINS(err, "--frobnicate");
	CHECK(PARSE(&cfg, err, "/s", "/m", "-o") == -EINVAL);
	CHECK_STR_CONTAINS(err, "-o");
	CHECK(PARSE(&cfg, err, "--help") == 0 && cfg.show_help);
	config_free(&cfg);
	CHECK(PARSE(&cfg, err, "-V") == 0 && cfg.show_version);
	config_free(&cfg);
}

static void test_sizes(void)
{
	char err[128], buf[32];
	uint64_t v;

	CHECK(config_parse_size("0", &v, err, sizeof(err)) == 0 && v == 0);
	CHECK(config_parse_size("4k", &v, err, sizeof(err)) == 0 && v == 4096);
	CHECK(config_parse_size("3T", &v, err, sizeof(err)) == 0 && v == 3ULL << 40);
	CHECK(config_parse_size("18446744073709551615", &v, err, sizeof(err)) == 0 &&
	      v == UINT64_MAX);
	CHECK(config_parse_size("18446744073709551616", &v, err, sizeof(err)) == -ERANGE);
	CHECK(config_parse_size("", &v, err, sizeof(err)) == -EINVAL);
	CHECK(config_parse_size("G", &v, err, sizeof(err)) == -EINVAL);
	CHECK(config_parse_size("1GB", &v, err, sizeof(err)) == -EINVAL);
	CHECK(!strcmp(config_fmt_size(4ULL << 20, buf, sizeof(buf)), "4M"));
	CHECK(!strcmp(config_fmt_size(1536, buf, sizeof(buf)), "1536"));
	CHECK(!strcmp(config_fmt_size(10ULL << 30, buf, sizeof(buf)), "10G"));
}

static void test_paths(void)
{
	char tmpl[] = "/tmp/efs-test-config-XXXXXX", p[512], q[512], err[512];
	struct efs_config cfg;
	char *dir = mkdtemp(tmpl);

	CHECK(dir != NULL);
	if (!dir)
		return;
	snprintf(p, sizeof(p), "%s/src", dir);
	snprintf(q, sizeof(q), "%s/src/mnt", dir);
	CHECK(mkdir(p, 0755) == 0 && mkdir(q, 0755) == 0);

	/* MOUNTPOINT inside SOURCE. */
	CHECK(PARSE(&cfg, err, p, q) == 0);
	CHECK(config_check_paths(&cfg, err, sizeof(err)) == -EINVAL);
	CHECK_STR_CONTAINS(err, "inside SOURCE");
	config_free(&cfg);

	/* SOURCE inside MOUNTPOINT. */
	CHECK(PARSE(&cfg, err, q, p) == 0);
	CHECK(config_check_paths(&cfg, err, sizeof(err)) == -EINVAL);
	CHECK_STR_CONTAINS(err, "inside MOUNTPOINT");
	config_free(&cfg);

	/* Missing SOURCE names the path and the errno text. */
	snprintf(q, sizeof(q), "%s/nope", dir);
	CHECK(PARSE(&cfg, err, q, p) == 0);
	CHECK(config_check_paths(&cfg, err, sizeof(err)) == -ENOENT);
	CHECK_STR_CONTAINS(err, q);
	CHECK_STR_CONTAINS(err, "No such file");
	config_free(&cfg);

	/* cache_dir inside SOURCE, even when it does not exist yet. */
	snprintf(q, sizeof(q), "%s/mnt2", dir);
	CHECK(mkdir(q, 0755) == 0);
	{
		char opt[600];
		snprintf(opt, sizeof(opt), "cache_dir=%s/cachehere", p);
		CHECK(PARSE(&cfg, err, p, q, "-o", opt) == 0);
		CHECK(config_check_paths(&cfg, err, sizeof(err)) == -EINVAL);
		CHECK_STR_CONTAINS(err, "cache_dir");
		config_free(&cfg);
	}

	/* A good layout resolves to absolute paths. */
	CHECK(PARSE(&cfg, err, p, q, "-o", "cache_dir=/tmp/efs-test-config-cache") == 0);
	CHECK(config_check_paths(&cfg, err, sizeof(err)) == 0);
	CHECK(cfg.source[0] == '/' && cfg.mountpoint[0] == '/');
	config_free(&cfg);

	snprintf(q, sizeof(q), "%s/mnt2", dir);
	rmdir(q);
	snprintf(q, sizeof(q), "%s/src/mnt", dir);
	rmdir(q);
	rmdir(p);
	rmdir(dir);
}

static void test_metrics_options(void)
{
	struct efs_config cfg;
	char err[256];

	CHECK(PARSE(&cfg, err, "/src", "/mnt") == 0);
	CHECK(cfg.metrics_host == NULL); /* off by default */
	CHECK(cfg.price_per_gb < 0); /* no price unless given (metrics.h) */
	config_free(&cfg);
	CHECK(PARSE(&cfg, err, "/src", "/mnt", "-o", "metrics=9100,price_per_gb=0.25") == 0);
	CHECK(cfg.metrics_host && !strcmp(cfg.metrics_host, "127.0.0.1")); /* loopback */
	CHECK(cfg.metrics_port == 9100 && cfg.price_per_gb == 0.25);
	CHECK(!strstr(cfg.fuse_opts, "metrics"));
	config_free(&cfg);
	CHECK(PARSE(&cfg, err, "/src", "/mnt", "-o", "metrics=0.0.0.0:9101") == 0);
	CHECK(!strcmp(cfg.metrics_host, "0.0.0.0") && cfg.metrics_port == 9101);
	config_free(&cfg);
	CHECK(PARSE(&cfg, err, "/src", "/mnt", "-o", "metrics=[::1]:9102") == 0);
	CHECK(!strcmp(cfg.metrics_host, "::1") && cfg.metrics_port == 9102);
	config_free(&cfg);
	expect_bad("metrics=localhost:9100", "metrics", "not an IP address");
	expect_bad("metrics=0", "metrics", "1 to 65535");
	expect_bad("metrics=127.0.0.1:70000", "metrics", "1 to 65535");
	expect_bad("metrics=[::1]9100", "metrics", "[ADDR]:PORT");
	expect_bad("metrics", "metrics", NULL);
	expect_bad("price_per_gb=-1", "price_per_gb", "-1");
	expect_bad("price_per_gb=cheap", "price_per_gb", "USD");
}

static void test_require_source_mount(void)
{
	struct efs_config cfg;
	char err[256];

	CHECK(PARSE(&cfg, err, "/src", "/mnt") == 0);
	CHECK(!cfg.require_source_mount && !cfg.source_fstype); /* off by default */
	config_free(&cfg);
	CHECK(PARSE(&cfg, err, "/src", "/mnt", "-o", "require_source_mount") == 0);
	CHECK(cfg.require_source_mount && !cfg.source_fstype);
	CHECK(!strstr(cfg.fuse_opts, "require")); /* ours, not libfuse's */
	config_free(&cfg);
	CHECK(PARSE(&cfg, err, "/src", "/mnt", "-o", "require_source_mount=tmpfs") == 0);
	CHECK(cfg.require_source_mount && cfg.source_fstype &&
	      !strcmp(cfg.source_fstype, "tmpfs"));
	config_free(&cfg);
	/* mount -t efs makes an nfs4 mount: that is what mountinfo shows. */
	CHECK(PARSE(&cfg, err, "/src", "/mnt", "-o", "require_source_mount=efs") == 0);
	CHECK(cfg.source_fstype && !strcmp(cfg.source_fstype, "nfs4"));
	config_free(&cfg);
	CHECK(PARSE(&cfg, err, "/src", "/mnt", "-o", "require_source_mount=fuse.s3fs") == 0);
	CHECK(cfg.source_fstype && !strcmp(cfg.source_fstype, "fuse.s3fs"));
	config_free(&cfg);
	/* The last one given wins, also back to "any type". */
	CHECK(PARSE(&cfg, err, "/src", "/mnt", "-o", "require_source_mount=nfs4",
		    "-o", "require_source_mount") == 0);
	CHECK(cfg.require_source_mount && !cfg.source_fstype);
	config_free(&cfg);
	expect_bad("require_source_mount=", "require_source_mount", NULL);
	expect_bad("require_source_mount=nfs 4", "require_source_mount", "'nfs 4'");
	expect_bad("require_source_mount=a/b", "require_source_mount", "file system type");
	expect_bad("require_source_mount=abcdefghijklmnopqrstuvwxyz0123456", "require_source_mount",
		   "at most 31");
}

/* -o immutable: ro and ttl=never, refused with anything that says
 * otherwise; the metadata policy then has the kernel open without us. */
static void test_immutable(void)
{
	struct efs_config cfg;
	struct meta_policy p;
	char err[256];

	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "immutable") == 0);
	CHECK(cfg.immutable && cfg.ro && cfg.ttl == CONFIG_TTL_NEVER);
	CHECK(!strcmp(cfg.fuse_opts, "ro"));
	meta_policy_init(&p, &cfg);
	CHECK(p.immutable && p.no_open);
	config_free(&cfg);
	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "ro,ttl=never,immutable") == 0);
	CHECK(!strcmp(cfg.fuse_opts, "ro")); /* not twice */
	config_free(&cfg);
	/* ttl=never alone keeps the kernel asking at every open. */
	CHECK(PARSE(&cfg, err, "/s", "/m", "-o", "ttl=never") == 0);
	meta_policy_init(&p, &cfg);
	CHECK(p.immutable && !p.no_open && !cfg.ro);
	config_free(&cfg);
	expect_bad("immutable,ttl=60", "immutable", "ttl=60");
	expect_bad("ttl=0,immutable", "immutable", "ttl=0");
	expect_bad("immutable,rw", "immutable", "rw");
	expect_bad("immutable=1", "immutable", "no value");
}

int main(void)
{
	test_require_source_mount();
	test_immutable();
	test_metrics_options();
	test_defaults();
	test_good_values();
	test_passthrough_and_allow_other();
	test_bad_values();
	test_metadata_options();
	test_bad_argv();
	test_sizes();
	test_paths();
	return check_done("test_config");
}
