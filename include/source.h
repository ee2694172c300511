/* source.h - every access to SOURCE goes through here.
 *
 * Objects are reached by openat-style calls relative to O_PATH fds held by
 * inodes, never by joining path strings, so '..' or a symlink in a name
 * cannot escape SOURCE.  Operations on an O_PATH fd that need a real file go
 * through /proc/self/fd/N, which the kernel resolves to the same object.
 * Every function returns 0 (or a count) on success and -errno on failure.
 */
#ifndef EFS_SOURCE_H
#define EFS_SOURCE_H

#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

/* An O_PATH fd of the SOURCE directory itself. */
int src_open_root(const char *path);

/* openat(dirfd, name, O_PATH|O_NOFOLLOW) and its stat.  *fd is O_PATH. */
int src_lookup(int dirfd, const char *name, int *fd, struct stat *st);
/* The stat of an fd as the source's client knows it, atime excepted (no
 * round trip while the client's attributes are valid; a read marks a
 * network file's atime stale, and asking for it would cost one). */
int src_stat(int fd, struct stat *st);
/* What the source's client has cached for fd, never a round trip
 * (AT_STATX_DONT_SYNC).  Only for attributes the server confirmed recently
 * through another call (a forced stat by name of the same object). */
int src_stat_cached(int fd, struct stat *st);
/* What the source's client knows of name in dirfd (not following a final
 * symlink): no round trip for the attributes (AT_STATX_DONT_SYNC), though
 * resolving a name the client has not seen costs a lookup.  Type and size
 * only, possibly stale: a hint, never a file's identity. */
int src_stat_cached_at(int dirfd, const char *name, struct stat *st);
/* The stat of name in dirfd (not following a final symlink) that really
 * reaches the server: statx with AT_STATX_FORCE_SYNC, which an NFS client
 * sends as a GETATTR instead of answering from its attribute cache (a plain
 * fstat may be up to acregmax old).  One round trip. */
int src_stat_sync_at(int dirfd, const char *name, struct stat *st); /* "": dirfd itself */
/* open(2) of name in dirfd for reading or writing (no O_CREAT), never
 * following a final symlink (-ELOOP) and never opening anything but a
 * regular file or a directory: the open does not block, and a FIFO or a
 * device found at the name is closed again (-ESTALE).  On NFSv4 an open by
 * name re-resolves the name at the server and refreshes the attributes: one
 * round trip, after which fstat of the fd is current.  Returns the fd or
 * -errno. */
int src_open_at(int dirfd, const char *name, int flags);

/* The birth time of the object behind fd, from what the kernel already
 * knows (AT_STATX_DONT_SYNC: never a round trip).  -EOPNOTSUPP if the file
 * system does not record it.  Inode numbers are reused; a birth time tells
 * a new object under a reused number from the old one. */
int src_birth(int fd, struct timespec *btime);

/* Open the object behind an O_PATH fd for I/O (flags as for open(2), no
 * O_CREAT).  Returns the new fd or -errno. */
int src_open(int fd, int flags);
/* Read len bytes at off from an open fd into buf, retrying short reads and
 * EINTR; short only at the end of the file.  With an O_DIRECT fd, buf must
 * be aligned to 4096 and len is rounded up to it for the read; a file
 * system that refuses a direct read, or returns a short direct read before
 * the end, is read on buffered (O_DIRECT is turned off on the fd).  A read
 * still short while a stat that reaches the server says the file goes on
 * (a source answering short, not a file that shrank) is tried once more,
 * then fails with -EIO: passed on, it would truncate the file for the
 * application.  Returns the byte count (at most len) or -errno. */
ssize_t src_read(int fd, void *buf, size_t len, off_t off);
/* Create and open name in dirfd (open(2) with O_CREAT and flags), never
 * following a final symlink and never opening anything but a regular file:
 * -ESTALE if something else (a symlink, a FIFO, ...) is at the name, so that
 * the kernel looks it up again and deals with it itself, as the caller.
 * Returns the open fd or -errno. */
int src_create(int dirfd, const char *name, int flags, mode_t mode);

