/* twophase shard: cold FIFO + ghost FIFO + a hot ring served by a clock
 * hand with two-phase eviction (DESIGN.md mechanism 1;
 * docs/cache-policy.md).  This is the whole replacement engine for one
 * share of the cache, behind one eviction lock.  twophase.c splits the key
 * space over several of these (one for small caches), so that misses on
 * different cores mostly take different locks; everything here sees only
 * its own slots, numbered from 0, and its own keys.
 *
 * Layout, all preallocated, no per-entry pointers:
 *   slots      key (8 B), state (1 B), pin count (1 B) per resident block.
 *              The slot array itself is the hot ring: the hand walks the
 *              slot numbers and skips cold ones, so promoting a block from
 *              cold to hot flips a bit and its data never moves.
 *   index      slot-index.h: open addressing of (32-bit hash, slot) cells,
 *              1.5 per slot, read without locks.
 *   cold ring  FIFO of slot numbers: new blocks enter at the tail.
 *   ghost      4-byte fingerprints of evicted blocks in 8-entry buckets,
 *              each bucket a small FIFO kept in age order (a new entry
 *              shifts the others along, the oldest falls off): together an
 *              approximate FIFO that costs 4 bytes per remembered block.
 *              The top bit records whether the block left from cold or
 *              from hot.
 *
 * A hit raises the slot's two-bit reference level by one (one atomic
 * compare-and-swap), and stores nothing once the level is saturated: a hit
 * on a saturated block writes no shared memory at all, so hits scale with
 * cores.  A miss takes the eviction lock: a ghost hit enters hot directly,
 * anything else enters cold.  To free a slot, either cold's head leaves
 * (to hot if it was referenced while cold, otherwise to the ghost) or the
 * hand advances over hot: a referenced slot is demoted a level (phase one)
 * and only evicted if still unreferenced when the hand comes round again
 * (phase two); a block hit often survives up to three passes, as in
 * S3-FIFO's main queue.  A scan therefore only churns cold and the ghost.
 *
 * Admission contest (issue 15; off with params.classic): a ghost hit that
 * would take its slot from hot must have been seen more often than the
 * block the hand would evict, by a frequency sketch that counts misses and
 * the hand's demotions, all under the lock (contest() below).  Without it
 * a loop larger than the cache cycles through hot and misses every time.
 *
 * The contest applies whenever hot holds its share (capacity minus cold's
 * target): before, a ghost hit arriving while cold ran one over its
 * target entered hot unopposed and the next new block made the hand evict
 * a hot one, so on a loop half the ghost hits displaced the hot set.
 *
 * Hill climbing (params.climb, issue 15): cold's target is sized per
 * shard from the hit ratio, as Caffeine sizes W-TinyLFU's window.  The
 * requests of a sample are reported by the caller
 * (sl_twophase_count_requests, in batches if it likes: `asked` below) and
 * handed over with each miss, the misses counted under the lock; a hit
 * counts nothing (it writes at most its reference level, as before the
 * climber); at the end of a sample, the target moves by a step in the direction that last raised the hit ratio.
 * A reuse pattern LRU likes (a zigzag) wants a large cold, a loop larger
 * than the cache a small one and a steady hot set: no fixed split serves
 * both.  While hot is below its share (the target just shrank, or the
 * cache is warming up), blocks leaving cold that the sketch has seen
 * before fill it (params.fill_hot), so that a smaller target takes
 * effect even where nothing comes back within the ghost's reach.
 *
 * Adaptation (opt-in, params.adaptive): a ghost hit on a block that left from cold
 * says cold was too small; one that left from hot says hot was.  Each moves
 * cold's target by a step, as ARC moves its split between recency and
 * frequency.  On the shipped traces it loses to the fixed 10% split (see
 * docs/benchmarks.md), so it is off by default.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/sketch.h"
#include "cache/slot-index.h"
#include "cache/twophase-shard.h"
#include "common/util.h"

#define ST_FREE 0u
#define ST_COLD 1u
#define ST_HOT 2u
#define ST_WHERE 3u
#define ST_REF 4u           /* one reference level */
#define ST_LEVEL 12u        /* two bits: reference level 0..3 */
#define ST_DEAD 16u         /* removed while cold: freed when cold pops it */

/* Hill climbing, as Caffeine sizes W-TinyLFU's window: a first step of
 * 4.5% of the shard, decaying by 2% a sample, back to full size when the
 * hit ratio moves by 5 points (the workload changed).  Caffeine's first
 * step is 6.25%; on a pure Zipf of 400k requests in a cache of 8000 (five
 * samples) that first step up cost 1.8% more misses than the fixed split,
 * where the issue allows 1% (tests/sim/test-sim-adaptive.c); 4.5% costs
 * about 1% there and scores as well on the shipped traces. */
#define CLIMB_DECAY 0.98
#define CLIMB_RESTART 0.05
/* The first step's direction (issue 15, fourth round): the first sample
 * includes the warm-up, whose hit ratio rises whatever cold's size, so it
 * cannot say which way to go; the ghost hits of that sample can.  Down
 * (cold smaller) when the ghost hits on blocks that left from hot are more
 * than this share of the young ghost hits on blocks that left from cold
 * (those a cold twice as long would have kept), up otherwise.  On the
 * LIRS traces at 40% of the footprint zigzag's first sample has 0.85 (it
 * wants cold smaller), backf 1.1, sprite 0 (wants it larger); a pure Zipf
 * of 20000 blocks in 1978 0.14.  Counted on the miss path, first sample
 * only. */
