/* alloc.h - allocation policy.
 *
 * Bookkeeping allocations abort on OOM (hsq_xmalloc family, as in redis and
 * czmq): there is no sensible recovery and every caller checking would hide the
 * logic. Sizes that come off the wire or out of a file (image dimensions,
 * payloads) use hsq_trymalloc and turn NULL into HSQ_ENOMEM.
 */
#ifndef HSQ_COMMON_ALLOC_H
#define HSQ_COMMON_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void *hsq_xmalloc(size_t n);
void *hsq_xcalloc(size_t count, size_t n);
void *hsq_xrealloc(void *p, size_t n);
char *hsq_xstrndup(const char *s, size_t n);

/* Room for one more element of a growing array p that holds n of *cap:
 * when it is full, the array doubles (to `first` elements when empty) and
 * *cap follows. Returns the array, moved or not; aborts on OOM or on a
 * size that overflows, like hsq_xrealloc. Typical use:
 *     q->out = hsq_xgrow(q->out, q->n_out, &q->cap_out, sizeof *q->out, 64); */
void *hsq_xgrow(void *p, size_t n, size_t *cap, size_t elem, size_t first);

/* May return NULL; for sizes an outside party controls. */
void *hsq_trymalloc(size_t n);

#ifdef __cplusplus
}
#endif

#endif
