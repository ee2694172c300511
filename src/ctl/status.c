/* status.c - `efscachectl status`: each file's cache state, with a total
 * line per directory given.
 *
 * Contract: one getxattr of CTL_XATTR_STATUS per regular file (walk.c),
 * decoded by ctlproto.c, printed as a table row or, with --json, as one
 * object of {"files": [...], "directories": [...]}.  A file the daemon has
 * no record of shows the size the mount reports.  Changes nothing.  No
 * locks.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ctl.h"
#include "metrics.h"

struct status_ctx {
	bool header_done;
	bool json;      /* one JSON object per file instead of table rows */
	bool *json_sep; /* a file object was printed: the next needs a comma */
	uint64_t files, size, cached, chunks, chunks_cached, chunks_verified;
};

static void fmt_when(uint64_t epoch, char *buf, size_t len)
{
	time_t t = (time_t)epoch;
	struct tm tm;

	if (!epoch || !localtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(buf, len, "never");
}

static void fmt_pct(uint64_t part, uint64_t whole, char *buf, size_t len)
{
	if (!whole)
		snprintf(buf, len, "-");
	else /* floor: 100% only when complete */
		snprintf(buf, len, "%u%%", (unsigned)(part >= whole ? 100 : part * 100 / whole));
}

static void status_header(struct status_ctx *s)
{
	if (s->header_done)
		return;
	s->header_done = true;
	printf("%10s %10s %4s %11s %8s  %-11s  %-19s  %s\n", "SIZE", "CACHED", "%", "CHUNKS",
	       "VERIFIED", "STATE", "LAST VALIDATED", "PATH");
}

static int status_one(const char *path, const struct stat *sb, void *arg)
{
	struct status_ctx *s = arg;
	struct ctl_file_status st;
	char a[32], b[32], pct[8], ch[32], when[32];
	int r = get_status(path, -1, &st);

	if (r == -EBADMSG) {
		not_on_mount(path);
		return -1;
	}
	if (r < 0) {
		xattr_error(path, -r);
		return -1;
	}
	/* An uncached file has no record: show what the mount reports. */
	if (st.state == CTL_STATE_UNCACHED && !st.size) {
		st.size = (uint64_t)sb->st_size;
		if (st.chunk_size)
			st.chunks = (st.size + st.chunk_size - 1) / st.chunk_size;
	}
	if (s->json) {
		printf("%s\n    {\"path\": \"", *s->json_sep ? "," : "");
		metrics_put_json_string(stdout, path);
		printf("\", \"size\": %" PRIu64 ", \"cached_bytes\": %" PRIu64
		       ", \"chunk_size\": %" PRIu64 ", \"chunks\": %" PRIu64
		       ", \"chunks_cached\": %" PRIu64 ", \"chunks_verified\": %" PRIu64
		       ", \"state\": \"",
		       st.size, st.cached_bytes, st.chunk_size, st.chunks, st.chunks_cached,
		       st.chunks_verified);
		metrics_put_json_string(stdout, ctl_state_name(st.state));
		printf("\", \"last_validated\": %" PRIu64 "}", st.last_validated);
		*s->json_sep = true;
		goto count;
	}
	status_header(s);
	fmt_pct(st.cached_bytes, st.size, pct, sizeof(pct));
	fmt_when(st.last_validated, when, sizeof(when));
	snprintf(ch, sizeof(ch), "%" PRIu64 "/%" PRIu64, st.chunks_cached, st.chunks);
	printf("%10s %10s %4s %11s %8" PRIu64 "  %-11s  %-19s  %s\n", human(st.size, a, sizeof(a)),
	       human(st.cached_bytes, b, sizeof(b)), pct, ch, st.chunks_verified,
	       ctl_state_name(st.state), when, path);
count:
	s->files++;
	s->size += st.size;
	s->cached += st.cached_bytes;
	s->chunks += st.chunks;
	s->chunks_cached += st.chunks_cached;
	s->chunks_verified += st.chunks_verified;
	return 0;
}

int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct status_ctx total = {0};
	bool json = false, json_sep = false, dir_sep = false;
	unsigned errors = 0;
	int c;

	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'j') {
			json = true;
			continue;
		}
		if (c == 'h')
			return print_usage();
		bad_option("status", c, argv);
		return EXIT_USAGE;
	}
	if (optind >= argc) {
		usage_error("status needs at least one PATH");
		return EXIT_USAGE;
	}
	/* JSON: {"files": [...], "directories": [totals...]}; the totals are
	 * kept until the files are done. */
	char *dirs_json = NULL;
	size_t dirs_len = 0;
	FILE *dirs = json ? open_memstream(&dirs_json, &dirs_len) : NULL;

	if (json && !dirs) {
		path_error(argv[optind], ENOMEM);
		return EXIT_FAIL;
	}
	if (json)
		fputs("{\n  \"files\": [", stdout);
	for (int i = optind; i < argc; i++) {
		struct status_ctx s = {.header_done = total.header_done, .json = json,
				       .json_sep = &json_sep};
		char a[32], b[32], pct[8], ch[32], files[32];
		bool is_dir;

		if (!probe_mount(argv[i])) {
			errors++;
			continue;
		}
		errors += walk(argv[i], status_one, &s, &is_dir);
		total.header_done = s.header_done;
		if (!is_dir)
			continue;
		if (json) {
			fprintf(dirs, "%s\n    {\"path\": \"", dir_sep ? "," : "");
			metrics_put_json_string(dirs, argv[i]);
			fprintf(dirs,
				"\", \"files\": %" PRIu64 ", \"size\": %" PRIu64
				", \"cached_bytes\": %" PRIu64 ", \"chunks\": %" PRIu64
				", \"chunks_cached\": %" PRIu64 ", \"chunks_verified\": %" PRIu64 "}",
				s.files, s.size, s.cached, s.chunks, s.chunks_cached,
				s.chunks_verified);
			dir_sep = true;
			continue;
		}
		status_header(&total);
		fmt_pct(s.cached, s.size, pct, sizeof(pct));
		snprintf(ch, sizeof(ch), "%" PRIu64 "/%" PRIu64, s.chunks_cached, s.chunks);
		snprintf(files, sizeof(files), "%" PRIu64 " file%s", s.files,
			 s.files == 1 ? "" : "s");
		printf("%10s %10s %4s %11s %8" PRIu64 "  %-11s  %-19s  %s (total)\n",
		       human(s.size, a, sizeof(a)), human(s.cached, b, sizeof(b)), pct, ch,
		       s.chunks_verified, files, "", argv[i]);
	}
	if (json) {
		fclose(dirs);
		printf("\n  ],\n  \"directories\": [%s\n  ]\n}\n", dirs_json ? dirs_json : "");
		free(dirs_json);
	}
	if (fflush(stdout))
		errors++;
	return errors ? EXIT_FAIL : 0;
}
