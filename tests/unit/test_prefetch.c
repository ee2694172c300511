/* test_prefetch.c - the worker pool of prefetch.c, no cache: jobs run with
 * their fields intact and their fds closed after, the queue bound, drain
 * waits for every job, and shutdown with jobs queued hands each one to the
 * drop callback (every submitted job is run or dropped, exactly once, and
 * its fd is always closed). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "prefetch.h"

#define MAXJOBS 4096

struct rec {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool gate_closed;      /* jobs with idx 0 wait while set */
	unsigned at_gate;      /* jobs waiting at the gate */
	unsigned ran[MAXJOBS]; /* times job idx was run */
	unsigned dropped[MAXJOBS];
	unsigned bad_fields;
};

/* Fields every job carries, derived from its index. */
static struct prefetch_job job_of(struct rec *r, uint32_t idx, int fd)
{
	return (struct prefetch_job){.entry = r,
				     .idx = idx,
				     .tag = 1000u + idx,
				     .fd = fd,
				     .buf = (void *)(uintptr_t)(idx + 1),
				     .len = idx * 3,
				     .hash = 0xabcdef00u + idx};
}

static void run(const struct prefetch_job *job, void *arg)
{
	struct rec *r = arg;
	struct prefetch_job want = job_of(r, job->idx, job->fd);

	pthread_mutex_lock(&r->mu);
	if (job->idx >= MAXJOBS || job->entry != want.entry || job->tag != want.tag ||
	    job->buf != want.buf || job->len != want.len || job->hash != want.hash) {
		r->bad_fields++;
		pthread_mutex_unlock(&r->mu);
		return;
	}
	if (job->idx == 0) {
		r->at_gate++;
		pthread_cond_broadcast(&r->cv);
		while (r->gate_closed)
			pthread_cond_wait(&r->cv, &r->mu);
		r->at_gate--;
	}
	pthread_mutex_unlock(&r->mu);
	/* Some work, so that a drain that does not wait would be seen. */
	usleep(500);
	pthread_mutex_lock(&r->mu);
	r->ran[job->idx]++;
	pthread_mutex_unlock(&r->mu);
}

static void drop(const struct prefetch_job *job, void *arg)
{
	struct rec *r = arg;

	pthread_mutex_lock(&r->mu);
	if (job->idx < MAXJOBS)
		r->dropped[job->idx]++;
	pthread_mutex_unlock(&r->mu);
}

static void rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
}

static void rec_fini(struct rec *r)
{
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
}

static void wait_at_gate(struct rec *r, unsigned n)
{
	pthread_mutex_lock(&r->mu);
	while (r->at_gate < n)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
}

