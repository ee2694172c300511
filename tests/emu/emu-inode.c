/*
 * emu-inode.c: efs-emu's inode table and its NFS-like caching (efs-emu.c has the overview).
 *
 * A struct emu_inode per source object, in a hash keyed by (st_dev, st_ino) so hard links
 * share a node; it holds an O_PATH fd and the kernel's lookup count. A fuse_ino_t is the
 * node's address (FUSE_ROOT_ID for SOURCE). The (dev, ino) hash also serves the per-file
 * counters (emu-ctl.c). NFS-like caching: the attribute and entry timeouts given to the
 * kernel, what it was last told about an inode and the name it knows a regular file by (for
 * close-to-open at OPEN, emu-data.c), and which handles are stale.
 *
 * Locks: inode_lock (the inode hash and every nlookup), in->alock (reported, has_reported,
 * name, pdev, pino). emu_name_moved takes alock, drops it, then takes inode_lock.
 */

#include "emu.h"

/* ---- NFS-like caching: timeouts, what the kernel was told, stale handles ---- */

double ns_to_s(uint64_t ns)
{
	return (double)ns / 1e9;
}

/* Attribute timeout for an object of type 'mode': timeout=SEC if given, else acdirmin for
 * directories and acregmin for everything else (as the NFS client). */
double emu_attr_timeout(struct emu *e, mode_t mode)
{
	uint64_t t = atomic_load(&e->timeout_ns);

	if (t == EMU_UNSET)
		t = atomic_load(S_ISDIR(mode) ? &e->acdir_ns : &e->acreg_ns);
	return ns_to_s(t);
}

/* Entry (name) timeout of a positive lookup: 0 with lookupcache=none, else timeout=SEC if
 * given, else acdirmin (NFS revalidates names with their directory's attributes). */
double emu_entry_timeout(struct emu *e)
{
	uint64_t t = atomic_load(&e->timeout_ns);

	if (atomic_load(&e->lookupcache) == LC_NONE)
		return 0;
	return ns_to_s(t == EMU_UNSET ? atomic_load(&e->acdir_ns) : t);
}

/* How long a "no such name" may be cached: only with lookupcache=all; 0 = not at all. */
double emu_negative_timeout(struct emu *e)
{
	return atomic_load(&e->lookupcache) == LC_ALL ? emu_entry_timeout(e) : 0;
}

static void emu_attrs_of(struct emu_attrs *a, const struct stat *st)
{
	memset(a, 0, sizeof(*a));
	a->mode = st->st_mode;
	a->nlink = st->st_nlink;
	a->uid = st->st_uid;
	a->gid = st->st_gid;
	a->size = st->st_size;
	a->mtim = st->st_mtim;
	a->ctim = st->st_ctim;
}

