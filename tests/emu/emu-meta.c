/*
 * emu-meta.c: efs-emu's operations on names and attributes (efs-emu.c has the overview):
 * init, lookup (with negative entries), forget, getattr (the OPEN compound's or a counted
 * one), setattr, readlink, mknod, mkdir, symlink, link, unlink, rmdir, rename (noting
 * silly-renames and the names the kernel now knows), the directory streams (opendir,
 * readdir, readdirplus, releasedir, fsyncdir) and statfs; and emu_ops, the table of every
 * operation, those of emu-data.c and emu-ctl.c included.
 *
 * Locks: inode_lock (nlookup in emu_link; emu_mark_silly; emu_renamed, then the file's
 * alock), h->lock (one directory stream). Objects are created as the caller by switching
 * this thread's fsuid/fsgid (emu_cred_enter).
 */

#include "emu.h"

/* ---- credentials for creating objects ---- */

/* Create new objects as the calling user (fsuid/fsgid are per thread on Linux). */
void emu_cred_enter(fuse_req_t req, struct emu *e, struct emu_cred *c)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	c->changed = false;
	if (!e->is_root || (ctx->uid == 0 && ctx->gid == 0))
		return;
	setfsgid(ctx->gid);
	setfsuid(ctx->uid);
	c->changed = true;
}

void emu_cred_leave(const struct emu_cred *c)
{
	if (!c->changed)
		return;
	setfsuid(0);
	setfsgid(0);
}

/* ---- operations ---- */

static void emu_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->want |=
	    conn->capable & (FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_SPLICE_READ |
			     FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
	/* The source clears set-id bits only for unprivileged writers; let the kernel do it. */
	conn->want &= ~(unsigned)(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_WRITEBACK_CACHE |
				  FUSE_CAP_EXPORT_SUPPORT);
	conn->max_write = EMU_MAX_REQ;
	conn->max_readahead = EMU_MAX_REQ; /* the kernel keeps the smaller of this and its bdi */
}

static void emu_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct emu *e = emu_of(req);
	struct fuse_entry_param ent;
	int err;

	emu_meta(e, C_LOOKUPS);
	err = emu_lookup_fault(e, emu_inode(e, parent), name);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	err = emu_do_lookup(e, parent, name, &ent);
	if (err == -ENOENT && emu_negative_timeout(e) > 0) {
		/* a negative entry: the kernel caches "no such name" for the timeout */
		memset(&ent, 0, sizeof(ent));
		ent.entry_timeout = emu_negative_timeout(e);
		ctr_add(e, C_NEG_ENTRIES, 1);
		fuse_reply_entry(req, &ent);
		return;
	}
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	fctr_add(emu_inode(e, ent.ino), F_LOOKUPS, 1);
	emu_reply_entry(req, e, &ent);
}

void emu_forget_one(struct emu *e, fuse_ino_t ino, uint64_t nlookup)
{
	emu_inode_unref(e, emu_inode(e, ino), nlookup);
}

