/* test_cache_model.c - a randomized model test of the cache core (issue 15).
 *
 * Several threads run random steps against the cache core as the FUSE ops
 * drive it (cache_fixture.h, core_*): open / read (inside the file,
 * straddling the size validated at open, past the end, sequential runs that
 * start the prefetch workers) / close / verify / evict, while the same
 * threads change the source as another host would (append, truncate,
 * replace in place, rename a new file over the name, unlink and create
 * again) or through the mount (unlink and rename-over, then
 * cache_source_gone), damage cache_dir underneath (KEY.data, KEY.meta,
 * v1/XX, rm -rf caught half way, rm -rf), inject store faults
 * (tests/faultinj: EMFILE, ENOSPC, EIO, ENOENT on cache_dir's calls) and
 * restart the cache (env_down + env_up) over the same cache_dir.  Files: a
 * small, a medium and a large one, and a sparse one of several TiB.
 *
 * The byte oracle.  Every 8-byte word written to the source names its
 * object (a file as created: a rename over the name makes a new one), the
 * write, and its offset.  Each object keeps its versions, each made by one
 * change: its extents (which write, or zeros, covers each range) and the
 * logical ticks of the change that made it (from: started) and of the one
 * that replaced it (until: finished).  After every read:
 *   - each byte must be a byte of some version of the handle's object that
 *     existed between the start of the open and the end of the read
 *     (close-to-open: an open sees every change before it; a read may see
 *     later versions, never earlier ones), so never another object's byte
 *     and never a zero where none of those versions had one (a buffered
 *     read racing a truncation to T may see zeros from T to the end of the
 *     folio, as reading the source directly does: allowed then only);
 *   - a short read may end only where the source may end during that read
 *     (rule 16): at or past the smallest size a version had between the
 *     start and the end of the read;
 *   - an error only where the source could give one (the object was
 *     deleted or replaced: ESTALE), never for a cache-side fault.
 * Also: no hang (a watchdog thread dumps every thread's last steps and
 * exits when no step ends for EFSCACHE_MODEL_HANG_SECONDS), no crash, and
 * at rest (handles closed, inodes forgotten, faults off) the fds back to
 * what they were before the run, RSS within a bound of its value after
 * the warm-up, the cache's entries bounded, and caching working.  Before
 * the run a probe opens a 64 GiB sparse file: if that costs more than
 * 4 MiB of RSS (rule 17) it is reported and the run uses a 4 GiB sparse
 * file instead of EFSCACHE_MODEL_SPARSE, so that the rest can still run.
 *
 * Settings (environment): EFSCACHE_MODEL_SECONDS (default 60; 20 in a
 * sanitizer build), EFSCACHE_MODEL_SEED (1), EFSCACHE_MODEL_THREADS (4; 1 is
 * the replay mode: one thread, write-behind and prefetch settled after each
 * step: the same steps for a seed, and the same results but for what the
 * sweeper's once-a-second pass changes), EFSCACHE_MODEL_STEPS (stop each
 * thread after so many steps; 0 = by time), EFSCACHE_MODEL_SKIP (step names
 * to leave out, comma-separated, e.g. "restart,trunc_data"),
 * EFSCACHE_MODEL_FAULT_OPS (the faultinj ops the fault steps may fail, e.g.
 * "write,fallocate"; default all),
 * EFSCACHE_MODEL_TRACE=1 (print every step), EFSCACHE_MODEL_HANG_SECONDS
 * (60), EFSCACHE_MODEL_SPARSE (bytes of the sparse file, default 4 TiB),
 * EFSCACHE_MODEL_RSS_SLACK_MIB (32), EFSCACHE_MODEL_MAX_ENTRIES (64),
 * EFSCACHE_MODEL_HANG_ABORT=1 (abort() on a hang instead of exiting 1, for
 * a debugger).  Every failure prints the seed, the thread and step, what was
 * read and expected, the thread's last steps and the command that replays
 * it; a crash, the stack; a hang, every thread's stack (gdb).
 */
#include <dirent.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache_fixture.h"
#include "faultinj.h"

/* A sanitizer build (gcc says so one way, clang the other): shorter by
 * default, and RSS means nothing there. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define KiB ((uint64_t)1024)
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)
#define TiB (1024 * GiB)

#define MAX_THREADS 16
#define MAX_HANDLES 4
#define MAX_READ (1024 * KiB) /* FUSE's largest read request */
#define TRACE_LEN 32
#define CACHE_SIZE (4 * MiB) /* a fraction of what the files hold: eviction runs */
#define PREFETCH 2
#define PROBE_SPARSE (64 * GiB)
#define PROBE_RSS_BOUND (4 * MiB)
#define FALLBACK_SPARSE (4 * GiB)
#define TRUNC_FOLIO (2 * MiB) /* the largest folio a truncation may zero the tail of */

/* ---- settings ------------------------------------------------------------- */

static struct {
	uint64_t seed;
	double seconds;
	unsigned threads;
	uint64_t steps;
	unsigned hang_s;
	uint64_t sparse;
	bool trace;
	char skip[512];
	char fault_ops[256]; /* ",open,read," or ",," for all */
	uint64_t rss_slack;
	uint64_t max_entries;
} S;

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);
	char *end;
	uint64_t v;

	if (!s || !*s)
		return dflt;
	v = strtoull(s, &end, 0);
	if (*end == 'T' || *end == 't')
		v *= TiB;
	else if (*end == 'G' || *end == 'g')
		v *= GiB;
	else if (*end == 'M' || *end == 'm')
		v *= MiB;
	return v;
}

static void read_settings(void)
{
	const char *skip = getenv("EFSCACHE_MODEL_SKIP"), *sec = getenv("EFSCACHE_MODEL_SECONDS");

	S.seed = env_u64("EFSCACHE_MODEL_SEED", 1);
	S.seconds = sec && *sec ? strtod(sec, NULL) : (SANITIZED ? 20 : 60);
	S.threads = (unsigned)env_u64("EFSCACHE_MODEL_THREADS", 4);
	if (S.threads < 1)
		S.threads = 1;
	if (S.threads > MAX_THREADS)
		S.threads = MAX_THREADS;
	S.steps = env_u64("EFSCACHE_MODEL_STEPS", 0);
	S.hang_s = (unsigned)env_u64("EFSCACHE_MODEL_HANG_SECONDS", 60);
	S.sparse = env_u64("EFSCACHE_MODEL_SPARSE", 4 * TiB);
	S.trace = env_u64("EFSCACHE_MODEL_TRACE", 0) != 0;
	S.rss_slack = env_u64("EFSCACHE_MODEL_RSS_SLACK_MIB", 32) * MiB;
	S.max_entries = env_u64("EFSCACHE_MODEL_MAX_ENTRIES", 64);
	snprintf(S.skip, sizeof(S.skip), ",%s,", skip ? skip : "");
	snprintf(S.fault_ops, sizeof(S.fault_ops), ",%s,",
		 getenv("EFSCACHE_MODEL_FAULT_OPS") ? getenv("EFSCACHE_MODEL_FAULT_OPS") : "");
}

/* ---- ticks, random numbers ------------------------------------------------------ */

/* One logical clock for every event the oracle orders: an atomic counter is
 * a total order that agrees with real time across threads. */
static _Atomic uint64_t ticks;

static uint64_t tick(void)
{
	return ++ticks;
}

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
	return n ? rnd(s) % n : 0;
}

static bool chance(uint64_t *s, unsigned pct)
{
	return below(s, 100) < pct;
}

/* ---- what the source's bytes say --------------------------------------------- */

/* The 8-byte word at offset 8 * woff of write wid of object obj: 0xA in the
 * top nibble (never zero), 10 bits of object, 10 of write, 40 of word
 * offset (8 TiB), stored little-endian. */
static uint64_t tag_word(unsigned obj, uint32_t wid, uint64_t woff)
{
	return 0xAull << 60 | (uint64_t)(obj & 0x3FF) << 50 | (uint64_t)(wid & 0x3FF) << 40 |
	       (woff & 0xFFFFFFFFFFull);
}

static unsigned char tag_byte(unsigned obj, uint32_t wid, uint64_t off)
{
	return (unsigned char)(tag_word(obj, wid, off / 8) >> (8 * (off % 8)));
}

static void fill_tags(unsigned char *buf, unsigned obj, uint32_t wid, uint64_t off, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = tag_byte(obj, wid, off + i);
}

/* What a word read says it is, for the failure report. */
static void describe_word(const unsigned char *b, char *out, size_t outlen)
{
	uint64_t w = 0;

	for (int i = 0; i < 8; i++)
		w |= (uint64_t)b[i] << (8 * i);
	if (w == 0)
		snprintf(out, outlen, "zeros");
	else if (w >> 60 == 0xA)
		snprintf(out, outlen, "object %u (mod 1024) write %u offset %" PRIu64,
			 (unsigned)(w >> 50 & 0x3FF), (unsigned)(w >> 40 & 0x3FF),
			 (uint64_t)(w & 0xFFFFFFFFFFull) * 8);
	else
		snprintf(out, outlen, "not a tag: %016" PRIx64, w);
}

/* Describe the word of the file that holds byte pos of a reply of n bytes
 * read at off: the 8 bytes of [pos & ~7, +8), aligned in the file as the
 * tags are, not in the reply (a read at an odd offset would mix two words
 * into a tag of nothing: seed 110's "another object at 161 MB" was write 2
 * of the same object at the same offset).  When that word starts before
 * the reply, the next one is described. */
static void describe_word_at(const unsigned char *buf, uint64_t off, size_t n, uint64_t pos,
			     char *out, size_t outlen)
{
	uint64_t a = pos & ~(uint64_t)7;
	unsigned char word[8] = {0};
	char what[96];

	if (a < off)
		a += 8;
	if (a >= off + n) {
		snprintf(out, outlen, "no whole word");
		return;
	}
	memcpy(word, buf + (a - off), off + n - a < 8 ? (size_t)(off + n - a) : 8);
	describe_word(word, what, sizeof(what));
	snprintf(out, outlen, "the word at %" PRIu64 " holds %s%s", a, what,
		 off + n - a < 8 ? " (cut)" : "");
}

