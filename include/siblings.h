/* siblings.h - a directory's small files fetched ahead when one of them is
 * opened cold.
 *
 * A Python import or a node require opens a package's files one after the
 * other, each at the source's latency.  When an open finds no record of a
 * small file, its directory is listed once (per window) and the other small
 * regular files the cache has no record of are fetched whole, in parallel,
 * by a pool of their own, bounded in files and bytes.  Nothing here delays
 * a demand open or read: the cache claims nothing while a sibling is read
 * (cache_fill), the pool's threads and queue are not the readahead's, and
 * chunk buffers are taken only while the pool is under its budget.
 */
#ifndef EFS_SIBLINGS_H
#define EFS_SIBLINGS_H

#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "stats.h"

struct cache;
struct sib;

/* A file larger than this neither starts a burst nor is fetched by one. */
#define SIB_MAX_FILE (1ULL << 20)
/* Bytes fetched ahead by one burst (one directory), at most. */
#define SIB_MAX_BYTES (8ULL << 20)
/* A directory is listed at most once per this many seconds. */
#define SIB_WINDOW_S 60
/* Bursts in flight at once, each holding one fd of its directory. */
#define SIB_MAX_DIRS 8

/* The pool for cache c: cfg->prefetch workers (none, and every call a
 * no-op, when cfg->siblings or cfg->prefetch is 0).  0 or -errno. */
int sib_new(struct sib **out, const struct efs_config *cfg, struct cache *c,
	    struct efs_stats *stats);
/* The small regular files of directory (dev, dir_ino) from the daemon's
 * own listing of it (the directory index, fsops_index.c: a snapshot it
 * has, or one it makes now), so that the burst's listing serves the index
 * too: n names, each NUL-terminated, one after the other in names, and
 * their inode numbers in ino, both malloc'd (the burst frees them). */
struct sib_names {
	unsigned n;
	uint64_t *ino;
	char *names;
};
/* Returns 0 with *out filled, or -ENOENT (none could be had: the burst
 * lists the source itself).  Called on a pool worker, never with s's lock
 * held. */
typedef int (*sib_lister_fn)(void *arg, dev_t dev, uint64_t dir_ino, unsigned max,
			     struct sib_names *out);
/* Set before sib_start. */
void sib_set_lister(struct sib *s, sib_lister_fn fn, void *arg);
/* Bring directory (dev, dir_ino)'s index snapshot into memory from
 * cache_dir (the directory index, fsops_index.c); called on a pool worker,
 * never with s's lock held. */
typedef void (*sib_loader_fn)(void *arg, dev_t dev, uint64_t dir_ino);
/* Set before sib_start. */
void sib_set_loader(struct sib *s, sib_loader_fn fn, void *arg);
/* Start the workers (after daemonizing).  0 or -errno. */
int sib_start(struct sib *s);
/* Stop the workers; jobs not run are dropped.  Before the cache is freed.
 * s may be NULL. */
void sib_free(struct sib *s);
/* The file `name` (size bytes) of the directory whose O_PATH fd is dirfd,
 * (dev, dir_ino) its identity, was opened and had no record: queue the
 * directory's other small files, unless the file is not small, the
 * directory had its burst within the window, or too many are in flight.
 * dirfd is not consumed (a dup is kept).  Never waits for the source. */
void sib_cold_open(struct sib *s, int dirfd, dev_t dev, uint64_t dir_ino, const char *name,
		   uint64_t size);
/* The directory (dev, dir_ino) was listed from its index snapshot, and
 * ino[0..n) are its small regular files the cache has records of: read
 * (at most cfg->siblings of) those records back into the page cache on
 * the pool, in case the page cache lost them (cache_read_ahead); and
 * sub[0..nsub) are its subdirectories whose snapshots are not in memory:
 * load (at most cfg->siblings of) them on the pool (the loader), as a walk
 * or an import lists them next.  Neither if the directory's were within
 * the window.  Never waits for the disk or the source. */
void sib_listed(struct sib *s, dev_t dev, uint64_t dir_ino, const uint64_t *ino, unsigned n,
		const uint64_t *sub, unsigned nsub);
/* Wait until every queued job has run (tests, benchmarks). */
void sib_drain(struct sib *s);

#endif