#define CLIMB_FIRST_DOWN 0.7
/* Confirmed moves above home (issue 15, fifth round, rule B of
 * docs/cache-policy.md): on a stationary workload the change in hit ratio
 * from one sample to the next is mostly noise, and a climber that steps on
 * every sign random-walks.  Below its starting target (home) the walk is
 * cheap (a pure Zipf does better with cold at 1% than at 10%); above it,
 * hot loses its frequent blocks.  So above home the climber steps only
 * when the hit ratio changed by more than CLIMB_CONFIRM standard errors
 * of the difference of two samples (binomial); a sample that confirms
 * nothing takes the target CLIMB_RETURN of the way home, until the hit
 * ratio falls significantly below the last sample's or the one where the
 * return began: then back to where the return began. */
#define CLIMB_CONFIRM 3.0
#define CLIMB_RETURN 0.35

#define GHOST_WAYS 8
#define GHOST_HOT (1u << 31)
#define NONE SL_TWOPHASE_NONE

struct sl_tp_shard {
  /* Read by every lookup, written only at creation: kept apart from the
   * fields the miss path writes, so hits on other cores never lose this
   * cache line to an insert. */
  uint32_t n;                       /* slots: this shard's capacity */
  enum sl_cold_hit cold_hit;
  _Atomic uint64_t *keys;
  _Atomic uint8_t *state;
  _Atomic uint8_t *pins;
  struct sl_slot_index ix;
  uint32_t *cold_ring;
  uint32_t *ghost;
  uint32_t ghost_mask;              /* buckets - 1 */
  uint64_t ghost_nominal;
  size_t ghost_bytes;               /* as allocated, for the stats */
  bool fixed;
  uint64_t owner;                   /* the structure's id: whose request count (asked) */

  _Alignas(64) pthread_mutex_t lock; /* everything below */
  uint32_t cold_head, cold_count;
  uint32_t hot_count, bump, hand;
  uint32_t cold_target, cold_min, cold_max, step;
  bool contest;                     /* ghost hits contest for hot (!classic) */
  unsigned contest_min_age;
  unsigned margin;                  /* a newcomer must beat the victim by more */
  struct sl_sketch sketch;          /* frequencies, miss path only */
  uint64_t sketch_events, sketch_period;
  unsigned fill_hot;                /* unreferenced cold leavers fill hot's share */
  /* Hill climbing on cold_target (params.climb): requests and misses in
   * the current sample, the previous sample's hit ratio (< 0: none yet),
   * the signed step and the unrounded target, in slots. */
  uint64_t clk_len, clk_req, clk_miss;
  bool clk_reported;                /* some of this sample's requests were reported */
  double clk_prev, clk_step, clk_target, clk_first; /* clk_first: full step, a share */
  double clk_home;                  /* cold's starting target, where unconfirmed moves return */
  bool clk_returning;               /* the last move was part of a return home */
  double clk_from, clk_from_ratio;  /* where the return began, and its hit ratio */
  uint64_t clk_ghost_hot, clk_ghost_young; /* first sample's ghost hits by origin */
  struct sl_twophase_stats st;
};

/* Hits that had to store a reference level, counted per thread: a shared
 * counter would be a cache line every hitting core writes, which is what
 * kept hits from scaling.  get_stats reports the calling thread's count,
 * which covers every shard of every structure. */
static _Thread_local uint64_t ref_stores_here;

/* Requests this thread reported (sl_tp_count_requests) since its last
 * miss, for the hill climbers (params.climb), which need a hit ratio.  A
 * miss hands the count to the shard it inserts into: a thread's hits fall
 * on every shard, but so do its misses, so each shard is credited its
 * share on average.
 *
 * The caller reports its requests, one at a time or in batches, instead
 * of the hit path counting them (issue 15, fifth round): the count was
 * the only memory a hit on a saturated block wrote, and although it cost
 * two instructions a hit (callgrind), cache-bench's single-thread hit
 * rate on a quiet machine was 0.82x that of the hit path without it
 * (docs/cache-policy.md, "Hit path cost").  Callers count their requests
 * anyway (the simulator its trace, the daemon its reads, cache-bench its
 * batches), and reporting them once per batch costs the hit nothing.
 *
 * The count belongs to one structure, t->owner, an id no other structure
 * of the process ever has.  (It was the structure's address: a structure
 * created where a destroyed one had been inherited the count of the old
 * one's last hits.)  A report for another structure drops what was
 * pending rather than crediting it to the wrong one; a miss credits its
 * own structure's count only.  A thread that interleaves two structures
 * therefore credits each with some of its requests, which blurs both hit
 * ratios alike.  A miss with nothing reported counts as one request; a
 * sample in which nothing at all was reported has no hit ratio, and the
 * climber leaves cold's target where it is. */
/* initial-exec: the library is built position-independent, and the
 * default model would make every access call __tls_get_addr. */
