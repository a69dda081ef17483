/* ring_bench: the ring of docs/RING.md against the kernel's IPC, between two processes, in one run.
 *
 * Transports (all move the same records, parent -> child, each process copying the record in and out):
 *   ring        the daemon's protocol v2 (docs/RING.md) as the worker runs it: ring_put publishes head per
 *               message, ring_get publishes tail per message; semaphores only wake a side that sleeps
 *   ring-many   the same, consumed as the master's collector does (Ring.get_many): wait for one message,
 *               take up to 63 more that are published, publish tail once for the batch
 *   pipe        a pipe, each record framed by a 4-byte length (writev out, two reads in)
 *   unix-seq    AF_UNIX SOCK_SEQPACKET socketpair (the kernel keeps record boundaries)
 *   mq          POSIX message queue (mq_open), 10 messages deep (the default msg_max)
 *
 * For each transport and record size (64 B, 1 KB, 16 KB, 64 KB) it measures
 *   throughput: the producer streams records for --seconds; the consumer counts them and stamps the time
 *               of the last (CLOCK_MONOTONIC is shared by both processes); median of --reps runs;
 *   latency:    ping-pong, the child echoes each record back; round-trip p50 and p99.
 * Every record carries a sequence number in its first 8 bytes; the consumer checks it, so a transport
 * that lost or reordered a record fails instead of looking fast.
 *
 * Every named object is unlinked right after it is created: the two processes share them through fork,
 * so nothing is left in /dev/shm even if the bench is killed.
 *
 *   ring_bench [--seconds S] [--reps N] [--spin N] [--sizes 64,1024,...] [--only name,...] [--json]
 */
#include "ring.h"

#include <inttypes.h>
#include <mqueue.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>

#define END_SEQ UINT64_MAX
#define MAX_SAMPLES 200000

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- transports ---------------------------------------------------------------------------------- */

typedef struct tp {
    int kind;
    int spin;
    int taken; /* ring-many: messages taken since tail was last published */
    size_t size;
    ring_t ring[2]; /* [0] parent -> child, [1] child -> parent */
    int fd[2][2];   /* pipe: [dir][0] read end, [dir][1] write end; socket: fd[0][0] parent, fd[0][1] child */
    mqd_t mq[2];
    char err[160];
} tp_t;

enum { T_RING, T_RING_MANY, T_PIPE, T_UNIX, T_MQ, T_COUNT };
static const char *tp_names[T_COUNT] = {"ring", "ring-many", "pipe", "unix-seq", "mq"};

/* Ring geometry: the daemon's request ring (1024 x 256 B) for small records, its result ring
 * (1024 x 4 KiB) for big ones, so no bench record is fragmented and each takes few slots. */
static void ring_geometry(size_t size, uint32_t *nslots, uint32_t *slot_size) {
    *nslots = 1024;
    *slot_size = size <= 1024 ? 256 : 4096;
}

static int setup(tp_t *t, int kind, size_t size, int bidir) {
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->size = size;
    int ndir = bidir ? 2 : 1;
    char name[96];
    switch (kind) {
    case T_RING:
    case T_RING_MANY:
        for (int d = 0; d < ndir; d++) {
            uint32_t ns, ss;
            ring_geometry(size, &ns, &ss);
            snprintf(name, sizeof name, "/shmfetch_bench.%d.r%d", (int)getpid(), d);
            if (ring_create(&t->ring[d], name, ns, ss) != 0) {
                snprintf(t->err, sizeof t->err, "ring_create: %s", strerror(errno));
                return -1;
            }
            ring_unlink(name); /* both processes keep it through the mapping and fork */
        }
        return 0;
    case T_PIPE:
        for (int d = 0; d < ndir; d++) {
            if (pipe(t->fd[d]) != 0) {
                snprintf(t->err, sizeof t->err, "pipe: %s", strerror(errno));
                return -1;
            }
        }
        return 0;
    case T_UNIX: {
        if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, t->fd[0]) != 0) {
            snprintf(t->err, sizeof t->err, "socketpair: %s", strerror(errno));
            return -1;
        }
        /* A 64 KiB record must fit the send buffer; ask for room for a few of them. */
        int buf = (int)(size * 4 + 65536);
        for (int i = 0; i < 2; i++) {
            setsockopt(t->fd[0][i], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
            setsockopt(t->fd[0][i], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
        }
        return 0;
    }
    case T_MQ:
        for (int d = 0; d < ndir; d++) {
            struct mq_attr a = {.mq_maxmsg = 10, .mq_msgsize = (long)size};
            snprintf(name, sizeof name, "/shmfetch_bench.%d.mq%d", (int)getpid(), d);
            t->mq[d] = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, &a);
            if (t->mq[d] == (mqd_t)-1) {
                snprintf(t->err, sizeof t->err, "mq_open(msgsize=%zu): %s (see /proc/sys/fs/mqueue)", size,
                         strerror(errno));
                if (d == 1) mq_close(t->mq[0]);
                return -1;
            }
            mq_unlink(name);
        }
        return 0;
    }
    return -1;
}

