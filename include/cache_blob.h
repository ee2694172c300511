/* cache_blob.h - whole records written at once, for modules above the
 * cache: the directory index's snapshots (dirindex.h, dirindex_cache.h).
 *
 * A blob is a record like any file's (store.h): a header with an identity,
 * its bytes in checksummed chunks, written in the records' crash-safe order
 * (data, then slot), counted in cache_size, evicted whole by the LRU,
 * re-hashed by `efscachectl verify` and found by the startup index.  Only
 * its key differs: a blob of a directory index is keyed by a kind tag and
 * the directory, so it never meets a file's record.
 *
 * Locks: each call takes the record's entry mutex (cache_int.h) and never
 * holds it while writing, reading or hashing chunks (the entry is marked
 * "creating", which eviction skips and other users wait for).
 */
#ifndef EFS_CACHE_BLOB_H
#define EFS_CACHE_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cache.h"
#include "store.h"

/* Blobs larger than this are not kept (the largest directory snapshot,
 * DIX_MAX_BYTES, fits). */
#define CACHE_BLOB_MAX (32u << 20)

/* The key of the blob of kind `kind` (a short tag, e.g. "dirindex") for the
 * source object (dev, ino): distinct from every file's key.  0 or -errno. */
int cache_blob_key(struct cache *c, const char *kind, dev_t dev, uint64_t ino,
		   struct store_key *k);
/* Keep buf (len bytes, len == id->size) as the whole content of record k,
 * replacing what k held.  0; -EAGAIN before the startup index is complete;
 * -ENOSPC, -EBUSY (cache_dir lost, or k in use), -errno of the store. */
int cache_blob_put(struct cache *c, const struct store_key *k, const struct store_identity *id,
		   const void *buf, size_t len);
/* The whole content of record k, checked against its chunks' checksums,
 * into a malloc'd *buf; *id is the identity it was stored with.  0,
 * -ENOENT (none, or incomplete), -EBADMSG (a chunk failed its checksum:
 * the record is removed), -errno. */
int cache_blob_get(struct cache *c, const struct store_key *k, struct store_identity *id,
		   void **buf, size_t *len);
/* Remove record k if there is one. */
void cache_blob_remove(struct cache *c, const struct store_key *k);
/* Does the cache's table know record k (no cache_dir access; false for
 * all until the startup index has seen it)? */
bool cache_blob_known(struct cache *c, const struct store_key *k);

#endif