static _Thread_local __attribute__((tls_model("initial-exec"))) struct {
  uint64_t owner;
  uint64_t n;
} asked;

void sl_tp_count_requests(uint64_t owner, uint64_t n)
{
  if (asked.owner != owner) {
    asked.owner = owner;
    asked.n = 0;
  }
  asked.n += n;
}

/* The requests to credit with a miss: those reported since the last one
 * (the miss's own among them, if the caller reports before it asks), at
 * least the miss itself; *REPORTED tells whether any were. */
static inline uint64_t take_requests(uint64_t owner, bool *reported)
{
  *reported = asked.owner == owner && asked.n;
  uint64_t n = *reported ? asked.n : 1;
  asked.owner = owner;
  asked.n = 0;
  return n;
}

#define mix sl_mix64

static uint32_t pow2_at_least(uint64_t v)
{
  uint64_t p = 1;
  while (p < v)
    p <<= 1;
  return p > UINT32_MAX ? 0 : (uint32_t)p;
}

struct sl_tp_shard *sl_tp_shard_create(const struct sl_twophase_params *p, uint32_t capacity,
                                       uint64_t owner)
{
  if (!p || capacity == 0 || capacity >= (1u << 30))
    return NULL;
  /* Whole cache lines: the lock of one shard never shares a line with
   * another shard's (or anything else's) data. */
  struct sl_tp_shard *t = sl_zalloc_lines(sizeof *t);
  if (!t)
    return NULL;
  t->n = capacity;
  t->owner = owner;
  double cf = p->cold_fraction > 0 ? p->cold_fraction : 0.10;
  double gf = p->ghost_fraction > 0 ? p->ghost_fraction : 1.0;
  /* The issue-15 tunables: 0 is the default, negative is off; the
   * classic split has none of them, ARC's rule (adaptive) no climber. */
  double climb = p->classic || p->adaptive || p->climb < 0 ? 0
                 : p->climb > 0 ? p->climb : SL_TWOPHASE_CLIMB;
  double climb_max = p->climb_max > 0 && p->climb_max < 1 ? p->climb_max
                                                          : SL_TWOPHASE_CLIMB_MAX;
  t->fixed = !p->adaptive && !(climb > 0);
  t->contest_min_age = p->contest_min_age;
  t->margin = p->contest_margin < 0 ? 0
              : p->contest_margin > 0 ? (unsigned)p->contest_margin : SL_TWOPHASE_MARGIN;
  t->cold_hit = p->cold_hit;
  t->cold_target = (uint32_t)(cf * t->n);
  if (t->cold_target < 1)
    t->cold_target = 1;
  t->cold_min = t->fixed ? t->cold_target : (t->n >= 100 ? t->n / 100 : 1);
  t->cold_max = t->fixed ? t->cold_target : t->n - t->n / 10;
  if (climb > 0)
    t->cold_max = (uint32_t)(climb_max * t->n);
  if (t->cold_max < t->cold_min)
    t->cold_max = t->cold_min;
  t->step = t->n >= 1000 ? t->n / 1000 : 1;
  t->fill_hot = p->classic || p->fill_hot < 0 ? 0
                : p->fill_hot > 0 ? (unsigned)p->fill_hot : SL_TWOPHASE_FILL;
  if (climb > 0) {
    t->clk_len = (uint64_t)(climb * t->n) + 1;
    t->clk_prev = -1;
    t->clk_first = p->climb_step > 0 && p->climb_step < 1 ? p->climb_step
                                                          : SL_TWOPHASE_CLIMB_STEP;
    t->clk_step = t->clk_first * t->n;
    t->clk_target = t->cold_target;
    t->clk_home = t->cold_target;
  }
  t->ghost_nominal = (uint64_t)(gf * t->n) + 1;
  uint32_t buckets = pow2_at_least(t->ghost_nominal / GHOST_WAYS + 1);
  if (!buckets)
    goto fail;
  t->ghost_mask = buckets - 1;
  t->keys = calloc(t->n, sizeof *t->keys);
  t->state = calloc(t->n, sizeof *t->state);
  t->pins = calloc(t->n, sizeof *t->pins);
  t->cold_ring = calloc(t->n, sizeof *t->cold_ring);
  t->ghost_bytes = (size_t)buckets * GHOST_WAYS * sizeof *t->ghost;
  t->ghost = calloc(1, t->ghost_bytes);
  t->contest = !p->classic;
  t->sketch_period = 10ull * t->n;
  if (t->contest && sl_sketch_init(&t->sketch, t->n) < 0)
    goto fail;
  if (!t->keys || !t->state || !t->pins || !sl_slot_index_init(&t->ix, t->n) ||
      !t->cold_ring || !t->ghost)
    goto fail;
  /* The miss path holds the lock for a few hundred nanoseconds: spinning
   * briefly beats sleeping in the kernel when another core holds it. */
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
  pthread_mutex_init(&t->lock, &attr);
  pthread_mutexattr_destroy(&attr);
  return t;
fail:
  sl_tp_shard_destroy(t);
  return NULL;
}

