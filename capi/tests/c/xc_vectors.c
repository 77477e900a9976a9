/*
 * Drives the xc_compression_* drop-in over one golden vector file (the
 * plain CKPTVEC1 layout of tests/vectors/README.md) as Xen's Remus sender
 * drove libxc: add each page; when add_page returns -1, compress until 0,
 * writing each output buffer out; at the end of a checkpoint compress the
 * rest the same way; then reset. It does so once per output buffer size
 * given and checks, for each:
 *  - the buffers of each batch, concatenated, equal the vector's output for
 *    that batch byte for byte, and a buffer that holds a whole batch gets
 *    it in one piece;
 *  - every buffer decodes on its own (compbuf_size = its length) with
 *    xc_compression_uncompress_page into exactly the vector's pages, in
 *    order, applied to a model of the receiver's memory;
 *  - the return values follow the protocol: -1 (more to come) any number of
 *    times, then 1, then 0, with *compbuf_len untouched on 0.
 *
 * Usage: xc_vectors FILE SIZE...   Exit status 0 when every check passed.
 */
#include "ckpt.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096
#define GUEST_PAGES (1UL << 28)

static const char *file_name;
static unsigned long cur_size;
static unsigned cur_cp;

static void fail(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s, buffer of %lu bytes, checkpoint %u: ", file_name, cur_size, cur_cp);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        fail("out of memory (%zu bytes)", n);
    return p;
}

static void read_exact(FILE *f, void *buf, size_t n)
{
    if (fread(buf, 1, n, f) != n)
        fail("vector file truncated");
}

static uint32_t rd32(FILE *f)
{
    unsigned char b[4];
    read_exact(f, b, 4);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t rd64(FILE *f)
{
    uint64_t lo = rd32(f);
    return lo | (uint64_t)rd32(f) << 32;
}

/* The receiver's memory: pages by PFN, zero until first written. */
struct memory {
    uint64_t *pfns;
    unsigned char **pages;
    size_t cap, used;
};

static size_t slot_of(const struct memory *m, uint64_t pfn)
{
    size_t i = (size_t)(pfn * 0x9E3779B97F4A7C15ULL) & (m->cap - 1);
    while (m->pages[i] && m->pfns[i] != pfn)
        i = (i + 1) & (m->cap - 1);
    return i;
}

static unsigned char *memory_page(struct memory *m, uint64_t pfn)
{
    if (2 * (m->used + 1) > m->cap) {
        struct memory bigger = {0};
        bigger.cap = m->cap ? 2 * m->cap : 1024;
        bigger.pfns = xmalloc(bigger.cap * sizeof *bigger.pfns);
        bigger.pages = calloc(bigger.cap, sizeof *bigger.pages);
        if (!bigger.pages)
            fail("out of memory");
        for (size_t i = 0; i < m->cap; i++) {
            if (m->pages[i]) {
                size_t j = slot_of(&bigger, m->pfns[i]);
                bigger.pfns[j] = m->pfns[i];
                bigger.pages[j] = m->pages[i];
            }
        }
        bigger.used = m->used;
        free(m->pfns);
        free(m->pages);
        *m = bigger;
    }
    size_t i = slot_of(m, pfn);
    if (!m->pages[i]) {
        m->pages[i] = calloc(1, PAGE);
        if (!m->pages[i])
            fail("out of memory");
        m->pfns[i] = pfn;
        m->used++;
    }
    return m->pages[i];
}

static void memory_free(struct memory *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->pages[i]);
    free(m->pfns);
    free(m->pages);
    memset(m, 0, sizeof *m);
}

struct record {
    uint64_t pfn;
    int raw;
    unsigned char *page;
};

/* One run's state: the context, its output buffer and what it has checked. */
struct run {
    comp_ctx *ctx;
    char *compbuf;
    unsigned long size;
    struct memory memory;
    const struct record *records;
    uint32_t nrecords, next_decode;
    unsigned char *batch; /* the current batch's buffers, concatenated */
    size_t batch_len, batch_cap;
    unsigned long long buffers, bytes;
};

/* Xen's write_compressed(): compress until 0, writing each buffer out. */
static size_t drain(struct run *r)
{
    unsigned pieces = 0;
    int last = 0;
    r->batch_len = 0;
    for (;;) {
        unsigned long len = 0xdeadbeef;
        int rc = xc_compression_compress_pages(NULL, r->ctx, r->compbuf, r->size, &len);
        if (rc == 0) {
            if (len != 0xdeadbeef)
                fail("compress_pages set *compbuf_len when it returned 0");
            break;
        }
        if (rc != 1 && rc != -1)
            fail("compress_pages returned %d", rc);
        if (last == 1)
            fail("compress_pages returned %d after 1, not 0", rc);
        if (len == 0 || len > r->size)
            fail("compress_pages placed %lu bytes (rc %d)", len, rc);
        last = rc;
        pieces++;
        r->buffers++;
        r->bytes += len;
        if (r->batch_len + len > r->batch_cap) {
            r->batch_cap = 2 * (r->batch_len + len);
            r->batch = realloc(r->batch, r->batch_cap);
            if (!r->batch)
                fail("out of memory");
        }
        memcpy(r->batch + r->batch_len, r->compbuf, len);
        r->batch_len += len;
        /* The receiver's side: this buffer alone holds whole pages. */
        unsigned long pos = 0;
        while (pos < len) {
            if (r->next_decode >= r->nrecords)
                fail("buffer holds more pages than were staged");
            const struct record *rec = &r->records[r->next_decode];
            unsigned char *dest = memory_page(&r->memory, rec->pfn);
            unsigned long before = pos;
            if (xc_compression_uncompress_page(NULL, r->compbuf, len, &pos, (char *)dest) != 0)
                fail("page %u (pfn %#llx) does not decode at %lu of %lu: %s", r->next_decode,
                     (unsigned long long)rec->pfn, before, len, ckpt_last_error());
            if (memcmp(dest, rec->page, PAGE) != 0)
                fail("page %u (pfn %#llx) decodes to other bytes", r->next_decode,
                     (unsigned long long)rec->pfn);
            r->next_decode++;
        }
        if (pos != len)
            fail("decoding ended at %lu of %lu", pos, len);
    }
    if (pieces && last != 1)
        fail("the last buffer of a batch returned %d", last);
    if (pieces > 1 && r->size >= (unsigned long)CKPT_XC_STAGING_PAGES * CKPT_XC_WORST_PAGE_BYTES)
        fail("a buffer that holds a whole batch got it in %u pieces", pieces);
    return pieces;
}

