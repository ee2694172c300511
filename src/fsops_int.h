/* fsops_int.h - what the fsops_*.c files share, and nothing else includes.
 *
 * The FUSE ops are split by what they act on: fsops.c (init, destroy, the
 * ops table, the helpers below), fsops_entry.c (names and attributes),
 * fsops_file.c (open files and their I/O), fsops_lock.c (flock and fcntl
 * locks; waits in lockwait.c, deadlocks in lockdep.c), fsops_dir.c
 * (directory listings) and
 * fsops_xattr.c (extended attributes, our reserved names among them).
 *
 * Conventions of every op: decode the request, call inode/cache/source,
 * reply exactly once; errors travel as -errno and are replied with
 * fuse_reply_err(req, -r).  The FUSE inode number of an inode is its
 * address, except the root which is FUSE_ROOT_ID.  Open files carry a
 * struct efs_file in fi->fh, directories a struct efs_dir.
 *
 * Locks: fs->handles_mu guards the handle list only, and nothing is called
 * with it held.  f->mu serialises the lazy open of an open file's source
 * fd; it is held across that open only, and only the inode table's locks
 * are taken under it (by that open).  Inode and cache locks are taken
 * inside their own modules, never held by an op across a call into another
 * module.
 *
 * Lifetime of an open file: f->refs counts the kernel's handle (until
 * RELEASE) and every thread that uses f after its request may have been
 * answered by someone else (a read whose interrupt was answered EINTR,
 * files_hold_source).  The last file_unref closes the source fd and frees
 * f; f holds its inode (itab_hold) until then, so the inode outlives every
 * use of the handle.
 */
#ifndef EFS_FSOPS_INT_H
#define EFS_FSOPS_INT_H

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "dirindex.h"
#include "fsops.h"
#include "source.h"

/* Every open file and directory is on fs->handles, so that those the kernel
 * never released (unmount with files open) are freed at exit. */
struct handle {
	struct handle *prev, *next; /* protected by fs->handles_mu */
	bool is_dir;
};

struct efs_file {
	struct handle h;        /* first */
	pthread_mutex_t mu;     /* serialises the lazy open of fd */
	int fd;                 /* source fd opened for I/O, or -1: read-only
				 * handles get one only when they need it; once
				 * set it stays until the handle is freed */
	int flags;              /* open(2) flags, for that lazy open */
	unsigned refs;          /* atomic: see "Lifetime" above */
	struct efs_inode *ino;  /* immutable; held (itab_hold) while f lives */
	bool cached;            /* cache_open succeeded: cache_close at release */
	bool writer;            /* that cache_open had the caller's source fd */
	int pt_mode;            /* enum pt_mode the open was answered with */
	off_t next_off;         /* atomic: where a sequential reader reads next */
	bool noflush;           /* answered FOPEN_NOFLUSH: its close sends no FLUSH */
	uint64_t *lk_owners;    /* noflush handles: POSIX lock owners that locked
				 * through it, whose locks go at its RELEASE;
				 * protected by mu */
	unsigned n_lk_owners;   /* protected by mu */
};

struct efs_dir {
	struct handle h;        /* first */
	struct efs_inode *ino;  /* the directory; the kernel holds it while open */
	DIR *dp;                /* the stream while it is read, else NULL */
	off_t offset;           /* telldir cookie of the entry after `entry` */
	struct dirent *entry;   /* read but not yet returned, or NULL */
	bool eof;               /* readdir(3) returned the end at offset: another
				 * call would only ask the source again */
	struct dix_dir *snap;   /* the directory index's snapshot this handle
				 * lists (by position), or NULL: the stream */
	bool tried_index;       /* a snapshot was tried at its first listing */
};

static inline struct efs_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static inline struct efs_inode *inode_of(fuse_req_t req, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return itab_root(fs_of(req)->itab);
	return (struct efs_inode *)(uintptr_t)ino;
}

static inline fuse_ino_t ino_id(struct efs_fs *fs, struct efs_inode *i)
{
	return i == itab_root(fs->itab) ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)i;
}

static inline struct efs_file *file_of(struct fuse_file_info *fi)
{
	return (struct efs_file *)(uintptr_t)fi->fh;
}

/* The handle's source fd as it is now, or -1, for readers that do not hold
 * f->mu: file_fd() may set it on another thread meanwhile (atomic, so
 * they see -1 or the open fd, never a torn value). */
static inline int file_fd_now(struct efs_file *f)
{
	return __atomic_load_n(&f->fd, __ATOMIC_ACQUIRE);
}

static inline struct efs_dir *dir_of(struct fuse_file_info *fi)
{
	return (struct efs_dir *)(uintptr_t)fi->fh;
}

static inline bool bad_name(const char *name)
{
	return !strcmp(name, ".") || !strcmp(name, "..") || strchr(name, '/');
}

static inline bool out_of_fds(int r)
{
	return r == -EMFILE || r == -ENFILE;
}