void sl_tp_shard_destroy(struct sl_tp_shard *t)
{
  if (!t)
    return;
  if (t->keys)
    pthread_mutex_destroy(&t->lock);
  free(t->keys);
  free(t->state);
  free(t->pins);
  sl_slot_index_fini(&t->ix);
  free(t->cold_ring);
  free(t->ghost);
  sl_sketch_free(&t->sketch);
  free(t);
}

/* ---- index (slot-index.h) --------------------------------------------- */

static uint32_t index_find(struct sl_tp_shard *t, uint64_t key, uint32_t *pos)
{
  return sl_slot_index_find(&t->ix, t->keys, key, sl_slot_index_hash(key), pos);
}

static void index_remove(struct sl_tp_shard *t, uint64_t key)
{
  uint32_t pos;
  if (index_find(t, key, &pos) != NONE)
    sl_slot_index_remove_at(&t->ix, pos);
}

/* ---- ghost ------------------------------------------------------------- */

static uint32_t ghost_fp(uint64_t key)
{
  return (uint32_t)(mix(key) >> 33) | 1u; /* 31 bits, never 0 */
}

static uint32_t *ghost_bucket(struct sl_tp_shard *t, uint64_t key)
{
  uint32_t b = (uint32_t)(mix(key ^ 0x5bd1e995u)) & t->ghost_mask;
  return &t->ghost[(size_t)b * GHOST_WAYS];
}

/* Newest first: the entry added GHOST_WAYS adds ago falls off the end.
 * Entries taken meanwhile leave holes that age out the same way. */
static void ghost_add(struct sl_tp_shard *t, uint64_t key, bool from_hot)
{
  uint32_t *b = ghost_bucket(t, key);
  uint32_t old[GHOST_WAYS]; /* fixed-size copies: inlined, no memmove call */
  memcpy(old, b, sizeof old);
  memcpy(b + 1, old, (GHOST_WAYS - 1) * sizeof *b);
  b[0] = ghost_fp(key) | (from_hot ? GHOST_HOT : 0);
}

/* 0 if KEY is not remembered, else 1 (left from cold) or 2 (from hot);
 * a found entry is forgotten.  *AGE is its place in the bucket (0 = the
 * newest): each bucket receives one entry in every `buckets` evictions,
 * so place i means it left roughly i * ghost / 8 evictions ago. */
static int ghost_take(struct sl_tp_shard *t, uint64_t key, int *age)
{
  uint32_t *b = ghost_bucket(t, key), fp = ghost_fp(key);
  for (int i = 0; i < GHOST_WAYS; i++)
    if (b[i] && (b[i] & ~GHOST_HOT) == fp) {
      int origin = (b[i] & GHOST_HOT) ? 2 : 1;
      b[i] = 0;
      *age = i;
      return origin;
    }
  return 0;
}

bool sl_tp_shard_in_ghost(struct sl_tp_shard *t, uint64_t key)
{
  pthread_mutex_lock(&t->lock);
  uint32_t *b = ghost_bucket(t, key), fp = ghost_fp(key);
  bool found = false;
  for (int i = 0; i < GHOST_WAYS; i++)
    found |= b[i] && (b[i] & ~GHOST_HOT) == fp;
  pthread_mutex_unlock(&t->lock);
  return found;
}

/* ---- eviction (under the lock) ----------------------------------------- */

static void cold_push(struct sl_tp_shard *t, uint32_t s)
{
  t->cold_ring[(t->cold_head + t->cold_count) % t->n] = s;
  t->cold_count++;
}

static uint32_t cold_pop(struct sl_tp_shard *t)
{
  uint32_t s = t->cold_ring[t->cold_head];
  t->cold_head = (t->cold_head + 1) % t->n;
  t->cold_count--;
  return s;
}

static bool pinned(struct sl_tp_shard *t, uint32_t s)
{
  return atomic_load_explicit(&t->pins[s], memory_order_acquire) != 0;
}

/* Let the block in slot S go, remembering it in the ghost. */
static void evict(struct sl_tp_shard *t, uint32_t s, bool from_hot,
                  uint64_t *evicted, bool *did_evict)
{
  uint64_t key = atomic_load_explicit(&t->keys[s], memory_order_relaxed);
  __builtin_prefetch(ghost_bucket(t, key), 1); /* overlaps the index walk */
  index_remove(t, key);
  ghost_add(t, key, from_hot);
  atomic_store_explicit(&t->state[s], ST_FREE, memory_order_release);
  *evicted = key;
  *did_evict = true;
}

/* Whether the unreferenced block in slot S, leaving cold, should fill hot
 * rather than go: hot is below its share even counting the block about to
 * enter cold, and the sketch has seen S's block often enough that it is
 * not a scan.  On a loop many times the cache nothing is hit or comes
 * back within the ghost's reach, so without this hot would stay empty. */
static bool fills_hot(struct sl_tp_shard *t, uint32_t s)
{
  if (!t->fill_hot || t->hot_count + t->cold_target + 1 >= t->n)
    return false;
  if (t->fill_hot == 1)
    return true;
  return t->contest &&
         sl_sketch_estimate(&t->sketch, atomic_load_explicit(&t->keys[s], memory_order_relaxed)) >=
             t->fill_hot;
}