static bool ts_eq(struct timespec a, struct timespec b)
{
	return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* Remember that the kernel was just given *st for 'in'. Takes in->alock. */
void emu_note_reported(struct emu_inode *in, const struct stat *st)
{
	pthread_mutex_lock(&in->alock);
	emu_attrs_of(&in->reported, st);
	in->has_reported = true;
	pthread_mutex_unlock(&in->alock);
}

/* True if *st differs from what the kernel was last told about 'in' (or it was told
 * nothing). Atime is left out: reads change it. Takes in->alock. */
bool emu_attrs_changed(struct emu_inode *in, const struct stat *st)
{
	struct emu_attrs now;
	bool changed;

	emu_attrs_of(&now, st);
	pthread_mutex_lock(&in->alock);
	changed = !in->has_reported || in->reported.mode != now.mode ||
		  in->reported.nlink != now.nlink || in->reported.uid != now.uid ||
		  in->reported.gid != now.gid || in->reported.size != now.size ||
		  !ts_eq(in->reported.mtim, now.mtim) || !ts_eq(in->reported.ctim, now.ctim);
	pthread_mutex_unlock(&in->alock);
	return changed;
}

/*
 * A regular file whose source object has no name left (removed, or replaced by a rename
 * over its name) has a dead NFS file handle: the server answers ESTALE. Exceptions, as on
 * NFS: GETATTR while efs-emu has the file open (the server keeps an open file), and OPEN of
 * a file this mount unlinked while it was open and that is still open (the client's own
 * silly-rename). An OPEN by name on NFSv4 re-resolves the name, so an OPEN of a file
 * replaced on SOURCE is stale even while other handles of it are open. Counts the ESTALE.
 */
bool emu_is_stale(struct emu *e, struct emu_inode *in, const struct stat *st, bool open)
{
	int nopen = atomic_load(&in->nopen);

	if (!S_ISREG(st->st_mode) || st->st_nlink != 0)
		return false;
	if (nopen > 0 && (!open || atomic_load(&in->silly)))
		return false;
	ctr_add(e, C_ESTALE, 1);
	return true;
}

/* ---- (dev, ino) hash ---- */

static size_t htab_slot(const struct emu_htab *t, dev_t dev, ino_t ino)
{
	uint64_t k =
	    ((uint64_t)ino * 0x9e3779b97f4a7c15ull) ^ ((uint64_t)dev * 0xc2b2ae3d27d4eb4full);

	return (size_t)(k ^ (k >> 29)) & (t->nb - 1);
}

int htab_init(struct emu_htab *t)
{
	t->nb = 1024;
	t->n = 0;
	t->b = calloc(t->nb, sizeof(*t->b));
	return t->b ? 0 : -ENOMEM;
}

struct emu_hnode *htab_find(const struct emu_htab *t, dev_t dev, ino_t ino)
{
	struct emu_hnode *p;

	for (p = t->b[htab_slot(t, dev, ino)]; p; p = p->next)
		if (p->dev == dev && p->ino == ino)
			return p;
	return NULL;
}

/* Insert n (not present). Growing is best effort: a failed grow only lengthens chains. */
void htab_insert(struct emu_htab *t, struct emu_hnode *n)
{
	size_t s;

	if (t->n >= t->nb) {
		struct emu_hnode **nb = calloc(t->nb * 2, sizeof(*nb));

		if (nb) {
			struct emu_htab grown = {.b = nb, .nb = t->nb * 2, .n = t->n};

			for (size_t i = 0; i < t->nb; i++) {
				struct emu_hnode *p = t->b[i], *next;

				for (; p; p = next) {
					next = p->next;
					s = htab_slot(&grown, p->dev, p->ino);
					p->next = nb[s];
					nb[s] = p;
				}
			}
			free(t->b);
			*t = grown;
		}
	}
	s = htab_slot(t, n->dev, n->ino);
	n->next = t->b[s];
	t->b[s] = n;
	t->n++;
}

static void htab_remove(struct emu_htab *t, struct emu_hnode *n)
{
	struct emu_hnode **pp;

	for (pp = &t->b[htab_slot(t, n->dev, n->ino)]; *pp; pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			t->n--;
			return;
		}
	}
}

/* ---- inodes ---- */

struct emu *emu_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

struct emu_inode *emu_inode(struct emu *e, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &e->root;
	return (struct emu_inode *)(uintptr_t)ino;
}

static fuse_ino_t emu_ino(struct emu *e, struct emu_inode *in)
{
	return in == &e->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)in;
}

struct emu_handle *emu_handle(struct fuse_file_info *fi)
{
	return (struct emu_handle *)(uintptr_t)fi->fh;
}

void emu_procname(char *buf, size_t size, int fd)
{
	snprintf(buf, size, "/proc/self/fd/%d", fd);
}

/*
 * Take one lookup reference on the node for 'fd' (an O_PATH fd whose stat is *st), creating
 * it if needed. Consumes fd in every case. Returns NULL on ENOMEM. Takes inode_lock.
 */
static struct emu_inode *emu_inode_ref(struct emu *e, int fd, const struct stat *st)
{
	struct emu_fstats *fs = emu_fstats_get(e, st->st_dev, st->st_ino);
	struct emu_inode *in, *fresh = fs ? calloc(1, sizeof(*fresh)) : NULL;

