/* cache_table.c - records and entries, the idle list, the chunk map.
 *
 * The table maps a store key to its struct rec (one per record known on
 * disk or live entry); it grows by doubling.  Entries are reference
 * counted: the last reference is dropped under c->table_mu and the LRU
 * mutex, the two locks under which a reference can come back from zero
 * (entry_get, and pick through rec->e), so exactly one thread frees an
 * entry; a rec whose record is not on disk goes with its last entry.  Idle loaded entries
 * (no handle) wait on a bounded list, coldest unloaded first, so that a
 * file opened again soon finds its record loaded while the fds held stay
 * bounded.  The chunk map is an open-addressing table of the chunks an
 * entry stores, fetches or queues.  Locks: c->table_mu (the table, the
 * idle list), then the LRU mutex (rec->e); e->mu for the chunk map and
 * the recency list (order: cache_int.h).
 */
#include "cache_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TABLE_INITIAL_BUCKETS 4096

/* ---- the table ------------------------------------------------------------ */

static size_t bucket_of(const struct cache *c, const struct store_key_bin *k)
{
	/* The key is a hash already. */
	return (size_t)(k->h[0] ^ (k->h[1] >> 7)) & (c->nbuckets - 1);
}

static bool key_eq(const struct store_key_bin *a, const struct store_key_bin *b)
{
	return a->h[0] == b->h[0] && a->h[1] == b->h[1];
}

int cache_table_init(struct cache *c)
{
	pthread_mutex_init(&c->table_mu, NULL);
	c->nbuckets = TABLE_INITIAL_BUCKETS;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	return c->buckets ? 0 : -ENOMEM;
}

static void entry_destroy(struct cache_file *e)
{
	chunk_map_free(e);
	store_file_close(&e->sf);
	if (e->fetch_fd >= 0)
		close(e->fetch_fd);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	free(e);
}

void cache_table_free(struct cache *c)
{
	for (size_t b = 0; c->buckets && b < c->nbuckets; b++) {
		struct rec *r = c->buckets[b], *next;

		for (; r; r = next) {
			next = r->next;
			if (r->e)
				entry_destroy(r->e);
			free(r);
		}
	}
	free(c->buckets);
	c->buckets = NULL;
	pthread_mutex_destroy(&c->table_mu);
}

/* table_mu held. */
static struct rec *find_locked(struct cache *c, const struct store_key_bin *k)
{
	struct rec *r;

	for (r = c->buckets[bucket_of(c, k)]; r; r = r->next)
		if (key_eq(&r->key, k))
			return r;
	return NULL;
}

/* table_mu held.  Double the buckets when chains grow past two on average
 * (memory only; without memory the chains just get longer). */
static void grow_locked(struct cache *c)
{
	size_t n = c->nbuckets * 2;
	struct rec **nb;

	if (c->nrecs < 2 * c->nbuckets || !(nb = calloc(n, sizeof(*nb))))
		return;
	for (size_t b = 0; b < c->nbuckets; b++) {
		struct rec *r = c->buckets[b], *next;

		for (; r; r = next) {
			size_t i = (size_t)(r->key.h[0] ^ (r->key.h[1] >> 7)) & (n - 1);

			next = r->next;
			r->next = nb[i];
			nb[i] = r;
		}
	}
	free(c->buckets);
	c->buckets = nb;
	c->nbuckets = n;
}

static void insert_locked(struct cache *c, struct rec *r)
{
	size_t b = bucket_of(c, &r->key);

	r->next = c->buckets[b];
	c->buckets[b] = r;
	c->nrecs++;
	grow_locked(c);
}

static void remove_locked(struct cache *c, struct rec *r)
{
	struct rec **p = &c->buckets[bucket_of(c, &r->key)];

	while (*p && *p != r)
		p = &(*p)->next;
	if (*p) {
		*p = r->next;
		c->nrecs--;
	}
}

static struct cache_file *entry_alloc(const struct store_key *k)
{
	struct cache_file *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->key = *k;
	e->sf.meta_fd = e->sf.data_fd = -1;
	e->fetch_fd = -1;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	return e;
}

/* table_mu held: r gets entry e with one reference. */
static void attach_locked(struct cache *c, struct rec *r, struct cache_file *e)
{
	e->rec = r;
	e->refs = 1;
	e->store_gen = cache_store_gen(c);
	evict_lock(c->ev);
	r->e = e;
	evict_unlock(c->ev);
}

void entry_ref(struct cache_file *e)
{
	__atomic_add_fetch(&e->refs, 1, __ATOMIC_ACQ_REL);
}

