/* cache_entry.c - an entry's record in memory, validation at open and
 * close, kernel passthrough.
 *
 * An entry loads its record from cache_dir when it is first needed (the
 * header, then only the slots that are in use), checks it against the
 * source at open (one round trip, or none while the metadata policy trusts
 * the last check), drops it when the source changed, and joins the idle
 * list when no handle uses it.  Every way a record leaves (a change, an
 * evict, eviction of a whole record) unlinks its files; only chunks of
 * records never complete are punched out (cache_int.h).  Locks: e->mu for
 * everything in an entry; the source is asked with no lock held (order:
 * cache_int.h).
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
#include "log.h"

/* ---- an entry's record ---------------------------------------------------- */

void entry_wait_quiet_locked(struct cache_file *e)
{
	while (!entry_quiet(e))
		pthread_cond_wait(&e->cv, &e->mu);
}

void entry_release_locked(struct cache *c, struct cache_file *e)
{
	if (e->opens || e->jobs || !entry_quiet(e))
		return;
	if (e->fetch_fd >= 0) {
		close(e->fetch_fd);
		e->fetch_fd = -1;
	}
	/* Kept loaded while the kernel knows the file (it may open it again
	 * soon), within the idle list's bound; else unloaded now. */
	if (e->loaded && __atomic_load_n(&e->irefs, __ATOMIC_ACQUIRE))
		idle_join_locked(c, e);
	else if (e->loaded)
		entry_unload_locked(c, e);
}

void entry_settle_condemned_locked(struct cache *c, struct cache_file *e)
{
	struct rec *r = e->rec;
	bool condemned;
	int rr;

	evict_lock(c->ev);
	condemned = r->condemned;
	r->condemned = false;
	evict_unlock(c->ev);
	if (!condemned)
		return;
	/* Its bytes left the usage when eviction picked it. */
	r->verified_stamp = 0;
	rr = store_remove(c->store, &e->key);
	if (rr < 0 && rr != -EBUSY)
		log_debug("cache: removing evicted record %s failed: %s", e->key.hex,
			  strerror(-rr));
	r->on_disk = false;
}

/* The index (or a load) says there is no record. */
static void no_record_locked(struct cache *c, struct cache_file *e)
{
	e->rec->on_disk = false;
	evict_del(c->ev, &e->rec->lru);
}

/* The record's files as they are now (inode, size, mtime of both): equal
 * stamps mean nothing wrote them in between.  0 if they cannot be read. */
static uint64_t record_stamp(const struct store_file *sf)
{
	struct stat m, d;
	uint64_t v[8];

	if (fstat(sf->meta_fd, &m) < 0 || fstat(sf->data_fd, &d) < 0)
		return 0;
	v[0] = m.st_ino, v[1] = (uint64_t)m.st_size, v[2] = (uint64_t)m.st_mtim.tv_sec;
	v[3] = (uint64_t)m.st_mtim.tv_nsec, v[4] = d.st_ino, v[5] = (uint64_t)d.st_size;
	v[6] = (uint64_t)d.st_mtim.tv_sec, v[7] = (uint64_t)d.st_mtim.tv_nsec;
	return csum64(v, sizeof(v)) | 1;
}

struct load_ctx {
	struct cache_file *e;
	uint32_t found;
};

static int load_slot(uint32_t idx, const struct store_slot *slot, void *arg)
{
	struct load_ctx *l = arg;
	struct cache_file *e = l->e;
	struct chunk *ch = chunk_make(e, idx);

	if (!ch)
		return -ENOMEM;
	ch->hash = slot->hash;
	ch->len = slot->len;
	ch->state = CH_PRESENT;
	l->found++;
	e->nstored++;
	entry_chunk_stored_locked(e, ch);
	return 0;
}

/* Bytes of the record as the LRU counts them: its metadata file's blocks
 * (at least one) and each stored chunk's. */
static uint64_t record_bytes_locked(struct cache_file *e)
{
	struct store_file m = e->sf;
	uint64_t bytes = 0;

	m.data_fd = -1;
	e->meta_bytes = store_file_usage(&m);
	if (e->meta_bytes < BLOCK)
		e->meta_bytes = BLOCK;
	for (struct chunk *ch = e->hot; ch; ch = ch->colder)
		bytes += round_block(ch->len);
	return e->meta_bytes + bytes;
}

