/* faultinj.c - cache-side fault injection by interposition (faultinj.h).
 *
 * State: the directory (dirp, never freed once published), the armed
 * rules and their counters under mu; per fd one byte (fdk[fd]: 0 not on
 * cache_dir, else FD_KNOWN | kind), written by every successful open (so a
 * reused number never keeps an old mark) and cleared when the fd is closed
 * (close, closedir, fclose, dup2/dup3 over it, close_range); per op call
 * and failure counters (atomics).  The real functions are looked up once
 * each with dlsym(RTLD_NEXT) and kept in atomics.  A call tests whether it
 * is on cache_dir (a load of fdk[fd], or a prefix test of its path) and
 * the thread's pause flag; only then does it take mu to ask the rules.
 * Everything else is forwarded at the cost of a few loads.
 *
 * Built twice: linked whole into test executables, and as the LD_PRELOAD
 * module (FAULTINJ_PRELOAD), which reads its control from the environment
 * when it is loaded and logs what it does to stderr.
 */
/* Define the plain and the *64 names side by side: the build's
 * _FILE_OFFSET_BITS=64 would turn the plain declarations into *64 ones. */
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "faultinj.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define FD_MAX (1 << 20) /* fds above are looked up in /proc each time (rare) */
#define FD_KNOWN 0x80
#define CTL_PERIOD_MS 20

static _Atomic unsigned char fdk[FD_MAX];
/* fds the test owns (faultinj_protect_fd): closing one elsewhere aborts. */
static _Atomic unsigned char fdprot[FD_MAX];
static _Thread_local int paused;
/* What the last failure injected in this thread was (faultinj_last_failure). */
static _Thread_local char last_failure[PATH_MAX + 160];

static _Atomic(const char *) dirp; /* NULL: off */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

struct rule {
	struct faultinj_rule r;
	uint64_t seen, failed, rng; /* protected by mu */
	bool logged;		    /* protected by mu */
};
static struct rule rules[FAULTINJ_MAX_RULES]; /* protected by mu */
static unsigned nrules;			      /* protected by mu */
static _Atomic unsigned armed;		      /* nrules, for the fast path */
static _Atomic uint64_t calls[FAULTINJ_NOPS], failures[FAULTINJ_NOPS];
static _Atomic bool log_on;

/* The control file (LD_PRELOAD form); ctl_file is set once, at load. */
static char ctl_file[PATH_MAX];
static _Atomic int64_t ctl_next_ms;
static struct stat ctl_seen; /* protected by mu */
static bool ctl_seen_any;    /* protected by mu */

/* clang-format off */
static const char *const op_names[FAULTINJ_NOPS] = {
    "open", "read", "write", "fallocate", "truncate", "sync",
    "rename", "unlink", "mkdir", "stat", "statvfs", "lock",
};
static const char *const kind_names[FAULTINJ_NKINDS] = {
    "any", "dir", "meta", "data", "tmp", "lock",
};
/* clang-format on */

const char *faultinj_op_name(enum faultinj_op op)
{
	if (op == FAULTINJ_NOPS)
		return "any";
	return (unsigned)op < FAULTINJ_NOPS ? op_names[op] : "?";
}

const char *faultinj_kind_name(enum faultinj_kind kind)
{
	return (unsigned)kind < FAULTINJ_NKINDS ? kind_names[kind] : "?";
}

/* ---- the real functions ------------------------------------------------ */

typedef void (*anyfn)(void);

static anyfn real_lookup(_Atomic anyfn *slot, const char *name)
{
	anyfn f = *slot;
	void *p;

	if (f)
		return f;
	p = dlsym(RTLD_NEXT, name);
	if (!p)
		abort(); /* no libc function of that name: nothing sane to do */
	memcpy(&f, &p, sizeof(f));
	*slot = f;
	return f;
}

#define SLOT(fn) static _Atomic anyfn real_##fn
#define REAL(fn) ((__typeof__(&fn))real_lookup(&real_##fn, #fn))

/* clang-format off */
SLOT(open); SLOT(open64); SLOT(openat); SLOT(openat64);
SLOT(read); SLOT(pread); SLOT(pread64);
SLOT(write); SLOT(pwrite); SLOT(pwrite64);
SLOT(fallocate); SLOT(fallocate64); SLOT(ftruncate); SLOT(ftruncate64);
SLOT(fsync); SLOT(fdatasync);
SLOT(rename); SLOT(renameat); SLOT(renameat2);
SLOT(unlink); SLOT(unlinkat); SLOT(mkdir); SLOT(mkdirat);
SLOT(stat); SLOT(stat64); SLOT(lstat); SLOT(lstat64); SLOT(fstat); SLOT(fstat64);
SLOT(fstatat); SLOT(fstatat64);
SLOT(statvfs); SLOT(statvfs64); SLOT(fstatvfs); SLOT(fstatvfs64);
SLOT(flock);
SLOT(close); SLOT(closedir); SLOT(fclose); SLOT(dup); SLOT(dup2); SLOT(dup3);
SLOT(close_range);
/* clang-format on */

