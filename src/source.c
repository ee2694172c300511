/* source.c - every access to SOURCE, as -errno returning wrappers.
 *
 * Stateless: all state is in the fds the callers pass.  O_PATH fds cannot be
 * read, written, chmod'ed or given xattrs, so such operations go through
 * /proc/self/fd/N (a magic link to the very same object, not a path lookup
 * in SOURCE).
 */
#include "source.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#define PROC_FD_LEN 32

static const char *proc_fd(int fd, char buf[PROC_FD_LEN])
{
	snprintf(buf, PROC_FD_LEN, "/proc/self/fd/%d", fd);
	return buf;
}

static int neg(int r)
{
	return r < 0 ? -errno : r;
}

int src_open_root(const char *path)
{
	int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

static int statx_to_stat(int dirfd, const char *name, int flags, unsigned mask,
			 struct stat *st);

/* Everything but atime is asked for: a network or FUSE client marks atime
 * stale after every read, and asking for it would cost a GETATTR where the
 * rest of the attributes are still valid (atime is then the cached one). */
int src_stat(int fd, struct stat *st)
{
	return statx_to_stat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW,
			     STATX_BASIC_STATS & ~STATX_ATIME, st);
}

/* statx with the given flags and mask into a struct stat (and *sxp, if
 * not NULL). */
static int statx_to_stat_sx(int dirfd, const char *name, int flags, unsigned mask,
			    struct stat *st, struct statx *sxp)
{
	struct statx tmp, *sx = sxp ? sxp : &tmp;

	if (statx(dirfd, name, flags, mask, sx) < 0)
		return -errno;
	memset(st, 0, sizeof(*st));
	st->st_dev = makedev(sx->stx_dev_major, sx->stx_dev_minor);
	st->st_ino = sx->stx_ino;
	st->st_mode = sx->stx_mode;
	st->st_nlink = sx->stx_nlink;
	st->st_uid = sx->stx_uid;
	st->st_gid = sx->stx_gid;
	st->st_rdev = makedev(sx->stx_rdev_major, sx->stx_rdev_minor);
	st->st_size = (off_t)sx->stx_size;
	st->st_blksize = sx->stx_blksize;
	st->st_blocks = (blkcnt_t)sx->stx_blocks;
	st->st_atim.tv_sec = sx->stx_atime.tv_sec;
	st->st_atim.tv_nsec = sx->stx_atime.tv_nsec;
	st->st_mtim.tv_sec = sx->stx_mtime.tv_sec;
	st->st_mtim.tv_nsec = sx->stx_mtime.tv_nsec;
	st->st_ctim.tv_sec = sx->stx_ctime.tv_sec;
	st->st_ctim.tv_nsec = sx->stx_ctime.tv_nsec;
	return 0;
}

static int statx_to_stat(int dirfd, const char *name, int flags, unsigned mask, struct stat *st)
{
	return statx_to_stat_sx(dirfd, name, flags, mask, st, NULL);
}

int src_stat_cached(int fd, struct stat *st)
{
	return statx_to_stat(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC,
			     STATX_BASIC_STATS & ~STATX_ATIME, st);
}

int src_stat_cached_at(int dirfd, const char *name, struct stat *st)
{
	return statx_to_stat(dirfd, name, AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC,
			     STATX_TYPE | STATX_SIZE, st);
}

int src_stat_sync_at(int dirfd, const char *name, struct stat *st)
{
	return statx_to_stat(dirfd, name,
			     AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC,
			     STATX_BASIC_STATS, st);
}

int src_birth(int fd, struct timespec *btime)
{
	struct statx sx;

	if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, STATX_BTIME,
		  &sx) < 0)
		return -errno;
	if (!(sx.stx_mask & STATX_BTIME))
		return -EOPNOTSUPP;
	btime->tv_sec = sx.stx_btime.tv_sec;
	btime->tv_nsec = sx.stx_btime.tv_nsec;
	return 0;
}

/* An open that found something else than a regular file or a directory (a
 * FIFO or a device put at the name on the source): never ours to open.  The
 * open was non-blocking so that a FIFO without a writer could not hold the
 * daemon; clear O_NONBLOCK again unless the caller asked for it.  Returns
 * fd or -ESTALE (fd closed). */
