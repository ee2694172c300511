/*
 * emu.h: what the source files of efs-emu share (the overview, state and locks are in the
 * opening comment of efs-emu.c). The state (struct emu and its parts), the counters' enums,
 * and the functions one file calls in another, grouped below by the file that defines them:
 *
 *   efs-emu.c     the command line, --help, setup and the session loop (main)
 *   emu-inode.c   the inode table and its (dev, ino) hash, lookups into it, and NFS-like
 *                 caching: timeouts, what the kernel was told, names, stale handles
 *   emu-ctl.c     counters (total and per file), settings, their key=value text, the
 *                 stats file, and the xattr operations with the user.efsemu.* control
 *   emu-fault.c   faults injected by glob (fail_eio, fail_enoent, fail_estale, hang,
 *                 short_reads, flip_reads)
 *   emu-data.c    time and the shared read link (bandwidth, latency, serial_reads) and the
 *                 operations on open files: open, create, read, write, locks, ...
 *   emu-meta.c    the operations on names and attributes, directory streams, and emu_ops
 *
 * Private to the emulator; the functions' contracts are in comments at their definitions.
 */

#ifndef EFS_EMU_H
#define EFS_EMU_H

#include <fuse_lowlevel.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>

#define EMU_NAME "efs-emu"
#define EMU_XATTR "user.efsemu."
#define EMU_XATTR_LEN (sizeof(EMU_XATTR) - 1)
#define EMU_MIB (1024u * 1024u)
#define EMU_MAX_REQ EMU_MIB
#define EMU_THREADS 64
#define NSEC 1000000000ull
#define EMU_STREAMS 256	     /* threads tracked for serial_reads; a power of two */
#define EMU_STREAM_PROBES 16 /* slots searched for a thread */

_Static_assert(sizeof(fuse_ino_t) >= sizeof(uintptr_t), "fuse_ino_t must hold a pointer");

/* Total counters; the names are the keys of user.efsemu.stats on the root. */
enum emu_ctr {
	C_OPS,
	C_LOOKUPS,
	C_GETATTRS,
	C_READDIRS,
	C_OPENS,
	C_READ_OPS,
	C_READ_BYTES,
	C_WRITE_OPS,
	C_WRITE_BYTES,
	C_FAULTS,
	C_ESTALE,
	C_NEG_ENTRIES,
	C_ATTR_INVALS,
	C_OPEN_GETATTRS,
	C_HANGS,
	C_NR
};

/* Per-file counters; the keys of user.efsemu.stats on a file. */
enum emu_fctr {
	F_OPENS,
	F_READ_OPS,
	F_READ_BYTES,
	F_WRITE_OPS,
	F_WRITE_BYTES,
	F_GETATTRS,
	F_LOOKUPS,
	F_NR
};

/* Hash-table link shared by inodes and per-file counters, keyed by (dev, ino). */
struct emu_hnode {
	struct emu_hnode *next;
	dev_t dev;
	ino_t ino;
};

struct emu_htab {
	struct emu_hnode **b;
	size_t nb; /* power of two */
	size_t n;
};

struct emu_fstats {
	struct emu_hnode h; /* first: the hash links through it; protected by fstats_lock */
	_Atomic uint64_t v[F_NR];
};

/* What efs-emu last told the kernel about an inode (close-to-open check at OPEN). */
struct emu_attrs {
	mode_t mode;
	nlink_t nlink;
	uid_t uid;
	gid_t gid;
	off_t size;
	struct timespec mtim, ctim;
};

struct emu_inode {
	struct emu_hnode h; /* first; protected by inode_lock */
	int fd;		    /* O_PATH | O_NOFOLLOW, owned */
	uint64_t nlookup;   /* protected by inode_lock */
	struct emu_fstats *st;
	_Atomic int nopen;	   /* open file handles (OPEN/CREATE not yet released) */
	_Atomic bool silly;	   /* unlinked or renamed over through the mount while open */
	pthread_mutex_t alock;	   /* reported, has_reported */
	struct emu_attrs reported; /* protected by alock */
	bool has_reported;	   /* protected by alock */
	/* regular files: the name the kernel last learned for it (NFSv4 OPEN re-resolves it) */
	dev_t pdev; /* parent's (dev, ino); protected by alock */
	ino_t pino; /* protected by alock */
	char *name; /* NULL if unknown; protected by alock */
	/* CLOCK_MONOTONIC ns of the last OPEN (0: none unanswered): the next GETATTR within the
	 * attribute timeout is that OPEN's (see emu_open_revalidate) */
	_Atomic uint64_t open_at;
	_Atomic uint64_t used; /* e->tick at its last lookup: the pruner drops the oldest */
};