static void emu_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	emu_forget_one(emu_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void emu_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		emu_forget_one(emu_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

/* Reply with the source's attributes of 'in'; with 'stale_check', ESTALE for a dead handle. */
static void emu_reply_attr(fuse_req_t req, struct emu *e, struct emu_inode *in, bool stale_check)
{
	struct stat st;

	if (fstatat(in->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	if (stale_check && emu_is_stale(e, in, &st, false)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	emu_note_reported(in, &st);
	fuse_reply_attr(req, &st, emu_attr_timeout(e, st.st_mode));
}

/* Is this GETATTR the one of an OPEN compound (emu_open_revalidate)? Consumes it. */
static bool emu_open_getattr(struct emu *e, struct emu_inode *in)
{
	uint64_t at = atomic_exchange(&in->open_at, 0);

	return at && emu_now() - at < (uint64_t)(emu_attr_timeout(e, S_IFREG) * 1e9);
}

static void emu_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);
	struct emu_inode *in = emu_inode(e, ino);
	int err;

	(void)fi;
	if (emu_open_getattr(e, in)) {
		ctr_add(e, C_OPEN_GETATTRS, 1);
	} else {
		emu_meta(e, C_GETATTRS);
		fctr_add(in, F_GETATTRS, 1);
	}
	err = emu_extra_fault(req, e, in);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	emu_reply_attr(req, e, in, true);
}

static void emu_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
			struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);
	struct emu_inode *in = emu_inode(e, ino);
	int fd = fi ? emu_handle(fi)->fd : -1;
	char proc[64];
	int r;

	emu_meta(e, C_OPS);
	emu_procname(proc, sizeof(proc), in->fd);
	if (valid & FUSE_SET_ATTR_MODE) {
		r = fd >= 0 ? fchmod(fd, attr->st_mode) : chmod(proc, attr->st_mode);
		if (r < 0)
			goto out_err;
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;

		if (fchownat(in->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			goto out_err;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		r = fd >= 0 ? ftruncate(fd, attr->st_size) : truncate(proc, attr->st_size);
		if (r < 0)
			goto out_err;
	}
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec tv[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};

		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		r = fd >= 0 ? futimens(fd, tv) : utimensat(AT_FDCWD, proc, tv, 0);
		if (r < 0)
			goto out_err;
	}
	emu_reply_attr(req, e, in, false);
	return;

out_err:
	fuse_reply_err(req, errno);
}

static void emu_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct emu *e = emu_of(req);
	char buf[PATH_MAX + 1];
	ssize_t n;

	emu_meta(e, C_OPS);
	n = readlinkat(emu_inode(e, ino)->fd, "", buf, sizeof(buf));
	if (n < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	if ((size_t)n == sizeof(buf)) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	buf[n] = '\0';
	fuse_reply_readlink(req, buf);
}

/* mknod, mkdir and symlink: create as the caller, then look the result up. */
static void emu_make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev,
		     const char *link)
{
	struct emu *e = emu_of(req);
	int dfd = emu_inode(e, parent)->fd;
	struct fuse_entry_param ent;
	struct emu_cred cred;
	int r, err;

	emu_meta(e, C_OPS);
	emu_cred_enter(req, e, &cred);
	if (link)
		r = symlinkat(link, dfd, name);
	else if (S_ISDIR(mode))
		r = mkdirat(dfd, name, mode & ~(mode_t)S_IFMT);
	else
		r = mknodat(dfd, name, mode, rdev);
	err = r < 0 ? errno : 0;
	emu_cred_leave(&cred);
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	err = emu_do_lookup(e, parent, name, &ent);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	emu_reply_entry(req, e, &ent);
}

static void emu_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	emu_make(req, parent, name, mode, rdev, NULL);
}

static void emu_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	emu_make(req, parent, name, S_IFDIR | mode, 0, NULL);
}

static void emu_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	emu_make(req, parent, name, S_IFLNK, 0, link);
}

