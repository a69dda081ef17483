/* interop: the C end of tests/test_interop.py. It attaches to a ring that Python created and either
 * produces or consumes a deterministic stream, so that both implementations of docs/RING.md are checked
 * against each other byte for byte.
 *
 *   interop produce NAME COUNT SEED           raw records of pseudo-random sizes and contents
 *   interop consume NAME COUNT SEED           read and verify that same stream; exit 0 iff all match
 *   interop produce-msgpack NAME COUNT SEED   msgpack requests [ticket, url, nil], hand-encoded
 *   interop consume-msgpack NAME COUNT SEED   parse and verify requests Python packed with msgpack
 *   interop drain NAME COUNT SEED             like consume, then expect the ring closed and drained
 *                                             (exit 0 iff exactly COUNT records, then close)
 *   interop close NAME                        set CLOSED and wake both sides (the creator's close)
 *   interop create NAME NSLOTS SLOT_SIZE      create a ring, write its whole data area, unlink it
 *
 * The generator is splitmix64; tests/test_interop.py has the same few lines in Python. Sizes come from
 * four classes (0..15, 0..299, 0..4999, 0..69999 bytes) so that, on a small ring, records take one slot,
 * several slots, wrap past the end of the data area, and exceed max_fragment (so they are cut into
 * MORE-flagged fragments). Contents repeat a 251-byte pattern: 251 is prime, so a payload shifted by any
 * slot-sized offset (powers of two) does not match by accident. The first 4 bytes hold the record index.
 */
#include "ring.h"

#include <inttypes.h>

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static const uint32_t size_class[4] = {16, 300, 5000, 70000};

/* Record i of the stream: its size and contents, from two draws of the generator. */
static size_t make_record(uint64_t *s, uint64_t index, uint8_t *buf) {
    uint64_t a = splitmix64(s), b = splitmix64(s);
    size_t n = (size_t)((a >> 8) % size_class[a & 3]);
    uint8_t pat[251];
    uint8_t base = (uint8_t)b, step = (uint8_t)((b >> 8) | 1);
    for (int i = 0; i < 251; i++) pat[i] = (uint8_t)(base + i * step);
    for (size_t i = 0; i < n; i++) buf[i] = pat[i % 251];
    for (size_t i = 0; i < n && i < 4; i++) buf[i] = (uint8_t)(index >> (8 * i));
    return n;
}

/* URL of request i: "http://example.test/<index>/" then deterministic path characters, 20..999 bytes long,
 * so both str8 (< 256) and str16 encodings occur. */
static size_t make_url(uint64_t *s, uint64_t index, char *buf) {
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz0123456789-_./";
    uint64_t a = splitmix64(s);
    size_t n = 20 + (size_t)(a % 980);
    int p = snprintf(buf, n + 1, "http://example.test/%" PRIu64 "/", index);
    if (p < 0) p = 0;
    if ((size_t)p > n) p = (int)n;
    for (size_t i = (size_t)p; i < n; i++) buf[i] = alpha[splitmix64(s) % (sizeof alpha - 1)];
    buf[n] = 0;
    return n;
}

/* [ticket, url, nil] as msgpack: fixarray(3), uint64 (0xcf, big-endian), str8/str16, nil. */
static size_t encode_request(uint8_t *out, uint64_t ticket, const char *url, size_t ulen) {
    size_t o = 0;
    out[o++] = 0x93;
    out[o++] = 0xcf;
    for (int i = 7; i >= 0; i--) out[o++] = (uint8_t)(ticket >> (8 * i));
    if (ulen < 256) {
        out[o++] = 0xd9;
        out[o++] = (uint8_t)ulen;
    } else {
        out[o++] = 0xda;
        out[o++] = (uint8_t)(ulen >> 8);
        out[o++] = (uint8_t)ulen;
    }
    memcpy(out + o, url, ulen);
    o += ulen;
    out[o++] = 0xc0;
    return o;
}

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Parse what msgpack.packb([ticket, url, None]) makes: any unsigned int and any str encoding it may pick. */
static int decode_request(const uint8_t *p, size_t n, uint64_t *ticket, const uint8_t **url, size_t *ulen) {
    size_t o = 0;
#define NEED(x)                  \
    do {                         \
        if (o + (x) > n) return -1; \
    } while (0)
    NEED(1);
    if (p[o++] != 0x93) return -1;
    NEED(1);
    uint8_t t = p[o++];
    if (t <= 0x7f) *ticket = t;
    else if (t >= 0xcc && t <= 0xcf) {
        int w = 1 << (t - 0xcc);
        NEED((size_t)w);
        *ticket = be(p + o, w);
        o += (size_t)w;
    } else return -1;
    NEED(1);
    t = p[o++];
    if ((t & 0xe0) == 0xa0) *ulen = t & 0x1f;
    else if (t >= 0xd9 && t <= 0xdb) {
        int w = 1 << (t - 0xd9);
        NEED((size_t)w);
        *ulen = (size_t)be(p + o, w);
        o += (size_t)w;
    } else return -1;
    NEED(*ulen);
    *url = p + o;
    o += *ulen;
    NEED(1);
    if (p[o++] != 0xc0) return -1;
    return o == n ? 0 : -1;
#undef NEED
}

