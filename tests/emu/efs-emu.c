/*
 * efs-emu: a FUSE pass-through that stands in for an Amazon EFS (NFS) mount in tests and
 * benchmarks (docs/design.md section 5). Every request is forwarded to the same-named object
 * under SOURCE and answered with the source's result and errno, after a delay:
 *
 *   read               n / bw_mib on one read "link" shared by all threads, then
 *                      latency_ms; with serial_reads=1 a thread's read (kernel read-ahead
 *                      included) does not start before its previous read completed:
 *
 *       link_free = max(now, link_free) + n / bw
 *       done = max(link_free, stream[tid].done + n / bw) + latency;  stream[tid].done = done
 *
 *                      so one sequential reader is latency-bound (128 KiB read-ahead
 *                      requests: 128 KiB / 1.25 ms = 100 MiB/s) while parallel readers
 *                      add up to the cap.
 *   write, copy_file_range   latency_ms
 *   everything else    meta_latency_ms (not forget, release, releasedir or the
 *                      user.efsemu.* control xattrs)
 *
 * Caching is NFS-like (README.md, "NFS-like caching"): replies carry the attribute and entry
 * timeouts of acregmin/acdirmin/lookupcache (or timeout=SEC), missing names are negative
 * entries, and OPEN revalidates close-to-open: the kernel's attributes are invalidated and
 * the next GETATTR is the OPEN compound's, and a regular file with no name left on SOURCE
 * and no open handle is ESTALE (to
 * GETATTR too), so the kernel looks the name up again.
 *
 * It counts requests and bytes, in total and per file, and injects faults (EIO/ENOENT by glob,
 * EIO after N bytes); tests read and steer both through xattrs on the mount (see README.md).
 *
 * State, all in one struct emu passed as the session's userdata:
 *   inodes    hash of struct emu_inode keyed by (st_dev, st_ino) so hard links share a node;
 *             each holds an O_PATH fd, the kernel's lookup count, its number of open
 *             handles and the attributes last replied to the kernel. A fuse_ino_t is the
 *             node's address (FUSE_ROOT_ID for SOURCE itself).
 *   fstats    hash of per-file counters keyed by (st_dev, st_ino). Entries live until exit, so
 *             counters survive the kernel forgetting an inode (drop_caches); reset zeroes them.
 *   totals    atomic counters. settings: atomics, except the two globs.
 *   link      link_free and the per-thread read streams above.
 * Open files and directories are a struct emu_handle in fi->fh.
 *
 * Threads: libfuse's workers; the stats thread (SIGUSR1, with stats_file=); the pruner,
 * which keeps the inodes' fds under the fd limit (emu-inode.c, "fd pressure").
 *
 * Locks (counters and numeric settings are atomics):
 *   inode_lock   the inode hash and every nlookup; the pruner's flags
 *   fstats_lock  the per-file counter hash (not the counters themselves)
 *   link_lock    link_free and streams[]
 *   glob_lock    fail_eio and fail_enoent (rwlock)
 *   name_lock    an OPEN's check and count (read) against an unlink's or a rename's
 *                silly-rename decision and the call itself (write); taken first
 *   h->lock      one open directory stream
 *   in->alock    what the kernel was last told about one inode (reported, name)
 * Only nesting: inode_lock before an in->alock (emu_renamed, the pruner).
 *
 * This file holds the command line, --help, setup and the session loop; emu.h lists the
 * others and what each holds.
 */

#include "emu.h"

#ifndef EFSCACHE_VERSION
#define EFSCACHE_VERSION "unknown"
#endif

