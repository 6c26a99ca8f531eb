#include "daemon/task.h"

#include "schemas/err.h"

#include <assert.h>
#include <string.h>

/* Version 1 wrote every number at full width (4 or 8 bytes). Version 2
 * writes counts, lengths and most numbers as LEB128 varints and the six
 * timestamps after created_ms as zigzag deltas from it, behind a bitmap of
 * the ones that are set. A typical record is 40 % smaller, and each job
 * rewrites its record three times (submit, lease, done): bytes the group
 * commit writes and waits for. Fields, in order, are the same in both. */

enum { N_TIMES = 6 };

/* The timestamps stored after created_ms, in record order. */
static int64_t *times_of(hsq_task *t, int64_t *v[N_TIMES]) {
    v[0] = &t->updated_ms;
    v[1] = &t->expires_ms;
    v[2] = &t->inputs_expire_ms;
    v[3] = &t->refs_expire_ms;
    v[4] = &t->not_before_ms;
    v[5] = &t->deadline_ms;
    return v[0];
}

static uint64_t zigzag(uint64_t d) {
    return d >> 63 ? ~(d << 1) : d << 1;
}

static uint64_t unzigzag(uint64_t z) {
    return (z >> 1) ^ (0 - (z & 1));
}

/* ---- writer ---- */

/* Writes go straight into room reserved up front (record_bound). */
typedef struct {
    uint8_t *p;
    int v1;
} wr;

static inline void put_u8(wr *w, uint8_t v) {
    *w->p++ = v;
}

static inline void put_le(wr *w, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++)
        *w->p++ = (uint8_t)(v >> (8 * i));
}

