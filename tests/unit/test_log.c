/* test_log.c - log.c through a capturing sink and through stderr: levels,
 * the errno variant, log_once, truncation of long lines, the default
 * "efscache: " stderr format, and whole lines from concurrent threads. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "log.h"

#define MAXLINES 64

struct capture {
	unsigned n;
	enum log_level lvl[MAXLINES];
	char line[MAXLINES][1100];
};

static void capture_sink(enum log_level lvl, const char *line, void *arg)
{
	struct capture *c = arg;

	if (c->n < MAXLINES) {
		c->lvl[c->n] = lvl;
		snprintf(c->line[c->n], sizeof(c->line[0]), "%s", line);
	}
	c->n++;
}

static int evaluated;

static int side_effect(void)
{
	return ++evaluated;
}

static void test_levels(void)
{
	struct capture cap = {0};

	log_set_sink(capture_sink, &cap);
	CHECK(log_get_level() == LOG_LVL_INFO); /* the default */
	log_err("e %d", 1);
	log_warn("w %s", "two");
	log_msg(LOG_LVL_INFO, "i");
	log_debug("d %d", side_effect());
	CHECK(cap.n == 3);
	CHECK(cap.lvl[0] == LOG_LVL_ERR && !strcmp(cap.line[0], "e 1"));
	CHECK(cap.lvl[1] == LOG_LVL_WARN && !strcmp(cap.line[1], "w two"));
	CHECK(cap.lvl[2] == LOG_LVL_INFO && !strcmp(cap.line[2], "i"));
	CHECK(evaluated == 0); /* a debug line off costs no argument evaluation */

	log_set_level(LOG_LVL_DEBUG);
	log_debug("d %d", side_effect());
	CHECK(cap.n == 4);
	CHECK(cap.lvl[3] == LOG_LVL_DEBUG && !strcmp(cap.line[3], "d 1"));

	log_set_level(LOG_LVL_ERR);
	log_warn("dropped");
	log_msg(LOG_LVL_INFO, "dropped");
	log_msg(LOG_LVL_ERR, "kept");
	CHECK(cap.n == 5);
	CHECK(!strcmp(cap.line[4], "kept"));
	log_set_level(LOG_LVL_INFO);
	log_set_sink(NULL, NULL);
}

static void test_errno_and_once(void)
{
	struct capture cap = {0};
	bool flag = false;

	log_set_sink(capture_sink, &cap);
	log_errno(LOG_LVL_WARN, ENOENT, "cannot open '%s'", "/x/y");
	CHECK(cap.n == 1);
	CHECK(cap.lvl[0] == LOG_LVL_WARN);
	{
		char want[256];
		snprintf(want, sizeof(want), "cannot open '/x/y': %s", strerror(ENOENT));
		CHECK(!strcmp(cap.line[0], want));
	}
	for (int i = 0; i < 3; i++)
		log_once(flag, LOG_LVL_WARN, "once %d", i);
	CHECK(cap.n == 2);
	CHECK(!strcmp(cap.line[1], "once 0"));
	CHECK(flag);
	log_set_sink(NULL, NULL);
}

/* A line longer than the buffer is cut, never overflows, and is still one
 * NUL-terminated line; the errno variant keeps its errno text. */
static void test_long_line(void)
{
	struct capture cap = {0};
	char *big = malloc(5000);

	memset(big, 'x', 4999);
	big[4999] = '\0';
	log_set_sink(capture_sink, &cap);
	log_msg(LOG_LVL_INFO, "%s", big);
	log_errno(LOG_LVL_ERR, EIO, "%s", big);
	CHECK(cap.n == 2);
	CHECK(strlen(cap.line[0]) == 1023);
	CHECK(strspn(cap.line[0], "x") == 1023);
	/* The errno text survives a long head (the head is cut instead). */
	{
		char tail[128];
		size_t ln = strlen(cap.line[1]), lt;

		snprintf(tail, sizeof(tail), "xx: %s", strerror(EIO));
		lt = strlen(tail);
		CHECK(ln > lt && ln < 1024 && !strcmp(cap.line[1] + ln - lt, tail));
	}
	log_set_sink(NULL, NULL);
	free(big);
}

/* Run fn with stderr going to a temporary file; returns its contents. */
static char *stderr_of(void (*fn)(void))
{
	char path[] = "/tmp/efs-test-log-XXXXXX";
	int fd = mkstemp(path), saved;
	char *out = NULL;
	off_t len;

	if (fd < 0)
		return NULL;
	unlink(path);
	fflush(stderr);
	saved = dup(2);
	dup2(fd, 2);
	fn();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	len = lseek(fd, 0, SEEK_END);
	out = calloc(1, (size_t)len + 1);
	if (out && pread(fd, out, (size_t)len, 0) != len) {
		free(out);
		out = NULL;
	}
	close(fd);
	return out;
}

static void log_two(void)
{
	log_warn("hello %d", 42);
	log_debug("not shown");
	log_errno(LOG_LVL_ERR, EACCES, "open '%s'", "/c");
}

#define NTHREADS 4
#define NPERTHREAD 300

static void *logger_main(void *arg)
{
	long id = (long)arg;

	for (int i = 0; i < NPERTHREAD; i++)
		log_msg(LOG_LVL_INFO, "thread %ld line %d %s", id, i,
			"................................................................");
	return NULL;
}

static void log_threads(void)
{
	pthread_t th[NTHREADS];

	for (long i = 0; i < NTHREADS; i++)
		pthread_create(&th[i], NULL, logger_main, (void *)i);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
}

static void test_stderr(void)
{
	char *out = stderr_of(log_two), want[256];

	CHECK(out != NULL);
	snprintf(want, sizeof(want), "efscache: hello 42\nefscache: open '/c': %s\n",
		 strerror(EACCES));
	CHECK(out && !strcmp(out, want));
	free(out);

	/* Lines of concurrent threads come out whole, one per line. */
	out = stderr_of(log_threads);
	CHECK(out != NULL);
	if (out) {
		unsigned lines = 0, good = 0, seen[NTHREADS] = {0};
		char *save = NULL;

		for (char *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
			long id;
			int i, n = 0;

			lines++;
			if (sscanf(l, "efscache: thread %ld line %d %n", &id, &i, &n) == 2 && n &&
			    id >= 0 && id < NTHREADS && i == (int)seen[id] &&
			    strspn(l + n, ".") == 64 && l[n + 64] == '\0') {
				seen[id]++;
				good++;
			}
		}
		CHECK(lines == NTHREADS * NPERTHREAD);
		CHECK(good == NTHREADS * NPERTHREAD);
	}
	free(out);
}

int main(void)
{
	test_levels();
	test_errno_and_once();
	test_long_line();
	test_stderr();
	return check_done("test_log");
}
