/* ring.h: header-only C implementation of the shmfetch ring (docs/RING.md, layout and protocol version 2).
 *
 * docs/RING.md is the contract; this file follows it byte for byte and must never differ from it. The
 * Python side (shmfetch/ipc/ring.py) is the other implementation; tests/test_interop.py runs both against
 * each other. There is one protocol, the one the daemon runs: head/tail are the synchronisation (C11
 * release stores, acquire loads), and the two semaphores only wake a side that announced, in its
 * *_sleeping word, that it is about to sleep.
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
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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
#define RING_VERSION 2u
#define RING_HEADER_SIZE 256u
#define RING_REC_HDR 8u
#define RING_FLAG_MORE 1u
#define RING_CLOSED 1u
#define RING_MEMBARRIER 2u /* flags bit 1: sleepers fence with membarrier (docs/RING.md, "Fences") */

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

#ifndef RING_SPIN
/* Re-checks (each after a pause instruction) before a side announces that it sleeps. 200 keeps a side
 * awake across a peer's round trip, so an idle ping-pong costs no futex wake-up; it runs only on the step
 * from busy to empty, so an idle ring still sleeps in the kernel. Measured: docs/BENCHMARKS.md. */
#define RING_SPIN 200
#endif

typedef struct ring {
    char name[RING_NAME_MAX];
    uint8_t *base;     /* start of the mapping */
    size_t map_size;   /* 256 + nslots * slot_size */
    uint8_t *data;     /* base + 256 */
    uint32_t slot_size, nslots, mask;
    uint64_t data_bytes;
    uint64_t max_fragment; /* nslots * slot_size / 4 - 8, as the Python producer uses */
    sem_t *free_sem, *fill_sem;
    /* Each end keeps its own position privately and publishes it (like ring.py); it also caches the last
     * position of the other side it loaded, and reloads only when that is used up. */
    uint64_t head, tail;
    uint64_t seen_tail, seen_head;
    uint64_t wake_free; /* the producer sleeps until this many slots are free: max(1, nslots / 4) */
    uint64_t need_tail; /* producer, while waiting for room: the tail that makes room for its record */
    int spin;           /* re-checks (with a pause) before sleeping; RING_SPIN by default */
    int membarrier;     /* the ring's MEMBARRIER flag: our sleeps fence with membarrier(2) */
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

/* sem_wait that survives signals: EINTR is not a failure (shmfetch.ring._wait loops on SignalError). */
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
    r->wake_free = r->nslots / 4 ? r->nslots / 4 : 1;
    r->spin = RING_SPIN;
    r->membarrier = (ring_rd32(r->base + RING_OFF_FLAGS) & RING_MEMBARRIER) != 0;
    return 0;
}

/* 1 if this kernel offers global expedited membarrier, which a MEMBARRIER ring's sleepers issue. This
 * side keeps its fence after every position store, so it needs no registration of its own; a peer that
 * drops that fence (ring.py does) registers, and that is what the sleeper's membarrier reaches. */
