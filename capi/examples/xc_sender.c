/*
 * The loop of a Remus sender on the xc_compression_* drop-in: stage each
 * dirty page while the guest is paused; when add_page says the staging
 * buffer is full, compress and write until compress_pages returns 0; after
 * the guest resumes, compress and write the rest. Each buffer would go out
 * as one COMPRESSED_DATA chunk; here a backup applies it at once with
 * xc_compression_uncompress_page and the example checks the backup's pages.
 *
 *   cargo build --release -p ckpt-capi
 *   cc -I capi/include capi/examples/xc_sender.c -L target/release -lckpt \
 *      -Wl,-rpath,$PWD/target/release
 */
#include "ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 4096
#define GUEST 64

static char guest[GUEST][PAGE], backup[GUEST][PAGE];
static unsigned long sent_pfns[GUEST], next_to_apply, staged;

/* Xen's write_compressed(): compress until 0, sending each buffer. */
static int flush(comp_ctx *ctx, char *buf, unsigned long size, unsigned long *bytes)
{
    unsigned long len;
    int rc;
    while ((rc = xc_compression_compress_pages(NULL, ctx, buf, size, &len)) != 0) {
        if (rc != 1 && rc != -1)
            return -1;
        *bytes += len;
        /* The backup's side: apply the buffer's pages in order. */
        unsigned long pos = 0;
        while (pos < len)
            if (xc_compression_uncompress_page(NULL, buf, len, &pos,
                                               backup[sent_pfns[next_to_apply++]]) != 0)
                return -1;
    }
    next_to_apply = staged = 0;
    return 0;
}

int main(void)
{
    unsigned long size = 3 * CKPT_XC_WORST_PAGE_BYTES; /* small, to show the -1 loop */
    char *buf = malloc(size);
    comp_ctx *ctx = xc_compression_create_context(NULL, GUEST);
    if (!buf || !ctx)
        return 1;
    for (int c = 0; c < 4; c++) {
        unsigned long bytes = 0, pages = 0;
        for (unsigned long pfn = 0; pfn < GUEST; pfn++) {
            if (c > 0 && pfn % (c + 1) != 0)
                continue; /* not dirty in this checkpoint */
            guest[pfn][(c * 40 + pfn) % PAGE] = (char)(c + 1);
            sent_pfns[staged++] = pfn;
            pages++;
            int rc = xc_compression_add_page(NULL, ctx, guest[pfn], pfn, pfn == 7 /* a page table */);
            if (rc == -2 || (rc == -1 && flush(ctx, buf, size, &bytes) != 0)) {
                fprintf(stderr, "add_page: %s\n", ckpt_last_error());
                return 1;
            }
        }
        /* The guest runs again; compress and send the rest. */
        if (flush(ctx, buf, size, &bytes) != 0) {
            fprintf(stderr, "compress: %s\n", ckpt_last_error());
            return 1;
        }
        xc_compression_reset_pagebuf(NULL, ctx);
        printf("checkpoint %d: %lu pages in %lu bytes, backup %s\n", c, pages, bytes,
               memcmp(guest, backup, sizeof guest) == 0 ? "matches" : "DIFFERS");
        if (memcmp(guest, backup, sizeof guest) != 0)
            return 1;
    }
    xc_compression_free_context(NULL, ctx);
    free(buf);
    return 0;
}
