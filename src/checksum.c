/* checksum.c - XXH3 wrappers; the only includer of xxhash headers.
 *
 * Stateless.  The dispatch entry points pick the widest SIMD the CPU has at
 * run time (~30 GB/s with AVX2), so hashing a chunk as it arrives from the
 * source costs far less than fetching it.
 */
#include "checksum.h"

#include <xxh_x86dispatch.h>

uint64_t csum64(const void *data, size_t len)
{
	return XXH3_64bits_dispatch(data, len);
}

uint64_t csum64_seed(const void *data, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed_dispatch(data, len, seed);
}

void csum128(const void *data, size_t len, uint64_t out[2])
{
	XXH128_hash_t h = XXH3_128bits_dispatch(data, len);

	out[0] = h.high64;
	out[1] = h.low64;
}
