/* dirindex.c - the directory index (see dirindex.h for the format).
 *
 * State: a hash table of published snapshots keyed by (dev, ino), and an
 * LRU list of them for the memory bound, all under x->mu.  A snapshot's
 * listing never changes once published: a new pass publishes a new one,
 * which replaces the old in the table; readers holding the old one (a
 * directory handle listing it) keep it until their dix_put.
 *
 *   table: (dev, ino) -> dix_dir  (listed)      LRU: hot ... cold
 *   a snapshot unlisted (replaced, forgotten, or trimmed) is freed at its
 *   last reference; a listed one with no reference may be trimmed when the
 *   snapshots in memory pass mem_max (it can be read from the store again).
 *
 * Invariants: d->listed <=> d is in the table and on the LRU; x->bytes is
 * the sum of the listed snapshots' bytes.  Store calls and encoding happen
 * without x->mu; a snapshot loaded from the store while another thread
 * published one for the same directory gives way to the published one.
 */
#include "dirindex.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "le.h"

#define DIX_MAGIC "EFSCDIRX"
#define DIX_NO_BTIME 0xffffffffu
#define DIX_BUCKETS 4096 /* power of two; chains grow past it, fine for a cache */

struct dix {
	pthread_mutex_t mu;
	struct dix_dir *buckets[DIX_BUCKETS]; /* protected by mu */
	struct dix_dir lru;                   /* head: lru_next is the hottest */
	size_t bytes, mem_max;                /* protected by mu */
	uint64_t ndirs, loads, saves, bad;    /* protected by mu */
	/* Moves at each dix_forget (twice: before and after the store's
	 * remove), so that a load that read the store meanwhile publishes
	 * nothing (get).  Protected by mu. */
	uint64_t forgets;
	struct dix_store_ops ops;
};

struct dix_build {
	struct stat dir;
	uint64_t dot_ino, dotdot_ino;
	struct dix_entry *ent;
	uint32_t n, cap;
	char *names;
	uint32_t names_len, names_cap;
	bool bad;
};

/* ---- names and entries --------------------------------------------------- */

static bool good_name(const char *name, size_t len)
{
	if (len == 0 || len > DIX_NAME_MAX)
		return false;
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
		return false;
	return !memchr(name, '/', len) && !memchr(name, '\0', len);
}

/* Bytewise order of two names, the shorter first on a common prefix. */
static int name_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

