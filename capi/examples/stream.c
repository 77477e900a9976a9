/*
 * The native API: a primary writes checkpoints of a guest to a stream file;
 * a backup reads the file, verifies each checkpoint whole and applies it to
 * its memory.
 *
 *   cargo build --release -p ckpt-capi
 *   cc -I capi/include capi/examples/stream.c -L target/release -lckpt \
 *      -Wl,-rpath,$PWD/target/release
 *   ./a.out /tmp/guest.ckpt
 */
#include "ckpt.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE 4096
#define GUEST 256

static unsigned char guest[GUEST][PAGE], backup[GUEST][PAGE];

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "guest.ckpt";
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    struct ckpt_sender *s = fd < 0 ? NULL : ckpt_sender_new(fd, GUEST, 0);
    if (!s) {
        fprintf(stderr, "sender: %s\n", fd < 0 ? "cannot open the file" : ckpt_last_error());
        return 1;
    }
    /* Primary: a whole first checkpoint, then the pages dirtied per epoch
     * (the delta cache fills from the first compressed one, the second). */
    for (int c = 0; c < 5; c++) {
        if (ckpt_sender_begin_checkpoint(s) != CKPT_OK)
            goto send_error;
        for (uint64_t pfn = 0; pfn < GUEST; pfn++) {
            if (c > 0 && pfn % 8 != 0 && (pfn + c) % 13 != 0)
                continue; /* not dirty in this epoch */
            guest[pfn][(pfn + c) % PAGE] ^= (unsigned char)(c + 1);
            if (ckpt_sender_add_page(s, pfn, CKPT_PAGE_NORMAL, guest[pfn]) != CKPT_OK)
                goto send_error;
        }
        if (ckpt_sender_end_checkpoint(s) != CKPT_OK)
            goto send_error;
    }
    if (ckpt_sender_finish(s) != CKPT_OK) {
        fprintf(stderr, "finish: %s\n", ckpt_last_error());
        return 1;
    }

    /* Backup: apply each verified checkpoint to its memory. */
    lseek(fd, 0, SEEK_SET);
    struct ckpt_receiver *r = ckpt_receiver_new(fd, backup, GUEST);
    if (!r) {
        fprintf(stderr, "receiver: %s\n", ckpt_last_error());
        return 1;
    }
    struct ckpt_checkpoint_info info;
    int rc;
    while ((rc = ckpt_receiver_next(r, &info)) == 1)
        printf("checkpoint %llu: %llu pages (%llu whole, %llu unchanged, %llu deltas), "
               "%llu bytes\n",
               (unsigned long long)info.seq, (unsigned long long)info.data_pages,
               (unsigned long long)info.full_pages, (unsigned long long)info.empty_pages,
               (unsigned long long)info.delta_pages, (unsigned long long)info.frame_bytes);
    if (rc != 0) {
        fprintf(stderr, "receive: %s\n", ckpt_last_error());
        return 1;
    }
    ckpt_receiver_free(r);
    close(fd);
    int same = memcmp(guest, backup, sizeof guest) == 0;
    printf("backup %s the primary\n", same ? "matches" : "DIFFERS from");
    return same ? 0 : 1;

send_error:
    fprintf(stderr, "send: %s\n", ckpt_last_error());
    ckpt_sender_free(s);
    return 1;
}
