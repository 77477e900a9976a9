/*
 * The native API from C:
 *  1. checkpoints sent through a pipe by a sender thread and applied by a
 *     receiver into caller memory, which must equal the primary's memory
 *     after every checkpoint, page for page;
 *  2. a stream written to a file, with every misuse the sender refuses,
 *     read back by a receiver that keeps its own memory;
 *  3. that stream cut inside its last checkpoint, and with one byte of the
 *     last checkpoint flipped: the receiver refuses the checkpoint and
 *     memory keeps the one before, exactly.
 * Exit status 0 when every check passed.
 */
#include "ckpt.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE 4096
#define GUEST 700
#define CHECKPOINTS 7

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (last error: %s)\n", ckpt_last_error());
    exit(1);
}

#define CHECK(cond, ...)          \
    do {                          \
        if (!(cond))              \
            fail(__VA_ARGS__);    \
    } while (0)

/* The primary's guest: which pages checkpoint c dirties, and their bytes. */
static int dirty(unsigned c, uint64_t pfn)
{
    return c == 0 || pfn % 3 == 0 || (pfn + c) % 7 == 0 || (c == CHECKPOINTS - 1 && pfn < 40);
}

static uint32_t type_of(uint64_t pfn)
{
    return pfn % 61 == 0 ? CKPT_PAGE_L1TAB + (pfn % 4) : CKPT_PAGE_NORMAL;
}

static void fill(unsigned char *page, unsigned c, uint64_t pfn)
{
    uint32_t x = (uint32_t)(pfn * 2654435761u) | 1;
    for (size_t i = 0; i < PAGE; i += 4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        memcpy(page + i, &x, 4);
    }
    /* Later checkpoints change a few words, and some pages whole. */
    for (unsigned k = 1; k <= c; k++) {
        uint32_t w = (uint32_t)(k * 97 + pfn) % (PAGE / 4);
        uint32_t v = k * 0x01010101u;
        memcpy(page + 4 * w, &v, 4);
    }
    if (c == CHECKPOINTS - 1 && pfn < 40)
        memset(page, (int)(pfn + c), PAGE);
}

/* Expected content of pfn after checkpoint c: from the last one that dirtied it. */
static void expected(unsigned char *page, unsigned c, uint64_t pfn)
{
    unsigned last = c;
    while (!dirty(last, pfn))
        last--;
    fill(page, last, pfn);
}

static unsigned dirty_count(unsigned c)
{
    unsigned n = 0;
    for (uint64_t p = 0; p < GUEST; p++)
        n += dirty(c, p) != 0;
    return n;
}

static void send_all(struct ckpt_sender *s, unsigned checkpoints, int fd_for_offsets, long *offsets)
{
    unsigned char page[PAGE];
    for (unsigned c = 0; c < checkpoints; c++) {
        CHECK(ckpt_sender_begin_checkpoint(s) == CKPT_OK, "begin %u", c);
        for (uint64_t pfn = 0; pfn < GUEST; pfn++) {
            if (!dirty(c, pfn))
                continue;
            fill(page, c, pfn);
            CHECK(ckpt_sender_add_page(s, pfn, type_of(pfn), page) == CKPT_OK, "add %u/%llu", c,
                  (unsigned long long)pfn);
        }
        CHECK(ckpt_sender_end_checkpoint(s) == CKPT_OK, "end %u", c);
        if (offsets) {
            CHECK(ckpt_sender_sync(s) == CKPT_OK, "sync %u", c);
            offsets[c] = lseek(fd_for_offsets, 0, SEEK_CUR);
        }
    }
}

static void *sender_thread(void *arg)
{
    int fd = *(int *)arg;
    struct ckpt_sender *s = ckpt_sender_new(fd, GUEST, 2);
    CHECK(s, "ckpt_sender_new");
    send_all(s, CHECKPOINTS, -1, NULL);
    CHECK(ckpt_sender_finish(s) == CKPT_OK, "finish");
    close(fd);
    return NULL;
}

static void check_memory(const unsigned char *mem, unsigned c, const char *what)
{
    unsigned char want[PAGE];
    for (uint64_t pfn = 0; pfn < GUEST; pfn++) {
        expected(want, c, pfn);
        CHECK(memcmp(mem + pfn * PAGE, want, PAGE) == 0, "%s: pfn %llu differs after checkpoint %u",
              what, (unsigned long long)pfn, c);
    }
}

