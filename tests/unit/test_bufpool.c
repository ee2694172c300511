/* test_bufpool.c - the chunk buffer pool (bufpool.c): buffers are aligned
 * for O_DIRECT and shared by reference; the budget refuses a prefetch
 * (TRY), holds one back until room is given back (WAIT), never a demand
 * read; freed buffers are reused within the budget and unmapped by trim;
 * a large request is mapped for itself; a buffer given back is the last
 * taken again, poisoned meanwhile (ASan), and its old holders' gen no
 * longer matches once it is taken again. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "bufpool.h"
#include "check.h"

#if defined(__SANITIZE_ADDRESS__)
#define ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN 1
#endif
#endif
#ifdef ASAN
#include <sanitizer/asan_interface.h>
#define poisoned(p) __asan_address_is_poisoned(p)
#else
#define poisoned(p) ((void)(p), true)
#endif

#define SZ (64u << 10)

struct waiter {
	struct bufpool *p;
	struct pbuf *got;
	bool done; /* atomic */
};

static void *wait_main(void *arg)
{
	struct waiter *w = arg;

	w->got = bufpool_get(w->p, SZ, BUFPOOL_WAIT);
	__atomic_store_n(&w->done, true, __ATOMIC_RELEASE);
	return NULL;
}

int main(void)
{
	struct bufpool *p;
	struct bufpool_stats st;
	struct pbuf *a, *b, *c, *d, *big;
	struct waiter w;
	pthread_t th;

	CHECK(bufpool_new(&p, SZ, 2 * SZ) == 0);
	a = bufpool_get(p, SZ, BUFPOOL_TRY);
	b = bufpool_get(p, 100, BUFPOOL_TRY);
	CHECK(a && b && a != b);
	CHECK(((uintptr_t)a->data & 4095) == 0 && a->size >= SZ);
	memset(a->data, 1, SZ); /* writable */
	/* The budget is used up: no prefetch, but a demand read. */
	CHECK(bufpool_get(p, SZ, BUFPOOL_TRY) == NULL);
	CHECK(!bufpool_over(p));
	c = bufpool_get(p, SZ, BUFPOOL_DEMAND);
	CHECK(c != NULL);
	CHECK(bufpool_over(p));
	bufpool_stats(p, &st);
	CHECK(st.in_use == 3 * SZ && st.peak == 3 * SZ);

	/* Shared: a reference keeps it in use. */
	bufpool_ref(a);
	bufpool_put(p, a);
	bufpool_stats(p, &st);
	CHECK(st.in_use == 3 * SZ);

	/* A waiter gets a buffer once enough is given back. */
	w = (struct waiter){.p = p};
	CHECK(pthread_create(&th, NULL, wait_main, &w) == 0);
	usleep(20000);
	CHECK(!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE));
	bufpool_put(p, c); /* 2 x SZ in use: still no room */
	usleep(20000);
	CHECK(!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE));
	bufpool_put(p, a); /* the last reference */
	pthread_join(th, NULL);
	CHECK(w.got != NULL);
	bufpool_stats(p, &st);
	CHECK(st.in_use == 2 * SZ);
	/* c was over budget when given back: unmapped, not kept; a was kept
	 * and the waiter got it again. */
	CHECK(st.kept == 0);
	CHECK(st.maps == 3);
	bufpool_put(p, w.got);
	bufpool_put(p, b);
	bufpool_stats(p, &st);
	CHECK(st.in_use == 0 && st.kept == 2 * SZ);

	/* Reused, not mapped again. */
	d = bufpool_get(p, SZ, BUFPOOL_TRY);
	bufpool_stats(p, &st);
	CHECK(d && st.maps == 3);
	bufpool_put(p, d);

	/* Larger than a chunk: mapped for itself, never kept. */
	big = bufpool_get(p, 3 * SZ, BUFPOOL_DEMAND);
	CHECK(big && big->size >= 3 * SZ);
	bufpool_put(p, big);
	bufpool_stats(p, &st);
	CHECK(st.in_use == 0 && st.kept == 2 * SZ);

	/* Trim: only once quiet; then nothing is kept. */
	CHECK(!bufpool_quiet(p)); /* takes since the start */
	CHECK(bufpool_quiet(p));
	CHECK(bufpool_trim(p) == 2 * SZ);
	bufpool_stats(p, &st);
	CHECK(st.kept == 0);

	/* Misuse shows where it happens.  a and b given back in that order
	 * come back in that order (the longest time free), poisoned while
	 * free; a holder of a from before no longer holds it. */
	a = bufpool_get(p, SZ, BUFPOOL_TRY);
	b = bufpool_get(p, SZ, BUFPOOL_TRY);
	CHECK(a && b);
	unsigned ga = a->gen;

	CHECK(bufpool_held(a, ga));
	bufpool_put(p, a);
	bufpool_put(p, b);
	CHECK(!bufpool_held(a, ga));
	CHECK(poisoned(a->data) && poisoned((char *)b->data + SZ - 1));
	c = bufpool_get(p, SZ, BUFPOOL_TRY);
	d = bufpool_get(p, SZ, BUFPOOL_TRY);
	CHECK(c == a && d == b);
	CHECK(!bufpool_held(c, ga) && bufpool_held(c, c->gen));
	memset(c->data, 2, SZ); /* no longer poisoned */
	memset(d->data, 2, SZ);
	bufpool_put(p, c);
	bufpool_put(p, d);
	bufpool_free(p);
	return check_done("bufpool");
}