int entry_load_locked(struct cache *c, struct cache_file *e)
{
	struct load_ctx ctx;
	struct store_file sf;
	int r;

	if (e->loaded)
		return 0;
	entry_settle_condemned_locked(c, e);
	/* Once the index is complete, a key it did not find has no record:
	 * a file never cached costs no cache_dir lookup at open. */
	if (e->rec->disk_gen != (uint32_t)cache_store_gen(c))
		e->rec->on_disk = false; /* that was in a cache_dir since removed */
	if (!e->rec->on_disk && evict_ready(c->ev))
		return 0;
	r = store_open_record(c->store, &e->key, &sf);
	if (cache_no_fds(r)) {
		cache_out_of_fds(c, e, r);
		r = store_open_record(c->store, &e->key, &sf);
	}
	if (r == -EBADMSG || (r == 0 && sf.chunk_size != c->cfg->chunk_size)) {
		/* Corrupt, or of another chunk_size: the next store replaces it. */
		log_debug("cache: record %s is corrupt or of another chunk size, removing it",
			  e->key.hex);
		if (r == 0)
			store_file_close(&sf);
		store_remove(c->store, &e->key);
		r = -ENOENT;
	}
	if (r == -ENOENT) {
		no_record_locked(c, e);
		return 0;
	}
	if (r < 0)
		return r; /* cache trouble: this open reads from the source */
	e->sf = sf;
	ctx.e = e;
	ctx.found = 0;
	r = store_each_slot(&e->sf, load_slot, &ctx);
	if (r < 0) {
		chunk_map_free(e);
		store_file_close(&e->sf);
	}
	if (r == -EBADMSG) {
		/* Its slot array is cut short (records are renamed into place
		 * whole): corrupt. */
		log_debug("cache: record %s is cut short, removing it", e->key.hex);
		store_remove(c->store, &e->key);
		no_record_locked(c, e);
		return 0;
	}
	if (r < 0)
		return r;
	/* Checked by this daemon before it was unloaded, and unchanged since
	 * (the same files, the same slots): no need to hash them again. */
	if (e->rec->verified_stamp && c->cfg->verify == VERIFY_ONCE &&
	    ctx.found == e->rec->verified_count && e->rec->verified_stamp == record_stamp(&e->sf))
		for (struct chunk *ch = e->hot; ch; ch = ch->colder)
			ch->state = CH_VERIFIED;
	e->rec->verified_stamp = 0;
	e->disk_differs = false;
	e->loaded = true;
	e->need_create = false;
	e->store_gen = cache_store_gen(c);
	e->gen++;
	e->rec->on_disk = true;
	e->rec->disk_gen = (uint32_t)e->store_gen;
	evict_add(c->ev, &e->rec->lru, record_bytes_locked(e));
	return 0;
}

void entry_unload_locked(struct cache *c, struct cache_file *e)
{
	bool all = e->loaded && !e->need_create && !e->bypass && !e->disk_differs &&
		   e->nstored > 0 && e->store_gen == cache_store_gen(c);

	for (uint32_t i = 0; all && i < e->map.cap; i++)
		all = !e->map.slot[i] || !e->map.slot[i]->len ||
		      e->map.slot[i]->state == CH_VERIFIED;
	e->rec->verified_stamp = all ? record_stamp(&e->sf) : 0;
	e->rec->verified_count = e->nstored;
	e->disk_differs = false;
	chunk_map_free(e);
	store_file_close(&e->sf);
	e->loaded = false;
	e->need_create = false;
	e->meta_bytes = 0;
	e->gen++;
}

bool entry_remove_record_locked(struct cache *c, struct cache_file *e)
{
	bool had = false;
	int r;

	entry_settle_condemned_locked(c, e);
	if (e->loaded)
		entry_unload_locked(c, e);
	if (e->rec->on_disk || !evict_ready(c->ev)) {
		r = store_remove(c->store, &e->key);
		if (r < 0 && r != -EBUSY)
			log_debug("cache: removing record %s failed: %s", e->key.hex,
				  strerror(-r));
		had = r > 0;
	}
	e->rec->verified_stamp = 0;
	no_record_locked(c, e);
	return had;
}

void entry_chunk_stored_locked(struct cache_file *e, struct chunk *ch)
{
	chunk_list_hot(e, ch);
}