/* Put h on (take it off) fs->handles; counts open_files. */
void handle_add(struct efs_fs *fs, struct handle *h, bool is_dir);
/* The file of i is about to lose a name (unlink, rename over it): every
 * open handle of it that has no source fd yet opens one now, while the
 * object can still be reached, so that it reads on as POSIX says after
 * the name is gone (its cache record goes with the name).  The handles
 * are collected (with a reference) under handles_mu and their fds opened
 * after it is released: a slow source stalls only this call
 * (fsops_file.c). */
void files_hold_source(struct efs_fs *fs, struct efs_inode *i);
void handle_del(struct efs_fs *fs, struct handle *h);
/* Another user of f (see "Lifetime"); file_unref drops it, and the last
 * one closes the source fd, kicks the lock waits of the inode, frees f and
 * lets go of the inode. */
void file_ref(struct efs_file *f);
void file_unref(struct efs_fs *fs, struct efs_file *f);

/* The process ran out of fds (r is -EMFILE or -ENFILE) during `what`: give
 * back idle inode fds and log it once. */
void note_no_fds(struct efs_fs *fs, int r, const char *what);
/* i's O_PATH fd, held until ifd_put; retried once after giving back idle
 * fds.  Returns the fd or -errno. */
int ifd(struct efs_fs *fs, struct efs_inode *i);
void ifd_put(struct efs_fs *fs, struct efs_inode *i);

/* An op on i failed with r: when i is the root and r says its file system
 * went away (ESTALE, ENOTCONN), have the SOURCE watch look now. */
void note_root_fault(struct efs_fs *fs, struct efs_inode *i, int r);

/* Open the source object of i for I/O (flags as open(2), no O_CREAT),
 * following it by name if its handle went stale.  arg is the struct efs_fs.
 * Returns the fd or -errno. */
int source_open_object(void *arg, struct efs_inode *i, int flags);
/* The same as the caller of req (NULL: as the daemon): the source checks
 * the caller's rights. */
int open_object_as(struct efs_fs *fs, struct efs_inode *i, int flags, fuse_req_t req);
/* Is i's object gone from the source (struct cache_source's object_gone)? */
bool source_object_gone(void *arg, struct efs_inode *i);

/* Look name up in parent and take a lookup reference.  Returns 0 or -errno. */
int do_lookup(struct efs_fs *fs, struct efs_inode *parent, const char *name,
	      struct fuse_entry_param *e);
void reply_entry_or_err(fuse_req_t req, int r, const struct fuse_entry_param *e);
/* Switch the thread to the caller's uid, gid and groups (src_cred_enter);
 * back with src_cred_leave.  Only around the source call itself: inode fds
 * are got (ifd) before, as the daemon. */
void enter_caller(fuse_req_t req, struct src_cred *saved);
/* access(2) of i's source object as the caller of req: the source's own
 * answer (ACLs included).  0 or -errno. */
int access_as_caller(fuse_req_t req, struct efs_inode *i, int mask);

/* A POSIX lock owner locked through f: if f's close sends no FLUSH, its
 * locks go at f's RELEASE instead (fsops_file.c). */
void file_note_lock_owner(struct efs_file *f, uint64_t owner);
/* A request of an immutable mount's handle-less file (fi->fh == 0: the
 * kernel opened it without asking, -o immutable)? */
static inline bool no_handle(const struct fuse_file_info *fi)
{
	return !fi || !fi->fh;
}

/* The handle's own source fd, opened on first need (read-only handles of
 * cached files never need one).  Returns it (owned by f, open as long as
 * the caller holds a reference on f) or -errno. */
int file_fd(struct efs_fs *fs, struct efs_inode *i, struct efs_file *f);

/* fsops_index.c: the directory index (dirindex.h) in the ops. */
int index_init(struct efs_fs *fs);
void index_free(struct efs_fs *fs);
/* The snapshot of dir that may answer now (checked against the source if
 * its window passed and may_check; else none), with a reference
 * (index_put); NULL if none may. */
struct dix_dir *index_dir(struct efs_fs *fs, struct efs_inode *dir, bool may_check);
void index_put(struct efs_fs *fs, struct dix_dir *d);
/* A new snapshot of dir from one pass over the source (at most max_names
 * names), published and saved; with a reference, or NULL.  stream: an
 * open stream of dir to list it with (left rewound if no snapshot came of
 * it), or NULL to open one. */
struct dix_dir *index_build(struct efs_fs *fs, struct efs_inode *dir, unsigned max_names,
			    DIR *stream);
/* The entry of ent (of snapshot d of dir) for the kernel, with a lookup
 * reference on its inode.  0, -ENOMEM, or -EAGAIN: the source must say
 * (a mount point, or the inode knows something newer). */
int index_entry(struct efs_fs *fs, struct efs_inode *dir, struct dix_dir *d,
		const struct dix_entry *ent, struct fuse_entry_param *e);