/* ---- logging (stderr, never through stdio's locks) ----------------------- */

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "efscache-faultinj[%ld]: ", (long)getpid());
	va_list ap;

	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (REAL(write)(2, buf, (size_t)n) < 0)
		return;
}

/* ---- is a call on cache_dir? ------------------------------------------- */

/* The kind of a file of cache_dir, from its name (include/store.h). */
static int kind_of_name(const char *p)
{
	const char *b = strrchr(p, '/');
	size_t n;

	b = b ? b + 1 : p;
	n = strlen(b);
	if (strstr(b, ".meta.tmp."))
		return FAULTINJ_TMP;
	if (n > 5 && !strcmp(b + n - 5, ".data"))
		return FAULTINJ_DATA;
	if (n > 5 && !strcmp(b + n - 5, ".meta"))
		return FAULTINJ_META;
	if (!strcmp(b, "lock"))
		return FAULTINJ_LOCKFILE;
	return FAULTINJ_DIR;
}

/* An absolute path: FD_KNOWN | kind if it is cache_dir or below, else 0. */
static int abs_kind(const char *p)
{
	const char *d = dirp;
	size_t n;

	if (!d || p[0] != '/')
		return 0;
	n = strlen(d);
	if (strncmp(p, d, n) || (p[n] != '\0' && p[n] != '/'))
		return 0;
	return FD_KNOWN | kind_of_name(p + n);
}

/* The file fd names now, as /proc says it, into path (PATH_MAX bytes; ""
 * if it cannot be read); its length. */
static ssize_t fd_path(int fd, char *path)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, PATH_MAX - 1);
	path[n > 0 ? n : 0] = '\0';
	return n;
}

/* What /proc says fd is: FD_KNOWN | kind, or 0. */
static int proc_kind(int fd)
{
	char path[PATH_MAX];
	ssize_t n = fd_path(fd, path);

	if (n <= 0)
		return 0;
	if (n > 10 && !strcmp(path + n - 10, " (deleted)"))
		path[n - 10] = '\0';
	return abs_kind(path);
}

static int fd_kind(int fd)
{
	if (fd < 0 || !dirp)
		return 0;
	if (fd < FD_MAX)
		return fdk[fd];
	return proc_kind(fd);
}

/* name relative to dirfd (as the *at calls take it). */
static int at_kind(int dirfd, const char *name)
{
	char buf[PATH_MAX];
	int k;

	if (!dirp || !name)
		return 0;
	if (name[0] == '/')
		return abs_kind(name);
	if (dirfd == AT_FDCWD) {
		if (!getcwd(buf, sizeof(buf)))
			return 0;
		if (strlen(buf) + 1 + strlen(name) >= sizeof(buf))
			return 0;
		strcat(buf, "/");
		strcat(buf, name);
		return abs_kind(buf);
	}
	k = dirfd >= 0 && dirfd < FD_MAX ? fdk[dirfd] : 0;
	if (!k)
		k = proc_kind(dirfd);
	if (!k)
		return 0;
	return name[0] ? FD_KNOWN | kind_of_name(name) : k;
}

static int note_fd(int fd, int k)
{
	if (fd >= 0 && fd < FD_MAX)
		fdk[fd] = (unsigned char)k;
	return fd;
}

/* A close of an fd the test owns, by anyone else, is a stray close (of a
 * number its closer no longer owned): the moment to stop, with the stack
 * that did it. */
static void check_not_protected(int fd, const char *call)
{
	void *frames[32];
	int n;

	if (fd < 0 || fd >= FD_MAX || !fdprot[fd])
		return;
	say("%s(%d): the fd is the test's own (faultinj_protect_fd): a stray close; stack:",
	    call, fd);
	n = backtrace(frames, 32);
	backtrace_symbols_fd(frames, n, 2);
	abort();
}

void faultinj_protect_fd(int fd, bool on)
{
	if (fd >= 0 && fd < FD_MAX)
		fdprot[fd] = on;
}

/* fd is being closed (or replaced, by call): it is not cache_dir's any
 * more, and it must not be one the test protects. */
