/* cache_read.c - the read path.
 *
 * A read is split at chunk boundaries.  A VERIFIED chunk's bytes are copied
 * out of the data file while it is pinned, and checked to be there (a file
 * changed under us is caught); every reply is made from memory.  A missing
 * chunk is fetched whole by the one thread that marks it BUSY; other
 * readers wait on e->cv (single flight).  A reader's fetched chunk is
 * stored by the write-behind worker after the reply, from the very buffer
 * the reply is sent from (a reference each, bufpool.h; no copy), and
 * readers of that chunk meanwhile are served from that buffer (ch->mem); a
 * sequential reader gets the next chunks queued to the prefetch workers.
 * A prefetched chunk's buffer is kept in c->ahead until its reader has
 * had every byte of it, so the reader's reply is made from that buffer,
 * not from a second copy out of the data file.  Every buffer comes from c->pool, under
 * its budget: a prefetch waits for room (after giving back the oldest kept
 * buffer), the write-behind queue takes nothing beyond it.  A chunk found on
 * disk is hashed before its first use (verify=once).  Where the file ends
 * is the source's to say: a read past the size validated at open goes to
 * the source whenever the kernel may think the file longer.  Locks: e->mu,
 * which the owner of a BUSY chunk drops for every source or cache_dir read
 * and write (order: cache_int.h).  A read holds a reference on its entry
 * until its reply is sent.
 *
 * Buffer references (each noted with the buffer's gen and checked with
 * bufpool_held where it is used):
 *   reply       one per rd->bufs[i], whose segments point into it: a fresh
 *               buffer (direct read, hit copy, verify, the reader's own
 *               fetch) or a bufpool_ref of ch->mem (under e->mu) or of a
 *               kept chunk (under ahead mu); cache_read_done gives them
 *               back once the reply is sent.
 *   write-behind job  its own, taken before it is queued; given back by
 *               write_behind_done, whether the job ran or was dropped.
 *   ch->mem     its own, taken with the job's under e->mu; set only while
 *               the chunk is BUSY and owned by that job (nothing else
 *               changes the chunk meanwhile); cleared under e->mu and
 *               given back by write_behind_done.
 *   kept chunk  the prefetch worker's, passed to the item in c->ahead;
 *               given back by whoever takes the item out of the ring under
 *               ahead mu (ring full, oldest dropped, served to its end).
 *   prefetch worker  its own from the job's start until kept or given back.
 */
#include "cache_int.h"

#include <assert.h>
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

/* Append a memory segment; buf (a struct pbuf, if not NULL) is given back
 * by cache_read_done: its reference passes to rd.  Callers keep nseg
 * below CACHE_MAX_SEGS (a request spans at most 1 MiB / 64 KiB + 1 chunks,
 * and one more segment from the source). */
static void add_mem(struct cache_read *rd, struct pbuf *buf, const void *mem, size_t len)
{
	if (buf) {
		rd->buf_gen[rd->nbufs] = buf->gen;
		rd->bufs[rd->nbufs++] = buf;
	}
	if (len)
		rd->seg[rd->nseg++] = (struct cache_seg){.fd = -1, .mem = mem, .len = len};
}

/* ---- prefetched chunks kept in memory for their reader ----------------- */

/* A fetched chunk, stored, kept for the reader the prefetch ran ahead of.
 * The item holds a reference on the entry (so e and gen name one record's
 * chunk for as long as it lives) and one on the buffer. */
struct ahead_item {
	struct cache_file *e;
	uint64_t gen;     /* e->gen when fetched: a reset forgets it */
	uint32_t idx;
	uint32_t len;     /* bytes of the chunk in buf */
	uint64_t served;  /* parts of it replied so far (ahead_parts) */
	struct pbuf *buf;
	unsigned buf_gen; /* buf->gen when kept */
};

/* A FIFO ring; ahead_mu is a leaf (taken under e->mu). */
struct ahead {
	pthread_mutex_t mu;
	unsigned cap, head, n; /* protected by mu */
	unsigned count;        /* atomic copy of n, read without mu */
	struct ahead_item item[];
};

static struct ahead_item ahead_pop_locked(struct ahead *a)
{
	struct ahead_item it = a->item[a->head];

	a->head = (a->head + 1) % a->cap;
	a->n--;
	__atomic_store_n(&a->count, a->n, __ATOMIC_RELAXED);
	return it;
}

/* Give an item back.  No lock held. */
static void ahead_release(struct cache *c, struct ahead_item *it)
{
	assert(bufpool_held(it->buf, it->buf_gen));
	bufpool_put(c->pool, it->buf);
	entry_put(c, it->e);
}

/* Keep buf (a stored chunk of e, len bytes) for its reader; takes the
 * caller's buffer reference.  No lock held. */