static void teardown(tp_t *t, int bidir) {
    int ndir = bidir ? 2 : 1;
    for (int d = 0; d < ndir; d++) {
        switch (t->kind) {
        case T_RING:
        case T_RING_MANY:
            ring_close(&t->ring[d]);
            break;
        case T_PIPE:
            close(t->fd[d][0]);
            close(t->fd[d][1]);
            break;
        case T_UNIX:
            if (d == 0) {
                close(t->fd[0][0]);
                close(t->fd[0][1]);
            }
            break;
        case T_MQ:
            mq_close(t->mq[d]);
            break;
        }
    }
}

static int write_all(int fd, const void *p, size_t n) {
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n) {
    uint8_t *b = p;
    while (n) {
        ssize_t r = read(fd, b, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* `dir` 0 is parent -> child, 1 is child -> parent; `parent` says which process calls. */
static int tp_send(tp_t *t, int dir, int parent, const void *p, size_t n) {
    switch (t->kind) {
    case T_RING:
    case T_RING_MANY:
        t->ring[dir].spin = t->spin;
        return ring_put(&t->ring[dir], p, n);
    case T_PIPE: {
        uint32_t len = (uint32_t)n;
        struct iovec iov[2] = {{&len, 4}, {(void *)p, n}};
        ssize_t w = writev(t->fd[dir][1], iov, 2);
        if (w == (ssize_t)(n + 4)) return 0;
        if (w < 0) return -1;
        /* Short write (records bigger than the pipe's free room): finish it by hand. */
        size_t done = (size_t)w;
        if (done < 4) {
            if (write_all(t->fd[dir][1], (uint8_t *)&len + done, 4 - done) != 0) return -1;
            done = 4;
        }
        return write_all(t->fd[dir][1], (const uint8_t *)p + (done - 4), n - (done - 4));
    }
    case T_UNIX:
        for (;;) {
            ssize_t w = send(t->fd[0][parent ? 0 : 1], p, n, 0);
            if (w == (ssize_t)n) return 0;
            if (w < 0 && errno == EINTR) continue;
            return -1;
        }
    case T_MQ:
        while (mq_send(t->mq[dir], p, n, 0) != 0)
            if (errno != EINTR) return -1;
        return 0;
    }
    return -1;
}

static int tp_recv(tp_t *t, int dir, int parent, ring_buf_t *out) {
    switch (t->kind) {
    case T_RING:
        t->ring[dir].spin = t->spin;
        return ring_get(&t->ring[dir], out);
    case T_RING_MANY: {
        ring_t *r = &t->ring[dir];
        r->spin = t->spin;
        int g = ring_take(r, out, 0);
        if (g == 2) { /* nothing more published: end the batch, then wait for the next message */
            if (ring_release(r) != 0) return -1;
            t->taken = 0;
            g = ring_take(r, out, 1);
        }
        if (g == 1 && ++t->taken >= 64) {
            if (ring_release(r) != 0) return -1;
            t->taken = 0;
        }
        return g;
    }
    case T_PIPE: {
        uint32_t len;
        if (read_all(t->fd[dir][0], &len, 4) != 0) return -1;
        if (ring_buf_reserve(out, len) != 0) return -1;
        if (read_all(t->fd[dir][0], out->p, len) != 0) return -1;
        out->len = len;
        return 1;
    }
    case T_UNIX:
        if (ring_buf_reserve(out, t->size) != 0) return -1;
        for (;;) {
            ssize_t r = recv(t->fd[0][parent ? 0 : 1], out->p, t->size, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) return -1;
            out->len = (size_t)r;
            return 1;
        }
    case T_MQ:
        if (ring_buf_reserve(out, t->size) != 0) return -1;
        for (;;) {
            ssize_t r = mq_receive(t->mq[dir], (char *)out->p, t->size, NULL);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) return -1;
            out->len = (size_t)r;
            return 1;
        }
    }
    return -1;
}

/* ---- one measurement ------------------------------------------------------------------------------ */

typedef struct {
    int ok;
    double rate, mbps;       /* throughput */
    double p50_us, p99_us;   /* round trip */
    char err[160];
} cell_t;

static uint64_t rec_seq(const ring_buf_t *b) {
    uint64_t s;
    memcpy(&s, b->p, 8);
    return s;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The child: consume until END, check sequence numbers, report (count, time of last record). */
static void child_stream(tp_t *t, int sync_w) {
    ring_buf_t b = {0};
    uint64_t count = 0;
    char c = 'r';
    if (write_all(sync_w, &c, 1) != 0) _exit(3);
    for (;;) {
        if (tp_recv(t, 0, 0, &b) != 1 || b.len != t->size) _exit(4);
        uint64_t s = rec_seq(&b);
        if (s == END_SEQ) break;
        if (s != count) _exit(5);
        /* The last byte too, so a transport that moved only the header would fail, not look fast. */
        if (t->size > 8 && b.p[t->size - 1] != (uint8_t)((t->size - 1) * 7 + 1)) _exit(7);
        count++;
    }
    double t1 = now_s();
    if (write_all(sync_w, &count, sizeof count) != 0 || write_all(sync_w, &t1, sizeof t1) != 0) _exit(6);
    _exit(0);
}

static void child_echo(tp_t *t, int sync_w) {
    ring_buf_t b = {0};
    char c = 'r';
    if (write_all(sync_w, &c, 1) != 0) _exit(3);
    for (;;) {
        if (tp_recv(t, 0, 0, &b) != 1 || b.len != t->size) _exit(4);
        if (rec_seq(&b) == END_SEQ) _exit(0);
        if (tp_send(t, 1, 0, b.p, b.len) != 0) _exit(5);

    }
}

static int run_child(tp_t *t, int latency, pid_t *pid, int *sync_r) {
    int sp[2];
    if (pipe(sp) != 0) return -1;
    fflush(NULL);
    *pid = fork();
    if (*pid < 0) return -1;
    if (*pid == 0) {
        close(sp[0]);
        if (latency) child_echo(t, sp[1]);
        else child_stream(t, sp[1]);
    }
    close(sp[1]);
    *sync_r = sp[0];
    char c;
    return read_all(sp[0], &c, 1);
}

static int reap(pid_t pid, char *err, size_t cap) {
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    snprintf(err, cap, "child failed (status %d)", st);
    return -1;
}

static int measure_tput(int kind, size_t size, double seconds, int spin, double *rate, char *err, size_t cap) {
    tp_t t;
    if (setup(&t, kind, size, 0) != 0) {
        snprintf(err, cap, "%s", t.err);
        return -1;
    }
    t.spin = spin;
    uint8_t *rec = malloc(size);
    for (size_t i = 0; i < size; i++) rec[i] = (uint8_t)(i * 7 + 1);
    pid_t pid;
    int sync_r = -1, rc = -1;
    if (run_child(&t, 0, &pid, &sync_r) != 0) {
        snprintf(err, cap, "fork/sync: %s", strerror(errno));
        free(rec);
        teardown(&t, 0);
        return -1;
    }
    double t0 = now_s(), deadline = t0 + seconds;
    uint64_t seq = 0;
    int sent_ok = 1;
    for (;;) {
        /* Check the clock every 256 records: cheap enough not to show in the 64-byte figures. */
        if ((seq & 255) == 0 && now_s() >= deadline) break;
        memcpy(rec, &seq, 8);
        if (tp_send(&t, 0, 1, rec, size) != 0) {
            sent_ok = 0;
            break;
        }
        seq++;
    }
    uint64_t end = END_SEQ;
    memcpy(rec, &end, 8);
    if (!sent_ok || tp_send(&t, 0, 1, rec, size) != 0) kill(pid, SIGKILL);
    uint64_t count = 0;
    double t1 = 0;
    int got = read_all(sync_r, &count, sizeof count) == 0 && read_all(sync_r, &t1, sizeof t1) == 0;
    if (reap(pid, err, cap) == 0 && got && count == seq) {
        *rate = (double)count / (t1 - t0);
        rc = 0;
    } else if (!err[0]) {
        snprintf(err, cap, "consumer saw %" PRIu64 " of %" PRIu64 " records", count, seq);
    }
    close(sync_r);
    free(rec);
    teardown(&t, 0);
    return rc;
}

static int measure_latency(int kind, size_t size, double seconds, int spin, double *p50, double *p99, char *err,
                           size_t cap) {
    tp_t t;
    if (setup(&t, kind, size, 1) != 0) {
        snprintf(err, cap, "%s", t.err);
        return -1;
    }
    t.spin = spin;
    uint8_t *rec = calloc(1, size);
    double *rtt = malloc(sizeof(double) * MAX_SAMPLES);
    ring_buf_t b = {0};
    pid_t pid;
    int sync_r = -1, rc = -1;
    if (run_child(&t, 1, &pid, &sync_r) != 0) {
        snprintf(err, cap, "fork/sync: %s", strerror(errno));
        goto out;
    }
    double deadline = now_s() + seconds;
    size_t n = 0;
    int fine = 1;
    for (uint64_t seq = 0; n < MAX_SAMPLES; seq++) {
        double a = now_s();
        if (a >= deadline) break;
        memcpy(rec, &seq, 8);
        if (tp_send(&t, 0, 1, rec, size) != 0) {
            fine = 0;
            break;
        }

        if (tp_recv(&t, 1, 1, &b) != 1 || b.len != size || rec_seq(&b) != seq) {
            fine = 0;
            break;
        }
        rtt[n++] = now_s() - a;
    }
    uint64_t end = END_SEQ;
    memcpy(rec, &end, 8);
    if (!fine || tp_send(&t, 0, 1, rec, size) != 0) kill(pid, SIGKILL);
    if (reap(pid, err, cap) == 0 && fine && n > 0) {
        qsort(rtt, n, sizeof *rtt, cmp_double);
        *p50 = rtt[n / 2] * 1e6;
        *p99 = rtt[(size_t)((double)n * 0.99)] * 1e6;
        rc = 0;
    } else if (!err[0]) {
        snprintf(err, cap, "ping-pong failed");
    }
    close(sync_r);
out:
    free(b.p);
    free(rec);
    free(rtt);
    teardown(&t, 1);
    return rc;
}

/* ---- driver --------------------------------------------------------------------------------------- */

static int parse_list(const char *s, size_t *out, int max) {
    int n = 0;
    while (*s && n < max) {
        char *e;
        out[n++] = strtoul(s, &e, 10);
        if (*e == 'k' || *e == 'K') {
            out[n - 1] *= 1024;
            e++;
        }
        s = *e == ',' ? e + 1 : e;
        if (*e && *e != ',') break;
    }
    return n;
}

/* Is `name` one of the comma-separated items of `list` (exactly, so "ring" does not match "ring-many")? */
static int in_list(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

static const char *size_label(size_t s, char *buf, size_t cap) {
    if (s >= 1024 && s % 1024 == 0) snprintf(buf, cap, "%zu KB", s / 1024);
    else snprintf(buf, cap, "%zu B", s);
    return buf;
}

int main(int argc, char **argv) {
    double seconds = 0.3;
    int reps = 5, spin = RING_SPIN, json = 0;
    size_t sizes[16] = {64, 1024, 16384, 65536};
    int nsizes = 4;
    int want[T_COUNT] = {1, 1, 1, 1, 1};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--spin") && i + 1 < argc) spin = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sizes") && i + 1 < argc) nsizes = parse_list(argv[++i], sizes, 16);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            char *list = argv[++i];
            for (int k = 0; k < T_COUNT; k++) want[k] = in_list(list, tp_names[k]);
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else {
            fprintf(stderr, "usage: ring_bench [--seconds S] [--reps N] [--spin N] [--sizes 64,1k,...] "
                            "[--only ring,ring-many,pipe,unix-seq,mq] [--json]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    for (int i = 0; i < nsizes; i++)
        if (sizes[i] < 8) sizes[i] = 8; /* room for the sequence number */
    /* mq queues are charged to RLIMIT_MSGQUEUE; lift it as far as we may so 64 KB records can be queued. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_MSGQUEUE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_MSGQUEUE, &rl);
    }

    static cell_t cells[T_COUNT][16];
    double *runs = malloc(sizeof(double) * (size_t)reps * T_COUNT);
    for (int si = 0; si < nsizes; si++) {
        int good[T_COUNT] = {0};
        /* Transports take turns within each repetition, so a burst of noise from other processes on
         * this machine hits all of them alike instead of one transport's whole series. */
        for (int r = 0; r < reps; r++) {
            for (int k = 0; k < T_COUNT; k++) {
                cell_t *c = &cells[k][si];
                if (!want[k] || good[k] < r) continue; /* not wanted, or already failed */
                double rate;
                if (measure_tput(k, sizes[si], seconds, spin, &rate, c->err, sizeof c->err) == 0)
                    runs[k * reps + good[k]++] = rate;
            }
            if (!json) {
                fprintf(stderr, ".");
                fflush(stderr);
            }
        }
        for (int k = 0; k < T_COUNT; k++) {
            cell_t *c = &cells[k][si];
            if (!want[k] || good[k] != reps) continue;
            qsort(runs + k * reps, (size_t)reps, sizeof *runs, cmp_double);
            c->rate = runs[k * reps + reps / 2];
            c->mbps = c->rate * (double)sizes[si] / 1e6;
            c->ok = measure_latency(k, sizes[si], seconds, spin, &c->p50_us, &c->p99_us, c->err, sizeof c->err) == 0;
        }
    }
    if (!json) fprintf(stderr, "\n");

    char lb[32];
    if (json) {
        printf("{\"seconds\": %g, \"reps\": %d, \"spin\": %d, \"results\": [", seconds, reps, spin);
        int first = 1;
        for (int si = 0; si < nsizes; si++)
            for (int k = 0; k < T_COUNT; k++) {
                if (!want[k]) continue;
                cell_t *c = &cells[k][si];
                printf("%s\n  {\"transport\": \"%s\", \"size\": %zu, \"ok\": %s", first ? "" : ",", tp_names[k],
                       sizes[si], c->ok ? "true" : "false");
                if (c->ok)
                    printf(", \"records_per_s\": %.0f, \"mb_per_s\": %.1f, \"rtt_p50_us\": %.2f, \"rtt_p99_us\": %.2f",
                           c->rate, c->mbps, c->p50_us, c->p99_us);
                else
                    printf(", \"error\": \"%s\"", c->err);
                printf("}");
                first = 0;
            }
        printf("\n]}\n");
    } else {
        printf("C, two processes, median of %d x %.2fs runs; ring spin=%d; ratios vs pipe in this run\n", reps,
               seconds, spin);
        printf("%-8s %-11s %14s %10s %8s %11s %11s\n", "size", "transport", "records/s", "MB/s", "x pipe",
               "RTT p50 us", "RTT p99 us");
        for (int si = 0; si < nsizes; si++) {
            cell_t *pipe_c = &cells[T_PIPE][si];
            for (int k = 0; k < T_COUNT; k++) {
                if (!want[k]) continue;
                cell_t *c = &cells[k][si];
                printf("%-8s %-11s ", size_label(sizes[si], lb, sizeof lb), tp_names[k]);
                if (!c->ok) {
                    printf("n/a: %s\n", c->err);
                    continue;
                }
                char xp[16] = "-";
                if (pipe_c->ok) snprintf(xp, sizeof xp, "%.2f", c->rate / pipe_c->rate);
                printf("%14.0f %10.1f %8s %11.2f %11.2f\n", c->rate, c->mbps, xp, c->p50_us, c->p99_us);
            }
        }
    }
    free(runs);
    return 0;
}
