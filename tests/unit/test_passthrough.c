/* test_passthrough.c - passthrough.c's backing ids against a fake of
 * libfuse's passthrough calls: no mount, no kernel.
 *
 * The fake is this program's fuse_passthrough_open and
 * fuse_passthrough_close, which the static library calls instead of
 * libfuse's: it hands out ids 1, 2, 3... and counts the closes of each,
 * and those made without a request (which libfuse cannot do: the ioctl
 * goes through the request's session).  The witness is that every id
 * opened is closed exactly once, with a request.  Built against libfuse
 * < 3.17 there is no passthrough to test: the program exits 77 (skipped);
 * tests/run.sh runs it in its libfuse 3.17 configuration (suite
 * passthrough).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "passthrough.h"
#include "stats.h"

#ifdef EFS_HAVE_PASSTHROUGH
#include <fuse_lowlevel.h>

/* ---- the fake: libfuse's backing id calls -------------------------------- */

#define MAX_IDS 32

static int next_id = 1;
static unsigned closes[MAX_IDS];   /* by id */
static unsigned bad_closes;        /* without a request, or of an id never opened */
static struct efs_stats stats;
static int req_storage;
static void *const REQ = &req_storage; /* a request (the fake never looks inside) */

int fuse_passthrough_open(fuse_req_t req, int fd)
{
	if (!req || fd < 0 || next_id == MAX_IDS)
		return 0;
	return next_id++;
}

int fuse_passthrough_close(fuse_req_t req, int backing_id)
{
	if (!req || backing_id <= 0 || backing_id >= next_id) {
		bad_closes++;
		return -1;
	}
	closes[backing_id]++;
	return 0;
}

/* Every id opened so far closed exactly once, and nothing else closed. */
static bool all_closed_once(void)
{
	for (int id = 1; id < next_id; id++)
		if (closes[id] != 1)
			return false;
	return bad_closes == 0;
}

/* ---- the tests ----------------------------------------------------------- */

/* The data file of a complete record: size bytes. */
static int data_file(uint64_t size)
{
	char p[] = "/tmp/efs-test-pt-XXXXXX";
	int fd = mkstemp(p);

	CHECK(fd >= 0);
	if (fd < 0)
		return -1;
	unlink(p);
	CHECK(ftruncate(fd, (off_t)size) == 0);
	return fd;
}

/* A read-only open of an eligible file, answered as the kernel's OPEN would
 * be (req may be NULL only in a release). */
static int open_pt(struct pt_entry *pe, int fd, uint64_t size, int *id)
{
	return pt_open_locked(pe, REQ, true, true, true, fd, size, id);
}

/* The ordinary life: the first open gets an id, the next one shares it,
 * the last release closes it. */
static void test_shared_id(int fd, uint64_t size)
{
	struct pt_entry a = {0};
	int id1, id2;

	CHECK(open_pt(&a, fd, size, &id1) == PT_PASSTHROUGH);
	CHECK(id1 > 0 && pt_holds(&a));
	CHECK(open_pt(&a, fd, size, &id2) == PT_PASSTHROUGH);
	CHECK(id2 == id1);
	pt_release_locked(&a, REQ, PT_PASSTHROUGH);
	CHECK(closes[id1] == 0 && pt_holds(&a));
	pt_release_locked(&a, REQ, PT_PASSTHROUGH);
	CHECK(!pt_holds(&a) && a.backing_id == 0);
	CHECK(all_closed_once());
}

/* Opens whose reply failed (the opener was interrupted: fsops_file.c
 * releases them with no request) leave their ids to close at the next call
 * that has a request.  Two of them at once, of two files, and the next
 * call is about a third file: both must be closed there, neither lost
 * (the kernel would keep each data file open until the unmount). */
static void test_failed_replies(int fd, uint64_t size)
{
	struct pt_entry a = {0}, b = {0}, c = {0};
	int ida, idb, idc, idx;

	CHECK(open_pt(&a, fd, size, &ida) == PT_PASSTHROUGH);
	CHECK(open_pt(&b, fd, size, &idb) == PT_PASSTHROUGH);
	CHECK(ida > 0 && idb > 0 && ida != idb);
	pt_release_locked(&a, NULL, PT_PASSTHROUGH);
	pt_release_locked(&b, NULL, PT_PASSTHROUGH);
	CHECK(!pt_holds(&a) && !pt_holds(&b));
	CHECK(closes[ida] == 0 && closes[idb] == 0); /* nothing to close them with */
	CHECK(bad_closes == 0);

	/* The next open, of another file, has a request. */
	CHECK(open_pt(&c, fd, size, &idc) == PT_PASSTHROUGH);
	CHECK(closes[ida] == 1 && closes[idb] == 1);
	pt_release_locked(&c, REQ, PT_PASSTHROUGH);

	/* Or at a release that has one: of a cached open of c, made before. */
	CHECK(pt_open_locked(&c, REQ, true, true, false, fd, size, &idx) == PT_CACHED);
	CHECK(open_pt(&a, fd, size, &ida) == PT_PASSTHROUGH);
	pt_release_locked(&a, NULL, PT_PASSTHROUGH);
	CHECK(closes[ida] == 0);
	pt_release_locked(&c, REQ, PT_CACHED);
	CHECK(closes[ida] == 1);
	CHECK(all_closed_once());
}

int main(void)
{
	const uint64_t size = 3 * 65536 + 17;
	struct fuse_conn_info conn;
	int fd = data_file(size);

	pt_configure(true, true, &stats); /* -o ro,passthrough=auto */
	memset(&conn, 0, sizeof(conn));
	conn.capable = FUSE_CAP_PASSTHROUGH;
	pt_conn_init(&conn);
	CHECK(pt_enabled());

	test_shared_id(fd, size);
	test_failed_replies(fd, size);
	if (fd >= 0)
		close(fd);
	return check_done("test_passthrough");
}

#else

int main(void)
{
	printf("test_passthrough: built against libfuse < 3.17: no passthrough to test\n");
	return 77;
}

#endif