static int die(const char *what) {
    fprintf(stderr, "interop: %s: %s\n", what, strerror(errno));
    return 2;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "create") == 0) {
        /* ring_create, then write every byte of the data area (what a producer would do over time), then
         * unlink: a /dev/shm without room must fail the create, not SIGBUS one of these writes. */
        ring_t r;
        if (ring_create(&r, argv[2], (uint32_t)strtoul(argv[3], NULL, 10), (uint32_t)strtoul(argv[4], NULL, 10)) != 0)
            return die("create");
        memset(r.data, 0xa5, (size_t)r.data_bytes);
        ring_close(&r);
        ring_unlink(argv[2]);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "close") == 0) {
        ring_t r;
        if (ring_attach(&r, argv[2]) != 0) return die("attach");
        int rc = ring_close_wake(&r);
        ring_close(&r);
        return rc ? die("close") : 0;
    }
    if (argc != 5) {
        fprintf(stderr, "usage: interop produce|consume|drain|produce-msgpack|consume-msgpack NAME COUNT SEED\n"
                        "       interop close NAME\n"
                        "       interop create NAME NSLOTS SLOT_SIZE\n");
        return 2;
    }
    const char *mode = argv[1], *name = argv[2];
    uint64_t count = strtoull(argv[3], NULL, 10), seed = strtoull(argv[4], NULL, 10);
    ring_t r;
    if (ring_attach(&r, name) != 0) return die("attach");
    uint8_t *want = malloc(70000 + 16), *msg = malloc(70000 + 16);
    char *url = malloc(1024);
    ring_buf_t got = {0};
    int rc = 0;
    uint64_t s = seed;
    for (uint64_t i = 0; i < count && rc == 0; i++) {
        if (strcmp(mode, "produce") == 0) {
            size_t n = make_record(&s, i, want);
            if (ring_put(&r, want, n) != 0) rc = die("put");
        } else if (strcmp(mode, "consume") == 0 || strcmp(mode, "drain") == 0) {
            size_t n = make_record(&s, i, want);
            int g = ring_get(&r, &got);
            if (g != 1) {
                fprintf(stderr, "interop: record %" PRIu64 ": %s\n", i, g == 0 ? "ring closed early" : "get failed");
                rc = 1;
            } else if (got.len != n || memcmp(got.p, want, n) != 0) {
                size_t at = 0;
                while (at < n && at < got.len && got.p[at] == want[at]) at++;
                fprintf(stderr, "interop: record %" PRIu64 ": got %zu bytes, want %zu; first difference at %zu\n",
                        i, got.len, n, at);
                rc = 1;
            }
        } else if (strcmp(mode, "produce-msgpack") == 0) {
            uint64_t ticket = splitmix64(&s);
            size_t ulen = make_url(&s, i, url);
            size_t n = encode_request(msg, ticket, url, ulen);
            if (ring_put(&r, msg, n) != 0) rc = die("put");
        } else if (strcmp(mode, "consume-msgpack") == 0) {
            uint64_t ticket = splitmix64(&s), t;
            size_t ulen = make_url(&s, i, url), gl;
            const uint8_t *gu;
            int g = ring_get(&r, &got);
            if (g != 1) {
                fprintf(stderr, "interop: request %" PRIu64 ": %s\n", i, g == 0 ? "ring closed early" : "get failed");
                rc = 1;
            } else if (decode_request(got.p, got.len, &t, &gu, &gl) != 0) {
                fprintf(stderr, "interop: request %" PRIu64 ": not a msgpack [uint, str, nil] (%zu bytes)\n", i,
                        got.len);
                rc = 1;
            } else if (t != ticket || gl != ulen || memcmp(gu, url, ulen) != 0) {
                fprintf(stderr, "interop: request %" PRIu64 ": ticket/url mismatch\n", i);
                rc = 1;
            }
        } else {
            fprintf(stderr, "interop: unknown mode %s\n", mode);
            rc = 2;
        }
    }
    if (rc == 0 && strcmp(mode, "drain") == 0) {
        int g = ring_get(&r, &got);
        if (g != 0) {
            fprintf(stderr, "interop: after %" PRIu64 " records: %s\n", count,
                    g == 1 ? "one more message, expected the close" : "get failed");
            rc = 1;
        }
    }
    free(want);
    free(msg);
    free(url);
    free(got.p);
    ring_close(&r);
    return rc;
}