static int keep_if_file(int fd, int flags, bool dirs_too)
{
	struct stat st;

	if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || (dirs_too && S_ISDIR(st.st_mode)))) {
		close(fd);
		return -ESTALE;
	}
	if (!(flags & O_NONBLOCK)) {
		int fl = fcntl(fd, F_GETFL);

		if (fl >= 0 && (fl & O_NONBLOCK))
			fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	}
	return fd;
}

int src_open_at(int dirfd, const char *name, int flags)
{
	int f;

	flags &= ~(O_CREAT | O_EXCL);
	f = openat(dirfd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	return f < 0 ? -errno : keep_if_file(f, flags, true);
}

int src_lookup(int dirfd, const char *name, int *fd, struct stat *st)
{
	int f = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	int r;

	if (f < 0)
		return -errno;
	r = src_stat(f, st);
	if (r < 0) {
		close(f);
		return r;
	}
	*fd = f;
	return 0;
}

int src_open(int fd, int flags)
{
	char p[PROC_FD_LEN];
	int f;

	flags &= ~(O_CREAT | O_EXCL | O_NOFOLLOW);
	/* The magic link leads to the object itself, never through a symlink
	 * (one to a symlink's O_PATH fd fails with ELOOP). */
	f = open(proc_fd(fd, p), flags | O_NOCTTY | O_CLOEXEC);
	return f < 0 ? -errno : f;
}

#define DIRECT_ALIGN 4096u /* O_DIRECT granularity we read in */

static ssize_t read_to_end(int fd, void *buf, size_t len, off_t off)
{
	const int fl = fcntl(fd, F_GETFL);
	bool direct = fl >= 0 && (fl & O_DIRECT);
	/* A direct read asks for whole blocks; the file ends where it ends. */
	size_t ask = direct ? (len + DIRECT_ALIGN - 1) & ~(size_t)(DIRECT_ALIGN - 1) : len;
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, ask - done, off + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (direct && n < 0 && errno == EINVAL) {
			/* The file system refuses O_DIRECT reads: buffered from
			 * now on (its page cache is then the file's own). */
			if (fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0)
				return -errno;
			direct = false;
			ask = len;
			continue;
		}
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		if (direct && (done + (size_t)n) % DIRECT_ALIGN && done + (size_t)n < len) {
			/* Short and unaligned before len: the end of a file that
			 * shrank, or a source that answers short.  Go on from the
			 * last whole block, still direct: a buffered read would
			 * go through the source client's page cache, which a
			 * long-lived fetch fd never revalidates, and could hand
			 * back pages of an earlier version.  No whole block more:
			 * stop, src_read tells the end from a fault. */
			size_t got = done + (size_t)n;
			size_t whole = got & ~(size_t)(DIRECT_ALIGN - 1);

			if (whole > done) {
				done = whole;
				continue;
			}
			done = got;
			break;
		}
		done += (size_t)n;
	}
	return (ssize_t)(done < len ? done : len);
}

/*
 * A read that came back short of len: the file shrank (another host
 * truncated it), or the source answered short before its end.  The second
 * must not pass for the first: FUSE takes a short reply for the end of the
 * file, and the application would see it truncated.  A stat that reaches
 * the server tells them apart: true if the file still extends past got.
 */
static bool short_is_fault(int fd, uint64_t got)
{
	struct stat st;

	return src_stat_sync_at(fd, "", &st) == 0 && (uint64_t)st.st_size > got;
}

ssize_t src_read(int fd, void *buf, size_t len, off_t off)
{
	ssize_t n = read_to_end(fd, buf, len, off);

	/* Short before the server's end of the file: once more, then EIO. */
	for (int tries = 0;
	     n >= 0 && (size_t)n < len && short_is_fault(fd, (uint64_t)off + (uint64_t)n); tries++)
		n = tries < 1 ? read_to_end(fd, buf, len, off) : -EIO;
	return n;
}

int src_create(int dirfd, const char *name, int flags, mode_t mode)
{
	int f = openat(dirfd, name,
		       flags | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, mode);
	struct stat st;
	int e;

	if (f >= 0)
		return keep_if_file(f, flags, false);
	e = errno;
	/* Not a file at the name (a symlink: ELOOP; a FIFO without a reader:
	 * ENXIO; a directory: EISDIR ...): it appeared on the source after the
	 * kernel's lookup.  The kernel looks the name up again and opens what
	 * it finds itself, as the caller; it follows a symlink in the caller's
	 * namespace, as an NFS client does.  O_EXCL: EEXIST stands. */
	if (e != EEXIST && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    !S_ISREG(st.st_mode))
		return -ESTALE;
	return -e;
}

