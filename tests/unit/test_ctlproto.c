/* test_ctlproto.c - the control protocol (both sides use it): round trips,
 * refusal of malformed lines, the reader over a real socket pair, and who
 * may act on the cache; the text of the status and stats queries (struct ->
 * text -> struct, unknown names skipped, truncated or garbled text
 * refused).  No mount. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "check.h"
#include "control.h"
#include "ctlproto.h"
#include "stats.h"

static void test_roundtrip(void)
{
	struct ctl_msg m, back;
	char line[CTL_LINE_MAX];
	size_t n;

	/* Every kind, every field at its largest value: fits a line. */
	for (int k = 0; k < CTL__NKINDS; k++) {
		ctl_msg_init(&m, (enum ctl_kind)k);
		for (int f = 0; f < CTL__NFIELDS; f++)
			ctl_set(&m, (enum ctl_field)f, UINT64_MAX - (uint64_t)f);
		n = ctl_format(&m, line, sizeof(line));
		CHECK(n < sizeof(line) && line[n - 1] == '\n');
		line[n - 1] = '\0';
		CHECK(ctl_parse(line, &back) == 0);
		CHECK(back.kind == m.kind && back.has == m.has);
		CHECK(!memcmp(back.v, m.v, sizeof(m.v)));
	}
	ctl_msg_init(&m, CTL_EVICT);
	ctl_set(&m, CTL_F_ino, 1234);
	n = ctl_format(&m, line, sizeof(line));
	CHECK(!strcmp(line, "evict ino=1234\n") && n == strlen(line));
	CHECK(ctl_get(&m, CTL_F_error) == 0 && ctl_get(&m, CTL_F_ino) == 1234);
}

static void test_parse_errors(void)
{
	static const char *const bad[] = {
	    "", "evil", "evict ino", "evict ino=", "evict ino=-1", "evict ino=12x",
	    "evict =5", "evict ino=99999999999999999999999", "evict  ino=1", "evict ino=1 ",
	    "done error=0x10",
	};
	struct ctl_msg m;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = ctl_parse(bad[i], &m);
		CHECK(r == -EBADMSG);
		if (r != -EBADMSG)
			fprintf(stderr, "accepted: '%s'\n", bad[i]);
	}
	/* Unknown fields are skipped: either side may add some. */
	CHECK(ctl_parse("done error=1 future_field=7 chunks_bad=3", &m) == 0);
	CHECK(m.kind == CTL_DONE && ctl_get(&m, CTL_F_error) == 1 &&
	      ctl_get(&m, CTL_F_chunks_bad) == 3);
	CHECK(ctl_parse("verify", &m) == 0 && m.kind == CTL_VERIFY && m.has == 0);
}

static void test_socket(void)
{
	struct ctl_reader rd;
	struct ctl_msg m;
	char junk[CTL_LINE_MAX + 10];
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	ctl_reader_init(&rd, sv[1]);
	ctl_msg_init(&m, CTL_PROGRESS);
	ctl_set(&m, CTL_F_chunks_checked, 5);
	CHECK(ctl_send(sv[0], &m) == 0);
	ctl_msg_init(&m, CTL_DONE);
	CHECK(ctl_send(sv[0], &m) == 0);
	/* Two messages in one recv come out one by one. */
	CHECK(ctl_recv(&rd, &m) == 0 && m.kind == CTL_PROGRESS &&
	      ctl_get(&m, CTL_F_chunks_checked) == 5);
	CHECK(ctl_recv(&rd, &m) == 0 && m.kind == CTL_DONE);
	/* A line longer than any message is refused, not buffered forever. */
	memset(junk, 'x', sizeof(junk));
	CHECK(write(sv[0], junk, sizeof(junk)) == (ssize_t)sizeof(junk));
	CHECK(ctl_recv(&rd, &m) == -EBADMSG);
	close(sv[0]);
	close(sv[1]);

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	ctl_reader_init(&rd, sv[1]);
	close(sv[0]);
	CHECK(ctl_recv(&rd, &m) == -ECONNRESET);
	close(sv[1]);
}

/* A malloc'd copy of text with the first `from` replaced by `to`. */
static char *replaced(const char *text, const char *from, const char *to)
{
	const char *at = strstr(text, from);
	size_t n = strlen(text), fl = strlen(from), tl = strlen(to), pre;
	char *out;

	CHECK(at != NULL);
	if (!at)
		return strdup(text);
	pre = (size_t)(at - text);
	out = malloc(n - fl + tl + 1);
	memcpy(out, text, pre);
	memcpy(out + pre, to, tl);
	strcpy(out + pre + tl, at + fl);
	return out;
}

