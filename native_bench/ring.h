/* ring.h: header-only C implementation of the shmfetch ring segment (docs/RING.md, layout version 1).
 *
 * docs/RING.md is the contract; this file follows it byte for byte and must never differ from it. The
 * Python side (shmfetch/ring.py) is the other implementation; tests/test_interop.py runs both against
 * each other.
 *
 * Two protocols run over the same layout:
 *   - semaphore mode (ring_put / ring_get): what shmfetch runs. One sem_wait(free) per slot, one
 *     sem_post(fill) per record; the semaphores are the synchronisation.
 *   - batched mode (ringb_*): native_bench only. head/tail are C11 atomics (release store, acquire load),
 *     many records per head store, and a semaphore is posted only when the other side announced it is
 *     going to sleep in its *_sleeping word. The two modes are never mixed on one segment.
 *
 * Only one thread of one process may produce and only one may consume on a ring.
 */
#ifndef SHMFETCH_RING_H
#define SHMFETCH_RING_H

#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The spec says little-endian and we store integers with plain loads/stores, so refuse anything else
 * rather than silently writing a different layout. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ring.h implements a little-endian layout and has no byte-swapping path"
#endif

/* head/tail live in shared memory as plain u64 fields that Python writes with struct.pack_into. We view
 * them as _Atomic uint64_t; that is only sound if the atomic type has the same size and is lock-free
 * (a lock-based atomic would put a lock nowhere in our layout). */
_Static_assert(sizeof(_Atomic uint64_t) == 8, "_Atomic uint64_t must be 8 bytes to overlay the layout");
_Static_assert(sizeof(_Atomic uint32_t) == 4, "_Atomic uint32_t must be 4 bytes to overlay the layout");
#if ATOMIC_LLONG_LOCK_FREE != 2
#error "64-bit atomics must be lock-free to live in shared memory"
#endif

#define RING_MAGIC "SHMFRING"
#define RING_VERSION 1u
#define RING_HEADER_SIZE 256u
#define RING_REC_HDR 8u
#define RING_FLAG_MORE 1u
#define RING_CLOSED 1u

/* Field offsets, straight from the table in docs/RING.md. */
#define RING_OFF_MAGIC 0
#define RING_OFF_VERSION 8
#define RING_OFF_SLOT_SIZE 12
#define RING_OFF_NSLOTS 16
#define RING_OFF_FLAGS 20
#define RING_OFF_CREATOR_PID 24
#define RING_OFF_HEAD 64
#define RING_OFF_TAIL 128
#define RING_OFF_CONSUMER_SLEEPING 192
#define RING_OFF_PRODUCER_SLEEPING 196

#define RING_NAME_MAX 200

typedef struct ring {
    char name[RING_NAME_MAX];
    uint8_t *base;     /* start of the mapping */
    size_t map_size;   /* 256 + nslots * slot_size */
    uint8_t *data;     /* base + 256 */
    uint32_t slot_size, nslots, mask;
    uint64_t data_bytes;
    uint64_t max_fragment; /* nslots * slot_size / 4 - 8, as the Python producer uses */
    sem_t *free_sem, *fill_sem;
    /* Each end keeps its own position privately and only publishes it (like ring.py). */
    uint64_t head, tail;
    /* Batched mode only: the last position of the other side we saw, and records since our last publish. */
    uint64_t seen_tail, seen_head;
    uint32_t unpublished;
    int owner;
} ring_t;

static inline _Atomic uint64_t *ring_head_p(const ring_t *r) {
    return (_Atomic uint64_t *)(void *)(r->base + RING_OFF_HEAD);
}
static inline _Atomic uint64_t *ring_tail_p(const ring_t *r) {
    return (_Atomic uint64_t *)(void *)(r->base + RING_OFF_TAIL);
}
static inline _Atomic uint32_t *ring_flags_p(const ring_t *r) {
    return (_Atomic uint32_t *)(void *)(r->base + RING_OFF_FLAGS);
}
static inline _Atomic uint32_t *ring_csleep_p(const ring_t *r) {
    return (_Atomic uint32_t *)(void *)(r->base + RING_OFF_CONSUMER_SLEEPING);
}
static inline _Atomic uint32_t *ring_psleep_p(const ring_t *r) {
    return (_Atomic uint32_t *)(void *)(r->base + RING_OFF_PRODUCER_SLEEPING);
}

static inline uint32_t ring_rd32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline void ring_wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* Slots a record of n payload bytes takes. */
static inline uint64_t ring_slots_for_record(const ring_t *r, uint64_t n) {
    return (n + RING_REC_HDR + r->slot_size - 1) / r->slot_size;
}

