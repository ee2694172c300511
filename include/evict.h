/* evict.h - space accounting and least-recently-used eviction.
 *
 * Every cached chunk is a node on one LRU list with the bytes it occupies.
 * Before a chunk is written, evict_reserve() makes room: it evicts from the
 * cold end until usage + bytes <= cache_size and the file system keeps
 * cache_min_free free, or says -ENOSPC.  Eviction itself is done by a
 * callback of the cache, which may refuse a busy chunk (-EBUSY).
 *
 * Lock order: a cache entry's lock may be held when calling evict_add,
 * evict_touch and evict_del (they take the LRU lock inside).  The drop
 * callback is called with the LRU lock held and must only trylock entries.
 */
#ifndef EFS_EVICT_H
#define EFS_EVICT_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "stats.h"
#include "store.h"

struct lru_node {
	struct lru_node *prev, *next; /* protected by the LRU lock */
	uint64_t bytes;               /* accounted size; protected by the LRU lock */
	bool linked;                  /* protected by the LRU lock */
};

/* Drop the chunk of node; return the bytes freed, or -EBUSY to skip it.
 * Called with the LRU lock held; must call evict_unlink_locked(node). */
typedef int64_t (*evict_drop_fn)(struct lru_node *node, void *arg);

struct evict;

int evict_new(struct evict **out, const struct efs_config *cfg, struct store *store,
	      struct efs_stats *stats, evict_drop_fn drop, void *arg);
void evict_free(struct evict *ev);

/* Put a node at the hot end, accounting bytes (already reserved or found on
 * disk at startup: then `reserved` is false and usage grows now). */
void evict_add(struct evict *ev, struct lru_node *n, uint64_t bytes, bool reserved);
/* Same, at the cold end: for chunks found on disk by the startup scan. */
void evict_add_cold(struct evict *ev, struct lru_node *n, uint64_t bytes);
void evict_touch(struct evict *ev, struct lru_node *n);
/* Unlink a node and stop accounting its bytes. */
void evict_del(struct evict *ev, struct lru_node *n);
void evict_unlink_locked(struct evict *ev, struct lru_node *n);

/* Account fixed overhead (metadata files) found or created. */
void evict_account(struct evict *ev, int64_t delta);

/* Make room for bytes and reserve them.  0, or -ENOSPC when the limits
 * cannot be met even after evicting everything evictable. */
int evict_reserve(struct evict *ev, uint64_t bytes);
/* Give back a reservation that was not used. */
void evict_unreserve(struct evict *ev, uint64_t bytes);

/* Wait until the startup index is complete before the first reservation. */
void evict_set_ready(struct evict *ev);
/* Evict until within the limits (the periodic sweep). */
void evict_sweep(struct evict *ev);
/* Forget everything (cache_dir vanished): usage 0, list empty. */
void evict_reset(struct evict *ev);

uint64_t evict_usage(struct evict *ev);
uint64_t evict_limit(const struct evict *ev);

#endif
