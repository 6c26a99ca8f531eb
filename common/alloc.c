#include "common/alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n) {
    fprintf(stderr, "<2>hsq: out of memory allocating %zu bytes\n", n);
    abort();
}

void *hsq_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *hsq_xcalloc(size_t count, size_t n) {
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p)
        oom(count * n);
    return p;
}

void *hsq_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

void *hsq_xgrow(void *p, size_t n, size_t *cap, size_t elem, size_t first) {
    if (n < *cap)
        return p;
    size_t c = *cap ? *cap : first / 2;
    if (c == 0 || c > SIZE_MAX / 2 / elem)
        oom(SIZE_MAX);
    p = hsq_xrealloc(p, 2 * c * elem);
    *cap = 2 * c;
    return p;
}

char *hsq_xstrndup(const char *s, size_t n) {
    char *p = hsq_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void *hsq_trymalloc(size_t n) {
    return malloc(n ? n : 1);
}
