/* inode.c - inode table: (st_dev, st_ino) -> struct efs_inode, and the
 * bounded set of O_PATH fds behind it.
 *
 * State: an open-hashing table that grows by doubling, an index of where
 * each inode was last seen ((parent, name) -> inodes, same size), and an
 * LRU list of the inodes that hold an fd, all under one mutex t->lock.  Lookups are
 * short; the expensive parts (openat and fstat on the source) happen with
 * no lock held.
 *
 * Invariants
 *   - An inode is in the table while nlookup > 0 or refs > 0; the root is
 *     never removed.  refs counts the children whose parent it is and the
 *     callers inside inode_fd_get() or holding it (itab_hold), so a parent
 *     outlives its children.
 *   - fd >= 0 exactly while the inode is on the LRU list; t->nfds counts
 *     them (the root's fd is neither counted nor listed).
 *   - An fd with fd_users > 0 is never closed: inode_fd_get() hands it out,
 *     inode_fd_put() gives it back.  Closing happens outside the lock after
 *     the fd was taken off its inode.
 *   - An fd pins its source object, so (dev, ino) cannot be reused while it
 *     is open; a reopened fd is checked against (dev, ino) and, where the
 *     source records it, the birth time (inode numbers are reused).
 * Each inode also keeps the fds through which POSIX lock owners hold their
 * fcntl locks (i->lock_owners, under i->lock): reference counted, taken off
 * the list by the owner's close (FLUSH) and closed by the last reference,
 * or when the inode is freed.
 *
 * Locks: t->lock, then (never the other way) nothing: i->lock is never
 * taken with t->lock held.
 */
#include "inode.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "source.h"

/* Buckets at start; the table doubles when it holds twice as many inodes. */
#define ITAB_INITIAL_BUCKETS 1024
/* Idle fds closed in one go when the budget is exceeded: a batch, so the
 * LRU is not walked once per lookup at the limit. */
#define ITAB_TRIM_BATCH 16

struct inode_table {
	pthread_mutex_t lock;
	struct efs_inode **buckets; /* protected by lock */
	size_t nbuckets;            /* power of two; protected by lock */
	struct efs_inode **places;  /* (parent, name) index, chained by place_next;
				     * nplaces buckets (power of two); lock */
	size_t nplaces;
	uint64_t count;             /* protected by lock */
	struct efs_inode *superseded; /* inodes out of the hash (itab_get); lock */
	struct efs_inode lru;       /* list head: next = most recent */
	uint64_t nfds;              /* protected by lock */
	uint64_t reopens;           /* protected by lock */
	unsigned fd_budget;
	unsigned fd_ceiling;        /* 0: none; set before use */
	bool new_node_on_change;    /* set before use */
	struct efs_inode root;
	void (*release)(struct efs_inode *, void *);
	void *release_arg;
};

static size_t hash_key(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev;

	return (size_t)(h ^ (h >> 29));
}

/* FNV-1a over the name, seeded with the parent's address. */
static size_t hash_place(const struct efs_inode *parent, const char *name)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)(uintptr_t)parent;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 0x100000001b3ULL;
	return (size_t)(h ^ (h >> 29));
}

int itab_new(struct inode_table **out, int root_fd, unsigned fd_budget)
{
	struct inode_table *t = calloc(1, sizeof(*t));
	struct stat st;

	if (!t)
		return -ENOMEM;
	if (fstat(root_fd, &st) < 0) {
		int e = errno;
		free(t);
		return -e;
	}
	t->nbuckets = t->nplaces = ITAB_INITIAL_BUCKETS;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	t->places = calloc(t->nplaces, sizeof(*t->places));
	if (!t->buckets || !t->places) {
		free(t->buckets);
		free(t->places);
		free(t);
		return -ENOMEM;
	}
	pthread_mutex_init(&t->lock, NULL);
	t->lru.lru_next = t->lru.lru_prev = &t->lru;
	t->fd_budget = fd_budget ? fd_budget : 1;
	t->root.fd = root_fd;
	t->root.dev = st.st_dev;
	t->root.ino = st.st_ino;
	t->root.type = st.st_mode & S_IFMT;
	t->root.nlookup = 2; /* never reaches zero */
	pthread_mutex_init(&t->root.lock, NULL);
	*out = t;
	return 0;
}

