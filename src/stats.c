/* stats.c - names and snapshots of the counters, gauges and the fetch
 * latency histogram in stats.h (their text is ctlproto.c's). */
#include "stats.h"

#include "ctlproto.h"

#include <time.h>

static const char *const names[] = {
#define X(name, help) #name,
	STATS_LIST(X) STATS_GAUGES(X)
#undef X
};

static const char *const helps[] = {
#define X(name, help) help,
	STATS_LIST(X) STATS_GAUGES(X)
#undef X
};

static const uint64_t bounds_us[STATS_FETCH_NBOUNDS] = {STATS_FETCH_BOUNDS_US};

const char *stats_name(enum stat_id id)
{
	return names[id];
}

const char *stats_help(enum stat_id id)
{
	return helps[id];
}

uint64_t stats_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void stats_fetch_done(struct efs_stats *s, uint64_t start_us)
{
	uint64_t now = stats_now_us(), us = now > start_us ? now - start_us : 0;
	unsigned i = 0;

	while (i < STATS_FETCH_NBOUNDS && us > bounds_us[i])
		i++;
	__atomic_fetch_add(&s->fetch_hist[i], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&s->fetch_sum_us, us, __ATOMIC_RELAXED);
}

/* Raise bytes_saved to what the other counters show now, if that is more
 * (stats.h).  A read counts its fetch before it counts the bytes served, so
 * served is read first: a read running meanwhile can then only make the
 * difference smaller, never count bytes served before their fetch (the
 * counters are relaxed atomics: on a weakly ordered CPU a read in flight at
 * that instant may still be off by its own size). */
static void ratchet_saved(struct efs_stats *s)
{
	uint64_t served = __atomic_load_n(&s->v[ST_bytes_served], __ATOMIC_ACQUIRE);
	uint64_t fetched = stats_get(s, ST_bytes_from_source) + stats_get(s, ST_bytes_bypassed);
	uint64_t now = served > fetched ? served - fetched : 0;
	uint64_t old = stats_get(s, ST_bytes_saved);

	while (now > old && !__atomic_compare_exchange_n(&s->v[ST_bytes_saved], &old, now, false,
							 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

void stats_snapshot(struct efs_stats *s, struct ctl_stats *out)
{
	uint64_t cum = 0;

	ratchet_saved(s);
	for (int i = 0; i < ST__COUNT; i++)
		out->counter[i] = stats_get(s, (enum stat_id)i);
	for (int i = 0; i <= STATS_FETCH_NBOUNDS; i++) {
		cum += __atomic_load_n(&s->fetch_hist[i], __ATOMIC_RELAXED);
		out->fetch_le[i] = cum;
	}
	out->fetch_count = cum;
	out->fetch_sum_us = __atomic_load_n(&s->fetch_sum_us, __ATOMIC_RELAXED);
}
