/* evict.h - space accounting and least-recently-used eviction.
 *
 * Every record of the cache (a file's metadata and data in cache_dir) is a
 * node on one LRU list with the bytes it occupies; the cache keeps the
 * order of chunks within a record itself.  Before a chunk is written,
 * evict_reserve() makes room: it takes bytes from the cold end until usage +
 * bytes <= cache_size and the file system keeps cache_min_free free, or
 * says -ENOSPC.
 *
 * Eviction has two phases, so that no file I/O happens under the LRU
 * mutex: the cache's `pick` callback, called with the mutex held, decides
 * what goes (a whole record or some of its chunks), takes those bytes off
 * the node (evict_shrink_locked, evict_del_locked) and notes the work in
 * the caller's batch; the `reap` callback then does that work (unlink,
 * hole punch) with no lock of evict.c held.  Bytes picked but not yet
 * reaped still count against both limits (they are still on disk); the
 * reservation that picked them goes on once its reap is done.
 *
 * A node may be held (evict_hold): it keeps its bytes in the usage but
 * leaves the list, so eviction never walks it (a record the kernel reads
 * through passthrough).
 *
 * Lock order: a cache entry's lock may be held when calling the functions
 * without _locked (they take the LRU mutex inside).  pick is called with
 * the LRU mutex held and must only trylock entries.
 */
#ifndef EFS_EVICT_H
#define EFS_EVICT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "stats.h"
#include "store.h"

struct lru_node {
	struct lru_node *prev, *next; /* protected by the LRU mutex */
	uint64_t bytes;               /* accounted size; protected by the LRU mutex */
	bool linked;                  /* on the list; protected by the LRU mutex */
	bool held;                    /* off the list, bytes still counted; LRU mutex */
};

/* Take up to `need` bytes off node n (the LRU mutex is held): a return > 0
 * is what was taken (the callback took it off with evict_shrink_locked or
 * evict_del_locked), 0 that nothing of n can go now (n may have been moved
 * to the hot end with evict_touch_locked so it is not walked again), and
 * -ENOBUFS that the batch is full (nothing taken). */
typedef int64_t (*evict_pick_fn)(struct lru_node *n, uint64_t need, void *batch, void *arg);
/* Do the work noted in batch and empty it; no LRU mutex held. */
typedef void (*evict_reap_fn)(void *batch, void *arg);

struct evict;

int evict_new(struct evict **out, const struct efs_config *cfg, struct store *store,
	      struct efs_stats *stats, evict_pick_fn pick, evict_reap_fn reap, void *arg);
void evict_free(struct evict *ev);

/* Put a node at the hot end (or the cold end), with bytes counted now. */
void evict_add(struct evict *ev, struct lru_node *n, uint64_t bytes);
void evict_add_cold(struct evict *ev, struct lru_node *n, uint64_t bytes);
/* A node grows by bytes (a chunk stored): reserved bytes move from the
 * reservation into the node.  A node off the list (not held) goes to the
 * hot end. */
void evict_grow(struct evict *ev, struct lru_node *n, uint64_t bytes, bool reserved);
/* A node shrinks by bytes (a chunk dropped outside eviction). */
void evict_shrink(struct evict *ev, struct lru_node *n, uint64_t bytes);
void evict_touch(struct evict *ev, struct lru_node *n);
/* Take the node off the list and its bytes out of the usage. */
void evict_del(struct evict *ev, struct lru_node *n);
/* Off the list while held, its bytes still counted; back at the hot end. */
void evict_hold(struct evict *ev, struct lru_node *n);
void evict_unhold(struct evict *ev, struct lru_node *n);

/* The LRU mutex itself: the cache's table writes rec->e under it, so that
 * pick can trust rec->e (cache_int.h).  Nothing else is called meanwhile
 * but the _locked functions. */
void evict_lock(struct evict *ev);
void evict_unlock(struct evict *ev);

/* For pick (LRU mutex held). */
void evict_shrink_locked(struct evict *ev, struct lru_node *n, uint64_t bytes);
void evict_del_locked(struct evict *ev, struct lru_node *n);
void evict_touch_locked(struct evict *ev, struct lru_node *n);

/* Make room for bytes and reserve them; batch is the caller's, handed to
 * pick and reap.  0; -ENOSPC when the limits cannot be met even after
 * evicting everything evictable; -EAGAIN before the startup index is
 * complete (the usage is not known yet: the caller stores nothing, and
 * never waits for the index). */
int evict_reserve(struct evict *ev, uint64_t bytes, void *batch);
/* Give back a reservation that was not used. */
void evict_unreserve(struct evict *ev, uint64_t bytes);

/* The startup index is complete: reservations may be decided. */
void evict_set_ready(struct evict *ev);
bool evict_ready(struct evict *ev);
/* Evict until within the limits (the periodic sweep). */
void evict_sweep(struct evict *ev, void *batch);
/* Forget everything (cache_dir vanished): usage 0, list empty, holds gone. */
void evict_reset(struct evict *ev);

uint64_t evict_usage(struct evict *ev);
/* Does cache_dir's file system hold bytes more, beside the reservations,
 * while keeping cache_min_free free, without evicting anything?  (Work
 * that may be skipped, such as fetching ahead, asks before it begins.) */
bool evict_fs_room(struct evict *ev, uint64_t bytes);
uint64_t evict_limit(const struct evict *ev);

#endif
