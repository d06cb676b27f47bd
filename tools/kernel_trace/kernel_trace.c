/* kernel_trace: a CUPTI kernel/memcpy timeline for any CUDA program.
 *
 * The CUDA driver dlopen()s the library named by CUDA_INJECTION64_PATH during
 * cuInit and calls its InitializeInjection().  From there we ask CUPTI for
 * concurrent-kernel and memcpy activity records, keep them in memory as they
 * arrive (so the traced program pays for a memcpy into a growable array, not
 * for formatted I/O), and write them as CSV from an atexit handler:
 *
 *   kind,start_ns,end_ns,stream,correlation,graph_id,grid,block,name
 *
 * Kernels replayed from CUDA graphs are reported like any other kernel, with
 * graph_id set.  Records CUPTI could not time (start = end = 0) are written
 * too; the summarizer skips them.
 *
 * Nothing here may take the traced program down: every failure is a line on
 * stderr and the tracer goes inert.  See tools/kernel_trace/README.md. */

#include <cupti.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Host buffers handed to CUPTI.  Large ones mean few completion callbacks;
 * CUPTI keeps several in flight, so this is not the memory ceiling. */
#define KT_BUFFER_BYTES ((size_t)8 << 20)
#define KT_DEFAULT_OUT "kernel_trace.csv"

enum { KT_KERNEL, KT_MEMCPY };

typedef struct {
    uint64_t start, end;
    const char *name; /* interned kernel name, or a static memcpy kind */
    uint32_t stream, correlation, graph_id;
    int32_t grid[3], block[3];
    uint8_t kind;
} Record;

/* Kernel names are copied once each: CUPTI shares one string among all the
 * records of a kernel but says nothing about how long it outlives the
 * buffer, and a module unloaded before exit would take it along. */
typedef struct {
    char **slots; /* open addressing; NULL = empty */
    size_t cap, count;
} NameTable;

typedef struct {
    pthread_mutex_t lock; /* CUPTI completes buffers on its own thread */
    int started, closed;  /* closed: at_exit has written; ignore late buffers */
    pid_t pid;            /* the process that owns the trace (not a fork child) */
    Record *recs;
    size_t count, cap;
    size_t dropped; /* CUPTI's count: no buffer space for these */
    size_t lost;    /* ours: no host memory to keep these */
    NameTable names;
} Tracer;

/* The one piece of mutable global state.  CUPTI's buffer callbacks carry no
 * user pointer, and a process has exactly one CUPTI activity stream and one
 * injection, so the tracer is a process singleton by nature. */
static Tracer g_tracer = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int cupti_ok(const char *call, CUptiResult r)
{
    if (r == CUPTI_SUCCESS) return 1;
    const char *msg = NULL;
    if (cuptiGetResultString(r, &msg) != CUPTI_SUCCESS || !msg) msg = "unknown CUPTI error";
    fprintf(stderr, "kernel_trace: %s failed: %s (%d)\n", call, msg, (int)r);
    return 0;
}

/* ---------------- name interning ---------------- */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The slot holding s, or the empty slot where it belongs. */
static char **name_slot(char **slots, size_t cap, const char *s)
{
    size_t i = hash_name(s) & (cap - 1);
    while (slots[i] && strcmp(slots[i], s) != 0) i = (i + 1) & (cap - 1);
    return &slots[i];
}

static int names_grow(NameTable *nt)
{
    size_t cap = nt->cap ? 2 * nt->cap : 256; /* a power of two: masks, not mods */
    char **slots = calloc(cap, sizeof *slots);
    if (!slots) return 0;
    for (size_t i = 0; i < nt->cap; i++)
        if (nt->slots[i]) *name_slot(slots, cap, nt->slots[i]) = nt->slots[i];
    free(nt->slots);
    nt->slots = slots;
    nt->cap = cap;
    return 1;
}

/* NULL only when out of memory. */
static const char *intern(NameTable *nt, const char *s)
{
    if (2 * (nt->count + 1) > nt->cap && !names_grow(nt)) return NULL;
    char **slot = name_slot(nt->slots, nt->cap, s);
    if (!*slot) {
        if (!(*slot = strdup(s))) return NULL;
        nt->count++;
    }
    return *slot;
}

/* ---------------- records ---------------- */

static const char *memcpy_kind_name(uint8_t k)
{
    switch (k) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "HtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "DtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOA: return "HtoA";
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOH: return "AtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOA: return "AtoA";
    case CUPTI_ACTIVITY_MEMCPY_KIND_ATOD: return "AtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOA: return "DtoA";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "DtoD";
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOH: return "HtoH";
    case CUPTI_ACTIVITY_MEMCPY_KIND_PTOP: return "PtoP";
    default: return "unknown";
    }
}