static void fd_leaves(int fd, const char *call)
{
	check_not_protected(fd, call);
	if (fd >= 0 && fd < FD_MAX)
		fdk[fd] = 0;
}

/* ---- rules --------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static void ctl_reload(void);

/* A call of op on a file of kind k (FD_KNOWN | kind) of cache_dir: fail it?
 * Then *err is the errno to fail with. */
static bool should_fail(enum faultinj_op op, int k, int *err)
{
	const int kind = k & ~FD_KNOWN;
	bool fail = false;

	if (!k || paused)
		return false;
	calls[op]++;
	if (ctl_file[0])
		ctl_reload();
	if (!armed)
		return false;
	pthread_mutex_lock(&mu);
	for (unsigned i = 0; i < nrules && !fail; i++) {
		struct rule *r = &rules[i];

		if ((r->r.op != op && r->r.op != FAULTINJ_NOPS) ||
		    (r->r.kind != FAULTINJ_ANY && (int)r->r.kind != kind))
			continue;
		if (r->r.count && r->failed >= r->r.count)
			continue;
		if (r->seen++ < r->r.after)
			continue;
		if (r->r.p < 1.0 && (double)(splitmix(&r->rng) >> 11) * 0x1p-53 >= r->r.p)
			continue;
		r->failed++;
		fail = true;
		*err = r->r.err;
		snprintf(last_failure, sizeof(last_failure), "%s of a %s file failed with %s (rule %u)",
			 faultinj_op_name(op), faultinj_kind_name(kind), strerrorname_np(r->r.err), i);
		if (!r->logged && log_on) {
			r->logged = true;
			say("%s of a %s file of cache_dir fails with %s (rule %u, first failure)",
			    faultinj_op_name(op), faultinj_kind_name(kind),
			    strerrorname_np(r->r.err), i);
		}
	}
	pthread_mutex_unlock(&mu);
	if (fail)
		failures[op]++;
	return fail;
}

/* Fail a call on fd (the common case). */
static bool fd_fails(int fd, enum faultinj_op op, int *err)
{
	char path[PATH_MAX];
	size_t at;

	if (!should_fail(op, fd_kind(fd), err))
		return false;
	/* Which file the fd is now: a mark left on a reused number would
	 * show here as a file outside cache_dir. */
	fd_path(fd, path);
	at = strlen(last_failure);
	snprintf(last_failure + at, sizeof(last_failure) - at, " on fd %d (%s)", fd, path);
	return true;
}

#define FAIL_WITH(err) (errno = (err), -1)

/* ---- the interposed calls ------------------------------------------------ */

static mode_t open_mode(int flags, va_list ap)
{
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
		return (mode_t)va_arg(ap, int);
	return 0;
}