static void ahead_keep(struct cache *c, struct cache_file *e, uint64_t gen, uint32_t idx,
		       uint32_t len, struct pbuf *buf)
{
	struct ahead *a = c->ahead;
	struct ahead_item old = {0};

	if (!a || !a->cap) {
		bufpool_put(c->pool, buf);
		return;
	}
	entry_ref(e);
	pthread_mutex_lock(&a->mu);
	if (a->n == a->cap)
		old = ahead_pop_locked(a);
	a->item[(a->head + a->n) % a->cap] =
		(struct ahead_item){.e = e, .gen = gen, .idx = idx, .len = len, .buf = buf,
				    .buf_gen = buf->gen};
	a->n++;
	__atomic_store_n(&a->count, a->n, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&a->mu);
	if (old.buf)
		ahead_release(c, &old);
}

/* Give back the oldest kept buffer (room for a prefetch, or at rest);
 * false if none. */
static bool ahead_drop_oldest(struct cache *c)
{
	struct ahead *a = c->ahead;
	struct ahead_item old = {0};

	if (!a)
		return false;
	pthread_mutex_lock(&a->mu);
	if (a->n)
		old = ahead_pop_locked(a);
	pthread_mutex_unlock(&a->mu);
	if (!old.buf)
		return false;
	ahead_release(c, &old);
	return true;
}

/* The parts of a chunk of len bytes (64 equal parts, the last shorter) that
 * [from, to) covers whole: a reader that reads some bytes twice (overlapping
 * or repeated reads) does not make the item look served before it is. */
static uint64_t ahead_parts(uint32_t len, size_t from, size_t to)
{
	const size_t part = ((size_t)len + 63) / 64;
	const size_t nparts = ((size_t)len + part - 1) / part;
	const size_t first = (from + part - 1) / part;
	const size_t end = to >= len ? nparts : to / part;
	uint64_t upto, below;

	if (end <= first)
		return 0;
	upto = end >= 64 ? ~0ULL : (1ULL << end) - 1;
	below = (1ULL << first) - 1;
	return upto & ~below;
}

static uint64_t ahead_all_parts(uint32_t len)
{
	return ahead_parts(len, 0, len);
}

/* Bytes [from, to) of chunk idx of e from a kept buffer, into rd (the
 * reference passes to rd); the item goes once every part of it was served.
 * e->mu held (the reader's reference on e keeps the item's from being the
 * last).  False if none is kept. */
static bool ahead_serve_locked(struct cache *c, struct cache_file *e, uint32_t idx, size_t from,
			       size_t to, struct cache_read *rd)
{
	struct ahead *a = c->ahead;
	struct pbuf *buf = NULL;
	bool done = false;

	if (!a || !__atomic_load_n(&a->count, __ATOMIC_RELAXED))
		return false;
	pthread_mutex_lock(&a->mu);
	for (unsigned k = 0; k < a->n; k++) {
		struct ahead_item *it = &a->item[(a->head + k) % a->cap];

		if (it->e != e || it->idx != idx || it->gen != e->gen || to > it->len)
			continue;
		assert(bufpool_held(it->buf, it->buf_gen));
		buf = it->buf;
		bufpool_ref(buf);
		it->served |= ahead_parts(it->len, from, to);
		if (it->served == ahead_all_parts(it->len)) {
			/* Swap the oldest into its place and pop that. */
			struct ahead_item mine = *it;

			*it = a->item[a->head];
			ahead_pop_locked(a);
			bufpool_put(c->pool, mine.buf);
			done = true;
		}
		break;
	}
	pthread_mutex_unlock(&a->mu);
	if (!buf)
		return false;
	if (done)
		__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL); /* the reader's is held */
	add_mem(rd, buf, (char *)buf->data + from, to - from);
	return true;
}

int cache_read_init(struct cache *c, uint64_t budget)
{
	unsigned cap = (unsigned)(budget / 2 / c->cfg->chunk_size);
	int r = bufpool_new(&c->pool, c->cfg->chunk_size, budget);

	if (r < 0)
		return r;
	c->ahead = calloc(1, sizeof(*c->ahead) + cap * sizeof(struct ahead_item));
	if (!c->ahead)
		return -ENOMEM;
	pthread_mutex_init(&c->ahead->mu, NULL);
	c->ahead->cap = cap;
	return 0;
}

void cache_read_idle(struct cache *c)
{
	if (!bufpool_quiet(c->pool))
		return;
	/* Nothing fetched for a sweep's period: kept buffers nobody read are
	 * of no use now, and the pool's free ones go back to the system. */
	while (ahead_drop_oldest(c))
		;
	bufpool_trim(c->pool);
}

void cache_read_free(struct cache *c)
{
	if (c->ahead) {
		while (ahead_drop_oldest(c))
			;
		pthread_mutex_destroy(&c->ahead->mu);
		free(c->ahead);
		c->ahead = NULL;
	}
	bufpool_free(c->pool);
	c->pool = NULL;
}

/* ---- the read path ------------------------------------------------------ */

/* A chunk buffer for a reader (never waits; aligned for O_DIRECT, whole
 * pages). */
static struct pbuf *chunk_buf(struct cache *c, uint64_t len)
{
	return bufpool_get(c->pool, len ? (size_t)len : 1, BUFPOOL_DEMAND);
}

