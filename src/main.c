/* main.c - argv -> config, mount, daemonize, run the session, exit codes.
 *
 * Exit codes: 0 after a clean unmount, 1 on a runtime failure (mount,
 * session, SOURCE not the mount -o require_source_mount asks for, SOURCE
 * replaced under the running daemon), 2 on bad usage (options, paths).
 * Everything that can be checked is checked before mounting, so a bad start
 * mounts nothing.
 */
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "config.h"
#include "fsinfo.h"
#include "fsops.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "notify.h"
#include "srcwatch.h"

#define EXIT_USAGE 2

/* Build the argv libfuse parses: program name, -d, and our pass-through -o
 * list.  Returns 0 or -ENOMEM. */
static int build_fuse_args(const struct efs_config *cfg, struct fuse_args *args)
{
	char *subtype_fsname;
	int r = 0;

	r |= fuse_opt_add_arg(args, "efscache");
	if (cfg->debug)
		r |= fuse_opt_add_arg(args, "-d");
	/* Name the mount after its source, as NFS mounts are named. */
	if (!strstr(cfg->fuse_opts, "fsname=")) {
		if (asprintf(&subtype_fsname, "-ofsname=%s", cfg->source) < 0)
			return -ENOMEM;
		r |= fuse_opt_add_arg(args, subtype_fsname);
		free(subtype_fsname);
	}
	if (!strstr(cfg->fuse_opts, "subtype="))
		r |= fuse_opt_add_arg(args, "-osubtype=efscache");
	{
		char mr[48];

		snprintf(mr, sizeof(mr), "-omax_read=%u", EFS_MAX_READ);
		r |= fuse_opt_add_arg(args, mr);
	}
	if (cfg->fuse_opts[0]) {
		r |= fuse_opt_add_arg(args, "-o");
		r |= fuse_opt_add_arg(args, cfg->fuse_opts);
	}
	return r ? -ENOMEM : 0;
}

/* Find the device of the mount at `mnt` in /proc/self/mountinfo. */
static int mount_device(const char *mnt, unsigned *maj, unsigned *min)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int found = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char point[4096];
		unsigned a, b;

		/* id parent maj:min root mountpoint ... (octal escapes in paths) */
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &a, &b, point) != 3)
			continue;
		if (!strcmp(point, mnt)) {
			*maj = a;
			*min = b;
			found = 0; /* keep going: the last match is the top mount */
		}
	}
	fclose(f);
	return found;
}

/* FUSE mounts get a 128 KiB readahead window, which halves sequential
 * throughput; widen it to match our 1 MiB requests.  Best effort. */
static void raise_readahead(const char *mnt)
{
	unsigned maj = 0, min = 0;
	char path[64];
	FILE *f;

	if (mount_device(mnt, &maj, &min) < 0)
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
	f = fopen(path, "we");
	if (!f) {
		log_debug("cannot open %s: %s", path, strerror(errno));
		return;
	}
	fprintf(f, "1024\n");
	if (fclose(f) != 0)
		log_debug("cannot write %s: %s", path, strerror(errno));
}

/* Every inode the kernel knows may need an fd now and then: take all the
 * fds the hard limit allows (the soft limit of a login shell or a service
 * is often 1024).  inode.c keeps its own share within a budget. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_debug("cannot raise RLIMIT_NOFILE to %llu: %s", (unsigned long long)rl.rlim_max,
			  strerror(errno));
}

static size_t stats_text(void *fs, char *buf, size_t len)
{
	return fsops_stats_text(fs, buf, len);
}

/* systemd's STATUS= line: the counters in one line. */
static void status_line(void *fs, char *buf, size_t len)
{
	char text[8192];

	stats_text(fs, text, sizeof(text));
	metrics_summary(text, buf, len);
}

/* Set by on_source_lost (the watch thread) before it ends the session:
 * exit 1, not 0.  Atomic: read by the main thread after the loop. */
static int source_lost;

/* The watch thread found SOURCE replaced (srcwatch.h).  Serving on would show
 * the old tree under the new one's name: unmount and exit 1, for systemd's
 * Restart=on-failure or the container's restart to mount the new root.  The
 * SIGTERM is handled by libfuse's handler on another thread (this one blocks
 * signals), as one from outside is. */