__attribute__((format(printf, 1, 2))) void emu_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs(EMU_NAME ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* ---- command line ---- */

struct emu_cli {
	struct emu *e;
	const char *source;
	int nonopts;
	bool max_threads_set;
};

enum { K_SETTING, K_STATS_FILE, K_MAX_THREADS };

/* clang-format off */
static const struct fuse_opt emu_opt_spec[] = {
	FUSE_OPT_KEY("latency_ms=", K_SETTING),
	FUSE_OPT_KEY("meta_latency_ms=", K_SETTING),
	FUSE_OPT_KEY("bw_mib=", K_SETTING),
	FUSE_OPT_KEY("serial_reads=", K_SETTING),
	FUSE_OPT_KEY("fail_eio=", K_SETTING),
	FUSE_OPT_KEY("fail_enoent=", K_SETTING),
	FUSE_OPT_KEY("fail_after_bytes=", K_SETTING),
	FUSE_OPT_KEY("fail_estale=", K_SETTING),
	FUSE_OPT_KEY("hang=", K_SETTING),
	FUSE_OPT_KEY("hang_ms=", K_SETTING),
	FUSE_OPT_KEY("short_reads=", K_SETTING),
	FUSE_OPT_KEY("flip_reads=", K_SETTING),
	FUSE_OPT_KEY("stats_file=", K_STATS_FILE),
	FUSE_OPT_KEY("timeout=", K_SETTING),
	FUSE_OPT_KEY("acregmin=", K_SETTING),
	FUSE_OPT_KEY("acdirmin=", K_SETTING),
	FUSE_OPT_KEY("lookupcache=", K_SETTING),
	FUSE_OPT_KEY("max_threads=", K_MAX_THREADS),
	FUSE_OPT_END,
};
/* clang-format on */

static char *emu_abspath(const char *path)
{
	char cwd[PATH_MAX];
	char *abs;

	if (path[0] == '/')
		return strdup(path);
	if (!getcwd(cwd, sizeof(cwd)) || asprintf(&abs, "%s/%s", cwd, path) < 0)
		return NULL;
	return abs;
}

static bool emu_is_glob_key(const char *k)
{
	return !strcmp(k, "fail_estale") || !strcmp(k, "hang") || !strcmp(k, "short_reads") ||
	       !strcmp(k, "flip_reads");
}

/* fuse_opt callback: 1 keeps the argument for libfuse, 0 consumes it, -1 fails. */
static int emu_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct emu_cli *cli = data;
	struct emu *e = cli->e;
	const char *eq = strchr(arg, '=');
	const char *val = eq ? eq + 1 : "";
	int namelen = eq ? (int)(eq - arg) : (int)strlen(arg);
	const char *why = "";
	char key_name[64];
	int err;

	(void)outargs;
	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (cli->nonopts++ == 0) {
			cli->source = arg;
			return 0;
		}
		return 1;
	case K_SETTING:
		snprintf(key_name, sizeof(key_name), "%.*s", namelen, arg);
		if (!*val && strcmp(key_name, "fail_eio") && strcmp(key_name, "fail_enoent") &&
		    !emu_is_glob_key(key_name)) {
			why = "empty value";
			break;
		}
		err = emu_set(e, key_name, val, &why);
		if (err == 0)
			return 0;
		if (err == -ENOMEM) {
			emu_err("out of memory");
			return -1;
		}
		break;
	case K_STATS_FILE:
		if (!*val) {
			why = "empty path";
			break;
		}
		free(e->stats_file);
		e->stats_file = emu_abspath(val);
		return e->stats_file ? 0 : -1;
	case K_MAX_THREADS:
		cli->max_threads_set = true;
		return 1;
	default:
		return 1;
	}
	emu_err("invalid value '%s' for option %.*s: %s", val, namelen, arg, why);
	return -1;
}

