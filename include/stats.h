/* stats.h - the daemon's counters.
 *
 * Lock-free: each counter is a relaxed atomic.  stats_snapshot() copies
 * them into struct ctl_stats, which ctlproto.c formats as the "name value"
 * lines of `efscachectl stats` (the user.efscache.stats xattr of the
 * mountpoint); metrics.c renders the same lines as Prometheus text or JSON,
 * for efscachectl and for the daemon's HTTP endpoint.
 *
 * Three kinds, one list each:
 *   STATS_LIST    counters, only ever grow (Prometheus "counter").  The
 *                 source_* ones count requests made to SOURCE's file system
 *                 (its NFS client may still answer some from its own caches);
 *                 bytes_saved is kept by stats_snapshot() (below), not added to.
 *   STATS_GAUGES  current values that go up and down ("gauge")
 *   the fetch latency histogram: one count per STATS_FETCH_BOUNDS_US bucket
 *                 (not cumulative here; the text form is cumulative) and a
 *                 sum in microseconds.
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
	X(records_gone, "records removed because their file was deleted or replaced")              \
	X(fallbacks, "chunks served from the source because the cache could not take them")       \
	X(cache_enospc, "cache writes that hit ENOSPC or the space limits")                        \
	X(cache_io_errors, "cache reads/writes that failed with an I/O error")                     \
	X(cache_dir_recreated, "times cache_dir vanished and was recreated")                       \
	X(source_errors, "source reads that failed (returned to the application)")                 \
	X(prefetched_chunks, "chunks fetched ahead of the reader")                                 \
	X(prefetch_unused_bytes, "prefetched bytes evicted or dropped before any read")            \
	X(scatter_sweeps, "files fetched whole ahead of a reader that missed chunks out of order") \
	X(kept_hits, "reads served from a prefetched chunk still in memory (no cache file read)")  \
	X(pushed_bytes, "bytes of swept chunks put in the kernel's page cache ahead of the reader") \
	X(push_waits, "opens and truncates that waited for a push in flight (off a FUSE worker)")  \
	X(sibling_scans, "directories listed to fetch small files ahead of a cold open")          \
	X(sibling_files, "small files fetched whole ahead of their open")                         \
	X(sibling_bytes, "bytes of small files fetched ahead of their open")                      \
	X(record_readaheads, "cached records read into the page cache at a listing")               \
	X(bytes_served, "bytes returned to read requests (from cache or source)")                 \
	X(passthrough_opens, "opens served by kernel passthrough to the cache's data file")        \
	X(passthrough_refused, "opens refused because the file was open with passthrough")        \
	X(source_lookups, "name lookups sent to the source")                                       \
	X(source_getattrs, "attribute reads (stat) sent to the source")                            \
	X(source_opens, "opens of source files (to read, write or validate)")                      \
	X(source_readdirs, "directory listings opened on the source")                              \
	X(kernel_lookups, "LOOKUP requests from the kernel")                                       \
	X(kernel_getattrs, "GETATTR requests from the kernel")                                     \
	X(kernel_opens, "OPEN and OPENDIR requests from the kernel (none when immutable)")         \
	X(kernel_flushes, "FLUSH requests from the kernel (a close(2) that waits for us)")         \
	X(kernel_releases, "RELEASE and RELEASEDIR requests from the kernel")                      \
	X(kernel_readdirs, "READDIR and READDIRPLUS requests from the kernel")                     \
	X(index_lookups, "lookups answered from the directory index (found or absent)")            \
	X(index_getattrs, "getattrs answered from the directory index")                            \
	X(index_listings, "directory listings (READDIR requests) served from the index")           \
	X(index_builds, "directories listed from the source into the index")                       \
	X(index_checks, "directory index windows checked against the source (one stat)")           \
	X(bytes_saved, "bytes served that no source read was made for (a lower bound)")

#define STATS_GAUGES(X)                                                                            \
	X(open_files, "files and directories open through the mount")                              \
	X(sibling_pending, "listings and small files queued or being fetched or read back ahead")

/* Upper bounds (microseconds) of the fetch latency buckets; one more bucket
 * (+Inf) follows the last. */
#define STATS_FETCH_BOUNDS_US                                                                      \
	100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,     \
	    2500000, 10000000
#define STATS_FETCH_NBOUNDS 15

enum stat_id {
#define X(name, help) ST_##name,
	STATS_LIST(X)
	ST__NCOUNTERS, /* the first gauge has this id too */
	ST__GAUGE_BASE = ST__NCOUNTERS - 1,
	STATS_GAUGES(X)
#undef X
	ST__COUNT
};

struct efs_stats {
	uint64_t v[ST__COUNT]; /* atomic, relaxed */
	uint64_t fetch_hist[STATS_FETCH_NBOUNDS + 1]; /* atomic, relaxed; last is +Inf */
	uint64_t fetch_sum_us;                        /* atomic, relaxed */
};

static inline void stats_add(struct efs_stats *s, enum stat_id id, uint64_t n)
{
	__atomic_fetch_add(&s->v[id], n, __ATOMIC_RELAXED);
}

static inline uint64_t stats_get(const struct efs_stats *s, enum stat_id id)
{
	return __atomic_load_n(&s->v[id], __ATOMIC_RELAXED);
}

/* For gauges (ids from ST__NCOUNTERS on): add a negative amount. */
static inline void stats_sub(struct efs_stats *s, enum stat_id id, uint64_t n)
{
	__atomic_fetch_sub(&s->v[id], n, __ATOMIC_RELAXED);
}

/* CLOCK_MONOTONIC now, in microseconds: the start of a timed fetch. */
uint64_t stats_now_us(void);
/* Count one source fetch that started at start_us (from stats_now_us()). */
void stats_fetch_done(struct efs_stats *s, uint64_t start_us);

const char *stats_name(enum stat_id id);
const char *stats_help(enum stat_id id);

/* Copy the counters, gauges and the histogram (made cumulative) into the
 * stats query's struct (ctlproto.h), which formats them as text.
 *
 * It also moves bytes_saved up to bytes_served - bytes_from_source -
 * bytes_bypassed when that is higher (never down).  That difference dips
 * while prefetched chunks wait for their reader, so it cannot be a counter
 * itself; its running maximum can, and it never exceeds the bytes truly
 * served without a source read (each chunk fetched is counted in full when
 * fetched, each byte served once it is served).  It is sampled here: at every
 * stats query, scrape and systemd status line (every 10 s). */
struct ctl_stats;
void stats_snapshot(struct efs_stats *s, struct ctl_stats *out);

#endif