	pthread_mutex_lock(&e->inode_lock);
	in = (struct emu_inode *)htab_find(&e->inodes, st->st_dev, st->st_ino);
	if (in) {
		in->nlookup++;
	} else if (fresh) {
		fresh->h.dev = st->st_dev;
		fresh->h.ino = st->st_ino;
		fresh->fd = fd;
		fresh->nlookup = 1;
		fresh->st = fs;
		pthread_mutex_init(&fresh->alock, NULL);
		htab_insert(&e->inodes, &fresh->h);
		in = fresh;
		fresh = NULL;
		fd = -1;
	}
	pthread_mutex_unlock(&e->inode_lock);
	free(fresh);
	if (fd >= 0)
		close(fd);
	return in;
}

/* Drop n lookup references; the node goes away at zero (never the root). Takes inode_lock. */
void emu_inode_unref(struct emu *e, struct emu_inode *in, uint64_t n)
{
	bool gone = false;

	pthread_mutex_lock(&e->inode_lock);
	in->nlookup = in->nlookup > n ? in->nlookup - n : 0;
	if (!in->nlookup && in != &e->root) {
		htab_remove(&e->inodes, &in->h);
		gone = true;
	}
	pthread_mutex_unlock(&e->inode_lock);
	if (gone) {
		close(in->fd);
		pthread_mutex_destroy(&in->alock);
		free(in->name);
		free(in);
	}
}

/* Remember that the kernel knows regular file 'in' as 'name' in directory 'dir' (best
 * effort: on ENOMEM the name stays unknown and OPEN does not re-resolve it). Takes alock. */
void emu_note_name(struct emu_inode *in, struct emu_inode *dir, const char *name)
{
	char *copy = strdup(name);

	pthread_mutex_lock(&in->alock);
	free(in->name);
	in->name = copy;
	in->pdev = dir->h.dev;
	in->pino = dir->h.ino;
	pthread_mutex_unlock(&in->alock);
}

/*
 * NFSv4 OPEN is by parent + name: true if the name the kernel last learned for regular file
 * 'in' no longer leads to it on SOURCE (renamed away, removed, replaced; the kernel's
 * dentry is stale). Unknown name or parent: false. Takes alock, then inode_lock.
 */
bool emu_name_moved(struct emu *e, struct emu_inode *in)
{
	struct emu_inode *dir;
	struct stat st;
	char *name;
	dev_t pdev;
	ino_t pino;
	bool moved = false;
	int r;

	pthread_mutex_lock(&in->alock);
	name = in->name ? strdup(in->name) : NULL;
	pdev = in->pdev;
	pino = in->pino;
	pthread_mutex_unlock(&in->alock);
	if (!name)
		return false;
	pthread_mutex_lock(&e->inode_lock); /* keeps dir->fd open */
	dir = (struct emu_inode *)htab_find(&e->inodes, pdev, pino);
	if (dir) {
		r = fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW);
		if (r < 0)
			moved = errno == ENOENT || errno == ENOTDIR;
		else
			moved = st.st_dev != in->h.dev || st.st_ino != in->h.ino;
	}
	pthread_mutex_unlock(&e->inode_lock);
	free(name);
	return moved;
}

/* Look 'name' up under 'parent' in the source and fill *ent; takes a lookup reference. */
int emu_do_lookup(struct emu *e, fuse_ino_t parent, const char *name, struct fuse_entry_param *ent)
{
	struct emu_inode *dir = emu_inode(e, parent);
	struct emu_inode *in;
	int fd;

	memset(ent, 0, sizeof(*ent));
	if (dir == &e->root && strcmp(name, "..") == 0)
		name = "."; /* never climb out of SOURCE */
	fd = openat(dir->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstatat(fd, "", &ent->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	in = emu_inode_ref(e, fd, &ent->attr);
	if (!in)
		return -ENOMEM;
	emu_note_reported(in, &ent->attr);
	if (S_ISREG(ent->attr.st_mode))
		emu_note_name(in, dir, name);
	ent->ino = emu_ino(e, in);
	ent->attr_timeout = emu_attr_timeout(e, ent->attr.st_mode);
	ent->entry_timeout = emu_entry_timeout(e);
	return 0;
}

/* Reply with an entry; if the kernel did not take it, give the reference back. */
void emu_reply_entry(fuse_req_t req, struct emu *e, const struct fuse_entry_param *ent)
{
	if (fuse_reply_entry(req, ent) == -ENOENT && ent->ino)
		emu_inode_unref(e, emu_inode(e, ent->ino), 1);
}