/* ---- the oracle: objects and their versions ---------------------------------- */

struct extent {
	uint64_t start, end;
	uint32_t wid; /* 0: zeros */
};

enum how { MK_CREATE, MK_APPEND, MK_TRUNC };

struct version {
	uint64_t size;
	struct extent *ext;
	unsigned next;
	enum how how;
	uint64_t prev_size; /* before the change that made it */
	uint64_t from;	    /* tick: the change that made it started */
	uint64_t done;	    /* tick: it finished (UINT64_MAX while running) */
	uint64_t until;	    /* tick: the next change finished (UINT64_MAX: current) */
};

enum slot_kind { SK_SMALL, SK_MEDIUM, SK_LARGE, SK_SPARSE, SK_N };
static const char *const slot_names[SK_N] = {"small", "medium", "large", "sparse"};

struct object {
	unsigned id;
	ino_t ino;
	enum slot_kind kind;
	struct version *v; /* protected by mu, as everything below */
	unsigned nv, cap;
	uint32_t next_wid;
	uint64_t *sizes; /* every size it had: a new one is never one of these */
	unsigned nsizes, capsizes;
	uint64_t unlinked_at; /* tick its last name went; 0 while it has one */
	unsigned handles;     /* model handles open on it */
	bool graved;	      /* truncated in the graveyard: nobody reads it any more */
	struct object *hnext; /* ino hash chain */
};

struct slot {
	struct object *obj;   /* at the name now; NULL while missing */
	uint64_t unlink_from; /* tick the last unlink of the name began (0: none) */
	uint64_t missing_end; /* tick the name came back after it */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;	   /* the oracle */
static pthread_mutex_t mut_mu = PTHREAD_MUTEX_INITIALIZER; /* one source change at a time */
static struct slot slots[SK_N];				   /* protected by mu */
static struct object **objs;				   /* protected by mu */
static unsigned nobjs, capobjs;
#define INO_BUCKETS 4096
static struct object *ino_hash[INO_BUCKETS]; /* protected by mu */

static struct env V;
static int srcfd = -1, gravefd = -1;
static char grave[128];
static dev_t src_dev;
static uint64_t sparse_size;

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz);

	if (!p)
		abort();
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		abort();
	return p;
}

static struct object *obj_of_ino(ino_t ino)
{
	struct object *o;

	for (o = ino_hash[ino % INO_BUCKETS]; o; o = o->hnext)
		if (o->ino == ino)
			return o;
	return NULL;
}

static struct version *cur_version(struct object *o)
{
	return &o->v[o->nv - 1];
}

static bool size_used(const struct object *o, uint64_t size)
{
	for (unsigned i = 0; i < o->nsizes; i++)
		if (o->sizes[i] == size)
			return true;
	return false;
}

/* A size near want in [lo, hi] that o never had: every change then moves
 * the size, so the identity the cache compares changes even if the file
 * system's timestamps did not tick between two changes. */
static uint64_t fresh_size(struct object *o, uint64_t want, uint64_t lo, uint64_t hi, uint64_t *rng)
{
	uint64_t s = want < lo ? lo : want > hi ? hi : want;

	for (int i = 0; i < 64 && size_used(o, s); i++)
		s = lo + below(rng, hi - lo + 1);
	return s;
}

static void note_size(struct object *o, uint64_t size)
{
	if (o->nsizes == o->capsizes) {
		o->capsizes = o->capsizes ? o->capsizes * 2 : 16;
		o->sizes = xrealloc(o->sizes, o->capsizes * sizeof(*o->sizes));
	}
	o->sizes[o->nsizes++] = size;
}

static struct version *add_version(struct object *o)
{
	if (o->nv == o->cap) {
		o->cap = o->cap ? o->cap * 2 : 8;
		o->v = xrealloc(o->v, o->cap * sizeof(*o->v));
	}
	memset(&o->v[o->nv], 0, sizeof(o->v[0]));
	o->v[o->nv].done = o->v[o->nv].until = UINT64_MAX;
	return &o->v[o->nv++];
}

static void push_extent(struct version *v, uint64_t start, uint64_t end, uint32_t wid)
{
	if (start >= end)
		return;
	/* Merge neighbouring zeros, so that holes stay one extent. */
	if (v->next && wid == 0 && v->ext[v->next - 1].wid == 0 &&
	    v->ext[v->next - 1].end == start) {
		v->ext[v->next - 1].end = end;
		return;
	}
	v->ext = xrealloc(v->ext, (v->next + 1) * sizeof(*v->ext));
	v->ext[v->next++] = (struct extent){start, end, wid};
}

/* A copy of version src's extents cut at size. */
static void copy_extents(struct version *dst, const struct version *src, uint64_t size)
{
	for (unsigned i = 0; i < src->next && src->ext[i].start < size; i++) {
		const struct extent *e = &src->ext[i];

		push_extent(dst, e->start, e->end < size ? e->end : size, e->wid);
	}
}

static struct object *new_object(ino_t ino, enum slot_kind kind)
{
	struct object *o = xcalloc(1, sizeof(*o));

	o->id = nobjs;
	o->ino = ino;
	o->kind = kind;
	if (nobjs == capobjs) {
		capobjs = capobjs ? capobjs * 2 : 64;
		objs = xrealloc(objs, capobjs * sizeof(*objs));
	}
	objs[nobjs++] = o;
	o->hnext = ino_hash[ino % INO_BUCKETS];
	ino_hash[ino % INO_BUCKETS] = o;
	return o;
}

/* Versions no reader can still be shown: replaced before the oldest open
 * or read in flight began.  Caller holds mu. */
static uint64_t oldest_active_tick(void);

static void prune_versions(struct object *o)
{
	uint64_t oldest = oldest_active_tick();
	unsigned drop = 0;

	while (drop + 1 < o->nv && o->v[drop].until < oldest)
		drop++;
	if (drop < 16)
		return;
	for (unsigned i = 0; i < drop; i++)
		free(o->v[i].ext);
	memmove(o->v, o->v + drop, (o->nv - drop) * sizeof(*o->v));
	o->nv -= drop;
}

/* ---- workers and their handles -------------------------------------------------- */

/* clang-format off */
enum op {
	OP_OPEN, OP_READ, OP_SEQ, OP_CLOSE, OP_VERIFY, OP_EVICT,
	OP_APPEND, OP_TRUNC, OP_REPLACE, OP_RENAME, OP_RENAME_MNT, OP_UNLINK, OP_UNLINK_MNT,
	OP_DAMAGE, OP_TRUNC_DATA, OP_RMRF, OP_FAULT, OP_RESTART, OP_N
};
static const char *const op_names[OP_N] = {
    "open", "read", "seq", "close", "verify", "evict",
    "append", "truncate", "replace", "rename", "rename_mnt", "unlink", "unlink_mnt",
    "damage", "trunc_data", "rmrf", "fault", "restart",
};
/* Per mille of the steps. */
static const unsigned op_weight[OP_N] = {
    100, 380, 60, 90, 10, 30,
    40, 30, 10, 20, 20, 10, 10,
    30, 10, 1, 30, 3,
};
/* clang-format on */
static bool op_on[OP_N];

struct mhandle {
	struct efs_inode *ino;
	struct object *obj;
	int fd;		    /* the handle's own source fd, -1 until a read needs it */
	uint64_t open_tick; /* the open began */
	uint64_t open_size; /* the object's size when the open was done: near
			     * what the cache validated, for straddling reads */
	uint64_t next_off;  /* for sequential reads */
};

struct window {
	const struct version **v;
	unsigned *cursor;
	unsigned n, cap;
	uint64_t min_size;		 /* smallest size a version had during the read */
	uint64_t zero_lo[8], zero_hi[8]; /* truncation races during the read */
	unsigned nzero;
};

struct trace_ent {
	uint64_t step, tick;
	enum op op;
	int slot;
	int obj;
	uint64_t off, len;
	int64_t res;
	char note[48];
};

struct worker {
	int id;
	pthread_t th;
	uint64_t rng;
	struct mhandle h[MAX_HANDLES];
	unsigned nh;
	_Atomic uint64_t steps;
	_Atomic int cur;	  /* the step now running (enum op), -1 between steps */
	_Atomic int64_t since_ms; /* when it began (0 between steps): the watchdog */
	uint64_t opening;	  /* tick an open began (protected by mu); 0 when none */
	uint64_t reading;	  /* tick a read began (protected by mu); 0 when none */
	struct trace_ent trace[TRACE_LEN];
	unsigned ntrace;
	unsigned char *buf;
	struct window win;
};

static struct worker workers[MAX_THREADS];
static unsigned nworkers;
static pthread_rwlock_t life; /* steps read-lock it; a restart write-locks it */
static _Atomic bool stop;
static _Atomic uint64_t progress;
/* The main thread's phase that may hang (joining, settling), and since when. */
static const char *_Atomic main_phase;
static _Atomic int64_t main_since_ms;
static _Atomic bool finished;

static int64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void main_phase_set(const char *what)
{
	main_since_ms = what ? now_ms() : 0;
	main_phase = what;
}

/* Counts for the summary. */
static _Atomic uint64_t n_opens, n_reads, n_bytes, n_changes, n_faults, n_restarts, n_verifies,
    n_evicts, n_damages, n_closes;

uint64_t oldest_active_tick(void)
{
	uint64_t t = UINT64_MAX;

	for (unsigned i = 0; i < nworkers; i++) {
		struct worker *w = &workers[i];

		if (w->opening && w->opening < t)
			t = w->opening;
		for (unsigned k = 0; k < w->nh; k++)
			if (w->h[k].open_tick < t)
				t = w->h[k].open_tick;
	}
	return t;
}