/* The open family: the mode is there only with O_CREAT or O_TMPFILE. */
/* clang-format off */
#define ON_OPEN(name, dirfd_param, dirfd)                                                          \
	int name(dirfd_param const char *path, int flags, ...)                                     \
	{                                                                                          \
		int k = at_kind(dirfd, path), err;                                                 \
		va_list ap;                                                                        \
		mode_t mode;                                                                       \
												   \
		va_start(ap, flags);                                                               \
		mode = open_mode(flags, ap);                                                       \
		va_end(ap);                                                                        \
		if (should_fail(FAULTINJ_OPEN, k, &err))                                           \
			return FAIL_WITH(err);                                                     \
		return note_fd(OPEN_REAL_##name(dirfd, path, flags, mode), k);                     \
	}
/* clang-format on */
#define OPEN_REAL_open(dirfd, path, flags, mode) REAL(open)(path, flags, mode)
#define OPEN_REAL_open64(dirfd, path, flags, mode) REAL(open64)(path, flags, mode)
#define OPEN_REAL_openat(dirfd, path, flags, mode) REAL(openat)(dirfd, path, flags, mode)
#define OPEN_REAL_openat64(dirfd, path, flags, mode) REAL(openat64)(dirfd, path, flags, mode)

#define COMMA ,
ON_OPEN(open, , AT_FDCWD)
ON_OPEN(open64, , AT_FDCWD)
ON_OPEN(openat, int dirfd COMMA, dirfd)
ON_OPEN(openat64, int dirfd COMMA, dirfd)
#undef COMMA

/* A call on an fd: fail it if a rule says so, else forward it.  PARAMS and
 * ARGS are the parenthesized parameter and argument lists; the fd is `fd`. */
/* clang-format off */
#define ON_FD(type, name, op, params, args)                                                        \
	type name params                                                                           \
	{                                                                                          \
		int err;                                                                           \
												   \
		if (fd_fails(fd, op, &err))                                                        \
			return FAIL_WITH(err);                                                     \
		return REAL(name) args;                                                            \
	}
/* clang-format on */

/* A call on a path (KIND: an expression of the call's arguments giving its
 * FD_KNOWN | kind, 0 when not on cache_dir). */
/* clang-format off */
#define ON_PATH(type, name, op, kind, params, args)                                                \
	type name params                                                                           \
	{                                                                                          \
		int err;                                                                           \
												   \
		if (should_fail(op, kind, &err))                                                   \
			return FAIL_WITH(err);                                                     \
		return REAL(name) args;                                                            \
	}
/* clang-format on */

ON_FD(ssize_t, read, FAULTINJ_READ, (int fd, void *buf, size_t n), (fd, buf, n))
ON_FD(ssize_t, pread, FAULTINJ_READ, (int fd, void *buf, size_t n, off_t off), (fd, buf, n, off))
ON_FD(ssize_t, pread64, FAULTINJ_READ, (int fd, void *buf, size_t n, off64_t off),
      (fd, buf, n, off))
ON_FD(ssize_t, write, FAULTINJ_WRITE, (int fd, const void *buf, size_t n), (fd, buf, n))
ON_FD(ssize_t, pwrite, FAULTINJ_WRITE, (int fd, const void *buf, size_t n, off_t off),
      (fd, buf, n, off))
ON_FD(ssize_t, pwrite64, FAULTINJ_WRITE, (int fd, const void *buf, size_t n, off64_t off),
      (fd, buf, n, off))
ON_FD(int, fallocate, FAULTINJ_FALLOCATE, (int fd, int mode, off_t off, off_t len),
      (fd, mode, off, len))
ON_FD(int, fallocate64, FAULTINJ_FALLOCATE, (int fd, int mode, off64_t off, off64_t len),
      (fd, mode, off, len))
ON_FD(int, ftruncate, FAULTINJ_TRUNCATE, (int fd, off_t len), (fd, len))
ON_FD(int, ftruncate64, FAULTINJ_TRUNCATE, (int fd, off64_t len), (fd, len))
ON_FD(int, fsync, FAULTINJ_SYNC, (int fd), (fd))
ON_FD(int, fdatasync, FAULTINJ_SYNC, (int fd), (fd))
ON_FD(int, fstat, FAULTINJ_STAT, (int fd, struct stat *st), (fd, st))
ON_FD(int, fstat64, FAULTINJ_STAT, (int fd, struct stat64 *st), (fd, st))
ON_FD(int, fstatvfs, FAULTINJ_STATVFS, (int fd, struct statvfs *st), (fd, st))
ON_FD(int, fstatvfs64, FAULTINJ_STATVFS, (int fd, struct statvfs64 *st), (fd, st))
ON_FD(int, flock, FAULTINJ_LOCK, (int fd, int how), (fd, how))

/* A rename is on cache_dir if either side is; the kind is the old name's. */
static int rename_kind(int odir, const char *old, int ndir, const char *new)
{
	int k = at_kind(odir, old);

	return k ? k : at_kind(ndir, new);
}

static int fstatat_kind(int dirfd, const char *path, int flags)
{
	if ((flags & AT_EMPTY_PATH) && path && !path[0])
		return fd_kind(dirfd);
	return at_kind(dirfd, path);
}

ON_PATH(int, rename, FAULTINJ_RENAME, rename_kind(AT_FDCWD, old, AT_FDCWD, new),
	(const char *old, const char *new), (old, new))
ON_PATH(int, renameat, FAULTINJ_RENAME, rename_kind(odir, old, ndir, new),
	(int odir, const char *old, int ndir, const char *new), (odir, old, ndir, new))
ON_PATH(int, renameat2, FAULTINJ_RENAME, rename_kind(odir, old, ndir, new),
	(int odir, const char *old, int ndir, const char *new, unsigned int flags),
	(odir, old, ndir, new, flags))
ON_PATH(int, unlink, FAULTINJ_UNLINK, at_kind(AT_FDCWD, path), (const char *path), (path))
ON_PATH(int, unlinkat, FAULTINJ_UNLINK, at_kind(dirfd, path),
	(int dirfd, const char *path, int flags), (dirfd, path, flags))
ON_PATH(int, mkdir, FAULTINJ_MKDIR, at_kind(AT_FDCWD, path), (const char *path, mode_t mode),
	(path, mode))
ON_PATH(int, mkdirat, FAULTINJ_MKDIR, at_kind(dirfd, path),
	(int dirfd, const char *path, mode_t mode), (dirfd, path, mode))
ON_PATH(int, stat, FAULTINJ_STAT, at_kind(AT_FDCWD, path), (const char *path, struct stat *st),
	(path, st))
ON_PATH(int, stat64, FAULTINJ_STAT, at_kind(AT_FDCWD, path), (const char *path, struct stat64 *st),
	(path, st))
ON_PATH(int, lstat, FAULTINJ_STAT, at_kind(AT_FDCWD, path), (const char *path, struct stat *st),
	(path, st))
ON_PATH(int, lstat64, FAULTINJ_STAT, at_kind(AT_FDCWD, path), (const char *path, struct stat64 *st),
	(path, st))
ON_PATH(int, fstatat, FAULTINJ_STAT, fstatat_kind(dirfd, path, flags),
	(int dirfd, const char *path, struct stat *st, int flags), (dirfd, path, st, flags))
ON_PATH(int, fstatat64, FAULTINJ_STAT, fstatat_kind(dirfd, path, flags),
	(int dirfd, const char *path, struct stat64 *st, int flags), (dirfd, path, st, flags))
ON_PATH(int, statvfs, FAULTINJ_STATVFS, at_kind(AT_FDCWD, path),
	(const char *path, struct statvfs *st), (path, st))
ON_PATH(int, statvfs64, FAULTINJ_STATVFS, at_kind(AT_FDCWD, path),
	(const char *path, struct statvfs64 *st), (path, st))

/* ---- fds leaving: forget their marks --------------------------------------- */

int close(int fd)
{
	fd_leaves(fd, "close");
	return REAL(close)(fd);
}

int closedir(DIR *d)
{
	fd_leaves(dirfd(d), "closedir");
	return REAL(closedir)(d);
}

int fclose(FILE *f)
{
	if (f)
		fd_leaves(fileno(f), "fclose");
	return REAL(fclose)(f);
}

int dup(int fd)
{
	int k = fd >= 0 && fd < FD_MAX ? fdk[fd] : 0;

	return note_fd(REAL(dup)(fd), k);
}

int dup2(int fd, int nfd)
{
	int k = fd >= 0 && fd < FD_MAX ? fdk[fd] : 0;

	fd_leaves(nfd, "dup2");
	return note_fd(REAL(dup2)(fd, nfd), k);
}

int dup3(int fd, int nfd, int flags)
{
	int k = fd >= 0 && fd < FD_MAX ? fdk[fd] : 0;

	fd_leaves(nfd, "dup3");
	return note_fd(REAL(dup3)(fd, nfd, flags), k);
}

int close_range(unsigned int first, unsigned int last, int flags)
{
	if (!(flags & CLOSE_RANGE_CLOEXEC))
		for (unsigned int fd = first; fd <= last && fd < FD_MAX; fd++)
			fd_leaves((int)fd, "close_range");
	return REAL(close_range)(first, last, flags);
}

/* ---- control: C API -------------------------------------------------------- */

/* Every directory string ever set, kept: a call may still be comparing with
 * one that was replaced (and they stay reachable for LeakSanitizer). */
struct dir_str {
	struct dir_str *next;
	char s[];
};
static struct dir_str *dir_strs; /* protected by mu */

void faultinj_set_dir(const char *d)
{
	struct dir_str *n = NULL;

	if (d) {
		size_t len = strlen(d);

		n = malloc(sizeof(*n) + len + 1);
		if (!n)
			abort();
		memcpy(n->s, d, len + 1);
		while (len > 1 && n->s[len - 1] == '/')
			n->s[--len] = '\0';
		pthread_mutex_lock(&mu);
		n->next = dir_strs;
		dir_strs = n;
		pthread_mutex_unlock(&mu);
	}
	dirp = n ? n->s : NULL;
}

static int arm_locked(const struct faultinj_rule *r)
{
	struct rule *s;

	if ((unsigned)r->op > FAULTINJ_NOPS || (unsigned)r->kind >= FAULTINJ_NKINDS ||
	    !(r->p > 0.0 && r->p <= 1.0) || r->err <= 0)
		return -EINVAL;
	if (nrules == FAULTINJ_MAX_RULES)
		return -ENOSPC;
	s = &rules[nrules];
	*s = (struct rule){.r = *r, .rng = r->seed};
	armed = ++nrules;
	return (int)(nrules - 1);
}

int faultinj_arm(const struct faultinj_rule *r)
{
	int i;

	pthread_mutex_lock(&mu);
	i = arm_locked(r);
	pthread_mutex_unlock(&mu);
	return i;
}

void faultinj_disarm_all(void)
{
	pthread_mutex_lock(&mu);
	nrules = 0;
	armed = 0;
	pthread_mutex_unlock(&mu);
}

uint64_t faultinj_calls(enum faultinj_op op)
{
	return (unsigned)op < FAULTINJ_NOPS ? calls[op] : 0;
}

uint64_t faultinj_failures(enum faultinj_op op)
{
	return (unsigned)op < FAULTINJ_NOPS ? failures[op] : 0;
}

uint64_t faultinj_rule_failures(int i)
{
	uint64_t n = 0;

	pthread_mutex_lock(&mu);
	if (i >= 0 && (unsigned)i < nrules)
		n = rules[i].failed;
	pthread_mutex_unlock(&mu);
	return n;
}

void faultinj_pause_thread(bool pause)
{
	paused = pause;
}

const char *faultinj_last_failure(void)
{
	return last_failure;
}

void faultinj_forget_failure(void)
{
	last_failure[0] = '\0';
}

bool faultinj_fd_known(int fd, enum faultinj_kind *kind)
{
	int k = fd_kind(fd);

	if (kind)
		*kind = (enum faultinj_kind)(k & ~FD_KNOWN);
	return k != 0;
}

/* ---- control: text --------------------------------------------------------- */

/* clang-format off */
static const struct {
	const char *name;
	int err;
} errnos[] = {
    {"EIO", EIO},       {"ENOSPC", ENOSPC}, {"EMFILE", EMFILE}, {"ENFILE", ENFILE},
    {"ENOENT", ENOENT}, {"EDQUOT", EDQUOT}, {"EACCES", EACCES}, {"EPERM", EPERM},
    {"EROFS", EROFS},   {"EBADF", EBADF},   {"ENOMEM", ENOMEM}, {"EAGAIN", EAGAIN},
    {"ESTALE", ESTALE}, {"EINTR", EINTR},   {"EFBIG", EFBIG},   {"ENOTDIR", ENOTDIR},
    {"EEXIST", EEXIST}, {"EBUSY", EBUSY},   {"EINVAL", EINVAL}, {"ENODATA", ENODATA},
};
/* clang-format on */

static int parse_errno(const char *s)
{
	char *end;
	long v;

	for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++)
		if (!strcmp(s, errnos[i].name))
			return errnos[i].err;
	v = strtol(s, &end, 10);
	return *s && !*end && v > 0 && v < 4096 ? (int)v : -1;
}

