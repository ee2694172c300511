/* fsops_index.c - the directory index in the FUSE ops (dirindex.h): when a
 * snapshot of a directory may answer for the source, how one is made, what
 * a change through the mount drops, and where snapshots persist (the
 * cache's records, cache_blob.h, so they are checksummed, bounded by
 * cache_size and survive a restart; with ttl=never and -o immutable only,
 * the modes that read them back).
 *
 * A snapshot of directory D answers (index_dir) by dix_judge's rules
 * (dirindex.h): never with lookupcache=none (strict: no index at all);
 * with ttl=never (and -o immutable) always, unless D was seen since with
 * another mtime or ctime; otherwise only while the files' shortest
 * attribute window lasts since this daemon's pass made it (never one read
 * back from cache_dir), and in that span while D's name window (meta.c)
 * has not passed since it was made or last checked, then after one stat
 * of D on the source shows its inode number, mtime and ctime unchanged.
 *
 * What it answers: a name and its attributes (itab_observe_at: what is
 * left of the file's own window since the pass saw them, none for a
 * snapshot of an earlier daemon, the full window with ttl=never); a name
 * absent (lookupcache=all, with ttl=N or ttl=never only); a listing, by
 * position; a getattr inside the file's window.  The source is asked instead for a name
 * another file system is mounted on, a file of several links (with default
 * options: a change through another name is not seen here), and a file
 * whose inode holds a newer, different answer.
 *
 * Snapshots are made from one pass over the source directory: readdir and
 * one stat per name (index_build), the same requests a readdirplus made
 * before (with ttl=never also two forced stats of D), published only if
 * the directory's mtime and ctime did not move during the pass and nothing
 * changed through the mount meanwhile (fs->index_gen).  Made at a
 * handle's first readdirplus from its start (from its stream), and with
 * ttl=never also at a lookup in a directory that has none and did not
 * change through the mount (so that a restarted daemon finds every
 * directory on the way to a file without the source).  A directory without
 * a handle (-o immutable) is listed from snapshots, or from the source's
 * stream for the inode's life once a snapshot could not be had
 * (fsops_dir.c: the two kinds of cookie never meet).
 *
 * Changes through the mount forget the snapshot of the directory changed
 * (a name added, removed or renamed, a file written, truncated, its
 * attributes or xattrs set: that of the directory it was last seen in).
 *
 * Locks: none of its own (dirindex.c's mutex, the inode table's and the
 * cache's are taken inside their modules).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dirindex_cache.h"
#include "fsops_int.h"
#include "siblings.h"

/* A lookup in a directory without a snapshot lists it (ttl=never) only up
 * to this many names; a bigger one is asked name by name. */
#define INDEX_BUILD_ON_LOOKUP_MAX 4096

int index_init(struct efs_fs *fs)
{
	struct dix_store_ops ops;

	fs->dix = NULL;
	if (fs->policy.lookupcache == LOOKUPCACHE_NONE)
		return 0; /* strict: names always from the source */
	dirindex_cache_ops(fs->cache, &ops);
	if (!fs->policy.immutable) {
		/* Default options (and ttl=N): a snapshot answers only within
		 * the window since this daemon's pass, so one read back from
		 * cache_dir never would.  Writing each pass there (a record
		 * removed and one created per directory listed) would be work
		 * for nothing; a pass removes what an earlier daemon kept. */
		ops.load = NULL;
		ops.save = NULL;
	}
	return dix_new(&fs->dix, (size_t)fs->cfg->index_mem, &ops);
}

void index_free(struct efs_fs *fs)
{
	dix_free(fs->dix);
	fs->dix = NULL;
}

/* ---- when a snapshot answers ----------------------------------------------- */

/* Seconds the kernel may keep names answered from d (checked or made at
 * the start of its window), at now. */
static double names_left(struct efs_fs *fs, struct efs_inode *dir, struct dix_dir *d,
			 const struct timespec *now)
{
	double w = itab_entry_timeout(fs->itab, dir, &fs->policy, false), left;
	struct timespec at;

	if (fs->policy.immutable)
		return w;
	if (!dix_last_checked(fs->dix, d, &at))
		return 0;
	left = w - meta_elapsed(&at, now);
	return left > 0 ? left : 0;
}