const struct dix_entry *dix_find(const struct dix_dir *d, const char *name, size_t len)
{
	uint32_t lo = 0, hi = d->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct dix_entry *e = &d->ent[mid];
		int c = name_cmp(name, len, d->names + e->name_off, e->name_len);

		if (c == 0)
			return e;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

void dix_stat(const struct dix_entry *e, uint64_t dev, struct stat *st)
{
	const struct dix_attr *a = &e->a;

	memset(st, 0, sizeof(*st));
	st->st_dev = (dev_t)dev;
	st->st_ino = (ino_t)a->ino;
	st->st_mode = (mode_t)a->mode;
	st->st_nlink = (nlink_t)a->nlink;
	st->st_uid = (uid_t)a->uid;
	st->st_gid = (gid_t)a->gid;
	st->st_rdev = (dev_t)a->rdev;
	st->st_size = (off_t)a->size;
	st->st_blksize = (blksize_t)a->blksize;
	st->st_blocks = (blkcnt_t)a->blocks;
	st->st_atim = (struct timespec){.tv_sec = a->atime_s, .tv_nsec = a->atime_ns};
	st->st_mtim = (struct timespec){.tv_sec = a->mtime_s, .tv_nsec = a->mtime_ns};
	st->st_ctim = (struct timespec){.tv_sec = a->ctime_s, .tv_nsec = a->ctime_ns};
}

bool dix_btime(const struct dix_entry *e, struct timespec *out)
{
	if (e->a.btime_ns == DIX_NO_BTIME)
		return false;
	*out = (struct timespec){.tv_sec = e->a.btime_s, .tv_nsec = e->a.btime_ns};
	return true;
}

static void attr_of(const struct stat *st, const struct timespec *btime, struct dix_attr *a)
{
	a->ino = (uint64_t)st->st_ino;
	a->size = (uint64_t)st->st_size;
	a->blocks = (uint64_t)st->st_blocks;
	a->rdev = (uint64_t)st->st_rdev;
	a->atime_s = st->st_atim.tv_sec;
	a->atime_ns = (uint32_t)st->st_atim.tv_nsec;
	a->mtime_s = st->st_mtim.tv_sec;
	a->mtime_ns = (uint32_t)st->st_mtim.tv_nsec;
	a->ctime_s = st->st_ctim.tv_sec;
	a->ctime_ns = (uint32_t)st->st_ctim.tv_nsec;
	a->btime_s = btime ? btime->tv_sec : 0;
	a->btime_ns = btime ? (uint32_t)btime->tv_nsec : DIX_NO_BTIME;
	a->mode = (uint32_t)st->st_mode;
	a->nlink = (uint32_t)st->st_nlink;
	a->uid = (uint32_t)st->st_uid;
	a->gid = (uint32_t)st->st_gid;
	a->blksize = (uint32_t)st->st_blksize;
}

static size_t dir_bytes(const struct dix_dir *d)
{
	return sizeof(*d) + (size_t)d->n * sizeof(struct dix_entry) + d->names_len;
}

void dix_dir_free(struct dix_dir *d)
{
	if (!d)
		return;
	free(d->ent);
	free(d->names);
	free(d);
}

bool dix_dir_same(const struct dix_dir *d, const struct stat *st)
{
	return (uint64_t)st->st_ino == d->ino && d->mtime.tv_sec == st->st_mtim.tv_sec && d->mtime.tv_nsec == st->st_mtim.tv_nsec &&
	       d->ctime.tv_sec == st->st_ctim.tv_sec && d->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

/* ---- encoding ------------------------------------------------------------ */

static bool ns_ok(uint32_t ns)
{
	return ns < 1000000000u;
}

int dix_encode(const struct dix_dir *d, void **buf, size_t *len)
{
	size_t body = (size_t)d->n * DIX_ENTRY_SIZE + d->names_len;
	size_t total = DIX_HEADER_SIZE + body;
	unsigned char *p = calloc(1, total), *q;

	if (!p)
		return -ENOMEM;
	memcpy(p, DIX_MAGIC, 8);
	put32(p + 8, DIX_FORMAT_VERSION);
	put32(p + 12, d->n);
	put64(p + 16, d->ino);
	put64(p + 24, (uint64_t)d->mtime.tv_sec);
	put64(p + 32, (uint64_t)d->ctime.tv_sec);
	put32(p + 40, (uint32_t)d->mtime.tv_nsec);
	put32(p + 44, (uint32_t)d->ctime.tv_nsec);
	put64(p + 48, d->dot_ino);
	put64(p + 56, d->dotdot_ino);
	put32(p + 64, d->names_len);
	q = p + DIX_HEADER_SIZE;
	for (uint32_t i = 0; i < d->n; i++, q += DIX_ENTRY_SIZE) {
		const struct dix_attr *a = &d->ent[i].a;

		put64(q + 0, a->ino);
		put64(q + 8, a->size);
		put64(q + 16, a->blocks);
		put64(q + 24, a->rdev);
		put64(q + 32, (uint64_t)a->atime_s);
		put64(q + 40, (uint64_t)a->mtime_s);
		put64(q + 48, (uint64_t)a->ctime_s);
		put64(q + 56, (uint64_t)a->btime_s);
		put32(q + 64, a->atime_ns);
		put32(q + 68, a->mtime_ns);
		put32(q + 72, a->ctime_ns);
		put32(q + 76, a->btime_ns);
		put32(q + 80, a->mode);
		put32(q + 84, a->nlink);
		put32(q + 88, a->uid);
		put32(q + 92, a->gid);
		put32(q + 96, a->blksize);
		put32(q + 100, d->ent[i].name_off);
		put16(q + 104, d->ent[i].name_len);
		put16(q + 106, d->ent[i].flags);
	}
	if (d->names_len)
		memcpy(q, d->names, d->names_len);
	put32(p + 68, (uint32_t)csum64(p + DIX_HEADER_SIZE, body));
	put32(p + 76, (uint32_t)csum64(p, 76));
	*buf = p;
	*len = total;
	return 0;
}

int dix_decode(const void *buf, size_t len, uint64_t dev, uint64_t ino, struct dix_dir **out)
{
	const unsigned char *p = buf, *q;
	struct dix_dir *d;
	uint32_t n, names_len, off = 0;

	if (len < DIX_HEADER_SIZE || memcmp(p, DIX_MAGIC, 8) ||
	    get32(p + 8) != DIX_FORMAT_VERSION || get32(p + 76) != (uint32_t)csum64(p, 76))
		return -EBADMSG;
	n = get32(p + 12);
	names_len = get32(p + 64);
	if (n > DIX_MAX_ENTRIES || len > DIX_MAX_BYTES || get64(p + 16) != ino || get32(p + 72) != 0 ||
	    !ns_ok(get32(p + 40)) || !ns_ok(get32(p + 44)) ||
	    len != DIX_HEADER_SIZE + (size_t)n * DIX_ENTRY_SIZE + names_len ||
	    get32(p + 68) != (uint32_t)csum64(p + DIX_HEADER_SIZE, len - DIX_HEADER_SIZE))
		return -EBADMSG;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->ent = calloc(n ? n : 1, sizeof(*d->ent));
	d->names = malloc(names_len ? names_len : 1);
	if (!d->ent || !d->names) {
		dix_dir_free(d);
		return -ENOMEM;
	}
	d->dev = dev;
	d->ino = ino;
	d->n = n;
	d->names_len = names_len;
	d->mtime = (struct timespec){.tv_sec = (int64_t)get64(p + 24), .tv_nsec = get32(p + 40)};
	d->ctime = (struct timespec){.tv_sec = (int64_t)get64(p + 32), .tv_nsec = get32(p + 44)};
	d->dot_ino = get64(p + 48);
	d->dotdot_ino = get64(p + 56);
	q = p + DIX_HEADER_SIZE;
	if (names_len)
		memcpy(d->names, q + (size_t)n * DIX_ENTRY_SIZE, names_len);
	for (uint32_t i = 0; i < n; i++, q += DIX_ENTRY_SIZE) {
		struct dix_entry *e = &d->ent[i];
		struct dix_attr *a = &e->a;

		a->ino = get64(q + 0);
		a->size = get64(q + 8);
		a->blocks = get64(q + 16);
		a->rdev = get64(q + 24);
		a->atime_s = (int64_t)get64(q + 32);
		a->mtime_s = (int64_t)get64(q + 40);
		a->ctime_s = (int64_t)get64(q + 48);
		a->btime_s = (int64_t)get64(q + 56);
		a->atime_ns = get32(q + 64);
		a->mtime_ns = get32(q + 68);
		a->ctime_ns = get32(q + 72);
		a->btime_ns = get32(q + 76);
		a->mode = get32(q + 80);
		a->nlink = get32(q + 84);
		a->uid = get32(q + 88);
		a->gid = get32(q + 92);
		a->blksize = get32(q + 96);
		e->name_off = get32(q + 100);
		e->name_len = get16(q + 104);
		e->flags = get16(q + 106);
		/* Only what dix_encode writes: names packed in order, sorted,
		 * each a real name; times in range; reserved fields zero. */
		if (e->name_off != off || e->name_len > names_len - off || (e->flags & ~DIX_F_MOUNT) ||
		    get32(q + 108) || !good_name(d->names + off, e->name_len) ||
		    !ns_ok(a->atime_ns) || !ns_ok(a->mtime_ns) || !ns_ok(a->ctime_ns) ||
		    (a->btime_ns != DIX_NO_BTIME && !ns_ok(a->btime_ns)) ||
		    (a->btime_ns == DIX_NO_BTIME && a->btime_s) ||
		    (i && name_cmp(d->names + d->ent[i - 1].name_off, d->ent[i - 1].name_len,
				   d->names + off, e->name_len) >= 0)) {
			dix_dir_free(d);
			return -EBADMSG;
		}
		off += e->name_len;
	}
	if (off != names_len) {
		dix_dir_free(d);
		return -EBADMSG;
	}
	d->bytes = dir_bytes(d);
	*out = d;
	return 0;
}

/* ---- the table ----------------------------------------------------------- */

static size_t bucket_of(uint64_t dev, uint64_t ino)
{
	uint64_t h = ino * 0x9e3779b97f4a7c15ULL ^ dev * 0xc2b2ae3d27d4eb4fULL;

	return (size_t)(h ^ (h >> 31)) & (DIX_BUCKETS - 1);
}

int dix_new(struct dix **out, size_t mem_max, const struct dix_store_ops *ops)
{
	struct dix *x = calloc(1, sizeof(*x));

	if (!x)
		return -ENOMEM;
	pthread_mutex_init(&x->mu, NULL);
	x->lru.lru_next = x->lru.lru_prev = &x->lru;
	x->mem_max = mem_max;
	if (ops)
		x->ops = *ops;
	*out = x;
	return 0;
}

static void lru_unlink(struct dix_dir *d)
{
	d->lru_prev->lru_next = d->lru_next;
	d->lru_next->lru_prev = d->lru_prev;
	d->lru_prev = d->lru_next = NULL;
}

static void lru_push(struct dix *x, struct dix_dir *d)
{
	d->lru_next = x->lru.lru_next;
	d->lru_prev = &x->lru;
	x->lru.lru_next->lru_prev = d;
	x->lru.lru_next = d;
}

static struct dix_dir *find_locked(struct dix *x, uint64_t dev, uint64_t ino)
{
	struct dix_dir *d;

	for (d = x->buckets[bucket_of(dev, ino)]; d; d = d->hnext)
		if (d->dev == dev && d->ino == ino)
			return d;
	return NULL;
}

/* Take d out of the table; returns true if the caller must free it (no
 * reference left). */
static bool unlist_locked(struct dix *x, struct dix_dir *d)
{
	struct dix_dir **pp = &x->buckets[bucket_of(d->dev, d->ino)];

	while (*pp && *pp != d)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = d->hnext;
	d->hnext = NULL;
	lru_unlink(d);
	d->listed = false;
	x->bytes -= d->bytes;
	x->ndirs--;
	return d->refs == 0;
}

/* Within the memory bound: drop the coldest unused snapshots (they stay in
 * the store).  Returns them chained by hnext, for the caller to free. */
static struct dix_dir *trim_locked(struct dix *x)
{
	struct dix_dir *d = x->lru.lru_prev, *prev, *gone = NULL;

	for (; d != &x->lru && x->bytes > x->mem_max; d = prev) {
		prev = d->lru_prev;
		if (d->refs)
			continue;
		unlist_locked(x, d);
		d->hnext = gone;
		gone = d;
	}
	return gone;
}

static void free_chain(struct dix_dir *d)
{
	while (d) {
		struct dix_dir *next = d->hnext;

		dix_dir_free(d);
		d = next;
	}
}

/* Put d in the table (replacing an older one), with a reference for the
 * caller.  Returns what the caller frees. */
static struct dix_dir *publish_locked(struct dix *x, struct dix_dir *d)
{
	struct dix_dir *old = find_locked(x, d->dev, d->ino), *gone = NULL;
	size_t b = bucket_of(d->dev, d->ino);

	if (old && unlist_locked(x, old)) {
		old->hnext = NULL;
		gone = old;
	}
	d->hnext = x->buckets[b];
	x->buckets[b] = d;
	lru_push(x, d);
	d->listed = true;
	d->refs = 1;
	x->bytes += d->bytes;
	x->ndirs++;
	{
		struct dix_dir *more = trim_locked(x), *tail = more;

		if (more) {
			while (tail->hnext)
				tail = tail->hnext;
			tail->hnext = gone;
			gone = more;
		}
	}
	return gone;
}

/* Write d to the store (d is listed, the caller holds a reference; no
 * lock held).  A store not ready yet (-EAGAIN: the cache's startup index
 * is not complete) leaves d to be saved at a later dix_get. */
static void save(struct dix *x, struct dix_dir *d)
{
	void *buf = NULL;
	size_t len = 0;
	bool still;
	int r;

	if (!x->ops.save) {
		/* Kept in memory only: a copy an earlier daemon stored must
		 * not outlive this newer pass. */
		if (x->ops.remove)
			x->ops.remove(x->ops.arg, d->dev, d->ino);
		return;
	}
	if (dix_encode(d, &buf, &len) < 0)
		return;
	r = x->ops.save(x->ops.arg, d->dev, d->ino, d, buf, len);
	free(buf);
	pthread_mutex_lock(&x->mu);
	if (r == 0)
		x->saves++;
	else if (r == -EAGAIN && d->listed)
		d->unsaved = true;
	/* A change forgotten (or a newer pass published) while we saved
	 * must not be undone by this older snapshot. */
	still = d->listed && find_locked(x, d->dev, d->ino) == d;
	pthread_mutex_unlock(&x->mu);
	if (r == 0 && !still && x->ops.remove)
		x->ops.remove(x->ops.arg, d->dev, d->ino);
}

/* dix_get, reading the store only if load. */
static struct dix_dir *get(struct dix *x, uint64_t dev, uint64_t ino, bool load)
{
	struct dix_dir *d, *gone;
	void *buf = NULL;
	size_t len = 0;
	uint64_t forgets;
	int r;

	bool retry = false;

	pthread_mutex_lock(&x->mu);
	forgets = x->forgets;
	d = find_locked(x, dev, ino);
	if (d) {
		d->refs++;
		lru_unlink(d);
		lru_push(x, d);
		retry = d->unsaved;
		d->unsaved = false;
	}
	pthread_mutex_unlock(&x->mu);
	if (retry)
		save(x, d);
	if (d || !load || !x->ops.load)
		return d;

	r = x->ops.load(x->ops.arg, dev, ino, &buf, &len);
	if (r < 0)
		return NULL;
	r = dix_decode(buf, len, dev, ino, &d);
	free(buf);
	if (r < 0) {
		pthread_mutex_lock(&x->mu);
		if (r == -EBADMSG)
			x->bad++;
		pthread_mutex_unlock(&x->mu);
		if (r == -EBADMSG && x->ops.remove)
			x->ops.remove(x->ops.arg, dev, ino); /* listed again, from the source */
		return NULL;
	}
	pthread_mutex_lock(&x->mu);
	if (x->forgets != forgets) {
		/* A snapshot was forgotten while this one was read: it may be
		 * the record that forget removed (a change through the mount),
		 * so it answers nothing; the caller asks the source. */
		pthread_mutex_unlock(&x->mu);
		dix_dir_free(d);
		return NULL;
	}
	x->loads++;
	{
		struct dix_dir *other = find_locked(x, dev, ino);

		if (other) {
			/* Published meanwhile: newer than what the store had. */
			other->refs++;
			pthread_mutex_unlock(&x->mu);
			dix_dir_free(d);
			return other;
		}
	}
	gone = publish_locked(x, d);
	pthread_mutex_unlock(&x->mu);
	free_chain(gone);
	return d;
}

struct dix_dir *dix_get(struct dix *x, uint64_t dev, uint64_t ino)
{
	return get(x, dev, ino, true);
}

struct dix_dir *dix_get_loaded(struct dix *x, uint64_t dev, uint64_t ino)
{
	return get(x, dev, ino, false);
}

bool dix_loaded(struct dix *x, uint64_t dev, uint64_t ino)
{
	bool r;

	pthread_mutex_lock(&x->mu);
	r = find_locked(x, dev, ino) != NULL;
	pthread_mutex_unlock(&x->mu);
	return r;
}

void dix_ref(struct dix *x, struct dix_dir *d)
{
	pthread_mutex_lock(&x->mu);
	d->refs++;
	pthread_mutex_unlock(&x->mu);
}

void dix_put(struct dix *x, struct dix_dir *d)
{
	bool free_it, over;
	struct dix_dir *gone = NULL;

	if (!d)
		return;
	pthread_mutex_lock(&x->mu);
	free_it = --d->refs == 0 && !d->listed;
	over = x->bytes > x->mem_max;
	if (over)
		gone = trim_locked(x);
	pthread_mutex_unlock(&x->mu);
	if (free_it)
		dix_dir_free(d);
	free_chain(gone);
}

void dix_flush(struct dix *x)
{
	for (;;) {
		struct dix_dir *d = NULL;

		pthread_mutex_lock(&x->mu);
		for (struct dix_dir *e = x->lru.lru_next; e != &x->lru; e = e->lru_next)
			if (e->unsaved) {
				d = e;
				break;
			}
		if (d) {
			d->unsaved = false;
			d->refs++;
		}
		pthread_mutex_unlock(&x->mu);
		if (!d)
			return;
		save(x, d);
		pthread_mutex_lock(&x->mu);
		d->unsaved = false; /* still not: once is enough here */
		pthread_mutex_unlock(&x->mu);
		dix_put(x, d);
	}
}

void dix_free(struct dix *x)
{
	if (!x)
		return;
	dix_flush(x);
	for (size_t b = 0; b < DIX_BUCKETS; b++) {
		struct dix_dir *d = x->buckets[b], *next;

		for (; d; d = next) {
			next = d->hnext;
			dix_dir_free(d);
		}
	}
	pthread_mutex_destroy(&x->mu);
	free(x);
}

void dix_checked(struct dix *x, struct dix_dir *d, const struct timespec *now)
{
	pthread_mutex_lock(&x->mu);
	d->checked_here = true;
	d->checked = *now;
	pthread_mutex_unlock(&x->mu);
}

bool dix_last_checked(struct dix *x, struct dix_dir *d, struct timespec *at)
{
	bool yes;

	pthread_mutex_lock(&x->mu);
	yes = d->checked_here;
	if (yes)
		*at = d->checked;
	pthread_mutex_unlock(&x->mu);
	return yes;
}

static bool ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

static bool ts_eq(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

enum dix_verdict dix_judge(struct dix *x, struct dix_dir *d, bool never, double window,
			   const struct meta_attr *dir, const struct timespec *now)
{
	struct timespec at;
	bool checked = dix_last_checked(x, d, &at);

	/* Seen since, and not as listed: changed, or another directory
	 * under a reused inode number.  Equal times are "since": an answer
	 * in the same clock tick as the check may postdate it. */
	if (dir && dir->seen && (!checked || !ts_after(&at, &dir->at)) &&
	    (!ts_eq(&dir->mtime, &d->mtime) || !ts_eq(&dir->ctime, &d->ctime)))
		return DIX_STALE;
	if (never)
		return DIX_ANSWER;
	if (checked && meta_elapsed(&at, now) < window)
		return DIX_ANSWER;
	return DIX_CHECK;
}

bool dix_recheck(struct dix *x, struct dix_dir *d, const struct stat *st,
		 const struct timespec *now)
{
	if (dix_dir_same(d, st)) {
		dix_checked(x, d, now);
		return true;
	}
	dix_forget(x, d->dev, d->ino);
	return false;
}

double dix_attr_left(const struct dix_dir *d, bool never, double window,
		     const struct timespec *now)
{
	double left;

	if (never)
		return window;
	if (!d->seen_here)
		return 0;
	left = window - meta_elapsed(&d->seen, now);
	return left > 0 ? left : 0;
}

/* Take (dev, ino)'s snapshot out of memory, and count a forget. */
static void unlist_counted(struct dix *x, uint64_t dev, uint64_t ino)
{
	struct dix_dir *d;
	bool free_it = false;

	pthread_mutex_lock(&x->mu);
	x->forgets++;
	d = find_locked(x, dev, ino);
	if (d)
		free_it = unlist_locked(x, d);
	pthread_mutex_unlock(&x->mu);
	if (free_it)
		dix_dir_free(d);
}

void dix_forget(struct dix *x, uint64_t dev, uint64_t ino)
{
	/* A load (get, any thread) that began before the store's remove may
	 * have read the old record: if it publishes before the second count
	 * it is taken out again here, and if after, it sees the count moved
	 * and publishes nothing. */
	unlist_counted(x, dev, ino);
	if (x->ops.remove)
		x->ops.remove(x->ops.arg, dev, ino);
	unlist_counted(x, dev, ino);
}

void dix_counts(struct dix *x, struct dix_counts *out)
{
	pthread_mutex_lock(&x->mu);
	out->dirs = x->ndirs;
	out->bytes = x->bytes;
	out->loads = x->loads;
	out->saves = x->saves;
	out->bad = x->bad;
	pthread_mutex_unlock(&x->mu);
}

/* ---- building ------------------------------------------------------------ */

struct dix_build *dix_build_begin(const struct stat *dir)
{
	struct dix_build *b = calloc(1, sizeof(*b));

	if (b)
		b->dir = *dir;
	return b;
}

void dix_build_abort(struct dix_build *b)
{
	if (!b)
		return;
	free(b->ent);
	free(b->names);
	free(b);
}

void dix_build_dots(struct dix_build *b, uint64_t dot_ino, uint64_t dotdot_ino)
{
	b->dot_ino = dot_ino;
	b->dotdot_ino = dotdot_ino;
}

int dix_build_add(struct dix_build *b, const char *name, const struct stat *st,
		  const struct timespec *btime)
{
	size_t len = strlen(name);

	if (!good_name(name, len))
		return -EINVAL;
	if (b->n >= DIX_MAX_ENTRIES || DIX_HEADER_SIZE + (size_t)(b->n + 1) * DIX_ENTRY_SIZE +
						   b->names_len + len > DIX_MAX_BYTES)
		return -E2BIG;
	if (b->n == b->cap) {
		uint32_t cap = b->cap ? 2 * b->cap : 64;
		struct dix_entry *more = realloc(b->ent, cap * sizeof(*more));

		if (!more)
			return -ENOMEM;
		b->ent = more;
		b->cap = cap;
	}
	if (b->names_len + len > b->names_cap) {
		uint32_t cap = b->names_cap ? 2 * b->names_cap : 1024;
		char *more;

		while (cap < b->names_len + len)
			cap *= 2;
		more = realloc(b->names, cap);
		if (!more)
			return -ENOMEM;
		b->names = more;
		b->names_cap = cap;
	}
	memcpy(b->names + b->names_len, name, len);
	b->ent[b->n].name_off = b->names_len;
	b->ent[b->n].name_len = (uint16_t)len;
	b->ent[b->n].flags = st->st_dev != b->dir.st_dev ? DIX_F_MOUNT : 0;
	attr_of(st, btime, &b->ent[b->n].a);
	b->names_len += (uint32_t)len;
	b->n++;
	return 0;
}

/* qsort_r context: the names area. */
static int entry_cmp(const void *pa, const void *pb, void *arg)
{
	const struct dix_entry *a = pa, *b = pb;
	const char *names = arg;

	return name_cmp(names + a->name_off, a->name_len, names + b->name_off, b->name_len);
}

struct dix_dir *dix_build_commit(struct dix *x, struct dix_build *b, const struct timespec *now)
{
	struct dix_dir *d = calloc(1, sizeof(*d)), *gone;
	uint32_t off = 0;

	if (!d || (b->n && !(d->names = malloc(b->names_len))) || !(d->ent = calloc(b->n ? b->n : 1,
										 sizeof(*d->ent)))) {
		dix_dir_free(d);
		dix_build_abort(b);
		return NULL;
	}
	/* Sorted, then the names packed in that order (the encoded form).
	 * An empty directory has no entries array to sort (b->ent NULL). */
	if (b->n > 1)
		qsort_r(b->ent, b->n, sizeof(*b->ent), entry_cmp, b->names);
	for (uint32_t i = 0; i < b->n; i++) {
		const struct dix_entry *e = &b->ent[i];

		if (i && !entry_cmp(&b->ent[i - 1], e, b->names)) {
			/* One name twice: the directory changed under the pass. */
			dix_dir_free(d);
			dix_build_abort(b);
			return NULL;
		}
		d->ent[i] = *e;
		d->ent[i].name_off = off;
		memcpy(d->names + off, b->names + e->name_off, e->name_len);
		off += e->name_len;
	}
	d->dev = (uint64_t)b->dir.st_dev;
	d->ino = (uint64_t)b->dir.st_ino;
	d->mtime = b->dir.st_mtim;
	d->ctime = b->dir.st_ctim;
	d->dot_ino = b->dot_ino;
	d->dotdot_ino = b->dotdot_ino;
	d->n = b->n;
	d->names_len = off;
	d->bytes = dir_bytes(d);
	d->seen = *now;
	d->seen_here = true;
	d->checked = *now;
	d->checked_here = true;
	dix_build_abort(b);

	pthread_mutex_lock(&x->mu);
	gone = publish_locked(x, d);
	pthread_mutex_unlock(&x->mu);
	free_chain(gone);
	save(x, d);
	return d;
}
