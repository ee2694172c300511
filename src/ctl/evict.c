/* evict.c - `efscachectl evict`: drop the cached data of files and trees.
 *
 * Contract: one connection to the daemon's control socket (opened at the
 * first file, again after a transport error), one `evict ino=N` request per
 * regular file, N being st_ino through the mount (the source's inode
 * number, the daemon's cache key).  The first refusal (EPERM) stops the
 * whole command: every other file would get the same answer.  Prints a line
 * per file that had data, then the total.  No locks.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>

#include "ctl.h"

struct evict_ctx {
	struct ctl_conn cc;
	uint64_t files, files_dropped, bytes, chunks;
	bool denied; /* stop at the first refusal: every file would say the same */
};

static int evict_one(const char *path, const struct stat *sb, void *arg)
{
	struct evict_ctx *ev = arg;
	struct ctl_msg req, done;
	uint64_t bytes, chunks;
	bool transport;
	char hb[32];
	int r;

	if (ev->denied)
		return -1;
	if (ev->cc.fd < 0) {
		r = ctl_open("evict", path, &ev->cc);
		ev->denied = r == -EPERM;
		if (r < 0)
			return -1;
	}
	ev->files++;
	/* st_ino through the mount is the source's: the daemon's cache key. */
	ctl_msg_init(&req, CTL_EVICT);
	ctl_set(&req, CTL_F_ino, (uint64_t)sb->st_ino);
	r = ctl_request(&ev->cc, &req, &done, NULL, NULL);
	transport = r < 0;
	r = ctl_result("evict", path, &ev->cc, r, &done);
	if (r < 0) {
		ev->denied = r == -EPERM;
		if (transport)
			ctl_close(&ev->cc); /* connect again for the next file */
		return -1;
	}
	bytes = ctl_get(&done, CTL_F_bytes_dropped);
	chunks = ctl_get(&done, CTL_F_chunks_dropped);
	if (bytes) {
		printf("dropped %s (%" PRIu64 " chunk%s): %s\n", human(bytes, hb, sizeof(hb)),
		       chunks, chunks == 1 ? "" : "s", path);
		ev->files_dropped++;
		ev->bytes += bytes;
		ev->chunks += chunks;
	}
	return 0;
}

int cmd_evict(int argc, char **argv)
{
	struct evict_ctx ev = {.cc.fd = -1};
	unsigned errors;
	char hb[32];
	int r = only_help_option("evict", argc, argv);

	if (r >= 0)
		return r;
	if (optind >= argc) {
		usage_error("evict needs at least one PATH");
		return EXIT_USAGE;
	}
	errors = walk_args(argc, argv, optind, evict_one, &ev, &ev.denied);
	ctl_close(&ev.cc);
	if (ev.denied) {
		fflush(stdout);
		return EXIT_FAIL;
	}
	printf("evicted %s (%" PRIu64 " chunk%s) from %" PRIu64 " of %" PRIu64 " file%s\n",
	       human(ev.bytes, hb, sizeof(hb)), ev.chunks, ev.chunks == 1 ? "" : "s",
	       ev.files_dropped, ev.files, ev.files == 1 ? "" : "s");
	if (fflush(stdout))
		errors++;
	return errors ? EXIT_FAIL : 0;
}
