/* test_cli_wire.c - the Python client (client/python/hsq_client.py) speaks
 * exactly the wire format of the C codec.
 *
 * usage: test_cli_wire PYTHON client/python/wire_compat.py
 *
 * 1. Requests built by the Python Client methods are decoded with the strict
 *    hsq_wire_decode (unknown keys, wrong types or enum names fail), and their
 *    fields compared with what the calls asked for.
 * 2. Replies encoded with hsq_wire_encode are fed through the Python methods,
 *    whose results (one JSON line each) are compared with the encoded values.
 * Exits 77 (skip) when that Python lacks pyzmq or msgpack.
 */
#include "schemas/err.h"
#include "schemas/wire.h"
#include "test.h"

#include <sodium.h>
#include <unistd.h>

static const char *python, *helper;

static int hexval(int c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decode hex in place; returns the byte count. */
static size_t unhex(char *s) {
    size_t n = 0;
    for (size_t i = 0; s[i] && s[i + 1]; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        HSQ_ASSERT(hi >= 0 && lo >= 0);
        s[n++] = (char)(hi * 16 + lo);
    }
    return n;
}

static void put_hex(FILE *f, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", b[i]);
}

/* ---- 1. Python requests -> C decoder ---- */

static void test_requests(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s requests", python, helper);
    FILE *p = popen(cmd, "r");
    HSQ_ASSERT(p != NULL);
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, p) > 0) {
        char op[32];
        unsigned nframes;
        int off = 0;
        HSQ_ASSERT(sscanf(line, "%31s %u %n", op, &nframes, &off) == 2);
        char *hex = line + off;
        hex[strcspn(hex, "\n")] = '\0';
        size_t len = unhex(hex);
        hsq_wire_msg m;
        int rc = hsq_wire_decode(hex, len, nframes, &m);
        if (rc != 0)
            HSQ_FAIL_("request %d (%s) does not decode: %s: %s", n, op, hsq_errname(rc), m.errmsg);
        HSQ_ASSERT_EQ(m.kind, HSQ_KIND_REQUEST);
        HSQ_ASSERT_STR_EQ(hsq_op_name(m.op), op);
        HSQ_ASSERT_U64_EQ(m.rid, (uint64_t)n + 1);
        const hsq_req_submit *s = &m.req.submit;
        switch (n) {
        case 0:
            HSQ_ASSERT_VIEW_EQ(s->user, "alice");
            HSQ_ASSERT_VIEW_EQ(s->key, "order-17");
            HSQ_ASSERT_EQ(s->prio, HSQ_PRIO_HIGH);
            HSQ_ASSERT_VIEW_EQ(s->prompt, "navy suit, grey backdrop");
            HSQ_ASSERT_EQ(s->n_inputs, 4);
            HSQ_ASSERT_EQ(nframes, 4);
            HSQ_ASSERT_VIEW_EQ(s->inputs[0].kind, "portrait");
            HSQ_ASSERT_VIEW_EQ(s->inputs[0].name, "one.jpg");
            HSQ_ASSERT_VIEW_EQ(s->inputs[1].kind, "portrait");
            HSQ_ASSERT_EQ(s->inputs[1].name.len, 0);
            HSQ_ASSERT_VIEW_EQ(s->inputs[2].kind, "clothing");
            HSQ_ASSERT_VIEW_EQ(s->inputs[2].name, "suit.png");
            HSQ_ASSERT_VIEW_EQ(s->inputs[3].kind, "background");
            HSQ_ASSERT_EQ(s->inputs[3].frame, 3);
            HSQ_ASSERT_EQ(s->n_outputs, 2);
            HSQ_ASSERT_EQ(s->outputs[0].width, 1024);
            HSQ_ASSERT_EQ(s->outputs[0].height, 1280);
            HSQ_ASSERT_EQ(s->outputs[0].format, HSQ_FMT_JPEG);
            HSQ_ASSERT_EQ(s->outputs[0].quality, 85);
            HSQ_ASSERT_EQ(s->outputs[1].format, HSQ_FMT_PNG);
            HSQ_ASSERT_EQ(s->outputs[1].quality, 0);
            break;
        case 1:
            HSQ_ASSERT_VIEW_EQ(s->user, "bob");
            HSQ_ASSERT_EQ(s->key.len, 0);
            HSQ_ASSERT_EQ(s->prio, HSQ_PRIO_NORMAL);
            HSQ_ASSERT_EQ(s->n_inputs, 1);
            HSQ_ASSERT_EQ(s->n_outputs, 1);
            HSQ_ASSERT_EQ(s->outputs[0].width, 1024);
            HSQ_ASSERT_EQ(s->outputs[0].height, 1280);
            break;
        case 2:
            HSQ_ASSERT_U64_EQ(m.req.task.task, 42);
            HSQ_ASSERT_EQ(m.req.task.user.len, 0);
            break;
        case 3:
        case 6:
        case 8:
            HSQ_ASSERT_U64_EQ(m.req.task.task, 42);
            HSQ_ASSERT_VIEW_EQ(m.req.task.user, "alice");
            break;
        case 4:
            HSQ_ASSERT_U64_EQ(m.req.wait.task, 42);
            HSQ_ASSERT_VIEW_EQ(m.req.wait.user, "alice");
            HSQ_ASSERT_EQ(m.req.wait.timeout_ms, 1500);
            HSQ_ASSERT_EQ(m.req.wait.since, HSQ_STATE_QUEUED);
            break;
        case 5:
            HSQ_ASSERT_EQ(m.req.wait.timeout_ms, 0);
            HSQ_ASSERT_EQ(m.req.wait.since, HSQ_STATE_NONE);
            break;
        case 9:
            HSQ_ASSERT_VIEW_EQ(m.req.list.user, "alice");
            HSQ_ASSERT_EQ(m.req.list.limit, 20);
            HSQ_ASSERT_U64_EQ(m.req.list.before, 0);
            break;
        case 10:
            HSQ_ASSERT_EQ(m.req.list.limit, 5);
            HSQ_ASSERT_U64_EQ(m.req.list.before, 100);
            break;
        case 12: { /* settings built in Python, decoded by the worker's decoder */
            HSQ_ASSERT_VIEW_EQ(s->user, "carol");
            HSQ_ASSERT(s->settings.len > 0);
            hsq_wire_settings st;
            char err[160];
            HSQ_OK(hsq_wire_settings_decode(s->settings, &st, err, sizeof err));
            HSQ_ASSERT_EQ(st.n_backgrounds, 3);
            HSQ_ASSERT_EQ(st.backgrounds[0].kind, HSQ_BG_SOLID);
            HSQ_ASSERT_EQ(st.backgrounds[0].color[0], 255);
            HSQ_ASSERT_EQ(st.backgrounds[0].color[2], 255);
            HSQ_ASSERT_EQ(st.backgrounds[1].kind, HSQ_BG_GRADIENT);
            HSQ_ASSERT_EQ(st.backgrounds[1].color[1], 20);
            HSQ_ASSERT_EQ(st.backgrounds[1].color2[2], 220);
            HSQ_ASSERT_EQ(st.backgrounds[2].kind, HSQ_BG_REFERENCE);
            HSQ_ASSERT_EQ(st.backgrounds[2].blur_px, 12);
            HSQ_ASSERT_EQ(st.n_styles, 2);
            HSQ_ASSERT_VIEW_EQ(st.styles[0].name, "natural");
            HSQ_ASSERT_EQ(st.styles[0].retouch, 30);
            HSQ_ASSERT_EQ(st.styles[0].tone, 50);
            HSQ_ASSERT_EQ(st.styles[0].sharpen, 30);
            HSQ_ASSERT_EQ(st.styles[0].clothing, 0);
            HSQ_ASSERT_VIEW_EQ(st.styles[1].name, "suit");
            HSQ_ASSERT_EQ(st.styles[1].clothing, 80);
            HSQ_ASSERT_EQ(st.dpi, 300);
            break;
        }
        default:
            break;
        }
        hsq_wire_msg_free(&m);
        n++;
    }
    free(line);
    HSQ_ASSERT_EQ(pclose(p), 0);
    HSQ_ASSERT_EQ(n, 13);
}

