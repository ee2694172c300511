/* lockdep.c - who holds which ranges, who waits for what, and cycles.
 *
 * State: holds, one per (file, owner) with the ranges the source granted
 * (non-overlapping, unsorted), in LOCKDEP_BUCKETS lists by file; waits, one
 * per parked request, in one list.  A hold with no range left is freed.
 *
 * The table follows the source's answers: a lock is recorded after the
 * source granted it, so two threads of one process locking overlapping
 * ranges of one file at the same moment may be recorded in the other
 * order; the worst effect is a missed or a spurious EDEADLK for that
 * process, never a lock granted or refused by us.
 *
 * Locks: ld->mu guards everything; a leaf, held for table work only.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "lockdep.h"

/* Lists of holds by file: locked files are few at a time (a lock user holds
 * a handful), so a small fixed table keeps each list short. */
#define LOCKDEP_BUCKETS 64
/* How many owners deep a chain of waits is followed, as the kernel's
 * MAX_DEADLK_ITERATIONS: longer cycles wait as they would on NFS. */
#define LOCKDEP_MAX_DEPTH 10

struct range {
	int64_t start, end; /* inclusive */
	short type;         /* F_RDLCK or F_WRLCK */
};

struct hold {
	struct hold *next;
	const void *file;
	uint64_t owner;
	struct range *r;
	unsigned n;
};

struct wait {
	struct wait *next;
	const void *file;
	uint64_t owner;
	struct range want;
	unsigned seen; /* the search that last visited it */
};

struct lockdep {
	pthread_mutex_t mu;
	struct hold *buckets[LOCKDEP_BUCKETS]; /* protected by mu */
	struct wait *waits;                    /* protected by mu */
	unsigned search;                       /* protected by mu */
};

int lockdep_new(struct lockdep **out)
{
	struct lockdep *ld = calloc(1, sizeof(*ld));

	if (!ld)
		return -ENOMEM;
	pthread_mutex_init(&ld->mu, NULL);
	*out = ld;
	return 0;
}

void lockdep_free(struct lockdep *ld)
{
	struct hold *h, *hn;
	struct wait *w, *wn;

	if (!ld)
		return;
	for (unsigned b = 0; b < LOCKDEP_BUCKETS; b++) {
		for (h = ld->buckets[b]; h; h = hn) {
			hn = h->next;
			free(h->r);
			free(h);
		}
	}
	for (w = ld->waits; w; w = wn) {
		wn = w->next;
		free(w);
	}
	pthread_mutex_destroy(&ld->mu);
	free(ld);
}

static struct hold **bucket(struct lockdep *ld, const void *file)
{
	uintptr_t k = (uintptr_t)file;

	return &ld->buckets[(k ^ (k >> 12)) % LOCKDEP_BUCKETS];
}

static struct range range_of(const struct flock *lk)
{
	struct range r = {.start = lk->l_start, .type = lk->l_type};

	r.end = lk->l_len > 0 ? lk->l_start + lk->l_len - 1 : INT64_MAX;
	return r;
}

static bool conflicts(const struct range *a, const struct range *b)
{
	return a->start <= b->end && b->start <= a->end &&
	       (a->type == F_WRLCK || b->type == F_WRLCK);
}

/* Caller holds ld->mu. */
static struct hold **find_hold(struct lockdep *ld, const void *file, uint64_t owner)
{
	struct hold **pp;

	for (pp = bucket(ld, file); *pp; pp = &(*pp)->next)
		if ((*pp)->file == file && (*pp)->owner == owner)
			return pp;
	return NULL;
}

/* Caller holds ld->mu.  POSIX: the new range replaces whatever the owner
 * held inside it; F_UNLCK just removes.  An owner's ranges never overlap,
 * so at most one of them is cut in two: n + 2 ranges at most. */