/* Cold's head leaves: to hot if referenced, else out.  Returns a freed
 * slot or NONE (promoted or pinned: the caller loops). */
static uint32_t cold_step(struct sl_tp_shard *t, uint64_t *evicted, bool *did_evict)
{
  uint32_t s = cold_pop(t);
  uint8_t st = atomic_load_explicit(&t->state[s], memory_order_acquire);
  if (st & ST_DEAD) {
    atomic_store_explicit(&t->state[s], ST_FREE, memory_order_release);
    return s;
  }
  if (pinned(t, s)) {
    cold_push(t, s);
    return NONE;
  }
  if ((st & ST_LEVEL) || fills_hot(t, s)) {
    atomic_store_explicit(&t->state[s], ST_HOT, memory_order_release);
    t->hot_count++;
    t->st.promotions++;
    return NONE;
  }
  evict(t, s, false, evicted, did_evict);
  t->st.cold_evictions++;
  return s;
}

/* One sighting of KEY in the frequency sketch; all of it ages (halves)
 * after ten sightings per slot. */
static void count(struct sl_tp_shard *t, uint64_t key)
{
  sl_sketch_add(&t->sketch, key);
  if (++t->sketch_events >= t->sketch_period) {
    t->sketch_events = 0;
    sl_sketch_halve(&t->sketch);
  }
}

/* One step of the hand over the slot array. */
static uint32_t hand_step(struct sl_tp_shard *t, uint64_t *evicted, bool *did_evict)
{
  uint32_t s = t->hand;
  t->hand = t->hand + 1 == t->n ? 0 : t->hand + 1;
  uint8_t st = atomic_load_explicit(&t->state[s], memory_order_acquire);
  if ((st & ST_WHERE) == ST_FREE)
    return s; /* the hand takes a free slot */
  if ((st & ST_WHERE) != ST_HOT || pinned(t, s))
    return NONE;
  if (st & ST_LEVEL) { /* phase one: demote by a level */
    atomic_fetch_sub_explicit(&t->state[s], ST_REF, memory_order_acq_rel);
    t->st.demotions++;
    if (t->contest) /* the level it loses stands for hits: count them */
      count(t, atomic_load_explicit(&t->keys[s], memory_order_relaxed));
    return NONE;
  }
  /* Phase two, unless a hit slipped in since we looked. */
  uint8_t expect = st;
  if (!atomic_compare_exchange_strong(&t->state[s], &expect, ST_HOT))
    return NONE;
  evict(t, s, true, evicted, did_evict);
  t->hot_count--;
  t->st.hot_evictions++;
  return s;
}

/* A free slot, from cold's head or the hand.  FROM_COLD: a ghost hit lost
 * its contest, and the hot block it challenged must not go after all. */
static uint32_t take_slot(struct sl_tp_shard *t, bool from_cold_first, uint64_t *evicted,
                          bool *did_evict)
{
  if (t->bump < t->n)
    return t->bump++;
  /* Each slot is visited at most a few times before something gives:
   * a referenced entry is demoted on the first visit. */
  uint32_t cold_pinned = 0; /* pinned heads cold has sent round again */
  for (uint64_t guard = 0; guard < 4ull * t->n + 64; guard++) {
    bool from_cold = t->cold_count > cold_pinned &&
                     (from_cold_first || t->cold_count > t->cold_target || t->hot_count == 0);
    if (from_cold && pinned(t, t->cold_ring[t->cold_head]))
      cold_pinned++; /* once all of cold is pinned, the hand must find a slot */
    uint32_t s = from_cold ? cold_step(t, evicted, did_evict)
                           : hand_step(t, evicted, did_evict);
    if (s != NONE)
      return s;
  }
  return NONE; /* everything is pinned */
}

/* A ghost hit that would take its slot from hot: move the hand to the
 * block it would evict next (demoting referenced ones on the way, as it
 * always does) and let the two compete on frequency.  The newcomer wins
 * only if it was seen more often; a loser enters cold like a new block and
 * the hot block stays (the hand has passed it, so it is safe for a round).
 * On a loop larger than the cache, every block is seen equally often, so
 * the hot set stays put and keeps hitting, where admitting every ghost
 * hit would cycle the loop through hot and miss every time.  Returns the
 * slot freed for KEY in hot, or NONE with *ORIGIN cleared if KEY lost (the
 * caller then takes a slot the ordinary way). */
static uint32_t contest(struct sl_tp_shard *t, uint64_t key, int *origin,
                        uint64_t *evicted, bool *did_evict)
{
  for (uint64_t guard = 0; guard < 4ull * t->n + 64; guard++) {
    uint32_t s = t->hand;
    uint8_t st = atomic_load_explicit(&t->state[s], memory_order_acquire);
    if ((st & ST_WHERE) != ST_HOT || (st & ST_LEVEL) || pinned(t, s)) {
      uint32_t f = hand_step(t, evicted, did_evict);
      if (f != NONE)
        return f; /* a free slot: no contest needed */
      continue;
    }
    t->st.contests++;
    uint64_t victim = atomic_load_explicit(&t->keys[s], memory_order_relaxed);
    if (sl_sketch_estimate(&t->sketch, key) >
        sl_sketch_estimate(&t->sketch, victim) + t->margin)
      return hand_step(t, evicted, did_evict); /* phase two on the victim */
    t->st.rejections++;
    t->hand = t->hand + 1 == t->n ? 0 : t->hand + 1;
    *origin = 0;
    return NONE;
  }
  return NONE;
}