static int parse_op(const char *s)
{
	if (!strcmp(s, "any"))
		return FAULTINJ_NOPS;
	for (int i = 0; i < FAULTINJ_NOPS; i++)
		if (!strcmp(s, op_names[i]))
			return i;
	return -1;
}

static int parse_kind(const char *s)
{
	for (int i = 0; i < FAULTINJ_NKINDS; i++)
		if (!strcmp(s, kind_names[i]))
			return i;
	return -1;
}

static bool parse_u64(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(s, &end, 0);
	return *s && !*end && !errno;
}

/* One item: "dir PATH" or a rule.  Words are separated by blanks. */
static int parse_item(char *item, struct faultinj_rule *out, bool *is_rule, char **newdir)
{
	char *save = NULL, *w[8];
	int n = 0, op, err;

	for (char *t = strtok_r(item, " \t\r", &save); t && n < 8;
	     t = strtok_r(NULL, " \t\r", &save))
		w[n++] = t;
	*is_rule = false;
	if (n == 0)
		return 0;
	if (!strcmp(w[0], "dir")) {
		if (n != 2 || w[1][0] != '/')
			return -EINVAL;
		*newdir = w[1];
		return 0;
	}
	op = parse_op(w[0]);
	err = n >= 2 ? parse_errno(w[1]) : -1;
	if (op < 0 || err < 0)
		return -EINVAL;
	*out = (struct faultinj_rule){.op = (enum faultinj_op)op, .err = err, .p = 1.0};
	for (int i = 2; i < n; i++) {
		char *eq = strchr(w[i], '=');
		int k;

		if (!eq)
			return -EINVAL;
		*eq++ = '\0';
		if (!strcmp(w[i], "kind") && (k = parse_kind(eq)) >= 0)
			out->kind = (enum faultinj_kind)k;
		else if (!strcmp(w[i], "after") && parse_u64(eq, &out->after))
			;
		else if (!strcmp(w[i], "count") && parse_u64(eq, &out->count))
			;
		else if (!strcmp(w[i], "seed") && parse_u64(eq, &out->seed))
			;
		else if (!strcmp(w[i], "p") && (out->p = strtod(eq, NULL)) > 0.0 && out->p <= 1.0)
			;
		else
			return -EINVAL;
	}
	*is_rule = true;
	return 0;
}