static void emu_help(const char *prog)
{
	printf("usage: %s SOURCE MOUNTPOINT [options]\n"
	       "\n"
	       "Mount a pass-through of directory SOURCE at MOUNTPOINT that behaves like an\n"
	       "Amazon EFS (NFS) mount: requests are delayed, aggregate read bandwidth is\n"
	       "capped, faults can be injected and operations are counted.\n"
	       "\n"
	       "efs-emu options (all but stats_file can be changed at run time, see below):\n"
	       "    -o latency_ms=MS        delay added to each read and write request\n"
	       "                            (default: 1; fractions allowed; 0 = none)\n"
	       "    -o meta_latency_ms=MS   delay added to every other request (default: 0.5)\n"
	       "    -o bw_mib=MIB           aggregate read bandwidth cap in MiB/s, shared by\n"
	       "                            all readers (default: 500; 0 = unlimited)\n"
	       "    -o serial_reads=0|1     1 (default): the reads of one calling thread,\n"
	       "                            kernel read-ahead included, are served one\n"
	       "                            after another, so a sequential reader is\n"
	       "                            latency-bound; 0: they overlap\n"
	       "    -o fail_eio=GLOB        open and read of files whose path relative to\n"
	       "                            SOURCE matches GLOB (fnmatch(3), no flags: '*'\n"
	       "                            also matches '/') fail with EIO\n"
	       "    -o fail_enoent=GLOB     lookup, open and read of matching paths fail\n"
	       "                            with ENOENT\n"
	       "    -o fail_after_bytes=N   once N bytes have been read in total, every\n"
	       "                            further read fails with EIO (default: 0 = off)\n"
	       "    -o fail_estale=GLOB     open, getattr and read of matching files fail\n"
	       "                            with ESTALE\n"
	       "    -o hang=GLOB            open, getattr and read of matching files hang\n"
	       "                            (a hard mount whose server is away) for\n"
	       "                            hang_ms, or until cleared; a signal to the\n"
	       "                            caller ends the wait with EINTR\n"
	       "    -o hang_ms=MS           how long a hang lasts (default: 0 = until the\n"
	       "                            hang glob is cleared)\n"
	       "    -o short_reads=GLOB     reads of matching files return at most half\n"
	       "                            of what was asked\n"
	       "    -o flip_reads=GLOB      before each read of a matching file, invert\n"
	       "                            every byte of it on SOURCE\n"
	       "    -o stats_file=PATH      write the total counters to PATH on SIGUSR1\n"
	       "                            and at exit\n"
	       "\n",
	       prog);
	printf("NFS-like caching (as the Linux NFS client with EFS's mount options; seconds,\n"
	       "fractions allowed):\n"
	       "    -o acregmin=SEC         how long the kernel caches the attributes of files,\n"
	       "                            symlinks, ... (default: 3)\n"
	       "    -o acdirmin=SEC         how long it caches directory attributes and names,\n"
	       "                            found and not found (default: 30)\n"
	       "    -o lookupcache=MODE     all (default): cache names and \"no such name\";\n"
	       "                            positive: names only; none: no names\n"
	       "    -o timeout=SEC          every attribute and name timeout is SEC,\n"
	       "                            whatever acregmin/acdirmin say (lookupcache\n"
	       "                            still applies); 0 = ask efs-emu every time\n"
	       "    Every OPEN revalidates (close-to-open): the kernel's attributes are\n"
	       "    invalidated and the next GETATTR is the OPEN's (no latency), and a file\n"
	       "    removed or replaced on SOURCE that efs-emu has\n"
	       "    no open handle of fails GETATTR and OPEN with ESTALE, so the kernel\n"
	       "    looks its name up again.\n"
	       "\n"
	       "Counters and control (xattrs, never passed to SOURCE or listed):\n"
	       "    getxattr user.efsemu.stats   on MOUNTPOINT: totals; on a file: its\n"
	       "                                 counters (\"key=value key=value ...\")\n"
	       "    getxattr user.efsemu.config  on MOUNTPOINT: the current settings\n"
	       "    setxattr user.efsemu.reset   on MOUNTPOINT: zero all counters\n"
	       "    setxattr user.efsemu.NAME    on MOUNTPOINT: change setting NAME (any\n"
	       "                                 option above but stats_file; an empty\n"
	       "                                 glob or 0 clears a fault, an empty\n"
	       "                                 timeout unsets it)\n"
	       "\n"
	       "Generic options:\n"
	       "    -h   --help            print help\n"
	       "    -V   --version         print version\n"
	       "    -d   -o debug          enable debug output (implies -f)\n"
	       "    -f                     foreground operation (default: daemonize once\n"
	       "                           the mount is in place)\n"
	       "    -s                     disable multi-threaded operation\n"
	       "    -o clone_fd            use separate fuse device fd for each thread\n"
	       "    -o max_idle_threads=N  the maximum number of idle worker threads\n"
	       "                           (default: unlimited)\n"
	       "    -o max_threads=N       the maximum number of worker threads\n"
	       "                           (default: %d)\n"
	       "    -o allow_other         allow access by all users\n"
	       "    -o allow_root          allow access by root\n"
	       "    -o auto_unmount        auto unmount on process termination\n"
	       "    -o default_permissions let the kernel check permissions (efs-emu runs\n"
	       "                           as root and does not check them itself)\n"
	       "Other -o options (fsname=, subtype=, ro, ...) are passed to libfuse.\n",
	       EMU_THREADS);
}

