/*
 * ckpt.h: the C interface to the ckpt checkpoint-compression engine.
 *
 * Link with -lckpt (libckpt.so, or libckpt.a followed by
 * -lgcc_s -lutil -lrt -lpthread -lm -ldl).
 *
 * Two APIs:
 *  - xc_compression_*: a drop-in for libxc's Remus checkpoint compression,
 *    with the original's symbols, types and return values.
 *  - ckpt_sender_* / ckpt_receiver_*: a checkpoint stream sender and a
 *    verifying receiver over file descriptors.
 * Every function returns its error value for a NULL pointer;
 * ckpt_last_error() gives the calling thread's last error message.
 */

#ifndef CKPT_H
#define CKPT_H

/* Generated from capi/src by cbindgen (capi/tests/header.rs); do not edit. */

#include <stdint.h>

/**
 * Success.
 */
#define CKPT_OK 0

/**
 * An argument is invalid: a NULL pointer, a page type with no meaning, an
 * unusable file descriptor or memory size.
 */
#define CKPT_ERR_INVALID -1

/**
 * A call out of order: a page outside a checkpoint, a checkpoint begun
 * twice, or any call after the sender or receiver stopped on an error.
 */
#define CKPT_ERR_ORDER -2

/**
 * A PFN at or past the guest's page count, or a page given for a type that
 * carries none (or none for one that does).
 */
#define CKPT_ERR_PAGE -3

/**
 * Reading or writing the file descriptor failed.
 */
#define CKPT_ERR_IO -4

/**
 * The stream is malformed or a checkpoint failed verification; guest memory
 * still holds the last checkpoint applied.
 */
#define CKPT_ERR_STREAM -5

/**
 * The stream ended in the middle of a checkpoint (the sender stopped or the
 * connection was cut); guest memory still holds the last checkpoint applied.
 */
#define CKPT_ERR_TRUNCATED -6

/**
 * An internal failure (worker threads could not start, or a bug was caught
 * at the boundary).
 */
#define CKPT_ERR_INTERNAL -7

/**
 * Page type of an ordinary page (delta-compressed against the cache).
 */
#define CKPT_PAGE_NORMAL 0

/**
 * Page type of a level-1 page table (levels 2..4 are 0x2..0x4); sent
 * whole, never cached.
 */
#define CKPT_PAGE_L1TAB 1

/**
 * Added to a page-table type (0x1..0x4) when the table is pinned.
 */
#define CKPT_PAGE_PINNED 8

/**
 * Page type of a broken page: an entry without data.
 */
#define CKPT_PAGE_BROKEN 13

/**
 * Page type of a page to allocate only: an entry without data.
 */
#define CKPT_PAGE_XALLOC 14

/**
 * Page type of an invalid page: an entry without data.
 */
#define CKPT_PAGE_XTAB 15

/**
 * Pages in the original's delta cache (32 MiB).
 */
#define CKPT_XC_CACHE_PAGES 8192

/**
 * Pages in the original's staging buffer: `xc_compression_add_page`
 * returns -1 when it holds this many.
 */
#define CKPT_XC_STAGING_PAGES 8192

/**
 * Room an output buffer needs for a page sent as a delta (every word
 * changed: 4096 bytes and 9 run markers). A page whose cached copy exists is
 * placed only while this much room is left, and a FULL page only while
 * 4097 bytes are, as the original did; a buffer of at least this many bytes
 * always takes at least one page.
 */
#define CKPT_XC_WORST_PAGE_BYTES 4105

/**
 * Room an output buffer needs for a page sent FULL (marker and page).
 */
#define CKPT_XC_FULL_PAGE_BYTES 4097

/**
 * A stream receiver (opaque).
 */
typedef struct ckpt_receiver ckpt_receiver;

/**
 * A stream sender (opaque).
 */
typedef struct ckpt_sender ckpt_sender;

/**
 * A compression context (libxc's `struct compression_ctx`): the delta cache,
 * the staged pages and the encodings not yet handed out.
 */
typedef struct compression_ctx compression_ctx;

/**
 * libxc's interface handle (`struct xc_interface_core`). Opaque: the
 * drop-in never looks at it, and NULL is accepted wherever it is taken.
 */
typedef struct xc_interface_core xc_interface_core;

/**
 * What one applied checkpoint held.
 */
typedef struct ckpt_checkpoint_info {
  /**
   * Sequence number (0 for the first checkpoint of the stream).
   */
  uint64_t seq;
  /**
   * PFN entries.
   */
  uint64_t entries;
  /**
   * Pages written to memory (entries that carry data).
   */
  uint64_t data_pages;
  /**
   * Pages that came whole.
   */
  uint64_t full_pages;
  /**
   * Pages that had not changed.
   */
  uint64_t empty_pages;
  /**
   * Pages that came as deltas.
   */
  uint64_t delta_pages;
  /**
   * Bytes of the checkpoint in the stream, framing included.
   */
  uint64_t frame_bytes;
  /**
   * 1 when the checkpoint was compressed, else 0.
   */
  int compressed;
} ckpt_checkpoint_info;

/**
 * libxc's name for a compression context.
 */