/* Read straight from the source, caching nothing. */
static ssize_t read_direct(struct cache *c, int src_fd, off_t off, size_t size,
			   struct cache_read *rd)
{
	struct pbuf *buf;
	ssize_t n;

	if (src_fd < 0)
		return -EBADFD; /* the caller opens the handle's own fd */
	buf = chunk_buf(c, size);
	if (!buf)
		return -ENOMEM;
	n = c->src.read(c->src.arg, src_fd, buf->data, size, off);
	if (n < 0) {
		bufpool_put(c->pool, buf);
		stats_add(c->stats, ST_source_errors, 1);
		return n;
	}
	stats_add(c->stats, ST_bytes_bypassed, (uint64_t)n);
	add_mem(rd, buf, buf->data, (size_t)n);
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

/* Hand a fetched chunk (BUSY, ours) to the write-behind worker with a
 * reference on its buffer (no copy); the chunk stays BUSY (and counted in
 * e->busy) until the worker stored it, so nothing resets the entry under
 * the write, and its readers meanwhile are served from ch->mem.  False if
 * the queue is full or the buffers are over budget: the caller stores it.
 * e->mu held (ch->mem is set before the worker can finish the chunk). */
static bool write_behind_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
				struct pbuf *buf, uint32_t len, uint64_t hash)
{
	struct prefetch_job job = {.entry = e, .chunk = ch, .idx = ch->idx, .fd = -1, .len = len,
				   .hash = hash, .buf = buf, .tag = buf->gen};

	if (!c->wb || bufpool_over(c->pool))
		return false;
	if (__atomic_add_fetch(&c->wb_bytes, len, __ATOMIC_RELAXED) > c->wb_limit) {
		__atomic_fetch_sub(&c->wb_bytes, len, __ATOMIC_RELAXED);
		return false;
	}
	bufpool_ref(buf); /* the job's */
	bufpool_ref(buf); /* ch->mem's */
	ch->mem = buf;
	entry_ref(e);
	__atomic_fetch_add(&c->wb_pending, 1, __ATOMIC_RELAXED);
	if (!prefetch_submit(c->wb, &job)) {
		__atomic_fetch_sub(&c->wb_pending, 1, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL); /* ours is still held */
		ch->mem = NULL;
		bufpool_put(c->pool, buf);
		bufpool_put(c->pool, buf);
		__atomic_fetch_sub(&c->wb_bytes, len, __ATOMIC_RELAXED);
		return false;
	}
	/* Readers waiting for the chunk can be served from memory now. */
	pthread_cond_broadcast(&e->cv);
	return true;
}

static void write_behind_done(struct cache *c, const struct prefetch_job *job, bool stored)
{
	struct cache_file *e = job->entry;
	struct chunk *ch = job->chunk;
	struct pbuf *mem;

	assert(bufpool_held(job->buf, (unsigned)job->tag));
	pthread_mutex_lock(&e->mu);
	mem = ch->mem;
	ch->mem = NULL;
	assert(mem == job->buf);
	finish_store_locked(c, e, ch, stored, job->hash, job->len, false);
	entry_release_locked(c, e);
	pthread_mutex_unlock(&e->mu);
	bufpool_put(c->pool, mem);
	bufpool_put(c->pool, job->buf);
	__atomic_fetch_sub(&c->wb_bytes, job->len, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&c->wb_pending, 1, __ATOMIC_RELEASE);
	entry_put(c, e);
}

void cache_run_write_behind(const struct prefetch_job *job, void *arg)
{
	struct cache *c = arg;
	const struct pbuf *b = job->buf;

	/* Never bytes of a buffer given back: they would be stored as this
	 * chunk's. */
	assert(bufpool_held(b, (unsigned)job->tag));
	write_behind_done(c, job,
			  store_chunk(c, job->entry, job->idx, b->data, job->len, job->hash));
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
				  int fd, struct pbuf *pb, bool prefetched)
{
	void *buf = pb->data;
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
			 * prefetch worker has no reply to wait for, and its
			 * chunk's waiters get it once stored (a read that
			 * returned has its chunks on disk, or counted in
			 * write_behind_pending: status, warm and the tests
			 * rely on it). */
			if (!prefetched) {
				pthread_mutex_lock(&e->mu);
				if (write_behind_locked(c, e, ch, pb, want, hash))
					return n; /* the chunk stays BUSY until written */
				pthread_mutex_unlock(&e->mu);
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

/* A stored chunk served len bytes: counted, and hot in its record and the
 * LRU.  e->mu held. */
static ssize_t hit_count_locked(struct cache *c, struct cache_file *e, struct chunk *ch,
				size_t len)
{
	ch->unread = false;
	stats_add(c->stats, ST_hits, 1);
	stats_add(c->stats, ST_bytes_from_cache, len);
	chunk_list_hot(e, ch);
	touch_rec_locked(c, e);
	return (ssize_t)len;
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
	struct pbuf *buf = chunk_buf(c, to - from);
	ssize_t n = -ENOMEM;

	if (!buf)
		return -ENOBUFS;
	ch->pins++;
	e->pins++;
	pthread_mutex_unlock(&e->mu);
	n = io_pread_full(fd, buf->data, to - from, pos);
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
		bufpool_put(c->pool, buf);
		data_changed_under_us(c, n == -ESTALE ? "cut short"
					 : n < 0      ? strerror((int)-n)
						      : "short");
		e->bypass = true;
		return -ESTALE;
	}
	add_mem(rd, buf, buf->data, to - from);
	return hit_count_locked(c, e, ch, to - from);
}