/* ---- 2. C replies -> Python methods ---- */

static void sample_task(hsq_wire_task *t, uint64_t id, const uint8_t *data, size_t len) {
    memset(t, 0, sizeof *t);
    t->id = id;
    t->user = HSQ_STR_LIT("alice");
    t->key = HSQ_STR_LIT("k");
    t->state = HSQ_STATE_SUCCEEDED;
    t->prio = HSQ_PRIO_LOW;
    t->attempts = 2;
    t->created_ms = 1700000000000;
    t->updated_ms = 1700000001000;
    t->expires_ms = 1702592000000;
    t->progress = 100;
    t->stage = HSQ_STR_LIT("encode");
    t->n_inputs = 2;
    t->n_outputs = 1;
    hsq_wire_output *o = &t->outputs[0];
    o->key = HSQ_STR_LIT("u/ab/42/0");
    o->size = len;
    crypto_hash_sha256(o->sha256, data, len);
    o->width = 640;
    o->height = 480;
    o->format = HSQ_FMT_PNG;
}

static void emit(FILE *f, hsq_wire_msg *m, const char *frame, size_t flen) {
    hsq_wbuf b;
    hsq_wbuf_init(&b);
    int rc = hsq_wire_encode(m, &b);
    if (rc != 0)
        HSQ_FAIL_("cannot encode %s reply: %s", hsq_op_name(m->op), hsq_errname(rc));
    fprintf(f, "%s %llu ", hsq_op_name(m->op), (unsigned long long)m->rid);
    put_hex(f, b.data, b.len);
    if (frame) {
        fputc(' ', f);
        put_hex(f, frame, flen);
    }
    fputc('\n', f);
    hsq_wbuf_free(&b);
}

