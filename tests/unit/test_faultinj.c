/* test_faultinj.c - the fault injection shim (tests/faultinj) works: its
 * definitions replace libc's for the store's calls (the *64 names the
 * build uses included, and under ASan, whose interceptors come next), only
 * calls on cache_dir are counted and failed, rules pass `after` calls and
 * stop after `count`, a seeded probability repeats, a closed fd is
 * forgotten, a paused thread is left alone, the last failure of a thread
 * is told with the file its fd names, a stray close of an fd the test owns
 * aborts, and the damage helpers remove and truncate what they say.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "faultinj.h"
#include "store.h"

static char base[64], cdir[96], other[96];

static void setup(void)
{
	snprintf(base, sizeof(base), "/tmp/efs-test-faultinj-XXXXXX");
	CHECK(mkdtemp(base) != NULL);
	snprintf(cdir, sizeof(cdir), "%s/cache", base);
	snprintf(other, sizeof(other), "%s/cache-not", base); /* a prefix, not below */
	CHECK(mkdir(cdir, 0700) == 0);
	CHECK(mkdir(other, 0700) == 0);
	faultinj_set_dir(cdir);
}

static void teardown(void)
{
	char cmd[160];

	faultinj_disarm_all();
	faultinj_set_dir(NULL);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
	CHECK(system(cmd) == 0);
}

static int open_in(const char *d, const char *name)
{
	char p[160];

	snprintf(p, sizeof(p), "%s/%s", d, name);
	return open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
}

/* Only calls on cache_dir count; after and count hold. */
static void test_scope_after_count(void)
{
	struct faultinj_rule r = {
	    .op = FAULTINJ_OPEN, .err = EMFILE, .after = 2, .count = 1, .p = 1};
	uint64_t calls0 = faultinj_calls(FAULTINJ_OPEN);
	int fd;

	CHECK(faultinj_arm(&r) == 0);
	for (int i = 0; i < 4; i++) { /* outside: never counted, never failed */
		fd = open_in(other, "x");
		CHECK(fd >= 0);
		close(fd);
	}
	CHECK(faultinj_calls(FAULTINJ_OPEN) == calls0);
	for (int i = 0; i < 2; i++) { /* the two that pass */
		fd = open_in(cdir, "a.data");
		CHECK(fd >= 0);
		close(fd);
	}
	errno = 0;
	CHECK(open_in(cdir, "a.data") == -1 && errno == EMFILE);
	fd = open_in(cdir, "a.data"); /* count reached */
	CHECK(fd >= 0);
	close(fd);
	CHECK(faultinj_calls(FAULTINJ_OPEN) == calls0 + 4);
	CHECK(faultinj_failures(FAULTINJ_OPEN) >= 1);
	CHECK(faultinj_rule_failures(0) == 1);
	faultinj_disarm_all();
}

/* A kind filter; an fd is forgotten when closed, a paused thread is not
 * touched. */
static void test_kind_close_pause(void)
{
	struct faultinj_rule r = {
	    .op = FAULTINJ_WRITE, .err = ENOSPC, .kind = FAULTINJ_DATA, .p = 1};
	int data = open_in(cdir, "k.data"), meta = open_in(cdir, "k.meta"), fd;
	enum faultinj_kind kind;

	CHECK(faultinj_fd_known(data, &kind) && kind == FAULTINJ_DATA);
	CHECK(faultinj_fd_known(meta, &kind) && kind == FAULTINJ_META);
	CHECK(faultinj_arm(&r) == 0);
	errno = 0;
	CHECK(pwrite(data, "x", 1, 0) == -1 && errno == ENOSPC);
	CHECK(write(data, "x", 1) == -1 && errno == ENOSPC);
	CHECK(pwrite(meta, "x", 1, 0) == 1);
	faultinj_pause_thread(true);
	CHECK(pwrite(data, "x", 1, 0) == 1);
	faultinj_pause_thread(false);
	close(data);
	/* The number comes back for a file outside cache_dir: not known. */
	fd = open_in(other, "plain");
	CHECK(fd >= 0);
	CHECK(!faultinj_fd_known(fd, NULL));
	CHECK(pwrite(fd, "x", 1, 0) == 1);
	close(fd);
	close(meta);
	faultinj_disarm_all();
}