/* A reader that misses chunks out of order (mmap faults, the preads of a
 * model loader) gets the whole file fetched ahead, in parallel, once it
 * missed this many chunks not next to the one it missed before, or once
 * it missed any chunk past the header of a file whose first bytes are
 * those of a model file. */
#define SCATTER_MISSES 4
/* ... for files of at least this many chunks, and no more than this share
 * of cache_size (a sweep must not evict what it just fetched). */
#define SCATTER_MIN_CHUNKS 8
#define SCATTER_MAX_SHARE 2

/* The first bytes of a file are those of a model file that loaders read by
 * header, then scattered: safetensors (an 8-byte little-endian length of
 * the JSON header that follows, then '{') or GGUF (magic "GGUF"). */
static bool model_header(const unsigned char *p, size_t n, uint64_t size)
{
	uint64_t hlen = 0;

	if (n >= 4 && !memcmp(p, "GGUF", 4))
		return true;
	if (n < 9)
		return false;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | p[i];
	return p[8] == '{' && hlen >= 2 && hlen <= (100u << 20) && hlen + 8 <= size;
}

/* A reader fetched chunk idx itself (a demand miss); buf holds its first n
 * bytes.  Start a sweep of the file if the misses of readers not reading
 * sequentially look scattered, its chunks pushed into ino's page cache
 * (NULL: the reader keeps no pages).  A sequential reader's misses are
 * those its prefetch has not reached yet (out of order under load), except
 * the first chunk's: a loader's read of the header starts at 0 and looks
 * sequential, and the scattered misses that follow it start the sweep.
 * e->mu held. */
static void note_miss_locked(struct cache *c, struct cache_file *e, struct efs_inode *ino,
			     uint32_t idx, bool sequential, const void *buf, size_t n)
{
	const uint32_t prev = e->last_miss;

	if (idx == 0)
		e->loader = model_header(buf, n, e->sf.id.size);
	if (sequential && idx != 0)
		return;
	e->last_miss = idx + 1;
	if (e->sweep || !c->pf || prev == 0 || idx == prev || idx + 1 == prev)
		return; /* the first miss, or next to the one before */
	if (e->scattered < UINT16_MAX)
		e->scattered++;
	if (e->scattered < SCATTER_MISSES && !(e->loader && idx > 1))
		return;
	if (e->sf.nchunks < SCATTER_MIN_CHUNKS ||
	    e->sf.id.size > c->cfg->cache_size / SCATTER_MAX_SHARE)
		return;
	e->sweep = true;
	e->sweep_next = 0;
	e->sweep_gen = e->gen;
	/* Its chunks go to the kernel's page cache too, where the reader's
	 * faults find them without a request (cache_run_prefetch), unless the
	 * reader keeps no pages, the kernel opens files without telling us
	 * (no open to fence pushes with) or the file would take too much of
	 * memory.  An earlier sweep's inode goes either way. */
	e->push_ino = ino && c->src.push && !c->policy.no_open && e->sf.id.size <= c->push_max
			      ? ino
			      : NULL;
	stats_add(c->stats, ST_scatter_sweeps, 1);
}

/* Queue a prefetch job for chunk i of e (ABSENT, not queued); e->mu held.
 * False if the queue is full. */
static bool queue_chunk_locked(struct cache *c, struct cache_file *e, struct chunk *ch)
{
	struct prefetch_job job = {.entry = e, .idx = ch->idx, .tag = e->gen, .fd = -1};

	ch->queued = true;
	entry_ref(e);
	e->jobs++;
	if (prefetch_submit(c->pf, &job))
		return true;
	e->jobs--;
	__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL); /* the caller's is held */
	ch->queued = false;
	chunk_settle(e, ch);
	return false;
}

/* May a chunk of generation gen that a prefetch job fetched go to the
 * kernel's page cache now?  Only of a file being swept (a sequential
 * reader's readahead asks for its pages itself; the sweep's reader faults
 * wherever it likes), of the identity validated at the last open (gen),
 * to an inode that lives (push_ino), while no request that must come after
 * every push is being answered (fences), nobody may write the file through
 * the mount (writers: the kernel's pages would hold what they wrote) and
 * nothing made the entry serve from the source (bypass).  e->mu held. */
static bool push_ok_locked(struct cache *c, struct cache_file *e, uint64_t gen)
{
	return c->src.push && e->push_ino && !e->fences && !e->writers && !e->bypass &&
	       e->loaded && e->gen == gen && e->sweep_gen == gen;
}

/* Claim a push of chunk idx of generation gen, if push_ok_locked: the inode
 * it goes to (NULL: none), *off where; counted in e->pushing until
 * push_chunk.  e->mu held. */