struct dix_dir *index_dir(struct efs_fs *fs, struct efs_inode *dir, bool may_check)
{
	struct dix_dir *d;
	struct meta_attr a;
	struct timespec now;
	struct stat st;
	int fd, r;

	if (!fs->dix || !S_ISDIR(dir->type))
		return NULL;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (fs->policy.immutable) {
		d = dix_get(fs->dix, (uint64_t)dir->dev, (uint64_t)dir->ino);
	} else {
		/* Default options: its entries' attributes are as of its pass,
		 * and answered for only while the files' shortest window lasts
		 * since (index_entry).  Past that every name it gave would
		 * cost the kernel a GETATTR, by name at the source, so it
		 * answers nothing: a lookup asks the source (one LOOKUP, as
		 * EFS's own client), a listing makes a new pass (one listing,
		 * whose stats the source's client answers from it).  One read
		 * back from cache_dir (an earlier daemon's, or pushed out of
		 * memory) is of unknown age: not read at all. */
		d = dix_get_loaded(fs->dix, (uint64_t)dir->dev, (uint64_t)dir->ino);
		if (d && dix_attr_left(d, false, fs->policy.regmin, &now) <= 0) {
			dix_put(fs->dix, d);
			d = NULL;
		}
	}
	if (!d)
		return NULL;
	itab_attr(fs->itab, dir, &a);
	switch (dix_judge(fs->dix, d, fs->policy.immutable,
			  itab_entry_timeout(fs->itab, dir, &fs->policy, false), &a, &now)) {
	case DIX_ANSWER:
		return d;
	case DIX_STALE:
		dix_put(fs->dix, d);
		dix_forget(fs->dix, (uint64_t)dir->dev, (uint64_t)dir->ino);
		return NULL;
	case DIX_CHECK:
		if (may_check)
			break;
		dix_put(fs->dix, d);
		return NULL;
	}
	/* Its window passed: one stat of the directory checks every name
	 * (forced: the source's client may have cached its attributes). */
	fd = ifd(fs, dir);
	r = fd < 0 ? fd : src_stat_sync_at(fd, "", &st);
	if (fd >= 0) {
		ifd_put(fs, dir);
		stats_add(&fs->stats, ST_source_getattrs, 1);
	}
	if (r == 0) {
		itab_observe(fs->itab, dir, &fs->policy, &st);
		if (dix_recheck(fs->dix, d, &st, &now)) {
			stats_add(&fs->stats, ST_index_checks, 1);
			return d;
		}
	}
	dix_put(fs->dix, d);
	return NULL;
}

void index_put(struct efs_fs *fs, struct dix_dir *d)
{
	dix_put(fs->dix, d);
}

int index_entry(struct efs_fs *fs, struct efs_inode *dir, struct dix_dir *d,
		const struct dix_entry *ent, struct fuse_entry_param *e)
{
	char name[DIX_NAME_MAX + 1];
	struct timespec bt, now;
	bool has_bt = dix_btime(ent, &bt);
	struct efs_inode *i;
	double left;

	/* A mount point's attributes are the mount's; a file of several
	 * names may have changed through another of them (only the
	 * directory it was last seen in is told, index_parent_changed). */
	if ((ent->flags & DIX_F_MOUNT) ||
	    (!fs->policy.immutable && !S_ISDIR(ent->a.mode) && ent->a.nlink > 1))
		return -EAGAIN;
	memcpy(name, dix_name(d, ent), ent->name_len);
	name[ent->name_len] = '\0';
	memset(e, 0, sizeof(*e));
	dix_stat(ent, d->dev, &e->attr);
	i = itab_get_known(fs->itab, dir, name, &e->attr, has_bt ? &bt : NULL);
	if (!i)
		return -ENOMEM;
	clock_gettime(CLOCK_MONOTONIC, &now);
	/* The attributes as of the pass (dix_attr_left's rule, with the
	 * inode's own window): with ttl=never as of now. */
	left = itab_observe_at(fs->itab, i, &fs->policy, &e->attr,
			       fs->policy.immutable ? &now : d->seen_here ? &d->seen : NULL);
	/* The inode knows something newer of the file; or (default options)
	 * the pass is older than the file's window: a name without
	 * attributes the kernel may keep would cost a GETATTR next, by name
	 * at the source for an inode with no fd, more than the one LOOKUP
	 * the source gives both in. */
	if (left < 0 || (left == 0 && !fs->policy.immutable)) {
		itab_forget(fs->itab, i, 1);
		return -EAGAIN;
	}
	e->ino = ino_id(fs, i);
	e->attr_timeout = left;
	e->entry_timeout = names_left(fs, dir, d, &now);
	return 0;
}

