/* cache_blob.c - whole records written at once (cache_blob.h): the
 * directory index's snapshots.
 *
 * A blob goes through the same entry and record as a file's data (the
 * table, the LRU, the store), by the rules of cache_int.h: the entry's
 * mutex orders it against eviction (which only trylocks, and skips an
 * entry that is `creating`), against a reaper of a condemned record and
 * against other users of the key; the chunks are written with no lock
 * held while the entry is `creating`.  A blob is never loaded for long: a
 * read loads the record, checks every chunk against its slot into memory
 * and unloads it again, so a blob costs a rec in memory, like any record
 * nobody uses.  Locks: e->mu only, in the order of cache_int.h.
 */
#include "cache_blob.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"
#include "checksum.h"
#include "log.h"

int cache_blob_key(struct cache *c, const char *kind, dev_t dev, uint64_t ino,
		   struct store_key *k)
{
	/* SOURCE's path, NUL, the kind, NUL, then the inode number and the
	 * device tag (0 on SOURCE's own file system, as for files): longer
	 * than any file key's input, so never one of them. */
	unsigned char buf[PATH_MAX + 1 + 32 + 1 + 16];
	size_t n = strlen(c->cfg->source), kn = strlen(kind), len;
	uint64_t tag = c->root_dev_known && dev == c->root_dev ? 0 : (uint64_t)dev, h[2];

	if (n >= PATH_MAX || kn == 0 || kn > 32)
		return -ENAMETOOLONG;
	memcpy(buf, c->cfg->source, n + 1);
	memcpy(buf + n + 1, kind, kn + 1);
	len = n + 1 + kn + 1;
	for (int i = 0; i < 8; i++)
		buf[len + i] = (unsigned char)(ino >> (8 * i));
	for (int i = 0; i < 8; i++)
		buf[len + 8 + i] = (unsigned char)(tag >> (8 * i));
	csum128(buf, len + 16, h);
	snprintf(k->hex, sizeof(k->hex), "%016llx%016llx", (unsigned long long)h[0],
		 (unsigned long long)h[1]);
	return 0;
}

/* Is the entry used by someone (a handle, a job, a reader, the kernel
 * through passthrough) right now?  e->mu held. */
static bool in_use_locked(struct cache_file *e)
{
	return e->opens || e->jobs || !entry_quiet(e) || pt_holds(&e->pt);
}

/* Write buf as the whole record of e's key.  The entry is ours (creating);
 * no lock held.  Returns 0 or -errno; on failure nothing of it stays. */
static int write_whole(struct cache *c, struct cache_file *e, const struct store_identity *id,
		       const void *buf, size_t len, uint64_t bytes)
{
	const uint32_t cs = (uint32_t)c->cfg->chunk_size;
	struct evict_batch batch = {0};
	struct store_file nf;
	int r;

	r = evict_reserve(c->ev, bytes, &batch);
	if (r < 0)
		return r;
	r = store_create(c->store, &e->key, id, cs, &nf);
	if (cache_no_fds(r)) {
		cache_out_of_fds(c, NULL, r);
		r = store_create(c->store, &e->key, id, cs, &nf);
	}
	for (uint32_t idx = 0; r == 0 && (uint64_t)idx * cs < len; idx++) {
		const char *p = (const char *)buf + (size_t)idx * cs;
		uint32_t n = store_chunk_len(&nf, idx);
		struct store_slot slot = {.hash = csum64(p, n), .len = n};

		/* Data, then its slot: the records' crash order (store.h). */
		r = store_write_chunk(&nf, idx, p, n, c->cfg->verify == VERIFY_NEVER);
		if (r == 0)
			r = store_set_slot(&nf, idx, &slot);
	}
	if (r == 0) {
		store_file_close(&nf);
		return 0;
	}
	if (nf.meta_fd >= 0 || nf.data_fd >= 0) {
		store_file_close(&nf);
		store_remove(c->store, &e->key);
	}
	evict_unreserve(c->ev, bytes);
	return r;
}

int cache_blob_put(struct cache *c, const struct store_key *k, const struct store_identity *id,
		   const void *buf, size_t len)
{
	const uint32_t cs = (uint32_t)c->cfg->chunk_size;
	struct cache_file *e;
	uint64_t bytes = BLOCK;
	int r;

	if (id->size != len || len > CACHE_BLOB_MAX)
		return -EINVAL;
	if (!evict_ready(c->ev))
		return -EAGAIN; /* the usage is not known yet: store nothing */
	for (uint64_t off = 0; off < len; off += cs)
		bytes += round_block(len - off < cs ? len - off : cs);
	e = entry_get(c, k, false);
	if (!e)
		return -ENOMEM;
	pthread_mutex_lock(&e->mu);
	while (e->creating)
		pthread_cond_wait(&e->cv, &e->mu);
	entry_check_store_gen_locked(c, e);
	if (in_use_locked(e)) {
		pthread_mutex_unlock(&e->mu);
		entry_put(c, e);
		return -EBUSY;
	}
	entry_remove_record_locked(c, e);
	e->creating = true;
	pthread_mutex_unlock(&e->mu);

	r = write_whole(c, e, id, buf, len, bytes);

	pthread_mutex_lock(&e->mu);
	e->creating = false;
	if (r == 0) {
		e->store_gen = cache_store_gen(c);
		e->rec->on_disk = true;
		e->rec->disk_gen = (uint32_t)e->store_gen;
		e->rec->verified_stamp = 0;
		evict_grow(c->ev, &e->rec->lru, bytes, true);
	}
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	entry_put(c, e);
	if (r < 0 && r != -EAGAIN)
		note_cache_error(c, r);
	return r;
}