int src_mknod(int dirfd, const char *name, mode_t mode, dev_t rdev)
{
	return neg(mknodat(dirfd, name, mode, rdev));
}

int src_mkdir(int dirfd, const char *name, mode_t mode)
{
	return neg(mkdirat(dirfd, name, mode));
}

int src_symlink(const char *target, int dirfd, const char *name)
{
	return neg(symlinkat(target, dirfd, name));
}

int src_unlink(int dirfd, const char *name)
{
	return neg(unlinkat(dirfd, name, 0));
}

int src_rmdir(int dirfd, const char *name)
{
	return neg(unlinkat(dirfd, name, AT_REMOVEDIR));
}

int src_rename(int olddir, const char *oldname, int newdir, const char *newname,
	       unsigned int flags)
{
	return neg(renameat2(olddir, oldname, newdir, newname, flags));
}

int src_stat_at(int dirfd, const char *name, struct stat *st)
{
	return neg(fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW));
}

int src_stat_at_btime(int dirfd, const char *name, struct stat *st, struct timespec *btime,
		      bool *has_btime)
{
	struct statx sx;
	int r = statx_to_stat_sx(dirfd, name, AT_SYMLINK_NOFOLLOW,
				 (STATX_BASIC_STATS & ~STATX_ATIME) | STATX_BTIME, st, &sx);

	*has_btime = false;
	if (r < 0)
		return r;
	if (sx.stx_mask & STATX_BTIME) {
		btime->tv_sec = sx.stx_btime.tv_sec;
		btime->tv_nsec = sx.stx_btime.tv_nsec;
		*has_btime = true;
	}
	return 0;
}

int src_link(int fd, int newdir, const char *newname)
{
	char p[PROC_FD_LEN];

	if (linkat(fd, "", newdir, newname, AT_EMPTY_PATH) == 0)
		return 0;
	if (errno != ENOENT && errno != EPERM)
		return -errno;
	/* Without CAP_DAC_READ_SEARCH AT_EMPTY_PATH fails; the magic link works. */
	return neg(linkat(AT_FDCWD, proc_fd(fd, p), newdir, newname, AT_SYMLINK_FOLLOW));
}

ssize_t src_readlink(int fd, char *buf, size_t size)
{
	ssize_t n = readlinkat(fd, "", buf, size);

	return n < 0 ? -errno : n;
}

int src_chmod(int fd, int openfd, mode_t mode)
{
	char p[PROC_FD_LEN];

	if (openfd >= 0)
		return neg(fchmod(openfd, mode));
	return neg(chmod(proc_fd(fd, p), mode));
}