/* sem_wait that survives signals, like shmfetch.ring.acquire: EINTR is not a failure. */
static inline int ring_sem_wait(sem_t *s) {
    while (sem_wait(s) != 0) {
        if (errno != EINTR) return -1;
    }
    return 0;
}

static inline int ring_sem_name(char *out, size_t cap, const char *name, const char *suffix) {
    int n = snprintf(out, cap, "%s%s", name, suffix);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

/* Fill in the derived fields from the header; validate what a foreign segment could get wrong. */
static inline int ring_init_view(ring_t *r, size_t seg_size) {
    if (seg_size < RING_HEADER_SIZE || memcmp(r->base + RING_OFF_MAGIC, RING_MAGIC, 8) != 0 ||
        ring_rd32(r->base + RING_OFF_VERSION) != RING_VERSION) {
        errno = EPROTO;
        return -1;
    }
    r->slot_size = ring_rd32(r->base + RING_OFF_SLOT_SIZE);
    r->nslots = ring_rd32(r->base + RING_OFF_NSLOTS);
    if (r->slot_size < 64 || (r->slot_size & (r->slot_size - 1)) || r->nslots < 2 ||
        (r->nslots & (r->nslots - 1)) ||
        (uint64_t)RING_HEADER_SIZE + (uint64_t)r->nslots * r->slot_size > seg_size) {
        errno = EPROTO;
        return -1;
    }
    r->mask = r->nslots - 1;
    r->data = r->base + RING_HEADER_SIZE;
    r->data_bytes = (uint64_t)r->nslots * r->slot_size;
    r->max_fragment = r->data_bytes / 4 > RING_REC_HDR ? r->data_bytes / 4 - RING_REC_HDR : 1;
    r->head = atomic_load_explicit(ring_head_p(r), memory_order_acquire);
    r->tail = atomic_load_explicit(ring_tail_p(r), memory_order_acquire);
    r->seen_head = r->head;
    r->seen_tail = r->tail;
    r->unpublished = 0;
    return 0;
}

static inline int ring_open_sems(ring_t *r, int oflag, unsigned nslots) {
    char sn[RING_NAME_MAX + 8];
    r->free_sem = r->fill_sem = SEM_FAILED;
    if (ring_sem_name(sn, sizeof sn, r->name, ".free") != 0) return -1;
    r->free_sem = oflag ? sem_open(sn, oflag, 0600, nslots) : sem_open(sn, 0);
    if (r->free_sem == SEM_FAILED) return -1;
    if (ring_sem_name(sn, sizeof sn, r->name, ".fill") != 0) return -1;
    r->fill_sem = oflag ? sem_open(sn, oflag, 0600, 0) : sem_open(sn, 0);
    if (r->fill_sem == SEM_FAILED) return -1;
    return 0;
}

/* Remove the segment and both semaphores by name, ignoring ones already gone (like unlink_ring). */
static inline void ring_unlink(const char *name) {
    char sn[RING_NAME_MAX + 8];
    shm_unlink(name);
    if (ring_sem_name(sn, sizeof sn, name, ".free") == 0) sem_unlink(sn);
    if (ring_sem_name(sn, sizeof sn, name, ".fill") == 0) sem_unlink(sn);
}

static inline void ring_close(ring_t *r) {
    if (r->base) munmap(r->base, r->map_size);
    if (r->free_sem && r->free_sem != SEM_FAILED) sem_close(r->free_sem);
    if (r->fill_sem && r->fill_sem != SEM_FAILED) sem_close(r->fill_sem);
    r->base = NULL;
    r->free_sem = r->fill_sem = NULL;
}

/* Create a new ring: segment O_CREAT|O_EXCL 0600, header, semaphores free=nslots and fill=0. */
static inline int ring_create(ring_t *r, const char *name, uint32_t nslots, uint32_t slot_size) {
    memset(r, 0, sizeof *r);
    if (nslots < 2 || (nslots & (nslots - 1)) || slot_size < 64 || (slot_size & (slot_size - 1)) ||
        strlen(name) >= RING_NAME_MAX) {
        errno = EINVAL;
        return -1;
    }
    strcpy(r->name, name);
    size_t size = RING_HEADER_SIZE + (size_t)nslots * slot_size;
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) return -1;
    if (ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        shm_unlink(name);
        return -1;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        shm_unlink(name);
        return -1;
    }
    r->base = p;
    r->map_size = size;
    /* ftruncate gives zeroed pages, so reserved fields, head, tail and the sleeping words are 0. */
    memcpy(r->base + RING_OFF_MAGIC, RING_MAGIC, 8);
    ring_wr32(r->base + RING_OFF_VERSION, RING_VERSION);
    ring_wr32(r->base + RING_OFF_SLOT_SIZE, slot_size);
    ring_wr32(r->base + RING_OFF_NSLOTS, nslots);
    ring_wr32(r->base + RING_OFF_FLAGS, 0);
    ring_wr32(r->base + RING_OFF_CREATOR_PID, (uint32_t)getpid());
    if (ring_init_view(r, size) != 0 || ring_open_sems(r, O_CREAT | O_EXCL, nslots) != 0) {
        int e = errno;
        ring_close(r);
        ring_unlink(name);
        errno = e;
        return -1;
    }
    r->owner = 1;
    return 0;
}

