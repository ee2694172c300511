/* stats.h - the daemon's counters.
 *
 * Lock-free: each counter is a relaxed atomic.  Formatted as "name value"
 * lines for `efscachectl stats` (read through the user.efscache.stats xattr
 * of the mountpoint).
 */
#ifndef EFS_STATS_H
#define EFS_STATS_H

#include <stddef.h>
#include <stdint.h>

#define STATS_LIST(X)                                                                              \
	X(reads, "read requests served")                                                           \
	X(hits, "chunk reads served from the cache")                                               \
	X(misses, "chunk reads that had to fetch from the source")                                 \
	X(fetch_waits, "readers that waited for another reader's fetch")                           \
	X(bytes_from_cache, "bytes served from the cache")                                         \
	X(bytes_from_source, "bytes fetched from the source")                                      \
	X(bytes_bypassed, "bytes read from the source without caching")                            \
	X(chunks_stored, "chunks written to the cache")                                            \
	X(checksum_mismatches, "cached chunks that failed verification and were refetched")        \
	X(chunks_verified, "cached chunks verified against their checksum")                        \
	X(evictions, "chunks evicted to respect cache_size/cache_min_free")                        \
	X(evicted_bytes, "bytes evicted")                                                          \
	X(validations, "opens that checked the source's identity")                                 \
	X(stale_dropped, "cache entries dropped because the source changed")                       \
	X(fallbacks, "chunks served from the source because the cache could not take them")       \
	X(cache_enospc, "cache writes that hit ENOSPC or the space limits")                        \
	X(cache_io_errors, "cache reads/writes that failed with an I/O error")                     \
	X(cache_dir_recreated, "times cache_dir vanished and was recreated")                       \
	X(source_errors, "source reads that failed (returned to the application)")                 \
	X(prefetched_chunks, "chunks fetched ahead of the reader")                                 \
	X(prefetch_unused_bytes, "prefetched bytes evicted or dropped before any read")

enum stat_id {
#define X(name, help) ST_##name,
	STATS_LIST(X)
#undef X
	ST__COUNT
};

struct efs_stats {
	uint64_t v[ST__COUNT]; /* atomic, relaxed */
};

static inline void stats_add(struct efs_stats *s, enum stat_id id, uint64_t n)
{
	__atomic_fetch_add(&s->v[id], n, __ATOMIC_RELAXED);
}

static inline uint64_t stats_get(const struct efs_stats *s, enum stat_id id)
{
	return __atomic_load_n(&s->v[id], __ATOMIC_RELAXED);
}

const char *stats_name(enum stat_id id);
const char *stats_help(enum stat_id id);

/* Append "name value\n" for every counter to buf; returns the length that
 * was needed (like snprintf). */
size_t stats_format(const struct efs_stats *s, char *buf, size_t len);

#endif