/* One sample of the hill climber is complete: step cold's target, in the
 * direction that raised the hit ratio last time, if the change in hit
 * ratio says anything (CLIMB_CONFIRM); otherwise return towards home. */
static void climb(struct sl_tp_shard *t)
{
  double ratio = 1.0 - (double)t->clk_miss / (double)t->clk_req;
  if (t->clk_prev < 0) {
    /* The first sample: the ghost hits choose the direction. */
    if ((double)t->clk_ghost_hot > CLIMB_FIRST_DOWN * (double)t->clk_ghost_young)
      t->clk_step = -t->clk_step;
    t->clk_target += t->clk_step;
  } else {
    double delta = ratio - t->clk_prev;
    double noise = CLIMB_CONFIRM * sqrt(2.0 * ratio * (1.0 - ratio) / (double)t->clk_req);
    bool rose = delta > noise, fell = delta < -noise;
    if (delta >= CLIMB_RESTART || delta <= -CLIMB_RESTART)
      t->clk_step = (t->clk_step < 0 ? -t->clk_first : t->clk_first) * t->n;
    else
      t->clk_step *= CLIMB_DECAY;
    if (t->clk_target <= t->clk_home + 0.5) {
      /* At or below home: the plain climber. */
      if (delta < 0)
        t->clk_step = -t->clk_step;
      t->clk_target += t->clk_step;
      t->clk_returning = false;
    } else if (t->clk_returning && (fell || ratio < t->clk_from_ratio - noise)) {
      /* Home is worse: back to where the return began, facing up. */
      if (t->clk_step < 0)
        t->clk_step = -t->clk_step;
      t->clk_target = t->clk_from;
      t->clk_returning = false;
    } else if (!t->clk_returning && (rose || fell)) {
      if (fell)
        t->clk_step = -t->clk_step;
      t->clk_target += t->clk_step;
    } else {
      if (!t->clk_returning) {
        t->clk_from = t->clk_target;
        t->clk_from_ratio = ratio;
        t->clk_returning = true;
      }
      t->clk_target = t->clk_home + (t->clk_target - t->clk_home) * (1.0 - CLIMB_RETURN);
      if (t->clk_step > 0)
        t->clk_step = -t->clk_step;
      if (fabs(t->clk_target - t->clk_home) < fabs(t->clk_step) / 2)
        t->clk_target = t->clk_home;
    }
  }
  t->clk_prev = ratio;
  if (t->clk_target < t->cold_min)
    t->clk_target = t->cold_min;
  if (t->clk_target > t->cold_max)
    t->clk_target = t->cold_max;
  t->cold_target = (uint32_t)t->clk_target;
  t->clk_req = t->clk_miss = 0;
  t->st.climbs++;
}

/* Move cold's target after a ghost hit of the given origin and AGE.
 * Classic adaptive mode (ARC's rule): any ghost hit from cold says cold
 * was too small, any from hot that hot was.  Default mode: a ghost hit
 * from cold counts only if it is young -- it left no more evictions ago
 * than cold holds blocks, so a cold twice as long would have kept it.
 * Reuse just beyond cold's reach (a zigzag, a burst re-read) grows cold
 * towards a FIFO of the whole cache, which is what LRU-friendly patterns
 * want; the even reuse of a loop larger than the cache comes back old and
 * leaves cold small, so the admission contest can keep a hot set. */
static void adapt(struct sl_tp_shard *t, int origin, int age)
{
  if (t->fixed || t->clk_len)
    return;
  if (origin == 1) {
    if (t->contest && (uint64_t)age * t->ghost_nominal / GHOST_WAYS > t->cold_target)
      return;
    t->cold_target = t->cold_target + t->step > t->cold_max ? t->cold_max
                                                            : t->cold_target + t->step;
  } else {
    t->cold_target = t->cold_target < t->cold_min + t->step ? t->cold_min
                                                            : t->cold_target - t->step;
  }
}

/* ---- operations (twophase-shard.h) ------------------------------------ */

/* HASH is always sl_slot_index_hash(KEY), computed once per operation by
 * the caller. */
static inline uint32_t lookup_hashed(struct sl_tp_shard *t, uint64_t key, uint32_t hash)
{
  uint32_t s = sl_slot_index_find(&t->ix, t->keys, key, hash, NULL);
  if (s == NONE)
    return NONE;
  uint8_t st = atomic_load_explicit(&t->state[s], memory_order_relaxed);
  if ((st & ST_WHERE) == ST_FREE || (st & ST_DEAD))
    return NONE; /* freed under us: the caller's insert sorts it out */
  if ((st & ST_LEVEL) == ST_LEVEL)
    return s; /* saturated: no store at all */
  if ((st & ST_WHERE) == ST_COLD && t->cold_hit == SL_COLD_HIT_IGNORE)
    return s;
  /* One attempt: if the hand or another hit changed the state meanwhile,
   * the reference is (or is about to be) recorded well enough. */
  if (!atomic_compare_exchange_strong_explicit(&t->state[s], &st, (uint8_t)(st + ST_REF),
                                               memory_order_relaxed, memory_order_relaxed))
    return s;
  ref_stores_here++;
  return s;
}

