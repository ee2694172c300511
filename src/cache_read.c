/* cache_read.c - the read path.
 *
 * A read is split at chunk boundaries.  A VERIFIED chunk's bytes are copied
 * out of the data file while it is pinned, and checked to be there (a file
 * changed under us is caught); every reply is made from memory.  A missing
 * chunk is fetched whole by the one thread that marks it BUSY; other
 * readers wait on e->cv (single flight).  A reader's fetched chunk is
 * stored by the write-behind worker after the reply; a sequential reader
 * gets the next chunks queued to the prefetch workers.  A chunk found on
 * disk is hashed before its first use (verify=once).  Where the file ends
 * is the source's to say: a read past the size validated at open goes to
 * the source whenever the kernel may think the file longer.  Locks: e->mu,
 * which the owner of a BUSY chunk drops for every source or cache_dir read
 * and write (order: cache_int.h).  A read holds a reference on its entry
 * until its reply is sent.
 */
#include "cache_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checksum.h"
#include "io.h"
#include "log.h"
#include "source.h"

/* ---- the read path ------------------------------------------------------ */

/* Append a memory segment; buf (if not NULL) is freed by cache_read_done.
 * Callers keep nseg below CACHE_MAX_SEGS (a request spans at most
 * 1 MiB / 64 KiB + 1 chunks, and one more segment from the source). */
static void add_mem(struct cache_read *rd, void *buf, const void *mem, size_t len)
{
	if (buf)
		rd->bufs[rd->nbufs++] = buf;
	if (len)
		rd->seg[rd->nseg++] = (struct cache_seg){.fd = -1, .mem = mem, .len = len};
}

#define ALIGN ((uint64_t)CACHE_BUF_ALIGN)

/* Chunk buffers are aligned for O_DIRECT and sized to whole blocks. */
static void *chunk_buf(uint64_t len)
{
	void *p = NULL;

	return posix_memalign(&p, ALIGN, (len + ALIGN - 1) & ~(ALIGN - 1)) ? NULL : p;
}

/* Read straight from the source, caching nothing. */
static ssize_t read_direct(struct cache *c, int src_fd, off_t off, size_t size,
			   struct cache_read *rd)
{
	void *buf;
	ssize_t n;

	if (src_fd < 0)
		return -EBADFD; /* the caller opens the handle's own fd */
	buf = chunk_buf(size ? size : 1);
	if (!buf)
		return -ENOMEM;
	n = c->src.read(c->src.arg, src_fd, buf, size, off);
	if (n < 0) {
		free(buf);
		stats_add(c->stats, ST_source_errors, 1);
		return n;
	}
	stats_add(c->stats, ST_bytes_bypassed, (uint64_t)n);
	add_mem(rd, buf, buf, (size_t)n);
	return n;
}

/* A data file was truncated or punched under the daemon. */
static void data_changed_under_us(struct cache *c, const char *how)
{
	log_once(c->logged_io, LOG_LVL_WARN,
		 "cache: a data file in cache_dir '%s' was changed under the daemon "
		 "(truncated or punched: %s); reading from the source",
		 store_path(c->store), how);
	stats_add(c->stats, ST_cache_io_errors, 1);
}

void note_cache_error(struct cache *c, int r)
{
	if (r == -ENOSPC || r == -EDQUOT) {
		stats_add(c->stats, ST_cache_enospc, 1);
		log_once(c->logged_nospace, LOG_LVL_WARN,
			 "cache: cache_dir '%s' is full (%s); reading from the source",
			 store_path(c->store), strerror(-r));
	} else {
		stats_add(c->stats, ST_cache_io_errors, 1);
		log_once(c->logged_io, LOG_LVL_WARN,
			 "cache: I/O on cache_dir '%s' failed (%s); reading from the source",
			 store_path(c->store), strerror(-r));
		pthread_mutex_lock(&c->sweep_mu);
		c->poke = true;
		pthread_cond_signal(&c->sweep_cv);
		pthread_mutex_unlock(&c->sweep_mu);
	}
}