/* name in dir from the index: 0 (e filled, a lookup reference taken),
 * -ENOENT (absent; e->entry_timeout is how long the kernel may cache
 * that), -EAGAIN (the index cannot say: ask the source), -errno. */
int index_lookup(struct efs_fs *fs, struct efs_inode *dir, const char *name,
		 struct fuse_entry_param *e);
/* i's attributes from its directory's snapshot, inside i's window: 0 and
 * the timeout left, or -EAGAIN. */
int index_getattr(struct efs_fs *fs, struct efs_inode *i, struct stat *st, double *timeout);
/* Snapshot d was listed from its start: have the cache read its small
 * files' records back into the page cache ahead of their reads, and (ttl=
 * never, -o immutable) its subdirectories' snapshots into memory ahead of
 * their listings (siblings.c, sib_listed), in case they were lost.  Never
 * waits. */
void index_listed(struct efs_fs *fs, struct dix_dir *d);
/* Before the workers start: let sib_listed load subdirectories' snapshots
 * (ttl=never and -o immutable, whose snapshots persist). */
void index_set_loader(struct efs_fs *fs);
/* r from the source for i: -ESTALE (its file gone or replaced there) means
 * the snapshot that named it is out of date: it goes, so that the kernel's
 * lookup again (it retries an ESTALE) reaches the source. */
void index_gone(struct efs_fs *fs, struct efs_inode *i, int r);
/* sib_lister_fn (siblings.h) over the index: arg is the struct efs_fs. */
struct sib_names;
int index_small_files(void *arg, dev_t dev, uint64_t dir_ino, unsigned max,
		      struct sib_names *out);
/* A change through the mount in dir (a name added, removed or replaced, an
 * attribute of a name in it): its snapshot goes.  index_parent_changed:
 * the same for the directory i was last seen in. */
void index_dir_changed(struct efs_fs *fs, struct efs_inode *dir);
void index_parent_changed(struct efs_fs *fs, struct efs_inode *i);

/* The ops, by file; the table is in fsops.c. */
/* fsops_entry.c */
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		struct fuse_file_info *fi);
void op_readlink(fuse_req_t req, fuse_ino_t ino);
void op_access(fuse_req_t req, fuse_ino_t ino, int mask);
void op_statfs(fuse_req_t req, fuse_ino_t ino);
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
	       const char *newname, unsigned int flags);
/* fsops_file.c */
void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
/* op_open, op_create (after the source's create and the lookup: fd, entry)
 * and op_setattr once no push is in flight (fsops_push.c). */
void open_fenced(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void create_fenced(fuse_req_t req, const struct fuse_entry_param *entry,
		   struct fuse_file_info *fi, int fd);
void setattr_fenced(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		    struct fuse_file_info *fi);
/* Pushes into the kernel's page cache (cache_source.push) and the requests
 * that must wait for them (fsops_push.c). */
int source_push(void *arg, struct efs_inode *i, uint64_t off, const void *buf, size_t len);
/* Answer the request on a thread of its own once pushes are done: 0, or
 * -errno if no thread could be made (the caller then waits itself). */
int push_defer_open(struct efs_fs *fs, fuse_req_t req, fuse_ino_t ino,
		    const struct fuse_file_info *fi);
int push_defer_setattr(struct efs_fs *fs, fuse_req_t req, fuse_ino_t ino, const struct stat *attr,
		       int valid, const struct fuse_file_info *fi);
int push_defer_create(struct efs_fs *fs, fuse_req_t req, const struct fuse_entry_param *entry,
		      const struct fuse_file_info *fi, int fd);
/* cache_fence_begin for a request whose reply comes before the fence ends:
 * i is held until push_fence_end (once answered, the kernel may release and
 * forget i, and the last forget would free it under the fence). */
int push_fence_begin(struct efs_fs *fs, struct efs_inode *i, bool may_wait);
void push_fence_end(struct efs_fs *fs, struct efs_inode *i, int fence);
/* No push from now on; serve requests until none is in flight. */
void push_stop(struct efs_fs *fs);
void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
	       struct fuse_file_info *fi);
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void op_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
		  struct fuse_file_info *fi);
void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
		  struct fuse_file_info *fi);
void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi);
void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			struct fuse_file_info *fi_out, size_t len, int flags);
/* fsops_lock.c */
void op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock);
void op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock,
	      int sleep);
void op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op);
/* close(2) of a file by POSIX lock owner `owner` (FLUSH): its fcntl locks
 * on i go now, and parked waits of the file are kicked.  Returns whether it
 * held any. */
bool release_lock_owner(struct efs_fs *fs, struct efs_inode *i, uint64_t owner);
/* fsops_dir.c */
void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		struct fuse_file_info *fi);
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		    struct fuse_file_info *fi);
void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
/* fsops_xattr.c */
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		 size_t size, int flags);
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

#endif