struct efs_inode *itab_root(struct inode_table *t)
{
	return &t->root;
}

void itab_set_release_hook(struct inode_table *t, void (*fn)(struct efs_inode *, void *),
			   void *arg)
{
	t->release = fn;
	t->release_arg = arg;
}

/* ---- fd LRU (t->lock held) ---------------------------------------------- */

static void lru_unlink(struct efs_inode *i)
{
	i->lru_prev->lru_next = i->lru_next;
	i->lru_next->lru_prev = i->lru_prev;
	i->lru_prev = i->lru_next = NULL;
}

static void lru_push(struct inode_table *t, struct efs_inode *i)
{
	i->lru_next = t->lru.lru_next;
	i->lru_prev = &t->lru;
	t->lru.lru_next->lru_prev = i;
	t->lru.lru_next = i;
}

/* Take the fd off i (it must be idle); the caller closes it unlocked. */
static int take_fd_locked(struct inode_table *t, struct efs_inode *i)
{
	int fd = i->fd;

	lru_unlink(i);
	i->fd = -1;
	t->nfds--;
	return fd;
}

/* Collect idle fds from the cold end until at most keep are open. */
static unsigned trim_locked(struct inode_table *t, uint64_t keep, int *out, unsigned max)
{
	struct efs_inode *i = t->lru.lru_prev, *prev;
	unsigned n = 0;

	for (; i != &t->lru && t->nfds > keep && n < max; i = prev) {
		prev = i->lru_prev;
		if (i->fd_users)
			continue;
		out[n++] = take_fd_locked(t, i);
	}
	return n;
}

static void close_all(const int *fds, unsigned n)
{
	for (unsigned k = 0; k < n; k++)
		close(fds[k]);
}

unsigned itab_shrink(struct inode_table *t, unsigned keep)
{
	int fds[64];
	unsigned n, total = 0;

	do {
		pthread_mutex_lock(&t->lock);
		n = trim_locked(t, keep, fds, 64);
		pthread_mutex_unlock(&t->lock);
		close_all(fds, n);
		total += n;
	} while (n == 64);
	return total;
}

/* i gets fd (it has none); trims over budget, or when fd's number says the
 * process nears its limit (every number below it is taken).  Returns fds
 * to close. */
static unsigned adopt_fd_locked(struct inode_table *t, struct efs_inode *i, int fd,
				int out[ITAB_TRIM_BATCH])
{
	i->fd = fd;
	lru_push(t, i);
	t->nfds++;
	if (t->fd_ceiling && (unsigned)fd >= t->fd_ceiling) {
		return trim_locked(t, t->nfds - t->nfds / 4, out, ITAB_TRIM_BATCH);
	}
	if (t->nfds <= t->fd_budget)
		return 0;
	return trim_locked(t, t->fd_budget > ITAB_TRIM_BATCH / 2 ? t->fd_budget - ITAB_TRIM_BATCH / 2
								  : t->fd_budget,
			   out, ITAB_TRIM_BATCH);
}

void itab_set_fd_ceiling(struct inode_table *t, unsigned ceiling)
{
	t->fd_ceiling = ceiling;
}

void itab_set_new_node_on_change(struct inode_table *t, bool on)
{
	t->new_node_on_change = on;
}

/* ---- lifetime ------------------------------------------------------------ */

/* The inode is freed: nothing uses its lock owner entries any more (a user
 * holds a handle of the file, and the handle holds the inode). */
