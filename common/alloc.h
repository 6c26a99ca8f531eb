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

/* May return NULL; for sizes an outside party controls. */
void *hsq_trymalloc(size_t n);

#ifdef __cplusplus
}
#endif

#endif