struct emu_handle {
	int fd;		      /* source fd: owned for files, dirfd(dp) for directories */
	DIR *dp;	      /* directories only */
	pthread_mutex_t lock; /* directories: dp, entry, offset */
	struct dirent *entry; /* read but not yet returned */
	off_t offset;
	_Atomic bool has_locks;	     /* a POSIX lock was set through this handle */
	_Atomic uint64_t lock_owner; /* the owner that set it */
	/* Held shared by a READ while it uses fd (its reply reads fd too), and
	 * exclusively by RELEASE before fd is closed.  The kernel sends RELEASE
	 * only after every READ of the file was answered, but through
	 * /dev/fuse, where ThreadSanitizer cannot see it: this says it. */
	pthread_rwlock_t io;
};

/* lookupcache=: which lookup results the kernel may cache (as the NFS mount option). */
enum emu_lookupcache { LC_ALL, LC_POSITIVE, LC_NONE };

#define EMU_UNSET UINT64_MAX

/* The read stream of one calling thread (serial_reads). */
struct emu_stream {
	pid_t tid;
	uint64_t done; /* CLOCK_MONOTONIC ns when its last read completes */
};

struct emu {
	char *root_path; /* realpath(SOURCE), "" for "/" */
	size_t root_len;
	struct emu_inode root;
	char *stats_file;	 /* absolute, or NULL */
	struct fuse_session *se; /* for attribute invalidations at OPEN */
	bool is_root;		 /* running as uid 0: create objects as the caller */

	pthread_mutex_t inode_lock;
	struct emu_htab inodes;
	pthread_mutex_t fstats_lock;
	struct emu_htab fstats;

	_Atomic uint64_t ctr[C_NR];

	/* Settings (run-time changeable through setxattr on the root). */
	_Atomic uint64_t latency_ns;
	_Atomic uint64_t meta_latency_ns;
	_Atomic uint64_t bw_bps;	   /* bytes per second, 0 = unlimited */
	_Atomic uint64_t fail_after_bytes; /* 0 = off */
	_Atomic uint64_t fault_bytes;	   /* read since fail_after_bytes was set */
	_Atomic bool serial_reads;
	/* NFS-like caching: timeouts in ns given to the kernel (see emu_attr_timeout) */
	_Atomic uint64_t acreg_ns;   /* attributes of everything but directories */
	_Atomic uint64_t acdir_ns;   /* attributes of directories; names, positive and negative */
	_Atomic uint64_t timeout_ns; /* EMU_UNSET, or every timeout (timeout=SEC) */
	_Atomic int lookupcache;     /* enum emu_lookupcache */
	pthread_rwlock_t glob_lock;
	char *fail_eio;	   /* protected by glob_lock */
	char *fail_enoent; /* protected by glob_lock */
	/* Faults of a misbehaving server (emu_extra_fault, emu_read_shape), by glob too. */
	char *fail_estale; /* protected by glob_lock */
	char *hang;	   /* protected by glob_lock */
	char *short_reads; /* protected by glob_lock */
	char *flip_reads;  /* protected by glob_lock */
	_Atomic uint64_t hang_ns; /* 0: a hang lasts until the glob is cleared */
	_Atomic uint64_t hung_now; /* requests hanging right now (a gauge, not reset) */
	_Atomic bool have_globs;

	/* OPENs (read) against unlinks and renames through the mount (write):
	 * an OPEN's close-to-open check and its count in nopen are one step
	 * for emu_mark_silly, as the NFS client's open and its silly-rename
	 * decision are under the VFS's locks. */
	pthread_rwlock_t name_lock;

	pthread_mutex_t link_lock;
	uint64_t link_free;			/* CLOCK_MONOTONIC ns; protected by link_lock */
	struct emu_stream streams[EMU_STREAMS]; /* protected by link_lock */

	_Atomic bool stopping; /* tells the stats thread and the pruner to leave */