static struct ctl_file_status sample_status(void)
{
	return (struct ctl_file_status){
	    .state = CTL_STATE_VALID,
	    .size = UINT64_MAX,
	    .cached_bytes = 3 << 20,
	    .chunk_size = 1 << 20,
	    .chunks = 4,
	    .chunks_cached = 3,
	    .chunks_verified = 2,
	    .last_validated = 1764547200,
	};
}

/* Text of st in a malloc'd buffer, sized by a first call with no buffer. */
static char *status_text(const struct ctl_file_status *st)
{
	size_t n = ctl_status_format(st, NULL, 0);
	char *buf = malloc(n + 1);

	CHECK(buf && ctl_status_format(st, buf, n + 1) == n && strlen(buf) == n);
	return buf;
}

/* Field by field: the structs' padding is not theirs to compare. */
static bool status_eq(const struct ctl_file_status *a, const struct ctl_file_status *b)
{
	bool eq = a->state == b->state;

#define X(name, what) eq = eq && a->name == b->name;
	CTL_STATUS_FIELDS(X)
#undef X
	return eq;
}

static void test_status_text(void)
{
	struct ctl_file_status st = sample_status(), back;
	char small[16], *text;

	/* Exactly the lines efscachectl and scripts have always read. */
	st.size = 4 << 20;
	text = status_text(&st);
	CHECK(!strcmp(text, "state valid\nsize 4194304\ncached_bytes 3145728\n"
			    "chunk_size 1048576\nchunks 4\nchunks_cached 3\n"
			    "chunks_verified 2\nlast_validated 1764547200\n"));
	free(text);

	/* Every state and the largest numbers come back unchanged. */
	st = sample_status();
	for (int s = 0; s < CTL__NSTATES; s++) {
		st.state = (enum ctl_file_state)s;
		text = status_text(&st);
		CHECK(ctl_status_parse(text, &back) == 0);
		CHECK(status_eq(&back, &st));
		free(text);
	}
	CHECK(!strcmp(ctl_state_name(CTL_STATE_UNCACHED), "uncached"));
	CHECK(!strcmp(ctl_state_name(CTL_STATE_STALE), "stale"));

	/* A short buffer: NUL-terminated, the length needed returned. */
	text = status_text(&st);
	CHECK(ctl_status_format(&st, small, sizeof(small)) == strlen(text));
	CHECK(small[sizeof(small) - 1] == '\0');
	free(text);

	/* Unknown names anywhere and in any order are skipped. */
	CHECK(ctl_status_parse("future 1\nlast_validated 0\nstate stale\nsize 1\n"
			       "cached_bytes 0\nchunk_size 8\nchunks 1\nchunks_cached 0\n"
			       "later text with spaces\nchunks_verified 0\n",
			       &back) == 0);
	CHECK(back.state == CTL_STATE_STALE && back.size == 1 && back.chunk_size == 8);
}

static void test_status_refused(void)
{
	struct ctl_file_status st = sample_status(), back;
	char *good = status_text(&st), *bad;
	size_t n = strlen(good);
	static const struct {
		const char *from, *to;
	} garble[] = {
	    {"state valid", "state bogus"},    /* a state nobody defined */
	    {"state valid", "state"},          /* no value */
	    {"state valid", "state "},         /* empty value */
	    {"chunks 4", "chunks -4"},         /* not unsigned */
	    {"chunks 4", "chunks 4x"},         /* trailing junk */
	    {"chunks 4", "chunks 0x4"},        /* not decimal */
	    {"chunks 4", "chunks  4"},         /* two spaces */
	    {"chunks 4", "chunks 99999999999999999999"}, /* overflows */
	    {"chunks 4", "chunk 4"},           /* a known name missing */
	    {"chunks 4\n", "chunks 4\n\n"},   /* an empty line */
	    {"chunks 4", " chunks 4"},         /* no name */
	};

	CHECK(ctl_status_parse(good, &back) == 0);
	/* Cut anywhere before the end: refused, never half-read. */
	for (size_t cut = 0; cut < n; cut++) {
		char *t = strndup(good, cut);

		CHECK(ctl_status_parse(t, &back) == -EBADMSG);
		if (ctl_status_parse(t, &back) != -EBADMSG)
			fprintf(stderr, "accepted a cut at %zu: '%s'\n", cut, t);
		free(t);
	}
	for (size_t i = 0; i < sizeof(garble) / sizeof(garble[0]); i++) {
		bad = replaced(good, garble[i].from, garble[i].to);
		CHECK(ctl_status_parse(bad, &back) == -EBADMSG);
		if (ctl_status_parse(bad, &back) != -EBADMSG)
			fprintf(stderr, "accepted: '%s'\n", bad);
		free(bad);
	}
	free(good);
}

