/* test_pool.c - daemon/pool.h on a real libuv loop and a real blob store:
 * stages are written on the pool and come back through ready(); a caller
 * takes them a bounded number at a time; what is never taken is removed
 * with the pool. */
#include "common/blob.h"
#include "daemon/pool.h"
#include "test.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64];
static int readies;

static void on_ready(void *ud) {
    (void)ud;
    readies++;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int staged_exists(const char *name) {
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", root, name);
    return stat(p, &st) == 0;
}

static int n_staged;

static int count_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    n_staged += flag == FTW_F && strncmp(p + ftw->base, ".tmp.stage", 10) == 0;
    return 0;
}

static int count_staged(void) {
    n_staged = 0;
    HSQ_OK(nftw(root, count_entry, 16, FTW_PHYS));
    return n_staged;
}

/* n stages of one large input and one small (inline) input each. */
static hsq_stage *make_stages(size_t n) {
    static const uint8_t meta[] = "meta frame bytes";
    static uint8_t big[2048];
    memset(big, 9, sizeof big);
    hsq_stage *v = calloc(n, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        v[i].bytes = sizeof meta + sizeof big + 10;
        v[i].buf = malloc(v[i].bytes);
        uint8_t *p = v[i].buf;
        memcpy(p, meta, sizeof meta);
        v[i].frames[0] = (hsq_bytes){p, sizeof meta};
        p += sizeof meta;
        memcpy(p, big, sizeof big);
        v[i].frames[1] = (hsq_bytes){p, sizeof big};
        p += sizeof big;
        memset(p, 1, 10);
        v[i].frames[2] = (hsq_bytes){p, 10};
        v[i].nframes = 3;
        v[i].inline_max = 1024;
        snprintf(v[i].dir, sizeof v[i].dir, "u/%032x/", (unsigned)i);
    }
    return v;
}

int main(void) {
    strcpy(root, "/tmp/hsq-pool-XXXXXX");
    HSQ_ASSERT(mkdtemp(root) != NULL);
    uv_loop_t loop;
    HSQ_OK(uv_loop_init(&loop));
    hsq_pool *p = NULL;
    HSQ_OK(hsq_pool_new(&p, &loop, root, on_ready, NULL));

    /* Two turns' stages (3 and 2), written on the pool one request each. */
    hsq_pool_stage(p, make_stages(3), 3);
    hsq_pool_stage(p, make_stages(2), 2);
    hsq_pool_check(p, NULL, 0); /* nothing: no request */
    hsq_pool_stage(p, NULL, 0);
    HSQ_ASSERT_EQ(hsq_pool_busy(p), 5);
    HSQ_OK(uv_run(&loop, UV_RUN_DEFAULT));
    HSQ_ASSERT_EQ(hsq_pool_busy(p), 0);
    HSQ_ASSERT_EQ(readies, 5);
    HSQ_ASSERT_EQ(hsq_pool_staged_left(p), 5);
    size_t n;
    hsq_check *c = hsq_pool_checked(p, &n);
    HSQ_ASSERT(c == NULL && n == 0);

    /* Taken two at a time (in the order they finished), every large input
     * staged, the inline ones not. */
    hsq_stage *v = hsq_pool_staged(p, 2, &n);
    HSQ_ASSERT_EQ(n, 2);
    HSQ_ASSERT_EQ(hsq_pool_staged_left(p), 3);
    for (size_t i = 0; i < n; i++) {
        HSQ_ASSERT_EQ(v[i].rc, 0);
        HSQ_ASSERT(staged_exists(v[i].staged[0]));
        HSQ_ASSERT_EQ(v[i].nframes, 3);
        HSQ_ASSERT_EQ(v[i].staged[1][0], '\0');
    }
    char kept[HSQ_BLOB_STAGED_MAX];
    strcpy(kept, v[0].staged[0]);
    hsq_blob *b = NULL;
    HSQ_OK(hsq_blob_open(&b, root));
    hsq_stages_free(b, v, n); /* removes their staged files */
    HSQ_ASSERT(!staged_exists(kept));

    /* Two more, freed without a store: their files stay (the caller
     * removes them); the last one is left to the pool, which removes its
     * file when it is freed. */
    v = hsq_pool_staged(p, 2, &n);
    HSQ_ASSERT_EQ(n, 2);
    HSQ_ASSERT_EQ(count_staged(), 3);
    char names[2][HSQ_BLOB_STAGED_MAX];
    for (size_t i = 0; i < n; i++)
        strcpy(names[i], v[i].staged[0]);
    hsq_stages_free(NULL, v, n);
    HSQ_ASSERT_EQ(count_staged(), 3);
    for (size_t i = 0; i < n; i++)
        HSQ_OK(hsq_blob_unstage(b, names[i]));
    HSQ_ASSERT_EQ(count_staged(), 1);
    HSQ_ASSERT_EQ(hsq_pool_staged_left(p), 1);
    hsq_pool_free(&p);
    HSQ_ASSERT(p == NULL);
    HSQ_ASSERT_EQ(count_staged(), 0);

    hsq_blob_close(&b);
    HSQ_OK(uv_loop_close(&loop));
    HSQ_OK(nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS));
    printf("pool: ok\n");
    return 0;
}