/* Make sure the record exists on disk before a chunk is written: create it
 * if it was only prepared (one thread creates, others wait).  Called
 * without e->mu by the owner of a BUSY chunk, so the entry cannot be reset
 * or unloaded meanwhile.  -ESTALE when nothing may be stored (bypass). */
static int ensure_record(struct cache *c, struct cache_file *e)
{
	struct evict_batch batch = {0};
	struct store_identity id;
	struct store_file nf;
	int r;

	pthread_mutex_lock(&e->mu);
	while (e->creating)
		pthread_cond_wait(&e->cv, &e->mu);
	if (!e->loaded || e->bypass) {
		pthread_mutex_unlock(&e->mu);
		return -ESTALE;
	}
	if (!e->need_create) {
		r = e->sf.meta_fd >= 0 && e->sf.data_fd >= 0 ? 0 : -EBADF;
		pthread_mutex_unlock(&e->mu);
		return r;
	}
	e->creating = true;
	id = e->sf.id;
	entry_settle_condemned_locked(c, e);
	pthread_mutex_unlock(&e->mu);
	/* The metadata file's block is room like any other. */
	r = evict_reserve(c->ev, BLOCK, &batch);
	if (r == 0) {
		r = store_create(c->store, &e->key, &id, e->sf.chunk_size, &nf);
		if (cache_no_fds(r)) {
			cache_out_of_fds(c, NULL, r);
			r = store_create(c->store, &e->key, &id, e->sf.chunk_size, &nf);
		}
		if (r < 0)
			evict_unreserve(c->ev, BLOCK);
	}
	pthread_mutex_lock(&e->mu);
	e->creating = false;
	if (r == 0) {
		e->sf.meta_fd = nf.meta_fd;
		e->sf.data_fd = nf.data_fd;
		e->sf.data_min = 0; /* a new, empty data file */
		e->need_create = false;
		e->store_gen = cache_store_gen(c);
		e->rec->on_disk = true;
		e->rec->disk_gen = (uint32_t)e->store_gen;
		e->meta_bytes = BLOCK;
		evict_grow(c->ev, &e->rec->lru, e->meta_bytes, true);
	}
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	return r;
}

/* Store a fetched chunk.  Called without e->mu; the chunk is BUSY (ours).
 * Returns true if it is now on disk with its slot. */
static bool store_chunk(struct cache *c, struct cache_file *e, uint32_t idx, const void *buf,
			uint32_t len, uint64_t hash)
{
	struct store_slot slot = {.hash = hash, .len = len};
	uint64_t bytes = round_block(len);
	struct evict_batch batch = {0};
	int r;

	r = ensure_record(c, e);
	if (r == -ESTALE)
		return false;
	if (r == 0)
		r = evict_reserve(c->ev, bytes, &batch);
	if (r == -EAGAIN) {
		/* The startup index is not complete: a miss never waits for it. */
		stats_add(c->stats, ST_fallbacks, 1);
		return false;
	}
	if (r < 0) {
		stats_add(c->stats, ST_fallbacks, 1);
		note_cache_error(c, r);
		return false;
	}
	r = store_write_chunk(&e->sf, idx, buf, len, c->cfg->verify == VERIFY_NEVER);
	if (r == -ESTALE) {
		/* The data file was cut under us: none of its bytes are
		 * trusted now; the next open replaces the record. */
		evict_unreserve(c->ev, bytes);
		pthread_mutex_lock(&e->mu);
		e->bypass = true;
		pthread_mutex_unlock(&e->mu);
		data_changed_under_us(c, "cut short");
		return false;
	}
	if (r == 0)
		r = store_set_slot(&e->sf, idx, &slot);
	if (r < 0) {
		/* Never a complete record's chunk: this one was absent.  If
		 * even that fails, the slot on disk may name bytes that are
		 * not there: the record is not trusted at its next load. */
		if (store_drop_chunk(&e->sf, idx) < 0) {
			pthread_mutex_lock(&e->mu);
			e->disk_differs = true;
			pthread_mutex_unlock(&e->mu);
		}
		evict_unreserve(c->ev, bytes);
		stats_add(c->stats, ST_fallbacks, 1);
		note_cache_error(c, r);
		return false;
	}
	return true;
}

