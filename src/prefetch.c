/* prefetch.c - bounded job queue and worker threads.
 *
 * State: a ring of jobs under p->mu; workers sleep on p->cv.  Jobs run
 * without the lock held.  Invariant: every submitted job is either run or
 * handed to the drop callback at shutdown, so its fd is always closed.
 */
#include "prefetch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct prefetch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct prefetch_job *ring; /* protected by mu */
	unsigned cap, head, count; /* protected by mu */
	unsigned running;          /* jobs being run; protected by mu */
	pthread_cond_t idle_cv;    /* count and running reached 0 */
	bool stop;                 /* protected by mu */
	unsigned workers;
	unsigned started;
	pthread_t *threads;
	prefetch_run_fn run;
	void *arg;
};

int prefetch_new(struct prefetch **out, unsigned workers, unsigned max_queued,
		 prefetch_run_fn run, void *arg)
{
	struct prefetch *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->cap = max_queued ? max_queued : 1;
	p->ring = calloc(p->cap, sizeof(*p->ring));
	p->threads = calloc(workers ? workers : 1, sizeof(*p->threads));
	if (!p->ring || !p->threads) {
		free(p->ring);
		free(p->threads);
		free(p);
		return -ENOMEM;
	}
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	pthread_cond_init(&p->idle_cv, NULL);
	p->workers = workers;
	p->run = run;
	p->arg = arg;
	*out = p;
	return 0;
}

static void *worker(void *arg)
{
	struct prefetch *p = arg;
	struct prefetch_job job;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->count && !p->stop)
			pthread_cond_wait(&p->cv, &p->mu);
		if (p->stop)
			break;
		job = p->ring[p->head];
		p->head = (p->head + 1) % p->cap;
		p->count--;
		p->running++;
		pthread_mutex_unlock(&p->mu);
		p->run(&job, p->arg);
		if (job.fd >= 0)
			close(job.fd);
		pthread_mutex_lock(&p->mu);
		if (!--p->running && !p->count)
			pthread_cond_broadcast(&p->idle_cv);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int prefetch_start(struct prefetch *p)
{
	for (; p->started < p->workers; p->started++) {
		int r = pthread_create(&p->threads[p->started], NULL, worker, p);
		if (r != 0)
			return -r;
	}
	return 0;
}

bool prefetch_submit(struct prefetch *p, const struct prefetch_job *job)
{
	bool ok = false;

	pthread_mutex_lock(&p->mu);
	if (p->started && !p->stop && p->count < p->cap) {
		p->ring[(p->head + p->count) % p->cap] = *job;
		p->count++;
		pthread_cond_signal(&p->cv);
		ok = true;
	}
	pthread_mutex_unlock(&p->mu);
	return ok;
}

void prefetch_drain(struct prefetch *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	while (p->started && !p->stop && (p->count || p->running))
		pthread_cond_wait(&p->idle_cv, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

void prefetch_free(struct prefetch *p, void (*drop)(const struct prefetch_job *, void *))
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->started; i++)
		pthread_join(p->threads[i], NULL);
	while (p->count) {
		if (drop)
			drop(&p->ring[p->head], p->arg);
		if (p->ring[p->head].fd >= 0)
			close(p->ring[p->head].fd);
		p->head = (p->head + 1) % p->cap;
		p->count--;
	}
	pthread_cond_destroy(&p->cv);
	pthread_cond_destroy(&p->idle_cv);
	pthread_mutex_destroy(&p->mu);
	free(p->ring);
	free(p->threads);
	free(p);
}