static void apply(struct lockdep *ld, const void *file, uint64_t owner, struct range nr)
{
	struct hold **pp = find_hold(ld, file, owner), *h;
	struct range *out;
	unsigned k, n = 0;

	if (!pp) {
		if (nr.type == F_UNLCK)
			return;
		h = calloc(1, sizeof(*h));
		if (!h)
			return; /* not recorded: only a deadlock may go unseen */
		h->file = file;
		h->owner = owner;
		pp = bucket(ld, file);
		h->next = *pp;
		*pp = h;
	}
	h = *pp;
	out = malloc((h->n + 2) * sizeof(*out));
	if (!out)
		return;
	for (k = 0; k < h->n; k++) {
		struct range o = h->r[k];

		if (o.end < nr.start || o.start > nr.end) {
			out[n++] = o;
			continue;
		}
		if (o.start < nr.start)
			out[n++] = (struct range){o.start, nr.start - 1, o.type};
		if (o.end > nr.end)
			out[n++] = (struct range){nr.end + 1, o.end, o.type};
	}
	if (nr.type != F_UNLCK)
		out[n++] = nr;
	free(h->r);
	h->r = out;
	h->n = n;
	if (!n) {
		*pp = h->next;
		free(h->r);
		free(h);
	}
}

/* Caller holds ld->mu.  Does some owner other than `from`, holding a range
 * of file that conflicts with want, lead back to target: is it target, or
 * does it wait for something that does? */
static bool reaches(struct lockdep *ld, const void *file, const struct range *want, uint64_t from,
		    uint64_t target, unsigned depth)
{
	struct hold *h;

	for (h = *bucket(ld, file); h; h = h->next) {
		bool hit = false;

		if (h->file != file || h->owner == from)
			continue;
		for (unsigned k = 0; k < h->n && !hit; k++)
			hit = conflicts(&h->r[k], want);
		if (!hit)
			continue;
		if (h->owner == target)
			return true;
		if (depth + 1 >= LOCKDEP_MAX_DEPTH)
			continue;
		for (struct wait *w = ld->waits; w; w = w->next) {
			if (w->owner != h->owner || w->seen == ld->search)
				continue;
			w->seen = ld->search;
			if (reaches(ld, w->file, &w->want, w->owner, target, depth + 1))
				return true;
		}
	}
	return false;
}

void lockdep_granted(struct lockdep *ld, const void *file, uint64_t owner, const struct flock *lk)
{
	pthread_mutex_lock(&ld->mu);
	apply(ld, file, owner, range_of(lk));
	pthread_mutex_unlock(&ld->mu);
}

int lockdep_wait_begin(struct lockdep *ld, const void *file, uint64_t owner,
		       const struct flock *lk)
{
	struct range want = range_of(lk);
	struct wait *w;
	int r = 0;

	pthread_mutex_lock(&ld->mu);
	ld->search++;
	if (reaches(ld, file, &want, owner, owner, 0)) {
		r = -EDEADLK;
	} else {
		w = calloc(1, sizeof(*w));
		if (!w) {
			r = -ENOMEM;
		} else {
			w->file = file;
			w->owner = owner;
			w->want = want;
			w->next = ld->waits;
			ld->waits = w;
		}
	}
	pthread_mutex_unlock(&ld->mu);
	return r;
}

void lockdep_wait_end(struct lockdep *ld, const void *file, uint64_t owner,
		      const struct flock *lk, bool granted)
{
	struct range want = range_of(lk);
	struct wait **pp;

	pthread_mutex_lock(&ld->mu);
	for (pp = &ld->waits; *pp; pp = &(*pp)->next) {
		struct wait *w = *pp;

		if (w->file == file && w->owner == owner && w->want.start == want.start &&
		    w->want.end == want.end && w->want.type == want.type) {
			*pp = w->next;
			free(w);
			break;
		}
	}
	if (granted)
		apply(ld, file, owner, want);
	pthread_mutex_unlock(&ld->mu);
}

void lockdep_forget(struct lockdep *ld, const void *file, uint64_t owner)
{
	struct hold **pp, *h;

	pthread_mutex_lock(&ld->mu);
	pp = find_hold(ld, file, owner);
	if (pp) {
		h = *pp;
		*pp = h->next;
		free(h->r);
		free(h);
	}
	pthread_mutex_unlock(&ld->mu);
}
