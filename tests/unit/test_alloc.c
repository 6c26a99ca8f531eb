/* test_alloc.c - the growing-array helper (common/alloc.h). */
#include "common/alloc.h"
#include "test.h"

#include <stdint.h>
#include <stdlib.h>

/* Appending one at a time: the first growth gives `first` slots, each later
 * one doubles, and nothing moves or is lost while there is room. */
static void test_grow(void) {
    uint32_t *a = NULL;
    size_t n = 0, cap = 0;
    size_t caps_seen[8], k = 0;
    for (uint32_t v = 0; v < 1000; v++) {
        size_t before = cap;
        uint32_t *old = a;
        a = hsq_xgrow(a, n, &cap, sizeof *a, 64);
        if (n < before)
            HSQ_ASSERT(a == old && cap == before); /* room: untouched */
        if (cap != before) {
            HSQ_ASSERT(k < 8);
            caps_seen[k++] = cap;
        }
        a[n++] = v * 7;
    }
    HSQ_ASSERT_EQ(k, 5);
    HSQ_ASSERT_EQ(caps_seen[0], 64);
    for (size_t i = 1; i < k; i++)
        HSQ_ASSERT_EQ(caps_seen[i], 2 * caps_seen[i - 1]);
    for (uint32_t v = 0; v < 1000; v++)
        HSQ_ASSERT_EQ(a[v], v * 7);
    free(a);
}

int main(void) {
    test_grow();
    return 0;
}
