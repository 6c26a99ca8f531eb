/* resize.h - the plain resize pipeline: decode, centre-crop, resize, encode.
 *
 * A worker started with `pipeline = resize` runs this instead of the
 * headshot pipeline: one output per requested size, cut from the centre of
 * the portrait at the output's aspect ratio. No models are loaded. It serves
 * thumbnail/preview jobs and queue-level tests and benchmarks, where the
 * headshot stages would only add minutes. Backgrounds and styles in the
 * settings are ignored; the DPI is honoured.
 */
#ifndef HSQ_WORKER_RESIZE_H
#define HSQ_WORKER_RESIZE_H

#include "worker/img.h"
#include "worker/pipeline.h"

/* Run one job. Sets the job's out fields exactly like hsq_pipe_run: outputs
 * (background = style = 0, spec = index) and info (stages decode, resize,
 * encode), or err/errmsg naming the stage and photo. */
void hsq_resize_run(hsq_pipe_job *j, const hsq_img_limits *lim);

#endif