/* Open SOURCE as the root node. */
static int emu_open_root(struct emu *e, const char *source)
{
	struct stat st;
	char *real = realpath(source, NULL);

	if (!real) {
		emu_err("source '%s': %s", source, strerror(errno));
		return -1;
	}
	e->root.fd = open(real, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (e->root.fd < 0 || fstat(e->root.fd, &st) < 0) {
		emu_err("source '%s': %s", source, strerror(errno));
		free(real);
		return -1;
	}
	if (strcmp(real, "/") == 0)
		real[0] = '\0';
	e->root_path = real;
	e->root_len = strlen(real);
	e->root.h.dev = st.st_dev;
	e->root.h.ino = st.st_ino;
	e->root.nlookup = 2;
	pthread_mutex_init(&e->root.alock, NULL);
	e->root.st = emu_fstats_get(e, st.st_dev, st.st_ino);
	htab_insert(&e->inodes, &e->root.h);
	return 0;
}

static int emu_init_state(struct emu *e)
{
	memset(e, 0, sizeof(*e));
	e->root.fd = -1;
	atomic_store(&e->acreg_ns, 3 * NSEC);
	atomic_store(&e->acdir_ns, 30 * NSEC);
	atomic_store(&e->timeout_ns, EMU_UNSET);
	atomic_store(&e->lookupcache, LC_ALL);
	e->is_root = geteuid() == 0;
	atomic_store(&e->latency_ns, 1000000);
	atomic_store(&e->meta_latency_ns, 500000);
	atomic_store(&e->bw_bps, 500ull * EMU_MIB);
	atomic_store(&e->serial_reads, true);
	pthread_mutex_init(&e->inode_lock, NULL);
	pthread_mutex_init(&e->fstats_lock, NULL);
	pthread_mutex_init(&e->link_lock, NULL);
	pthread_rwlock_init(&e->name_lock, NULL);
	pthread_rwlock_init(&e->glob_lock, NULL);
	pthread_cond_init(&e->prune_cv, NULL);
	pthread_cond_init(&e->pruned_cv, NULL);
	if (htab_init(&e->inodes) || htab_init(&e->fstats))
		return -1;
	return 0;
}

static void emu_free_state(struct emu *e)
{
	for (size_t i = 0; i < e->inodes.nb; i++) {
		struct emu_hnode *p = e->inodes.b[i], *next;

		for (; p; p = next) {
			next = p->next;
			if (p != &e->root.h) {
				close(((struct emu_inode *)p)->fd);
				free(((struct emu_inode *)p)->name);
				free(p);
			}
		}
	}
	for (size_t i = 0; i < e->fstats.nb; i++) {
		struct emu_hnode *p = e->fstats.b[i], *next;

		for (; p; p = next) {
			next = p->next;
			free(p);
		}
	}
	free(e->fstats.b);
	free(e->inodes.b);
	if (e->root.fd >= 0)
		close(e->root.fd);
	free(e->root_path);
	free(e->stats_file);
	free(e->fail_eio);
	free(e->fail_enoent);
	free(e->fail_estale);
	free(e->hang);
	free(e->short_reads);
	free(e->flip_reads);
}

/* Waits for SIGUSR1 (blocked in every other thread) and writes the stats file. */
static void *emu_stats_thread(void *arg)
{
	struct emu *e = arg;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (atomic_load(&e->stopping))
			break;
		emu_write_stats_file(e);
	}
	return NULL;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts;
	struct fuse_loop_config *cfg;
	struct fuse_session *se;
	struct emu e;
	struct emu_cli cli = {.e = &e};
	pthread_t stats_thr, pruner_thr;
	bool have_stats_thr = false, have_pruner = false;
	sigset_t usr1, all, old;
	int ret = 1;

	memset(&opts, 0, sizeof(opts));
	if (emu_init_state(&e)) {
		emu_err("out of memory");
		return 1;
	}
	if (fuse_opt_parse(&args, &cli, emu_opt_spec, emu_opt_proc) != 0)
		goto out_free;
	if (fuse_parse_cmdline(&args, &opts) != 0)
		goto out_free;
	if (opts.show_help) {
		emu_help(argv[0]);
		ret = 0;
		goto out_free;
	}
	if (opts.show_version) {
		printf("efs-emu %s (efscache test fixture)\n", EFSCACHE_VERSION);
		printf("FUSE library version %s\n", fuse_pkgversion());
		fflush(stdout);
		fuse_lowlevel_version();
		ret = 0;
		goto out_free;
	}
	if (!cli.source || !opts.mountpoint) {
		fprintf(stderr, "usage: %s SOURCE MOUNTPOINT [options]\n", argv[0]);
		fprintf(stderr, "       %s --help\n", argv[0]);
		goto out_free;
	}
	if (emu_open_root(&e, cli.source))
		goto out_free;
	e.splice_max = emu_splice_max();

	/*
	 * libfuse's request buffers (1 MiB writes), and a read reply that can be neither spliced
	 * nor mapped, go through malloc'd buffers. Keep them in the heap: a fresh mmap/munmap
	 * per request (glibc's default for this size) costs more than the I/O in a VM.
	 */
	mallopt(M_MMAP_THRESHOLD, 4 * EMU_MIB);
	mallopt(M_TRIM_THRESHOLD, 64 * EMU_MIB);
	umask(0); /* the kernel has applied the caller's umask already */
	se = fuse_session_new(&args, &emu_ops, sizeof(emu_ops), &e);
	if (!se)
		goto out_free;
	e.se = se;
	/* A shell starts background jobs with SIGINT ignored, and libfuse then leaves it so;
	 * tests expect SIGINT as well as SIGTERM to unmount. */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	if (fuse_session_mount(se, opts.mountpoint) != 0)
		goto out_remove_handlers;
	/* Mounted: requests queue in the kernel until the loop runs, so returning now is safe. */
	if (fuse_daemonize(opts.foreground) != 0)
		goto out_unmount;

	/* Short sleeps are the point: do not let timer slack stretch them. Inherited by the
	 * worker threads, as is the signal mask that leaves SIGUSR1 to the stats thread. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	if (e.stats_file) {
		pthread_sigmask(SIG_BLOCK, &usr1, NULL);
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		have_stats_thr = pthread_create(&stats_thr, NULL, emu_stats_thread, &e) == 0;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (!have_stats_thr)
			emu_err("cannot start the stats thread; SIGUSR1 is ignored");
	} else {
		signal(SIGUSR1, SIG_IGN);
	}
	/* An fd per inode: keep them under the limit (emu-inode.c, "fd pressure"). */
	emu_fd_budget_init(&e);
	pthread_sigmask(SIG_BLOCK, &usr1, &old);
	have_pruner = pthread_create(&pruner_thr, NULL, emu_pruner, &e) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!have_pruner) {
		e.fd_budget = 0;
		emu_err("cannot start the inode pruner; lookups may fail with EMFILE");
	}

	if (opts.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		cfg = fuse_loop_cfg_create();
		if (!cfg) {
			emu_err("out of memory");
			goto out_stop_thread;
		}
		fuse_loop_cfg_set_clone_fd(cfg, (unsigned int)opts.clone_fd);
		if (opts.max_idle_threads != UINT_MAX) /* libfuse's "unset" */
			fuse_loop_cfg_set_idle_threads(cfg, opts.max_idle_threads);
		fuse_loop_cfg_set_max_threads(cfg,
					      cli.max_threads_set ? opts.max_threads : EMU_THREADS);
		ret = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	ret = ret < 0 ? 1 : 0; /* > 0: the signal that ended a clean unmount */

out_stop_thread:
	if (have_pruner) {
		emu_pruner_stop(&e);
		pthread_join(pruner_thr, NULL);
	}
	if (have_stats_thr) {
		atomic_store(&e.stopping, true);
		pthread_kill(stats_thr, SIGUSR1);
		pthread_join(stats_thr, NULL);
	}
	emu_write_stats_file(&e);
out_unmount:
	fuse_session_unmount(se);
out_remove_handlers:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
out_free:
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	emu_free_state(&e);
	return ret;
}