/* A probability with a seed gives one sequence. */
static void test_probability(void)
{
	struct faultinj_rule r = {.op = FAULTINJ_READ, .err = EIO, .p = 0.5, .seed = 42};
	int fd = open_in(cdir, "p.data"), fails = 0;
	char pattern[2][65], c;

	CHECK(pwrite(fd, "y", 1, 0) == 1);
	for (int run = 0; run < 2; run++) {
		CHECK(faultinj_arm(&r) == 0);
		for (int i = 0; i < 64; i++) {
			bool f = pread(fd, &c, 1, 0) < 0;

			pattern[run][i] = f ? 'x' : '.';
			fails += f && run == 0;
		}
		pattern[run][64] = '\0';
		faultinj_disarm_all();
	}
	CHECK(!strcmp(pattern[0], pattern[1]));
	CHECK(fails > 8 && fails < 56); /* 64 draws at p = 0.5: not all, not none */
	close(fd);
}

/* The store's own calls (the static library, *64 names) are reached. */
static void test_store_calls(void)
{
	struct store_identity id = {.ino = 7, .size = 100000, .mtime_sec = 1, .ctime_sec = 2};
	struct faultinj_rule r = {.err = EIO, .count = 1, .p = 1};
	struct store_slot *slots = NULL;
	struct store_file f;
	struct store_key k;
	struct store *s = NULL;
	uint64_t avail, total;
	char err[256], p[200];
	struct stat st;

	CHECK(store_open(&s, cdir, err, sizeof(err)) == 0);
	if (!s)
		return;
	CHECK(store_key_of("/src", 0, 7, &k) == 0);

	r.op = FAULTINJ_WRITE; /* the header's pwrite */
	CHECK(faultinj_arm(&r) == 0);
	CHECK(store_create(s, &k, &id, 65536, &f) == -EIO);
	faultinj_disarm_all();
	r.op = FAULTINJ_RENAME;
	r.err = ENOSPC;
	CHECK(faultinj_arm(&r) == 0);
	CHECK(store_create(s, &k, &id, 65536, &f) == -ENOSPC);
	faultinj_disarm_all();
	r.op = FAULTINJ_TRUNCATE;
	CHECK(faultinj_arm(&r) == 0);
	CHECK(store_create(s, &k, &id, 65536, &f) == -ENOSPC);
	faultinj_disarm_all();

	CHECK(store_create(s, &k, &id, 65536, &f) == 0);
	store_file_close(&f);
	r = (struct faultinj_rule){
	    .op = FAULTINJ_OPEN, .err = EMFILE, .kind = FAULTINJ_DATA, .p = 1};
	CHECK(faultinj_arm(&r) == 0);
	CHECK(store_load(s, &k, &f, &slots) == -EMFILE);
	faultinj_disarm_all();
	r = (struct faultinj_rule){.op = FAULTINJ_STATVFS, .err = EIO, .p = 1};
	CHECK(faultinj_arm(&r) == 0);
	CHECK(store_fs_space(s, &avail, &total) == -EIO);
	faultinj_disarm_all();
	CHECK(store_fs_space(s, &avail, &total) == 0);

	/* The directory check by path (stat) and fd (fstat) */
	r = (struct faultinj_rule){.op = FAULTINJ_STAT, .err = EIO, .p = 1};
	CHECK(faultinj_arm(&r) == 0);
	CHECK(!store_dir_ok(s));
	faultinj_disarm_all();
	CHECK(store_dir_ok(s));

	/* Damage: the data file, truncation, the meta file */
	CHECK(store_load(s, &k, &f, &slots) == 0);
	free(slots);
	store_file_close(&f);
	snprintf(p, sizeof(p), "%s/v1/%.2s/%s.meta", cdir, k.hex, k.hex);
	CHECK(faultinj_damage(cdir, k.hex, FAULTINJ_TRUNC_META, 10) == 0);
	CHECK(stat(p, &st) == 0 && st.st_size == 10);
	CHECK(store_load(s, &k, &f, &slots) == -EBADMSG); /* short header: corrupt */
	CHECK(faultinj_damage(cdir, k.hex, FAULTINJ_RM_META, 0) == 0);
	CHECK(stat(p, &st) < 0 && errno == ENOENT);
	CHECK(store_create(s, &k, &id, 65536, &f) == 0);
	store_file_close(&f);
	CHECK(faultinj_damage(cdir, k.hex, FAULTINJ_RM_DATA, 0) == 0);
	snprintf(p, sizeof(p), "%s/v1/%.2s/%s.data", cdir, k.hex, k.hex);
	CHECK(stat(p, &st) < 0 && errno == ENOENT);
	CHECK(faultinj_damage(cdir, k.hex, FAULTINJ_RM_DATA, 0) == -ENOENT);

	/* rm -rf half way: data gone, meta left; then all of it */
	CHECK(store_create(s, &k, &id, 65536, &f) == 0);
	store_file_close(&f);
	CHECK(faultinj_rm_data_files(cdir) == 1);
	CHECK(stat(p, &st) < 0);
	snprintf(p, sizeof(p), "%s/v1/%.2s/%s.meta", cdir, k.hex, k.hex);
	CHECK(stat(p, &st) == 0);
	CHECK(faultinj_damage(cdir, k.hex, FAULTINJ_RM_SUBDIR, 0) == 0);
	CHECK(stat(p, &st) < 0);
	store_close(s);
	CHECK(faultinj_rm_rf(cdir) == 0);
	CHECK(stat(cdir, &st) < 0 && errno == ENOENT);
	CHECK(mkdir(cdir, 0700) == 0);
}