uint32_t sl_tp_shard_lookup(struct sl_tp_shard *t, uint64_t key, uint32_t hash)
{
  return lookup_hashed(t, key, hash);
}

static uint32_t insert_hashed(struct sl_tp_shard *t, uint64_t key, uint32_t hash, bool pin,
                              uint64_t *evicted, bool *did_evict)
{
  uint64_t ev_dummy;
  bool did_dummy;
  if (!evicted)
    evicted = &ev_dummy;
  if (!did_evict)
    did_evict = &did_dummy;
  *did_evict = false;
  /* Everything below runs under the one lock, so start fetching the line
   * it will certainly need (the key's ghost bucket) before waiting. */
  __builtin_prefetch(ghost_bucket(t, key), 1);
  pthread_mutex_lock(&t->lock);
  uint32_t s = sl_slot_index_find(&t->ix, t->keys, key, hash, NULL);
  if (s != NONE) {
    if (pin)
      atomic_fetch_add_explicit(&t->pins[s], 1, memory_order_acq_rel);
    pthread_mutex_unlock(&t->lock);
    return s;
  }
  bool reported;
  uint64_t requests = take_requests(t->owner, &reported);
  if (t->clk_len) {
    t->clk_req += requests;
    t->clk_miss++;
    t->clk_reported |= reported;
    if (t->clk_req >= t->clk_len) {
      if (t->clk_reported)
        climb(t);
      else /* nobody reports requests: no hit ratio to climb on */
        t->clk_req = t->clk_miss = 0;
      t->clk_reported = false;
    }
  }
  int age = 0, origin = ghost_take(t, key, &age);
  if (origin) {
    t->st.ghost_hits++;
    if (t->clk_len && t->clk_prev < 0) {
      if (origin == 2)
        t->clk_ghost_hot++;
      else if ((uint64_t)age * t->ghost_nominal / GHOST_WAYS <= t->cold_target)
        t->clk_ghost_young++;
    }
    adapt(t, origin, age);
  }
  s = NONE;
  bool lost = false;
  if (t->contest) {
    count(t, key);
    if (origin && t->bump >= t->n && t->hot_count > 0 &&
        t->hot_count + t->cold_target + 1 >= t->n && (unsigned)age >= t->contest_min_age) {
      s = contest(t, key, &origin, evicted, did_evict);
      lost = origin == 0;
    }
  }
  if (s == NONE)
    s = take_slot(t, lost, evicted, did_evict);
  if (s == NONE) {
    pthread_mutex_unlock(&t->lock);
    return NONE;
  }
  atomic_store_explicit(&t->keys[s], key, memory_order_relaxed);
  atomic_store_explicit(&t->pins[s], pin ? 1 : 0, memory_order_relaxed);
  if (origin) {
    atomic_store_explicit(&t->state[s], ST_HOT, memory_order_release);
    t->hot_count++;
  } else {
    atomic_store_explicit(&t->state[s], ST_COLD, memory_order_release);
    cold_push(t, s);
  }
  sl_slot_index_insert(&t->ix, hash, s);
  t->st.inserts++;
  pthread_mutex_unlock(&t->lock);
  return s;
}

uint32_t sl_tp_shard_insert(struct sl_tp_shard *t, uint64_t key, uint32_t hash, bool pin,
                            uint64_t *evicted, bool *did_evict)
{
  return insert_hashed(t, key, hash, pin, evicted, did_evict);
}

bool sl_tp_shard_access(struct sl_tp_shard *t, uint64_t key, uint32_t hash)
{
  if (lookup_hashed(t, key, hash) != NONE)
    return true;
  insert_hashed(t, key, hash, false, NULL, NULL);
  return false;
}

uint32_t sl_tp_shard_pin(struct sl_tp_shard *t, uint64_t key, uint32_t hash)
{
  pthread_mutex_lock(&t->lock);
  uint32_t s = sl_slot_index_find(&t->ix, t->keys, key, hash, NULL);
  if (s != NONE)
    atomic_fetch_add_explicit(&t->pins[s], 1, memory_order_acq_rel);
  pthread_mutex_unlock(&t->lock);
  return s;
}

void sl_tp_shard_unpin(struct sl_tp_shard *t, uint32_t slot)
{
  if (slot < t->n)
    atomic_fetch_sub_explicit(&t->pins[slot], 1, memory_order_acq_rel);
}

bool sl_tp_shard_remove(struct sl_tp_shard *t, uint64_t key, uint32_t hash)
{
  pthread_mutex_lock(&t->lock);
  uint32_t pos, s = sl_slot_index_find(&t->ix, t->keys, key, hash, &pos);
  bool ok = s != NONE && !pinned(t, s);
  if (ok) {
    sl_slot_index_remove_at(&t->ix, pos);
    uint8_t st = atomic_load_explicit(&t->state[s], memory_order_relaxed);
    if ((st & ST_WHERE) == ST_COLD) {
      /* Still queued in cold: freed when cold pops it. */
      atomic_store_explicit(&t->state[s], ST_COLD | ST_DEAD, memory_order_release);
    } else {
      atomic_store_explicit(&t->state[s], ST_FREE, memory_order_release);
      t->hot_count--;
    }
  }
  pthread_mutex_unlock(&t->lock);
  return ok;
}