/* The fetch fd of the entry, opened (by the object, not the name: the
 * handles that read it opened this very file) if it has none.  The caller
 * owns a BUSY chunk, so the entry cannot be reset meanwhile; e->mu held on
 * entry and exit, dropped while opening. */
static int fetch_fd_locked(struct cache *c, struct cache_file *e, struct efs_inode *ino)
{
	int fd;

	if (e->fetch_fd >= 0)
		return e->fetch_fd;
	pthread_mutex_unlock(&e->mu);
	fd = cache_open_fetch(c, ino, false);
	pthread_mutex_lock(&e->mu);
	if (fd < 0)
		return fd;
	if (e->fetch_fd >= 0)
		close(fd);
	else
		e->fetch_fd = fd;
	return e->fetch_fd;
}

/* The owner of a BUSY chunk is done with it: VERIFIED if stored, else
 * ABSENT (or PRESENT: a chunk on disk that could not be rewritten); waiters
 * are woken.  e->mu held. */
static void finish_store_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
				bool stored, uint64_t hash, uint32_t len, bool prefetched)
{
	e->busy--;
	if (ch->len) {
		/* Rewritten in place (a complete record's bad chunk): counted
		 * already; if that failed its bad bytes are still there, to
		 * be verified (and fail) again. */
		ch->state = stored && c->cfg->verify != VERIFY_ALWAYS ? CH_VERIFIED : CH_PRESENT;
		if (stored)
			stats_add(c->stats, ST_chunks_stored, 1);
		entry_chunk_stored_locked(e, ch);
	} else if (stored) {
		ch->hash = hash;
		ch->len = len;
		ch->state = c->cfg->verify == VERIFY_ALWAYS ? CH_PRESENT : CH_VERIFIED;
		ch->unread = prefetched;
		e->nstored++;
		entry_chunk_stored_locked(e, ch);
		evict_grow(c->ev, &e->rec->lru, round_block(len), true);
		stats_add(c->stats, ST_chunks_stored, 1);
		if (prefetched)
			stats_add(c->stats, ST_prefetched_chunks, 1);
	} else {
		ch->state = CH_ABSENT;
		chunk_settle(e, ch);
	}
	pthread_cond_broadcast(&e->cv);
}

/* Hand a fetched chunk (BUSY, ours) to the write-behind worker with a copy
 * of its bytes; the chunk stays BUSY (and counted in e->busy) until the
 * worker stored it, so readers of it wait and nothing resets the entry
 * under the write.  False if the queue is full: the caller stores it. */
static bool write_behind(struct cache *c, struct cache_file *e, struct chunk *ch,
			 const void *buf, uint32_t len, uint64_t hash)
{
	struct prefetch_job job = {.entry = e, .chunk = ch, .idx = ch->idx, .fd = -1, .len = len,
				   .hash = hash};

	if (!c->wb)
		return false;
	if (__atomic_add_fetch(&c->wb_bytes, len, __ATOMIC_RELAXED) > c->wb_limit)
		goto err_bytes;
	job.buf = malloc(len ? len : 1);
	if (!job.buf)
		goto err_bytes;
	memcpy(job.buf, buf, len);
	entry_ref(e);
	__atomic_fetch_add(&c->wb_pending, 1, __ATOMIC_RELAXED);
	if (!prefetch_submit(c->wb, &job)) {
		__atomic_fetch_sub(&c->wb_pending, 1, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL); /* ours is still held */
		free(job.buf);
		goto err_bytes;
	}
	return true;

err_bytes:
	__atomic_fetch_sub(&c->wb_bytes, len, __ATOMIC_RELAXED);
	return false;
}