static inline void put_var(wr *w, uint64_t v) {
    while (v >= 0x80) {
        *w->p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *w->p++ = (uint8_t)v;
}

static inline void put_bytes(wr *w, const void *p, size_t n) {
    if (n)
        memcpy(w->p, p, n);
    w->p += n;
}

/* A number stored as u32 by version 1. */
static inline void put_n32(wr *w, uint32_t v) {
    if (w->v1)
        put_le(w, v, 4);
    else
        put_var(w, v);
}

static inline void put_n64(wr *w, uint64_t v) {
    if (w->v1)
        put_le(w, v, 8);
    else
        put_var(w, v);
}

static inline void put_str(wr *w, hsq_str s) {
    put_n32(w, (uint32_t)s.len);
    put_bytes(w, s.ptr, s.len);
}

/* The most a record of t takes in either layout: every number at its
 * widest (a varint of 64 bits is 10 bytes), plus the bytes of its strings. */
static size_t record_bound(const hsq_task *t) {
    size_t n = 64 + 10 * (8 + N_TIMES) + 6 * 5 + t->user.len + t->key.len + t->prompt.len +
               t->stage.len + t->err_msg.len + t->worker.len + 2 * 5 + t->settings.len +
               t->info.len;
    for (uint32_t i = 0; i < t->n_inputs; i++)
        n += 3 * 5 + 1 + 10 + t->inputs[i].kind.len + t->inputs[i].name.len + t->inputs[i].key.len;
    n += t->n_specs * (2 * 5 + 2);
    for (uint32_t i = 0; i < t->n_outputs; i++)
        n += 5 + t->outputs[i].key.len + 10 + 32 + 2 * 5 + 4;
    return n;
}

void hsq_task_encode_version(const hsq_task *t, int version, hsq_wbuf *b) {
    size_t bound = record_bound(t);
    hsq_wbuf_reserve(b, bound);
    uint8_t *start = (uint8_t *)b->data + b->len;
    wr w = {start, version == 1};
    put_u8(&w, (uint8_t)version);
    put_n64(&w, t->id);
    put_u8(&w, t->state);
    put_u8(&w, t->prio);
    put_u8(&w, t->dead);
    put_n32(&w, t->attempts);
    put_n64(&w, (uint64_t)t->created_ms);
    int64_t *tv[N_TIMES];
    times_of((hsq_task *)t, tv);
    if (w.v1) {
        for (int i = 0; i < N_TIMES; i++)
            put_le(&w, (uint64_t)*tv[i], 8);
    } else {
        uint8_t mask = 0;
        for (int i = 0; i < N_TIMES; i++)
            mask |= (uint8_t)((*tv[i] != 0) << i);
        put_u8(&w, mask);
        for (int i = 0; i < N_TIMES; i++)
            if (*tv[i] != 0)
                put_var(&w, zigzag((uint64_t)*tv[i] - (uint64_t)t->created_ms));
    }
    put_n64(&w, t->token);
    put_n64(&w, t->round);
    put_n32(&w, w.v1 ? (uint32_t)t->err_code : (uint32_t)zigzag((uint64_t)(int64_t)t->err_code));
    put_n32(&w, t->progress);
    put_str(&w, t->user);
    put_str(&w, t->key);
    put_str(&w, t->prompt);
    put_str(&w, t->stage);
    put_str(&w, t->err_msg);
    put_str(&w, t->worker);
    put_u8(&w, (uint8_t)t->n_inputs);
    for (uint32_t i = 0; i < t->n_inputs; i++) {
        const hsq_task_input *in = &t->inputs[i];
        put_str(&w, in->kind);
        put_str(&w, in->name);
        put_u8(&w, in->where);
        put_n64(&w, in->size);
        put_str(&w, in->key);
    }
    put_u8(&w, (uint8_t)t->n_specs);
    for (uint32_t i = 0; i < t->n_specs; i++) {
        const hsq_wire_outspec *s = &t->specs[i];
        put_n32(&w, s->width);
        put_n32(&w, s->height);
        put_u8(&w, s->format);
        put_u8(&w, s->quality);
    }
    put_u8(&w, (uint8_t)t->n_outputs);
    for (uint32_t i = 0; i < t->n_outputs; i++) {
        const hsq_wire_output *o = &t->outputs[i];
        put_str(&w, o->key);
        put_n64(&w, o->size);
        put_bytes(&w, o->sha256, 32);
        put_n32(&w, o->width);
        put_n32(&w, o->height);
        put_u8(&w, o->format);
        put_u8(&w, o->background);
        put_u8(&w, o->style);
        put_u8(&w, o->spec);
    }
    put_str(&w, (hsq_str){(const char *)t->settings.ptr, t->settings.len});
    put_str(&w, (hsq_str){(const char *)t->info.ptr, t->info.len});
    put_n64(&w, w.v1 ? (uint64_t)t->credits : zigzag((uint64_t)t->credits));
    put_n32(&w, t->keep_uploads_s);
    put_n32(&w, t->keep_outputs_s);
    assert((size_t)(w.p - start) <= bound);
    b->len += (size_t)(w.p - start);
}

void hsq_task_encode(const hsq_task *t, hsq_wbuf *b) {
    hsq_task_encode_version(t, HSQ_TASK_RECORD_VERSION, b);
}

/* ---- reader: every get checks the remaining length ---- */

typedef struct {
    const uint8_t *p;
    size_t left;
    int bad;
    int v1;
} rd;

static inline const uint8_t *take(rd *r, size_t n) {
    if (r->bad || r->left < n) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static inline uint8_t get_u8(rd *r) {
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static inline uint64_t get_le(rd *r, size_t n) {
    const uint8_t *p = take(r, n);
    uint64_t v = 0;
    for (size_t i = 0; p && i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* At most ten bytes, and the tenth holds only the top bit: anything longer
 * or larger is corrupt, not wrapped. */
static uint64_t get_var_long(rd *r) {
    size_t n = r->bad ? 0 : r->left < 10 ? r->left : 10;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = r->p[i];
        if (i == 9 && c > 1)
            break;
        v |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            r->p += i + 1;
            r->left -= i + 1;
            return v;
        }
    }
    r->bad = 1;
    return 0;
}

/* Most are one byte: counts, lengths, small numbers. */
static inline uint64_t get_var(rd *r) {
    if (!r->bad && r->left && r->p[0] < 0x80) {
        r->left--;
        return *r->p++;
    }
    return get_var_long(r);
}

static inline uint32_t get_n32(rd *r) {
    if (r->v1)
        return (uint32_t)get_le(r, 4);
    uint64_t v = get_var(r);
    if (v > UINT32_MAX)
        r->bad = 1;
    return (uint32_t)v;
}

static inline uint64_t get_n64(rd *r) {
    return r->v1 ? get_le(r, 8) : get_var(r);
}

static inline hsq_str get_str(rd *r) {
    uint32_t n = get_n32(r);
    const uint8_t *p = take(r, n);
    hsq_str s = {p ? (const char *)p : "", p ? n : 0};
    return s;
}

int hsq_task_decode(const void *buf, size_t len, hsq_task *t) {
    rd r = {buf, len, 0, 0};
    memset(t, 0, sizeof *t);
    uint8_t version = get_u8(&r);
    if (version != 1 && version != HSQ_TASK_RECORD_VERSION)
        return HSQ_ECORRUPT;
    r.v1 = version == 1;
    t->id = get_n64(&r);
    t->state = get_u8(&r);
    t->prio = get_u8(&r);
    t->dead = get_u8(&r);
    t->attempts = get_n32(&r);
    t->created_ms = (int64_t)get_n64(&r);
    int64_t *tv[N_TIMES];
    times_of(t, tv);
    if (r.v1) {
        for (int i = 0; i < N_TIMES; i++)
            *tv[i] = (int64_t)get_le(&r, 8);
    } else {
        uint8_t mask = get_u8(&r);
        if (mask >> N_TIMES)
            r.bad = 1;
        for (int i = 0; i < N_TIMES; i++)
            if (mask & (1u << i))
                *tv[i] = (int64_t)((uint64_t)t->created_ms + unzigzag(get_var(&r)));
    }
    t->token = get_n64(&r);
    t->round = get_n64(&r);
    uint32_t ec = get_n32(&r);
    t->err_code = r.v1 ? (int32_t)ec : (int32_t)unzigzag(ec);
    t->progress = get_n32(&r);
    t->user = get_str(&r);
    t->key = get_str(&r);
    t->prompt = get_str(&r);
    t->stage = get_str(&r);
    t->err_msg = get_str(&r);
    t->worker = get_str(&r);
    t->n_inputs = get_u8(&r);
    if (t->n_inputs > HSQ_MAX_INPUTS)
        return HSQ_ECORRUPT;
    for (uint32_t i = 0; i < t->n_inputs; i++) {
        hsq_task_input *in = &t->inputs[i];
        in->kind = get_str(&r);
        in->name = get_str(&r);
        in->where = get_u8(&r);
        in->size = get_n64(&r);
        in->key = get_str(&r);
    }
    t->n_specs = get_u8(&r);
    if (t->n_specs > HSQ_MAX_OUTPUTS)
        return HSQ_ECORRUPT;
    for (uint32_t i = 0; i < t->n_specs; i++) {
        hsq_wire_outspec *s = &t->specs[i];
        s->width = get_n32(&r);
        s->height = get_n32(&r);
        s->format = get_u8(&r);
        s->quality = get_u8(&r);
    }
    t->n_outputs = get_u8(&r);
    if (t->n_outputs > HSQ_MAX_OUTPUTS)
        return HSQ_ECORRUPT;
    for (uint32_t i = 0; i < t->n_outputs; i++) {
        hsq_wire_output *o = &t->outputs[i];
        o->key = get_str(&r);
        o->size = get_n64(&r);
        const uint8_t *sha = take(&r, 32);
        if (sha)
            memcpy(o->sha256, sha, 32);
        o->width = get_n32(&r);
        o->height = get_n32(&r);
        o->format = get_u8(&r);
        o->background = get_u8(&r);
        o->style = get_u8(&r);
        o->spec = get_u8(&r);
    }
    hsq_str settings = get_str(&r), info = get_str(&r);
    t->settings = (hsq_bytes){(const uint8_t *)settings.ptr, settings.len};
    t->info = (hsq_bytes){(const uint8_t *)info.ptr, info.len};
    t->keep_uploads_s = HSQ_KEEP_POLICY;
    t->keep_outputs_s = HSQ_KEEP_POLICY;
    if (!r.v1) {
        t->credits = (int64_t)unzigzag(get_var(&r));
        t->keep_uploads_s = get_n32(&r);
        t->keep_outputs_s = get_n32(&r);
    } else {
        /* Version 1 records written before credits existed end here:
         * nothing reserved; and before asked retention: the policy. */
        if (!r.bad && r.left >= 8)
            t->credits = (int64_t)get_le(&r, 8);
        if (!r.bad && r.left >= 8) {
            t->keep_uploads_s = get_n32(&r);
            t->keep_outputs_s = get_n32(&r);
        }
    }
    if (r.bad || r.left != 0 || t->state == HSQ_STATE_NONE || t->state >= HSQ_STATE_COUNT_ ||
        t->prio >= HSQ_PRIO_COUNT_)
        return HSQ_ECORRUPT;
    return 0;
}

void hsq_task_to_wire(const hsq_task *t, hsq_wire_task *w) {
    memset(w, 0, sizeof *w);
    w->id = t->id;
    w->user = t->user;
    w->key = t->key;
    w->state = t->state;
    w->prio = t->prio;
    w->attempts = t->attempts;
    w->created_ms = t->created_ms;
    w->updated_ms = t->updated_ms;
    w->expires_ms = t->expires_ms;
    w->progress = t->progress;
    w->stage = t->stage;
    w->err_code = t->err_code;
    w->err_msg = t->err_msg;
    w->n_inputs = t->n_inputs;
    w->n_outputs = t->n_outputs;
    memcpy(w->outputs, t->outputs, sizeof(hsq_wire_output) * t->n_outputs);
    w->settings = t->settings;
    w->info = t->info;
    w->uploads_expire_ms = t->inputs_expire_ms;
    w->refs_expire_ms = t->refs_expire_ms;
}