uint64_t entry_drop_chunk_locked(struct cache *c, struct cache_file *e, struct chunk *ch)
{
	const uint64_t bytes = round_block(ch->len);

	if (e->sf.meta_fd >= 0 && e->sf.data_fd >= 0 && store_drop_chunk(&e->sf, ch->idx) < 0)
		e->disk_differs = true;
	chunk_unlist(e, ch);
	if (ch->len)
		e->nstored--;
	if (bytes)
		evict_shrink(c->ev, &e->rec->lru, bytes);
	if (ch->unread)
		stats_add(c->stats, ST_prefetch_unused_bytes, ch->len);
	ch->unread = false;
	ch->len = 0;
	if (ch->state != CH_BUSY) {
		ch->state = CH_ABSENT;
		chunk_settle(e, ch);
	}
	return bytes;
}

void entry_check_store_gen_locked(struct cache *c, struct cache_file *e)
{
	uint64_t gen = cache_store_gen(c);

	if (e->store_gen == gen)
		return;
	/* cache_dir was recreated: what we knew lives in deleted files.  A
	 * chunk being written into them finishes first. */
	if (e->loaded && !entry_quiet(e))
		return;
	if (e->loaded)
		entry_unload_locked(c, e);
	e->store_gen = gen;
}

void cache_identity_of(const struct stat *st, struct store_identity *id)
{
	id->ino = st->st_ino;
	id->size = (uint64_t)st->st_size;
	id->mtime_sec = st->st_mtim.tv_sec;
	id->mtime_nsec = (uint32_t)st->st_mtim.tv_nsec;
	id->ctime_sec = st->st_ctim.tv_sec;
	id->ctime_nsec = (uint32_t)st->st_ctim.tv_nsec;
}

/* Coherency check: stale unless every field matches. */
bool cache_identity_equal(const struct store_identity *a, const struct store_identity *b)
{
	return a->ino == b->ino && a->size == b->size && a->mtime_sec == b->mtime_sec &&
	       a->mtime_nsec == b->mtime_nsec && a->ctime_sec == b->ctime_sec &&
	       a->ctime_nsec == b->ctime_nsec;
}

/* Replace the record with an empty one for id (written with its first
 * chunk, off the open's reply path: a file opened and never read costs no
 * disk).  The old record's files are unlinked, never truncated. */
static void reset_locked(struct cache *c, struct cache_file *e, const struct store_identity *id)
{
	int r;

	if (pt_holds(&e->pt)) {
		/* The kernel reads the data file (passthrough): its bytes may
		 * not change.  Nothing is served from it meanwhile; the first
		 * open after the last passthrough open resets it. */
		e->bypass = true;
		return;
	}
	entry_wait_quiet_locked(e);
	if (e->loaded)
		stats_add(c->stats, ST_stale_dropped, 1);
	entry_remove_record_locked(c, e);
	e->bypass = false;
	e->store_gen = cache_store_gen(c);
	r = store_prepare(id, (uint32_t)c->cfg->chunk_size, &e->sf);
	if (r < 0) {
		/* Cache trouble: this file is read from the source for now. */
		log_once(c->logged_store, LOG_LVL_WARN,
			 "cache: cannot keep a record in cache_dir '%s': %s; reading from the "
			 "source",
			 store_path(c->store), strerror(-r));
		stats_add(c->stats, r == -ENOSPC ? ST_cache_enospc : ST_cache_io_errors, 1);
		e->bypass = true;
		return;
	}
	e->loaded = true;
	e->need_create = true;
	e->gen++;
}

static struct cache_file *entry_of_inode(struct cache *c, struct efs_inode *ino)
{
	struct cache_file *e;

	pthread_mutex_lock(&ino->lock);
	e = ino->cf;
	if (!e) {
		struct store_key k;

		if (cache_key_of(c, ino->dev, (uint64_t)ino->ino, &k) == 0)
			e = entry_get(c, &k, false);
		if (e)
			__atomic_add_fetch(&e->irefs, 1, __ATOMIC_RELAXED);
		ino->cf = e; /* the inode's reference */
	}
	pthread_mutex_unlock(&ino->lock);
	return e;
}

void cache_inode_release(struct efs_inode *ino, void *arg)
{
	struct cache *c = arg;
	struct cache_file *e = ino->cf;

	if (!e)
		return;
	/* Pushes name the inode by its address, which a new inode may take
	 * once this one is freed: none may start after this, and those in
	 * flight end at once (the kernel forgot the inode: ENOENT). */
	pthread_mutex_lock(&e->mu);
	if (e->push_ino == ino)
		e->push_ino = NULL;
	while (e->pushing)
		pthread_cond_wait(&e->cv, &e->mu);
	pthread_mutex_unlock(&e->mu);
	ino->cf = NULL;
	/* The kernel forgot the file: the idle list keeps records of files it
	 * knows, not of every file ever read (fds at rest stay flat). */
	if (__atomic_sub_fetch(&e->irefs, 1, __ATOMIC_ACQ_REL) == 0) {
		pthread_mutex_lock(&e->mu);
		idle_leave_locked(c, e);
		if (e->loaded && !e->opens && !e->jobs && entry_quiet(e))
			entry_unload_locked(c, e);
		pthread_mutex_unlock(&e->mu);
	}
	entry_put(c, e); /* readers and jobs hold references of their own */
}