/* Open a ring someone else (e.g. the Python master) created. */
static inline int ring_attach(ring_t *r, const char *name) {
    memset(r, 0, sizeof *r);
    if (strlen(name) >= RING_NAME_MAX) {
        errno = EINVAL;
        return -1;
    }
    strcpy(r->name, name);
    int fd = shm_open(name, O_RDWR, 0);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return -1;
    r->base = p;
    r->map_size = (size_t)st.st_size;
    if (ring_init_view(r, (size_t)st.st_size) != 0 || ring_open_sems(r, 0, 0) != 0) {
        int e = errno;
        ring_close(r);
        errno = e;
        return -1;
    }
    return 0;
}

/* Copy a record's payload into the data area at slot `pos`, wrapping past the end to offset 256; the
 * 8-byte header never wraps because it starts on a slot boundary and slot_size >= 64. */
static inline void ring_write_record(ring_t *r, uint64_t pos, const void *src, uint32_t n, uint32_t flags) {
    uint8_t *rec = r->data + (size_t)(pos & r->mask) * r->slot_size;
    size_t room = (size_t)(r->data + r->data_bytes - (rec + RING_REC_HDR));
    size_t first = n < room ? n : room;
    memcpy(rec + RING_REC_HDR, src, first);
    if (first < n) memcpy(r->data, (const uint8_t *)src + first, n - first);
    /* Payload first, then the header, as the spec orders it. */
    ring_wr32(rec, n);
    ring_wr32(rec + 4, flags);
}