/* CUpti_ActivityKernel10 is the layout CUDA 13's CUPTI writes for
 * CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL (cupti_activity.h keeps only the
 * newest version of each record). */
static int from_kernel(Tracer *t, const CUpti_ActivityKernel10 *k, Record *r)
{
    r->name = intern(&t->names, k->name ? k->name : "?");
    if (!r->name) return 0;
    r->kind = KT_KERNEL;
    r->start = k->start;
    r->end = k->end;
    r->stream = k->streamId;
    r->correlation = k->correlationId;
    r->graph_id = k->graphId;
    r->grid[0] = k->gridX, r->grid[1] = k->gridY, r->grid[2] = k->gridZ;
    r->block[0] = k->blockX, r->block[1] = k->blockY, r->block[2] = k->blockZ;
    return 1;
}

static void from_memcpy(const CUpti_ActivityMemcpy6 *m, Record *r)
{
    memset(r, 0, sizeof *r);
    r->kind = KT_MEMCPY;
    r->name = memcpy_kind_name(m->copyKind);
    r->start = m->start;
    r->end = m->end;
    r->stream = m->streamId;
    r->correlation = m->correlationId;
    r->graph_id = m->graphId;
}

static int push(Tracer *t, const Record *r)
{
    if (t->count == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 65536;
        Record *recs = realloc(t->recs, cap * sizeof *recs);
        if (!recs) return 0;
        t->recs = recs;
        t->cap = cap;
    }
    t->recs[t->count++] = *r;
    return 1;
}

static void keep(Tracer *t, const CUpti_Activity *a)
{
    Record r;
    switch (a->kind) {
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL:
        if (!from_kernel(t, (const CUpti_ActivityKernel10 *)a, &r)) {
            t->lost++;
            return;
        }
        break;
    case CUPTI_ACTIVITY_KIND_MEMCPY:
        from_memcpy((const CUpti_ActivityMemcpy6 *)a, &r);
        break;
    default:
        return; /* a kind we did not enable */
    }
    if (!push(t, &r)) t->lost++;
}

static void collect_buffer(Tracer *t, uint8_t *buffer, size_t valid)
{
    CUpti_Activity *a = NULL;
    for (;;) {
        CUptiResult r = cuptiActivityGetNextRecord(buffer, valid, &a);
        if (r == CUPTI_ERROR_MAX_LIMIT_REACHED) return; /* end of buffer */
        if (!cupti_ok("cuptiActivityGetNextRecord", r)) return;
        keep(t, a);
    }
}

/* Dropped counts reset on every read, so they are summed as we go. */
static void note_dropped(Tracer *t)
{
    size_t n = 0;
    if (cupti_ok("cuptiActivityGetNumDroppedRecords", cuptiActivityGetNumDroppedRecords(NULL, 0, &n)))
        t->dropped += n;
}

/* ---------------- CUPTI buffer callbacks ---------------- */

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records)
{
    /* Records are 8-byte aligned (ACTIVITY_RECORD_ALIGNMENT); a NULL buffer
     * makes CUPTI drop records, which it counts and we report. */
    *buffer = aligned_alloc(ACTIVITY_RECORD_ALIGNMENT, KT_BUFFER_BYTES);
    *size = *buffer ? KT_BUFFER_BYTES : 0;
    *max_records = 0; /* as many as fit */
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size,
                                      size_t valid)
{
    (void)ctx, (void)stream, (void)size;
    Tracer *t = &g_tracer;
    pthread_mutex_lock(&t->lock);
    if (!t->closed && buffer && valid) {
        collect_buffer(t, buffer, valid);
        note_dropped(t);
    }
    pthread_mutex_unlock(&t->lock);
    free(buffer);
}

/* ---------------- output ---------------- */

/* KERNEL_TRACE_OUT, with a "%p" replaced by the pid so that several ranks
 * of one job can share a setting without overwriting each other. */
static char *out_path(void)
{
    const char *env = getenv("KERNEL_TRACE_OUT");
    const char *path = env && *env ? env : KT_DEFAULT_OUT;
    const char *pct = strstr(path, "%p");
    if (!pct) return strdup(path);
    size_t n = strlen(path) + 24;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%.*s%ld%s", (int)(pct - path), path, (long)getpid(), pct + 2);
    return s;
}

/* Template instantiations put commas in names: quote, doubling any '"'. */
static void put_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void put_dims(FILE *f, const Record *r)
{
    if (r->kind == KT_KERNEL)
        fprintf(f, "%dx%dx%d,%dx%dx%d,", r->grid[0], r->grid[1], r->grid[2], r->block[0],
                r->block[1], r->block[2]);
    else
        fputs(",,", f);
}