static void test_parse(void)
{
	char err[200] = "";
	int fd;

	CHECK(faultinj_parse("open EMFILE kind=meta after=1 count=2 # x\n"
			     "pwrite EIO\n",
			     err, sizeof(err)) == -EINVAL);
	CHECK_STR_CONTAINS(err, "pwrite EIO");
	CHECK(faultinj_parse("open EMFILE kind=meta after=1 count=2 # x\nwrite 28 p=1 seed=3", err,
			     sizeof(err)) == 0);
	fd = open_in(cdir, "q.meta"); /* after=1 */
	CHECK(fd >= 0);
	close(fd);
	CHECK(open_in(cdir, "q.meta") == -1 && errno == EMFILE);
	fd = open_in(cdir, "q.data"); /* kind=meta only */
	CHECK(fd >= 0);
	close(fd);
	faultinj_disarm_all();
	CHECK(faultinj_parse("", err, sizeof(err)) == 0);
}

/* The last failure a thread saw names the op and the file; a close of a
 * protected fd by anyone aborts (in a child here), until it is released. */
static void test_last_failure_protect(void)
{
	struct faultinj_rule r = {.op = FAULTINJ_READ, .err = EIO, .count = 1, .p = 1};
	int fd = open_in(cdir, "l.data"), st = 0;
	char c;
	pid_t pid;

	CHECK(fd >= 0);
	faultinj_forget_failure();
	CHECK(faultinj_last_failure()[0] == '\0');
	CHECK(faultinj_arm(&r) == 0);
	CHECK(pread(fd, &c, 1, 0) == -1 && errno == EIO);
	CHECK(strstr(faultinj_last_failure(), "EIO") != NULL);
	CHECK(strstr(faultinj_last_failure(), "l.data") != NULL);
	faultinj_disarm_all();

	faultinj_protect_fd(fd, true);
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 2); /* its stack report is expected */
		close(fd);     /* aborts */
		_exit(0);
	}
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		int other_fd = dup(fd); /* another number: closes fine */

		_exit(other_fd >= 0 && close(other_fd) == 0 ? 0 : 1);
	}
	CHECK(waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	faultinj_protect_fd(fd, false);
	CHECK(close(fd) == 0);
}

int main(void)
{
	setup();
	test_scope_after_count();
	test_kind_close_pause();
	test_probability();
	test_store_calls();
	test_parse();
	test_last_failure_protect();
	teardown();
	return check_done("test_faultinj");
}
