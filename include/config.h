/* config.h - command line and -o option parsing and validation.
 *
 * config_parse() turns argv into a struct efs_config without touching the
 * file system or libfuse, so it can be unit-tested and fuzzed.  Options that
 * are ours are validated here; the rest are handed to libfuse unchanged (it
 * refuses unknown ones before anything is mounted).  config_check_paths()
 * then resolves SOURCE, MOUNTPOINT and cache_dir and checks how they relate.
 */
#ifndef EFS_CONFIG_H
#define EFS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum verify_mode { VERIFY_ONCE, VERIFY_ALWAYS, VERIFY_NEVER };

#define CONFIG_TTL_NEVER (-1)

#define CONFIG_DEFAULT_CACHE_DIR "/tmp/efscache"
#define CONFIG_DEFAULT_CACHE_SIZE (10ULL << 30)
#define CONFIG_DEFAULT_MIN_FREE_PCT 10
#define CONFIG_DEFAULT_CHUNK_SIZE (1ULL << 20)
/* Directory index snapshots kept in memory once unused (dirindex.h). */
#define CONFIG_DEFAULT_INDEX_MEM (8ULL << 20)
#define CONFIG_MAX_INDEX_MEM (1ULL << 30)
#define CONFIG_DEFAULT_PREFETCH 8
#define CONFIG_DEFAULT_MAX_THREADS 16
#define CONFIG_MIN_CHUNK_SIZE (64ULL << 10)
#define CONFIG_MAX_CHUNK_SIZE (64ULL << 20)
#define CONFIG_MAX_PREFETCH 64
#define CONFIG_DEFAULT_SIBLINGS 64
#define CONFIG_MAX_SIBLINGS 1024
/* Attribute cache windows, seconds: the Linux NFS client's defaults, which
 * EFS's recommended mount options keep. */
#define CONFIG_DEFAULT_ACREGMIN 3
#define CONFIG_DEFAULT_ACREGMAX 60
#define CONFIG_DEFAULT_ACDIRMIN 30
#define CONFIG_DEFAULT_ACDIRMAX 60
#define CONFIG_MAX_SECONDS 315360000 /* ten years */

struct efs_config {
	char *source;        /* as given; absolute after config_check_paths() */
	char *mountpoint;    /* as given; absolute after config_check_paths() */
	char *cache_dir;     /* absolute after config_check_paths() */
	uint64_t cache_size; /* bytes */
	uint64_t min_free_bytes; /* used when min_free_pct < 0 */
	int min_free_pct;        /* 0..99, or -1 when given as a SIZE */
	uint64_t index_mem;      /* bytes of unused index snapshots kept loaded */
	int64_t ttl;             /* seconds, or CONFIG_TTL_NEVER */
	uint32_t acregmin, acregmax, acdirmin, acdirmax; /* seconds (meta.h) */
	int lookupcache;         /* enum lookupcache_mode (meta.h) */
	bool nocto;              /* opens trust attributes inside their window */
	bool immutable;          /* -o immutable: ro, ttl=never, and the kernel
				  * opens files and directories without asking
				  * (docs/design.md, "Immutable trees") */
	bool ttl_given, rw_given; /* what -o immutable may not be combined with */
	uint64_t chunk_size;     /* power of two */
	unsigned prefetch;       /* parallel fetch workers */
	unsigned siblings;       /* small files of a directory fetched ahead when
				  * one is opened cold; 0 = off (siblings.h) */
	unsigned max_threads;    /* FUSE worker threads */
	enum verify_mode verify;
	bool passthrough;        /* -o passthrough=auto (true) or off */
	bool ro;
	bool foreground;
	bool debug;
	bool allow_other;
	bool show_help;
	bool show_version;
	char *metrics_host;      /* -o metrics: IP literal, NULL = no endpoint */
	unsigned metrics_port;   /* 1..65535 when metrics_host is set */
	double price_per_gb;     /* USD per GB read from the source (metrics) */
	bool require_source_mount; /* refuse a SOURCE that is not a mount point */
	char *source_fstype;     /* ... or not of this type ("efs" given as "nfs4"); NULL: any */
	/* Options for libfuse, comma-joined without "-o"; never NULL after parse. */
	char *fuse_opts;
};

/* Fill *cfg from argv.  Returns 0, or -EINVAL with a one-line reason naming
 * the option and value in err (no trailing newline).  On success the caller
 * owns cfg and releases it with config_free(). */
int config_parse(struct efs_config *cfg, int argc, char *const argv[], char *err, size_t errlen);

/* Resolve and check SOURCE, MOUNTPOINT and cache_dir: both must be
 * directories, neither inside the other, cache_dir inside neither.  Returns 0
 * or -errno with the reason in err. */
int config_check_paths(struct efs_config *cfg, char *err, size_t errlen);

void config_free(struct efs_config *cfg);

/* "10G" -> 10737418240.  Suffixes K M G T are powers of 1024.  Returns 0 or
 * -EINVAL (-ERANGE on overflow), reason in err. */
int config_parse_size(const char *s, uint64_t *out, char *err, size_t errlen);

/* Format bytes as "4M", "1.5G" ... into buf; returns buf. */
const char *config_fmt_size(uint64_t bytes, char *buf, size_t len);

/* The usage text printed by --help, in parts (NULL-terminated). */
extern const char *const config_usage[];

#endif