/* ---- reading cached files back ------------------------------------------------ */

/* A regular file of 1 MiB at most (SIB_MAX_FILE), not empty, nothing
 * mounted on it: what the read-back and the sibling fetches take. */
static bool small_file(const struct dix_entry *ent)
{
	return S_ISREG(ent->a.mode) && !(ent->flags & DIX_F_MOUNT) && ent->a.size > 0 &&
	       ent->a.size <= SIB_MAX_FILE;
}

/* d's small regular files with records read back, and (ttl=never, -o
 * immutable: the modes whose snapshots persist) the snapshots of its
 * subdirectories loaded, on the pool (sib_listed). */
static void read_back(struct efs_fs *fs, struct dix_dir *d)
{
	unsigned max = fs->cfg->siblings, n = 0, nsub = 0, cap = d->n < max ? d->n : max;
	uint64_t *ino, *sub;

	if (!d->n)
		return;
	ino = malloc(2 * cap * sizeof(*ino));
	if (!ino)
		return;
	sub = ino + cap;
	for (uint32_t k = 0; k < d->n && (n < max || nsub < max); k++) {
		const struct dix_entry *ent = &d->ent[k];

		/* Files and snapshots the cache has no record of are not
		 * asked for: a listing of an uncached directory claims no
		 * window. */
		if (n < max && small_file(ent) && cache_knows(fs->cache, (dev_t)d->dev, ent->a.ino))
			ino[n++] = ent->a.ino;
		else if (nsub < max && fs->policy.immutable && S_ISDIR(ent->a.mode) &&
			 !(ent->flags & DIX_F_MOUNT) &&
			 !dix_loaded(fs->dix, d->dev, ent->a.ino) &&
			 dirindex_cache_has(fs->cache, d->dev, ent->a.ino))
			sub[nsub++] = ent->a.ino;
	}
	sib_listed(fs->sib, (dev_t)d->dev, d->ino, ino, n, sub, nsub);
	free(ino);
}

/* A snapshot loaded ahead (sib_listed's SIB_SNAP jobs): into memory from
 * cache_dir, where the next use finds it; judged at that use like any. */
static void load_ahead(void *arg, dev_t dev, uint64_t dir_ino)
{
	struct efs_fs *fs = arg;

	dix_put(fs->dix, dix_get(fs->dix, (uint64_t)dev, dir_ino));
}

void index_set_loader(struct efs_fs *fs)
{
	if (fs->dix && fs->policy.immutable)
		sib_set_loader(fs->sib, load_ahead, fs);
}

void index_listed(struct efs_fs *fs, struct dix_dir *d)
{
	static const char pycache[] = "__pycache__";
	const struct dix_entry *ent;
	struct dix_dir *sub;

	if (!fs->sib || !fs->cfg->siblings)
		return;
	read_back(fs, d);
	/* Python reads a package's compiled modules from __pycache__, which
	 * it never lists (it opens them by name): its files are read back
	 * with the package's listing.  Any snapshot of it will do, checked
	 * or not: this is a hint, every record is validated at its use. */
	ent = dix_find(d, pycache, sizeof(pycache) - 1);
	if (!ent || !S_ISDIR(ent->a.mode) || (ent->flags & DIX_F_MOUNT))
		return;
	sub = dix_get(fs->dix, d->dev, ent->a.ino);
	if (!sub)
		return;
	read_back(fs, sub);
	dix_put(fs->dix, sub);
}

/* A snapshot of directory (dev, ino) for a cold open's burst of sibling
 * fetches: one this daemon may answer from by the first test of index_dir
 * (its pass within the files' window; any in memory with ttl=never), else
 * a pass made now, as the burst would list the directory anyway; NULL if
 * neither (the kernel forgot the directory, it is too big, it changed
 * during the pass). */
