/* checksum.h - the only door to xxHash.
 *
 * XXH3 64-bit through libxxhash's runtime dispatch (AVX2 where the CPU has
 * it).  Used for chunk data, metadata records and cache keys.
 */
#ifndef EFS_CHECKSUM_H
#define EFS_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

uint64_t csum64(const void *data, size_t len);
uint64_t csum64_seed(const void *data, size_t len, uint64_t seed);
/* 128-bit digest as two words, for cache keys. */
void csum128(const void *data, size_t len, uint64_t out[2]);

#endif
