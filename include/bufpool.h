/* bufpool.h - the chunk buffers of fetches, write-behind and replies.
 *
 * Every byte the cache holds in memory on the way from the source to the
 * reply and the data file is in a buffer of this pool, under one budget:
 * a demand read (a reader waiting for its reply) always gets a buffer, a
 * prefetch waits for room, and whoever would queue more work (write-behind)
 * asks bufpool_over() first.  Buffers are whole pages from mmap, aligned
 * for O_DIRECT, and reference-counted: the reply and the write-behind of
 * one fetch share one buffer, no copy.  Freed buffers are kept for reuse
 * (a fresh mapping per chunk costs page faults and zeroing) while within
 * the budget, and given back to the system by bufpool_trim when the pool
 * was idle since the last trim.  Locks: one mutex, a leaf.
 */
#ifndef EFS_BUFPOOL_H
#define EFS_BUFPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bufpool;

struct pbuf {
	void *data;        /* page-aligned, at least `size` bytes */
	size_t size;       /* bytes mapped */
	unsigned refs;     /* atomic */
	unsigned gen;      /* bumped each time it is taken (bufpool_held) */
	struct pbuf *next; /* the free list; protected by the pool's mutex */
};

enum bufpool_mode {
	BUFPOOL_DEMAND, /* always a buffer (NULL only without memory) */
	BUFPOOL_WAIT,   /* wait until the budget has room (hold no lock!) */
	BUFPOOL_TRY,    /* NULL when the budget is used up */
};

/* buf_size: the usual request (a chunk); budget: bytes of buffers in use
 * beyond which only demand reads get more.  0 or -errno. */
int bufpool_new(struct bufpool **out, size_t buf_size, uint64_t budget);
void bufpool_free(struct bufpool *p);
/* A buffer of at least len bytes with one reference, or NULL. */
struct pbuf *bufpool_get(struct bufpool *p, size_t len, enum bufpool_mode mode);
void bufpool_ref(struct pbuf *b);
/* A holder that noted b->gen when it got its reference still has the
 * buffer it got (not given back and taken again since): for asserts. */
bool bufpool_held(const struct pbuf *b, unsigned gen);
/* Drop a reference; the last gives the buffer back. */
void bufpool_put(struct bufpool *p, struct pbuf *b);
/* The buffers in use exceed the budget: queue nothing more. */
bool bufpool_over(struct bufpool *p);
/* True if no buffer was taken since the last call (the periodic sweep
 * asks each second before it gives memory back). */
bool bufpool_quiet(struct bufpool *p);
/* Unmap the kept free buffers.  Returns the bytes unmapped. */
uint64_t bufpool_trim(struct bufpool *p);

struct bufpool_stats {
	uint64_t in_use;     /* bytes of buffers taken and not given back */
	uint64_t kept;       /* bytes of free buffers kept for reuse */
	uint64_t peak;       /* most bytes in use at once */
	uint64_t budget;
	uint64_t maps;       /* buffers mapped so far */
};
void bufpool_stats(struct bufpool *p, struct bufpool_stats *st);

#endif
