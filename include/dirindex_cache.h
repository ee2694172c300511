/* dirindex_cache.h - the directory index's snapshots kept in the cache's
 * records (see dirindex_cache.c). */
#ifndef EFS_DIRINDEX_CACHE_H
#define EFS_DIRINDEX_CACHE_H

#include "cache.h"
#include "dirindex.h"

/* Store operations for dix_new that keep each snapshot as a blob of c:
 * checksummed, crash-safe, counted in cache_size, kept across restarts. */
void dirindex_cache_ops(struct cache *c, struct dix_store_ops *ops);
/* Does c hold a snapshot of directory (dev, ino), by its table (no
 * cache_dir access)? */
bool dirindex_cache_has(struct cache *c, uint64_t dev, uint64_t ino);

#endif