void cache_out_of_fds(struct cache *c, struct cache_file *e, int err)
{
	unsigned n = idle_trim(c, e, true);

	if (c->src.out_of_fds)
		c->src.out_of_fds(c->src.arg);
	log_once(c->logged_fds, LOG_LVL_WARN,
		 "cache: out of file descriptors (%s) opening records in cache_dir '%s': gave "
		 "back %u idle records' fds and retried; raise the limit (LimitNOFILE=, "
		 "ulimit -n) if this recurs",
		 strerror(-err), store_path(c->store), n);
}

/* Fetches read the source with O_DIRECT where it allows it, small files
 * too.  The bytes then come from the server, not from the source client's
 * page cache: a fetch fd lives as long as some open of the inode does, and
 * nothing revalidates that page cache meanwhile, so a buffered fd could
 * hand a later version's fetch pages read while another host rewrote the
 * file, and the cache would store them under the new identity.  (It would
 * also only hold a third copy of data we cache ourselves, and on NFS a
 * direct read of a chunk is sent as parallel RPCs.)  A source that refuses
 * O_DIRECT is read buffered. */
int cache_open_fetch(struct cache *c, struct efs_inode *ino, bool named)
{
	int (*op)(void *, struct efs_inode *, int) = named ? c->src.open_named : c->src.open_object;
	int fd;

	fd = op(c->src.arg, ino, O_RDONLY | O_DIRECT);
	if (fd == -EINVAL)
		fd = op(c->src.arg, ino, O_RDONLY);
	return fd;
}

/* Before an open is answered: the entry loaded (its record read once) and
 * current.  Returns entry_load_locked's result. */
static int open_prepare_locked(struct cache *c, struct cache_file *e)
{
	entry_check_store_gen_locked(c, e);
	idle_leave_locked(c, e);
	return entry_load_locked(c, e);
}

/* ttl=never: are the attributes last reported for ino (a lookup, an
 * index of its directory) the identity of the entry's record? */
static bool attr_is_record_locked(struct cache *c, struct cache_file *e, struct efs_inode *ino,
				  const struct meta_attr *attr)
{
	const struct store_identity *id = &e->sf.id;

	return c->policy.immutable && attr->seen && id->ino == (uint64_t)ino->ino &&
	       id->size == (uint64_t)attr->size && id->mtime_sec == attr->mtime.tv_sec &&
	       id->mtime_nsec == (uint32_t)attr->mtime.tv_nsec &&
	       id->ctime_sec == attr->ctime.tv_sec && id->ctime_nsec == (uint32_t)attr->ctime.tv_nsec;
}