typedef struct compression_ctx comp_ctx;

/**
 * libxc's name for a pointer to its interface handle's type.
 */
typedef struct xc_interface_core xc_interface;

/**
 * A guest page frame number (`unsigned long`, as on x86).
 */
typedef unsigned long xen_pfn_t;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The message of the last error on the calling thread, for every function
 * of this library (the drop-in's included); an empty string when there was
 * none. The text stays valid until the next call into the library on the
 * same thread; the library owns it.
 */
const char *ckpt_last_error(void);

/**
 * Starts a sender writing a checkpoint stream for a guest of `guest_pages`
 * pages (at most 2^28) to a duplicate of `fd`; the stream header is written
 * at once. `threads` is the number of compression threads (0: one per
 * core). The first checkpoint is sent whole (uncompressed, as Remus sends
 * its first); every later one is delta-compressed against an 8192-page
 * cache. Returns NULL on failure (see `ckpt_last_error`).
 *
 * A writer to a pipe or socket whose reader may go away should ignore
 * SIGPIPE, as for any write.
 *
 * # Safety
 * `fd` is an open descriptor for the duration of this call.
 */
struct ckpt_sender *ckpt_sender_new(int fd, uint64_t guest_pages, unsigned int threads);

/**
 * Begins a checkpoint (the guest has just been paused).
 *
 * # Safety
 * `s` is NULL or a live sender used by no other call at the same time.
 */
int ckpt_sender_begin_checkpoint(struct ckpt_sender *s);

/**
 * Adds one page of the current checkpoint, in send order: `page_type` is a
 * `CKPT_PAGE_*` value; `page` is its 4096 bytes for normal and page-table
 * pages (copied before the call returns) and NULL for the types without
 * data. A PFN may appear once per checkpoint. `CKPT_ERR_PAGE` for a PFN out
 * of range or page data that does not match the type (the page is not
 * added and the sender goes on); `CKPT_ERR_INVALID` for a type with no
 * meaning.
 *
 * # Safety
 * `s` is NULL or a live sender used by no other call at the same time;
 * `page` is NULL or points to 4096 readable bytes.
 */
int ckpt_sender_add_page(struct ckpt_sender *s, uint64_t pfn, uint32_t page_type, const void *page);

/**
 * Ends the current checkpoint. It is compressed and written after this
 * returns, while the guest runs; `ckpt_sender_sync` waits for that.
 *
 * # Safety
 * `s` is NULL or a live sender used by no other call at the same time.
 */
int ckpt_sender_end_checkpoint(struct ckpt_sender *s);

/**
 * Waits until every checkpoint ended so far is compressed and written to
 * the descriptor (a Remus primary then waits for the backup's
 * acknowledgement before releasing the guest's network output).
 *
 * # Safety
 * `s` is NULL or a live sender used by no other call at the same time.
 */
int ckpt_sender_sync(struct ckpt_sender *s);

/**
 * Writes the end of the stream, waits until everything is written, closes
 * the sender's duplicate of the descriptor and frees the sender (also on
 * error). A checkpoint still open is an error: nothing more is written.
 *
 * # Safety
 * `s` is NULL or a live sender used by no other call at the same time; it
 * is freed by this call.
 */
int ckpt_sender_finish(struct ckpt_sender *s);

/**
 * Frees a sender without ending the stream (a receiver sees it cut off
 * after the last checkpoint written). NULL is ignored.
 *
 * # Safety
 * `s` is NULL or a live sender used by no other call at the same time; it
 * is freed by this call.
 */
void ckpt_sender_free(struct ckpt_sender *s);

/**
 * Starts a receiver on a duplicate of `fd` and reads the stream header
 * (blocking until it arrives). With `memory` non-NULL, checkpoints are
 * applied to the caller's `memory_pages` pages there (page `p` at byte
 * `p * 4096`), which must cover the guest the stream is for; with `memory`
 * NULL, the receiver keeps the guest's memory itself (`memory_pages` is not
 * used) and `ckpt_receiver_read_page` reads it. Returns NULL on failure
 * (see `ckpt_last_error`).
 *
 * # Safety
 * `fd` is an open descriptor for the duration of this call. A non-NULL
 * `memory` points to `memory_pages * 4096` readable and writable bytes that
 * stay valid until `ckpt_receiver_free` and that nothing else reads or
 * writes while a call on this receiver runs.
 */
struct ckpt_receiver *ckpt_receiver_new(int fd, void *memory, uint64_t memory_pages);

/**
 * Pages of the guest the stream is for; 0 for NULL.
 *
 * # Safety
 * `r` is NULL or a live receiver used by no other call at the same time.
 */
uint64_t ckpt_receiver_guest_pages(const struct ckpt_receiver *r);

/**
 * Receives the next checkpoint, verifies it whole and applies it to the
 * guest's memory. Returns 1 when a checkpoint was applied (`*info`, when
 * not NULL, describes it), 0 at the end of the stream, or a negative
 * `CKPT_ERR_*`; after an error memory holds the last checkpoint applied,
 * untouched, and the receiver takes no further checkpoints.
 *
 * # Safety
 * `r` is NULL or a live receiver used by no other call at the same time;
 * `info` is NULL or points to a writable `ckpt_checkpoint_info`.
 */
int ckpt_receiver_next(struct ckpt_receiver *r, struct ckpt_checkpoint_info *info);

/**
 * Copies the page the guest's memory holds at `pfn` into the 4096 bytes at
 * `dest` (zeros for a page never written). `CKPT_ERR_PAGE` when `pfn` is
 * outside the guest.
 *
 * # Safety
 * `r` is NULL or a live receiver used by no other call at the same time;
 * `dest` is NULL or points to 4096 writable bytes.
 */
int ckpt_receiver_read_page(struct ckpt_receiver *r, uint64_t pfn, void *dest);

/**
 * Frees a receiver and closes its duplicate of the descriptor. NULL is
 * ignored.
 *
 * # Safety
 * `r` is NULL or a live receiver used by no other call at the same time;
 * it is freed by this call.
 */
void ckpt_receiver_free(struct ckpt_receiver *r);

/**
 * Creates a compression context for a guest of `p2m_size` pages: an
 * 8192-page delta cache and an 8192-page staging buffer. Returns NULL on
 * failure (see `ckpt_last_error`). `xch` is not used and may be NULL.
 *
 * # Safety
 * None beyond the C signature: `xch` is never dereferenced.
 */
comp_ctx *xc_compression_create_context(xc_interface *xch, unsigned long p2m_size);

/**
 * Frees a context made by `xc_compression_create_context`; NULL is ignored.
 *
 * # Safety
 * `ctx` is NULL or a context from `xc_compression_create_context` not yet
 * freed, and no other call is using it.
 */
void xc_compression_free_context(xc_interface *xch, comp_ctx *ctx);

/**
 * Stages a copy of the 4096-byte `page` for PFN `pfn`; `israw` non-zero
 * marks a page-table page, sent whole and never cached.
 *
 * Returns 0 when the page is staged; -1 when it is staged and the staging
 * buffer is now full (call `xc_compression_compress_pages` until it returns
 * 0 before adding more); -2 when `pfn >= p2m_size` (nothing is staged) or
 * `ctx` or `page` is NULL.
 *
 * # Safety
 * `ctx` is NULL or a live context used by no other call at the same time;
 * `page` is NULL or points to 4096 readable bytes.
 */
int xc_compression_add_page(xc_interface *xch, comp_ctx *ctx, char *page, xen_pfn_t pfn, int israw);

/**
 * Encodes staged pages, in staging order, into `compbuf` (`compbuf_size`
 * bytes), whole page encodings only.
 *
 * Returns 1 when it placed pages and everything staged is now encoded; -1
 * when it placed what fits and pages remain (write `compbuf` out and call
 * again); 0 when nothing is left, which also empties the staging buffer.
 * On 1 and -1, `*compbuf_len` (when not NULL) is set to the bytes placed;
 * on 0 it is left alone. A page is placed only while 4105 bytes of room are
 * left (4097 for a page sent FULL), as the original did, so a buffer of at
 * least 4105 bytes always makes progress; a smaller one may return -1 with
 * nothing placed. -2 (not in the original) when `ctx` or `compbuf` is NULL.
 *
 * # Safety
 * `ctx` is NULL or a live context used by no other call at the same time;
 * `compbuf` is NULL or points to `compbuf_size` writable bytes;
 * `compbuf_len` is NULL or points to a writable `unsigned long`.
 */
int xc_compression_compress_pages(xc_interface *xch,
                                  comp_ctx *ctx,
                                  char *compbuf,
                                  unsigned long compbuf_size,
                                  unsigned long *compbuf_len);

/**
 * Empties the staging buffer. Xen's sender never needs it (a 0 from
 * `xc_compression_compress_pages` already does it); pages staged and not yet
 * handed out are dropped, and then the delta cache is emptied too, since
 * the receiver will not get them. NULL is ignored.
 *
 * # Safety
 * `ctx` is NULL or a live context used by no other call at the same time.
 */
void xc_compression_reset_pagebuf(xc_interface *xch, comp_ctx *ctx);

/**
 * Applies the one page encoding at `compbuf[*compbuf_pos]` to the 4096-byte
 * `destpage` and advances `*compbuf_pos` past it.
 *
 * Returns 0, or -1 when the encoding is malformed or runs past
 * `compbuf_size`, when `*compbuf_pos >= compbuf_size`, or when a pointer is
 * NULL. On -1, neither `destpage` nor `*compbuf_pos` is changed (the
 * original could leave part of a page written), and nothing at or past
 * `compbuf[compbuf_size]` is read.
 *
 * # Safety
 * `compbuf` is NULL or points to `compbuf_size` readable bytes;
 * `compbuf_pos` is NULL or points to a readable and writable `unsigned
 * long`; `destpage` is NULL or points to 4096 writable bytes that do not
 * overlap `compbuf`.
 */
int xc_compression_uncompress_page(xc_interface *xch,
                                   char *compbuf,
                                   unsigned long compbuf_size,
                                   unsigned long *compbuf_pos,
                                   char *destpage);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* CKPT_H */