struct cache_file *entry_get(struct cache *c, const struct store_key *k, bool only_known)
{
	struct cache_file *fresh = NULL, *e;
	struct rec *r, *fresh_rec = NULL;
	struct store_key_bin kb;

	store_key_pack(k, &kb);
	for (;;) {
		pthread_mutex_lock(&c->table_mu);
		r = find_locked(c, &kb);
		if (r && r->e) {
			e = r->e;
			entry_ref(e);
			break;
		}
		if (!r && only_known) {
			e = NULL;
			break;
		}
		if (fresh && (r || fresh_rec)) {
			if (!r) {
				r = fresh_rec;
				fresh_rec = NULL;
				insert_locked(c, r);
			}
			attach_locked(c, r, fresh);
			e = fresh;
			fresh = NULL;
			break;
		}
		/* Allocate outside the table's lock, then look again. */
		pthread_mutex_unlock(&c->table_mu);
		if (!fresh && !(fresh = entry_alloc(k)))
			return NULL;
		if (!r && !fresh_rec) {
			if (!(fresh_rec = calloc(1, sizeof(*fresh_rec)))) {
				entry_destroy(fresh);
				return NULL;
			}
			fresh_rec->key = kb;
		}
	}
	pthread_mutex_unlock(&c->table_mu);
	if (fresh)
		entry_destroy(fresh);
	free(fresh_rec);
	return e;
}

struct cache_file *entry_get_rec(struct cache *c, struct rec *r)
{
	struct store_key k;

	pthread_mutex_lock(&c->table_mu);
	if (r->e) {
		struct cache_file *e = r->e;

		entry_ref(e);
		pthread_mutex_unlock(&c->table_mu);
		return e;
	}
	pthread_mutex_unlock(&c->table_mu);
	store_key_unpack(&r->key, &k);
	return entry_get(c, &k, true);
}