static void pipe_round_trip(void)
{
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, sender_thread, &fds[1]) == 0, "thread");
    unsigned char *mem = calloc(GUEST, PAGE);
    CHECK(mem, "memory");
    struct ckpt_receiver *r = ckpt_receiver_new(fds[0], mem, GUEST);
    CHECK(r, "ckpt_receiver_new");
    CHECK(ckpt_receiver_guest_pages(r) == GUEST, "guest pages");
    struct ckpt_checkpoint_info info;
    unsigned c = 0;
    int rc;
    while ((rc = ckpt_receiver_next(r, &info)) == 1) {
        CHECK(info.seq == c, "seq %llu, expected %u", (unsigned long long)info.seq, c);
        CHECK(info.data_pages == dirty_count(c), "checkpoint %u: %llu pages, expected %u", c,
              (unsigned long long)info.data_pages, dirty_count(c));
        CHECK(info.compressed == (c > 0), "checkpoint %u compressed %d", c, info.compressed);
        CHECK(info.full_pages + info.empty_pages + info.delta_pages == info.data_pages,
              "checkpoint %u: forms do not add up", c);
        /* The first checkpoint is sent whole and seeds the cache, so deltas
           start with the first compressed one. */
        CHECK(c == 0 ? info.full_pages == info.data_pages : info.delta_pages > 0,
              "checkpoint %u: %llu whole, %llu deltas", c, (unsigned long long)info.full_pages,
              (unsigned long long)info.delta_pages);
        check_memory(mem, c, "pipe");
        c++;
    }
    CHECK(rc == 0, "end of stream: %d", rc);
    CHECK(c == CHECKPOINTS, "%u checkpoints", c);
    CHECK(ckpt_receiver_next(r, NULL) == 0, "after the end");
    pthread_join(t, NULL);
    ckpt_receiver_free(r);
    close(fds[0]);
    free(mem);
    printf("pipe: %u checkpoints of a %d-page guest applied and checked\n", c, GUEST);
}

/* Copies the first len bytes of from into a new temporary file. */
static int copy_prefix(int from, long len, long flip_at)
{
    FILE *f = tmpfile();
    CHECK(f, "tmpfile");
    int fd = dup(fileno(f));
    fclose(f);
    unsigned char *buf = malloc(len);
    CHECK(buf && pread(from, buf, len, 0) == len, "read back");
    if (flip_at >= 0)
        buf[flip_at] ^= 0x40;
    CHECK(write(fd, buf, len) == len, "write copy");
    CHECK(lseek(fd, 0, SEEK_SET) == 0, "rewind");
    free(buf);
    return fd;
}

