/* test_cache.c - cache setup failures, no mount. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "check.h"

/* cache_new must fail cleanly when the caller wants no message (err NULL):
 * it used to write the default message through err unconditionally. */
static void test_new_without_err(void)
{
	char dir[] = "/tmp/efs-test-cache-XXXXXX", file[64], err[256];
	struct efs_config cfg;
	struct efs_stats stats;
	struct cache *c = NULL;
	const struct cache_source src = {0}; /* never reached: cache_dir fails first */
	FILE *f;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(file, sizeof(file), "%s/not-a-dir", dir);
	f = fopen(file, "w");
	CHECK(f != NULL);
	if (f)
		fclose(f);
	memset(&cfg, 0, sizeof(cfg));
	memset(&stats, 0, sizeof(stats));
	cfg.source = dir;
	cfg.cache_dir = file;
	cfg.cache_size = 1 << 30;
	cfg.chunk_size = 1 << 20;
	CHECK(cache_new(&c, &cfg, &src, &stats, NULL, 0) < 0);
	CHECK(cache_new(&c, &cfg, &src, &stats, err, 0) < 0);
	err[0] = '\0';
	CHECK(cache_new(&c, &cfg, &src, &stats, err, sizeof(err)) < 0);
	CHECK_STR_CONTAINS(err, "not-a-dir");
	unlink(file);
	rmdir(dir);
}

int main(void)
{
	test_new_without_err();
	return check_done("test_cache");
}