/* Read the header at slot `pos`. Returns 0, or -1 (EPROTO) on a corrupt length. */
static inline int ring_read_header(const ring_t *r, uint64_t pos, uint32_t *n, uint32_t *flags, uint64_t *k) {
    const uint8_t *rec = r->data + (size_t)(pos & r->mask) * r->slot_size;
    *n = ring_rd32(rec);
    *flags = ring_rd32(rec + 4);
    *k = ring_slots_for_record(r, *n);
    if (*k > r->nslots) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

static inline void ring_read_payload(const ring_t *r, uint64_t pos, void *dst, uint32_t n) {
    const uint8_t *rec = r->data + (size_t)(pos & r->mask) * r->slot_size;
    size_t room = (size_t)(r->data + r->data_bytes - (rec + RING_REC_HDR));
    size_t first = n < room ? n : room;
    memcpy(dst, rec + RING_REC_HDR, first);
    if (first < n) memcpy((uint8_t *)dst + first, r->data, n - first);
}

/* A growable buffer the consumer reassembles messages into. */
typedef struct ring_buf {
    uint8_t *p;
    size_t len, cap;
} ring_buf_t;

static inline int ring_buf_reserve(ring_buf_t *b, size_t need) {
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Consumer, both modes: append the record at tail (header, then payload) to *out and step tail past its
 * k slots (the caller publishes tail and frees the slots its own way). */
static inline int ring_take_record(ring_t *r, ring_buf_t *out, uint32_t *flags, uint64_t *k) {
    uint32_t n;
    if (ring_read_header(r, r->tail, &n, flags, k) != 0) return -1;
    if (ring_buf_reserve(out, out->len + n) != 0) return -1;
    ring_read_payload(r, r->tail, out->p + out->len, n);
    out->len += n;
    r->tail += *k;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------
 * Semaphore mode (docs/RING.md "Protocol"): what shmfetch runs.
 * ------------------------------------------------------------------------------------------------- */

static inline int ring_put_record(ring_t *r, const void *src, uint32_t n, uint32_t flags) {
    uint64_t k = ring_slots_for_record(r, n);
    for (uint64_t i = 0; i < k; i++)
        if (ring_sem_wait(r->free_sem) != 0) return -1;
    ring_write_record(r, r->head, src, n, flags);
    r->head += k;
    /* Release store: a reader that only looks at head (stats, close check) sees a consistent position.
     * The payload's visibility to the consumer comes from the sem_post below. */
    atomic_store_explicit(ring_head_p(r), r->head, memory_order_release);
    return sem_post(r->fill_sem);
}

/* Publish one message, cut into fragments of at most max_fragment bytes (flag MORE on all but the last),
 * exactly as ring.py's put does, so a message of any size streams through a small ring. */
static inline int ring_put(ring_t *r, const void *src, size_t n) {
    const uint8_t *p = src;
    size_t pos = 0;
    for (;;) {
        size_t chunk = n - pos < r->max_fragment ? n - pos : r->max_fragment;
        int more = pos + chunk < n;
        if (ring_put_record(r, p + pos, (uint32_t)chunk, more ? RING_FLAG_MORE : 0) != 0) return -1;
        pos += chunk;
        if (!more) return 0;
    }
}

/* Take one message into *out (replacing its contents). Returns 1 for a message, 0 after the close
 * wake-up (head == tail once fill was taken), -1 on error. */
static inline int ring_get(ring_t *r, ring_buf_t *out) {
    out->len = 0;
    for (;;) {
        if (ring_sem_wait(r->fill_sem) != 0) return -1;
        uint64_t head = atomic_load_explicit(ring_head_p(r), memory_order_acquire);
        if (head == r->tail) return 0; /* the close wake-up: no record behind this count */
        uint32_t flags;
        uint64_t k;
        if (ring_take_record(r, out, &flags, &k) != 0) return -1;
        atomic_store_explicit(ring_tail_p(r), r->tail, memory_order_release);
        for (uint64_t i = 0; i < k; i++)
            if (sem_post(r->free_sem) != 0) return -1;
        if (!(flags & RING_FLAG_MORE)) return 1;
    }
}

/* Creator only: set CLOSED, then post fill once; the consumer drains and stops at head == tail. */
static inline int ring_close_wake(ring_t *r) {
    atomic_fetch_or_explicit(ring_flags_p(r), RING_CLOSED, memory_order_seq_cst);
    return sem_post(r->fill_sem);
}

/* ---------------------------------------------------------------------------------------------------
 * Batched mode (docs/RING.md "Batched mode"): native_bench only.
 *
 * head/tail carry the synchronisation: the producer writes records, then publishes them all with one
 * release store of head; the consumer's acquire load of head makes every payload before it visible.
 * Symmetrically for tail and slot reuse. Semaphores are only a way to sleep: a side that finds nothing
 * to do sets its *_sleeping word, issues a full fence, re-checks the other side's position, and only
 * then sem_waits. The other side, after publishing a position, issues a full fence and posts only if
 * the sleeping word is set. The two fences make it Dekker's pattern: at least one side sees the other's
 * store, so a wake-up is never lost. A post may also arrive for a sleeper that had already seen the new
 * position and left; that stale count only makes a later sem_wait return at once, and every wait sits
 * in a loop that re-checks the position, so it costs one extra loop turn, never correctness.
 * ------------------------------------------------------------------------------------------------- */

#ifndef RINGB_PUBLISH_EVERY
#define RINGB_PUBLISH_EVERY 32 /* records per head/tail store when the ring is streaming */
#endif

static inline void ring_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Called once by the creator before using a fresh ring in batched mode: the free semaphore starts at
 * nslots for semaphore mode; in batched mode it is only a wake-up, so drop those counts. */
static inline void ringb_prepare(ring_t *r) {
    while (sem_trywait(r->free_sem) == 0) {
    }
}

/* Wake `sem` if the other side said it sleeps on it. The exchange makes one post per announced sleep. */
static inline void ringb_wake(_Atomic uint32_t *sleeping, sem_t *sem) {
    atomic_thread_fence(memory_order_seq_cst); /* our position store before the load of sleeping */
    if (atomic_load_explicit(sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(sleeping, 0, memory_order_relaxed))
        sem_post(sem);
}

static inline void ringb_publish_head(ring_t *r) {
    atomic_store_explicit(ring_head_p(r), r->head, memory_order_release);
    r->unpublished = 0;
    ringb_wake(ring_csleep_p(r), r->fill_sem);
}

static inline void ringb_publish_tail(ring_t *r) {
    atomic_store_explicit(ring_tail_p(r), r->tail, memory_order_release);
    r->unpublished = 0;
    ringb_wake(ring_psleep_p(r), r->free_sem);
}

/* Producer: one record, published lazily (every RINGB_PUBLISH_EVERY records, or before waiting). */
static inline int ringb_put_record(ring_t *r, const void *src, uint32_t n, uint32_t flags, int spin) {
    uint64_t k = ring_slots_for_record(r, n);
    if (r->head + k - r->seen_tail > r->nslots) {
        r->seen_tail = atomic_load_explicit(ring_tail_p(r), memory_order_acquire);
        if (r->head + k - r->seen_tail > r->nslots) {
            /* Publish what we have before waiting, or the consumer could wait for it forever. */
            if (r->unpublished) ringb_publish_head(r);
            for (int i = 0;; i++) {
                r->seen_tail = atomic_load_explicit(ring_tail_p(r), memory_order_acquire);
                if (r->head + k - r->seen_tail <= r->nslots) break;
                if (i < spin) { /* the consumer is usually mid-batch: a short spin beats a futex */
                    ring_cpu_relax();
                    continue;
                }
                atomic_store_explicit(ring_psleep_p(r), 1, memory_order_relaxed);
                atomic_thread_fence(memory_order_seq_cst);
                r->seen_tail = atomic_load_explicit(ring_tail_p(r), memory_order_acquire);
                if (r->head + k - r->seen_tail <= r->nslots) {
                    atomic_store_explicit(ring_psleep_p(r), 0, memory_order_relaxed);
                    break;
                }
                if (ring_sem_wait(r->free_sem) != 0) return -1;
            }
        }
    }
    ring_write_record(r, r->head, src, n, flags);
    r->head += k;
    if (++r->unpublished >= RINGB_PUBLISH_EVERY) ringb_publish_head(r);
    return 0;
}

static inline int ringb_put(ring_t *r, const void *src, size_t n, int spin) {
    const uint8_t *p = src;
    size_t pos = 0;
    for (;;) {
        size_t chunk = n - pos < r->max_fragment ? n - pos : r->max_fragment;
        int more = pos + chunk < n;
        if (ringb_put_record(r, p + pos, (uint32_t)chunk, more ? RING_FLAG_MORE : 0, spin) != 0) return -1;
        pos += chunk;
        if (!more) return 0;
    }
}

/* Producer: make everything written so far visible now (end of a burst, or each message when latency
 * matters). */
static inline void ringb_flush(ring_t *r) {
    if (r->unpublished) ringb_publish_head(r);
}

/* Producer: flush, then set CLOSED; the consumer stops once it finds the ring empty and CLOSED set. */
static inline void ringb_close(ring_t *r) {
    ringb_publish_head(r);
    atomic_fetch_or_explicit(ring_flags_p(r), RING_CLOSED, memory_order_seq_cst);
    ringb_wake(ring_csleep_p(r), r->fill_sem);
}

/* Consumer: 1 = a message in *out, 0 = closed and drained, -1 = error. */
static inline int ringb_get(ring_t *r, ring_buf_t *out, int spin) {
    out->len = 0;
    for (;;) {
        if (r->tail == r->seen_head) {
            r->seen_head = atomic_load_explicit(ring_head_p(r), memory_order_acquire);
            if (r->tail == r->seen_head) {
                /* Nothing seen: hand back the slots we hold before waiting, or the producer may wait
                 * for them while we wait for it. */
                if (r->unpublished) ringb_publish_tail(r);
                for (int i = 0;; i++) {
                    /* Load flags before head: CLOSED is set after the final head store. */
                    uint32_t fl = atomic_load_explicit(ring_flags_p(r), memory_order_acquire);
                    r->seen_head = atomic_load_explicit(ring_head_p(r), memory_order_acquire);
                    if (r->tail != r->seen_head) break;
                    if (fl & RING_CLOSED) return 0;
                    if (i < spin) {
                        ring_cpu_relax();
                        continue;
                    }
                    atomic_store_explicit(ring_csleep_p(r), 1, memory_order_relaxed);
                    atomic_thread_fence(memory_order_seq_cst);
                    fl = atomic_load_explicit(ring_flags_p(r), memory_order_acquire);
                    r->seen_head = atomic_load_explicit(ring_head_p(r), memory_order_acquire);
                    if (r->tail != r->seen_head || (fl & RING_CLOSED)) {
                        atomic_store_explicit(ring_csleep_p(r), 0, memory_order_relaxed);
                        continue; /* loop re-checks and returns or breaks */
                    }
                    if (ring_sem_wait(r->fill_sem) != 0) return -1;
                }
            }
        }
        uint32_t flags;
        uint64_t k;
        if (ring_take_record(r, out, &flags, &k) != 0) return -1;
        if (++r->unpublished >= RINGB_PUBLISH_EVERY) ringb_publish_tail(r);
        if (!(flags & RING_FLAG_MORE)) return 1;
    }
}

#endif /* SHMFETCH_RING_H */