static void on_source_lost(void *arg, const char *why)
{
	const struct efs_config *cfg = arg;

	log_err("%s; unmounting '%s' and exiting with status 1 so that a restart serves the "
		"new one",
		why, cfg->mountpoint);
	__atomic_store_n(&source_lost, 1, __ATOMIC_RELEASE);
	kill(getpid(), SIGTERM);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_loop_config *loop;
	struct metrics_http *http = NULL;
	struct notify_status *nstatus = NULL;
	struct srcwatch *watch = NULL;
	struct fuse_session *se;
	struct efs_config cfg;
	struct efs_fs fs;
	char err[512];
	int r, ret = EXIT_FAILURE;

	if (config_parse(&cfg, argc, argv, err, sizeof(err)) < 0) {
		fprintf(stderr, "efscache: %s\n", err);
		return EXIT_USAGE;
	}
	if (cfg.show_help) {
		for (const char *const *u = config_usage; *u; u++)
			fputs(*u, stdout);
		config_free(&cfg);
		return 0;
	}
	if (cfg.show_version) {
		printf("efscache %s (libfuse %s)\n", EFSCACHE_VERSION, fuse_pkgversion());
		config_free(&cfg);
		return 0;
	}
	if (cfg.debug)
		log_set_level(LOG_LVL_DEBUG);
	r = config_check_paths(&cfg, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "efscache: %s\n", err);
		config_free(&cfg);
		return EXIT_USAGE;
	}
	/* A cache in RAM (tmpfs: Debian 13's /tmp) works, but costs memory
	 * and is gone at reboot: say so, once, at start. */
	if (fsinfo_ram_warning("cache_dir", cfg.cache_dir, err, sizeof(err)) > 0)
		log_warn("%s", err);
	if (cfg.require_source_mount &&
	    srcwatch_require(cfg.source, cfg.source_fstype, err, sizeof(err)) < 0) {
		fprintf(stderr, "efscache: %s\n", err);
		config_free(&cfg);
		return EXIT_FAILURE;
	}
	/* Modes from the kernel already carry the caller's umask. */
	umask(0);
	raise_nofile();

	r = fsops_init(&fs, &cfg, err, sizeof(err));
	if (r < 0) {
		log_err("%s", err);
		ret = EXIT_USAGE;
		goto out_cfg;
	}
	if (build_fuse_args(&cfg, &args) < 0) {
		log_err("out of memory");
		goto out_fs;
	}
	se = fuse_session_new(&args, &efs_fsops, sizeof(efs_fsops), &fs);
	if (!se) {
		/* libfuse printed why (usually an unknown option). */
		ret = EXIT_USAGE;
		goto out_args;
	}
	fs.se = se;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	/* The root just opened is the one checked above (a mount made in
	 * between is refused here), and must stay SOURCE while we serve it. */
	r = srcwatch_new(&watch, cfg.source, itab_root(fs.itab)->fd, SRCWATCH_PERIOD_MS,
			 on_source_lost, &cfg, err, sizeof(err));
	if (r == -ESTALE) {
		log_err("%s", err);
		goto out_signals;
	}
	/* No mountinfo (a chroot without /proc), no mount ids (Linux < 5.8):
	 * serve, unwatched, as before; require_source_mount has refused such a
	 * start already. */
	if (r < 0)
		log_warn("%s; a SOURCE remounted under the daemon will not be noticed", err);
	if (fuse_session_mount(se, cfg.mountpoint) != 0) {
		log_err("cannot mount on '%s'", cfg.mountpoint);
		goto out_signals;
	}
	raise_readahead(cfg.mountpoint);
	if (fuse_daemonize(cfg.foreground) != 0)
		goto out_unmount;
	if (!cfg.foreground)
		log_use_syslog("efscache");
	r = fsops_start(&fs);
	if (r < 0) {
		log_errno(LOG_LVL_ERR, -r, "cannot start the cache's background thread");
		goto out_unmount;
	}
	r = watch ? srcwatch_run(watch) : 0;
	if (r < 0) {
		log_errno(LOG_LVL_ERR, -r, "cannot start the thread that watches SOURCE");
		goto out_unmount;
	}
	fs.watch = watch;

	if (cfg.metrics_host) {
		r = metrics_http_start(&http, cfg.metrics_host, cfg.metrics_port, cfg.price_per_gb,
				       stats_text, &fs, err, sizeof(err));
		if (r < 0) {
			log_err("%s", err);
			goto out_unmount;
		}
	}
	/* The kernel has the mount and we are about to answer it: ready. */
	notify_sendf("READY=1\nSTATUS=serving %s at %s", cfg.source, cfg.mountpoint);
	r = notify_status_start(&nstatus, 10, status_line, &fs);
	if (r < 0)
		log_errno(LOG_LVL_WARN, -r, "cannot start the systemd status thread");

	loop = fuse_loop_cfg_create();
	if (!loop)
		goto out_unmount;
	fuse_loop_cfg_set_clone_fd(loop, 1);
	fuse_loop_cfg_set_max_threads(loop, cfg.max_threads);
	fuse_loop_cfg_set_idle_threads(loop, cfg.max_threads);
	r = fuse_session_loop_mt(se, loop);
	fuse_loop_cfg_destroy(loop);
	/* Parked lock waits get EINTR while the session can carry it. */
	fsops_stop(&fs);
	/* libfuse's signal handler leaves the signal number as the result. */
	ret = (r == 0 || r == SIGTERM || r == SIGINT || r == SIGHUP) ? EXIT_SUCCESS
								   : EXIT_FAILURE;
	if (__atomic_load_n(&source_lost, __ATOMIC_ACQUIRE))
		ret = EXIT_FAILURE;

out_unmount:
	notify_send("STOPPING=1\nSTATUS=unmounting");
	notify_status_stop(nstatus);
	metrics_http_stop(http);
	fuse_session_unmount(se);
out_signals:
	fs.watch = NULL;
	srcwatch_free(watch);
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_args:
	fuse_opt_free_args(&args);
out_fs:
	fsops_destroy(&fs);
out_cfg:
	config_free(&cfg);
	return ret;
}
