/* test_srcwatch.c - mountinfo lines, the start guard and the watch thread,
 * without mounting anything: "/" and "/proc" are mount points wherever
 * this runs, a fresh directory under /tmp is not, and a directory renamed
 * away from under the watched path stands in for a file system mounted over
 * it (the same check, on the inode instead of the mount id).  Mounting over
 * SOURCE for real is tests/integration/test_source_guard.py. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "srcwatch.h"

static void test_parse_line(void)
{
	struct srcwatch_mnt m;
	char l1[] = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root "
		    "rw,errors=continue\n";
	char l2[] = "612 29 0:52 / /mnt/my\\040efs rw,relatime shared:300 master:2 - nfs4 "
		    "fs-1.efs.us-east-1.amazonaws.com:/ rw,vers=4.1";
	char l3[] = "22 1 0:21 / /proc rw - proc proc rw";
	char bad1[] = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw";
	char bad2[] = "36 35 980 / /x rw - ext3 /dev/root rw";
	char bad3[] = "x 35 98:0 / /x rw - ext3 /dev/root rw";
	char bad4[] = "36 35 98:0 / /x rw -";
	char bad5[] = "";
	char bad6[] = "36 35 98:99999999999 / /x rw - ext3 /dev/root rw";

	CHECK(srcwatch_parse_line(l1, &m) == 0);
	CHECK(m.id == 36 && m.parent == 35 && m.major == 98 && m.minor == 0);
	CHECK(!strcmp(m.root, "/mnt1") && !strcmp(m.mountpoint, "/mnt2"));
	CHECK(!strcmp(m.fstype, "ext3") && !strcmp(m.source, "/dev/root"));

	/* Optional fields are skipped; octal escapes are decoded. */
	CHECK(srcwatch_parse_line(l2, &m) == 0);
	CHECK(m.id == 612 && !strcmp(m.mountpoint, "/mnt/my efs"));
	CHECK(!strcmp(m.fstype, "nfs4"));
	CHECK(!strcmp(m.source, "fs-1.efs.us-east-1.amazonaws.com:/"));

	/* No optional field at all. */
	CHECK(srcwatch_parse_line(l3, &m) == 0);
	CHECK(!strcmp(m.mountpoint, "/proc") && !strcmp(m.fstype, "proc"));

	CHECK(srcwatch_parse_line(bad1, &m) == -EINVAL); /* no "-" separator */
	CHECK(srcwatch_parse_line(bad2, &m) == -EINVAL); /* no maj:min */
	CHECK(srcwatch_parse_line(bad3, &m) == -EINVAL); /* id not a number */
	CHECK(srcwatch_parse_line(bad4, &m) == -EINVAL); /* nothing after "-" */
	CHECK(srcwatch_parse_line(bad5, &m) == -EINVAL);
	CHECK(srcwatch_parse_line(bad6, &m) == -EINVAL); /* minor out of range */
}

static void test_lookup_and_require(void)
{
	char tmpl[] = "/tmp/efs-test-srcwatch-XXXXXX", err[1024] = "";
	struct srcwatch_found f;
	char *dir = mkdtemp(tmpl);

	CHECK(srcwatch_lookup(AT_FDCWD, "/", &f) == 0);
	CHECK(!strcmp(f.mountpoint, "/"));
	CHECK(srcwatch_lookup(AT_FDCWD, "/proc", &f) == 0);
	CHECK(!strcmp(f.mountpoint, "/proc") && !strcmp(f.fstype, "proc"));
	CHECK(srcwatch_lookup(AT_FDCWD, "/nonexistent-efs-test", &f) == -ENOENT);

	CHECK(srcwatch_require("/proc", NULL, err, sizeof(err)) == 0);
	CHECK(srcwatch_require("/proc", "proc", err, sizeof(err)) == 0);
	CHECK(srcwatch_require("/proc", "nfs4", err, sizeof(err)) == -EINVAL);
	CHECK_STR_CONTAINS(err, "'/proc'");
	CHECK_STR_CONTAINS(err, "of type proc");
	CHECK_STR_CONTAINS(err, "not nfs4");

	CHECK(dir != NULL);
	if (!dir)
		return;
	CHECK(srcwatch_require(dir, NULL, err, sizeof(err)) == -EINVAL);
	CHECK_STR_CONTAINS(err, dir);
	CHECK_STR_CONTAINS(err, "is not a mount point");
	/* ... and says what it is instead: its file system and mount point. */
	CHECK(srcwatch_lookup(AT_FDCWD, dir, &f) == 0);
	CHECK_STR_CONTAINS(err, f.fstype);
	CHECK_STR_CONTAINS(err, f.mountpoint);
	CHECK(srcwatch_require(dir, "nfs4", err, sizeof(err)) == -EINVAL);
	CHECK_STR_CONTAINS(err, "mount nfs4 there first");
	rmdir(dir);
}