static void put_record(FILE *f, const Record *r)
{
    fprintf(f, "%s,%llu,%llu,%u,%u,%u,", r->kind == KT_KERNEL ? "kernel" : "memcpy",
            (unsigned long long)r->start, (unsigned long long)r->end, r->stream, r->correlation,
            r->graph_id);
    put_dims(f, r);
    put_quoted(f, r->name);
    fputc('\n', f);
}

static int write_csv(const Tracer *t, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kernel_trace: cannot open %s: %s\n", path, strerror(errno));
        return 0;
    }
    fputs("kind,start_ns,end_ns,stream,correlation,graph_id,grid,block,name\n", f);
    for (size_t i = 0; i < t->count; i++) put_record(f, &t->recs[i]);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        fprintf(stderr, "kernel_trace: writing %s failed: %s\n", path, strerror(errno));
        return 0;
    }
    return 1;
}

static void report(const Tracer *t, const char *path)
{
    size_t kernels = 0, untimed = 0;
    for (size_t i = 0; i < t->count; i++) {
        kernels += t->recs[i].kind == KT_KERNEL;
        untimed += t->recs[i].start == 0 && t->recs[i].end == 0;
    }
    fprintf(stderr, "kernel_trace: wrote %zu records (%zu kernels, %zu memcpys, %zu untimed) to %s\n",
            t->count, kernels, t->count - kernels, untimed, path);
    if (t->dropped)
        fprintf(stderr, "kernel_trace: warning: CUPTI dropped %zu records (no activity buffer space); "
                        "the timeline has holes\n", t->dropped);
    if (t->lost)
        fprintf(stderr, "kernel_trace: warning: %zu records lost (out of host memory)\n", t->lost);
}

static void at_exit(void)
{
    Tracer *t = &g_tracer;
    /* A fork()ed child inherits this handler and a copy of the records, but
     * the trace belongs to the parent. */
    if (getpid() != t->pid) return;
    /* Forced: also hand back buffers holding records not yet complete.  Not
     * under the lock, since the flush calls buffer_completed on this thread. */
    cupti_ok("cuptiActivityFlushAll", cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED));
    pthread_mutex_lock(&t->lock);
    t->closed = 1;
    note_dropped(t);
    /* Seen on the H100 machine: a second at_exit with no records, after the
     * one that wrote them, emptied the file.  An empty trace never replaces
     * a file. */
    if (t->count == 0) {
        fprintf(stderr, "kernel_trace: no records; nothing written\n");
        pthread_mutex_unlock(&t->lock);
        return;
    }
    char *path = out_path();
    if (!path)
        fprintf(stderr, "kernel_trace: out of memory; %zu records not written\n", t->count);
    else if (write_csv(t, path))
        report(t, path);
    free(path);
    /* The records stay allocated: a CUPTI thread may still be running, and
     * the process is about to give the memory back anyway. */
    pthread_mutex_unlock(&t->lock);
}

/* ---------------- injection entry point ---------------- */

/* Record layouts are those of the headers we were built with; a CUPTI from
 * another major release may lay them out differently. */
static void check_version(void)
{
    uint32_t v = 0;
    if (!cupti_ok("cuptiGetVersion", cuptiGetVersion(&v))) return;
    if (v / 10000 != CUPTI_API_VERSION / 10000)
        fprintf(stderr, "kernel_trace: warning: built against CUPTI API %u but libcupti is %u; "
                        "records may be misread\n", (unsigned)CUPTI_API_VERSION, (unsigned)v);
}

static void start_tracing(Tracer *t)
{
    check_version();
    if (!cupti_ok("cuptiActivityRegisterCallbacks",
                  cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed)))
        return;
    int kernels = cupti_ok("cuptiActivityEnable(CONCURRENT_KERNEL)",
                           cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
    int memcpys = cupti_ok("cuptiActivityEnable(MEMCPY)", cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY));
    if (!kernels && !memcpys) return;
    t->pid = getpid();
    if (atexit(at_exit) != 0) {
        fprintf(stderr, "kernel_trace: atexit failed; no trace will be written\n");
        return;
    }
    fprintf(stderr, "kernel_trace: tracing%s%s (pid %ld)\n", kernels ? " kernels" : "",
            memcpys ? " memcpys" : "", (long)t->pid);
}

/* Called by the CUDA driver (once per process, from cuInit).  Always reports
 * success: a failed tracer must leave the program running untraced. */
__attribute__((visibility("default"))) int InitializeInjection(void)
{
    Tracer *t = &g_tracer;
    pthread_mutex_lock(&t->lock);
    int first = !t->started;
    t->started = 1;
    pthread_mutex_unlock(&t->lock);
    if (first) start_tracing(t);
    return 1;
}
