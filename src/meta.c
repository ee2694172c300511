/* meta.c - the metadata consistency model (see meta.h and docs/design.md).
 *
 * No state of its own: a policy derived once from the configuration and
 * per-inode struct meta_attr values that callers keep under their locks.
 */
#include "meta.h"

#include "config.h"

/* ttl=never: a year is "forever" for the kernel's timeouts. */
#define META_FOREVER (86400.0 * 365)

static double at_least(double v, double floor)
{
	return v < floor ? floor : v;
}

void meta_policy_init(struct meta_policy *p, const struct efs_config *cfg)
{
	double floor = 0;

	p->regmin = cfg->acregmin;
	p->regmax = cfg->acregmax;
	p->dirmin = cfg->acdirmin;
	p->dirmax = cfg->acdirmax;
	p->lookupcache = (enum lookupcache_mode)cfg->lookupcache;
	p->cto = !cfg->nocto;
	p->immutable = cfg->ttl == CONFIG_TTL_NEVER || cfg->immutable;
	p->no_open = cfg->immutable;
	p->ttl = cfg->ttl > 0 ? (double)cfg->ttl : 0;
	if (p->immutable)
		floor = META_FOREVER;
	else if (cfg->ttl > 0)
		floor = (double)cfg->ttl;
	p->regmin = at_least(p->regmin, floor);
	p->regmax = at_least(p->regmax, p->regmin);
	p->dirmin = at_least(p->dirmin, floor);
	p->dirmax = at_least(p->dirmax, p->dirmin);
	if (floor > 0)
		p->lookupcache = LOOKUPCACHE_ALL; /* the tree does not change */
}

double meta_elapsed(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

static bool ts_equal(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

bool meta_attr_same(const struct meta_attr *a, const struct stat *st)
{
	return a->seen && ts_equal(&a->mtime, &st->st_mtim) && ts_equal(&a->ctime, &st->st_ctim) &&
	       a->size == (int64_t)st->st_size;
}

double meta_observe(const struct meta_policy *p, struct meta_attr *a, const struct stat *st,
		    const struct timespec *now)
{
	bool dir = S_ISDIR(st->st_mode);
	double min = dir ? p->dirmin : p->regmin, max = dir ? p->dirmax : p->regmax;
	bool same = meta_attr_same(a, st);

	if (!same || a->timeo < min)
		a->timeo = min;
	else if (a->timeo * 2 <= max)
		a->timeo *= 2;
	else
		a->timeo = max;
	a->seen = true;
	a->mtime = st->st_mtim;
	a->ctime = st->st_ctim;
	a->size = (int64_t)st->st_size;
	a->at = *now;
	return a->timeo;
}

double meta_entry_timeout(const struct meta_policy *p, const struct meta_attr *dir)
{
	if (p->lookupcache == LOOKUPCACHE_NONE)
		return 0;
	return dir->seen && dir->timeo > p->dirmin ? dir->timeo : p->dirmin;
}

double meta_negative_timeout(const struct meta_policy *p, const struct meta_attr *dir)
{
	if (p->lookupcache != LOOKUPCACHE_ALL)
		return 0;
	return meta_entry_timeout(p, dir);
}

bool meta_open_trusts(const struct meta_policy *p, const struct meta_attr *a,
		      double validated_age, const struct timespec *now)
{
	if (validated_age < 0)
		return false;
	if (p->immutable)
		return true;
	if (p->ttl > 0 && validated_age < p->ttl)
		return true;
	/* nocto: the attributes the kernel may still be using are trusted. */
	return !p->cto && a->seen && meta_elapsed(&a->at, now) < a->timeo;
}