int faultinj_parse(const char *spec, char *errbuf, size_t errlen)
{
	struct faultinj_rule parsed[FAULTINJ_MAX_RULES];
	char *copy = strdup(spec ? spec : ""), *save = NULL, *newdir = NULL;
	unsigned n = 0;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	for (char *it = strtok_r(copy, ";\n", &save); it; it = strtok_r(NULL, ";\n", &save)) {
		char *hash = strchr(it, '#'), orig[256];
		bool is_rule;

		if (hash)
			*hash = '\0';
		snprintf(orig, sizeof(orig), "%s", it);
		if (n == FAULTINJ_MAX_RULES)
			r = -ENOSPC;
		else
			r = parse_item(it, &parsed[n], &is_rule, &newdir);
		if (r < 0) {
			if (errbuf && errlen)
				snprintf(errbuf, errlen, "faultinj: bad item '%s'", orig);
			free(copy);
			return -EINVAL;
		}
		if (is_rule)
			n++;
	}
	if (newdir)
		faultinj_set_dir(newdir);
	pthread_mutex_lock(&mu);
	nrules = 0;
	armed = 0;
	for (unsigned i = 0; i < n; i++)
		arm_locked(&parsed[i]);
	pthread_mutex_unlock(&mu);
	if (log_on)
		say("%u rule(s) armed%s%s", n, dirp ? " on " : " (no directory set)",
		    dirp ? dirp : "");
	free(copy);
	return 0;
}

