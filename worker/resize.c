#include "worker/resize.h"

#include "common/clock.h"
#include "schemas/err.h"

#include <stdio.h>
#include <string.h>

/* errmsg = "<stage>: <detail>" */
static void fail(hsq_pipe_job *j, int code, const char *stage_name, const char *detail) {
    j->err = code;
    j->retryable = code == HSQ_ENOMEM;
    snprintf(j->errmsg, sizeof j->errmsg, "%s: %s", stage_name, detail);
}

static void stage(hsq_pipe_job *j, const char *name, uint64_t us) {
    if (j->info.n_stages >= HSQ_MAX_STAGES)
        return;
    uint32_t i = j->info.n_stages++;
    snprintf(j->stage_names[i], sizeof j->stage_names[i], "%s", name);
    j->info.stages[i].name = hsq_str_c(j->stage_names[i]);
    j->info.stages[i].ms = (uint32_t)((us + 500) / 1000);
}

void hsq_resize_run(hsq_pipe_job *j, const hsq_img_limits *lim) {
    hsq_pipe_job_clear(j);
    j->info.backend = HSQ_STR_LIT("cpu");
    if (!j->portrait.data) {
        fail(j, HSQ_EBADREQ, "decode", "job has no portrait input");
        return;
    }
    hsq_wire_settings st;
    memset(&st, 0, sizeof st);
    char serr[160];
    if (j->settings.len && hsq_wire_settings_decode(j->settings, &st, serr, sizeof serr) != 0) {
        fail(j, HSQ_EBADREQ, "settings", serr);
        return;
    }
    /* Decode at a reduced DCT scale when every output is much smaller. */
    hsq_img_size targets[HSQ_MAX_OUTPUTS];
    for (uint32_t i = 0; i < j->n_specs; i++) {
        targets[i].w = j->specs[i].width;
        targets[i].h = j->specs[i].height;
    }
    uint64_t t0 = hsq_clock_mono_us();
    char msg[HSQ_IMG_MSG_MAX];
    hsq_img_decode_opts o = {lim, targets, j->n_specs, 0, "portrait", j->portrait.name};
    hsq_img img = {0};
    int r = hsq_img_decode_ex(j->portrait.data, j->portrait.len, &o, &img, msg, sizeof msg);
    if (r) {
        fail(j, r, "decode", msg);
        return;
    }
    uint64_t t1 = hsq_clock_mono_us(), resize_us = 0, encode_us = 0;
    stage(j, "decode", t1 - t0);
    for (uint32_t i = 0; i < j->n_specs && r == 0; i++) {
        if (j->abort && atomic_load(j->abort)) {
            j->aborted = 1;
            j->err = HSQ_ECANCELLED;
            break;
        }
        const hsq_wire_outspec *sp = &j->specs[i];
        hsq_img out = {0};
        uint64_t a = hsq_clock_mono_us();
        r = hsq_img_fit(&img, sp->width, sp->height, &out);
        uint64_t b = hsq_clock_mono_us();
        resize_us += b - a;
        if (r) {
            fail(j, r, "resize", hsq_strerror(r));
            break;
        }
        hsq_pipe_output *po = &j->out[j->n_out];
        r = sp->format == HSQ_FMT_PNG
                ? hsq_img_encode_png(&out, st.dpi, &po->data, &po->len)
                : hsq_img_encode_jpeg_dpi(&out, sp->quality, st.dpi, &po->data, &po->len);
        encode_us += hsq_clock_mono_us() - b;
        hsq_img_free(&out);
        if (r) {
            fail(j, r, "encode", hsq_strerror(r));
            break;
        }
        po->width = sp->width;
        po->height = sp->height;
        po->format = sp->format;
        po->spec = (uint8_t)i;
        j->n_out++;
    }
    hsq_img_free(&img);
    stage(j, "resize", resize_us);
    stage(j, "encode", encode_us);
}
