/* dirindex_cache.c - where the directory index's snapshots persist: one
 * blob of the cache per directory (cache_blob.h), so that a snapshot is
 * written in the records' crash-safe order, checked against its chunks'
 * checksums when read, counted in cache_size and evicted by its LRU like
 * any record.  The blob's identity is the directory's as listed (inode
 * number, mtime, ctime) and its size the snapshot's; a blob whose identity
 * names another inode number is removed unread.  No state, no locks of
 * its own.
 */
#include "dirindex_cache.h"

#include <errno.h>
#include <stdlib.h>

#include "cache_blob.h"

#define BLOB_KIND "dirindex"

static int blob_load(void *arg, uint64_t dev, uint64_t ino, void **buf, size_t *len)
{
	struct cache *c = arg;
	struct store_identity id;
	struct store_key k;
	int r = cache_blob_key(c, BLOB_KIND, (dev_t)dev, ino, &k);

	if (r == 0)
		r = cache_blob_get(c, &k, &id, buf, len);
	if (r == 0 && id.ino != ino) {
		free(*buf);
		*buf = NULL;
		cache_blob_remove(c, &k);
		r = -ENOENT;
	}
	return r;
}

static int blob_save(void *arg, uint64_t dev, uint64_t ino, const struct dix_dir *d,
		     const void *buf, size_t len)
{
	struct cache *c = arg;
	const struct store_identity id = {
		.ino = ino,
		.size = len,
		.mtime_sec = d->mtime.tv_sec,
		.mtime_nsec = (uint32_t)d->mtime.tv_nsec,
		.ctime_sec = d->ctime.tv_sec,
		.ctime_nsec = (uint32_t)d->ctime.tv_nsec,
	};
	struct store_key k;
	int r = cache_blob_key(c, BLOB_KIND, (dev_t)dev, ino, &k);

	return r < 0 ? r : cache_blob_put(c, &k, &id, buf, len);
}

static void blob_remove(void *arg, uint64_t dev, uint64_t ino)
{
	struct cache *c = arg;
	struct store_key k;

	if (cache_blob_key(c, BLOB_KIND, (dev_t)dev, ino, &k) == 0)
		cache_blob_remove(c, &k);
}

bool dirindex_cache_has(struct cache *c, uint64_t dev, uint64_t ino)
{
	struct store_key k;

	return cache_blob_key(c, BLOB_KIND, (dev_t)dev, ino, &k) == 0 && cache_blob_known(c, &k);
}

void dirindex_cache_ops(struct cache *c, struct dix_store_ops *ops)
{
	*ops = (struct dix_store_ops){
		.load = blob_load,
		.save = blob_save,
		.remove = blob_remove,
		.arg = c,
	};
}