static void trace(struct worker *w, enum op op, int slot, int obj, uint64_t off, uint64_t len,
		  int64_t res, const char *note)
{
	struct trace_ent *t = &w->trace[w->ntrace++ % TRACE_LEN];

	*t = (struct trace_ent){w->steps, ticks, op, slot, obj, off, len, res, ""};
	if (note)
		snprintf(t->note, sizeof(t->note), "%s", note);
	if (S.trace)
		fprintf(stderr,
			"t%d #%" PRIu64 " @%" PRIu64 " %s %s obj %d [%" PRIu64 "+%" PRIu64
			"] -> %" PRId64 " %s\n",
			w->id, t->step, t->tick, op_names[op], slot >= 0 ? slot_names[slot] : "-",
			obj, off, len, res, t->note);
}

static void dump_trace(FILE *f, struct worker *w)
{
	unsigned n = w->ntrace < TRACE_LEN ? w->ntrace : TRACE_LEN;

	fprintf(f, "  last %u steps of thread %d (step tick op file object [off+len] -> result):\n",
		n, w->id);
	for (unsigned i = w->ntrace - n; i < w->ntrace; i++) {
		struct trace_ent *t = &w->trace[i % TRACE_LEN];

		fprintf(f,
			"    #%" PRIu64 " @%" PRIu64 " %s %s %d [%" PRIu64 "+%" PRIu64
			"] -> %" PRId64 " %s\n",
			t->step, t->tick, op_names[t->op], t->slot >= 0 ? slot_names[t->slot] : "-",
			t->obj, t->off, t->len, t->res, t->note);
	}
}

/* ---- failures ------------------------------------------------------------------- */

enum fkind {
	F_WRONG_BYTES,
	F_ZEROS,
	F_EOF_EARLY,
	F_CUT,
	F_READ_ERROR,
	F_OPEN_ERROR,
	F_LOOKUP,
	F_SOURCE_FD,
	F_EVICT,
	F_REST_FDS,
	F_REST_RSS,
	F_REST_ENTRIES,
	F_CACHING,
	F_SPARSE_RSS,
	F_N
};
/* clang-format off */
static const char *const fkind_names[F_N] = {
    "wrong bytes", "zeros", "EOF too early (rule 16)",
    "reply segment short (cache file changed under a pinned chunk)",
    "read error", "open error", "lookup", "source fd", "evict",
    "fds at rest", "RSS at rest (rule 17)", "entries at rest (rule 17, M1)",
    "caching after the run", "sparse file RSS (rule 17, H6)",
};
/* clang-format on */
static _Atomic unsigned nfail[F_N];
static pthread_mutex_t report_mu = PTHREAD_MUTEX_INITIALIZER;
#define MAX_PRINTED 3

static void replay_hint(FILE *f, struct worker *w)
{
	fprintf(f, "  replay: EFSCACHE_MODEL_SEED=%" PRIu64 " EFSCACHE_MODEL_THREADS=%u", S.seed,
		S.threads);
	if (w)
		fprintf(f, " EFSCACHE_MODEL_STEPS=%" PRIu64, (uint64_t)w->steps + 1);
	else if (S.steps)
		fprintf(f, " EFSCACHE_MODEL_STEPS=%" PRIu64, S.steps);
	if (strcmp(S.skip, ",,"))
		fprintf(f, " EFSCACHE_MODEL_SKIP=%.*s", (int)strlen(S.skip) - 2, S.skip + 1);
	if (strcmp(S.fault_ops, ",,"))
		fprintf(f, " EFSCACHE_MODEL_FAULT_OPS=%.*s", (int)strlen(S.fault_ops) - 2,
			S.fault_ops + 1);
	if (S.sparse != 4 * TiB)
		fprintf(f, " EFSCACHE_MODEL_SPARSE=%" PRIu64, S.sparse);
	fprintf(f, " tests/test_cache_model%s\n",
		S.threads > 1 ? "   (threads interleave differently each run: THREADS=1 replays "
				"exactly)"
			      : "");
}

/* Report a failure of kind k at worker w's current step (w NULL: at rest).
 * Returns whether the details should be printed (the first few of a kind);
 * the caller prints them and calls fail_end. */