static struct efs_inode *push_claim_locked(struct cache *c, struct cache_file *e, uint64_t gen,
					   uint32_t idx, uint64_t *off)
{
	if (!push_ok_locked(c, e, gen))
		return NULL;
	*off = (uint64_t)idx * e->sf.chunk_size;
	e->pushing++;
	return e->push_ino;
}

/* Push len bytes at off into ino's page cache (push_claim_locked); e->mu
 * is not held here.  True if the kernel took them. */
static bool push_chunk(struct cache *c, struct cache_file *e, struct efs_inode *ino,
		       uint64_t off, const void *buf, size_t len)
{
	int r = c->src.push(c->src.arg, ino, off, buf, len);

	pthread_mutex_lock(&e->mu);
	if (r < 0 && e->push_ino == ino)
		e->push_ino = NULL; /* the kernel forgot it, or refuses: stop */
	if (!--e->pushing)
		pthread_cond_broadcast(&e->cv); /* fences, cache_inode_release */
	pthread_mutex_unlock(&e->mu);
	if (r < 0)
		return false;
	stats_add(c->stats, ST_pushed_bytes, len);
	return true;
}

/* Queue a push of chunk idx, len bytes in buf (fetched by its reader, who
 * asked for some of its pages), if the file is being swept and pushed;
 * e->mu held.  The job holds a reference on buf, in the buffer budget: it
 * goes to c->pushq, never behind a sweep job that waits for the budget. */
static void queue_push_locked(struct cache *c, struct cache_file *e, uint32_t idx,
			      struct pbuf *buf, size_t len)
{
	struct prefetch_job job = {.entry = e, .idx = idx, .tag = e->gen, .fd = -1,
				   .buf = buf, .len = (uint32_t)len, .push = true};

	if (!c->pushq || !len || !push_ok_locked(c, e, e->gen))
		return;
	bufpool_ref(buf);
	entry_ref(e);
	e->jobs++;
	if (prefetch_submit(c->pushq, &job))
		return;
	e->jobs--;
	__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL); /* the caller's is held */
	bufpool_put(c->pool, buf);
}

/* A push job (queue_push_locked). */
static void run_push(struct cache *c, const struct prefetch_job *job)
{
	struct cache_file *e = job->entry;
	struct efs_inode *ino = NULL;
	uint64_t off = 0;

	pthread_mutex_lock(&e->mu);
	e->jobs--;
	ino = push_claim_locked(c, e, job->tag, job->idx, &off);
	entry_release_locked(c, e);
	pthread_mutex_unlock(&e->mu);
	if (ino)
		push_chunk(c, e, ino, off, ((struct pbuf *)job->buf)->data, job->len);
	bufpool_put(c->pool, job->buf);
	entry_put(c, e);
}

/* Keep a sweep going: at most a window of jobs queued for the entry, the
 * missing chunks in file order.  It ends at the end of the file, when the
 * entry is reset or goes to bypass, or when no handle has it open (the
 * reader went away).  e->mu held; called after each read of the entry and
 * after each of its prefetch jobs. */
static void sweep_locked(struct cache *c, struct cache_file *e)
{
	if (!e->sweep)
		return;
	/* The reader gone (its last close) ends the sweep; a mount that
	 * opens files without asking (-o immutable) tells of no close, so
	 * there the sweep runs to the end of the file. */
	if (!c->pf || e->bypass || !e->loaded || e->gen != e->sweep_gen ||
	    (!e->opens && !c->policy.no_open) || e->fetch_fd < 0) {
		e->sweep = false;
		return;
	}
	while (e->jobs < c->window && e->sweep_next < e->sf.nchunks) {
		struct chunk *ch = chunk_get(e, e->sweep_next);

		if (ch && (ch->queued || ch->state != CH_ABSENT)) {
			e->sweep_next++;
			continue;
		}
		if (!ch && !(ch = chunk_make(e, e->sweep_next)))
			return;
		if (!queue_chunk_locked(c, e, ch))
			return; /* the queue is full: on at the next read or job */
		e->sweep_next++;
	}
	if (e->sweep_next >= e->sf.nchunks)
		e->sweep = false;
}

/* Serve bytes [from, to) of chunk idx; e->mu held on entry and exit.
 * Returns the bytes added to rd, -EAGAIN if it had to wait (the caller must
 * look at the entry again: it may have been reset meanwhile), or -errno.
 * *waited: the chunk this read last waited for (UINT32_MAX: none), so that
 * a reader woken for another chunk's sake counts its wait once.  pages: ino,
 * or NULL for a reader that keeps no pages (note_miss_locked). */