static void open_gate(struct rec *r)
{
	pthread_mutex_lock(&r->mu);
	r->gate_closed = false;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

/* Each job gets a write end of one pipe: the read end sees EOF only once
 * every job's fd was closed. */
static bool all_write_ends_closed(int rfd)
{
	char c;
	ssize_t n = read(rfd, &c, 1);

	return n == 0;
}

/* Jobs run on several workers, each exactly once, with their fields, and
 * drain returns only when all have run. */
static void test_run_and_drain(void)
{
	struct prefetch *p;
	struct rec r;
	int pfd[2];
	const unsigned n = 64;
	unsigned once = 0;

	rec_init(&r);
	CHECK(pipe2(pfd, O_CLOEXEC | O_NONBLOCK) == 0);
	CHECK(prefetch_new(&p, 3, n, run, &r) == 0);

	/* Not started: refused, and the fd stays the caller's. */
	{
		struct prefetch_job j = job_of(&r, 1, pfd[1]);
		CHECK(!prefetch_submit(p, &j));
		CHECK(fcntl(pfd[1], F_GETFD) >= 0);
	}
	CHECK(prefetch_start(p) == 0);
	for (unsigned i = 1; i <= n; i++) {
		struct prefetch_job j = job_of(&r, i, fcntl(pfd[1], F_DUPFD_CLOEXEC, 0));
		CHECK(j.fd >= 0);
		CHECK(prefetch_submit(p, &j));
	}
	close(pfd[1]);
	prefetch_drain(p);
	pthread_mutex_lock(&r.mu);
	for (unsigned i = 1; i <= n; i++)
		once += r.ran[i] == 1;
	pthread_mutex_unlock(&r.mu);
	CHECK(once == n);
	CHECK(r.bad_fields == 0);
	CHECK(all_write_ends_closed(pfd[0]));

	/* Drain of an idle pool returns at once; the pool takes jobs again. */
	prefetch_drain(p);
	{
		struct prefetch_job j = job_of(&r, 1, -1);
		CHECK(prefetch_submit(p, &j));
	}
	prefetch_drain(p);
	CHECK(r.ran[1] == 2);
	prefetch_free(p, drop);
	for (unsigned i = 0; i <= n; i++)
		CHECK(r.dropped[i] == 0);
	close(pfd[0]);
	rec_fini(&r);
}

/* The queue holds max_queued jobs beyond the ones running. */
static void test_queue_bound(void)
{
	struct prefetch *p;
	struct rec r;
	const unsigned cap = 4;
	unsigned accepted = 0;

	rec_init(&r);
	r.gate_closed = true;
	CHECK(prefetch_new(&p, 1, cap, run, &r) == 0);
	CHECK(prefetch_start(p) == 0);
	{
		struct prefetch_job j = job_of(&r, 0, -1);
		CHECK(prefetch_submit(p, &j));
	}
	wait_at_gate(&r, 1); /* the worker is busy: the queue is empty */
	for (unsigned i = 1; i <= cap + 3; i++) {
		struct prefetch_job j = job_of(&r, i, -1);
		accepted += prefetch_submit(p, &j);
	}
	CHECK(accepted == cap);
	open_gate(&r);
	prefetch_drain(p);
	for (unsigned i = 0; i <= cap; i++)
		CHECK(r.ran[i] == 1);
	CHECK(r.ran[cap + 1] == 0);
	prefetch_free(p, drop);
	rec_fini(&r);
}

struct freer {
	struct prefetch *p;
	struct rec *r;
};

static void *free_main(void *arg)
{
	struct freer *f = arg;

	prefetch_free(f->p, drop);
	return NULL;
}

/* Shutdown while a job runs and others wait: the running one finishes, the
 * queued ones are dropped (not run), every fd is closed. */
static void test_shutdown_with_queued(void)
{
	struct prefetch *p;
	struct rec r;
	struct freer f;
	pthread_t th;
	int pfd[2];
	unsigned submitted = 0, ran = 0, dropped = 0, twice = 0;

	rec_init(&r);
	r.gate_closed = true;
	CHECK(pipe2(pfd, O_CLOEXEC | O_NONBLOCK) == 0);
	CHECK(prefetch_new(&p, 2, MAXJOBS, run, &r) == 0);
	CHECK(prefetch_start(p) == 0);
	/* Two jobs 0 hold both workers at the gate (they run in parallel). */
	for (unsigned k = 0; k < 2; k++) {
		struct prefetch_job j = job_of(&r, 0, fcntl(pfd[1], F_DUPFD_CLOEXEC, 0));
		CHECK(prefetch_submit(p, &j));
	}
	wait_at_gate(&r, 2);
	for (unsigned i = 1; i <= 10; i++) {
		struct prefetch_job j = job_of(&r, i, fcntl(pfd[1], F_DUPFD_CLOEXEC, 0));
		CHECK(prefetch_submit(p, &j));
		submitted = i;
	}

	/* Shut down from another thread (it waits for the running jobs); the
	 * pool refuses jobs from the moment it stops. */
	f = (struct freer){.p = p, .r = &r};
	CHECK(pthread_create(&th, NULL, free_main, &f) == 0);
	for (;;) {
		struct prefetch_job j =
		    job_of(&r, submitted + 1, fcntl(pfd[1], F_DUPFD_CLOEXEC, 0));
		if (!prefetch_submit(p, &j)) {
			close(j.fd); /* refused: still ours */
			break;
		}
		if (++submitted >= MAXJOBS - 1)
			break;
		sched_yield();
	}
	close(pfd[1]);
	open_gate(&r);
	pthread_join(th, NULL);

	CHECK(r.ran[0] == 2);
	for (unsigned i = 1; i <= submitted; i++) {
		ran += r.ran[i];
		dropped += r.dropped[i];
		twice += r.ran[i] + r.dropped[i] != 1;
	}
	CHECK(twice == 0);
	CHECK(ran == 0); /* stopped before the gate opened */
	CHECK(dropped == submitted);
	CHECK(r.dropped[0] == 0);
	CHECK(all_write_ends_closed(pfd[0]));
	close(pfd[0]);
	rec_fini(&r);
}

/* workers == 0: a pool that refuses every job. */
static void test_no_workers(void)
{
	struct prefetch *p;
	struct rec r;
	struct prefetch_job j;

	rec_init(&r);
	j = job_of(&r, 1, -1);
	CHECK(prefetch_new(&p, 0, 8, run, &r) == 0);
	CHECK(prefetch_start(p) == 0);
	CHECK(!prefetch_submit(p, &j));
	prefetch_drain(p);
	prefetch_free(p, drop);
	CHECK(r.ran[1] == 0 && r.dropped[1] == 0);
	prefetch_drain(NULL);
	prefetch_free(NULL, drop);
	rec_fini(&r);
}

int main(void)
{
	test_run_and_drain();
	test_queue_bound();
	test_shutdown_with_queued();
	test_no_workers();
	return check_done("test_prefetch");
}
