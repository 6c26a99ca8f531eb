/* buf.h - byte views and a growable byte buffer.
 *
 * hsq_str and hsq_bytes are borrowed views: they never own their memory, and
 * every function returning one says until when it stays valid. hsq_wbuf owns
 * its storage and grows by doubling (bookkeeping: aborts on OOM).
 */
#ifndef HSQ_COMMON_BUF_H
#define HSQ_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *ptr;
    size_t len;
} hsq_str;

typedef struct {
    const uint8_t *ptr;
    size_t len;
} hsq_bytes;

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} hsq_wbuf;

#define HSQ_STR_LIT(s) ((hsq_str){(s), sizeof(s) - 1})

hsq_str hsq_str_c(const char *s); /* view of a NUL-terminated string */
/* Inline, so that the length of a literal is known at compile time. */
static inline int hsq_str_eq(hsq_str a, const char *lit) {
    size_t n = strlen(lit);
    return a.len == n && (n == 0 || memcmp(a.ptr, lit, n) == 0);
}
int hsq_str_eqs(hsq_str a, hsq_str b);

void hsq_wbuf_init(hsq_wbuf *b);
void hsq_wbuf_reserve(hsq_wbuf *b, size_t extra);
/* Inline: encoders append a byte or a few at a time, and a constant n turns
 * the copy into a store. */
static inline void hsq_wbuf_append(hsq_wbuf *b, const void *p, size_t n) {
    if (n == 0)
        return;
    if (b->cap - b->len < n)
        hsq_wbuf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}
void hsq_wbuf_reset(hsq_wbuf *b); /* len = 0, keeps capacity */
void hsq_wbuf_free(hsq_wbuf *b);

#ifdef __cplusplus
}
#endif

#endif
