/* bufpool.c - the chunk buffer pool (bufpool.h).
 *
 * State under p->mu: the free list of kept buffers (all of buf_size), the
 * bytes in use and kept, a count of takes (for trim's idleness test).
 * Waiters for room (BUFPOOL_WAIT) sleep on p->cv, woken by every put.
 * Invariant: kept + in_use <= max(budget, in_use): a buffer given back
 * while the pool holds more than the budget is unmapped at once.  A
 * request larger than buf_size is mapped for itself and unmapped when
 * given back (counted in use meanwhile).
 *
 * A reference given back early (a holder still reading a buffer another
 * user now fills) shows as wrong bytes far from its cause, so misuse is
 * made to show where it happens: the free list is FIFO (a buffer given
 * back is the last one taken again); in ASan builds its bytes are poisoned
 * while it is free, so a late reader stops at its access with its stack;
 * each take bumps b->gen, which holders record and check (bufpool_held);
 * a put past zero aborts.
 */
#include "bufpool.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define POOL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_ASAN 1
#endif
#endif
#ifdef POOL_ASAN
#include <sanitizer/asan_interface.h>
#define poison(b) ASAN_POISON_MEMORY_REGION((b)->data, (b)->size)
#define unpoison(b) ASAN_UNPOISON_MEMORY_REGION((b)->data, (b)->size)
#else
#define poison(b) ((void)(b))
#define unpoison(b) ((void)(b))
#endif

#define PAGE 4096u

struct bufpool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	size_t buf_size;
	uint64_t budget;
	struct pbuf *free_list; /* oldest first; protected by mu */
	struct pbuf *free_tail; /* newest; protected by mu */
	uint64_t in_use, kept;  /* bytes; protected by mu */
	uint64_t peak, maps;    /* protected by mu */
	uint64_t takes;         /* protected by mu */
	uint64_t takes_at_trim; /* takes at the last bufpool_quiet; mu */
};

static size_t round_page(size_t n)
{
	return (n + PAGE - 1) & ~(size_t)(PAGE - 1);
}

int bufpool_new(struct bufpool **out, size_t buf_size, uint64_t budget)
{
	struct bufpool *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	p->buf_size = round_page(buf_size ? buf_size : 1);
	p->budget = budget;
	*out = p;
	return 0;
}

static void unmap(struct pbuf *b)
{
	munmap(b->data, b->size);
	free(b);
}

void bufpool_free(struct bufpool *p)
{
	struct pbuf *b;

	if (!p)
		return;
	while ((b = p->free_list)) {
		p->free_list = b->next;
		unpoison(b);
		unmap(b);
	}
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

static struct pbuf *map(size_t size)
{
	struct pbuf *b = malloc(sizeof(*b));

	if (!b)
		return NULL;
	b->data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b->data == MAP_FAILED) {
		free(b);
		return NULL;
	}
	b->size = size;
	b->gen = 0;
	b->next = NULL;
	return b;
}

struct pbuf *bufpool_get(struct bufpool *p, size_t len, enum bufpool_mode mode)
{
	size_t size = len > p->buf_size ? round_page(len) : p->buf_size;
	struct pbuf *b = NULL;

	pthread_mutex_lock(&p->mu);
	while (mode != BUFPOOL_DEMAND && p->in_use + size > p->budget && p->in_use) {
		if (mode == BUFPOOL_TRY) {
			pthread_mutex_unlock(&p->mu);
			return NULL;
		}
		pthread_cond_wait(&p->cv, &p->mu);
	}
	p->takes++;
	p->in_use += size;
	if (p->in_use > p->peak)
		p->peak = p->in_use;
	if (size == p->buf_size && (b = p->free_list)) {
		p->free_list = b->next;
		if (!p->free_list)
			p->free_tail = NULL;
		p->kept -= b->size;
		unpoison(b);
	}
	pthread_mutex_unlock(&p->mu);
	if (!b) {
		b = map(size);
		pthread_mutex_lock(&p->mu);
		if (b)
			p->maps++;
		else
			p->in_use -= size;
		pthread_mutex_unlock(&p->mu);
		if (!b)
			return NULL;
	}
	b->gen++;
	__atomic_store_n(&b->refs, 1, __ATOMIC_RELAXED);
	return b;
}

bool bufpool_held(const struct pbuf *b, unsigned gen)
{
	return __atomic_load_n(&b->refs, __ATOMIC_RELAXED) && b->gen == gen;
}

void bufpool_ref(struct pbuf *b)
{
	__atomic_fetch_add(&b->refs, 1, __ATOMIC_RELAXED);
}

void bufpool_put(struct bufpool *p, struct pbuf *b)
{
	unsigned left;
	bool keep;

	if (!b)
		return;
	left = __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL);
	if (left == UINT_MAX) {
		/* Given back once more than it was taken: someone used it
		 * after its last reference went, and may have read another
		 * chunk's bytes from it.  A bug of ours: stop here. */
		log_err("bufpool: a buffer was given back once too often");
		abort();
	}
	if (left)
		return;
	pthread_mutex_lock(&p->mu);
	p->in_use -= b->size;
	keep = b->size == p->buf_size && p->in_use + p->kept + b->size <= p->budget;
	if (keep) {
		b->next = NULL;
		if (p->free_tail)
			p->free_tail->next = b;
		else
			p->free_list = b;
		p->free_tail = b;
		p->kept += b->size;
		poison(b);
	}
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	if (!keep)
		unmap(b);
}

bool bufpool_over(struct bufpool *p)
{
	bool over;

	pthread_mutex_lock(&p->mu);
	over = p->in_use > p->budget;
	pthread_mutex_unlock(&p->mu);
	return over;
}

bool bufpool_quiet(struct bufpool *p)
{
	bool quiet;

	pthread_mutex_lock(&p->mu);
	quiet = p->takes == p->takes_at_trim;
	p->takes_at_trim = p->takes;
	pthread_mutex_unlock(&p->mu);
	return quiet;
}

uint64_t bufpool_trim(struct bufpool *p)
{
	struct pbuf *list, *b;
	uint64_t bytes;

	pthread_mutex_lock(&p->mu);
	list = p->free_list;
	bytes = p->kept;
	p->free_list = p->free_tail = NULL;
	p->kept = 0;
	pthread_mutex_unlock(&p->mu);
	while ((b = list)) {
		list = b->next;
		unpoison(b);
		unmap(b);
	}
	return bytes;
}

void bufpool_stats(struct bufpool *p, struct bufpool_stats *st)
{
	pthread_mutex_lock(&p->mu);
	st->in_use = p->in_use;
	st->kept = p->kept;
	st->peak = p->peak;
	st->budget = p->budget;
	st->maps = p->maps;
	pthread_mutex_unlock(&p->mu);
}
