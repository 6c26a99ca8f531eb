#include "daemon/task.h"

#include "schemas/err.h"

#include <string.h>

/* ---- writer ---- */

static inline void put_u8(hsq_wbuf *b, uint8_t v) {
    hsq_wbuf_append(b, &v, 1);
}

static inline void put_u32(hsq_wbuf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    hsq_wbuf_append(b, x, 4);
}

static inline void put_u64(hsq_wbuf *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static inline void put_str(hsq_wbuf *b, hsq_str s) {
    put_u32(b, (uint32_t)s.len);
    hsq_wbuf_append(b, s.ptr, s.len);
}

void hsq_task_encode(const hsq_task *t, hsq_wbuf *b) {
    put_u8(b, HSQ_TASK_RECORD_VERSION);
    put_u64(b, t->id);
    put_u8(b, t->state);
    put_u8(b, t->prio);
    put_u8(b, t->dead);
    put_u32(b, t->attempts);
    put_u64(b, (uint64_t)t->created_ms);
    put_u64(b, (uint64_t)t->updated_ms);
    put_u64(b, (uint64_t)t->expires_ms);
    put_u64(b, (uint64_t)t->inputs_expire_ms);
    put_u64(b, (uint64_t)t->refs_expire_ms);
    put_u64(b, (uint64_t)t->not_before_ms);
    put_u64(b, (uint64_t)t->deadline_ms);
    put_u64(b, t->token);
    put_u64(b, t->round);
    put_u32(b, (uint32_t)t->err_code);
    put_u32(b, t->progress);
    put_str(b, t->user);
    put_str(b, t->key);
    put_str(b, t->prompt);
    put_str(b, t->stage);
    put_str(b, t->err_msg);
    put_str(b, t->worker);
    put_u8(b, (uint8_t)t->n_inputs);
    for (uint32_t i = 0; i < t->n_inputs; i++) {
        const hsq_task_input *in = &t->inputs[i];
        put_str(b, in->kind);
        put_str(b, in->name);
        put_u8(b, in->where);
        put_u64(b, in->size);
        put_str(b, in->key);
    }
    put_u8(b, (uint8_t)t->n_specs);
    for (uint32_t i = 0; i < t->n_specs; i++) {
        const hsq_wire_outspec *s = &t->specs[i];
        put_u32(b, s->width);
        put_u32(b, s->height);
        put_u8(b, s->format);
        put_u8(b, s->quality);
    }
    put_u8(b, (uint8_t)t->n_outputs);
    for (uint32_t i = 0; i < t->n_outputs; i++) {
        const hsq_wire_output *o = &t->outputs[i];
        put_str(b, o->key);
        put_u64(b, o->size);
        hsq_wbuf_append(b, o->sha256, 32);
        put_u32(b, o->width);
        put_u32(b, o->height);
        put_u8(b, o->format);
        put_u8(b, o->background);
        put_u8(b, o->style);
        put_u8(b, o->spec);
    }
    put_str(b, (hsq_str){(const char *)t->settings.ptr, t->settings.len});
    put_str(b, (hsq_str){(const char *)t->info.ptr, t->info.len});
    put_u64(b, (uint64_t)t->credits);
    put_u32(b, t->keep_uploads_s);
    put_u32(b, t->keep_outputs_s);
}

/* ---- reader: every get checks the remaining length ---- */

typedef struct {
    const uint8_t *p;
    size_t left;
    int bad;
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

static inline uint32_t get_u32(rd *r) {
    const uint8_t *p = take(r, 4);
    if (!p)
        return 0;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t get_u64(rd *r) {
    uint64_t lo = get_u32(r);
    uint64_t hi = get_u32(r);
    return lo | hi << 32;
}

static inline hsq_str get_str(rd *r) {
    uint32_t n = get_u32(r);
    const uint8_t *p = take(r, n);
    hsq_str s = {p ? (const char *)p : "", p ? n : 0};
    return s;
}

int hsq_task_decode(const void *buf, size_t len, hsq_task *t) {
    rd r = {buf, len, 0};
    memset(t, 0, sizeof *t);
    if (get_u8(&r) != HSQ_TASK_RECORD_VERSION)
        return HSQ_ECORRUPT;
    t->id = get_u64(&r);
    t->state = get_u8(&r);
    t->prio = get_u8(&r);
    t->dead = get_u8(&r);
    t->attempts = get_u32(&r);
    t->created_ms = (int64_t)get_u64(&r);
    t->updated_ms = (int64_t)get_u64(&r);
    t->expires_ms = (int64_t)get_u64(&r);
    t->inputs_expire_ms = (int64_t)get_u64(&r);
    t->refs_expire_ms = (int64_t)get_u64(&r);
    t->not_before_ms = (int64_t)get_u64(&r);
    t->deadline_ms = (int64_t)get_u64(&r);
    t->token = get_u64(&r);
    t->round = get_u64(&r);
    t->err_code = (int32_t)get_u32(&r);
    t->progress = get_u32(&r);
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
        in->size = get_u64(&r);
        in->key = get_str(&r);
    }
    t->n_specs = get_u8(&r);
    if (t->n_specs > HSQ_MAX_OUTPUTS)
        return HSQ_ECORRUPT;
    for (uint32_t i = 0; i < t->n_specs; i++) {
        hsq_wire_outspec *s = &t->specs[i];
        s->width = get_u32(&r);
        s->height = get_u32(&r);
        s->format = get_u8(&r);
        s->quality = get_u8(&r);
    }
    t->n_outputs = get_u8(&r);
    if (t->n_outputs > HSQ_MAX_OUTPUTS)
        return HSQ_ECORRUPT;
    for (uint32_t i = 0; i < t->n_outputs; i++) {
        hsq_wire_output *o = &t->outputs[i];
        o->key = get_str(&r);
        o->size = get_u64(&r);
        const uint8_t *sha = take(&r, 32);
        if (sha)
            memcpy(o->sha256, sha, 32);
        o->width = get_u32(&r);
        o->height = get_u32(&r);
        o->format = get_u8(&r);
        o->background = get_u8(&r);
        o->style = get_u8(&r);
        o->spec = get_u8(&r);
    }
    hsq_str settings = get_str(&r), info = get_str(&r);
    t->settings = (hsq_bytes){(const uint8_t *)settings.ptr, settings.len};
    t->info = (hsq_bytes){(const uint8_t *)info.ptr, info.len};
    /* Records written before credits existed end here: nothing reserved. */
    if (!r.bad && r.left >= 8)
        t->credits = (int64_t)get_u64(&r);
    /* ... and before asked retention: the policy applies. */
    t->keep_uploads_s = HSQ_KEEP_POLICY;
    t->keep_outputs_s = HSQ_KEEP_POLICY;
    if (!r.bad && r.left >= 8) {
        t->keep_uploads_s = get_u32(&r);
        t->keep_outputs_s = get_u32(&r);
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
