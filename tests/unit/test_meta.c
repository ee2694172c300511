/* test_meta.c - the metadata consistency model (meta.c), no mount. */
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "config.h"
#include "meta.h"

static struct efs_config defaults(void)
{
	struct efs_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.acregmin = 3;
	cfg.acregmax = 60;
	cfg.acdirmin = 30;
	cfg.acdirmax = 60;
	cfg.lookupcache = LOOKUPCACHE_ALL;
	return cfg;
}

static struct stat file_at(long mtime, off_t size, mode_t type)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	st.st_mode = type | 0644;
	st.st_mtim.tv_sec = mtime;
	st.st_ctim.tv_sec = mtime;
	st.st_size = size;
	return st;
}

static void test_adaptive_window(void)
{
	struct efs_config cfg = defaults();
	struct meta_policy p;
	struct meta_attr a = {0};
	struct timespec now = {100, 0};
	struct stat st = file_at(10, 5, S_IFREG);

	meta_policy_init(&p, &cfg);
	CHECK(meta_observe(&p, &a, &st, &now) == 3);   /* first sight: acregmin */
	CHECK(meta_observe(&p, &a, &st, &now) == 6);   /* unchanged: doubles */
	CHECK(meta_observe(&p, &a, &st, &now) == 12);
	CHECK(meta_observe(&p, &a, &st, &now) == 24);
	CHECK(meta_observe(&p, &a, &st, &now) == 48);
	CHECK(meta_observe(&p, &a, &st, &now) == 60);  /* capped at acregmax */
	CHECK(meta_observe(&p, &a, &st, &now) == 60);
	st.st_ctim.tv_nsec = 1;                         /* ctime alone changed */
	CHECK(meta_observe(&p, &a, &st, &now) == 3);   /* back to acregmin */
	st.st_size = 6;
	CHECK(meta_observe(&p, &a, &st, &now) == 3);
	/* what getattr compares a client's cached attributes with */
	CHECK(meta_attr_same(&a, &st));
	st.st_size = 5;
	CHECK(!meta_attr_same(&a, &st));
	st.st_size = 6;
	st.st_mtim.tv_sec = 11;
	CHECK(!meta_attr_same(&a, &st));
	st.st_mtim.tv_sec = 10;
	st.st_atim.tv_sec = 99; /* atime is not compared */
	CHECK(meta_attr_same(&a, &st));
	struct meta_attr unseen = {0};
	CHECK(!meta_attr_same(&unseen, &st));

	struct meta_attr d = {0};
	struct stat dir = file_at(10, 4096, S_IFDIR);
	CHECK(meta_observe(&p, &d, &dir, &now) == 30);
	CHECK(meta_observe(&p, &d, &dir, &now) == 60);
	CHECK(meta_entry_timeout(&p, &d) == 60);        /* names: the dir's window */
	CHECK(meta_negative_timeout(&p, &d) == 60);
}

static void test_lookupcache(void)
{
	struct efs_config cfg = defaults();
	struct meta_policy p;
	struct meta_attr d = {0};

	cfg.lookupcache = LOOKUPCACHE_POSITIVE;
	meta_policy_init(&p, &cfg);
	CHECK(meta_entry_timeout(&p, &d) == 30);
	CHECK(meta_negative_timeout(&p, &d) == 0);
	cfg.lookupcache = LOOKUPCACHE_NONE;
	meta_policy_init(&p, &cfg);
	CHECK(meta_entry_timeout(&p, &d) == 0);
	CHECK(meta_negative_timeout(&p, &d) == 0);
}

static void test_open_trust(void)
{
	struct efs_config cfg = defaults();
	struct meta_policy p;
	struct meta_attr a = {0};
	struct timespec t0 = {100, 0}, t2 = {102, 0}, t4 = {104, 0};
	struct stat st = file_at(10, 5, S_IFREG);

	meta_policy_init(&p, &cfg);
	meta_observe(&p, &a, &st, &t0);
	/* cto: an open always asks, however fresh the validation */
	CHECK(!meta_open_trusts(&p, &a, 0.001, &t2));
	CHECK(!meta_open_trusts(&p, &a, -1, &t2));

	cfg.nocto = true;
	meta_policy_init(&p, &cfg);
	CHECK(meta_open_trusts(&p, &a, 2, &t2));      /* inside the 3 s window */
	CHECK(!meta_open_trusts(&p, &a, 4, &t4));     /* outside */
	CHECK(!meta_open_trusts(&p, &a, -1, &t2));    /* never validated */

	cfg = defaults();
	cfg.ttl = 10;
	meta_policy_init(&p, &cfg);
	CHECK(p.regmin == 10 && p.dirmin == 30 && p.regmax == 60);
	CHECK(meta_open_trusts(&p, &a, 9.5, &t2));
	CHECK(!meta_open_trusts(&p, &a, 10.5, &t2));

	cfg.ttl = CONFIG_TTL_NEVER;
	cfg.lookupcache = LOOKUPCACHE_NONE;
	meta_policy_init(&p, &cfg);
	CHECK(p.immutable && p.regmin > 86400 && p.lookupcache == LOOKUPCACHE_ALL);
	CHECK(meta_open_trusts(&p, &a, 1e6, &t2));
	CHECK(!meta_open_trusts(&p, &a, -1, &t2));
}

static void test_strict(void)
{
	struct efs_config cfg = defaults();
	struct meta_policy p;
	struct meta_attr a = {0};
	struct timespec now = {1, 0};
	struct stat st = file_at(1, 1, S_IFREG);

	cfg.acregmin = cfg.acregmax = cfg.acdirmin = cfg.acdirmax = 0;
	cfg.lookupcache = LOOKUPCACHE_NONE;
	meta_policy_init(&p, &cfg);
	CHECK(meta_observe(&p, &a, &st, &now) == 0);
	CHECK(meta_observe(&p, &a, &st, &now) == 0);
	CHECK(meta_entry_timeout(&p, &a) == 0 && meta_negative_timeout(&p, &a) == 0);
}

int main(void)
{
	test_adaptive_window();
	test_lookupcache();
	test_open_trust();
	test_strict();
	return check_done("test_meta");
}