uint32_t sl_tp_shard_test_hand_step(struct sl_tp_shard *t, uint64_t *evicted,
                                    bool *did_evict)
{
  pthread_mutex_lock(&t->lock);
  *did_evict = false;
  uint32_t s = hand_step(t, evicted, did_evict);
  pthread_mutex_unlock(&t->lock);
  return *did_evict ? s : NONE;
}

uint64_t sl_tp_shard_slot_key(struct sl_tp_shard *t, uint32_t slot)
{
  return slot < t->n ? atomic_load_explicit(&t->keys[slot], memory_order_acquire) : 0;
}

char sl_tp_shard_where(struct sl_tp_shard *t, uint32_t slot)
{
  if (slot >= t->n)
    return 0;
  uint8_t st = atomic_load_explicit(&t->state[slot], memory_order_relaxed);
  if (st & ST_DEAD)
    return 0;
  switch (st & ST_WHERE) {
  case ST_COLD: return 'c';
  case ST_HOT: return 'h';
  default: return 0;
  }
}

size_t sl_tp_shard_meta_bytes(struct sl_tp_shard *t)
{
  /* key, state, pin count and cold-ring entry per slot, plus the index */
  return (size_t)t->n * (sizeof(uint64_t) + 2 + sizeof(uint32_t)) + sl_slot_index_bytes(&t->ix) +
         (t->contest ? sl_sketch_bytes(&t->sketch) : 0);
}

uint32_t sl_tp_shard_capacity(const struct sl_tp_shard *t)
{
  return t->n;
}

void sl_tp_shard_get_stats(struct sl_tp_shard *t, struct sl_twophase_stats *s)
{
  pthread_mutex_lock(&t->lock);
  *s = t->st;
  s->ref_stores = ref_stores_here;
  s->cold = t->cold_count;
  s->hot = t->hot_count;
  s->cold_target = t->cold_target;
  s->resident = 0;
  s->pinned = 0;
  for (uint32_t i = 0; i < t->n; i++) {
    uint8_t st = atomic_load_explicit(&t->state[i], memory_order_relaxed);
    if ((st & ST_WHERE) != ST_FREE && !(st & ST_DEAD)) {
      s->resident++;
      s->pinned += pinned(t, i);
    }
  }
  s->bytes_per_resident = (double)sl_tp_shard_meta_bytes(t) / t->n;
  s->ghost = 0;
  for (size_t i = 0; i < (size_t)(t->ghost_mask + 1) * GHOST_WAYS; i++)
    s->ghost += t->ghost[i] != 0;
  /* Measured, not declared: what the ghost allocation takes over what it
   * can hold (every way of every bucket the mask can reach). */
  s->ghost_entries = ((uint64_t)t->ghost_mask + 1) * GHOST_WAYS;
  s->ghost_bytes = t->ghost_bytes;
  s->bytes_per_ghost = (double)s->ghost_bytes / (double)s->ghost_entries;
  pthread_mutex_unlock(&t->lock);
}

int sl_tp_shard_check(struct sl_tp_shard *t, char *msg, size_t len)
{
  pthread_mutex_lock(&t->lock);
  int ret = -1;
  uint32_t cold = 0, hot = 0, live = 0, indexed = 0;
  for (uint32_t s = 0; s < t->n; s++) {
    uint8_t st = atomic_load(&t->state[s]);
    uint32_t where = st & ST_WHERE;
    if (where == ST_COLD)
      cold++;
    if (where == ST_HOT)
      hot++;
    if (where == ST_FREE && atomic_load(&t->pins[s]) && s < t->bump) {
      snprintf(msg, len, "slot %u is free but pinned", s);
      goto out;
    }
    if (where != ST_FREE && !(st & ST_DEAD)) {
      live++;
      uint64_t k = atomic_load(&t->keys[s]);
      if (index_find(t, k, NULL) != s) {
        snprintf(msg, len, "slot %u (key %" PRIu64 ") is not found through the index", s, k);
        goto out;
      }
    }
  }
  indexed = sl_slot_index_count(&t->ix);
  for (uint32_t i = 0; i < t->cold_count; i++) {
    uint32_t s = t->cold_ring[(t->cold_head + i) % t->n];
    if ((atomic_load(&t->state[s]) & ST_WHERE) != ST_COLD) {
      snprintf(msg, len, "cold ring holds slot %u which is not cold", s);
      goto out;
    }
  }
  if (cold != t->cold_count || hot != t->hot_count) {
    snprintf(msg, len, "counts: %u cold and %u hot slots, recorded %u and %u",
             cold, hot, t->cold_count, t->hot_count);
    goto out;
  }
  if (indexed != live) {
    snprintf(msg, len, "index has %u entries for %u resident blocks", indexed, live);
    goto out;
  }
  ret = 0;
out:
  pthread_mutex_unlock(&t->lock);
  return ret;
}
