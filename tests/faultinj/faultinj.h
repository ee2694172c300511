/* faultinj.h - cache-side fault injection for tests: make the libc calls
 * that efscache makes on cache_dir fail on demand, and damage cache files
 * underneath, without touching store.c (README.md here).
 *
 * faultinj.c defines open, openat, pread, pwrite, fallocate, ftruncate,
 * fsync, fdatasync, rename(at)(2), unlink(at), mkdir(at), the stat family,
 * (f)statvfs and flock (and their *64 names), forwarding each to the next
 * definition (dlsym RTLD_NEXT: libc, or a sanitizer's interceptor).  Linked
 * into a test executable (link_whole) they replace libc's for every call of
 * the program, the static library's included; built as a shared module they
 * do the same in a daemon through LD_PRELOAD, controlled by the environment
 * (see faultinj_load_env).
 *
 * Only calls on cache_dir are counted and failed: an fd opened under the
 * configured directory (or the directory itself) is remembered with the
 * kind of file it is (by its name) until it is closed; a call by path or
 * relative to a directory fd is on cache_dir when the path resolves under
 * it.  Every other call goes straight through.  Thread-safe; a thread can
 * pause injection for itself (faultinj_pause_thread) to look at cache
 * files as the kernel would, e.g. a splice of a reply's segment.
 */
#ifndef EFS_FAULTINJ_H
#define EFS_FAULTINJ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What a rule fails: one class of calls each. */
enum faultinj_op {
	FAULTINJ_OPEN,	    /* open, openat (files and directories) */
	FAULTINJ_READ,	    /* read, pread */
	FAULTINJ_WRITE,	    /* write, pwrite */
	FAULTINJ_FALLOCATE, /* fallocate (hole punching) */
	FAULTINJ_TRUNCATE,  /* ftruncate */
	FAULTINJ_SYNC,	    /* fsync, fdatasync */
	FAULTINJ_RENAME,    /* rename, renameat, renameat2 */
	FAULTINJ_UNLINK,    /* unlink, unlinkat (also AT_REMOVEDIR) */
	FAULTINJ_MKDIR,	    /* mkdir, mkdirat */
	FAULTINJ_STAT,	    /* stat, lstat, fstat, fstatat */
	FAULTINJ_STATVFS,   /* statvfs, fstatvfs */
	FAULTINJ_LOCK,	    /* flock */
	FAULTINJ_NOPS
};

/* Which files of cache_dir, told by their names (include/store.h). */
enum faultinj_kind {
	FAULTINJ_ANY,	   /* any file of cache_dir (in a rule: no filter) */
	FAULTINJ_DIR,	   /* cache_dir, v1, v1/XX, and anything not below */
	FAULTINJ_META,	   /* KEY.meta */
	FAULTINJ_DATA,	   /* KEY.data */
	FAULTINJ_TMP,	   /* KEY.meta.tmp.PID */
	FAULTINJ_LOCKFILE, /* lock */
	FAULTINJ_NKINDS
};

/* Fail calls of op on files of kind with errno err: let `after` matching
 * calls pass, then fail each with probability p (1 = every one; drawn
 * from a generator seeded with seed, so one call order gives one result),
 * until `count` have failed (0 = no limit). */
struct faultinj_rule {
	enum faultinj_op op;
	int err;
	enum faultinj_kind kind;
	uint64_t after;
	uint64_t count;
	double p;
	uint64_t seed;
};

#define FAULTINJ_MAX_RULES 16

/* The directory whose calls are counted and failed (an absolute path,
 * copied); NULL stops all of it.  Fds opened before are not known. */
void faultinj_set_dir(const char *dir);
/* Add a rule; its index, or -ENOSPC when FAULTINJ_MAX_RULES are armed,
 * -EINVAL for a bad op, kind or p. */
int faultinj_arm(const struct faultinj_rule *r);
/* Remove every rule (the counters stay). */
void faultinj_disarm_all(void);
/* Rules from text, replacing the armed ones: lines (or ';'-separated
 * items) "OP ERRNO [kind=K] [after=N] [count=M] [p=P] [seed=S]" and
 * "dir PATH"; '#' starts a comment.  OP as faultinj_op_name, ERRNO a name
 * (EIO) or a number, K as faultinj_kind_name.  0, or -EINVAL with the
 * offending item in err. */
int faultinj_parse(const char *spec, char *err, size_t errlen);
/* LD_PRELOAD control, also called at load: EFSCACHE_FAULTINJ_DIR (the
 * directory), EFSCACHE_FAULTINJ (rules as faultinj_parse) and
 * EFSCACHE_FAULTINJ_FILE (a file of rules, read again whenever it changes,
 * looked at most every 20 ms by calls on cache_dir; a missing or empty
 * file arms nothing).  Rule loads and the first failure of each rule are
 * logged to stderr when EFSCACHE_FAULTINJ_LOG is 1, or when preloaded. */
void faultinj_load_env(void);

/* Calls on cache_dir seen and failed so far, per op (since the start). */
uint64_t faultinj_calls(enum faultinj_op op);
uint64_t faultinj_failures(enum faultinj_op op);
/* Failures of armed rule i (as faultinj_arm returned). */
uint64_t faultinj_rule_failures(int i);

/* Stop (true) or resume counting and failing calls of this thread. */
void faultinj_pause_thread(bool pause);
/* The last failure injected in the calling thread ("" if none since
 * faultinj_forget_failure): op, kind, errno, rule, and for a call on an fd
 * the file the fd names now. */
const char *faultinj_last_failure(void);
void faultinj_forget_failure(void);
/* fd is the caller's own (on) until it says otherwise (off): a close of it
 * (close, dup2/dup3 over it, close_range) by anyone meanwhile aborts with
 * a stack, the mark of code closing a number it no longer owned. */
void faultinj_protect_fd(int fd, bool on);
/* Whether fd is an fd of cache_dir that faultinj knows, and its kind. */
bool faultinj_fd_known(int fd, enum faultinj_kind *kind);

const char *faultinj_op_name(enum faultinj_op op);
const char *faultinj_kind_name(enum faultinj_kind kind);

/* ---- damage underneath (the cache's files, as a cleaner would) --------- */

enum faultinj_damage {
	FAULTINJ_RM_DATA,    /* unlink v1/XX/KEY.data */
	FAULTINJ_RM_META,    /* unlink v1/XX/KEY.meta */
	FAULTINJ_RM_SUBDIR,  /* rm -rf v1/XX (every record of that prefix) */
	FAULTINJ_TRUNC_DATA, /* truncate KEY.data to len bytes */
	FAULTINJ_TRUNC_META, /* truncate KEY.meta to len bytes */
};

/* Do it to the record of key (32 hex digits) in cache_dir.  0, or -errno
 * (-ENOENT when the file is not there).  Never injected. */
int faultinj_damage(const char *cache_dir, const char *key_hex, enum faultinj_damage what,
		    off_t len);
/* `rm -rf cache_dir` caught half way: every v1/XX/KEY.data removed, the
 * .meta files and directories left.  Returns the files removed or -errno. */
int faultinj_rm_data_files(const char *cache_dir);
/* `rm -rf cache_dir` to the end, in rm's order (data before meta, then the
 * directories); files that appear meanwhile may make a rmdir fail, as they
 * would rm's.  Returns 0, or the first -errno. */
int faultinj_rm_rf(const char *cache_dir);

#endif