struct lost {
	pthread_mutex_t mu;
	int calls;
	char why[1024];
};

static void on_lost(void *arg, const char *why)
{
	struct lost *l = arg;

	pthread_mutex_lock(&l->mu);
	l->calls++;
	snprintf(l->why, sizeof(l->why), "%s", why);
	pthread_mutex_unlock(&l->mu);
}

/* Wait up to ms for a call; returns the number of calls. */
static int wait_lost(struct lost *l, unsigned ms)
{
	int n = 0;

	for (unsigned t = 0; t <= ms; t += 10) {
		pthread_mutex_lock(&l->mu);
		n = l->calls;
		pthread_mutex_unlock(&l->mu);
		if (n)
			break;
		usleep(10000);
	}
	return n;
}

/* The watched path comes to name another directory (period or poke). */
static void watch_replaced(unsigned period_ms, int poke)
{
	char tmpl[] = "/tmp/efs-test-srcwatch-XXXXXX", src[512], old[512], err[1024];
	struct lost l = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct srcwatch *w = NULL;
	char *dir = mkdtemp(tmpl);
	int fd;

	CHECK(dir != NULL);
	if (!dir)
		return;
	snprintf(src, sizeof(src), "%s/src", dir);
	snprintf(old, sizeof(old), "%s/old", dir);
	CHECK(mkdir(src, 0755) == 0);
	fd = open(src, O_PATH | O_DIRECTORY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(srcwatch_new(&w, src, fd, period_ms, on_lost, &l, err, sizeof(err)) == 0);
	CHECK(w != NULL);
	if (!w)
		goto out;
	CHECK(srcwatch_run(w) == 0);
	/* Unchanged: no call. */
	srcwatch_poke(w);
	CHECK(wait_lost(&l, 300) == 0);
	CHECK(rename(src, old) == 0 && mkdir(src, 0755) == 0);
	if (poke)
		srcwatch_poke(w);
	CHECK(wait_lost(&l, 5000) == 1);
	CHECK_STR_CONTAINS(l.why, src);
	CHECK_STR_CONTAINS(l.why, "now names another directory");
	/* Reported once: the thread has ended. */
	srcwatch_poke(w);
	usleep(200000);
	CHECK(l.calls == 1);
	srcwatch_free(w);
out:
	close(fd);
	rmdir(src);
	rmdir(old);
	rmdir(dir);
}

static void test_watch_gone_and_new_refuses(void)
{
	char tmpl[] = "/tmp/efs-test-srcwatch-XXXXXX", src[512], other[512], err[1024] = "";
	struct lost l = {.mu = PTHREAD_MUTEX_INITIALIZER};
	struct srcwatch *w = NULL;
	char *dir = mkdtemp(tmpl);
	int fd, ofd;

	CHECK(dir != NULL);
	if (!dir)
		return;
	snprintf(src, sizeof(src), "%s/src", dir);
	snprintf(other, sizeof(other), "%s/other", dir);
	CHECK(mkdir(src, 0755) == 0 && mkdir(other, 0755) == 0);
	fd = open(src, O_PATH | O_DIRECTORY | O_CLOEXEC);
	ofd = open(other, O_PATH | O_DIRECTORY | O_CLOEXEC);

	/* A root fd that is not what SOURCE leads to is refused at once. */
	CHECK(srcwatch_new(&w, src, ofd, 50, on_lost, &l, err, sizeof(err)) == -ESTALE);
	CHECK(w == NULL);
	CHECK_STR_CONTAINS(err, "now names another directory");

	/* SOURCE removed: the look cannot tell (the source's error, which reads
	 * return; a restart would not mend it), so no call.  Another directory
	 * made under its name: that is another tree. */
	CHECK(srcwatch_new(&w, src, fd, 50, on_lost, &l, err, sizeof(err)) == 0);
	CHECK(w && srcwatch_run(w) == 0);
	CHECK(rmdir(src) == 0);
	CHECK(wait_lost(&l, 500) == 0);
	CHECK(mkdir(src, 0755) == 0);
	CHECK(wait_lost(&l, 5000) == 1);
	CHECK_STR_CONTAINS(l.why, "now names another directory");
	srcwatch_free(w);
	rmdir(src);

	/* Freed without ever running. */
	CHECK(srcwatch_new(&w, other, ofd, 50, on_lost, &l, err, sizeof(err)) == 0);
	srcwatch_free(w);
	srcwatch_free(NULL);
	srcwatch_poke(NULL);
	close(fd);
	close(ofd);
	rmdir(other);
	rmdir(dir);
}

int main(void)
{
	test_parse_line();
	test_lookup_and_require();
	watch_replaced(50, 0);	   /* found by the period */
	watch_replaced(600000, 1); /* found at once when poked */
	test_watch_gone_and_new_refuses();
	return check_done("test_srcwatch");
}