static void write_behind_done(struct cache *c, const struct prefetch_job *job, bool stored)
{
	struct cache_file *e = job->entry;

	pthread_mutex_lock(&e->mu);
	finish_store_locked(c, e, job->chunk, stored, job->hash, job->len, false);
	entry_release_locked(c, e);
	pthread_mutex_unlock(&e->mu);
	free(job->buf);
	__atomic_fetch_sub(&c->wb_bytes, job->len, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&c->wb_pending, 1, __ATOMIC_RELEASE);
	entry_put(c, e);
}

void cache_run_write_behind(const struct prefetch_job *job, void *arg)
{
	struct cache *c = arg;

	write_behind_done(c, job,
			  store_chunk(c, job->entry, job->idx, job->buf, job->len, job->hash));
}

void cache_drop_write_behind(const struct prefetch_job *job, void *arg)
{
	write_behind_done(arg, job, false);
}

/* The chunk is BUSY and ours (counted in e->busy); e->mu held on entry and
 * exit, dropped while fetching.  Fetch the whole chunk from the source into
 * buf, store it (unless the entry went to bypass: a complete record with a
 * bad chunk is not written in place), leave the chunk VERIFIED (stored) or
 * ABSENT, and wake the waiters.  Returns the bytes fetched (short only if
 * the source shrank) or -errno from the source. */
static ssize_t fetch_owned_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
				  int fd, void *buf, bool prefetched)
{
	const uint64_t start = (uint64_t)ch->idx * e->sf.chunk_size;
	const uint32_t want = store_chunk_len(&e->sf, ch->idx);
	const struct store_identity id = e->sf.id;
	const bool may_store = !e->bypass;
	/* A complete record's chunk found bad: its slot stays, its bytes are
	 * written again in place (the same bytes a passthrough reader of the
	 * data file should have read). */
	const bool rewrite = ch->len != 0;
	const uint64_t slot_hash = ch->hash;
	const uint32_t slot_len = ch->len;
	bool stored = false, changed = false;
	struct store_identity now_id;
	uint64_t hash = 0;
	struct stat st;
	ssize_t n;

	pthread_mutex_unlock(&e->mu);
	const uint64_t t0 = stats_now_us();
	n = c->src.read(c->src.arg, fd, buf, want, (off_t)start);
	stats_fetch_done(c->stats, t0);
	if (n >= 0) {
		stats_add(c->stats, ST_misses, 1);
		stats_add(c->stats, ST_bytes_from_source, (uint64_t)n);
		/* Short, or the identity moved while we read: the bytes are what
		 * the source holds now, so serve them, but store nothing. */
		if ((uint32_t)n != want) {
			changed = true;
		} else if (c->src.stat_open(c->src.arg, fd, &st) == 0) {
			cache_identity_of(&st, &now_id);
			changed = !cache_identity_equal(&now_id, &id);
		}
		if (!changed && rewrite) {
			/* The bytes its slot was made from, or the record no
			 * longer describes the source. */
			hash = csum64(buf, want);
			changed = hash != slot_hash || want != slot_len ||
				  store_write_chunk(&e->sf, ch->idx, buf, want,
						    c->cfg->verify == VERIFY_NEVER) < 0;
			stored = !changed;
		} else if (!changed && may_store) {
			hash = csum64(buf, want);
			/* A reader's own fetch is written behind its reply; a
			 * prefetch worker has no reply to wait for. */
			if (!prefetched && write_behind(c, e, ch, buf, want, hash)) {
				pthread_mutex_lock(&e->mu);
				return n; /* the chunk stays BUSY until written */
			}
			stored = store_chunk(c, e, ch->idx, buf, want, hash);
		}
	}
	pthread_mutex_lock(&e->mu);
	if (changed)
		e->bypass = true;
	finish_store_locked(c, e, ch, stored, hash, want, prefetched);
	if (n < 0)
		stats_add(c->stats, ST_source_errors, 1);
	return n;
}