static void emu_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char *name)
{
	struct emu *e = emu_of(req);
	struct emu_inode *in = emu_inode(e, ino);
	struct fuse_entry_param ent;
	char proc[64];

	emu_meta(e, C_OPS);
	memset(&ent, 0, sizeof(ent));
	emu_procname(proc, sizeof(proc), in->fd);
	if (linkat(AT_FDCWD, proc, emu_inode(e, parent)->fd, name, AT_SYMLINK_FOLLOW) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	if (fstatat(in->fd, "", &ent.attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	pthread_mutex_lock(&e->inode_lock);
	in->nlookup++;
	pthread_mutex_unlock(&e->inode_lock);
	emu_note_reported(in, &ent.attr);
	ent.ino = ino;
	ent.attr_timeout = emu_attr_timeout(e, ent.attr.st_mode);
	ent.entry_timeout = emu_entry_timeout(e);
	emu_reply_entry(req, e, &ent);
}

/*
 * 'name' under directory fd 'dfd' is about to be unlinked or renamed over through the
 * mount: if efs-emu has it open, the NFS client would silly-rename it, so its open handles
 * (and re-opens while one is open) stay valid. Takes inode_lock.
 */
static void emu_mark_silly(struct emu *e, int dfd, const char *name)
{
	struct emu_inode *in;
	struct stat st;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return;
	pthread_mutex_lock(&e->inode_lock);
	in = (struct emu_inode *)htab_find(&e->inodes, st.st_dev, st.st_ino);
	if (in && atomic_load(&in->nopen) > 0)
		atomic_store(&in->silly, true);
	pthread_mutex_unlock(&e->inode_lock);
}

static void emu_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct emu *e = emu_of(req);
	int dfd = emu_inode(e, parent)->fd;
	int r;

	emu_meta(e, C_OPS);
	pthread_rwlock_wrlock(&e->name_lock);
	emu_mark_silly(e, dfd, name);
	r = unlinkat(dfd, name, 0) < 0 ? errno : 0;
	pthread_rwlock_unlock(&e->name_lock);
	fuse_reply_err(req, r);
}

static void emu_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct emu *e = emu_of(req);

	emu_meta(e, C_OPS);
	fuse_reply_err(req, unlinkat(emu_inode(e, parent)->fd, name, AT_REMOVEDIR) < 0 ? errno : 0);
}

/* A regular file now named 'name' in 'dir' through the mount: record it. Takes inode_lock
 * (then the file's alock). */
static void emu_renamed(struct emu *e, struct emu_inode *dir, const char *name)
{
	struct emu_inode *in;
	struct stat st;

	if (fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return;
	pthread_mutex_lock(&e->inode_lock);
	in = (struct emu_inode *)htab_find(&e->inodes, st.st_dev, st.st_ino);
	if (in)
		emu_note_name(in, dir, name);
	pthread_mutex_unlock(&e->inode_lock);
}

static void emu_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		       const char *newname, unsigned int flags)
{
	struct emu *e = emu_of(req);
	int r;

	emu_meta(e, C_OPS);
	pthread_rwlock_wrlock(&e->name_lock);
	if (!(flags & RENAME_EXCHANGE))
		emu_mark_silly(e, emu_inode(e, newparent)->fd, newname);
	r = renameat2(emu_inode(e, parent)->fd, name, emu_inode(e, newparent)->fd, newname, flags);
	if (r < 0) {
		r = errno;
		pthread_rwlock_unlock(&e->name_lock);
		fuse_reply_err(req, r);
		return;
	}
	pthread_rwlock_unlock(&e->name_lock);
	/* the kernel moves its dentries: a later OPEN is by the new name */
	emu_renamed(e, emu_inode(e, newparent), newname);
	if (flags & RENAME_EXCHANGE)
		emu_renamed(e, emu_inode(e, parent), name);
	fuse_reply_err(req, 0);
}

static void emu_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);
	struct emu_handle *h;
	int fd, err;

	emu_meta(e, C_OPS);
	fd = openat(emu_inode(e, ino)->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	h = emu_handle_new(fd);
	if (!h) {
		err = ENOMEM;
		goto out_close;
	}
	h->dp = fdopendir(fd);
	if (!h->dp) {
		err = errno;
		free(h);
		goto out_close;
	}
	pthread_mutex_init(&h->lock, NULL);
	fi->fh = (uintptr_t)h;
	if (fuse_reply_open(req, fi) == -ENOENT) {
		closedir(h->dp);
		pthread_mutex_destroy(&h->lock);
		free(h);
	}
	return;

out_close:
	close(fd);
	fuse_reply_err(req, err);
}

static bool is_dot(const char *name)
{
	return name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]));
}

/*
 * One READDIR(PLUS) reply from the handle's stream. An entry that does not fit stays in
 * h->entry for the next call; names matching fail_enoent are left out. With 'plus' every entry but
 * . and .. carries a lookup reference, which is given back if the kernel does not take the reply.
 */
