/* test.h - tiny assertion helpers for unit tests (libuv task.h style).
 *
 * Each test file is one executable and one meson test(). A failed assertion
 * prints file:line, the expression and both sides, then aborts, so meson
 * records the failure and sanitizers still report leaks up to that point.
 */
#ifndef HSQ_TESTS_TEST_H
#define HSQ_TESTS_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HSQ_FAIL_(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                           \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

#define HSQ_ASSERT(expr)                                                                           \
    do {                                                                                           \
        if (!(expr))                                                                               \
            HSQ_FAIL_("assertion failed: %s", #expr);                                            \
    } while (0)

#define HSQ_ASSERT_EQ(a, b)                                                                        \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            HSQ_FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);                                 \
    } while (0)

#define HSQ_ASSERT_U64_EQ(a, b)                                                                    \
    do {                                                                                           \
        unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b);             \
        if (a_ != b_)                                                                              \
            HSQ_FAIL_("%s == %s: %llu != %llu", #a, #b, a_, b_);                                 \
    } while (0)

#define HSQ_ASSERT_STR_EQ(a, b)                                                                    \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (strcmp(a_, b_) != 0)                                                                   \
            HSQ_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_, b_);                             \
    } while (0)

/* Compare an hsq_str view with a C string. */
#define HSQ_ASSERT_VIEW_EQ(view, lit)                                                              \
    do {                                                                                           \
        const char *l_ = (lit);                                                                    \
        size_t n_ = strlen(l_);                                                                    \
        if ((view).len != n_ || memcmp((view).ptr, l_, n_) != 0)                                   \
            HSQ_FAIL_("%s == \"%s\": got \"%.*s\"", #view, l_, (int)(view).len, (view).ptr);     \
    } while (0)

#define HSQ_OK(expr)                                                                               \
    do {                                                                                           \
        int r_ = (expr);                                                                           \
        if (r_ != 0)                                                                               \
            HSQ_FAIL_("%s failed: %d", #expr, r_);                                               \
    } while (0)

#endif
