/* fuzz_store.c - libFuzzer target: decoding on-disk metadata records.
 *
 * Treats the input as a metadata file: a header and slots.  Decoding must
 * never crash, and whatever it accepts must re-encode to the same bytes
 * (so nothing is accepted that our own writer could not have produced).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char again[STORE_HEADER_SIZE], slotbuf[STORE_SLOT_SIZE];
	struct store_identity id;
	uint32_t cs, n, chk;

	if (size < STORE_HEADER_SIZE)
		return 0;
	if (store_decode_header(data, &id, &cs, &n, &chk) != 0)
		return 0;
	store_encode_header(&id, cs, n, again);
	if (memcmp(again, data, STORE_HEADER_SIZE) != 0)
		abort();
	for (size_t off = STORE_HEADER_SIZE, i = 0; off + STORE_SLOT_SIZE <= size && i < n;
	     off += STORE_SLOT_SIZE, i++) {
		struct store_slot slot;

		if (!store_decode_slot(chk, (uint32_t)i, data + off, &slot))
			continue;
		store_encode_slot(chk, (uint32_t)i, &slot, slotbuf);
		if (memcmp(slotbuf, data + off, STORE_SLOT_SIZE) != 0 || slot.len == 0)
			abort();
	}
	return 0;
}