/* The chunk is PRESENT on disk, BUSY and ours; e->mu held on entry and
 * exit, dropped while reading.  Read it into buf and check its checksum: on
 * success it becomes VERIFIED (PRESENT again with verify=always) and true
 * is returned; on a mismatch it stays BUSY and ours, for the caller to
 * fetch: punched out of a record never complete (it is then stored anew);
 * a complete record's data file may back a passthrough open and never
 * loses bytes, so there the chunk keeps its slot (ch->len) and the fetch
 * writes the right bytes over the bad ones. */
static bool verify_owned_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
				void *buf)
{
	const struct store_slot slot = {.hash = ch->hash, .len = ch->len};
	int r;

	pthread_mutex_unlock(&e->mu);
	r = store_verify_chunk(&e->sf, ch->idx, &slot, buf, NULL);
	pthread_mutex_lock(&e->mu);
	stats_add(c->stats, ST_chunks_verified, 1);
	if (r == 0) {
		ch->state = c->cfg->verify == VERIFY_ALWAYS ? CH_PRESENT : CH_VERIFIED;
		entry_chunk_stored_locked(e, ch);
		return true;
	}
	if (r == -EBADMSG) {
		stats_add(c->stats, ST_checksum_mismatches, 1);
		log_debug("cache: chunk %u of %s failed its checksum; refetching", ch->idx,
			  e->key.hex);
	} else {
		note_cache_error(c, r);
	}
	if (!entry_complete(e))
		entry_drop_chunk_locked(c, e, ch);
	return false;
}

/* Hits keep the record at the LRU's hot end, taking the LRU mutex at most
 * every TOUCH_MS per file (the order within the record is kept per hit,
 * under e->mu only): a file read hot does not make every reply queue on
 * the one global mutex. */
#define TOUCH_MS 20
static void touch_rec_locked(struct cache *c, struct cache_file *e)
{
	struct timespec now;
	uint64_t ms;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
	ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
	if (ms - e->touched_ms < TOUCH_MS)
		return;
	e->touched_ms = ms;
	evict_touch(c->ev, &e->rec->lru);
}

/* The data file holds bytes all over [pos, end): one lseek, the first
 * hole at or after pos (the file's end counts as one). */
static bool data_holds(int fd, uint64_t pos, uint64_t end)
{
	off_t hole = lseek(fd, (off_t)pos, SEEK_HOLE);

	return hole >= 0 && (uint64_t)hole >= end;
}

/* A hit: bytes [from, to) of stored chunk ch copied out of the data file;
 * e->mu held on entry and exit, dropped for the copy while the chunk is
 * pinned (nothing of ours changes it meanwhile).  The reply is made from
 * that copy, not spliced from the file: a data file truncated or punched
 * under us (a cleaner of cache_dir, even one that raced the read) shows
 * as a short copy or, checked after the copy, as a hole in the range, and
 * the read then goes to the source; a splice would hand the kernel a short
 * reply (the end of the file to it) or zeros.  Returns the bytes added to
 * rd, or -ESTALE (the entry went to bypass: the caller reads the source). */