static void file_and_damage(void)
{
    FILE *f = tmpfile();
    CHECK(f, "tmpfile");
    int fd = fileno(f);
    unsigned char page[PAGE];
    memset(page, 1, PAGE);

    CHECK(ckpt_sender_new(-1, GUEST, 1) == NULL, "a bad descriptor is refused");
    CHECK(ckpt_sender_new(fd, 0, 1) == NULL, "an empty guest is refused");
    CHECK(ckpt_sender_new(fd, (1ULL << 28) + 1, 1) == NULL, "a guest past 2^28 is refused");
    struct ckpt_sender *s = ckpt_sender_new(fd, GUEST, 1);
    CHECK(s, "ckpt_sender_new");
    /* Misuse, refused without harm to the stream. */
    CHECK(ckpt_sender_add_page(s, 1, CKPT_PAGE_NORMAL, page) == CKPT_ERR_ORDER, "page outside");
    CHECK(strlen(ckpt_last_error()) > 0, "a message");
    CHECK(ckpt_sender_end_checkpoint(s) == CKPT_ERR_ORDER, "end outside");
    CHECK(ckpt_sender_begin_checkpoint(s) == CKPT_OK, "begin");
    CHECK(ckpt_sender_begin_checkpoint(s) == CKPT_ERR_ORDER, "begin twice");
    CHECK(ckpt_sender_add_page(s, GUEST, CKPT_PAGE_NORMAL, page) == CKPT_ERR_PAGE, "pfn == guest");
    CHECK(ckpt_sender_add_page(s, 1, 5, page) == CKPT_ERR_INVALID, "type 5");
    CHECK(ckpt_sender_add_page(s, 1, 0x10, page) == CKPT_ERR_INVALID, "type 16");
    CHECK(ckpt_sender_add_page(s, 1, CKPT_PAGE_NORMAL, NULL) == CKPT_ERR_PAGE, "no data");
    CHECK(ckpt_sender_add_page(s, 1, CKPT_PAGE_XTAB, page) == CKPT_ERR_PAGE, "data for XTAB");
    CHECK(ckpt_sender_add_page(NULL, 1, CKPT_PAGE_NORMAL, page) == CKPT_ERR_INVALID, "NULL");
    /* An entry without data is fine. */
    CHECK(ckpt_sender_add_page(s, GUEST - 1, CKPT_PAGE_XALLOC, NULL) == CKPT_OK, "XALLOC");
    CHECK(ckpt_sender_end_checkpoint(s) == CKPT_OK, "end");
    long offsets[CHECKPOINTS + 1];
    CHECK(ckpt_sender_sync(s) == CKPT_OK, "sync");
    offsets[0] = lseek(fd, 0, SEEK_CUR);
    /* Then the guest's checkpoints, one behind: the empty one is seq 0. */
    send_all(s, CHECKPOINTS, fd, offsets + 1);
    CHECK(ckpt_sender_finish(s) == CKPT_OK, "finish");
    long size = lseek(fd, 0, SEEK_END);
    CHECK(size > offsets[CHECKPOINTS], "the end frame follows the last checkpoint");

    /* Read back into the receiver's own memory. */
    CHECK(lseek(fd, 0, SEEK_SET) == 0, "rewind");
    CHECK(ckpt_receiver_new(fd, page, 1) == NULL, "memory smaller than the guest is refused");
    CHECK(lseek(fd, 0, SEEK_SET) == 0, "rewind");
    struct ckpt_receiver *r = ckpt_receiver_new(fd, NULL, 0);
    CHECK(r, "ckpt_receiver_new");
    struct ckpt_checkpoint_info info;
    CHECK(ckpt_receiver_next(r, &info) == 1 && info.entries == 1 && info.data_pages == 0,
          "the empty checkpoint");
    for (unsigned c = 0; c < CHECKPOINTS; c++) {
        CHECK(ckpt_receiver_next(r, &info) == 1, "checkpoint %u", c);
        CHECK(info.seq == c + 1, "seq");
    }
    CHECK(ckpt_receiver_next(r, &info) == 0, "end of stream");
    unsigned char got[PAGE], want[PAGE];
    for (uint64_t pfn = 0; pfn < GUEST; pfn++) {
        CHECK(ckpt_receiver_read_page(r, pfn, got) == CKPT_OK, "read_page");
        expected(want, CHECKPOINTS - 1, pfn);
        CHECK(memcmp(got, want, PAGE) == 0, "file: pfn %llu differs", (unsigned long long)pfn);
    }
    CHECK(ckpt_receiver_read_page(r, GUEST, got) == CKPT_ERR_PAGE, "read past the guest");
    CHECK(ckpt_receiver_read_page(r, 0, NULL) == CKPT_ERR_INVALID, "NULL destination");
    ckpt_receiver_free(r);

    /* Cut inside the last checkpoint, and one byte of it flipped. */
    long last_start = offsets[CHECKPOINTS - 1], last_end = offsets[CHECKPOINTS];
    struct {
        long len, flip;
        int status;
        const char *what;
    } damage[] = {
        {last_end - 1, -1, CKPT_ERR_TRUNCATED, "cut before the last trailer's end"},
        {(last_start + last_end) / 2, -1, CKPT_ERR_TRUNCATED, "cut in the last checkpoint"},
        {size, (last_start + last_end) / 2, CKPT_ERR_STREAM, "a byte flipped in the last checkpoint"},
    };
    unsigned char *mem = calloc(GUEST, PAGE);
    CHECK(mem, "memory");
    for (size_t d = 0; d < sizeof damage / sizeof damage[0]; d++) {
        int cut = copy_prefix(fd, damage[d].len, damage[d].flip);
        memset(mem, 0, (size_t)GUEST * PAGE);
        r = ckpt_receiver_new(cut, mem, GUEST);
        CHECK(r, "receiver on %s", damage[d].what);
        for (unsigned c = 0; c < CHECKPOINTS; c++)
            CHECK(ckpt_receiver_next(r, NULL) == 1, "%s: checkpoint %u", damage[d].what, c);
        int rc = ckpt_receiver_next(r, NULL);
        CHECK(rc == damage[d].status, "%s: status %d, expected %d", damage[d].what, rc,
              damage[d].status);
        check_memory(mem, CHECKPOINTS - 2, damage[d].what);
        CHECK(ckpt_receiver_next(r, NULL) == CKPT_ERR_ORDER, "%s: a stopped receiver",
              damage[d].what);
        ckpt_receiver_free(r);
        close(cut);
        printf("%s: refused (%d), memory holds the checkpoint before\n", damage[d].what, rc);
    }
    free(mem);
    fclose(f);
    printf("file: %u checkpoints, %ld bytes, read back and checked\n", CHECKPOINTS + 1, size);
}

int main(void)
{
    CHECK(ckpt_receiver_next(NULL, NULL) == CKPT_ERR_INVALID, "NULL receiver");
    CHECK(ckpt_sender_sync(NULL) == CKPT_ERR_INVALID, "NULL sender");
    CHECK(ckpt_sender_finish(NULL) == CKPT_ERR_INVALID, "NULL sender");
    ckpt_sender_free(NULL);
    ckpt_receiver_free(NULL);
    CHECK(ckpt_receiver_guest_pages(NULL) == 0, "NULL receiver");
    pipe_round_trip();
    file_and_damage();
    return 0;
}
