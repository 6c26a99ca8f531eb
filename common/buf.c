#include "common/buf.h"

#include "common/alloc.h"

#include <stdlib.h>
#include <string.h>

hsq_str hsq_str_c(const char *s) {
    hsq_str v = {s, s ? strlen(s) : 0};
    return v;
}

int hsq_str_eqs(hsq_str a, hsq_str b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

void hsq_wbuf_init(hsq_wbuf *b) {
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void hsq_wbuf_reserve(hsq_wbuf *b, size_t extra) {
    if (b->cap - b->len >= extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    b->data = hsq_xrealloc(b->data, cap);
    b->cap = cap;
}

void hsq_wbuf_reset(hsq_wbuf *b) {
    b->len = 0;
}

void hsq_wbuf_free(hsq_wbuf *b) {
    free(b->data);
    hsq_wbuf_init(b);
}