static struct dix_dir *burst_snapshot(struct efs_fs *fs, dev_t dev, uint64_t ino)
{
	struct efs_inode *dir;
	struct timespec now;
	struct dix_dir *d = dix_get_loaded(fs->dix, (uint64_t)dev, ino);

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (d && !fs->policy.immutable && dix_attr_left(d, false, fs->policy.regmin, &now) <= 0) {
		dix_put(fs->dix, d);
		d = NULL;
	}
	if (d)
		return d;
	dir = itab_find_hold(fs->itab, dev, (ino_t)ino);
	if (!dir)
		return NULL;
	if (!__atomic_load_n(&dir->unindexed, __ATOMIC_RELAXED))
		d = index_build(fs, dir, INDEX_BUILD_ON_LOOKUP_MAX, NULL);
	itab_unhold(fs->itab, dir);
	return d;
}

/* A cold open's burst of sibling fetches (siblings.c) takes the small
 * regular files from the directory's snapshot (burst_snapshot), and the
 * listing it makes is the index's pass: an import opens a package's
 * __init__ (or a __pycache__ file, a directory it never lists) before it
 * lists the package, and then finds the names in the index.  Only a hint
 * for the burst: each file is opened by name and checked as a listing's
 * would be, and fetched under the identity its open gives. */
int index_small_files(void *arg, dev_t dev, uint64_t dir_ino, unsigned max,
		      struct sib_names *out)
{
	struct efs_fs *fs = arg;
	struct dix_dir *d;
	unsigned n = 0;
	size_t len = 0;

	if (!fs->dix || !(d = burst_snapshot(fs, dev, dir_ino)))
		return -ENOENT;
	out->ino = malloc(((d->n < max ? d->n : max) + 1) * sizeof(*out->ino));
	out->names = malloc((size_t)d->names_len + d->n + 1);
	if (!out->ino || !out->names) {
		free(out->ino);
		free(out->names);
		dix_put(fs->dix, d);
		return -ENOENT;
	}
	for (uint32_t k = 0; k < d->n && n < max; k++) {
		const struct dix_entry *ent = &d->ent[k];

		if (!small_file(ent))
			continue;
		memcpy(out->names + len, d->names + ent->name_off, ent->name_len);
		len += ent->name_len;
		out->names[len++] = '\0';
		out->ino[n++] = ent->a.ino;
	}
	out->n = n;
	dix_put(fs->dix, d);
	return 0;
}

/* ---- making one ---------------------------------------------------------------- */

/* The names of the directory behind dp, without "." and ".." (their
 * inode numbers into *dot, *dotdot): at most max, else -E2BIG before
 * anything is stat'ed.  *names is one block of NUL-terminated names. */
static int read_names(DIR *dp, unsigned max, char **names, size_t *len, unsigned *n,
		      uint64_t *dot, uint64_t *dotdot)
{
	size_t cap = 4096, used = 0;
	char *buf = malloc(cap);
	struct dirent *de;
	int r;

	*n = 0;
	if (!buf)
		return -ENOMEM;
	for (;;) {
		size_t l;

		r = src_readdir(dp, &de);
		if (r < 0 || !de)
			break;
		if (!strcmp(de->d_name, ".")) {
			*dot = de->d_ino;
			continue;
		}
		if (!strcmp(de->d_name, "..")) {
			*dotdot = de->d_ino;
			continue;
		}
		if (++*n > max) {
			r = -E2BIG;
			break;
		}
		l = strlen(de->d_name) + 1;
		if (used + l > cap) {
			char *more;

			while (used + l > cap)
				cap *= 2;
			more = realloc(buf, cap);
			if (!more) {
				r = -ENOMEM;
				break;
			}
			buf = more;
		}
		memcpy(buf + used, de->d_name, l);
		used += l;
	}
	if (r < 0) {
		free(buf);
		return r;
	}
	*names = buf;
	*len = used;
	return 0;
}

/* A directory's attributes for index_build (see there). */
static int stat_dir(struct efs_fs *fs, int fd, struct stat *st)
{
	stats_add(&fs->stats, ST_source_getattrs, 1);
	return fs->policy.immutable ? src_stat_sync_at(fd, "", st) : src_stat(fd, st);
}

