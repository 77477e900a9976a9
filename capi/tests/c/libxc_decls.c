/*
 * A sender's translation unit that sees libxc's declarations of the
 * checkpoint-compression API (as xenctrl.h of Xen 4.1 to 4.12 declared them
 * on x86) and then ckpt.h: with -Werror it compiles only if every type and
 * prototype agrees, so such a sender builds and links against libckpt
 * unchanged. It then runs one page through.
 */
typedef struct xc_interface_core xc_interface;
typedef unsigned long xen_pfn_t;
typedef struct compression_ctx comp_ctx;
comp_ctx *xc_compression_create_context(xc_interface *xch, unsigned long p2m_size);
void xc_compression_free_context(xc_interface *xch, comp_ctx *ctx);
int xc_compression_add_page(xc_interface *xch, comp_ctx *ctx, char *page, unsigned long pfn,
                            int israw);
int xc_compression_compress_pages(xc_interface *xch, comp_ctx *ctx, char *compbuf,
                                  unsigned long compbuf_size, unsigned long *compbuf_len);
void xc_compression_reset_pagebuf(xc_interface *xch, comp_ctx *ctx);
int xc_compression_uncompress_page(xc_interface *xch, char *compbuf, unsigned long compbuf_size,
                                   unsigned long *compbuf_pos, char *dest);

#include "ckpt.h"

#include <string.h>

int main(void)
{
    static char page[4096], copy[4096], buf[8192];
    unsigned long len = 0, pos = 0;
    memset(page, 0x5a, sizeof page);
    comp_ctx *ctx = xc_compression_create_context(NULL, 16);
    if (!ctx || xc_compression_add_page(NULL, ctx, page, 3, 0) != 0 ||
        xc_compression_compress_pages(NULL, ctx, buf, sizeof buf, &len) != 1 ||
        len != 4097 || xc_compression_compress_pages(NULL, ctx, buf, sizeof buf, &len) != 0 ||
        xc_compression_uncompress_page(NULL, buf, len, &pos, copy) != 0 || pos != len ||
        memcmp(page, copy, sizeof page) != 0)
        return 1;
    xc_compression_reset_pagebuf(NULL, ctx);
    xc_compression_free_context(NULL, ctx);
    return 0;
}