static inline int ring_membarrier_offered(void) {
    long cmds = syscall(__NR_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    return cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0;
}

static inline int ring_open_sems(ring_t *r, int oflag, unsigned nslots) {
    char sn[RING_NAME_MAX + 8];
    r->free_sem = r->fill_sem = SEM_FAILED;
    if (ring_sem_name(sn, sizeof sn, r->name, ".free") != 0) return -1;
    /* Both semaphores start at 0: in protocol v2 a count means "look again", never "a slot is free". */
    (void)nslots;
    r->free_sem = oflag ? sem_open(sn, oflag, 0600, 0) : sem_open(sn, 0);
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
    /* Every page allocated now (docs/RING.md, "Objects and names"): ftruncate alone only sets a size, and
     * tmpfs would hand out pages at first touch, a SIGBUS then if /dev/shm is full. posix_fallocate
     * returns its error instead of setting errno. */
    int fe = ftruncate(fd, (off_t)size) != 0 ? errno : posix_fallocate(fd, 0, (off_t)size);
    if (fe != 0) {
        close(fd);
        shm_unlink(name);
        errno = fe;
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
    /* A new segment's pages are zero, so reserved fields, head, tail and the sleeping words are 0. */
    memcpy(r->base + RING_OFF_MAGIC, RING_MAGIC, 8);
    ring_wr32(r->base + RING_OFF_VERSION, RING_VERSION);
    ring_wr32(r->base + RING_OFF_SLOT_SIZE, slot_size);
    ring_wr32(r->base + RING_OFF_NSLOTS, nslots);
    ring_wr32(r->base + RING_OFF_FLAGS, ring_membarrier_offered() ? RING_MEMBARRIER : 0);
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

/* Consumer: append the record at the private tail (header, then payload) to *out and step the private
 * tail past its k slots; ring_release publishes it. */
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
 * Protocol (docs/RING.md "Protocol" and "Sleeping and waking").
 * ------------------------------------------------------------------------------------------------- */

static inline void ring_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* The fence between announcing a sleep and re-checking: membarrier in a MEMBARRIER ring (it orders a
 * registered peer's fence-free position store against its load of our sleeping word, and is a full
 * barrier for us too), else a full fence. */
static inline int ring_sleep_fence(const ring_t *r) {
    if (r->membarrier) return syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0 ? 0 : -1;
    atomic_thread_fence(memory_order_seq_cst);
    return 0;
}

/* Block until ready(r) (which loads the other side's position). Re-check r->spin times with a pause,
 * then announce in `sleeping`, sleep fence, re-check, and sem_wait; every wait sits in this loop, so a
 * stale post costs one turn. */
static inline int ring_wait(ring_t *r, int (*ready)(ring_t *), _Atomic uint32_t *sleeping, sem_t *sem) {
    if (ready(r)) return 0;
    for (int i = 0; i < r->spin; i++) {
        ring_cpu_relax();
        if (ready(r)) return 0;
    }
    for (;;) {
        atomic_store_explicit(sleeping, 1, memory_order_relaxed);
        if (ring_sleep_fence(r) != 0) return -1; /* the store above before ready()'s loads */
        if (ready(r)) break;
        if (ring_sem_wait(sem) != 0) return -1;
        if (ready(r)) break;
    }
    atomic_store_explicit(sleeping, 0, memory_order_relaxed);
    return 0;
}

static inline int ring_is_closed(const ring_t *r) {
    return (atomic_load_explicit(ring_flags_p(r), memory_order_acquire) & RING_CLOSED) != 0;
}

/* Producer: store head (release), fence, wake the consumer if it announced it sleeps. */
static inline int ring_publish(ring_t *r) {
    atomic_store_explicit(ring_head_p(r), r->head, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst); /* the head store before the load of consumer_sleeping */
    _Atomic uint32_t *cs = ring_csleep_p(r);
    if (atomic_load_explicit(cs, memory_order_relaxed)) {
        atomic_store_explicit(cs, 0, memory_order_relaxed); /* one post per announced sleep */
        return sem_post(r->fill_sem);
    }
    return 0;
}

static inline int ring_room(ring_t *r) {
    int closed = ring_is_closed(r);
    r->seen_tail = atomic_load_explicit(ring_tail_p(r), memory_order_acquire);
    return r->seen_tail >= r->need_tail || closed;
}

/* Producer: wait until tail >= need (publishing what it wrote first). -1 with EPIPE if closed. */
static inline int ring_wait_room(ring_t *r, uint64_t need) {
    if (atomic_load_explicit(ring_head_p(r), memory_order_relaxed) != r->head && ring_publish(r) != 0)
        return -1;
    r->need_tail = need;
    if (ring_wait(r, ring_room, ring_psleep_p(r), r->free_sem) != 0) return -1;
    if (r->seen_tail < need) {
        errno = EPIPE;
        return -1;
    }
    return 0;
}

/* Producer: write one record at the private head (not yet published). */
static inline int ring_write(ring_t *r, const void *src, uint32_t n, uint32_t flags) {
    uint64_t k = ring_slots_for_record(r, n);
    if (r->head + k - r->seen_tail > r->nslots && ring_wait_room(r, r->head + k - r->nslots) != 0) return -1;
    ring_write_record(r, r->head, src, n, flags);
    r->head += k;
    return 0;
}

/* Publish one message, cut into fragments of at most max_fragment bytes (flag MORE on all but the last),
 * each published at once, exactly as ring.py's put does. */
static inline int ring_put(ring_t *r, const void *src, size_t n) {
    const uint8_t *p = src;
    size_t pos = 0;
    for (;;) {
        size_t chunk = n - pos < r->max_fragment ? n - pos : r->max_fragment;
        int more = pos + chunk < n;
        if (ring_write(r, p + pos, (uint32_t)chunk, more ? RING_FLAG_MORE : 0) != 0) return -1;
        if (ring_publish(r) != 0) return -1;
        pos += chunk;
        if (!more) return 0;
    }
}

/* Consumer: store tail (release), fence, wake the producer if it sleeps and a quarter of the ring is free. */
static inline int ring_release(ring_t *r) {
    atomic_store_explicit(ring_tail_p(r), r->tail, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst); /* the tail store before the load of producer_sleeping */
    _Atomic uint32_t *ps = ring_psleep_p(r);
    if (atomic_load_explicit(ps, memory_order_relaxed)) {
        uint64_t head = atomic_load_explicit(ring_head_p(r), memory_order_acquire);
        if (r->nslots - (head - r->tail) >= r->wake_free) {
            atomic_store_explicit(ps, 0, memory_order_relaxed);
            return sem_post(r->free_sem);
        }
    }
    return 0;
}

static inline int ring_readable(ring_t *r) {
    int closed = ring_is_closed(r); /* flags before head: CLOSED is set after the last head store */
    r->seen_head = atomic_load_explicit(ring_head_p(r), memory_order_acquire);
    return r->seen_head != r->tail || closed;
}

/* Consumer: take one message into *out (replacing its contents) without publishing tail. wait=0 never
 * sleeps. Returns 1 for a message, 0 when closed and drained (a partial message is dropped), -1 on
 * error, 2 when wait=0 and nothing (more) is published. */
static inline int ring_take(ring_t *r, ring_buf_t *out, int wait) {
    int started = 0; /* a fragment of this message was read: its rest is on its way, so wait for it */
    out->len = 0;
    for (;;) {
        if (r->tail == r->seen_head) {
            r->seen_head = atomic_load_explicit(ring_head_p(r), memory_order_acquire);
            if (r->tail == r->seen_head) {
                if (!wait && !started) return 2;
                /* a producer may be waiting for the slots of a message we are reading */
                if (atomic_load_explicit(ring_tail_p(r), memory_order_relaxed) != r->tail && ring_release(r) != 0)
                    return -1;
                if (ring_wait(r, ring_readable, ring_csleep_p(r), r->fill_sem) != 0) return -1;
                if (r->seen_head == r->tail) return 0;
            }
        }
        uint32_t flags;
        uint64_t k;
        if (ring_take_record(r, out, &flags, &k) != 0) return -1;
        if (!(flags & RING_FLAG_MORE)) return 1;
        started = 1;
    }
}

/* Consumer: take one message and publish tail (the worker's path). Same returns as ring_take(wait=1). */
static inline int ring_get(ring_t *r, ring_buf_t *out) {
    int g = ring_take(r, out, 1);
    if (g == 1 && ring_release(r) != 0) return -1;
    return g;
}

/* Creator only: set CLOSED, then wake both sides; the consumer drains up to head and stops, a producer
 * waiting for room gives up (EPIPE). */
static inline int ring_close_wake(ring_t *r) {
    atomic_fetch_or_explicit(ring_flags_p(r), RING_CLOSED, memory_order_seq_cst);
    if (sem_post(r->fill_sem) != 0) return -1;
    return sem_post(r->free_sem);
}

#endif /* SHMFETCH_RING_H */