struct dix_dir *index_build(struct efs_fs *fs, struct efs_inode *dir, unsigned max_names,
			    DIR *stream)
{
	struct dix_build *b = NULL;
	struct dix_dir *d = NULL;
	struct timespec now;
	struct stat st, after;
	uint64_t dot = 0, dotdot = 0, gen;
	char *names = NULL;
	size_t len = 0;
	unsigned n;
	DIR *dp = NULL;
	int fd, dfd, r;

	if (!fs->dix || !S_ISDIR(dir->type))
		return NULL;
	/* A change through the mount during the pass (a write to a file in
	 * it, say, which its mtime does not show): what the pass saw of that
	 * file may predate it, so nothing is published. */
	gen = __atomic_load_n(&fs->index_gen, __ATOMIC_ACQUIRE);
	if (max_names > DIX_MAX_ENTRIES)
		max_names = DIX_MAX_ENTRIES;
	fd = ifd(fs, dir);
	if (fd < 0)
		return NULL;
	/* A handle's unread stream lists it: no second open of the directory
	 * at the source (an OPENDIR there). */
	if (stream)
		rewinddir(stream);
	/* The directory before the listing: a change after this shows in
	 * the check at the end.  With ttl=never (kept, never checked again)
	 * as the server has it now; with other options as its client cached
	 * it, which costs no request: attributes older than the listing
	 * only make the snapshot look changed sooner (rules 1 and 4 of
	 * dix_judge), never a newer one answer for an older listing. */
	r = stat_dir(fs, fd, &st);
	if (r == 0 && stream)
		dp = stream;
	else if (r == 0)
		r = src_opendir(fd, &dp);
	ifd_put(fs, dir);
	if (r < 0)
		return NULL;
	stats_add(&fs->stats, ST_source_readdirs, 1);
	dfd = dirfd(dp);
	/* The names first (cheap): a directory too big to index costs no
	 * stat of its names here. */
	if (read_names(dp, max_names, &names, &len, &n, &dot, &dotdot) < 0 ||
	    !(b = dix_build_begin(&st)))
		goto out;
	for (size_t off = 0; off < len; off += strlen(names + off) + 1) {
		const char *name = names + off;
		struct timespec bt;
		struct stat cst;
		bool has_bt;

		r = src_stat_at_btime(dfd, name, &cst, &bt, &has_bt);
		stats_add(&fs->stats, ST_source_lookups, 1);
		if (r == -ENOENT)
			continue; /* removed since readdir saw it */
		/* Anything else (a fault, a file with no link left that the
		 * source's client still names): no snapshot of this pass. */
		if (r < 0 || (S_ISREG(cst.st_mode) && cst.st_nlink == 0))
			goto out;
		if (dix_build_add(b, name, &cst, has_bt ? &bt : NULL) < 0)
			goto out;
	}
	/* The directory moved during the pass: what it saw may be a mix. */
	if (stat_dir(fs, dfd, &after) < 0 || after.st_ino != st.st_ino ||
	    after.st_mtim.tv_sec != st.st_mtim.tv_sec ||
	    after.st_mtim.tv_nsec != st.st_mtim.tv_nsec ||
	    after.st_ctim.tv_sec != st.st_ctim.tv_sec || after.st_ctim.tv_nsec != st.st_ctim.tv_nsec)
		goto out;
	dix_build_dots(b, dot, dotdot);
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (__atomic_load_n(&fs->index_gen, __ATOMIC_ACQUIRE) != gen)
		goto out;
	d = dix_build_commit(fs->dix, b, &now);
	b = NULL;
	if (d) {
		stats_add(&fs->stats, ST_index_builds, 1);
		itab_observe(fs->itab, dir, &fs->policy, &st);
	}
out:
	__atomic_store_n(&dir->unindexed, d == NULL, __ATOMIC_RELAXED);
	dix_build_abort(b);
	free(names);
	if (dp != stream)
		src_closedir(dp);
	else if (!d)
		rewinddir(stream); /* the handle lists from it after all */
	return d;
}

/* ---- lookups and getattr --------------------------------------------------------- */

int index_lookup(struct efs_fs *fs, struct efs_inode *dir, const char *name,
		 struct fuse_entry_param *e)
{
	struct dix_dir *d;
	const struct dix_entry *ent;
	int r;