void entry_put(struct cache *c, struct cache_file *e)
{
	struct rec *r = e->rec;
	unsigned refs = __atomic_load_n(&e->refs, __ATOMIC_ACQUIRE);
	bool free_rec;

	/* Not the last: no lock.  The last is dropped under table_mu and the
	 * LRU mutex, where a reference can come back only from entry_get or
	 * pick, which hold one of them: so exactly one thread frees. */
	while (refs > 1)
		if (__atomic_compare_exchange_n(&e->refs, &refs, refs - 1, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			return;
	pthread_mutex_lock(&c->table_mu);
	evict_lock(c->ev);
	if (__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL) != 0) {
		/* Found again meanwhile: its new holder puts it. */
		evict_unlock(c->ev);
		pthread_mutex_unlock(&c->table_mu);
		return;
	}
	r->e = NULL;
	free_rec = (!r->on_disk || r->disk_gen != (uint32_t)cache_store_gen(c)) && !r->condemned &&
		   !r->pins && !r->lru.linked && !r->lru.held;
	if (free_rec)
		remove_locked(c, r);
	evict_unlock(c->ev);
	pthread_mutex_unlock(&c->table_mu);
	entry_destroy(e);
	if (free_rec)
		free(r);
}

int cache_key_of(struct cache *c, dev_t dev, uint64_t ino, struct store_key *k)
{
	uint64_t tag = c->root_dev_known && dev == c->root_dev ? 0 : (uint64_t)dev;

	if (tag) {
		bool known = false;

		pthread_mutex_lock(&c->table_mu);
		for (unsigned i = 0; i < c->nother_devs; i++)
			known = known || c->other_devs[i] == dev;
		if (!known && c->nother_devs < sizeof(c->other_devs) / sizeof(c->other_devs[0]))
			c->other_devs[c->nother_devs++] = dev;
		pthread_mutex_unlock(&c->table_mu);
	}
	return store_key_of(c->cfg->source, tag, ino, k);
}

bool cache_table_knows(struct cache *c, const struct store_key *k)
{
	struct store_key_bin kb;
	bool known;

	store_key_pack(k, &kb);
	pthread_mutex_lock(&c->table_mu);
	known = find_locked(c, &kb) != NULL;
	pthread_mutex_unlock(&c->table_mu);
	return known;
}

unsigned cache_other_devs(struct cache *c, dev_t *out, unsigned max)
{
	unsigned n;

	pthread_mutex_lock(&c->table_mu);
	for (n = 0; n < c->nother_devs && n < max; n++)
		out[n] = c->other_devs[n];
	pthread_mutex_unlock(&c->table_mu);
	return n;
}

void cache_table_add_found(struct cache *c, const struct store_scan_rec *sr)
{
	struct store_key_bin kb;
	struct rec *r;

	store_key_pack(&sr->key, &kb);
	r = calloc(1, sizeof(*r));
	if (!r)
		return; /* unindexed: found again when a file of it is opened */
	r->key = kb;
	r->on_disk = true;
	r->disk_gen = (uint32_t)cache_store_gen(c);
	pthread_mutex_lock(&c->table_mu);
	if (find_locked(c, &kb)) {
		/* Opened (and loaded, or found gone) before the index got here. */
		pthread_mutex_unlock(&c->table_mu);
		free(r);
		return;
	}
	insert_locked(c, r);
	evict_add_cold(c->ev, &r->lru, sr->bytes);
	pthread_mutex_unlock(&c->table_mu);
}

void cache_table_forget_idle(struct cache *c)
{
	pthread_mutex_lock(&c->table_mu);
	evict_lock(c->ev);
	for (size_t b = 0; b < c->nbuckets; b++) {
		struct rec **p = &c->buckets[b];

		while (*p) {
			struct rec *r = *p;

			r->condemned = false; /* its files went with the old directory */
			if (!r->e && !r->pins) {
				*p = r->next;
				c->nrecs--;
				evict_del_locked(c->ev, &r->lru);
				free(r);
				continue;
			}
			p = &r->next;
		}
	}
	evict_unlock(c->ev);
	pthread_mutex_unlock(&c->table_mu);
}

struct store_key_bin *cache_table_keys(struct cache *c, size_t *count)
{
	struct store_key_bin *keys;
	size_t n = 0;

	pthread_mutex_lock(&c->table_mu);
	keys = malloc((c->nrecs ? c->nrecs : 1) * sizeof(*keys));
	for (size_t b = 0; keys && b < c->nbuckets; b++)
		for (struct rec *r = c->buckets[b]; r; r = r->next)
			keys[n++] = r->key;
	pthread_mutex_unlock(&c->table_mu);
	*count = n;
	return keys;
}

uint64_t cache_table_count(struct cache *c)
{
	uint64_t n;

	pthread_mutex_lock(&c->table_mu);
	n = c->nrecs;
	pthread_mutex_unlock(&c->table_mu);
	return n;
}

/* ---- the idle list ---------------------------------------------------------- */

static void idle_unlink_locked(struct cache *c, struct cache_file *e)
{
	if (e->idle_prev)
		e->idle_prev->idle_next = e->idle_next;
	else
		c->idle_hot = e->idle_next;
	if (e->idle_next)
		e->idle_next->idle_prev = e->idle_prev;
	else
		c->idle_cold = e->idle_prev;
	e->idle_prev = e->idle_next = NULL;
	e->idle_linked = false;
	c->nidle--;
}

static void idle_push_locked(struct cache *c, struct cache_file *e)
{
	e->idle_prev = NULL;
	e->idle_next = c->idle_hot;
	if (c->idle_hot)
		c->idle_hot->idle_prev = e;
	else
		c->idle_cold = e;
	c->idle_hot = e;
	e->idle_linked = true;
	c->nidle++;
}

void idle_join_locked(struct cache *c, struct cache_file *e)
{
	bool over;

	pthread_mutex_lock(&c->table_mu);
	if (!e->idle_linked) {
		entry_ref(e); /* the list's */
		idle_push_locked(c, e);
	}
	over = c->nidle > c->idle_max;
	pthread_mutex_unlock(&c->table_mu);
	if (over)
		idle_trim(c, e, false);
}

void idle_leave_locked(struct cache *c, struct cache_file *e)
{
	bool was;

	pthread_mutex_lock(&c->table_mu);
	was = e->idle_linked;
	if (was)
		idle_unlink_locked(c, e);
	pthread_mutex_unlock(&c->table_mu);
	/* The caller holds a reference too: this is never the last. */
	if (was)
		__atomic_sub_fetch(&e->refs, 1, __ATOMIC_ACQ_REL);
}

unsigned idle_trim(struct cache *c, struct cache_file *self, bool everything)
{
	unsigned done = 0, tries;

	pthread_mutex_lock(&c->table_mu);
	tries = c->nidle;
	pthread_mutex_unlock(&c->table_mu);
	while (tries--) {
		struct cache_file *t;

		pthread_mutex_lock(&c->table_mu);
		t = c->idle_cold;
		if (t == self && t)
			t = t->idle_prev;
		if (!t || (!everything && c->nidle <= c->idle_max)) {
			pthread_mutex_unlock(&c->table_mu);
			break;
		}
		idle_unlink_locked(c, t); /* its reference is ours now */
		if (pthread_mutex_trylock(&t->mu) != 0) {
			/* Busy right now: back to the hot end, tried later. */
			idle_push_locked(c, t);
			pthread_mutex_unlock(&c->table_mu);
			continue;
		}
		pthread_mutex_unlock(&c->table_mu);
		if (t->loaded && !t->opens && !t->jobs && entry_quiet(t)) {
			entry_unload_locked(c, t);
			done++;
		}
		pthread_mutex_unlock(&t->mu);
		entry_put(c, t);
	}
	return done;
}

/* ---- the chunk map ------------------------------------------------------------ */

static uint32_t home(const struct chunk_map *m, uint32_t idx)
{
	return (uint32_t)(((uint64_t)idx * 0x9E3779B97F4A7C15ULL) >> 32) & (m->cap - 1);
}

struct chunk *chunk_get(struct cache_file *e, uint32_t idx)
{
	const struct chunk_map *m = &e->map;

	if (!m->cap)
		return NULL;
	for (uint32_t i = home(m, idx);; i = (i + 1) & (m->cap - 1)) {
		struct chunk *ch = m->slot[i];

		if (!ch || ch->idx == idx)
			return ch;
	}
}

static void place(struct chunk_map *m, struct chunk *ch)
{
	uint32_t i = home(m, ch->idx);

	while (m->slot[i])
		i = (i + 1) & (m->cap - 1);
	m->slot[i] = ch;
}

/* Rehash into cap slots (a power of two above 2 n). */
static int resize(struct chunk_map *m, uint32_t cap)
{
	struct chunk **old = m->slot;
	uint32_t ocap = m->cap;

	m->slot = calloc(cap, sizeof(*m->slot));
	if (!m->slot) {
		m->slot = old;
		return -ENOMEM;
	}
	m->cap = cap;
	for (uint32_t i = 0; i < ocap; i++)
		if (old[i])
			place(m, old[i]);
	free(old);
	return 0;
}

struct chunk *chunk_make(struct cache_file *e, uint32_t idx)
{
	struct chunk_map *m = &e->map;
	struct chunk *ch = chunk_get(e, idx);

	if (ch)
		return ch;
	if ((uint64_t)(m->n + 1) * 2 > m->cap && resize(m, m->cap ? m->cap * 2 : 8) < 0)
		return NULL;
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return NULL;
	ch->idx = idx;
	ch->state = CH_ABSENT;
	place(m, ch);
	m->n++;
	return ch;
}

static void map_del(struct chunk_map *m, struct chunk *ch)
{
	uint32_t i = home(m, ch->idx), mask = m->cap - 1;

	while (m->slot[i] != ch)
		i = (i + 1) & mask;
	m->slot[i] = NULL;
	/* Backward shift: move up every later chunk of the run that may sit
	 * in the hole (its home is not cyclically in (i, j]). */
	for (uint32_t j = (i + 1) & mask; m->slot[j]; j = (j + 1) & mask) {
		uint32_t k = home(m, m->slot[j]->idx);

		if (((j - k) & mask) >= ((j - i) & mask)) {
			m->slot[i] = m->slot[j];
			m->slot[j] = NULL;
			i = j;
		}
	}
	m->n--;
	/* Memory follows use: a map that emptied gives its slots back. */
	if (m->cap > 64 && (uint64_t)m->n * 8 < m->cap)
		resize(m, m->cap / 4);
}

void chunk_settle(struct cache_file *e, struct chunk *ch)
{
	if (ch->state != CH_ABSENT || ch->queued || ch->pins || ch->listed)
		return;
	map_del(&e->map, ch);
	free(ch);
}

void chunk_map_free(struct cache_file *e)
{
	for (uint32_t i = 0; i < e->map.cap; i++)
		free(e->map.slot[i]);
	free(e->map.slot);
	memset(&e->map, 0, sizeof(e->map));
	e->hot = e->cold = NULL;
	e->nstored = 0;
}

void chunk_unlist(struct cache_file *e, struct chunk *ch)
{
	if (!ch->listed)
		return;
	if (ch->hotter)
		ch->hotter->colder = ch->colder;
	else
		e->hot = ch->colder;
	if (ch->colder)
		ch->colder->hotter = ch->hotter;
	else
		e->cold = ch->hotter;
	ch->hotter = ch->colder = NULL;
	ch->listed = false;
}

void chunk_list_hot(struct cache_file *e, struct chunk *ch)
{
	if (ch->listed && e->hot == ch)
		return;
	chunk_unlist(e, ch);
	ch->colder = e->hot;
	ch->hotter = NULL;
	if (e->hot)
		e->hot->hotter = ch;
	else
		e->cold = ch;
	e->hot = ch;
	ch->listed = true;
}
