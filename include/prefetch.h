/* prefetch.h - a fixed pool of worker threads running fetch jobs.
 *
 * The cache queues "fetch chunk idx of entry e from fd" jobs when it sees a
 * sequential reader; workers run them through a callback, in parallel, so a
 * cold sequential read is bound by the source's aggregate bandwidth rather
 * than by one stream's latency.  The queue is bounded: a job that does not
 * fit is dropped (the reader will fetch the chunk itself).  The same pool
 * type writes fetched chunks behind the reader's reply (write-behind).
 */
#ifndef EFS_PREFETCH_H
#define EFS_PREFETCH_H

#include <stdbool.h>
#include <stdint.h>

struct prefetch_job {
	void *entry;   /* the cache entry (the job holds a reference) */
	void *chunk;   /* write-behind: the chunk, BUSY and owned by the job */
	uint32_t idx;  /* chunk index */
	uint64_t tag;  /* the entry's generation when queued; write-behind: buf's gen */
	int fd;        /* source fd owned by the job (closed after it runs), or -1 */
	void *buf;     /* write-behind: the chunk's bytes, owned by the job */
	uint32_t len;
	uint64_t hash;
	bool push;     /* put buf's len bytes in the kernel's page cache (a
			* chunk its reader fetched itself, cache_read.c) */
};

typedef void (*prefetch_run_fn)(const struct prefetch_job *job, void *arg);

struct prefetch;

/* workers == 0 makes a pool that refuses every job.  Returns 0 or -errno. */
int prefetch_new(struct prefetch **out, unsigned workers, unsigned max_queued,
		 prefetch_run_fn run, void *arg);
/* Start the threads (after daemonizing). */
int prefetch_start(struct prefetch *p);
/* Queue a job; false if the pool is full or stopped (the job's fd is then
 * not consumed). */
bool prefetch_submit(struct prefetch *p, const struct prefetch_job *job);
/* Wait until every queued job has run (write-behind at unmount). */
void prefetch_drain(struct prefetch *p);
/* Stop the workers; pending jobs are dropped through `drop`. */
void prefetch_free(struct prefetch *p, void (*drop)(const struct prefetch_job *, void *));

#endif