static ssize_t read_chunk_locked(struct cache *c, struct cache_file *e, uint32_t idx,
				 struct efs_inode *ino, struct efs_inode *pages, size_t from, size_t to,
				 bool sequential, uint32_t *waited, struct cache_read *rd)
{
	const uint32_t want = store_chunk_len(&e->sf, idx);
	struct chunk *ch = chunk_get(e, idx);
	struct pbuf *buf;
	ssize_t n;

	if (rd->nseg + 2 >= CACHE_MAX_SEGS || rd->nbufs + 2 >= CACHE_MAX_SEGS)
		return -E2BIG;
	if (ch && ch->state == CH_BUSY && ch->mem) {
		/* Fetched and being written behind: the same bytes, from
		 * memory, without waiting for the write. */
		bufpool_ref(ch->mem);
		add_mem(rd, ch->mem, (char *)ch->mem->data + from, to - from);
		stats_add(c->stats, ST_hits, 1);
		stats_add(c->stats, ST_bytes_from_cache, to - from);
		return (ssize_t)(to - from);
	}
	if (ch && ch->state == CH_BUSY) {
		/* e->cv wakes every waiter of the entry whenever any of its
		 * chunks leaves BUSY: one wait for this chunk is counted once. */
		if (*waited != idx)
			stats_add(c->stats, ST_fetch_waits, 1);
		*waited = idx;
		pthread_cond_wait(&e->cv, &e->mu);
		return -EAGAIN;
	}

	if (ch && ch->state == CH_VERIFIED && ahead_serve_locked(c, e, idx, from, to, rd)) {
		stats_add(c->stats, ST_kept_hits, 1);
		return hit_count_locked(c, e, ch, to - from); /* prefetched, still in memory */
	}
	if (ch && (ch->state == CH_VERIFIED ||
		   (ch->state == CH_PRESENT && c->cfg->verify == VERIFY_NEVER)))
		return hit_locked(c, e, ch, from, to, rd);

	if (!ch && !(ch = chunk_make(e, idx)))
		return -ENOBUFS; /* no memory for its state: from the source */
	buf = chunk_buf(c, want);
	if (!buf) {
		chunk_settle(e, ch);
		return -ENOMEM;
	}
	ch->state = CH_BUSY;
	chunk_unlist(e, ch);
	e->busy++;

	if (ch->len) {
		/* PRESENT: check the bytes on disk before their first use. */
		if (verify_owned_locked(c, e, ch, buf->data)) {
			e->busy--;
			pthread_cond_broadcast(&e->cv);
			stats_add(c->stats, ST_hits, 1);
			stats_add(c->stats, ST_bytes_from_cache, to - from);
			add_mem(rd, buf, (char *)buf->data + from, to - from);
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
		bufpool_put(c->pool, buf);
		return n;
	}
	if ((size_t)n <= from) {
		bufpool_put(c->pool, buf);
		return 0;
	}
	note_miss_locked(c, e, pages, idx, sequential, buf->data, (size_t)n);
	/* The reader asked for some pages of the chunk; a swept file's
	 * reader gets the others in the kernel too. */
	queue_push_locked(c, e, idx, buf, (size_t)n);
	if ((size_t)n < to)
		to = (size_t)n;
	add_mem(rd, buf, (char *)buf->data + from, to - from);
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

		/* Fetch what is missing; verify ahead what a new daemon found on
		 * disk, so a reader after a restart does not hash each chunk in
		 * its own time. */
		if (ch && (ch->queued ||
			   !(ch->state == CH_ABSENT ||
			     (ch->state == CH_PRESENT && c->cfg->verify == VERIFY_ONCE))))
			continue;
		if (!ch && !(ch = chunk_make(e, i)))
			return;
		if (!queue_chunk_locked(c, e, ch))
			return; /* queue full: the reader fetches what it needs */
	}
}

/* A prefetch worker's job: fetch one chunk unless someone else did. */
void cache_run_prefetch(const struct prefetch_job *job, void *arg)
{
	struct cache *c = arg;
	struct cache_file *e = job->entry;
	struct chunk *ch;
	struct pbuf *buf;
	struct efs_inode *push_ino = NULL;
	uint64_t push_off = 0;
	uint32_t keep = 0, fetched = 0;
	uint64_t gen = 0;

	if (job->push) {
		run_push(c, job);
		return;
	}
	/* Room in the budget first, with no lock held (whoever gives it back
	 * may need e->mu): kept buffers not read yet go first, oldest first. */
	while (!(buf = bufpool_get(c->pool, c->cfg->chunk_size, BUFPOOL_TRY)) &&
	       ahead_drop_oldest(c))
		;
	if (!buf)
		buf = bufpool_get(c->pool, c->cfg->chunk_size, BUFPOOL_WAIT);
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
	if (buf && buf->size < e->sf.chunk_size) {
		/* A record of a larger chunk_size than the daemon's. */
		bufpool_put(c->pool, buf);
		buf = chunk_buf(c, e->sf.chunk_size);
	}
	if (buf) {
		bool was_present = ch->state == CH_PRESENT;

		ch->state = CH_BUSY;
		chunk_unlist(e, ch);
		e->busy++;
		if (was_present && verify_owned_locked(c, e, ch, buf->data)) {
			e->busy--;
			pthread_cond_broadcast(&e->cv);
		} else if (fetch_owned_locked(c, e, ch, e->fetch_fd, buf, true) > 0 &&
			   (ch = chunk_get(e, job->idx)) && ch->state == CH_VERIFIED) {
			/* Stored: pushed to the kernel, or kept in memory for
			 * the reader if it has not read it yet (below).  A
			 * reader that read some of it (from memory, while it
			 * was written) asked for those pages only. */
			fetched = store_chunk_len(&e->sf, job->idx);
			keep = ch->unread ? fetched : 0;
			gen = e->gen;
		}
	} else {
		chunk_settle(e, ch);
	}
out:
	sweep_locked(c, e);
	entry_release_locked(c, e);
	/* This job was the entry's last use and unloaded it: nobody is left
	 * to read the chunk from memory. */
	if (!e->loaded)
		keep = 0;
	if (fetched && e->loaded)
		push_ino = push_claim_locked(c, e, gen, job->idx, &push_off);
	pthread_mutex_unlock(&e->mu);
	if (push_ino && push_chunk(c, e, push_ino, push_off, buf->data, fetched)) {
		bufpool_put(c->pool, buf); /* the reader finds it in the kernel */
		keep = 0;
		buf = NULL;
	}
	if (keep)
		ahead_keep(c, e, gen, job->idx, keep, buf);
	else if (buf)
		bufpool_put(c->pool, buf);
	entry_put(c, e);
}