	/* A name no snapshot can hold: the source says which error. */
	if (strlen(name) > DIX_NAME_MAX)
		return -EAGAIN;
	d = index_dir(fs, dir, true);
	if (!d && fs->dix && fs->policy.immutable &&
	    !__atomic_load_n(&dir->unindexed, __ATOMIC_RELAXED)) {
		/* ttl=never: list it now, so that no name in it asks again, in
		 * this daemon or the next. */
		d = index_build(fs, dir, INDEX_BUILD_ON_LOOKUP_MAX, NULL);
	}
	if (!d)
		return -EAGAIN;
	ent = dix_find(d, name, strlen(name));
	if (ent) {
		r = index_entry(fs, dir, d, ent, e);
	} else if (fs->policy.lookupcache == LOOKUPCACHE_ALL &&
		   (fs->policy.immutable || fs->policy.ttl > 0)) {
		/* Absent, with ttl=N or ttl=never only: an NFS client never
		 * answers "no such name" from a listing (its negative entries
		 * are per name asked), so with default options a name made
		 * on the source after the listing shows at once, as on EFS. */
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		memset(e, 0, sizeof(*e));
		e->entry_timeout = names_left(fs, dir, d, &now);
		r = -ENOENT;
	} else {
		r = -EAGAIN; /* the source says */
	}
	dix_put(fs->dix, d);
	if (r != -EAGAIN)
		stats_add(&fs->stats, ST_index_lookups, 1);
	return r;
}

int index_getattr(struct efs_fs *fs, struct efs_inode *i, struct stat *st, double *timeout)
{
	struct efs_inode *parent;
	const struct dix_entry *ent;
	struct meta_attr a;
	struct timespec now;
	struct dix_dir *d;
	char *name;
	int r = -EAGAIN;

	if (!fs->dix || i == itab_root(fs->itab))
		return -EAGAIN;
	itab_attr(fs->itab, i, &a);
	clock_gettime(CLOCK_MONOTONIC, &now);
	/* Only inside the window of what was last seen of i, and only what
	 * was seen (the snapshot's entry, if it is that). */
	if (!a.seen || meta_elapsed(&a.at, &now) >= a.timeo)
		return -EAGAIN;
	if (itab_parent_get(fs->itab, i, &parent, &name) < 0)
		return -EAGAIN;
	d = index_dir(fs, parent, false); /* no check: not for one getattr */
	if (d && (ent = dix_find(d, name, strlen(name))) && !(ent->flags & DIX_F_MOUNT) &&
	    ent->a.ino == (uint64_t)i->ino) {
		dix_stat(ent, d->dev, st);
		if (st->st_dev == i->dev && meta_attr_same(&a, st)) {
			*timeout = a.timeo - meta_elapsed(&a.at, &now);
			r = 0;
		}
	}
	if (d)
		dix_put(fs->dix, d);
	itab_parent_put(fs->itab, parent, name);
	if (r == 0)
		stats_add(&fs->stats, ST_index_getattrs, 1);
	return r;
}

/* ---- changes --------------------------------------------------------------------- */

void index_dir_changed(struct efs_fs *fs, struct efs_inode *dir)
{
	if (!fs->dix)
		return;
	__atomic_add_fetch(&fs->index_gen, 1, __ATOMIC_RELEASE);
	if (!dir)
		return;
	/* A lookup does not list it again (one pass per change would make a
	 * directory filled through the mount cost its size squared); the
	 * next listing does. */
	__atomic_store_n(&dir->unindexed, true, __ATOMIC_RELAXED);
	dix_forget(fs->dix, (uint64_t)dir->dev, (uint64_t)dir->ino);
}

void index_gone(struct efs_fs *fs, struct efs_inode *i, int r)
{
	if (r == -ESTALE)
		index_parent_changed(fs, i);
}

void index_parent_changed(struct efs_fs *fs, struct efs_inode *i)
{
	struct efs_inode *parent;
	char *name;

	if (!fs->dix)
		return;
	__atomic_add_fetch(&fs->index_gen, 1, __ATOMIC_RELEASE);
	if (itab_parent_get(fs->itab, i, &parent, &name) < 0)
		return;
	index_dir_changed(fs, parent);
	itab_parent_put(fs->itab, parent, name);
}