int cache_open(struct cache *c, struct efs_inode *ino, int open_fd, const struct meta_attr *attr,
	       bool *keep_cache)
{
	struct store_identity id;
	struct cache_file *e;
	struct timespec now;
	struct stat st;
	bool trusted, full, cold, drop_pages;
	int r, lr, fd = -1;

	*keep_cache = false;
	if (!S_ISREG(ino->type))
		return 0;
	e = entry_of_inode(c, ino);
	if (!e)
		return 0; /* no memory for an entry: the file is read uncached */

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&e->mu);
	lr = open_prepare_locked(c, e);
	trusted = lr == 0 && e->loaded && !e->bypass &&
		  meta_open_trusts(&c->policy, attr,
				   e->validated ? meta_elapsed(&e->validated_at, &now) : -1.0, &now);
	if (!trusted && lr == 0 && e->loaded && !e->bypass && attr_is_record_locked(c, e, ino, attr)) {
		/* ttl=never: what the source last reported for the file (its
		 * lookup, its directory's index) is the record's identity; that
		 * is the one validation ttl=never asks for. */
		trusted = true;
		e->validated = true;
		e->validated_at = now;
		e->validated_wall = time(NULL);
	}
	full = lr == 0 && e->loaded && !e->bypass && !e->need_create &&
	       e->nstored == e->sf.nchunks;
	/* A record cache_fill made: the kernel's pages of the file, if it has
	 * any, are of no version this open has seen. */
	drop_pages = e->filled;
	if (trusted)
		e->filled = false;
	/* Counted as open from here (also while the source is asked), so that
	 * the idle list does not take the record meanwhile. */
	e->opens++;
	if (open_fd >= 0)
		e->writers++; /* no pushes while it may write (cache_read.c) */
	if (e->victims && open_fd < 0) {
		/* Its name may go now (cache_victim_begin): the check opens
		 * the object and keeps the fd, so this reader can read it on
		 * once the name is gone. */
		trusted = false;
		full = false;
	}
	pthread_mutex_unlock(&e->mu);
	if (trusted) {
		*keep_cache = !drop_pages;
		return 0;
	}

	/* One round trip, without holding the entry: the source may be slow. */
	if (open_fd >= 0) {
		r = c->src.stat_open(c->src.arg, open_fd, &st);
	} else if (full) {
		r = c->src.stat_named(c->src.arg, ino, &st);
	} else {
		fd = cache_open_fetch(c, ino, true);
		r = fd < 0 ? fd : c->src.stat_open(c->src.arg, fd, &st);
	}
	if (r == 0 && (st.st_ino != ino->ino || st.st_dev != ino->dev))
		r = -ESTALE;
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		pthread_mutex_lock(&e->mu);
		e->opens--;
		if (open_fd >= 0)
			e->writers--;
		entry_release_locked(c, e);
		pthread_mutex_unlock(&e->mu);
		/* Deleted or replaced on another host: give its space back now
		 * (the kernel may never open this inode again to tell us). */
		if (r == -ESTALE && c->src.object_gone && c->src.object_gone(c->src.arg, ino)) {
			log_debug("cache: source file of inode %llu is gone: record removed",
				  (unsigned long long)ino->ino);
			cache_source_gone(c, ino->dev, (uint64_t)ino->ino);
		}
		return r; /* EIO etc. delete nothing */
	}
	cache_identity_of(&st, &id);
	/* (stat_named told the layer above itself.) */
	if ((open_fd >= 0 || !full) && c->src.validated)
		c->src.validated(c->src.arg, ino, &st);

	pthread_mutex_lock(&e->mu);
	stats_add(c->stats, ST_validations, 1);
	lr = open_prepare_locked(c, e);
	cold = open_fd < 0 && lr == 0 && !e->loaded;
	if (lr < 0) {
		/* The record could not be read (cache trouble): this open reads
		 * from the source; the next one tries again. */
		*keep_cache = false;
	} else if (e->loaded && !e->bypass && cache_identity_equal(&e->sf.id, &id)) {
		*keep_cache = !e->filled;
	} else {
		reset_locked(c, e, &id);
		*keep_cache = false;
	}
	if (lr == 0)
		e->filled = false;
	e->validated = lr == 0;
	e->validated_at = now;
	e->validated_wall = time(NULL);
	if (fd >= 0 && e->fetch_fd < 0) {
		e->fetch_fd = fd;
		fd = -1;
	}
	pthread_mutex_unlock(&e->mu);
	if (fd >= 0)
		close(fd);
	if (cold && c->src.cold_open)
		c->src.cold_open(c->src.arg, ino, &st);
	return 0;
}

void cache_close(struct cache *c, struct efs_inode *ino, bool writer)
{
	struct cache_file *e = ino->cf;

	if (!e || !S_ISREG(ino->type))
		return;
	pthread_mutex_lock(&e->mu);
	if (e->opens)
		e->opens--;
	if (writer && e->writers)
		e->writers--;
	entry_release_locked(c, e);
	pthread_mutex_unlock(&e->mu);
}

int cache_dup_checked(struct cache *c, struct efs_inode *ino)
{
	struct cache_file *e = ino->cf;
	int fd = -1;

	(void)c;
	if (!e || !S_ISREG(ino->type))
		return -ESTALE;
	pthread_mutex_lock(&e->mu);
	/* A fetch fd is of the entry's object (the entry is the object's
	 * inode number's, which the object keeps while an fd holds it). */
	if (e->opens && e->fetch_fd >= 0)
		fd = fcntl(e->fetch_fd, F_DUPFD_CLOEXEC, 0);
	pthread_mutex_unlock(&e->mu);
	return fd < 0 ? -ESTALE : fd;
}

bool cache_victim_begin(struct cache *c, struct efs_inode *ino)
{
	struct cache_file *e;
	bool r;

	if (!S_ISREG(ino->type) || !(e = entry_of_inode(c, ino)))
		return false;
	/* Under e->mu as cache_open's count of the open and its look at
	 * e->victims: one of the two sees the other. */
	pthread_mutex_lock(&e->mu);
	e->victims++;
	r = e->opens > 0;
	pthread_mutex_unlock(&e->mu);
	return r;
}