static void compare_batch(const struct run *r, unsigned index, uint32_t k, const uint64_t *lens,
                          unsigned char *const *outs)
{
    if (index >= k)
        fail("batch %u produced, the vector has %u", index + 1, k);
    if (r->batch_len != lens[index] || memcmp(r->batch, outs[index], r->batch_len) != 0) {
        size_t at = 0;
        while (at < r->batch_len && at < lens[index] && r->batch[at] == outs[index][at])
            at++;
        fail("batch %u: %zu bytes, expected %llu; first difference at byte %zu", index,
             r->batch_len, (unsigned long long)lens[index], at);
    }
}

static void run_file(FILE *f, unsigned long size)
{
    struct run r = {0};
    unsigned long long pages = 0;
    cur_size = size;
    cur_cp = 0;
    rewind(f);
    char magic[8];
    read_exact(f, magic, 8);
    if (memcmp(magic, "CKPTVEC1", 8) != 0)
        fail("not a vector file");
    uint32_t checkpoints = rd32(f);
    /* Page records of a checkpoint, kept across checkpoints. */
    struct record *records = NULL;
    unsigned char *data = NULL;
    uint32_t cap = 0;
    r.size = size;
    r.compbuf = xmalloc(size);
    r.ctx = xc_compression_create_context(NULL, GUEST_PAGES);
    if (!r.ctx)
        fail("create_context: %s", ckpt_last_error());
    for (cur_cp = 1; cur_cp <= checkpoints; cur_cp++) {
        uint32_t n = rd32(f);
        if (n > cap) {
            cap = n;
            free(records);
            free(data);
            records = xmalloc((size_t)cap * sizeof *records);
            data = xmalloc((size_t)cap * PAGE);
        }
        for (uint32_t i = 0; i < n; i++) {
            unsigned char raw;
            records[i].pfn = rd64(f);
            read_exact(f, &raw, 1);
            records[i].raw = raw != 0;
            records[i].page = data + (size_t)i * PAGE;
            read_exact(f, records[i].page, PAGE);
        }
        uint32_t k = rd32(f);
        uint64_t *lens = xmalloc((k + 1) * sizeof *lens);
        unsigned char **outs = xmalloc((k + 1) * sizeof *outs);
        for (uint32_t j = 0; j < k; j++) {
            lens[j] = rd64(f);
            outs[j] = xmalloc(lens[j]);
            read_exact(f, outs[j], lens[j]);
        }

        r.records = records;
        r.nrecords = n;
        r.next_decode = 0;
        unsigned batches = 0;
        for (uint32_t i = 0; i < n; i++) {
            int rc = xc_compression_add_page(NULL, r.ctx, (char *)records[i].page,
                                             (xen_pfn_t)records[i].pfn, records[i].raw);
            if (rc == -1) {
                if (!drain(&r))
                    fail("add_page said the buffer is full but nothing was compressed");
                compare_batch(&r, batches++, k, lens, outs);
            } else if (rc != 0) {
                fail("add_page of record %u (pfn %#llx) returned %d: %s", i,
                     (unsigned long long)records[i].pfn, rc, ckpt_last_error());
            }
        }
        if (drain(&r))
            compare_batch(&r, batches++, k, lens, outs);
        xc_compression_reset_pagebuf(NULL, r.ctx);
        if (batches != k)
            fail("%u batches, the vector has %u", batches, k);
        if (r.next_decode != n)
            fail("%u of %u pages came out", r.next_decode, n);
        pages += n;
        for (uint32_t j = 0; j < k; j++)
            free(outs[j]);
        free(outs);
        free(lens);
    }
    free(data);
    free(records);
    printf("%s: buffer of %lu bytes: %u checkpoints, %llu pages, %llu bytes in %llu buffers, "
           "byte-exact and decoded\n",
           file_name, size, checkpoints, pages, r.bytes, r.buffers);
    xc_compression_free_context(NULL, r.ctx);
    memory_free(&r.memory);
    free(r.batch);
    free(r.compbuf);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FILE SIZE...\n", argv[0]);
        return 2;
    }
    file_name = argv[1];
    FILE *f = fopen(file_name, "rb");
    if (!f) {
        perror(file_name);
        return 2;
    }
    for (int a = 2; a < argc; a++) {
        char *end;
        unsigned long size = strtoul(argv[a], &end, 10);
        if (*end || size == 0) {
            fprintf(stderr, "bad size %s\n", argv[a]);
            return 2;
        }
        run_file(f, size);
    }
    fclose(f);
    return 0;
}
