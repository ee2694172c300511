/* inode.c - inode table: (st_dev, st_ino) -> struct efs_inode.
 *
 * State: an open-hashing table that grows by doubling, guarded by one mutex
 * (lookups are short; the expensive part, openat on the source, happens
 * before the lock is taken).  Invariant: an inode is in the table exactly
 * while nlookup > 0, except the root which is never removed.  An inode's fd
 * pins the source object, so its (dev, ino) cannot be reused while present.
 * Each inode also keeps the fds through which POSIX lock owners hold their
 * fcntl locks (i->lock_owners, under i->lock), closed when it is freed.
 */
#include "inode.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "source.h"

struct inode_table {
	pthread_mutex_t lock;
	struct efs_inode **buckets; /* protected by lock */
	size_t nbuckets;            /* power of two; protected by lock */
	uint64_t count;             /* protected by lock */
	struct efs_inode root;
	void (*release)(struct efs_inode *, void *);
	void *release_arg;
};

static size_t hash_key(dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9e3779b97f4a7c15ULL ^ (uint64_t)dev;

	return (size_t)(h ^ (h >> 29));
}

int itab_new(struct inode_table **out, int root_fd)
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
	t->nbuckets = 1024;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	if (!t->buckets) {
		free(t);
		return -ENOMEM;
	}
	pthread_mutex_init(&t->lock, NULL);
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
	close(i->fd);
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
	if (t->release)
		t->release(&t->root, t->release_arg);
	close_lock_owners(&t->root);
	close(t->root.fd);
	free(t->buckets);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* Caller holds t->lock. */
static void grow(struct inode_table *t)
{
	size_t n = t->nbuckets * 2, b;
	struct efs_inode **nb = calloc(n, sizeof(*nb));

	if (!nb)
		return; /* keep the longer chains; still correct */
	for (b = 0; b < t->nbuckets; b++) {
		struct efs_inode *i = t->buckets[b], *next;
		for (; i; i = next) {
			size_t h = hash_key(i->dev, i->ino) & (n - 1);
			next = i->next;
			i->next = nb[h];
			nb[h] = i;
		}
	}
	free(t->buckets);
	t->buckets = nb;
	t->nbuckets = n;
}

struct efs_inode *itab_get(struct inode_table *t, int fd, const struct stat *st)
{
	struct efs_inode *i, *fresh;
	size_t h;

	if (st->st_dev == t->root.dev && st->st_ino == t->root.ino) {
		close(fd);
		return &t->root;
	}
	/* Allocate outside the lock; most lookups of hot trees find a match. */
	fresh = calloc(1, sizeof(*fresh));
	pthread_mutex_lock(&t->lock);
	h = hash_key(st->st_dev, st->st_ino) & (t->nbuckets - 1);
	for (i = t->buckets[h]; i; i = i->next) {
		if (i->dev == st->st_dev && i->ino == st->st_ino) {
			i->nlookup++;
			pthread_mutex_unlock(&t->lock);
			free(fresh);
			close(fd);
			return i;
		}
	}
	if (!fresh) {
		pthread_mutex_unlock(&t->lock);
		close(fd);
		return NULL;
	}
	fresh->fd = fd;
	fresh->dev = st->st_dev;
	fresh->ino = st->st_ino;
	fresh->type = st->st_mode & S_IFMT;
	fresh->nlookup = 1;
	pthread_mutex_init(&fresh->lock, NULL);
	fresh->next = t->buckets[h];
	t->buckets[h] = fresh;
	if (++t->count > t->nbuckets * 2)
		grow(t);
	pthread_mutex_unlock(&t->lock);
	return fresh;
}

void itab_ref(struct inode_table *t, struct efs_inode *i, uint64_t n)
{
	if (i == &t->root)
		return;
	pthread_mutex_lock(&t->lock);
	i->nlookup += n;
	pthread_mutex_unlock(&t->lock);
}

void itab_forget(struct inode_table *t, struct efs_inode *i, uint64_t n)
{
	struct efs_inode **pp;
	bool dead = false;

	if (i == &t->root)
		return;
	pthread_mutex_lock(&t->lock);
	if (i->nlookup <= n) {
		pp = &t->buckets[hash_key(i->dev, i->ino) & (t->nbuckets - 1)];
		while (*pp && *pp != i)
			pp = &(*pp)->next;
		if (*pp)
			*pp = i->next;
		t->count--;
		dead = true;
	} else {
		i->nlookup -= n;
	}
	pthread_mutex_unlock(&t->lock);
	if (dead)
		inode_destroy(t, i);
}

uint64_t itab_count(struct inode_table *t)
{
	uint64_t n;

	pthread_mutex_lock(&t->lock);
	n = t->count;
	pthread_mutex_unlock(&t->lock);
	return n;
}

/* ---- POSIX lock owners ------------------------------------------------ */

/* The fd through which `owner` holds its fcntl locks on inode i, opened on
 * first use when create is set.  Returns the fd (owned by the inode) or
 * -errno (-ENOENT: the owner holds no locks here). */
int inode_lock_owner_fd(struct efs_inode *i, uint64_t owner, bool create)
{
	struct efs_lock_owner *o;
	int fd;

	pthread_mutex_lock(&i->lock);
	for (o = i->lock_owners; o; o = o->next)
		if (o->owner == owner)
			break;
	fd = o ? o->fd : -ENOENT;
	if (!o && create) {
		/* Read-write so both lock types work; read-only if that is all
		 * the source allows (write locks then fail with EBADF, as they
		 * would on such a file). */
		fd = src_open(i->fd, O_RDWR);
		if (fd < 0)
			fd = src_open(i->fd, O_RDONLY);
		o = fd >= 0 ? calloc(1, sizeof(*o)) : NULL;
		if (fd >= 0 && !o) {
			close(fd);
			fd = -ENOMEM;
		}
		if (o) {
			o->owner = owner;
			o->fd = fd;
			o->next = i->lock_owners;
			i->lock_owners = o;
		}
	}
	pthread_mutex_unlock(&i->lock);
	return fd;
}

/* close(2) drops all the closing process's fcntl locks on the file. */
void inode_lock_owner_release(struct efs_inode *i, uint64_t owner)
{
	struct efs_lock_owner **pp, *o = NULL;

	pthread_mutex_lock(&i->lock);
	for (pp = &i->lock_owners; *pp; pp = &(*pp)->next) {
		if ((*pp)->owner == owner) {
			o = *pp;
			*pp = o->next;
			break;
		}
	}
	pthread_mutex_unlock(&i->lock);
	if (o) {
		close(o->fd); /* the last fd of its description: its locks go */
		free(o);
	}
}