static void emu_do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			   struct fuse_file_info *fi, bool plus)
{
	struct emu *e = emu_of(req);
	struct emu_handle *h = emu_handle(fi);
	fuse_ino_t *refs = NULL;
	size_t nrefs = 0, cap = 0, rem = size;
	char *buf = calloc(1, size ? size : 1), *p = buf;
	int err = 0;

	emu_meta(e, C_READDIRS);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&h->lock);
	if (offset != h->offset) {
		seekdir(h->dp, offset);
		h->entry = NULL;
		h->offset = offset;
	}
	for (;;) {
		struct fuse_entry_param ent;
		fuse_ino_t ref = 0;
		size_t len;

		if (!h->entry) {
			errno = 0;
			h->entry = readdir(h->dp);
			if (!h->entry) {
				err = errno;
				break;
			}
		}
		if (!is_dot(h->entry->d_name) &&
		    emu_lookup_fault(e, emu_inode(e, ino), h->entry->d_name)) {
			/* fail_enoent: the name does not exist, in listings either */
			h->offset = h->entry->d_off;
			h->entry = NULL;
			continue;
		}
		if (plus) {
			if (is_dot(h->entry->d_name)) {
				memset(&ent, 0, sizeof(ent));
				ent.attr.st_ino = h->entry->d_ino;
				ent.attr.st_mode = (mode_t)DTTOIF(h->entry->d_type);
			} else {
				err = -emu_do_lookup(e, ino, h->entry->d_name, &ent);
				if (err)
					break;
				ref = ent.ino;
			}
			len = fuse_add_direntry_plus(req, p, rem, h->entry->d_name, &ent,
						     h->entry->d_off);
		} else {
			struct stat st = {
			    .st_ino = h->entry->d_ino,
			    .st_mode = (mode_t)DTTOIF(h->entry->d_type),
			};

			len =
			    fuse_add_direntry(req, p, rem, h->entry->d_name, &st, h->entry->d_off);
		}
		if (len > rem) {
			if (ref)
				emu_forget_one(e, ref, 1);
			break;
		}
		if (ref) {
			if (nrefs == cap) {
				size_t ncap = cap ? cap * 2 : 32;
				fuse_ino_t *n = realloc(refs, ncap * sizeof(*refs));

				if (!n) {
					emu_forget_one(e, ref, 1);
					err = ENOMEM;
					break;
				}
				refs = n;
				cap = ncap;
			}
			refs[nrefs++] = ref;
		}
		p += len;
		rem -= len;
		h->offset = h->entry->d_off;
		h->entry = NULL;
	}
	pthread_mutex_unlock(&h->lock);

	/* An error after some entries cannot be reported: return what we have. */
	if (err && rem == size) {
		fuse_reply_err(req, err);
	} else if (fuse_reply_buf(req, buf, size - rem) == -ENOENT) {
		for (size_t i = 0; i < nrefs; i++)
			emu_forget_one(e, refs[i], 1);
	}
	free(refs);
	free(buf);
}

static void emu_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			struct fuse_file_info *fi)
{
	emu_do_readdir(req, ino, size, offset, fi, false);
}

static void emu_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			    struct fuse_file_info *fi)
{
	emu_do_readdir(req, ino, size, offset, fi, true);
}

static void emu_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct emu *e = emu_of(req);
	struct emu_handle *h = emu_handle(fi);

	(void)ino;
	ctr_add(e, C_OPS, 1); /* not delayed, like release */
	closedir(h->dp);
	pthread_mutex_destroy(&h->lock);
	free(h);
	fuse_reply_err(req, 0);
}

static void emu_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	emu_fsync(req, ino, datasync, fi);
}

static void emu_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct emu *e = emu_of(req);
	struct statvfs sv;

	emu_meta(e, C_OPS);
	if (fstatvfs(emu_inode(e, ino)->fd, &sv) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fuse_reply_statfs(req, &sv);
}

const struct fuse_lowlevel_ops emu_ops = {
    .init = emu_init,
    .lookup = emu_lookup,
    .forget = emu_forget,
    .forget_multi = emu_forget_multi,
    .getattr = emu_getattr,
    .setattr = emu_setattr,
    .readlink = emu_readlink,
    .mknod = emu_mknod,
    .mkdir = emu_mkdir,
    .unlink = emu_unlink,
    .rmdir = emu_rmdir,
    .symlink = emu_symlink,
    .rename = emu_rename,
    .link = emu_link,
    .open = emu_open,
    .create = emu_create,
    .read = emu_read,
    .write_buf = emu_write_buf,
    .flush = emu_flush,
    .release = emu_release,
    .fsync = emu_fsync,
    .opendir = emu_opendir,
    .readdir = emu_readdir,
    .readdirplus = emu_readdirplus,
    .releasedir = emu_releasedir,
    .fsyncdir = emu_fsyncdir,
    .statfs = emu_statfs,
    .setxattr = emu_setxattr,
    .getxattr = emu_getxattr,
    .listxattr = emu_listxattr,
    .removexattr = emu_removexattr,
    .getlk = emu_getlk,
    .setlk = emu_setlk,
    .flock = emu_flock,
    .fallocate = emu_fallocate,
    .copy_file_range = emu_copy_file_range,
    .lseek = emu_lseek,
};