/* The control file changed (or appeared, or went): arm what it says. */
static void ctl_reload(void)
{
	struct timespec now;
	struct stat st;
	int64_t ms;
	bool changed;
	int saved = errno, pause = paused;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	if (ms < ctl_next_ms)
		return;
	ctl_next_ms = ms + CTL_PERIOD_MS;
	paused = 1;
	if (REAL(stat)(ctl_file, &st) < 0) {
		pthread_mutex_lock(&mu);
		changed = ctl_seen_any;
		ctl_seen_any = false;
		pthread_mutex_unlock(&mu);
		if (changed)
			faultinj_parse("", NULL, 0);
		goto out;
	}
	pthread_mutex_lock(&mu);
	changed = !ctl_seen_any || st.st_ino != ctl_seen.st_ino || st.st_size != ctl_seen.st_size ||
		  st.st_mtim.tv_sec != ctl_seen.st_mtim.tv_sec ||
		  st.st_mtim.tv_nsec != ctl_seen.st_mtim.tv_nsec;
	ctl_seen = st;
	ctl_seen_any = true;
	pthread_mutex_unlock(&mu);
	if (changed) {
		char buf[4096], err[300] = "";
		int fd = REAL(open)(ctl_file, O_RDONLY | O_CLOEXEC, 0);
		ssize_t n = fd >= 0 ? REAL(read)(fd, buf, sizeof(buf) - 1) : -1;

		if (fd >= 0)
			REAL(close)(fd);
		buf[n > 0 ? n : 0] = '\0';
		if (faultinj_parse(buf, err, sizeof(err)) < 0)
			say("%s (in %s): nothing armed", err, ctl_file);
	}
out:
	paused = pause;
	errno = saved;
}

void faultinj_load_env(void)
{
	const char *d = getenv("EFSCACHE_FAULTINJ_DIR"), *spec = getenv("EFSCACHE_FAULTINJ");
	const char *file = getenv("EFSCACHE_FAULTINJ_FILE"), *lg = getenv("EFSCACHE_FAULTINJ_LOG");
	char err[300];

#ifdef FAULTINJ_PRELOAD
	log_on = !lg || strcmp(lg, "0");
#else
	log_on = lg && !strcmp(lg, "1");
#endif
	if (d && d[0] == '/')
		faultinj_set_dir(d);
	if (spec && faultinj_parse(spec, err, sizeof(err)) < 0)
		say("%s (in EFSCACHE_FAULTINJ): nothing armed", err);
	if (file && file[0] == '/' && strlen(file) < sizeof(ctl_file))
		memcpy(ctl_file, file, strlen(file) + 1);
	if (log_on && (d || spec || file))
		say("loaded: dir %s, control file %s", dirp ? dirp : "(none)",
		    ctl_file[0] ? ctl_file : "(none)");
}

/* Both forms read the environment at load (a unit test sets nothing). */
__attribute__((constructor)) static void faultinj_init(void)
{
	faultinj_load_env();
}

/* ---- damage underneath ------------------------------------------------------- */