static void close_lock_owners(struct efs_inode *i)
{
	struct efs_lock_owner *o, *next;

	for (o = i->lock_owners; o; o = next) {
		next = o->next;
		close(o->fd);
		free(o);
	}
	i->lock_owners = NULL;
}

static void inode_destroy(struct inode_table *t, struct efs_inode *i)
{
	if (t->release)
		t->release(i, t->release_arg);
	close_lock_owners(i);
	if (i->fd >= 0)
		close(i->fd);
	free(i->name);
	pthread_mutex_destroy(&i->lock);
	free(i);
}

void itab_free(struct inode_table *t)
{
	size_t b;

	for (b = 0; b < t->nbuckets; b++) {
		struct efs_inode *i = t->buckets[b], *n;
		for (; i; i = n) {
			n = i->next;
			inode_destroy(t, i);
		}
	}
	while (t->superseded) {
		struct efs_inode *i = t->superseded;

		t->superseded = i->next;
		inode_destroy(t, i);
	}
	if (t->release)
		t->release(&t->root, t->release_arg);
	close_lock_owners(&t->root);
	close(t->root.fd);
	free(t->buckets);
	free(t->places);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* Caller holds t->lock. */
static void grow(struct inode_table *t)
{
	size_t n = t->nbuckets * 2, b;
	struct efs_inode **nb = calloc(n, sizeof(*nb));
	struct efs_inode **np = calloc(n, sizeof(*np));

	if (!nb || !np) {
		free(nb);
		free(np);
		return; /* keep the longer chains; still correct */
	}
	for (b = 0; b < t->nbuckets; b++) {
		struct efs_inode *i = t->buckets[b], *next;
		for (; i; i = next) {
			size_t h = hash_key(i->dev, i->ino) & (n - 1);
			next = i->next;
			i->next = nb[h];
			nb[h] = i;
		}
	}
	for (b = 0; b < t->nplaces; b++) {
		struct efs_inode *i = t->places[b], *next;
		for (; i; i = next) {
			size_t h = hash_place(i->parent, i->name) & (n - 1);
			next = i->place_next;
			i->place_next = np[h];
			np[h] = i;
		}
	}
	free(t->buckets);
	free(t->places);
	t->buckets = nb;
	t->places = np;
	t->nbuckets = t->nplaces = n;
}

/* ---- the (parent, name) index (t->lock held) ---------------------------- */

/* An inode is in the index exactly while it has a place (parent and name)
 * and is alive: set_place_locked moves it, unhash_if_dead_locked takes it
 * out. */
static void place_link_locked(struct inode_table *t, struct efs_inode *i)
{
	size_t h = hash_place(i->parent, i->name) & (t->nplaces - 1);

	i->place_next = t->places[h];
	t->places[h] = i;
}

static void place_unlink_locked(struct inode_table *t, struct efs_inode *i)
{
	struct efs_inode **pp;

	if (!i->parent || !i->name)
		return;
	pp = &t->places[hash_place(i->parent, i->name) & (t->nplaces - 1)];
	while (*pp && *pp != i)
		pp = &(*pp)->place_next;
	if (*pp)
		*pp = i->place_next;
	i->place_next = NULL;
}

unsigned itab_others_at(struct inode_table *t, struct efs_inode *dir, const char *name,
			const struct efs_inode *except, struct efs_inode **out, unsigned max)
{
	struct efs_inode *i;
	unsigned n = 0;

	pthread_mutex_lock(&t->lock);
	for (i = t->places[hash_place(dir, name) & (t->nplaces - 1)]; i && n < max;
	     i = i->place_next) {
		if (i != except && i->parent == dir && !strcmp(i->name, name)) {
			i->refs++;
			out[n++] = i;
		}
	}
	pthread_mutex_unlock(&t->lock);
	return n;
}

static struct efs_inode *find_locked(struct inode_table *t, dev_t dev, ino_t ino)
{
	struct efs_inode *i;

	if (dev == t->root.dev && ino == t->root.ino)
		return &t->root;
	for (i = t->buckets[hash_key(dev, ino) & (t->nbuckets - 1)]; i; i = i->next)
		if (i->dev == dev && i->ino == ino)
			return i;
	return NULL;
}

struct efs_inode *itab_find(struct inode_table *t, dev_t dev, ino_t ino)
{
	struct efs_inode *i;

	pthread_mutex_lock(&t->lock);
	i = find_locked(t, dev, ino);
	pthread_mutex_unlock(&t->lock);
	return i;
}

struct efs_inode *itab_find_hold(struct inode_table *t, dev_t dev, ino_t ino)
{
	struct efs_inode *i;

	pthread_mutex_lock(&t->lock);
	i = find_locked(t, dev, ino);
	if (i && i != &t->root)
		i->refs++;
	pthread_mutex_unlock(&t->lock);
	return i;
}

/* Unhash i if nothing references it; returns true if the caller must
 * destroy it (and then drop its reference on the parent). */
/* Take i off the list it is on: its hash chain, or the superseded list.
 * Caller holds t->lock. */
static void unlink_locked(struct inode_table *t, struct efs_inode *i)
{
	struct efs_inode **pp = i->superseded
					? &t->superseded
					: &t->buckets[hash_key(i->dev, i->ino) & (t->nbuckets - 1)];

	while (*pp && *pp != i)
		pp = &(*pp)->next;
	if (*pp)
		*pp = i->next;
}

static bool unhash_if_dead_locked(struct inode_table *t, struct efs_inode *i, int *fd)
{
	*fd = -1;
	if (i == &t->root || i->nlookup || i->refs)
		return false;
	unlink_locked(t, i);
	place_unlink_locked(t, i);
	t->count--;
	if (i->fd >= 0)
		*fd = take_fd_locked(t, i);
	return true;
}

/* Drop n lookup references of i (or, with n == 0, one reference from a
 * child or a caller), freeing it and, in turn, parents that nothing holds
 * any more. */
static void drop(struct inode_table *t, struct efs_inode *i, uint64_t n)
{
	while (i && i != &t->root) {
		struct efs_inode *parent;
		bool dead;
		int fd;

		pthread_mutex_lock(&t->lock);
		if (n)
			i->nlookup = i->nlookup > n ? i->nlookup - n : 0;
		else
			i->refs--;
		dead = unhash_if_dead_locked(t, i, &fd);
		parent = i->parent;
		pthread_mutex_unlock(&t->lock);
		if (!dead)
			return;
		if (fd >= 0)
			close(fd);
		inode_destroy(t, i);
		i = parent; /* its child's reference goes with the child */
		n = 0;
	}
}

static void unref(struct inode_table *t, struct efs_inode *i)
{
	drop(t, i, 0);
}

void itab_hold(struct inode_table *t, struct efs_inode *i)
{
	if (i == &t->root)
		return;
	pthread_mutex_lock(&t->lock);
	i->refs++;
	pthread_mutex_unlock(&t->lock);
}

void itab_unhold(struct inode_table *t, struct efs_inode *i)
{
	unref(t, i);
}

/* Point i at (parent, name), moving its reference on the parent.  Returns
 * the old parent whose reference the caller drops (unref), or NULL. */
static struct efs_inode *set_place_locked(struct inode_table *t, struct efs_inode *i,
					  struct efs_inode *parent, char *name)
{
	struct efs_inode *old = i->parent;

	if (old == parent && i->name && !strcmp(i->name, name)) {
		free(name);
		return NULL;
	}
	place_unlink_locked(t, i);
	parent->refs++;
	free(i->name);
	i->name = name;
	i->parent = parent;
	place_link_locked(t, i);
	return old;
}

/* Is the object of st (with its birth time, if known) another object than
 * the one i was made for, under the same inode number? */
static bool is_other_object(const struct efs_inode *i, const struct stat *st, bool has_btime,
			    const struct timespec *btime)
{
	if (i->type != (st->st_mode & S_IFMT))
		return true;
	return has_btime && i->has_btime &&
	       (i->btime.tv_sec != btime->tv_sec || i->btime.tv_nsec != btime->tv_nsec);
}

/* Move i from the hash to the list of superseded inodes.  Caller holds
 * t->lock; i is not the root. */
static void supersede_locked(struct inode_table *t, struct efs_inode *i)
{
	unlink_locked(t, i);
	i->superseded = true;
	i->next = t->superseded;
	t->superseded = i;
}

/* itab_get and itab_get_known: fd may be -1 (the inode gets none until
 * someone needs it; inode_fd_get opens it from the parent and name). */
static struct efs_inode *get(struct inode_table *t, struct efs_inode *parent, const char *name,
			     int fd, const struct stat *st, bool has_btime, struct timespec btime)
{
	struct efs_inode *i, *fresh, *old = NULL;
	char *nm;
	int drop[ITAB_TRIM_BATCH];
	unsigned ndrop = 0;

	if (st->st_dev == t->root.dev && st->st_ino == t->root.ino) {
		if (fd >= 0)
			close(fd);
		return &t->root;
	}
	/* Allocate outside the lock; most lookups of hot trees find a match. */
	fresh = calloc(1, sizeof(*fresh));
	nm = strdup(name);
	if (!nm) {
		free(fresh);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	pthread_mutex_lock(&t->lock);
	i = find_locked(t, st->st_dev, st->st_ino);
	if (i && i != &t->root && t->new_node_on_change && S_ISREG(st->st_mode) && i->attr.seen &&
	    !meta_attr_same(&i->attr, st)) {
		/* ttl=never: another version of the file; the kernel's pages
		 * of the old one must not be served for it. */
		supersede_locked(t, i);
		i = NULL;
	} else if (i && is_other_object(i, st, has_btime, &btime)) {
		/* The number was reused for a new object (the old one is gone
		 * but the kernel still holds its inode): the old inode leaves
		 * the hash and lives on until it is forgotten; the new object
		 * gets an inode of its own. */
		supersede_locked(t, i);
		i = NULL;
	}
	if (i) {
		i->nlookup++;
		old = set_place_locked(t, i, parent, nm);
		if (i->fd < 0 && fd >= 0) {
			ndrop = adopt_fd_locked(t, i, fd, drop);
			fd = -1;
		} else if (i->fd >= 0) {
			lru_unlink(i);
			lru_push(t, i);
		}
		pthread_mutex_unlock(&t->lock);
		free(fresh);
		if (fd >= 0)
			close(fd);
		close_all(drop, ndrop);
		unref(t, old);
		return i;
	}
	if (!fresh) {
		pthread_mutex_unlock(&t->lock);
		free(nm);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	fresh->dev = st->st_dev;
	fresh->ino = st->st_ino;
	fresh->type = st->st_mode & S_IFMT;
	fresh->nlookup = 1;
	fresh->fd = -1;
	fresh->has_btime = has_btime;
	fresh->btime = btime;
	pthread_mutex_init(&fresh->lock, NULL);
	set_place_locked(t, fresh, parent, nm);
	{
		size_t h = hash_key(st->st_dev, st->st_ino) & (t->nbuckets - 1);

		fresh->next = t->buckets[h];
		t->buckets[h] = fresh;
	}
	if (fd >= 0)
		ndrop = adopt_fd_locked(t, fresh, fd, drop);
	if (++t->count > t->nbuckets * 2)
		grow(t);
	pthread_mutex_unlock(&t->lock);
	close_all(drop, ndrop);
	return fresh;
}

struct efs_inode *itab_get(struct inode_table *t, struct efs_inode *parent, const char *name,
			   int fd, const struct stat *st)
{
	struct timespec btime = {0};
	bool has_btime = src_birth(fd, &btime) == 0;

	return get(t, parent, name, fd, st, has_btime, btime);
}

struct efs_inode *itab_get_known(struct inode_table *t, struct efs_inode *parent,
				 const char *name, const struct stat *st,
				 const struct timespec *btime)
{
	return get(t, parent, name, -1, st, btime != NULL,
		   btime ? *btime : (struct timespec){0});
}

void itab_forget(struct inode_table *t, struct efs_inode *i, uint64_t n)
{
	if (n)
		drop(t, i, n);
}

void itab_moved(struct inode_table *t, struct efs_inode *i, struct efs_inode *newparent,
		const char *newname)
{
	struct efs_inode *old;
	char *nm = strdup(newname);

	if (!nm || i == &t->root) {
		free(nm);
		return; /* the next reopen finds the name stale: -ESTALE, relookup */
	}
	pthread_mutex_lock(&t->lock);
	old = set_place_locked(t, i, newparent, nm);
	pthread_mutex_unlock(&t->lock);
	unref(t, old);
}

int itab_parent_get(struct inode_table *t, struct efs_inode *i, struct efs_inode **parent,
		    char **name)
{
	pthread_mutex_lock(&t->lock);
	if (!i->parent) {
		pthread_mutex_unlock(&t->lock);
		return -ENOENT;
	}
	*name = strdup(i->name);
	if (!*name) {
		pthread_mutex_unlock(&t->lock);
		return -ENOMEM;
	}
	*parent = i->parent;
	i->parent->refs++;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

void itab_parent_put(struct inode_table *t, struct efs_inode *parent, char *name)
{
	free(name);
	unref(t, parent);
}

/* ---- fds ------------------------------------------------------------------ */

int inode_fd_get(struct inode_table *t, struct efs_inode *i)
{
	struct efs_inode *parent;
	struct stat st;
	char *name;
	int pfd, fd, r, drop[ITAB_TRIM_BATCH];
	unsigned ndrop;

	if (i == &t->root)
		return t->root.fd;
	pthread_mutex_lock(&t->lock);
	if (i->fd >= 0) {
		i->fd_users++;
		lru_unlink(i);
		lru_push(t, i);
		pthread_mutex_unlock(&t->lock);
		return i->fd;
	}
	pthread_mutex_unlock(&t->lock);

	/* Reopen from the parent, which may itself need reopening. */
	r = itab_parent_get(t, i, &parent, &name);
	if (r < 0)
		return r == -ENOENT ? -ESTALE : r;
	pfd = inode_fd_get(t, parent);
	if (pfd < 0) {
		itab_parent_put(t, parent, name);
		return pfd;
	}
	r = src_lookup(pfd, name, &fd, &st);
	if (r == -EMFILE || r == -ENFILE) {
		itab_shrink(t, t->fd_budget / 2);
		r = src_lookup(pfd, name, &fd, &st);
	}
	inode_fd_put(t, parent);
	itab_parent_put(t, parent, name);
	if (r == -ENOENT)
		return -ESTALE; /* removed or renamed on the source */
	if (r < 0)
		return r;
	if (st.st_dev != i->dev || st.st_ino != i->ino) {
		close(fd);
		return -ESTALE; /* the name now leads to another object */
	}
	if (i->has_btime) {
		struct timespec b;

		if (src_birth(fd, &b) == 0 &&
		    (b.tv_sec != i->btime.tv_sec || b.tv_nsec != i->btime.tv_nsec)) {
			close(fd);
			return -ESTALE; /* a new object under a reused inode number */
		}
	}
	pthread_mutex_lock(&t->lock);
	t->reopens++;
	ndrop = 0;
	if (i->fd >= 0) {
		close(fd); /* another thread reopened it meanwhile; cheap */
		lru_unlink(i);
		lru_push(t, i);
	} else {
		ndrop = adopt_fd_locked(t, i, fd, drop);
	}
	i->fd_users++;
	fd = i->fd;
	pthread_mutex_unlock(&t->lock);
	close_all(drop, ndrop);
	return fd;
}

int inode_fd_peek(struct inode_table *t, struct efs_inode *i)
{
	int fd = -1;

	if (i == &t->root)
		return t->root.fd;
	pthread_mutex_lock(&t->lock);
	if (i->fd >= 0) {
		i->fd_users++; /* not moved in the LRU: a peek is not a use */
		fd = i->fd;
	}
	pthread_mutex_unlock(&t->lock);
	return fd;
}

void inode_fd_put(struct inode_table *t, struct efs_inode *i)
{
	if (i == &t->root)
		return;
	pthread_mutex_lock(&t->lock);
	i->fd_users--;
	pthread_mutex_unlock(&t->lock);
}

double itab_observe(struct inode_table *t, struct efs_inode *i, const struct meta_policy *p,
		    const struct stat *st)
{
	struct timespec now;
	double timeo;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&t->lock);
	timeo = meta_observe(p, &i->attr, st, &now);
	pthread_mutex_unlock(&t->lock);
	return timeo;
}

static bool ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

double itab_observe_at(struct inode_table *t, struct efs_inode *i, const struct meta_policy *p,
		       const struct stat *st, const struct timespec *at)
{
	struct timespec now;
	struct meta_attr *a = &i->attr;
	double left;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&t->lock);
	if (a->seen && (!at || ts_after(&a->at, at))) {
		/* What the inode has is newer: st is of no use if it differs,
		 * and adds nothing if it does not. */
		left = meta_attr_same(a, st) ? a->timeo - meta_elapsed(&a->at, &now) : -1;
		if (left < 0 && meta_attr_same(a, st))
			left = 0;
	} else if (!at) {
		left = 0; /* seen when, nobody knows: no window, nothing recorded */
	} else {
		left = meta_observe(p, a, st, at) - meta_elapsed(at, &now);
		if (left < 0)
			left = 0;
	}
	pthread_mutex_unlock(&t->lock);
	return left;
}

void itab_attr(struct inode_table *t, struct efs_inode *i, struct meta_attr *out)
{
	pthread_mutex_lock(&t->lock);
	*out = i->attr;
	pthread_mutex_unlock(&t->lock);
}

double itab_entry_timeout(struct inode_table *t, struct efs_inode *dir,
			  const struct meta_policy *p, bool negative)
{
	double timeo;

	pthread_mutex_lock(&t->lock);
	timeo = negative ? meta_negative_timeout(p, &dir->attr) : meta_entry_timeout(p, &dir->attr);
	pthread_mutex_unlock(&t->lock);
	return timeo;
}

static bool same_time(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

bool itab_listing_unchanged(struct inode_table *t, struct efs_inode *dir, const struct stat *st)
{
	bool same;

	pthread_mutex_lock(&t->lock);
	same = dir->listed && same_time(&dir->list_mtime, &st->st_mtim) &&
	       same_time(&dir->list_ctime, &st->st_ctim);
	dir->listed = true;
	dir->list_mtime = st->st_mtim;
	dir->list_ctime = st->st_ctim;
	pthread_mutex_unlock(&t->lock);
	return same;
}

void itab_counts(struct inode_table *t, struct itab_counts *out)
{
	pthread_mutex_lock(&t->lock);
	out->inodes = t->count;
	out->fds = t->nfds;
	out->reopens = t->reopens;
	out->fd_budget = t->fd_budget;
	pthread_mutex_unlock(&t->lock);
}

/* ---- POSIX lock owners ------------------------------------------------ */

/* Drop a reference; returns the fd to close (the last one of an entry no
 * longer listed) or -1.  Caller holds i->lock and frees nothing else. */
static int owner_unref_locked(struct efs_lock_owner *o, bool *free_it)
{
	*free_it = --o->refs == 0;
	return *free_it ? o->fd : -1;
}

struct efs_lock_owner *inode_lock_owner_get(struct inode_table *t, struct efs_inode *i,
					    uint64_t owner, bool create, int *err)
{
	struct efs_lock_owner *o, *other;
	int fd, pfd;

	pthread_mutex_lock(&i->lock);
	for (o = i->lock_owners; o; o = o->next)
		if (o->owner == owner)
			break;
	if (o)
		o->refs++;
	pthread_mutex_unlock(&i->lock);
	if (o || !create) {
		*err = -ENOENT;
		return o;
	}

	pfd = inode_fd_get(t, i);
	if (pfd < 0) {
		*err = pfd;
		return NULL;
	}
	/* Read-write so both lock types work; read-only if that is all the
	 * source allows (write locks then fail with EBADF, as they would on
	 * such a file). */
	fd = src_open(pfd, O_RDWR);
	if (fd == -EMFILE || fd == -ENFILE) {
		itab_shrink(t, t->fd_budget / 2);
		fd = src_open(pfd, O_RDWR);
	}
	if (fd < 0 && fd != -EMFILE && fd != -ENFILE)
		fd = src_open(pfd, O_RDONLY);
	inode_fd_put(t, i);
	if (fd < 0) {
		*err = fd;
		return NULL;
	}
	o = calloc(1, sizeof(*o));
	if (!o) {
		close(fd);
		*err = -ENOMEM;
		return NULL;
	}
	o->owner = owner;
	o->fd = fd;
	o->refs = 2; /* the list's and the caller's */
	o->listed = true;
	pthread_mutex_lock(&i->lock);
	for (other = i->lock_owners; other; other = other->next)
		if (other->owner == owner)
			break;
	if (other) {
		/* Raced with the same owner's other request: keep one. */
		other->refs++;
		pthread_mutex_unlock(&i->lock);
		close(fd);
		free(o);
		return other;
	}
	o->next = i->lock_owners;
	i->lock_owners = o;
	pthread_mutex_unlock(&i->lock);
	return o;
}

void inode_lock_owner_put(struct efs_inode *i, struct efs_lock_owner *o)
{
	bool free_it;
	int fd;

	pthread_mutex_lock(&i->lock);
	fd = owner_unref_locked(o, &free_it);
	pthread_mutex_unlock(&i->lock);
	if (fd >= 0)
		close(fd); /* the last fd of its description: its locks go */
	if (free_it)
		free(o);
}

bool inode_lock_owner_if_listed(struct efs_inode *i, struct efs_lock_owner *o,
				void (*fn)(void *), void *arg)
{
	bool listed;

	pthread_mutex_lock(&i->lock);
	listed = o->listed;
	if (listed && fn)
		fn(arg);
	pthread_mutex_unlock(&i->lock);
	return listed;
}

bool inode_has_lock_owners(struct efs_inode *i)
{
	bool any;

	pthread_mutex_lock(&i->lock);
	any = i->lock_owners != NULL;
	pthread_mutex_unlock(&i->lock);
	return any;
}

/* close(2) drops all the closing process's fcntl locks on the file. */
bool inode_lock_owner_release(struct efs_inode *i, uint64_t owner, void (*fn)(void *),
			      void *arg)
{
	struct efs_lock_owner **pp, *o = NULL;
	bool free_it = false;
	int fd = -1;

	pthread_mutex_lock(&i->lock);
	for (pp = &i->lock_owners; *pp; pp = &(*pp)->next) {
		if ((*pp)->owner == owner) {
			o = *pp;
			*pp = o->next;
			o->next = NULL;
			o->listed = false;
			fd = owner_unref_locked(o, &free_it);
			if (fn)
				fn(arg);
			break;
		}
	}
	pthread_mutex_unlock(&i->lock);
	if (fd >= 0)
		close(fd); /* the last fd of its description: its locks go */
	if (free_it)
		free(o);
	return o != NULL;
}