static char *stats_text(const struct ctl_stats *st)
{
	size_t n = ctl_stats_format(st, NULL, 0);
	char *buf = malloc(n + 1);

	CHECK(buf && ctl_stats_format(st, buf, n + 1) == n && strlen(buf) == n);
	return buf;
}

static void test_stats_text(void)
{
	static struct ctl_stats st, back;
	struct efs_stats live = {0};
	char *text, *more;
	size_t n;

	/* Daemon side: the counters' snapshot, then the cache's fields. */
	stats_add(&live, ST_hits, 7);
	stats_add(&live, ST_bytes_served, 1ULL << 40);
	stats_add(&live, ST_open_files, 2);
	stats_fetch_done(&live, stats_now_us());
	stats_fetch_done(&live, stats_now_us() - 20000000);
	memset(&st, 0, sizeof(st));
	stats_snapshot(&live, &st);
	CHECK(st.counter[ST_hits] == 7 && st.counter[ST_open_files] == 2);
	CHECK(st.fetch_count == 2 && st.fetch_le[0] == 1 && st.fetch_le[STATS_FETCH_NBOUNDS] == 2);
	st.cache_entries = 3;
	st.cache_usage_bytes = 8192;
	st.cache_size_bytes = UINT64_MAX;
	st.write_behind_pending = 1;
	snprintf(st.cache_dir, sizeof(st.cache_dir), "/var/cache/with space");
	snprintf(st.mountpoint, sizeof(st.mountpoint), "/mnt/models");
	st.inodes = 10;
	st.inode_fds = 9;
	st.inode_fd_budget = 100;
	st.inode_reopens = 4;
	st.index_snapshots = 2;
	st.index_memory_bytes = 9000;
	st.index_memory_budget = 8 << 20;
	st.index_loads = 5;
	st.index_saves = 6;
	text = stats_text(&st);
	CHECK_STR_CONTAINS(text, "reads 0\nhits 7\n");
	CHECK_STR_CONTAINS(text, "fetch_latency_us_le_100 1\n");
	CHECK_STR_CONTAINS(text, "fetch_latency_us_le_inf 2\nfetch_latency_us_count 2\n");
	CHECK_STR_CONTAINS(text, "write_behind_pending 1\ncache_index_ready 0\n"
				 "cache_dir /var/cache/with space\nmountpoint /mnt/models\ninodes 10\n");
	n = strlen(text);
	CHECK(n > 0 && text[n - 1] == '\n');
	CHECK_STR_CONTAINS(text, "inode_reopens 4\nindex_snapshots 2\nindex_memory_bytes 9000\n"
				 "index_memory_budget 8388608\n");
	CHECK(!strcmp(text + n - strlen("index_loads 5\nindex_saves 6\n"),
		      "index_loads 5\nindex_saves 6\n"));
	CHECK(ctl_stats_parse(text, &back) == 0);
	CHECK(!memcmp(&back, &st, sizeof(st)));

	/* A newer daemon's extra lines are skipped. */
	more = malloc(n + 64);
	snprintf(more, n + 64, "new_counter 5\n%sanother thing\n", text);
	CHECK(ctl_stats_parse(more, &back) == 0 && back.counter[ST_hits] == 7);
	free(more);

	/* Truncated at any line, or mid-line: refused. */
	for (size_t cut = 0; cut < n; cut += 7) {
		char *t = strndup(text, cut);

		CHECK(ctl_stats_parse(t, &back) == -EBADMSG);
		free(t);
	}
	/* Garbled numbers and an empty cache_dir: refused. */
	more = replaced(text, "hits 7", "hits x");
	CHECK(ctl_stats_parse(more, &back) == -EBADMSG);
	free(more);
	more = replaced(text, "cache_dir /var/cache/with space\n", "cache_dir \n");
	CHECK(ctl_stats_parse(more, &back) == -EBADMSG);
	free(more);
	more = replaced(text, "mountpoint /mnt/models\n", "");
	CHECK(ctl_stats_parse(more, &back) == -EBADMSG);
	free(more);
	more = replaced(text, "inodes 10\n", "inodes 10");
	CHECK(ctl_stats_parse(more, &back) == -EBADMSG);
	free(more);
	free(text);

	CHECK(!strcmp(ctl_stats_help("hits"), stats_help(ST_hits)));
	CHECK(strlen(ctl_stats_help("cache_size_bytes")) > 0);
	CHECK(strlen(ctl_stats_help("inode_fds")) > 0);
	CHECK(strlen(ctl_stats_help("mountpoint")) > 0);
	/* Every line has a kind: Prometheus types come from it (metrics.c). */
	CHECK(!strcmp(ctl_stats_kind("hits"), "counter"));
	CHECK(!strcmp(ctl_stats_kind("open_files"), "gauge"));
	CHECK(!strcmp(ctl_stats_kind("inode_reopens"), "counter"));
	CHECK(!strcmp(ctl_stats_kind("inode_fds"), "gauge"));
	CHECK(!strcmp(ctl_stats_kind("index_memory_bytes"), "gauge"));
	CHECK(!strcmp(ctl_stats_kind("index_loads"), "counter"));
	CHECK(!strcmp(ctl_stats_kind("write_behind_pending"), "gauge"));
	CHECK(!strcmp(ctl_stats_kind("cache_dir"), "text"));
	CHECK(!strcmp(ctl_stats_kind("mountpoint"), "text"));
	CHECK(ctl_stats_kind("fetch_latency_us_count") == NULL);
	CHECK(ctl_stats_kind("nothing_like_it") == NULL);
	CHECK(!strcmp(ctl_stats_help("nothing_like_it"), ""));
}