static bool fail_begin(struct worker *w, enum fkind k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail_begin(struct worker *w, enum fkind k, const char *fmt, ...)
{
	unsigned n = ++nfail[k];
	va_list ap;

	if (n > MAX_PRINTED)
		return false;
	pthread_mutex_lock(&report_mu);
	fprintf(stderr, "\nMODEL FAILURE [%s] seed=%" PRIu64, fkind_names[k], S.seed);
	if (w)
		fprintf(stderr, " thread=%d step=%" PRIu64, w->id, w->steps);
	fprintf(stderr, " tick=%" PRIu64 "\n  ", (uint64_t)ticks);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	return true;
}

static void fail_end(struct worker *w)
{
	if (w)
		dump_trace(stderr, w);
	replay_hint(stderr, w);
	fflush(stderr);
	pthread_mutex_unlock(&report_mu);
}

static void failf(struct worker *w, enum fkind k, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void failf(struct worker *w, enum fkind k, const char *fmt, ...)
{
	char msg[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (fail_begin(w, k, "%s", msg))
		fail_end(w);
}

/* ---- the source: writing objects ----------------------------------------------- */

/* Write extent [start, end) of write wid of object obj at fd.  Caller
 * holds mut_mu (for the buffer). */
static unsigned char *write_buf;

static void write_extent(int fd, unsigned obj, uint32_t wid, uint64_t start, uint64_t end)
{
	unsigned char *buf = write_buf;

	for (uint64_t o = start; o < end;) {
		size_t n = end - o < MAX_READ ? (size_t)(end - o) : MAX_READ;

		fill_tags(buf, obj, wid, o, n);
		if (pwrite(fd, buf, n, (off_t)o) != (ssize_t)n) {
			fprintf(stderr, "model: writing the source failed: %s\n", strerror(errno));
			abort();
		}
		o += n;
	}
}

static uint64_t new_size_for(enum slot_kind k, uint64_t *rng)
{
	switch (k) {
	case SK_SMALL:
		return 1 + below(rng, 100 * KiB);
	case SK_MEDIUM:
		return 64 * KiB + below(rng, 640 * KiB);
	case SK_LARGE:
		return MiB + below(rng, 3 * MiB);
	default:
		return sparse_size + below(rng, 16 * MiB);
	}
}

/* The extents of a new object of kind k and size: one write, or for the
 * sparse file three islands of data in holes. */
static void new_layout(struct version *v, enum slot_kind k, uint64_t size)
{
	if (k != SK_SPARSE) {
		push_extent(v, 0, size, 1);
		return;
	}
	uint64_t mid = size / 3 & ~(uint64_t)4095;

	push_extent(v, 0, MiB, 1);
	push_extent(v, MiB, mid, 0);
	push_extent(v, mid, mid + 256 * KiB, 1);
	push_extent(v, mid + 256 * KiB, size - 512 * KiB, 0);
	push_extent(v, size - 512 * KiB, size, 1);
}

/* Make a new object of kind k under a temporary name, registered but not
 * reachable yet.  Returns it and its open fd in *fd; the caller renames it
 * into place.  Caller holds mut_mu. */
static struct object *make_object(enum slot_kind k, uint64_t *rng, char *tmp, size_t tmplen)
{
	static _Atomic unsigned tmpn;
	struct version proto = {0};
	struct object *o;
	struct version *v;
	struct stat st;
	uint64_t size = new_size_for(k, rng);
	int fd;

	snprintf(tmp, tmplen, ".tmp-%u", ++tmpn);
	fd = openat(srcfd, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "model: cannot create %s in the source: %s\n", tmp,
			strerror(errno));
		abort();
	}
	new_layout(&proto, k, size);
	pthread_mutex_lock(&mu);
	o = new_object(st.st_ino, k);
	o->next_wid = 1;
	v = add_version(o);
	*v = proto;
	v->how = MK_CREATE;
	v->size = size;
	v->from = tick();
	v->done = v->until = UINT64_MAX;
	note_size(o, size);
	pthread_mutex_unlock(&mu);
	if (ftruncate(fd, (off_t)size) < 0)
		abort();
	for (unsigned i = 0; i < proto.next; i++)
		if (proto.ext[i].wid)
			write_extent(fd, o->id, proto.ext[i].wid, proto.ext[i].start,
				     proto.ext[i].end);
	close(fd);
	return o;
}

/* Keep a deleted object's inode alive under the graveyard (outside SOURCE):
 * its number is never reused for a new file, so an inode number always
 * means one object.  Caller holds mut_mu. */
static void to_grave(struct object *o)
{
	char name[32];

	snprintf(name, sizeof(name), "o%u", o->id);
	if (linkat(srcfd, slot_names[o->kind], gravefd, name, 0) < 0) {
		fprintf(stderr, "model: link to the graveyard failed: %s\n", strerror(errno));
		abort();
	}
}

/* Empty graveyard objects nobody can read any more (no handle, no open in
 * flight that began before they lost their name): disk stays bounded.
 * Caller holds mut_mu. */
static void sweep_grave(void)
{
	char name[32];

	pthread_mutex_lock(&mu);
	uint64_t oldest = oldest_active_tick();

	for (unsigned i = 0; i < nobjs; i++) {
		struct object *o = objs[i];

		if (!o->unlinked_at || o->graved || o->handles || o->unlinked_at >= oldest)
			continue;
		o->graved = true;
		/* Its versions are never asked for again: the model's memory stays
		 * bounded by what can still be read (the RSS check counts it). */
		for (unsigned v = 0; v < o->nv; v++)
			free(o->v[v].ext);
		free(o->v);
		free(o->sizes);
		o->v = NULL;
		o->sizes = NULL;
		o->nv = o->cap = o->nsizes = o->capsizes = 0;
		snprintf(name, sizeof(name), "o%u", o->id);
		int fd = openat(gravefd, name, O_WRONLY | O_CLOEXEC);

		if (fd >= 0) {
			if (ftruncate(fd, 0) < 0)
				abort();
			close(fd);
		}
	}
	pthread_mutex_unlock(&mu);
}

/* ---- source changes (another host, or through the mount) --------------------- */

/* Put a new object at the name of slot k (over the old one, if any). */
static void change_rename(struct worker *w, enum slot_kind k, bool via_mount)
{
	struct object *o, *old;
	char tmp[32];
	uint64_t t2;

	pthread_mutex_lock(&mut_mu);
	o = make_object(k, &w->rng, tmp, sizeof(tmp));
	pthread_mutex_lock(&mu);
	old = slots[k].obj;
	pthread_mutex_unlock(&mu);
	if (old)
		to_grave(old);
	if (renameat(srcfd, tmp, srcfd, slot_names[k]) < 0)
		abort();
	pthread_mutex_lock(&mu);
	t2 = tick();
	o->v[0].done = t2;
	slots[k].obj = o;
	if (old)
		old->unlinked_at = t2;
	else
		slots[k].missing_end = t2;
	pthread_mutex_unlock(&mu);
	if (old && via_mount)
		core_source_gone(&V, src_dev, old->ino);
	trace(w, via_mount ? OP_RENAME_MNT : OP_RENAME, (int)k, (int)o->id, 0, o->v[0].size,
	      old ? (int64_t)old->id : -1, "new object; result: old object");
	sweep_grave();
	pthread_mutex_unlock(&mut_mu);
	n_changes++;
}

static void change_unlink(struct worker *w, enum slot_kind k, bool via_mount)
{
	struct object *old;

	pthread_mutex_lock(&mut_mu);
	pthread_mutex_lock(&mu);
	old = slots[k].obj;
	pthread_mutex_unlock(&mu);
	if (!old) {
		pthread_mutex_unlock(&mut_mu);
		change_rename(w, k, false); /* it comes back */
		return;
	}
	to_grave(old);
	pthread_mutex_lock(&mu);
	slots[k].unlink_from = tick();
	pthread_mutex_unlock(&mu);
	if (unlinkat(srcfd, slot_names[k], 0) < 0)
		abort();
	pthread_mutex_lock(&mu);
	old->unlinked_at = tick();
	slots[k].obj = NULL;
	pthread_mutex_unlock(&mu);
	if (via_mount)
		core_source_gone(&V, src_dev, old->ino);
	trace(w, via_mount ? OP_UNLINK_MNT : OP_UNLINK, (int)k, (int)old->id, 0, 0, 0, NULL);
	sweep_grave();
	pthread_mutex_unlock(&mut_mu);
	n_changes++;
}

/* Append len bytes of a new write, or truncate to size: one new version of
 * the object at slot k, made while readers run.  Caller holds mut_mu. */
static void change_in_place(struct worker *w, enum slot_kind k, enum how how, uint64_t target)
{
	struct object *o;
	struct version *v, *prev;
	uint64_t old, size, t2;
	uint32_t wid = 0;
	int fd;

	pthread_mutex_lock(&mu);
	o = slots[k].obj;
	prev = cur_version(o);
	old = prev->size;
	size = target;
	if (how == MK_APPEND)
		wid = ++o->next_wid;
	v = add_version(o);
	prev = &o->v[o->nv - 2]; /* add_version may have moved them */
	v->how = how;
	v->size = size;
	v->prev_size = old;
	copy_extents(v, prev, size < old ? size : old);
	if (size > old)
		push_extent(v, old, size, wid);
	v->from = tick();
	note_size(o, size);
	pthread_mutex_unlock(&mu);

	fd = openat(srcfd, slot_names[k], O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		abort();
	if (how == MK_APPEND)
		write_extent(fd, o->id, wid, old, size);
	else if (ftruncate(fd, (off_t)size) < 0)
		abort();
	close(fd);

	pthread_mutex_lock(&mu);
	t2 = tick();
	o->v[o->nv - 1].done = t2;
	o->v[o->nv - 2].until = t2;
	prune_versions(o);
	pthread_mutex_unlock(&mu);
	trace(w, how == MK_APPEND ? OP_APPEND : OP_TRUNC, (int)k, (int)o->id, old, size, 0,
	      "old size, new size");
	n_changes++;
}

/* Take mut_mu if slot k has a file (true); else create one and say false. */
static bool lock_present(struct worker *w, enum slot_kind k)
{
	bool r;

	pthread_mutex_lock(&mut_mu);
	pthread_mutex_lock(&mu);
	r = slots[k].obj != NULL;
	pthread_mutex_unlock(&mu);
	if (!r) {
		pthread_mutex_unlock(&mut_mu);
		change_rename(w, k, false);
	}
	return r;
}

static void change_append_or_trunc(struct worker *w, enum slot_kind k, enum op op)
{
	uint64_t old, target, lo, hi;
	struct object *o;

	if (!lock_present(w, k))
		return;
	pthread_mutex_lock(&mu);
	o = slots[k].obj;
	old = cur_version(o)->size;
	if (op == OP_APPEND) {
		lo = old + 1;
		hi = old + (k == SK_SMALL ? 32 * KiB : 300 * KiB);
	} else if (k == SK_SPARSE) {
		lo = old > 2 * MiB ? old - 2 * MiB : 1;
		hi = old + 2 * MiB;
	} else {
		lo = k == SK_SMALL ? 0 : old / 4;
		hi = old + (k == SK_LARGE ? MiB : 128 * KiB);
	}
	if (k != SK_SPARSE && hi > 6 * MiB)
		hi = 6 * MiB;
	if (lo > hi)
		lo = hi;
	target = fresh_size(o, lo + below(&w->rng, hi - lo + 1), lo, hi, &w->rng);
	pthread_mutex_unlock(&mu);
	if (target == old) {
		pthread_mutex_unlock(&mut_mu);
		return;
	}
	change_in_place(w, k, target > old && op == OP_APPEND ? MK_APPEND : MK_TRUNC, target);
	pthread_mutex_unlock(&mut_mu);
}

/* Rewritten in place: emptied, then written again (two versions). */
static void change_replace(struct worker *w, enum slot_kind k)
{
	uint64_t size;
	struct object *o;

	if (!lock_present(w, k))
		return;
	pthread_mutex_lock(&mu);
	o = slots[k].obj;
	size = fresh_size(o, new_size_for(k == SK_SPARSE ? SK_LARGE : k, &w->rng), 1, 6 * MiB,
			  &w->rng);
	pthread_mutex_unlock(&mu);
	if (cur_version(o)->size != 0) /* (mut_mu held: the versions stay put) */
		change_in_place(w, k, MK_TRUNC, 0);
	change_in_place(w, k, MK_APPEND, size);
	pthread_mutex_unlock(&mut_mu);
}

/* ---- reading and checking --------------------------------------------------------- */

/* The byte of version v at off (off < v->size); extents are sorted. */
static int version_byte(const struct object *o, const struct version *v, uint64_t off,
			unsigned *cursor)
{
	unsigned i = *cursor < v->next ? *cursor : 0;

	if (v->ext[i].start > off)
		i = 0;
	while (i < v->next && v->ext[i].end <= off)
		i++;
	*cursor = i;
	if (i == v->next || v->ext[i].start > off)
		return 0; /* cannot happen: extents cover [0, size) */
	return v->ext[i].wid ? tag_byte(o->id, v->ext[i].wid, off) : 0;
}

/* The versions of o a read may show: those that existed at some moment of
 * [open, end]; the sizes it may end at: from [start, end].  Caller holds mu. */
static void window_of(const struct object *o, uint64_t open, uint64_t start, uint64_t end,
		      struct window *win)
{
	win->n = 0;
	win->nzero = 0;
	win->min_size = UINT64_MAX;
	for (unsigned i = 0; i < o->nv; i++) {
		const struct version *v = &o->v[i];

		if (v->from > end || v->until < open)
			continue;
		if (win->n == win->cap) {
			win->cap = win->cap ? win->cap * 2 : 16;
			win->v = xrealloc(win->v, win->cap * sizeof(*win->v));
			win->cursor = xrealloc(win->cursor, win->cap * sizeof(*win->cursor));
		}
		win->cursor[win->n] = 0;
		win->v[win->n++] = v;
		if (v->until >= start && v->size < win->min_size)
			win->min_size = v->size;
		if (v->how == MK_TRUNC && v->size < v->prev_size && v->from <= end &&
		    v->done >= start && win->nzero < 8) {
			uint64_t hi = (v->size + TRUNC_FOLIO) & ~(TRUNC_FOLIO - 1);

			win->zero_lo[win->nzero] = v->size;
			win->zero_hi[win->nzero++] = hi < v->prev_size ? hi : v->prev_size;
		}
	}
}

static bool byte_ok(const struct object *o, struct window *win, uint64_t off, unsigned char b)
{
	for (unsigned i = 0; i < win->n; i++)
		if (off < win->v[i]->size && version_byte(o, win->v[i], off, &win->cursor[i]) == b)
			return true;
	if (b == 0)
		for (unsigned i = 0; i < win->nzero; i++)
			if (off >= win->zero_lo[i] && off < win->zero_hi[i])
				return true;
	return false;
}

/* Check what a read of [off, off+len) of handle h returned (n bytes or an
 * error) between ticks r1 and r2. */
static void check_read(struct worker *w, struct mhandle *h, uint64_t off, size_t len, ssize_t n,
		       const struct core_reply *rep, uint64_t r1, uint64_t r2)
{
	struct window *win = &w->win;
	const struct object *o = h->obj;
	uint64_t bad = 0, zeros = 0, first = 0, runs[6][2];
	unsigned nruns;
	bool gone;

	pthread_mutex_lock(&mu);
	gone = o->unlinked_at != 0;
	window_of(o, h->open_tick, r1, r2, win);
	if (n < 0) {
		pthread_mutex_unlock(&mu);
		/* The object lost its name: reopening it by name is ESTALE, as
		 * on NFS.  Anything else is the cache's doing. */
		if (gone && (n == -ESTALE || n == -ENOENT))
			return;
		char link[64], path[PATH_MAX] = "";
		ssize_t l;

		snprintf(link, sizeof(link), "/proc/self/fd/%d", h->fd);
		l = h->fd >= 0 ? readlink(link, path, sizeof(path) - 1) : -1;
		path[l > 0 ? l : 0] = '\0';
		failf(w, F_READ_ERROR,
		      "read of '%s' (object %u, inode %lu) [%" PRIu64 "+%zu] failed: %s (the "
		      "source had no fault; only cache-side faults were injected)\n"
		      "  size validated at open %" PRIu64 "; handle's source fd %d (%s); last "
		      "fault injected in this thread during the read: %s",
		      slot_names[o->kind], o->id, (unsigned long)o->ino, off, len,
		      strerror((int)-n), h->open_size, h->fd, path,
		      faultinj_last_failure()[0] ? faultinj_last_failure() : "none");
		return;
	}
	nruns = 0;
	for (size_t i = 0; i < (size_t)n; i++) {
		if (byte_ok(o, win, off + i, w->buf[i]))
			continue;
		if (!bad++)
			first = off + i;
		zeros += w->buf[i] == 0;
		if (nruns && runs[nruns - 1][1] == off + i)
			runs[nruns - 1][1]++;
		else if (nruns < 6) {
			runs[nruns][0] = off + i;
			runs[nruns++][1] = off + i + 1;
		}
	}
	if (bad) {
		char got[160], want[160] = "";

		describe_word_at(w->buf, off, (size_t)n, first, got, sizeof(got));
		for (unsigned i = 0; i < win->n && strlen(want) < 120; i++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want),
				 "%s%" PRIu64 "@[%" PRIu64 ",%s]", i ? " " : "", win->v[i]->size,
				 win->v[i]->from, win->v[i]->until == UINT64_MAX ? "now" : "..");
		if (fail_begin(
			w, zeros == bad ? F_ZEROS : F_WRONG_BYTES,
			"read of '%s' (object %u, inode %lu) [%" PRIu64 "+%zu] -> %zd: %" PRIu64
			" wrong bytes (%" PRIu64 " of them zeros), the first at offset %" PRIu64
			"; %s%s",
			slot_names[o->kind], o->id, (unsigned long)o->ino, off, len, n, bad, zeros,
			first, got, rep->cut ? "; a reply segment came back short" : "")) {
			fprintf(stderr,
				"  handle opened at tick %" PRIu64 ", read ticks %" PRIu64
				"..%" PRIu64
				"; versions allowed (size@[from,until]): %s\n  wrong ranges:",
				h->open_tick, r1, r2, want);
			for (unsigned i = 0; i < nruns; i++) {
				describe_word_at(w->buf, off, (size_t)n, runs[i][0], got,
						 sizeof(got));
				fprintf(stderr, " [%" PRIu64 ",%" PRIu64 ") (%s)", runs[i][0],
					runs[i][1], got);
			}
			fprintf(stderr, "\n  the reply's segments:");
			for (unsigned i = 0; i < rep->nseg; i++)
				fprintf(stderr, " %zu from %s", rep->seg[i].len,
					rep->seg[i].file ? "a cache file" : "memory");
			fprintf(stderr, "\n");
			fail_end(w);
		}
	} else if (rep->cut) {
		failf(w, F_CUT,
		      "read of '%s' (object %u) [%" PRIu64 "+%zu]: a segment of a cache file came "
		      "back short at %zd bytes (the reply would end there: EOF to the reader)",
		      slot_names[o->kind], o->id, off, len, n);
	}
	if ((size_t)n < len && off + (uint64_t)n < win->min_size && win->min_size != UINT64_MAX)
		failf(w, F_EOF_EARLY,
		      "read of '%s' (object %u, inode %lu) [%" PRIu64
		      "+%zu] returned %zd bytes: EOF "
		      "at %" PRIu64 ", but the source held at least %" PRIu64
		      " bytes during the whole read (opened at tick %" PRIu64 " with %" PRIu64
		      " bytes; read ticks %" PRIu64 "..%" PRIu64 ")",
		      slot_names[o->kind], o->id, (unsigned long)o->ino, off, len, n,
		      off + (uint64_t)n, win->min_size, h->open_tick, h->open_size, r1, r2);
	pthread_mutex_unlock(&mu);
}

/* One READ request, as op_read makes it: the cache first; if it says the
 * read must go to the source and the handle has no fd, open one (by the
 * object) and ask again. */
static ssize_t do_read(struct worker *w, struct mhandle *h, uint64_t off, size_t len, bool seq)
{
	static _Thread_local struct core_reply rep;
	uint64_t r1, r2;
	ssize_t n;

	pthread_mutex_lock(&mu);
	w->reading = r1 = tick();
	pthread_mutex_unlock(&mu);
	faultinj_forget_failure();
	n = core_read(&V, h->ino, h->fd, off, len, seq, w->buf, &rep);
	if (n == -EBADFD && h->fd < 0) {
		int fd = core_source_fd(&V, h->ino);

		if (fd < 0) {
			pthread_mutex_lock(&mu);
			bool gone = h->obj->unlinked_at != 0;
			pthread_mutex_unlock(&mu);
			if (!gone || (fd != -ESTALE && fd != -ENOENT))
				failf(
				    w, F_SOURCE_FD,
				    "opening the handle's source fd of '%s' (object %u) failed: %s",
				    slot_names[h->obj->kind], h->obj->id, strerror(-fd));
			n = fd;
		} else {
			h->fd = fd;
			faultinj_protect_fd(fd, true); /* a stray close of it aborts */
			n = core_read(&V, h->ino, h->fd, off, len, seq, w->buf, &rep);
		}
	}
	r2 = tick();
	check_read(w, h, off, len, n, &rep, r1, r2);
	pthread_mutex_lock(&mu);
	w->reading = 0;
	pthread_mutex_unlock(&mu);
	h->next_off = off + (n > 0 ? (uint64_t)n : 0);
	n_reads++;
	if (n > 0)
		n_bytes += (uint64_t)n;
	trace(w, seq ? OP_SEQ : OP_READ, (int)h->obj->kind, (int)h->obj->id, off, len, n,
	      rep.cut ? "cut" : NULL);
	return n;
}

/* Where to read: inside, across the size validated at open, past the end,
 * at the islands of the sparse file. */
static void pick_range(struct worker *w, struct mhandle *h, uint64_t *off, size_t *len)
{
	uint64_t size, anchor, r = below(&w->rng, 100);
	const struct version *v;

	pthread_mutex_lock(&mu);
	v = cur_version(h->obj);
	size = v->size;
	if (r < 40) {
		anchor = below(&w->rng, size ? size : 1);
		if (h->obj->kind == SK_SPARSE && v->next && chance(&w->rng, 80)) {
			const struct extent *e = &v->ext[below(&w->rng, v->next)];

			anchor = e->start + below(&w->rng, e->end - e->start);
		}
	} else if (r < 65) {
		anchor = h->open_size; /* straddling what the open validated */
	} else if (r < 85) {
		anchor = size;
	} else if (h->obj->kind == SK_SPARSE && v->next) {
		const struct extent *e = &v->ext[below(&w->rng, v->next)];

		anchor = chance(&w->rng, 50) ? e->start : e->end;
	} else {
		anchor = below(&w->rng, 2) ? 0 : size + below(&w->rng, 256 * KiB);
	}
	pthread_mutex_unlock(&mu);
	r = below(&w->rng, 100);
	*len = r < 30	? 1 + below(&w->rng, 4 * KiB)
	       : r < 85 ? 4 * KiB + below(&w->rng, 124 * KiB)
			: 128 * KiB + below(&w->rng, MAX_READ - 128 * KiB + 1);
	if (chance(&w->rng, 50)) /* aligned as the kernel's page cache asks */
		*len = (*len + 4095) & ~(size_t)4095;
	if (*len > MAX_READ)
		*len = MAX_READ;
	r = below(&w->rng, *len);
	*off = anchor > r ? anchor - r : 0;
	if (chance(&w->rng, 50))
		*off &= ~(uint64_t)4095;
}

/* ---- handles ------------------------------------------------------------------------ */

static void handle_close(struct worker *w, unsigned i)
{
	struct mhandle *h = &w->h[i];

	core_close(&V, h->ino);
	if (h->fd >= 0) {
		faultinj_protect_fd(h->fd, false);
		close(h->fd);
	}
	core_forget(&V, h->ino);
	trace(w, OP_CLOSE, (int)h->obj->kind, (int)h->obj->id, 0, 0, 0, NULL);
	pthread_mutex_lock(&mu);
	h->obj->handles--;
	w->h[i] = w->h[--w->nh];
	pthread_mutex_unlock(&mu);
	n_closes++;
}

/* LOOKUP then OPEN of slot k, as the kernel does: an open that finds the
 * name leading elsewhere (ESTALE) looks it up again. */
static void do_open(struct worker *w, enum slot_kind k)
{
	struct efs_inode *ino = NULL;
	struct object *o = NULL;
	uint64_t t0;
	bool keep, missing;
	int r = -ESTALE;

	if (w->nh == MAX_HANDLES)
		handle_close(w, (unsigned)below(&w->rng, w->nh));
	pthread_mutex_lock(&mu);
	w->opening = t0 = tick();
	pthread_mutex_unlock(&mu);
	for (int tries = 0; tries < 8 && r == -ESTALE; tries++) {
		r = core_lookup(&V, slot_names[k], &ino);
		if (r < 0)
			break;
		pthread_mutex_lock(&mu);
		o = obj_of_ino(ino->ino);
		pthread_mutex_unlock(&mu);
		r = core_open(&V, ino, &keep);
		if (r < 0)
			core_forget(&V, ino);
	}
	pthread_mutex_lock(&mu);
	/* The name was missing at some moment of the open if its last unlink
	 * is not over (the name is still missing, or the unlink began before
	 * our check) or it came back after the open began. */
	missing = slots[k].unlink_from &&
		  (slots[k].missing_end < slots[k].unlink_from || slots[k].missing_end >= t0);
	if (r == 0 && o) {
		struct mhandle *h = &w->h[w->nh++];

		*h = (struct mhandle){.ino = ino,
				      .obj = o,
				      .fd = -1,
				      .open_tick = t0,
				      .open_size = cur_version(o)->size};
		o->handles++;
	}
	w->opening = 0;
	pthread_mutex_unlock(&mu);
	trace(w, OP_OPEN, (int)k, o ? (int)o->id : -1, 0, 0, r, NULL);
	if (r == 0 && !o) {
		failf(w, F_LOOKUP,
		      "'%s': the lookup found inode %lu, which no object of the model has",
		      slot_names[k], (unsigned long)ino->ino);
		core_close(&V, ino);
		core_forget(&V, ino);
		return;
	}
	if (r == -ENOENT && missing)
		return;
	if (r == -ENOENT)
		failf(w, F_LOOKUP, "lookup of '%s' answered ENOENT while the file existed",
		      slot_names[k]);
	else if (r < 0)
		failf(w, F_OPEN_ERROR,
		      "open of '%s' failed: %s (only cache-side faults were injected: an open gets "
		      "the source's answer)",
		      slot_names[k], strerror(-r));
	else
		n_opens++;
}

/* ---- cache-side trouble ------------------------------------------------------------- */

static struct object *random_object(struct worker *w)
{
	struct object *o;

	pthread_mutex_lock(&mu);
	o = chance(&w->rng, 70) ? slots[below(&w->rng, SK_N)].obj
				: objs[nobjs - 1 - below(&w->rng, nobjs < 16 ? nobjs : 16)];
	pthread_mutex_unlock(&mu);
	return o;
}

static void do_damage(struct worker *w, enum op op)
{
	struct object *o = random_object(w);
	char key[33];
	int r, what;

	if (op == OP_RMRF) {
		r = chance(&w->rng, 50) ? faultinj_rm_data_files(V.cdir) : faultinj_rm_rf(V.cdir);
		trace(w, op, -1, -1, 0, 0, r, "rm -rf (half: data files only)");
		n_damages++;
		return;
	}
	if (!o)
		return;
	core_record_key(&V, src_dev, o->ino, key);
	what = op == OP_TRUNC_DATA
		   ? FAULTINJ_TRUNC_DATA
		   : (int)(const int[]){FAULTINJ_RM_DATA, FAULTINJ_RM_META, FAULTINJ_RM_SUBDIR,
					FAULTINJ_TRUNC_META}[below(&w->rng, 4)];
	r = faultinj_damage(V.cdir, key, (enum faultinj_damage)what,
			    (off_t)below(&w->rng, what == FAULTINJ_TRUNC_DATA ? 4 * MiB : 200));
	trace(w, op, (int)o->kind, (int)o->id, 0, (uint64_t)what, r,
	      (const char *[]){"rm data", "rm meta", "rm v1/XX", "truncate data",
			       "truncate meta"}[what]);
	n_damages++;
}

static void do_fault(struct worker *w)
{
	static const enum faultinj_op ops[] = {
	    FAULTINJ_OPEN,	FAULTINJ_OPEN,	   FAULTINJ_READ, FAULTINJ_WRITE,
	    FAULTINJ_FALLOCATE, FAULTINJ_TRUNCATE, FAULTINJ_SYNC, FAULTINJ_RENAME,
	    FAULTINJ_UNLINK,	FAULTINJ_MKDIR,	   FAULTINJ_STAT, FAULTINJ_STATVFS,
	};
	static const int errs[] = {EMFILE, ENOSPC, EIO, ENOENT};
	struct faultinj_rule r = {0};
	char note[48];

	if (chance(&w->rng, 15)) {
		faultinj_disarm_all();
		trace(w, OP_FAULT, -1, -1, 0, 0, 0, "disarm all");
		return;
	}
	r.op = ops[below(&w->rng, sizeof(ops) / sizeof(ops[0]))];
	if (strcmp(S.fault_ops, ",,")) { /* EFSCACHE_MODEL_FAULT_OPS: only those */
		char name[40];

		snprintf(name, sizeof(name), ",%s,", faultinj_op_name(r.op));
		if (!strstr(S.fault_ops, name))
			return;
	}
	r.err = r.op == FAULTINJ_OPEN ? (chance(&w->rng, 60) ? EMFILE : errs[below(&w->rng, 4)])
				      : errs[1 + below(&w->rng, 3)];
	r.kind = (enum faultinj_kind)(chance(&w->rng, 50)   ? FAULTINJ_ANY
				      : chance(&w->rng, 50) ? FAULTINJ_DATA
							    : FAULTINJ_META);
	r.after = below(&w->rng, 20);
	if (chance(&w->rng, 60)) {
		r.p = 1.0;
		r.count = 1 + below(&w->rng, 8);
	} else {
		r.p = 0.05 + (double)below(&w->rng, 30) / 100.0;
		r.count = 1 + below(&w->rng, 50);
		r.seed = rnd(&w->rng);
	}
	if (faultinj_arm(&r) == -ENOSPC) {
		faultinj_disarm_all();
		faultinj_arm(&r);
	}
	snprintf(note, sizeof(note), "%s %s kind=%s count=%" PRIu64, faultinj_op_name(r.op),
		 strerrorname_np(r.err), faultinj_kind_name(r.kind), r.count);
	trace(w, OP_FAULT, -1, -1, r.after, (uint64_t)(r.p * 100), 0, note);
	n_faults++;
}

/* verify lets its lock go between chunks: give other threads the moment. */
static int verify_progress(const struct cache_verify_report *rep, void *arg)
{
	struct worker *w = arg;

	(void)rep;
	progress++;
	if (S.threads > 1 && chance(&w->rng, 20))
		usleep((useconds_t)below(&w->rng, 200));
	return 0;
}

/* Close every handle of every worker; caller holds life for writing. */
static void close_all_handles(void)
{
	for (unsigned i = 0; i < nworkers; i++)
		while (workers[i].nh)
			handle_close(&workers[i], workers[i].nh - 1);
}

static void do_restart(struct worker *w)
{
	const enum verify_mode verify = chance(&w->rng, 25) ? VERIFY_ALWAYS : VERIFY_ONCE;

	pthread_rwlock_wrlock(&life);
	close_all_handles();
	faultinj_disarm_all();
	env_down(&V);
	V.cfg.verify = verify;
	env_up(&V);
	pthread_rwlock_unlock(&life);
	/* Not V.cfg.verify: another thread's restart may be writing it now. */
	trace(w, OP_RESTART, -1, -1, 0, 0, verify, "verify mode");
	n_restarts++;
}

/* ---- a worker --------------------------------------------------------------------------- */

static enum op pick_op(struct worker *w)
{
	unsigned total = 0, r;

	for (int i = 0; i < OP_N; i++)
		total += op_on[i] ? op_weight[i] : 0;
	r = (unsigned)below(&w->rng, total);
	for (int i = 0; i < OP_N; i++) {
		if (!op_on[i])
			continue;
		if (r < op_weight[i])
			return (enum op)i;
		r -= op_weight[i];
	}
	return OP_OPEN;
}

static void step(struct worker *w, enum op op)
{
	enum slot_kind k = (enum slot_kind)below(&w->rng, SK_N);

	if ((op == OP_READ || op == OP_SEQ || op == OP_CLOSE) && !w->nh)
		op = OP_OPEN;
	w->cur = (int)op;
	switch (op) {
	case OP_OPEN:
		do_open(w, k);
		break;
	case OP_READ: {
		struct mhandle *h = &w->h[below(&w->rng, w->nh)];
		uint64_t off;
		size_t len;

		pick_range(w, h, &off, &len);
		do_read(w, h, off, len, false);
		break;
	}
	case OP_SEQ: {
		/* A sequential reader: 128 KiB requests as the kernel's
		 * readahead sends them; the prefetch workers run ahead. */
		struct mhandle *h = &w->h[below(&w->rng, w->nh)];
		unsigned n = 1 + (unsigned)below(&w->rng, 24);

		if (chance(&w->rng, 30))
			h->next_off = h->obj->kind == SK_SPARSE && chance(&w->rng, 50)
					  ? (sparse_size / 3 & ~(uint64_t)4095)
					  : 0;
		for (unsigned i = 0; i < n && !stop; i++)
			if (do_read(w, h, h->next_off, 128 * KiB, true) <= 0)
				break; /* the end (or an error, reported) */
		break;
	}
	case OP_CLOSE:
		handle_close(w, (unsigned)below(&w->rng, w->nh));
		break;
	case OP_VERIFY: {
		struct cache_verify_report rep;

		core_verify_all(&V, verify_progress, w, &rep);
		trace(w, op, -1, -1, rep.chunks_checked, rep.chunks_bad, 0, "checked, bad");
		n_verifies++;
		break;
	}
	case OP_EVICT: {
		struct object *o = random_object(w);
		int r;

		if (!o)
			break;
		r = core_evict(&V, src_dev, o->ino);
		trace(w, op, (int)o->kind, (int)o->id, 0, 0, r, NULL);
		if (r < 0)
			failf(w, F_EVICT, "evict of object %u failed: %s", o->id, strerror(-r));
		n_evicts++;
		break;
	}
	case OP_APPEND:
	case OP_TRUNC:
		change_append_or_trunc(w, k, op);
		break;
	case OP_REPLACE:
		change_replace(w, k);
		break;
	case OP_RENAME:
	case OP_RENAME_MNT:
		change_rename(w, k, op == OP_RENAME_MNT);
		break;
	case OP_UNLINK:
	case OP_UNLINK_MNT:
		change_unlink(w, k, op == OP_UNLINK_MNT);
		break;
	case OP_DAMAGE:
	case OP_TRUNC_DATA:
	case OP_RMRF:
		do_damage(w, op);
		break;
	case OP_FAULT:
		do_fault(w);
		break;
	case OP_RESTART:
	case OP_N:
		break;
	}
	w->cur = -1;
}

/* Replay mode: the write-behind worker done before the next step, so that
 * one seed gives one sequence of cache states as far as it can. */
static void settle_write_behind(void)
{
	for (int i = 0; i < 10000 && core_write_behind(&V); i++)
		usleep(100);
}

/* Replay mode: also let the prefetch workers finish what the step queued
 * (they read the source through the fake: its read count stands still). */
static void settle_background(void)
{
	unsigned prev = fake_reads(&V.f), same = 0;

	settle_write_behind();
	for (int i = 0; i < 2000 && same < 3; i++) {
		unsigned n;

		usleep(1000);
		n = fake_reads(&V.f);
		same = n == prev && !core_write_behind(&V) ? same + 1 : 0;
		prev = n;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	while (!stop && (!S.steps || w->steps < S.steps)) {
		enum op op;

		w->steps++;
		op = pick_op(w);
		w->since_ms = now_ms();
		if (op == OP_RESTART) {
			w->cur = OP_RESTART;
			do_restart(w);
			w->cur = -1;
		} else {
			pthread_rwlock_rdlock(&life);
			step(w, op);
			pthread_rwlock_unlock(&life);
		}
		if (S.threads == 1)
			settle_background();
		w->since_ms = 0;
		progress++;
	}
	return NULL;
}

/* ---- the watchdog --------------------------------------------------------------------- */

/* Where every thread waits, from gdb when the machine has it (a hang's
 * report is worth little without it). */
static void dump_stacks(void)
{
	char cmd[256];

	if (system("command -v gdb >/dev/null 2>&1") != 0)
		return;
	fprintf(stderr, "  the threads' stacks (gdb):\n");
	fflush(stderr);
	snprintf(cmd, sizeof(cmd),
		 "timeout 120 gdb -p %ld -batch -ex 'thread apply all bt 16' 2>&1 | "
		 "grep -E '^Thread|^#' >&2",
		 (long)getpid());
	if (system(cmd) != 0)
		fprintf(stderr, "  (gdb could not attach)\n");
}

/* A step (of a worker) or a phase (of the main thread) that has not ended
 * for EFSCACHE_MODEL_HANG_SECONDS is a hang: say where everyone is, exit. */
static void *watchdog_main(void *arg)
{
	(void)arg;
	while (!finished) {
		int64_t now = now_ms(), limit = (int64_t)S.hang_s * 1000, ms = main_since_ms;
		const char *phase = main_phase;
		int hung = -2;

		sleep(1);
		for (unsigned i = 0; i < nworkers; i++) {
			int64_t t = workers[i].since_ms;

			if (t && now - t > limit)
				hung = (int)i;
		}
		if (ms && now - ms > limit)
			hung = -1;
		if (hung == -2)
			continue;
		fprintf(stderr,
			"\nMODEL FAILURE [hang] seed=%" PRIu64
			": %s%d has not ended a step for %u s "
			"(write-behind pending %" PRIu64 ")\n",
			S.seed, hung >= 0 ? "thread " : "the main thread, ", hung >= 0 ? hung : 0,
			S.hang_s, V.c ? core_write_behind(&V) : 0);
		if (hung == -1)
			fprintf(stderr, "  main thread: %s\n", phase ? phase : "?");
		for (unsigned i = 0; i < nworkers; i++) {
			struct worker *w = &workers[i];
			int cur = w->cur;
			int64_t t = w->since_ms;

			fprintf(stderr, "  thread %d at step %" PRIu64 ", running: %s for %.1f s\n",
				w->id, (uint64_t)w->steps,
				cur >= 0 ? op_names[cur] : "(between steps)",
				t ? (double)(now - t) / 1000.0 : 0.0);
			dump_trace(stderr, w);
		}
		replay_hint(stderr, hung >= 0 ? &workers[hung] : NULL);
		fflush(stderr);
		dump_stacks();
		if (getenv("EFSCACHE_MODEL_HANG_ABORT"))
			abort(); /* under gdb: thread apply all bt */
		_exit(1);
	}
	return NULL;
}

/* ---- a crash ------------------------------------------------------------------------- */

/* A crash of the core (SIGSEGV, SIGFPE, SIGBUS, SIGABRT) in a build without a
 * sanitizer: say which thread and step, print its stack (addresses for
 * addr2line -e test_cache_model -f) and every thread's last steps, then let
 * the signal end the process.  Not async-signal-safe beyond the stack: it is
 * the process's last act anyway. */
static void on_crash(int sig)
{
	void *frames[48];
	int n = backtrace(frames, 48), me = -1;

	for (unsigned i = 0; i < nworkers; i++)
		if (pthread_equal(workers[i].th, pthread_self()))
			me = (int)i;
	fprintf(stderr, "\nMODEL FAILURE [crash: %s] seed=%" PRIu64, strsignal(sig), S.seed);
	if (me >= 0)
		fprintf(stderr, " in thread %d at step %" PRIu64 " (%s)", me,
			(uint64_t)workers[me].steps,
			workers[me].cur >= 0 ? op_names[workers[me].cur] : "-");
	else
		fprintf(stderr, " in a thread of the cache (write-behind, prefetch, sweeper)");
	fprintf(stderr, "\n  stack (addr2line -f -i -e tests/test_cache_model +OFFSET):\n");
	fflush(stderr);
	backtrace_symbols_fd(frames, n, 2);
	for (unsigned i = 0; i < nworkers; i++)
		dump_trace(stderr, &workers[i]);
	replay_hint(stderr, me >= 0 ? &workers[me] : NULL);
	fflush(stderr);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void catch_crashes(void)
{
	void *warm[2];

	if (SANITIZED)
		return; /* the sanitizer's own report says more */
	/* The first backtrace() loads libgcc_s, which allocates: done here, not
	 * in a handler called by a crash inside malloc (it would wait forever
	 * for malloc's lock, and the watchdog would call the crash a hang). */
	backtrace(warm, 2);
	signal(SIGSEGV, on_crash);
	signal(SIGFPE, on_crash);
	signal(SIGBUS, on_crash);
	signal(SIGABRT, on_crash);
}

/* ---- at rest: fds, RSS, entries ------------------------------------------------------ */

static unsigned count_fds(char targets[][128], unsigned max)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char link[300];
		ssize_t len;

		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		if (targets && n < max) {
			snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
			len = readlink(link, targets[n], 127);
			targets[n][len > 0 ? len : 0] = '\0';
		}
		n++;
	}
	closedir(d);
	return n;
}

static uint64_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	uint64_t kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %" SCNu64, &kb) == 1)
			break;
	fclose(f);
	return kb * KiB;
}

/* Quiet: write-behind done, prefetch jobs (each holds an fd) run, memory
 * the allocator can give back given back. */
static void settle(void)
{
	unsigned prev = 0, same = 0;

	for (int i = 0; i < 200 && same < 5; i++) {
		unsigned n;

		settle_write_behind();
		usleep(20000);
		n = count_fds(NULL, 0);
		same = n == prev ? same + 1 : 0;
		prev = n;
	}
	malloc_trim(0);
}

/* ---- the sparse-file probe (rule 17) ------------------------------------------------ */

/* Open and read a PROBE_SPARSE sparse file, also after a restart (its record
 * then comes from disk): what does it cost in RSS while open?  Returns the
 * worse of the two. */
static uint64_t probe_sparse_rss(void)
{
	struct env pv;
	struct efs_inode *ino;
	uint64_t base, worst = 0;
	unsigned char *buf = xcalloc(1, CS);
	bool keep;
	int fd;

	env_init_full(&pv, 64 * MiB, 0, VERIFY_ONCE);
	fd = openat(pv.f.root, "probe", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
	CHECK(fd >= 0 && ftruncate(fd, (off_t)PROBE_SPARSE) == 0);
	CHECK(fd >= 0 && pwrite(fd, "probe", 5, 0) == 5);
	if (fd >= 0)
		close(fd);
	/* Three rounds, the last one checked: a damage made late in the run
	 * (cache_dir removed) is only found by the first store after it, which
	 * then fails and has cache_dir recreated; the round after may still
	 * meet chunks that store missed.  Caching must be back by the third. */
	for (int round = 0; round < 3; round++) {
		malloc_trim(0);
		base = rss_bytes();
		if (core_lookup(&pv, "probe", &ino) == 0) {
			if (core_open(&pv, ino, &keep) == 0) {
				ssize_t n = core_read(&pv, ino, -1, 0, CS, false, buf, NULL);

				if (n == -EBADFD) {
					int sfd = core_source_fd(&pv, ino);

					n = core_read(&pv, ino, sfd, 0, CS, false, buf, NULL);
					if (sfd >= 0)
						close(sfd);
				}
				CHECK(n == CS && !memcmp(buf, "probe", 5));
				wait_stored(&pv);
				malloc_trim(0);
				uint64_t now = rss_bytes();

				if (now > base && now - base > worst)
					worst = now - base;
				core_close(&pv, ino);
			}
			core_forget(&pv, ino);
		}
		env_down(&pv);
		env_up(&pv);
		usleep(100000); /* the startup index loads the record meanwhile */
	}
	env_fini(&pv);
	free(buf);
	return worst;
}

/* ---- the run ----------------------------------------------------------------------------- */

/* The run's directories live in /tmp/efs-model-PID: a run that crashed (as
 * they do on a broken core) leaves its own, which the next run removes once
 * that pid is gone. */
static char run_dir[40];

static void make_run_dir(void)
{
	DIR *d = opendir("/tmp");
	struct dirent *e;
	char cmd[300];
	long pid;

	while (d && (e = readdir(d))) {
		if (sscanf(e->d_name, "efs-model-%ld", &pid) != 1 || pid == (long)getpid() ||
		    kill((pid_t)pid, 0) == 0)
			continue;
		snprintf(cmd, sizeof(cmd), "rm -rf '/tmp/%s'", e->d_name);
		if (system(cmd) != 0)
			fprintf(stderr, "model: cannot remove /tmp/%s\n", e->d_name);
	}
	if (d)
		closedir(d);
	snprintf(run_dir, sizeof(run_dir), "/tmp/efs-model-%ld", (long)getpid());
	CHECK(mkdir(run_dir, 0700) == 0);
	env_tmp_parent = run_dir;
}

static void setup_source(void)
{
	uint64_t rng = S.seed * 7919;
	struct stat st;

	snprintf(grave, sizeof(grave), "%s-grave", V.src);
	CHECK(mkdir(grave, 0700) == 0);
	srcfd = open(V.src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	gravefd = open(grave, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(srcfd >= 0 && gravefd >= 0 && fstat(srcfd, &st) == 0);
	faultinj_protect_fd(srcfd, true); /* never closed: a stray close aborts */
	faultinj_protect_fd(gravefd, true);
	src_dev = st.st_dev;
	for (int k = 0; k < SK_N; k++) {
		struct worker w0 = {.rng = rng + (uint64_t)k};

		change_rename(&w0, (enum slot_kind)k, false);
	}
}

/* After the run: caching still works (the cache recovered from everything
 * done to it): a file read twice is served from the cache the second time. */
static void check_caching_works(void)
{
	struct efs_inode *ino;
	unsigned char *buf = xcalloc(1, MAX_READ);
	uint64_t size, reads0, reads1 = 0;
	bool keep;
	int fd = -1;

	pthread_mutex_lock(&mut_mu);
	if (!slots[SK_MEDIUM].obj) {
		pthread_mutex_unlock(&mut_mu);
		struct worker w0 = {.rng = S.seed};

		change_rename(&w0, SK_MEDIUM, false);
		pthread_mutex_lock(&mut_mu);
	}
	size = cur_version(slots[SK_MEDIUM].obj)->size;
	if (size > 512 * KiB) { /* well inside cache_size */
		struct worker w0 = {.rng = S.seed};

		size = fresh_size(slots[SK_MEDIUM].obj, 256 * KiB, 128 * KiB, 512 * KiB, &w0.rng);
		change_in_place(&w0, SK_MEDIUM, MK_TRUNC, size);
	}
	pthread_mutex_unlock(&mut_mu);
	/* Three rounds, the last one checked: a damage made late in the run
	 * (cache_dir removed) is only found by the first store after it, which
	 * then fails and has cache_dir recreated; the round after may still
	 * meet chunks that store missed.  Caching must be back by the third. */
	for (int round = 0; round < 3; round++) {
		if (core_lookup(&V, "medium", &ino) < 0 || core_open(&V, ino, &keep) < 0) {
			CHECK(!"medium can be opened after the run");
			break;
		}
		reads0 = fake_reads(&V.f);
		for (uint64_t off = 0; off < size; off += MAX_READ) {
			ssize_t n = core_read(&V, ino, fd, off, MAX_READ, false, buf, NULL);

			if (n == -EBADFD && fd < 0) {
				fd = core_source_fd(&V, ino);
				n = core_read(&V, ino, fd, off, MAX_READ, false, buf, NULL);
			}
			CHECK(n > 0);
		}
		reads1 = fake_reads(&V.f) - reads0;
		core_close(&V, ino);
		core_forget(&V, ino);
		if (fd >= 0)
			close(fd);
		fd = -1;
		settle_write_behind();
	}
	if (reads1)
		failf(
		    NULL, F_CACHING,
		    "after the run (faults off, handles closed) a third read of 'medium' (%" PRIu64
		    " bytes) still made %" PRIu64 " source reads: caching did not come back "
		    "(stats: cache_enospc %" PRIu64 ", cache_io_errors %" PRIu64
		    ", cache usage %" PRIu64 " of %" PRIu64 ")",
		    size, reads1, st(&V, ST_cache_enospc), st(&V, ST_cache_io_errors),
		    stat_line(&V, "cache_usage_bytes"), (uint64_t)CACHE_SIZE);
	free(buf);
}

int main(void)
{
	static char fds_base[256][128], fds_end[256][128];
	pthread_rwlockattr_t la;
	pthread_t dog;
	unsigned nfds_base, nfds_end;
	uint64_t rss_base, rss_end, probe, faults = 0;
	struct timespec t0, now;
	unsigned total = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	read_settings();
	for (int i = 0; i < OP_N; i++) {
		char name[40];

		snprintf(name, sizeof(name), ",%s,", op_names[i]);
		op_on[i] = !strstr(S.skip, name);
	}
	make_run_dir();
	catch_crashes();
	printf("test_cache_model: seed %" PRIu64 ", %u thread(s), %.0f s%s, skip '%s'\n", S.seed,
	       S.threads, S.seconds, S.steps ? " or the step limit" : "", S.skip);

	probe = probe_sparse_rss();
	sparse_size = S.sparse;
	if (probe > PROBE_RSS_BOUND) {
		failf(
		    NULL, F_SPARSE_RSS,
		    "opening a %" PRIu64 " GiB sparse file and reading 64 KiB of it cost %.1f MiB "
		    "of RSS while open (bound %" PRIu64 " MiB): per-file state follows the file's "
		    "size; this run uses a %" PRIu64 " GiB sparse file instead of %" PRIu64
		    " GiB so that it can go on",
		    PROBE_SPARSE / GiB, (double)probe / (double)MiB, PROBE_RSS_BOUND / MiB,
		    FALLBACK_SPARSE / GiB, S.sparse / GiB);
		sparse_size = FALLBACK_SPARSE < S.sparse ? FALLBACK_SPARSE : S.sparse;
	}

	env_init_full(&V, CACHE_SIZE, PREFETCH, VERIFY_ONCE);
	faultinj_set_dir(V.cdir);
	write_buf = xcalloc(1, MAX_READ);
	pthread_rwlockattr_init(&la);
	pthread_rwlockattr_setkind_np(&la, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&life, &la);
	setup_source();
	settle();
	nfds_base = count_fds(fds_base, 256);

	nworkers = S.threads;
	for (unsigned i = 0; i < nworkers; i++) {
		workers[i].id = (int)i;
		workers[i].rng = S.seed * 1000003 + i;
		workers[i].cur = -1;
		workers[i].buf = xcalloc(1, MAX_READ);
	}
	CHECK(pthread_create(&dog, NULL, watchdog_main, NULL) == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned i = 0; i < nworkers; i++)
		CHECK(pthread_create(&workers[i].th, NULL, worker_main, &workers[i]) == 0);
	/* The warm-up's RSS is the bound's base: the first tenth of the run. */
	rss_base = 0;
	for (;;) {
		double el;
		bool all_done = true;

		usleep(50000);
		clock_gettime(CLOCK_MONOTONIC, &now);
		el = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
		if (!rss_base && el >= S.seconds / 10) {
			pthread_rwlock_wrlock(&life);
			close_all_handles();
			malloc_trim(0);
			rss_base = rss_bytes();
			pthread_rwlock_unlock(&life);
		}
		for (unsigned i = 0; i < nworkers; i++)
			if (!S.steps || workers[i].steps < S.steps)
				all_done = false;
		if ((!S.steps && el >= S.seconds) || (S.steps && all_done) ||
		    (S.steps && el >= S.seconds * 10))
			break;
	}
	stop = true;
	main_phase_set("joining the workers");
	for (unsigned i = 0; i < nworkers; i++)
		pthread_join(workers[i].th, NULL);

	/* At rest. */
	main_phase_set("closing every handle, settling");
	close_all_handles();
	for (int i = 0; i < FAULTINJ_NOPS; i++)
		faults += faultinj_failures((enum faultinj_op)i);
	faultinj_disarm_all();
	settle();
	nfds_end = count_fds(fds_end, 256);
	rss_end = rss_bytes();
	if (nfds_end > nfds_base &&
	    fail_begin(NULL, F_REST_FDS,
		       "at rest %u fds are open, %u before the run; new:", nfds_end, nfds_base)) {
		for (unsigned i = 0; i < nfds_end && i < 256; i++) {
			bool old = false;

			for (unsigned j = 0; j < nfds_base && j < 256 && !old; j++)
				old = !strcmp(fds_end[i], fds_base[j]);
			if (!old)
				fprintf(stderr, "    %s\n", fds_end[i]);
		}
		fail_end(NULL);
	}
	if (!SANITIZED && rss_base && rss_end > rss_base + S.rss_slack)
		failf(NULL, F_REST_RSS,
		      "at rest RSS is %.1f MiB, %.1f MiB after the warm-up (bound: + %" PRIu64
		      " MiB); the cache holds %" PRIu64 " entries",
		      (double)rss_end / (double)MiB, (double)rss_base / (double)MiB,
		      S.rss_slack / MiB, core_entries(&V));
	if (core_entries(&V) > S.max_entries)
		failf(NULL, F_REST_ENTRIES,
		      "at rest (no handle open, every inode forgotten) the cache holds %" PRIu64
		      " entries (bound %" PRIu64 "); %u objects were made in the run",
		      core_entries(&V), S.max_entries, nobjs);
	main_phase_set("checking that caching works");
	check_caching_works();
	main_phase_set(NULL);

	printf("test_cache_model: %" PRIu64 " opens, %" PRIu64 " reads (%.1f MiB checked), %" PRIu64
	       " closes, %" PRIu64 " source changes (%u objects), %" PRIu64
	       " fault rules armed (%" PRIu64 " calls failed), %" PRIu64 " damages, %" PRIu64
	       " verifies, %" PRIu64 " evicts, %" PRIu64 " restarts; steps:",
	       (uint64_t)n_opens, (uint64_t)n_reads, (double)n_bytes / (double)MiB,
	       (uint64_t)n_closes, (uint64_t)n_changes, nobjs, (uint64_t)n_faults, faults,
	       (uint64_t)n_damages, (uint64_t)n_verifies, (uint64_t)n_evicts, (uint64_t)n_restarts);
	for (unsigned i = 0; i < nworkers; i++)
		printf(" %" PRIu64, workers[i].steps);
	printf("\n");
	for (int k = 0; k < F_N; k++) {
		total += nfail[k];
		if (nfail[k])
			printf("test_cache_model: FAILED %u x %s\n", nfail[k], fkind_names[k]);
	}
	CHECK(total == 0);
	if (total)
		replay_hint(stdout, NULL);

	main_phase_set("stopping the cache");
	env_fini(&V);
	finished = true;
	pthread_join(dog, NULL);
	for (unsigned i = 0; i < nworkers; i++) {
		free(workers[i].buf);
		free(workers[i].win.v);
		free(workers[i].win.cursor);
	}
	free(write_buf);
	{
		char cmd[200];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", run_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", run_dir);
	}
	return check_done("test_cache_model");
}
