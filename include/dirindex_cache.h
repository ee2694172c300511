/* dirindex_cache.h - the directory index's snapshots kept in the cache's
 * records (see dirindex_cache.c). */
#ifndef EFS_DIRINDEX_CACHE_H
#define EFS_DIRINDEX_CACHE_H

#include "cache.h"
#include "dirindex.h"

/* Store operations for dix_new that keep each snapshot as a blob of c:
 * checksummed, crash-safe, counted in cache_size, kept across restarts. */
void dirindex_cache_ops(struct cache *c, struct dix_store_ops *ops);

#endif