static void reply_msg(hsq_wire_msg *m, hsq_op op, uint64_t rid) {
    memset(m, 0, sizeof *m);
    m->v = HSQ_WIRE_VERSION;
    m->kind = HSQ_KIND_REPLY;
    m->op = op;
    m->rid = rid;
}

static void expect(const char *got, const char *op, const char *want) {
    if (strncmp(got, op, strlen(op)) != 0 || !strstr(got, want))
        HSQ_FAIL_("python's %s result lacks %s:\n%s", op, want, got);
}

static void test_replies(void) {
    static const uint8_t img[] = "abc";
    char path[] = "/tmp/hsq-wire-XXXXXX";
    int fd = mkstemp(path);
    HSQ_ASSERT(fd >= 0);
    FILE *f = fdopen(fd, "w");
    HSQ_ASSERT(f != NULL);
    hsq_wire_msg m;

    reply_msg(&m, HSQ_OP_SUBMIT, 1);
    m.rep.submit = (hsq_rep_submit){.task = 7, .state = HSQ_STATE_QUEUED, .created = 0};
    emit(f, &m, NULL, 0);

    /* settings and info encoded by the C codec, decoded by Python */
    reply_msg(&m, HSQ_OP_STATUS, 1);
    sample_task(&m.rep.task.task, 42, img, 3);
    hsq_wire_settings st = {0};
    st.n_backgrounds = 1;
    st.backgrounds[0] = (hsq_wire_background){HSQ_BG_VIGNETTE, {214, 215, 216}, {0, 0, 0}, 0};
    st.n_styles = 1;
    st.styles[0] = (hsq_wire_style){HSQ_STR_LIT("crisp"), 10, 20, 30, 40};
    st.dpi = 300;
    hsq_wire_info info = {0};
    info.faces = 2;
    info.face_score = 931;
    info.backend = HSQ_STR_LIT("cpu");
    info.n_stages = 1;
    info.stages[0] = (hsq_wire_stage){HSQ_STR_LIT("matte"), 17};
    hsq_wbuf sb, ib;
    hsq_wbuf_init(&sb);
    hsq_wbuf_init(&ib);
    HSQ_OK(hsq_wire_settings_encode(&st, &sb));
    HSQ_OK(hsq_wire_info_encode(&info, &ib));
    m.rep.task.task.settings = (hsq_bytes){(const uint8_t *)sb.data, sb.len};
    m.rep.task.task.info = (hsq_bytes){(const uint8_t *)ib.data, ib.len};
    emit(f, &m, NULL, 0);
    hsq_wbuf_free(&sb);
    hsq_wbuf_free(&ib);

    reply_msg(&m, HSQ_OP_CANCEL, 1); /* optional fields absent, error set */
    memset(&m.rep.task.task, 0, sizeof m.rep.task.task);
    m.rep.task.task = (hsq_wire_task){.id = 9,
                                      .user = HSQ_STR_LIT("bob"),
                                      .state = HSQ_STATE_FAILED,
                                      .prio = HSQ_PRIO_NORMAL,
                                      .err_code = HSQ_ENOFACE,
                                      .err_msg = HSQ_STR_LIT("no face found")};
    emit(f, &m, NULL, 0);

    reply_msg(&m, HSQ_OP_WAIT, 1);
    sample_task(&m.rep.task.task, 42, img, 3);
    m.rep.task.timed_out = 1;
    emit(f, &m, NULL, 0);

    reply_msg(&m, HSQ_OP_RESULT, 1);
    sample_task(&m.rep.task.task, 42, img, 3);
    emit(f, &m, (const char *)img, 3);

    reply_msg(&m, HSQ_OP_LIST, 1);
    hsq_wire_task tasks[2];
    sample_task(&tasks[0], 12, img, 3);
    sample_task(&tasks[1], 11, img, 3);
    tasks[1].state = HSQ_STATE_QUEUED;
    tasks[1].n_outputs = 0;
    m.rep.list = (hsq_rep_list){.n = 2, .tasks = tasks, .next = 11};
    emit(f, &m, NULL, 0);

    reply_msg(&m, HSQ_OP_STATS, 1);
    m.rep.stats = (hsq_wire_stats){.queued = 6,
                                   .leased = 2,
                                   .queued_by_prio = {1, 2, 3},
                                   .workers = 4,
                                   .oldest_queued_ms = 1700000000000,
                                   .uptime_s = 99};
    emit(f, &m, NULL, 0);

    hsq_wbuf b;
    hsq_wbuf_init(&b);
    HSQ_OK(hsq_wire_encode_error(HSQ_OP_STATUS, 1, HSQ_ENOTFOUND, "no such task", &b));
    fprintf(f, "status 1 ");
    put_hex(f, b.data, b.len);
    fputc('\n', f);
    hsq_wbuf_free(&b);

    /* a result whose frame does not hash to its sha256 */
    reply_msg(&m, HSQ_OP_RESULT, 1);
    sample_task(&m.rep.task.task, 42, img, 3);
    emit(f, &m, "abd", 3);
    HSQ_ASSERT_EQ(fclose(f), 0);

    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s replies %s", python, helper, path);
    FILE *p = popen(cmd, "r");
    HSQ_ASSERT(p != NULL);
    char *line = NULL;
    size_t cap = 0;
    char got[9][4096];
    int n = 0;
    while (n < 9 && getline(&line, &cap, p) > 0)
        snprintf(got[n++], sizeof got[0], "%s", line);
    free(line);
    HSQ_ASSERT_EQ(pclose(p), 0);
    unlink(path);
    HSQ_ASSERT_EQ(n, 9);

    expect(got[0], "submit", "{\"created\": false, \"state\": \"queued\", \"task\": 7}");
    expect(got[1], "status", "\"id\": 42");
    expect(got[1], "status", "\"user\": \"alice\"");
    expect(got[1], "status", "\"key\": \"k\"");
    expect(got[1], "status", "\"state\": \"succeeded\"");
    expect(got[1], "status", "\"prio\": \"low\"");
    expect(got[1], "status", "\"attempts\": 2");
    expect(got[1], "status", "\"created_ms\": 1700000000000");
    expect(got[1], "status", "\"expires_ms\": 1702592000000");
    expect(got[1], "status", "\"stage\": \"encode\"");
    expect(got[1], "status", "\"err_code\": null");
    expect(got[1], "status", "\"n_inputs\": 2");
    expect(got[1], "status",
           "\"sha256\": \"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"");
    expect(got[1], "status", "\"format\": \"png\"");
    expect(got[1], "status", "\"key\": \"u/ab/42/0\"");
    expect(got[1], "status", "\"dpi\": 300");
    expect(got[1], "status", "\"color\": [214, 215, 216]");
    expect(got[1], "status", "\"kind\": \"vignette\"");
    expect(got[1], "status", "\"name\": \"crisp\"");
    expect(got[1], "status", "\"clothing\": 40");
    expect(got[1], "status", "\"face_score\": 931");
    expect(got[1], "status", "\"stages\": [{\"ms\": 17, \"name\": \"matte\"}]");
    expect(got[2], "cancel", "\"settings\": {}");
    expect(got[2], "cancel", "\"err_code\": \"no_face\"");
    expect(got[2], "cancel", "\"err_msg\": \"no face found\"");
    expect(got[2], "cancel", "\"key\": \"\"");
    expect(got[2], "cancel", "\"outputs\": []");
    expect(got[3], "wait", "\"timed_out\": true");
    expect(got[4], "result", "\"data\": [\"616263\"]");
    expect(got[5], "list", "\"next\": 11");
    expect(got[5], "list", "\"id\": 12");
    expect(got[5], "list", "\"state\": \"queued\"");
    expect(got[6], "stats", "\"queued_by_prio\": {\"high\": 1, \"low\": 3, \"normal\": 2}");
    expect(got[6], "stats", "\"uptime_s\": 99");
    expect(got[6], "stats", "\"oldest_queued_ms\": 1700000000000");
    expect(got[7], "status", "{\"error\": \"not_found\", \"message\": \"no such task\"}");
    expect(got[8], "result", "\"error\": \"corrupt\"");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PYTHON wire_compat.py\n", argv[0]);
        return 2;
    }
    python = argv[1];
    helper = argv[2];
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s -c 'import zmq, msgpack' 2>/dev/null", python);
    if (system(cmd) != 0) {
        fprintf(stderr, "%s lacks pyzmq or msgpack: skipping\n", python);
        return 77;
    }
    HSQ_ASSERT(sodium_init() >= 0);
    test_requests();
    test_replies();
    return 0;
}
