/* verify.c - `efscachectl verify`: re-hash every cached chunk and remove
 * the bad ones, through the daemon or offline.
 *
 * Contract: on a path of a mount (the stats query answers), one `verify`
 * request on the daemon's control socket; its progress replies redraw a
 * line on a TTY, and a run already going is joined.  On a cache_dir that
 * no daemon uses (`verify CACHE_DIR`, verify_cache_dir below), the store is
 * opened with store_open(), which takes the daemon's lock, so it never runs
 * beside a daemon: every record is loaded and each cached chunk re-read and
 * compared with its checksum; corrupt records and bad chunks are removed.
 * Exit status 1 when anything bad was found.  No threads, no locks.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "ctl.h"
#include "store.h"

static void verify_progress(const struct ctl_msg *m, void *arg)
{
	uint64_t total = ctl_get(m, CTL_F_chunks_total), done = ctl_get(m, CTL_F_chunks_checked);
	char hb[32];

	(void)arg;
	progress_printf(
	    "\r\033[Kverify: %" PRIu64 "/%" PRIu64 " chunks (%.0f%%), %s, %" PRIu64 " bad", done,
	    total, total ? 100.0 * (double)done / (double)total : 100.0,
	    human(ctl_get(m, CTL_F_bytes_checked), hb, sizeof(hb)), ctl_get(m, CTL_F_chunks_bad));
}

/* Verify through the daemon's control socket, progress on a TTY. */
static int verify_mount(const char *path)
{
	struct ctl_conn cc;
	struct ctl_msg req, done;
	uint64_t checked, bad, bytes;
	char hb[32];
	int r;

	if (ctl_open("verify", path, &cc) < 0)
		return EXIT_FAIL;
	ctl_msg_init(&req, CTL_VERIFY);
	r = ctl_request(&cc, &req, &done, isatty(STDERR_FILENO) ? verify_progress : NULL, NULL);
	progress_clear();
	r = ctl_result("verify", path, &cc, r, &done);
	ctl_close(&cc);
	if (r < 0)
		return EXIT_FAIL;
	checked = ctl_get(&done, CTL_F_chunks_checked);
	bad = ctl_get(&done, CTL_F_chunks_bad);
	bytes = ctl_get(&done, CTL_F_bytes_checked);
	if (ctl_get(&done, CTL_F_joined))
		printf("joined a verify that was already running\n");
	printf("chunks checked  %" PRIu64 "\n", checked);
	printf("bytes checked   %s\n", human(bytes, hb, sizeof(hb)));
	printf("chunks bad      %" PRIu64 "%s\n", bad,
	       bad ? " (fetched again from the source at their next read)" : "");
	if (bad) {
		report("%s: %" PRIu64 " bad chunk%s found: never served, fetched again from the "
		       "source at the next read",
		       path, bad, bad == 1 ? "" : "s");
		return EXIT_FAIL;
	}
	return fflush(stdout) ? EXIT_FAIL : 0;
}

static bool is_cache_dir(const char *path)
{
	char *lock = path_join(path, "lock"), *layout = path_join(path, "v1");
	struct stat a, b;
	bool yes = lock && layout && lstat(lock, &a) == 0 && S_ISREG(a.st_mode) &&
		   lstat(layout, &b) == 0 && S_ISDIR(b.st_mode);

	free(lock);
	free(layout);
	return yes;
}

struct key_list {
	struct store_key *keys;
	size_t n, cap;
	bool nomem;
};

static void collect_key(const struct store_scan_rec *sr, void *arg)
{
	struct key_list *l = arg;
	const struct store_key *k = &sr->key;

	if (l->n == l->cap) {
		size_t ncap = l->cap ? l->cap * 2 : 256;
		struct store_key *nk = realloc(l->keys, ncap * sizeof(*nk));
		if (!nk) {
			l->nomem = true;
			return;
		}
		l->keys = nk;
		l->cap = ncap;
	}
	l->keys[l->n++] = *k;
}

/* One record being checked offline. */
struct record_check {
	const char *path;
	const struct store_key *k;
	struct store_file f;
	void *buf;
	uint64_t checked, bytes, stored;
	uint32_t *bad, nbad, badcap;
};

static int check_slot(uint32_t idx, const struct store_slot *slot, void *arg)
{
	struct record_check *rc = arg;
	const char *why = NULL;
	int r;

	rc->stored++;
	rc->checked++;
	if (slot->len <= rc->f.chunk_size)
		rc->bytes += slot->len;
	r = store_verify_chunk(&rc->f, idx, slot, rc->buf, &why);
	if (r < 0 && !why)
		why = strerror(-r);
	if (!why)
		return 0;
	report("%s: record %s chunk %u: %s", rc->path, rc->k->hex, idx, why);
	if (rc->nbad == rc->badcap) {
		uint32_t cap = rc->badcap ? rc->badcap * 2 : 16, *nb;

		nb = realloc(rc->bad, cap * sizeof(*nb));
		if (!nb)
			return -ENOMEM;
		rc->bad = nb;
		rc->badcap = cap;
	}
	rc->bad[rc->nbad++] = idx;
	return 0;
}