int src_mknod(int dirfd, const char *name, mode_t mode, dev_t rdev);
int src_mkdir(int dirfd, const char *name, mode_t mode);
int src_symlink(const char *target, int dirfd, const char *name);
int src_unlink(int dirfd, const char *name);
int src_rmdir(int dirfd, const char *name);
int src_rename(int olddir, const char *oldname, int newdir, const char *newname,
	       unsigned int flags);
/* The stat of name in dirfd, not following a final symlink, as the
 * source's client knows it (no forced round trip). */
int src_stat_at(int dirfd, const char *name, struct stat *st);
/* src_stat_at and the birth time (*has_btime false if the source records
 * none), in one call. */
int src_stat_at_btime(int dirfd, const char *name, struct stat *st, struct timespec *btime,
		      bool *has_btime);
/* Hard link the object behind fd as newdir/newname. */
int src_link(int fd, int newdir, const char *newname);
/* Returns the target length (not NUL-terminated) or -errno. */
ssize_t src_readlink(int fd, char *buf, size_t size);

/* Attribute changes.  openfd is an fd opened for I/O, or -1. */
int src_chmod(int fd, int openfd, mode_t mode);
int src_chown(int fd, uid_t uid, gid_t gid);
int src_truncate(int fd, int openfd, off_t size);
int src_utimens(int fd, int openfd, mode_t type, const struct timespec ts[2]);

int src_statfs(int fd, struct statvfs *st);
/* access(2) on the object behind fd, with the thread's credentials (its
 * fsuid, fsgid and groups: src_cred_enter). */
int src_access(int fd, int mask);

/* Extended attributes of the object behind an O_PATH fd of the given type. */
ssize_t src_getxattr(int fd, mode_t type, const char *name, void *buf, size_t size);
ssize_t src_listxattr(int fd, mode_t type, char *buf, size_t size);
int src_setxattr(int fd, mode_t type, const char *name, const void *val, size_t size, int flags);
int src_removexattr(int fd, mode_t type, const char *name);

/* I/O on an fd opened for I/O. */
int src_fsync(int openfd, bool datasync);
/* What close(2) of one of several fds of openfd's description would report
 * (an NFS client flushes and returns deferred write errors there), without
 * closing openfd. */
int src_flush(int openfd);
/* Another fd (close-on-exec) of the same open file description. */
int src_dup(int openfd);
int src_fallocate(int openfd, int mode, off_t off, off_t len);
off_t src_lseek(int openfd, off_t off, int whence);
ssize_t src_copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len,
			    unsigned flags);

/* A directory stream of the directory behind an O_PATH fd. */
int src_opendir(int fd, DIR **out);
/* The next entry of dp in *ent (NULL at the end).  Returns 0 or -errno. */
int src_readdir(DIR *dp, struct dirent **ent);
/* Go back to a position telldir(3) returned (an entry's d_off). */
void src_seekdir(DIR *dp, off_t off);
void src_closedir(DIR *dp);
/* fsync(2) or fdatasync(2) of an open directory stream. */
int src_fsyncdir(DIR *dp, bool datasync);

/* Locks on an fd opened for I/O.  Record locks are OFD locks, owned by the
 * open file description, so they work across processes and across hosts
 * the way the source's fcntl locks do. */
int src_flock(int openfd, int op);
int src_getlk(int openfd, struct flock *lk);
int src_setlk(int openfd, struct flock *lk, bool wait);

/* Act as the calling user for object creation, so new files get the
 * caller's owner and group and the source checks the caller's groups.  A
 * no-op unless the daemon runs as root.  Per thread: setfsuid, setfsgid and
 * the raw setgroups system call (glibc's would change every thread). */
#define SRC_MAX_GROUPS 64
struct src_cred {
	uid_t uid;
	gid_t gid;
	int ngroups;
	gid_t groups[SRC_MAX_GROUPS];
	bool changed;
};
/* groups: the caller's supplementary groups, or ngroups < 0 if unknown
 * (then the daemon's own are kept). */
void src_cred_enter(struct src_cred *saved, uid_t uid, gid_t gid, const gid_t *groups,
		    int ngroups);
void src_cred_leave(const struct src_cred *saved);

#endif