static ssize_t hit_locked(struct cache *c, struct cache_file *e, struct chunk *ch, size_t from,
			  size_t to, struct cache_read *rd)
{
	const off_t pos = (off_t)((uint64_t)ch->idx * e->sf.chunk_size + from);
	const int fd = e->sf.data_fd;
	void *buf = malloc(to - from ? to - from : 1);
	ssize_t n = -ENOMEM;

	if (!buf)
		return -ENOBUFS;
	ch->pins++;
	e->pins++;
	pthread_mutex_unlock(&e->mu);
	n = io_pread_full(fd, buf, to - from, pos);
	if (n == (ssize_t)(to - from) && !data_holds(fd, (uint64_t)pos, (uint64_t)pos + n))
		n = -ENODATA;
	/* Cut and extended again: the cut's block reads as data (zeros). */
	if (n == (ssize_t)(to - from)) {
		int r = store_data_intact(&e->sf);

		if (r < 0)
			n = r;
	}
	pthread_mutex_lock(&e->mu);
	ch->pins--;
	e->pins--;
	chunk_settle(e, ch);
	if (!e->pins)
		pthread_cond_broadcast(&e->cv);
	if (n != (ssize_t)(to - from)) {
		free(buf);
		data_changed_under_us(c, n == -ESTALE ? "cut short"
					 : n < 0      ? strerror((int)-n)
						      : "short");
		e->bypass = true;
		return -ESTALE;
	}
	add_mem(rd, buf, buf, to - from);
	ch->unread = false;
	stats_add(c->stats, ST_hits, 1);
	stats_add(c->stats, ST_bytes_from_cache, to - from);
	chunk_list_hot(e, ch);
	touch_rec_locked(c, e);
	return (ssize_t)(to - from);
}

/* Serve bytes [from, to) of chunk idx; e->mu held on entry and exit.
 * Returns the bytes added to rd, -EAGAIN if it had to wait (the caller must
 * look at the entry again: it may have been reset meanwhile), or -errno. */
static ssize_t read_chunk_locked(struct cache *c, struct cache_file *e, uint32_t idx,
				 struct efs_inode *ino, size_t from, size_t to,
				 struct cache_read *rd)
{
	const uint32_t want = store_chunk_len(&e->sf, idx);
	struct chunk *ch = chunk_get(e, idx);
	ssize_t n;
	void *buf;

	if (ch && ch->state == CH_BUSY) {
		stats_add(c->stats, ST_fetch_waits, 1);
		pthread_cond_wait(&e->cv, &e->mu);
		return -EAGAIN;
	}
	if (rd->nbufs + 2 >= CACHE_MAX_SEGS)
		return -E2BIG;

	if (ch && (ch->state == CH_VERIFIED ||
		   (ch->state == CH_PRESENT && c->cfg->verify == VERIFY_NEVER)))
		return hit_locked(c, e, ch, from, to, rd);

	if (!ch && !(ch = chunk_make(e, idx)))
		return -ENOBUFS; /* no memory for its state: from the source */
	buf = chunk_buf(want ? want : 1);
	if (!buf) {
		chunk_settle(e, ch);
		return -ENOMEM;
	}
	ch->state = CH_BUSY;
	chunk_unlist(e, ch);
	e->busy++;

	if (ch->len) {
		/* PRESENT: check the bytes on disk before their first use. */
		if (verify_owned_locked(c, e, ch, buf)) {
			e->busy--;
			pthread_cond_broadcast(&e->cv);
			stats_add(c->stats, ST_hits, 1);
			stats_add(c->stats, ST_bytes_from_cache, to - from);
			add_mem(rd, buf, (char *)buf + from, to - from);
			return (ssize_t)(to - from);
		}
	}

	/* ABSENT (or bad on disk): fetch the whole chunk from the source, once. */
	n = fetch_fd_locked(c, e, ino);
	if (n >= 0) {
		n = fetch_owned_locked(c, e, ch, (int)n, buf, false);
	} else {
		finish_store_locked(c, e, ch, false, 0, 0, false);
	}
	if (n < 0) {
		free(buf);
		return n;
	}
	if ((size_t)n <= from) {
		free(buf);
		return 0;
	}
	if ((size_t)n < to)
		to = (size_t)n;
	add_mem(rd, buf, (char *)buf + from, to - from);
	return (ssize_t)(to - from);
}

/* Queue fetches of the chunks after idx for a sequential reader; e->mu held.
 * A job holds a reference on the entry and counts in e->jobs, which keeps
 * the entry's fetch fd open for it (no fd of its own). */
