/* fuzz_dirindex.c - libFuzzer target: decoding directory index snapshots
 * (dirindex.h).
 *
 * The input is a snapshot as read from cache_dir, asked for as the
 * directory its header names.  Decoding must never crash, and whatever it
 * accepts must re-encode to the same bytes (nothing is accepted that our
 * own writer could not have produced) and find each of its names.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dirindex.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dix_dir *d;
	uint64_t ino = 0;
	void *again;
	size_t len;

	if (size < 24)
		return 0;
	for (int i = 0; i < 8; i++)
		ino |= (uint64_t)data[16 + i] << (8 * i);
	if (dix_decode(data, size, 1, ino, &d) != 0)
		return 0;
	if (dix_encode(d, &again, &len) != 0)
		abort();
	if (len != size || memcmp(again, data, size) != 0)
		abort();
	for (uint32_t i = 0; i < d->n; i++)
		if (dix_find(d, dix_name(d, &d->ent[i]), d->ent[i].name_len) != &d->ent[i])
			abort();
	free(again);
	dix_dir_free(d);
	return 0;
}