void cache_victim_end(struct cache *c, struct efs_inode *ino)
{
	struct cache_file *e = ino->cf;

	(void)c;
	if (!e || !S_ISREG(ino->type))
		return;
	pthread_mutex_lock(&e->mu);
	if (e->victims)
		e->victims--;
	pthread_mutex_unlock(&e->mu);
}

void cache_adopt_source(struct cache *c, struct efs_inode *ino, int fd)
{
	struct cache_file *e = ino->cf;

	(void)c;
	if (e && S_ISREG(ino->type)) {
		pthread_mutex_lock(&e->mu);
		if (e->opens && e->fetch_fd < 0) {
			e->fetch_fd = fd;
			fd = -1;
		}
		pthread_mutex_unlock(&e->mu);
	}
	if (fd >= 0)
		close(fd);
}

int cache_fence_begin(struct cache *c, struct efs_inode *ino, bool may_wait)
{
	struct cache_file *e;

	if (!c->src.push || !S_ISREG(ino->type) || !(e = entry_of_inode(c, ino)))
		return 0;
	pthread_mutex_lock(&e->mu);
	if (e->pushing && !may_wait) {
		pthread_mutex_unlock(&e->mu);
		return -EWOULDBLOCK;
	}
	e->fences++;
	if (e->pushing)
		stats_add(c->stats, ST_push_waits, 1);
	while (e->pushing)
		pthread_cond_wait(&e->cv, &e->mu);
	pthread_mutex_unlock(&e->mu);
	return 1;
}

void cache_fence_end(struct cache *c, struct efs_inode *ino)
{
	struct cache_file *e = ino->cf;

	if (!c->src.push || !S_ISREG(ino->type) || !e)
		return;
	pthread_mutex_lock(&e->mu);
	if (e->fences)
		e->fences--;
	pthread_mutex_unlock(&e->mu);
}

void cache_written(struct cache *c, struct efs_inode *ino)
{
	struct cache_file *e = ino->cf;

	(void)c;
	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	e->bypass = true;
	pthread_mutex_unlock(&e->mu);
}

/* ---- kernel passthrough (passthrough.h) ------------------------------- */

static bool all_verified_locked(struct cache_file *e)
{
	for (uint32_t i = 0; i < e->map.cap; i++) {
		struct chunk *ch = e->map.slot[i];

		if (ch && ch->state != CH_VERIFIED && ch->state != CH_ABSENT)
			return false;
	}
	return true;
}

int cache_pt_open(struct cache *c, struct efs_inode *ino, void *req, bool ro, bool unchanged,
		  int *backing_id)
{
	struct cache_file *e;
	bool eligible, held;
	int mode;

	*backing_id = 0;
	if (!S_ISREG(ino->type) || !(e = entry_of_inode(c, ino)))
		return PT_NONE;
	pthread_mutex_lock(&e->mu);
	/* Every chunk VERIFIED by this daemon (verify=always checks at every
	 * read, which the kernel would skip), the record on disk and of the
	 * current cache_dir. */
	eligible = ro && unchanged && c->cfg->verify != VERIFY_ALWAYS && !e->bypass &&
		   e->validated && !e->creating && e->store_gen == cache_store_gen(c) &&
		   entry_complete(e) && e->sf.data_fd >= 0 && all_verified_locked(e);
	held = pt_holds(&e->pt);
	mode = pt_open_locked(&e->pt, req, ro, unchanged, eligible, e->loaded ? e->sf.data_fd : -1,
			      e->sf.id.size, backing_id);
	/* While the kernel reads the data file, eviction never walks it. */
	if (!held && pt_holds(&e->pt))
		evict_hold(c->ev, &e->rec->lru);
	pthread_mutex_unlock(&e->mu);
	return mode;
}

void cache_pt_close(struct cache *c, struct efs_inode *ino, void *req, int mode)
{
	struct cache_file *e = ino->cf;

	if (!e || mode <= PT_NONE)
		return;
	pthread_mutex_lock(&e->mu);
	pt_release_locked(&e->pt, req, (enum pt_mode)mode);
	if (mode == PT_PASSTHROUGH && !pt_holds(&e->pt))
		evict_unhold(c->ev, &e->rec->lru);
	pthread_mutex_unlock(&e->mu);
}