static void schedule_prefetch_locked(struct cache *c, struct cache_file *e, uint32_t idx)
{
	uint32_t last = idx + c->window;

	if (!c->pf || e->bypass || !e->loaded || e->fetch_fd < 0)
		return;
	if (last >= e->sf.nchunks)
		last = e->sf.nchunks ? e->sf.nchunks - 1 : 0;
	for (uint32_t i = idx + 1; i <= last && i < e->sf.nchunks; i++) {
		struct chunk *ch = chunk_get(e, i);
		struct prefetch_job job = {.entry = e, .idx = i, .tag = e->gen, .fd = -1};

		/* Fetch what is missing; verify ahead what a new daemon found on
		 * disk, so a reader after a restart does not hash each chunk in
		 * its own time. */
		if (ch && (ch->queued ||
			   !(ch->state == CH_ABSENT ||
			     (ch->state == CH_PRESENT && c->cfg->verify == VERIFY_ONCE))))
			continue;
		if (!ch && !(ch = chunk_make(e, i)))
			return;
		ch->queued = true;
		entry_ref(e);
		e->jobs++;
		if (!prefetch_submit(c->pf, &job)) {
			/* Queue full: the reader fetches what it needs. */
			e->jobs--;
			__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL); /* the reader's is held */
			ch->queued = false;
			chunk_settle(e, ch);
			return;
		}
	}
}

/* A prefetch worker's job: fetch one chunk unless someone else did. */
void cache_run_prefetch(const struct prefetch_job *job, void *arg)
{
	struct cache *c = arg;
	struct cache_file *e = job->entry;
	struct chunk *ch;
	void *buf = NULL;

	pthread_mutex_lock(&e->mu);
	e->jobs--;
	if (!e->loaded || e->bypass || e->gen != job->tag || !(ch = chunk_get(e, job->idx)))
		goto out;
	ch->queued = false;
	if (e->fetch_fd < 0 ||
	    (ch->state != CH_ABSENT && !(ch->state == CH_PRESENT && c->cfg->verify == VERIFY_ONCE))) {
		chunk_settle(e, ch);
		goto out;
	}
	buf = chunk_buf(e->sf.chunk_size);
	if (buf) {
		bool was_present = ch->state == CH_PRESENT;

		ch->state = CH_BUSY;
		chunk_unlist(e, ch);
		e->busy++;
		if (was_present && verify_owned_locked(c, e, ch, buf)) {
			e->busy--;
			pthread_cond_broadcast(&e->cv);
		} else {
			fetch_owned_locked(c, e, ch, e->fetch_fd, buf, true);
		}
	} else {
		chunk_settle(e, ch);
	}
out:
	entry_release_locked(c, e);
	pthread_mutex_unlock(&e->mu);
	free(buf);
	entry_put(c, e);
}

void cache_drop_prefetch(const struct prefetch_job *job, void *arg)
{
	struct cache *c = arg;
	struct cache_file *e = job->entry;
	struct chunk *ch;

	pthread_mutex_lock(&e->mu);
	e->jobs--;
	if (e->gen == job->tag && (ch = chunk_get(e, job->idx))) {
		ch->queued = false;
		chunk_settle(e, ch);
	}
	entry_release_locked(c, e);
	pthread_mutex_unlock(&e->mu);
	entry_put(c, e);
}

/* The part of a read at and past the validated size [fsize, end): the
 * source's, if the kernel may think the file longer (it grew on another
 * host and a getattr said so), else nothing (the end of the file as this
 * open knows it, and as the kernel does). */
static ssize_t read_tail(struct cache *c, int src_fd, uint64_t fsize, uint64_t end,
			 uint64_t kernel_size, struct cache_read *rd)
{
	if (end <= fsize || kernel_size <= fsize)
		return 0;
	return read_direct(c, src_fd, (off_t)fsize, (size_t)(end - fsize), rd);
}