static void test_allowed(void)
{
	CHECK(control_allowed(0, 1000));
	CHECK(control_allowed(1000, 1000));
	CHECK(!control_allowed(65534, 1000));
	CHECK(!control_allowed(65534, 0));
	CHECK(control_allowed(0, 0));
}

/* efscachectl's check that a path is on an efscache mount (issue 15, L11):
 * the mount of a device in /proc/self/mountinfo, its type and its owner. */
static void test_mountinfo(void)
{
	static const char info[] =
	    "22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n"
	    "61 22 0:52 / /tmp/x\\040y rw,nosuid,nodev master:3 shared:9 - fuse.efs-emu /src "
	    "rw,user_id=0,group_id=0\n"
	    "70 22 0:60 / /mnt/m rw,nosuid,nodev,relatime - fuse.efscache /mnt/efs "
	    "rw,user_id=1000,group_id=1000,default_permissions,allow_other\n"
	    "71 22 0:61 / /mnt/n rw - fuse.efscache a rw\n"
	    "72 22 0:62 / /mnt/o rw - fuse";
	char type[32];
	long owner = 7;

	CHECK(ctl_mountinfo_find(info, makedev(0, 60), type, sizeof(type), &owner) == 0);
	CHECK(!strcmp(type, CTL_FSTYPE) && owner == 1000);
	CHECK(ctl_mountinfo_find(info, makedev(0, 52), type, sizeof(type), &owner) == 0);
	CHECK(!strcmp(type, "fuse.efs-emu") && owner == 0);
	/* No user_id: no owner but root. */
	CHECK(ctl_mountinfo_find(info, makedev(0, 61), type, sizeof(type), &owner) == 0);
	CHECK(!strcmp(type, CTL_FSTYPE) && owner == -1);
	/* A line cut short after the type still gives the type. */
	CHECK(ctl_mountinfo_find(info, makedev(0, 62), type, sizeof(type), &owner) == 0);
	CHECK(!strcmp(type, "fuse") && owner == -1);
	CHECK(ctl_mountinfo_find(info, makedev(0, 99), type, sizeof(type), &owner) == -ENOENT);
	CHECK(ctl_mountinfo_find("", makedev(0, 60), type, sizeof(type), &owner) == -ENOENT);
	/* No separator: not a mount line. */
	CHECK(ctl_mountinfo_find("1 2 0:60 / /m rw fuse.efscache x rw\n", makedev(0, 60), type,
				 sizeof(type), &owner) == -ENOENT);
	/* A type longer than the buffer is cut, so it never equals ours. */
	{
		char tiny[5];

		CHECK(ctl_mountinfo_find(info, makedev(0, 60), tiny, sizeof(tiny), &owner) == 0);
		CHECK(strlen(tiny) == sizeof(tiny) - 1 && !strncmp(tiny, CTL_FSTYPE, strlen(tiny)));
	}
}

int main(void)
{
	test_mountinfo();
	test_roundtrip();
	test_parse_errors();
	test_socket();
	test_status_text();
	test_status_refused();
	test_stats_text();
	test_allowed();
	return check_done("test_ctlproto");
}
