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
 * Locks: inode_lock (the inode hash and every nlookup; the pruner's flags), in->alock
 * (reported, has_reported, name, pdev, pino). emu_name_moved takes alock, drops it, then
 * takes inode_lock; the pruner takes alock under inode_lock.
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
		if (e->fd_budget && e->inodes.n > e->fd_budget && !e->prune_wanted) {
			e->prune_wanted = true;
			pthread_cond_signal(&e->prune_cv);
		}
	}
	if (in)
		atomic_store(&in->used, atomic_fetch_add(&e->tick, 1));
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

/* ---- fd pressure ----
 *
 * An NFS client holds no fd per inode; efs-emu holds an O_PATH fd per inode the kernel knows,
 * until the kernel forgets it, and the kernel keeps what it looked up while memory allows.
 * A tree with more objects than RLIMIT_NOFILE (a 25,000-file site-packages under a limit
 * of 20,000) would make lookups fail with EMFILE, which no NFS server answers.  So above
 * fd_budget inodes the pruner thread asks the kernel to drop the names of the least
 * recently looked-up inodes without an open handle (fuse_lowlevel_notify_inval_entry):
 * once unused they are forgotten and their fds closed, as an NFS client drops what it
 * cached under memory pressure.  The kernel looks such a name up again when it needs it
 * (a LOOKUP, counted).  The invalidation runs on a thread of its own: it takes the
 * directory's lock, which a LOOKUP in that directory holds while it waits for its reply.
 */

#define EMU_FD_RESERVE 256 /* open handles, the session, the stats file */

/* Raise the soft fd limit to the hard one and set the budget: three quarters of what the
 * reserve leaves, so a burst of lookups has room while the pruner works. */
void emu_fd_budget_init(struct emu *e)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 22))
		rl.rlim_cur = 1u << 22;
	e->fd_budget = rl.rlim_cur > 2 * EMU_FD_RESERVE ? (rl.rlim_cur - EMU_FD_RESERVE) * 3 / 4
							: rl.rlim_cur / 4;
	if (e->fd_budget < 16)
		e->fd_budget = 16;
}

/* A lookup got EMFILE: wake the pruner and wait (a second at most) for one pass.  True if
 * one ended (worth another try). */
static bool emu_wait_pruned(struct emu *e)
{
	struct timespec until;
	uint64_t pass;
	int r = 0;

	if (!e->fd_budget)
		return false;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 1;
	pthread_mutex_lock(&e->inode_lock);
	pass = e->prune_pass;
	e->prune_wanted = true;
	pthread_cond_signal(&e->prune_cv);
	while (e->prune_pass == pass && r == 0 && !atomic_load(&e->stopping))
		r = pthread_cond_timedwait(&e->pruned_cv, &e->inode_lock, &until);
	pass = e->prune_pass - pass;
	pthread_mutex_unlock(&e->inode_lock);
	return pass > 0;
}

struct emu_victim {
	uint64_t used;
	struct emu_inode *in;
};

static int victim_cmp(const void *a, const void *b)
{
	uint64_t x = ((const struct emu_victim *)a)->used, y = ((const struct emu_victim *)b)->used;

	return x < y ? -1 : x > y;
}

struct emu_drop {
	fuse_ino_t parent;
	char *name;
};

/* Caller holds inode_lock: up to *n (parent, name) of the least recently used idle inodes
 * into a fresh array (the names copied); *n becomes how many. */
static struct emu_drop *emu_pick_locked(struct emu *e, size_t *n)
{
	struct emu_victim *v = calloc(e->inodes.n + 1, sizeof(*v));
	struct emu_drop *d = NULL;
	size_t nv = 0, nd = 0;

	if (!v)
		goto out;
	for (size_t b = 0; b < e->inodes.nb; b++)
		for (struct emu_hnode *p = e->inodes.b[b]; p; p = p->next) {
			struct emu_inode *in = (struct emu_inode *)p;

			if (in != &e->root && !atomic_load(&in->nopen) && nv <= e->inodes.n)
				v[nv++] = (struct emu_victim){atomic_load(&in->used), in};
		}
	qsort(v, nv, sizeof(*v), victim_cmp);
	d = calloc(*n, sizeof(*d));
	for (size_t k = 0; d && k < nv && nd < *n; k++) {
		struct emu_inode *in = v[k].in, *dir;

		pthread_mutex_lock(&in->alock);
		dir = NULL;
		if (in->name)
			dir = (struct emu_inode *)htab_find(&e->inodes, in->pdev, in->pino);
		if (!dir && in->name && in->pdev == e->root.h.dev && in->pino == e->root.h.ino)
			dir = &e->root;
		if (dir) {
			d[nd].name = strdup(in->name);
			if (d[nd].name)
				d[nd++].parent = emu_ino(e, dir);
		}
		pthread_mutex_unlock(&in->alock);
	}
out:
	free(v);
	*n = nd;
	return d;
}

void *emu_pruner(void *arg)
{
	struct emu *e = arg;

	pthread_mutex_lock(&e->inode_lock);
	while (!atomic_load(&e->stopping)) {
		struct emu_drop *d;
		size_t n = 0;

		while (!e->prune_wanted && !atomic_load(&e->stopping))
			pthread_cond_wait(&e->prune_cv, &e->inode_lock);
		e->prune_wanted = false;
		if (atomic_load(&e->stopping))
			break;
		if (e->inodes.n > e->fd_budget * 3 / 4)
			n = e->inodes.n - e->fd_budget * 3 / 4;
		d = n ? emu_pick_locked(e, &n) : NULL;
		pthread_mutex_unlock(&e->inode_lock);
		for (size_t k = 0; k < n; k++) {
			/* ENOENT: the kernel had already dropped it. */
			fuse_lowlevel_notify_inval_entry(e->se, d[k].parent, d[k].name,
							 strlen(d[k].name));
			free(d[k].name);
		}
		free(d);
		atomic_fetch_add(&e->pruned, n);
		/* The kernel sends the FORGETs as it evicts the inodes: give it a moment before
		 * the next pass looks at the count again. */
		if (n)
			emu_sleep_until(emu_now() + 20 * 1000000ull);
		pthread_mutex_lock(&e->inode_lock);
		e->prune_pass++;
		pthread_cond_broadcast(&e->pruned_cv);
	}
	pthread_mutex_unlock(&e->inode_lock);
	return NULL;
}

void emu_pruner_stop(struct emu *e)
{
	pthread_mutex_lock(&e->inode_lock);
	atomic_store(&e->stopping, true);
	pthread_cond_broadcast(&e->prune_cv);
	pthread_cond_broadcast(&e->pruned_cv);
	pthread_mutex_unlock(&e->inode_lock);
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
	if (fd < 0 && (errno == EMFILE || errno == ENFILE) && emu_wait_pruned(e))
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
	/* Regular files: the name OPEN re-resolves.  Every object: the name the pruner asks
	 * the kernel to drop. */
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
