/* test_fsinfo.c - fsinfo.c: cache_dir in RAM is recognised, also before it
 * exists; a disk or /proc is not. */
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/vfs.h>

#include "check.h"
#include "fsinfo.h"

int main(void)
{
	struct statfs sf;
	char msg[512] = "";

	/* /dev/shm is a tmpfs on every Linux system with glibc's POSIX shm. */
	if (statfs("/dev/shm", &sf) == 0 && sf.f_type == TMPFS_MAGIC) {
		CHECK(fsinfo_ram_warning("cache_dir", "/dev/shm/efscache/not/yet", msg,
					 sizeof(msg)) == 1);
		CHECK_STR_CONTAINS(msg, "cache_dir '/dev/shm/efscache/not/yet' is on tmpfs, in RAM");
		CHECK(fsinfo_ram_warning("cache_dir", "/dev/shm", msg, 16) == 1 &&
		      strlen(msg) == 15); /* truncated, terminated */
	} else {
		printf("# /dev/shm is not a tmpfs here: the positive case is not checked\n");
	}
	msg[0] = '\0';
	CHECK(fsinfo_ram_warning("cache_dir", "/proc/self", msg, sizeof(msg)) == 0);
	CHECK(msg[0] == '\0');
	/* The build directory is on a disk (or an overlay), never in RAM in CI;
	 * and a path whose first part exists is checked there. */
	if (statfs(".", &sf) == 0 && sf.f_type != TMPFS_MAGIC && sf.f_type != RAMFS_MAGIC)
		CHECK(fsinfo_ram_warning("cache_dir", "./no/such/dir", msg, sizeof(msg)) == 0);
	return check_done("test_fsinfo");
}
