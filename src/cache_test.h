/* cache_test.h - knobs of the cache core that only its unit tests turn: a
 * bound too big to reach cheaply in a test.  The daemon never calls these,
 * and no option reaches them.  Defined in cache.c.
 */
#ifndef EFS_CACHE_TEST_H
#define EFS_CACHE_TEST_H

#include <stdint.h>

struct cache;

/* Bound the bytes write-behind holds at max instead of WB_MAX_BYTES
 * (256 MiB); before the first read. */
void cache_test_set_wb_limit(struct cache *c, uint64_t max);
/* The bytes write-behind holds now: copies of chunks queued or being
 * written. */
uint64_t cache_test_wb_bytes(struct cache *c);

#endif