/* Remove what was found bad: the chunks of a record never complete, or a
 * complete record whole (its data file may still back a passthrough open
 * of a daemon that died: it is never changed in place).  Returns the
 * errors. */
static unsigned drop_bad(struct store *s, struct record_check *rc)
{
	unsigned errors = 0;
	int r;

	if (!rc->nbad)
		return 0;
	if (rc->stored == rc->f.nchunks) {
		r = store_remove(s, rc->k);
		if (r < 0) {
			report("%s: record %s: cannot remove: %s", rc->path, rc->k->hex,
			       strerror(-r));
			return 1;
		}
		report("%s: record %s removed whole (a complete record is never changed in "
		       "place)",
		       rc->path, rc->k->hex);
		return 0;
	}
	for (uint32_t i = 0; i < rc->nbad; i++) {
		r = store_drop_chunk(&rc->f, rc->bad[i]);
		if (r < 0) {
			report("%s: record %s chunk %u: cannot remove: %s", rc->path, rc->k->hex,
			       rc->bad[i], strerror(-r));
			errors++;
		}
	}
	return errors;
}

/* Offline verify of a cache_dir no daemon holds.  Returns the exit status. */
static int verify_cache_dir(const char *path)
{
	struct key_list keys = {0};
	uint64_t records = 0, bad_records = 0, checked = 0, bad = 0, bytes = 0;
	unsigned errors = 0;
	struct store *s;
	char err[512] = "", hb[32];
	int r;

	r = store_open(&s, path, err, sizeof(err));
	if (r == -EBUSY) {
		report("%s: cache_dir is in use by a running efscache; run verify on its "
		       "MOUNTPOINT instead",
		       path);
		return EXIT_FAIL;
	}
	if (r < 0) {
		if (err[0])
			report("%s", err);
		else
			path_error(path, -r);
		return EXIT_FAIL;
	}
	r = store_scan(s, collect_key, &keys);
	if (r < 0 || keys.nomem) {
		path_error(path, r < 0 ? -r : ENOMEM);
		errors++;
	}
	for (size_t i = 0; i < keys.n; i++) {
		struct record_check rc = {.path = path, .k = &keys.keys[i]};

		r = store_open_record(s, rc.k, &rc.f);
		if (r == -ENOENT)
			continue;
		records++;
		if (r == 0 && rc.f.chunk_size > CONFIG_MAX_CHUNK_SIZE) {
			/* Checksummed but impossible: no daemon writes it. */
			store_file_close(&rc.f);
			r = -EBADMSG;
		}
		if (r == -EBADMSG) {
			bad_records++;
			report("%s: record %s is corrupt, removed", path, rc.k->hex);
			r = store_remove(s, rc.k);
			if (r < 0) {
				report("%s: cannot remove record %s: %s", path, rc.k->hex,
				       strerror(-r));
				errors++;
			}
			continue;
		}
		if (r < 0) {
			report("%s: record %s: %s", path, rc.k->hex, strerror(-r));
			errors++;
			continue;
		}
		rc.buf = malloc(rc.f.chunk_size);
		r = rc.buf ? store_each_slot(&rc.f, check_slot, &rc) : -ENOMEM;
		if (r < 0) {
			report("%s: record %s: %s", path, rc.k->hex, strerror(-r));
			errors++;
		}
		checked += rc.checked;
		bytes += rc.bytes;
		bad += rc.nbad;
		errors += drop_bad(s, &rc);
		free(rc.bad);
		free(rc.buf);
		store_file_close(&rc.f);
	}
	free(keys.keys);
	store_close(s);
	printf("records checked %" PRIu64 "\n", records);
	printf("records bad     %" PRIu64 "%s\n", bad_records, bad_records ? " (removed)" : "");
	printf("chunks checked  %" PRIu64 "\n", checked);
	printf("bytes checked   %s\n", human(bytes, hb, sizeof(hb)));
	printf("chunks bad      %" PRIu64 "%s\n", bad, bad ? " (removed)" : "");
	if (fflush(stdout))
		errors++;
	return errors || bad || bad_records ? EXIT_FAIL : 0;
}

int cmd_verify(int argc, char **argv)
{
	const char *path;
	char *buf;
	ssize_t n;
	int ret = only_help_option("verify", argc, argv);

	if (ret >= 0)
		return ret;
	if (argc - optind != 1) {
		usage_error("verify takes one MOUNTPOINT or CACHE_DIR");
		return EXIT_USAGE;
	}
	path = argv[optind];
	buf = malloc(REPLY_MAX);
	if (!buf) {
		path_error(path, ENOMEM);
		return EXIT_FAIL;
	}
	/* The stats query tells a mount (and its cache_dir) from anything else. */
	n = get_reserved(path, CTL_XATTR_STATS, buf, REPLY_MAX);
	if (n >= 0) {
		ret = verify_mount(path);
	} else if (not_ours((int)-n) && is_cache_dir(path)) {
		ret = verify_cache_dir(path);
	} else if (not_ours((int)-n)) {
		report("%s is not on an efscache mount, nor a cache_dir", path);
		ret = EXIT_FAIL;
	} else {
		path_error(path, (int)-n);
		ret = EXIT_FAIL;
	}
	free(buf);
	return ret;
}