ssize_t cache_read(struct cache *c, struct efs_inode *ino, int src_fd, off_t off, size_t size,
		   bool sequential, uint64_t kernel_size, struct cache_read *rd)
{
	struct cache_file *e = ino->cf;
	uint64_t end, pos, cs, fsize, gen;
	ssize_t total = 0, n;
	bool whole = false, direct = false;

	memset(rd, 0, sizeof(*rd));
	stats_add(c->stats, ST_reads, 1);
	if (!e)
		return read_direct(c, src_fd, off, size, rd);

	entry_ref(e); /* until the reply is sent (cache_read_done) */
	rd->entry = e;
	rd->cache = c;
	pthread_mutex_lock(&e->mu);
	entry_check_store_gen_locked(c, e);
	fsize = e->sf.id.size;
	/* Only a record checked against the source at an open serves reads.
	 * An open that could not read the record (EMFILE, EIO) validated
	 * nothing and reads the source; a record loaded after it (by verify,
	 * or by another open before its own check) may be of an older version
	 * of the file, whose files are still on disk. */
	if (!e->loaded || e->bypass || !e->validated || (uint64_t)off >= fsize) {
		/* Uncached, or past the size we validated (the file grew). */
		pthread_mutex_unlock(&e->mu);
		n = read_direct(c, src_fd, off, size, rd);
		goto out;
	}
	/* A read the source must finish needs the handle's fd first. */
	if ((uint64_t)off + size > fsize && kernel_size > fsize && src_fd < 0) {
		pthread_mutex_unlock(&e->mu);
		n = -EBADFD;
		goto out;
	}
	gen = e->gen;
	cs = e->sf.chunk_size;
	end = (uint64_t)off + size < fsize ? (uint64_t)off + size : fsize;
	for (pos = (uint64_t)off; pos < end;) {
		uint32_t idx = (uint32_t)(pos / cs);
		uint64_t cstart = (uint64_t)idx * cs;
		size_t from = (size_t)(pos - cstart);
		size_t to = (size_t)(end - cstart < cs ? end - cstart : cs);

		if (direct || !e->loaded || e->bypass || e->gen != gen) {
			/* Reset or found changed meanwhile, or no memory for the
			 * chunk's state: finish from the source. */
			if (src_fd < 0) {
				total = -EBADFD; /* start over with the handle's fd */
				break;
			}
			pthread_mutex_unlock(&e->mu);
			n = read_direct(c, src_fd, (off_t)pos, (size_t)((uint64_t)off + size - pos),
					rd);
			pthread_mutex_lock(&e->mu);
			total = n < 0 ? (total ? total : n) : total + n;
			whole = true;
			break;
		}
		n = read_chunk_locked(c, e, idx, ino, from, to, rd);
		if (n == -EAGAIN)
			continue;
		if (n == -ESTALE || n == -ENOBUFS) {
			direct = true; /* the loop reads the rest from the source */
			continue;
		}
		if (n < 0) {
			total = n;
			break;
		}
		total += n;
		if ((size_t)n < to - from) {
			whole = true; /* EOF: the source is shorter than we knew */
			break;
		}
		pos += (uint64_t)n;
	}
	if (sequential && total > 0 && e->gen == gen && e->loaded)
		schedule_prefetch_locked(c, e, (uint32_t)((end - 1) / cs));
	pthread_mutex_unlock(&e->mu);
	n = total;
	if (n >= 0 && !whole && (uint64_t)off + size > fsize) {
		ssize_t t = read_tail(c, src_fd, fsize, (uint64_t)off + size, kernel_size, rd);

		n = t < 0 ? t : n + t;
	}
out:
	if (n < 0)
		cache_read_done(c, rd);
	return n;
}

void cache_read_done(struct cache *c, struct cache_read *rd)
{
	for (unsigned i = 0; i < rd->nbufs; i++)
		free(rd->bufs[i]);
	if (rd->entry)
		entry_put(c, rd->entry);
	memset(rd, 0, sizeof(*rd));
}