/* Read and check every chunk of e's loaded, complete record into buf.
 * The entry is ours (creating), so its chunk map and fds stay; no lock
 * held.  0, -EBADMSG (a chunk failed its checksum), -ENOENT, -errno. */
static int read_whole(struct cache *c, struct cache_file *e, const struct store_slot *slots,
		      char *buf)
{
	for (uint32_t idx = 0; idx < e->sf.nchunks; idx++) {
		const char *why = NULL;
		int r = store_verify_chunk(&e->sf, idx, &slots[idx],
					   buf + (size_t)idx * e->sf.chunk_size, &why);

		if (r == -EBADMSG) {
			stats_add(c->stats, ST_checksum_mismatches, 1);
			log_debug("cache: blob %s chunk %u is bad (%s): removed", e->key.hex, idx,
				  why ? why : "?");
		}
		if (r < 0)
			return r;
	}
	return 0;
}

bool cache_blob_known(struct cache *c, const struct store_key *k)
{
	return cache_table_knows(c, k);
}

int cache_blob_get(struct cache *c, const struct store_key *k, struct store_identity *id,
		   void **out, size_t *outlen)
{
	struct cache_file *e = entry_get(c, k, evict_ready(c->ev));
	struct store_slot *slots = NULL;
	char *buf = NULL;
	int r;

	if (!e)
		return -ENOENT;
	pthread_mutex_lock(&e->mu);
	while (e->creating)
		pthread_cond_wait(&e->cv, &e->mu);
	entry_check_store_gen_locked(c, e);
	if (in_use_locked(e)) {
		r = -EBUSY;
		goto out;
	}
	r = entry_load_locked(c, e);
	if (r < 0)
		goto out;
	if (!e->loaded || e->need_create) {
		r = -ENOENT;
		goto out;
	}
	if (e->nstored != e->sf.nchunks || e->sf.id.size > CACHE_BLOB_MAX) {
		/* Torn (a chunk never written, or evicted): of no use. */
		entry_remove_record_locked(c, e);
		r = -ENOENT;
		goto out;
	}
	buf = malloc(e->sf.id.size ? e->sf.id.size : 1);
	slots = calloc(e->sf.nchunks ? e->sf.nchunks : 1, sizeof(*slots));
	if (!buf || !slots) {
		entry_unload_locked(c, e);
		r = -ENOMEM;
		goto out;
	}
	for (uint32_t idx = 0; idx < e->sf.nchunks; idx++) {
		struct chunk *ch = chunk_get(e, idx);

		if (!ch || !ch->len) {
			entry_remove_record_locked(c, e);
			r = -ENOENT;
			goto out;
		}
		slots[idx] = (struct store_slot){.hash = ch->hash, .len = ch->len};
	}
	/* The chunks are read and hashed with no lock held (cache_int.h):
	 * creating keeps eviction, removers and other users away. */
	e->creating = true;
	pthread_mutex_unlock(&e->mu);
	r = read_whole(c, e, slots, buf);
	pthread_mutex_lock(&e->mu);
	e->creating = false;
	pthread_cond_broadcast(&e->cv);
	if (r == 0) {
		*id = e->sf.id;
		*out = buf;
		*outlen = (size_t)e->sf.id.size;
		buf = NULL;
		entry_unload_locked(c, e);
	} else if (r == -EBADMSG || r == -ENOENT) {
		entry_remove_record_locked(c, e);
	} else {
		entry_unload_locked(c, e);
		note_cache_error(c, r);
	}
out:
	pthread_mutex_unlock(&e->mu);
	entry_put(c, e);
	free(slots);
	free(buf);
	return r;
}

void cache_blob_remove(struct cache *c, const struct store_key *k)
{
	struct cache_file *e = entry_get(c, k, evict_ready(c->ev));

	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	while (e->creating)
		pthread_cond_wait(&e->cv, &e->mu);
	if (!in_use_locked(e))
		entry_remove_record_locked(c, e);
	pthread_mutex_unlock(&e->mu);
	entry_put(c, e);
}