int faultinj_damage(const char *cache_dir, const char *key_hex, enum faultinj_damage what,
		    off_t len)
{
	char p[PATH_MAX];
	int r = 0, pause = paused;

	if (strlen(key_hex) != 32)
		return -EINVAL;
	paused = 1;
	switch (what) {
	case FAULTINJ_RM_DATA:
	case FAULTINJ_RM_META:
		snprintf(p, sizeof(p), "%s/v1/%.2s/%s.%s", cache_dir, key_hex, key_hex,
			 what == FAULTINJ_RM_DATA ? "data" : "meta");
		r = unlink(p) < 0 ? -errno : 0;
		break;
	case FAULTINJ_TRUNC_DATA:
	case FAULTINJ_TRUNC_META:
		snprintf(p, sizeof(p), "%s/v1/%.2s/%s.%s", cache_dir, key_hex, key_hex,
			 what == FAULTINJ_TRUNC_DATA ? "data" : "meta");
		/* Not truncate(2) by path: O_NOFOLLOW, as a careful cleaner. */
		{
			int fd = open(p, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);

			if (fd < 0) {
				r = -errno;
				break;
			}
			r = ftruncate(fd, len) < 0 ? -errno : 0;
			close(fd);
		}
		break;
	case FAULTINJ_RM_SUBDIR: {
		DIR *d;
		struct dirent *e;
		int dfd;

		snprintf(p, sizeof(p), "%s/v1/%.2s", cache_dir, key_hex);
		d = opendir(p);
		if (!d) {
			r = -errno;
			break;
		}
		dfd = dirfd(d);
		/* Data first, then the rest, as rm -rf goes (ours do). */
		for (int pass = 0; pass < 2; pass++) {
			rewinddir(d);
			while ((e = readdir(d))) {
				bool data = kind_of_name(e->d_name) == FAULTINJ_DATA;

				if (e->d_name[0] == '.' || data != (pass == 0))
					continue;
				unlinkat(dfd, e->d_name, 0);
			}
		}
		closedir(d);
		r = rmdir(p) < 0 ? -errno : 0;
		break;
	}
	default:
		r = -EINVAL;
	}
	paused = pause;
	return r;
}

/* Remove what v1/XX/ holds: data files only, or everything (then the
 * directory too).  Returns the files removed, or -errno. */
static int clear_layout(const char *cache_dir, bool data_only, int *first_err)
{
	char p[PATH_MAX];
	struct dirent *e;
	DIR *top;
	int removed = 0;

	snprintf(p, sizeof(p), "%s/v1", cache_dir);
	top = opendir(p);
	if (!top)
		return -errno;
	while ((e = readdir(top))) {
		char sub[PATH_MAX + 256];
		struct dirent *f;
		DIR *d;

		if (e->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", p, e->d_name);
		d = opendir(sub);
		if (!d)
			continue;
		for (int pass = 0; pass < (data_only ? 1 : 2); pass++) {
			rewinddir(d);
			while ((f = readdir(d))) {
				bool data = kind_of_name(f->d_name) == FAULTINJ_DATA;

				if (f->d_name[0] == '.' || data != (pass == 0))
					continue;
				if (unlinkat(dirfd(d), f->d_name, 0) == 0)
					removed++;
				else if (!*first_err && errno != ENOENT)
					*first_err = -errno;
			}
		}
		closedir(d);
		if (!data_only && rmdir(sub) < 0 && !*first_err && errno != ENOENT)
			*first_err = -errno;
	}
	closedir(top);
	return removed;
}

int faultinj_rm_data_files(const char *cache_dir)
{
	int first_err = 0, pause = paused, r;

	paused = 1;
	r = clear_layout(cache_dir, true, &first_err);
	paused = pause;
	return r;
}

int faultinj_rm_rf(const char *cache_dir)
{
	char p[PATH_MAX];
	struct dirent *e;
	DIR *top;
	int first_err = 0, pause = paused, r;

	paused = 1;
	r = clear_layout(cache_dir, false, &first_err);
	if (r < 0 && r != -ENOENT && !first_err)
		first_err = r;
	snprintf(p, sizeof(p), "%s/v1", cache_dir);
	if (rmdir(p) < 0 && !first_err && errno != ENOENT)
		first_err = -errno;
	top = opendir(cache_dir);
	if (top) {
		while ((e = readdir(top))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			if (unlinkat(dirfd(top), e->d_name, 0) < 0 &&
			    unlinkat(dirfd(top), e->d_name, AT_REMOVEDIR) < 0 && !first_err &&
			    errno != ENOENT)
				first_err = -errno;
		}
		closedir(top);
	}
	if (rmdir(cache_dir) < 0 && !first_err && errno != ENOENT)
		first_err = -errno;
	paused = pause;
	return first_err;
}