int src_chown(int fd, uid_t uid, gid_t gid)
{
	return neg(fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
}

int src_truncate(int fd, int openfd, off_t size)
{
	char p[PROC_FD_LEN];

	if (openfd >= 0)
		return neg(ftruncate(openfd, size));
	return neg(truncate(proc_fd(fd, p), size));
}

int src_utimens(int fd, int openfd, mode_t type, const struct timespec ts[2])
{
	char p[PROC_FD_LEN];

	if (openfd >= 0)
		return neg(futimens(openfd, ts));
	if (S_ISLNK(type))
		/* The magic link would follow to the target; use the fd itself. */
		return neg(utimensat(fd, "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
	return neg(utimensat(AT_FDCWD, proc_fd(fd, p), ts, 0));
}

int src_statfs(int fd, struct statvfs *st)
{
	return neg(fstatvfs(fd, st));
}

ssize_t src_getxattr(int fd, mode_t type, const char *name, void *buf, size_t size)
{
	char p[PROC_FD_LEN];
	ssize_t n;

	if (S_ISLNK(type))
		return -ENODATA; /* Linux allows no user.* xattrs on symlinks */
	n = getxattr(proc_fd(fd, p), name, buf, size);
	return n < 0 ? -errno : n;
}

ssize_t src_listxattr(int fd, mode_t type, char *buf, size_t size)
{
	char p[PROC_FD_LEN];
	ssize_t n;

	if (S_ISLNK(type))
		return 0;
	n = listxattr(proc_fd(fd, p), buf, size);
	return n < 0 ? -errno : n;
}

int src_setxattr(int fd, mode_t type, const char *name, const void *val, size_t size, int flags)
{
	char p[PROC_FD_LEN];

	if (S_ISLNK(type))
		return -EPERM;
	return neg(setxattr(proc_fd(fd, p), name, val, size, flags));
}

int src_removexattr(int fd, mode_t type, const char *name)
{
	char p[PROC_FD_LEN];

	if (S_ISLNK(type))
		return -ENODATA;
	return neg(removexattr(proc_fd(fd, p), name));
}

int src_fsync(int openfd, bool datasync)
{
	return neg(datasync ? fdatasync(openfd) : fsync(openfd));
}

int src_flush(int openfd)
{
	int fd = dup(openfd);

	if (fd < 0)
		return -errno;
	return neg(close(fd));
}

int src_dup(int openfd)
{
	int fd = fcntl(openfd, F_DUPFD_CLOEXEC, 0);

	return fd < 0 ? -errno : fd;
}

int src_fallocate(int openfd, int mode, off_t off, off_t len)
{
	return neg(fallocate(openfd, mode, off, len));
}

off_t src_lseek(int openfd, off_t off, int whence)
{
	off_t r = lseek(openfd, off, whence);

	return r < 0 ? -errno : r;
}

ssize_t src_copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len,
			    unsigned flags)
{
	ssize_t n = copy_file_range(fd_in, off_in, fd_out, off_out, len, flags);

	return n < 0 ? -errno : n;
}

int src_opendir(int fd, DIR **out)
{
	char p[PROC_FD_LEN];
	/* The magic link, not ".": listing needs read permission on the
	 * directory, not search permission in it. */
	int d = open(proc_fd(fd, p), O_RDONLY | O_DIRECTORY | O_NOCTTY | O_CLOEXEC);
	DIR *dp;

	if (d < 0)
		return -errno;
	dp = fdopendir(d);
	if (!dp) {
		int e = errno;
		close(d);
		return -e;
	}
	*out = dp;
	return 0;
}

int src_readdir(DIR *dp, struct dirent **ent)
{
	errno = 0;
	*ent = readdir(dp);
	return *ent || !errno ? 0 : -errno; /* NULL with errno 0: the end */
}

void src_seekdir(DIR *dp, off_t off)
{
	seekdir(dp, off);
}

void src_closedir(DIR *dp)
{
	closedir(dp);
}

int src_fsyncdir(DIR *dp, bool datasync)
{
	return src_fsync(dirfd(dp), datasync);
}

int src_access(int fd, int mask)
{
	char p[PROC_FD_LEN];

	return neg(faccessat(AT_FDCWD, proc_fd(fd, p), mask, AT_EACCESS));
}

int src_flock(int openfd, int op)
{
	return neg(flock(openfd, op));
}

int src_getlk(int openfd, struct flock *lk)
{
	lk->l_pid = 0;
	return neg(fcntl(openfd, F_OFD_GETLK, lk));
}

int src_setlk(int openfd, struct flock *lk, bool wait)
{
	lk->l_pid = 0;
	return neg(fcntl(openfd, wait ? F_OFD_SETLKW : F_OFD_SETLK, lk));
}

void src_cred_enter(struct src_cred *saved, uid_t uid, gid_t gid, const gid_t *groups,
		    int ngroups)
{
	saved->changed = false;
	saved->ngroups = -1;
	if (geteuid() != 0 || (uid == 0 && gid == 0))
		return;
	if (ngroups >= 0 && ngroups <= SRC_MAX_GROUPS) {
		long n = syscall(SYS_getgroups, SRC_MAX_GROUPS, saved->groups);

		if (n >= 0 && syscall(SYS_setgroups, (size_t)ngroups, groups) == 0)
			saved->ngroups = (int)n;
	}
	/* Group first, mirroring the restore order.  Both are per thread and
	 * cannot fail for root. */
	saved->gid = (gid_t)setfsgid(gid);
	saved->uid = (uid_t)setfsuid(uid);
	saved->changed = true;
}

void src_cred_leave(const struct src_cred *saved)
{
	if (!saved->changed)
		return;
	setfsuid(saved->uid);
	setfsgid(saved->gid);
	if (saved->ngroups >= 0)
		syscall(SYS_setgroups, (size_t)saved->ngroups, saved->groups);
}