	/* fd pressure (emu-inode.c, "Fd pressure"): above fd_budget inodes (each holds an fd)
	 * the pruner asks the kernel to drop the names of idle ones, which it then forgets. */
	size_t fd_budget;	   /* 0: no pruner */
	_Atomic uint64_t tick;	   /* lookups so far: the inodes' clock */
	_Atomic uint64_t pruned;   /* names the kernel was asked to drop (a gauge: not reset) */
	pthread_cond_t prune_cv;   /* with inode_lock: prune_wanted or stopping */
	pthread_cond_t pruned_cv;  /* with inode_lock: a pass ended (prune_pass counts them) */
	bool prune_wanted;	   /* protected by inode_lock */
	uint64_t prune_pass;	   /* protected by inode_lock */
	uint64_t splice_max;   /* largest read reply libfuse can splice (emu_splice_max) */
};

/* Credentials for creating objects as the caller (emu_cred_enter, emu-meta.c). */
struct emu_cred {
	bool changed;
};

/* ---- efs-emu.c ---- */

__attribute__((format(printf, 1, 2))) void emu_err(const char *fmt, ...);

/* ---- emu-inode.c ---- */

double ns_to_s(uint64_t ns);
double emu_attr_timeout(struct emu *e, mode_t mode);
double emu_entry_timeout(struct emu *e);
double emu_negative_timeout(struct emu *e);
void emu_note_reported(struct emu_inode *in, const struct stat *st);
bool emu_attrs_changed(struct emu_inode *in, const struct stat *st);
bool emu_is_stale(struct emu *e, struct emu_inode *in, const struct stat *st, bool open);
int htab_init(struct emu_htab *t);
struct emu_hnode *htab_find(const struct emu_htab *t, dev_t dev, ino_t ino);
void htab_insert(struct emu_htab *t, struct emu_hnode *n);
struct emu *emu_of(fuse_req_t req);
struct emu_inode *emu_inode(struct emu *e, fuse_ino_t ino);
struct emu_handle *emu_handle(struct fuse_file_info *fi);
void emu_procname(char *buf, size_t size, int fd);
void emu_inode_unref(struct emu *e, struct emu_inode *in, uint64_t n);
void emu_note_name(struct emu_inode *in, struct emu_inode *dir, const char *name);
bool emu_name_moved(struct emu *e, struct emu_inode *in);
int emu_do_lookup(struct emu *e, fuse_ino_t parent, const char *name, struct fuse_entry_param *ent);
void emu_reply_entry(fuse_req_t req, struct emu *e, const struct fuse_entry_param *ent);
void emu_fd_budget_init(struct emu *e);
void *emu_pruner(void *arg);
void emu_pruner_stop(struct emu *e);

/* ---- emu-ctl.c ---- */

void ctr_add(struct emu *e, enum emu_ctr c, uint64_t n);
void fctr_add(struct emu_inode *in, enum emu_fctr c, uint64_t n);
void emu_meta(struct emu *e, enum emu_ctr kind);
struct emu_fstats *emu_fstats_get(struct emu *e, dev_t dev, ino_t ino);
int emu_set(struct emu *e, const char *key, const char *val, const char **why);
void emu_write_stats_file(struct emu *e);
void emu_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void emu_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void emu_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
		  int flags);
void emu_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

/* ---- emu-fault.c ---- */

int emu_inode_fault(struct emu *e, struct emu_inode *in);
int emu_lookup_fault(struct emu *e, struct emu_inode *parent, const char *name);
int emu_extra_fault(fuse_req_t req, struct emu *e, struct emu_inode *in);
size_t emu_read_shape(struct emu *e, struct emu_inode *in, size_t size);

/* ---- emu-data.c ---- */

uint64_t emu_now(void);
void emu_sleep_until(uint64_t t);
struct emu_handle *emu_handle_new(int fd);
void emu_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void emu_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		struct fuse_file_info *fi);
uint64_t emu_splice_max(void);
void emu_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void emu_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in_buf, off_t off,
		   struct fuse_file_info *fi);
void emu_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void emu_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void emu_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void emu_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		   struct fuse_file_info *fi);
void emu_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op);
void emu_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock);
void emu_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock,
	       int sleep);
void emu_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
			 struct fuse_file_info *fi_in, fuse_ino_t ino_out, off_t off_out,
			 struct fuse_file_info *fi_out, size_t len, int flags);
void emu_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi);

/* ---- emu-meta.c ---- */

/* Every operation, for fuse_session_new. */
extern const struct fuse_lowlevel_ops emu_ops;
void emu_cred_enter(fuse_req_t req, struct emu *e, struct emu_cred *c);
void emu_cred_leave(const struct emu_cred *c);
void emu_forget_one(struct emu *e, fuse_ino_t ino, uint64_t nlookup);

#endif