void cache_drop_prefetch(const struct prefetch_job *job, void *arg)
{
	struct cache *c = arg;
	struct cache_file *e = job->entry;
	struct chunk *ch;

	pthread_mutex_lock(&e->mu);
	e->jobs--;
	if (job->push) {
		bufpool_put(c->pool, job->buf);
	} else if (e->gen == job->tag && (ch = chunk_get(e, job->idx))) {
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
		   unsigned how, uint64_t kernel_size, struct cache_read *rd)
{
	const bool sequential = how & CACHE_READ_SEQUENTIAL;
	/* A sweep this reader starts pushes into the kernel for it. */
	struct efs_inode *pages = (how & CACHE_READ_NO_PAGES) ? NULL : ino;
	struct cache_file *e = ino->cf;
	uint64_t end, pos, cs, fsize, gen;
	uint32_t waited = UINT32_MAX;
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
		n = read_chunk_locked(c, e, idx, ino, pages, from, to, sequential, &waited, rd);
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
	sweep_locked(c, e);
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
	for (unsigned i = 0; i < rd->nbufs; i++) {
		/* The reply was made from the buffers this read took: none was
		 * given back and taken by another meanwhile. */
		assert(bufpool_held(rd->bufs[i], rd->buf_gen[i]));
		bufpool_put(c->pool, rd->bufs[i]);
	}
	if (rd->entry)
		entry_put(c, rd->entry);
	memset(rd, 0, sizeof(*rd));
}

/* ---- whole files fetched ahead of their open (cache_fill) -------------- */

/* May chunk idx of the file of identity id be stored in e, now?  With
 * take, the entry gets a record for id if it has none (prepared in memory,
 * as at a cold open) and the chunk becomes BUSY, ours.  Without, nothing
 * changes.  e->mu held.  Never waits: an entry someone else is busy with
 * is left to them. */
static bool fill_chunk_locked(struct cache *c, struct cache_file *e,
			      const struct store_identity *id, uint32_t idx, bool take,
			      struct chunk **out)
{
	struct chunk *ch;

	entry_check_store_gen_locked(c, e);
	if (pt_holds(&e->pt) || !evict_ready(c->ev))
		return false;
	if (!e->loaded) {
		/* An open (its record unreadable) or a reset in progress:
		 * theirs. */
		if (e->opens || e->jobs || !entry_quiet(e))
			return false;
		if (entry_load_locked(c, e) < 0)
			return false;
	}
	if (!e->loaded) {
		if (!take)
			return true;
		e->store_gen = cache_store_gen(c);
		if (store_prepare(id, (uint32_t)c->cfg->chunk_size, &e->sf) < 0)
			return false;
		e->loaded = true;
		e->need_create = true;
		e->bypass = false;
		/* Only an open validates; the pages the kernel may hold of
		 * this file are of no version it validated (cache_open). */
		e->validated = false;
		e->filled = true;
		e->gen++;
	}
	if (e->bypass || !cache_identity_equal(&e->sf.id, id) || idx >= e->sf.nchunks)
		return false;
	ch = chunk_get(e, idx);
	if (ch && (ch->state != CH_ABSENT || ch->queued))
		return false;
	if (!take)
		return true;
	if (!ch && !(ch = chunk_make(e, idx)))
		return false;
	ch->state = CH_BUSY;
	chunk_unlist(e, ch);
	e->busy++;
	*out = ch;
	return true;
}

bool cache_room_ahead(struct cache *c, uint64_t bytes)
{
	return evict_ready(c->ev) && c->cfg->cache_size / 16 >= bytes &&
	       evict_fs_room(c->ev, bytes) && cache_dir_owned(c);
}

bool cache_fill_wanted(struct cache *c, dev_t dev, uint64_t ino)
{
	struct cache_file *e;
	struct store_key k;
	bool wanted;

	if (!evict_ready(c->ev) || cache_key_of(c, dev, ino, &k) < 0)
		return false;
	e = entry_get(c, &k, true);
	if (!e)
		return true; /* the index is complete: no record on disk */
	pthread_mutex_lock(&e->mu);
	entry_check_store_gen_locked(c, e);
	wanted = !e->loaded && !e->opens && !e->jobs && entry_quiet(e) &&
		 !(e->rec->on_disk && e->rec->disk_gen == (uint32_t)cache_store_gen(c));
	pthread_mutex_unlock(&e->mu);
	entry_put(c, e);
	return wanted;
}

bool cache_knows(struct cache *c, dev_t dev, uint64_t ino)
{
	struct store_key k;

	return cache_key_of(c, dev, ino, &k) == 0 && cache_table_knows(c, &k);
}

bool cache_read_ahead(struct cache *c, dev_t dev, uint64_t ino)
{
	struct store_key k;

	/* Only a record the table knows: an unknown key would cost a
	 * failed lookup in cache_dir, a disk read when its dentries are
	 * gone too. */
	if (cache_key_of(c, dev, ino, &k) < 0 || !cache_table_knows(c, &k))
		return false;
	if (store_readahead(c->store, &k) < 0)
		return false;
	stats_add(c->stats, ST_record_readaheads, 1);
	return true;
}

/* Store one chunk read by cache_fill (buf: its bytes, len of them, hashed).
 * Returns true if it was taken (stored, or being written behind). */
static bool fill_commit(struct cache *c, struct cache_file *e, const struct store_identity *id,
			uint32_t idx, struct pbuf *buf, uint32_t len, uint64_t hash)
{
	struct chunk *ch = NULL;
	bool stored;

	pthread_mutex_lock(&e->mu);
	if (!fill_chunk_locked(c, e, id, idx, true, &ch)) {
		pthread_mutex_unlock(&e->mu);
		return false;
	}
	/* Readers of the chunk are served from buf at once (ch->mem). */
	if (write_behind_locked(c, e, ch, buf, len, hash)) {
		pthread_mutex_unlock(&e->mu);
		return true;
	}
	pthread_mutex_unlock(&e->mu);
	stored = store_chunk(c, e, idx, buf->data, len, hash);
	pthread_mutex_lock(&e->mu);
	/* Not "prefetched": the reader-less chunks of a sequential prefetch
	 * are kept in c->ahead for their reader; these have none yet. */
	finish_store_locked(c, e, ch, stored, hash, len, false);
	pthread_mutex_unlock(&e->mu);
	return stored;
}

ssize_t cache_fill(struct cache *c, int fd, const struct stat *st)
{
	const uint64_t cs = c->cfg->chunk_size;
	struct store_identity id, now_id;
	struct cache_file *e;
	struct store_key k;
	struct stat now;
	ssize_t total = 0;
	uint32_t nchunks;

	if (!S_ISREG(st->st_mode) || st->st_size <= 0 || !evict_ready(c->ev) ||
	    cache_key_of(c, st->st_dev, (uint64_t)st->st_ino, &k) < 0)
		return 0;
	e = entry_get(c, &k, false);
	if (!e)
		return 0;
	cache_identity_of(st, &id);
	nchunks = (uint32_t)(((uint64_t)st->st_size + cs - 1) / cs);
	for (uint32_t idx = 0; idx < nchunks; idx++) {
		const uint64_t start = (uint64_t)idx * cs;
		const uint32_t want =
			(uint32_t)((uint64_t)st->st_size - start < cs ? (uint64_t)st->st_size - start
								       : cs);
		struct pbuf *buf;
		uint64_t hash;
		bool ok;
		ssize_t n;

		pthread_mutex_lock(&e->mu);
		ok = fill_chunk_locked(c, e, &id, idx, false, NULL);
		pthread_mutex_unlock(&e->mu);
		if (!ok)
			continue;
		/* Never beyond the budget: a reader's fetch and write-behind
		 * need the room more. */
		if (bufpool_over(c->pool) || !(buf = bufpool_get(c->pool, want, BUFPOOL_TRY)))
			break;
		n = c->src.read(c->src.arg, fd, buf->data, want, (off_t)start);
		if (n < 0) {
			bufpool_put(c->pool, buf);
			total = total ? total : n;
			break;
		}
		stats_add(c->stats, ST_bytes_from_source, (uint64_t)n);
		/* Short, or the identity moved while we read: nothing of this
		 * version is stored (the next open sees what changed). */
		if ((uint32_t)n != want || c->src.stat_open(c->src.arg, fd, &now) < 0) {
			bufpool_put(c->pool, buf);
			break;
		}
		cache_identity_of(&now, &now_id);
		if (!cache_identity_equal(&now_id, &id)) {
			bufpool_put(c->pool, buf);
			break;
		}
		hash = csum64(buf->data, want);
		if (fill_commit(c, e, &id, idx, buf, want, hash))
			total += want;
		bufpool_put(c->pool, buf);
	}
	pthread_mutex_lock(&e->mu);
	entry_release_locked(c, e);
	pthread_mutex_unlock(&e->mu);
	entry_put(c, e);
	return total;
}
