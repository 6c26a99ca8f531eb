/* fuzz_wire.c - libFuzzer target for the wire decoder.
 *
 * Input: byte 0 selects nframes (low two bits, 0..3); the rest is the meta
 * frame. Every input must either be refused with a documented code and a
 * message that itself encodes as an error reply, or decode to a message that
 * re-encodes, decodes again, and re-encodes to the same bytes (the codec is a
 * fixed point after one trip). Violations abort(), which both libFuzzer and
 * the plain driver (fuzz_main.c) report as a crash.
 *
 * libFuzzer build, from the repository root:
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *     schemas/wire.c schemas/err.c common/buf.c common/alloc.c tests/fuzz/fuzz_wire.c \
 *     -lmsgpackc -o /tmp/fuzz_wire && /tmp/fuzz_wire -max_len=70000
 */
#include "schemas/err.h"
#include "schemas/wire.h"

#include "common/buf.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_wire: %s:%d: %s\n", __FILE__, __LINE__, #cond);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int documented_decode_error(int rc) {
    return rc == HSQ_EBADREQ || rc == HSQ_ETOOLARGE || rc == HSQ_EVERSION || rc == HSQ_EUNKNOWNOP ||
           rc == HSQ_ENOMEM;
}

/* A refused message must still be answerable: op, rid and errmsg go into an
 * error reply, which must encode and decode. */
static void check_refusal(int rc, const hsq_wire_msg *m) {
    FUZZ_CHECK(documented_decode_error(rc));
    FUZZ_CHECK(m->priv_ == NULL);
    FUZZ_CHECK(memchr(m->errmsg, '\0', sizeof(m->errmsg)) != NULL);
    FUZZ_CHECK(m->errmsg[0] != '\0');
    hsq_wbuf b;
    hsq_wire_msg r;
    hsq_wbuf_init(&b);
    FUZZ_CHECK(hsq_wire_encode_error(m->op, m->rid, rc, m->errmsg, &b) == 0);
    FUZZ_CHECK(hsq_wire_decode(b.data, b.len, 0, &r) == 0);
    FUZZ_CHECK(r.kind == HSQ_KIND_ERROR && r.op == m->op && r.rid == m->rid);
    FUZZ_CHECK(r.rep.error.code == rc);
    FUZZ_CHECK(r.rep.error.message.len == strlen(m->errmsg));
    hsq_wire_msg_free(&r);
    hsq_wbuf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    size_t nframes = data[0] & 3u;
    const uint8_t *meta = data + 1;
    size_t len = size - 1;

    hsq_wire_msg m, m2;
    int rc = hsq_wire_decode(meta, len, nframes, &m);
    if (rc != 0) {
        check_refusal(rc, &m);
        hsq_wire_msg_free(&m);
        return 0;
    }
    FUZZ_CHECK(m.errmsg[0] == '\0');

    hsq_wbuf a, b;
    hsq_wbuf_init(&a);
    hsq_wbuf_init(&b);
    rc = hsq_wire_encode(&m, &a);
    /* Re-encoding may grow a message a little (an omitted submit "frame" is
     * written out, an unknown error name becomes "internal"), so one that was
     * close to the limit may now be over it; nothing else may fail. */
    if (rc == HSQ_ETOOLARGE && len > HSQ_MAX_META_BYTES - 16384)
        goto out;
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(a.len <= HSQ_MAX_META_BYTES);

    rc = hsq_wire_decode(a.data, a.len, nframes, &m2);
    if (rc != 0)
        fprintf(stderr, "fuzz_wire: re-decode failed: %d %s\n", rc, m2.errmsg);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(m2.kind == m.kind && m2.op == m.op && m2.rid == m.rid);
    FUZZ_CHECK(hsq_wire_encode(&m2, &b) == 0);
    FUZZ_CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    hsq_wire_msg_free(&m2);
out:
    hsq_wire_msg_free(&m);
    hsq_wbuf_free(&a);
    hsq_wbuf_free(&b);
    return 0;
}
