/* worker.h - hsq-worker: configuration and the main loop.
 *
 * The worker connects a DEALER socket to hsqd's worker endpoint, announces
 * itself with `ready`, then long-polls `lease` for jobs, runs them in batches
 * on one processing thread (the headshot pipeline, worker/pipeline.h), and reports `done`/`fail`, heartbeating its leases while
 * jobs are in progress. See docs/worker.md for the operator's view.
 */
#ifndef HSQ_WORKER_WORKER_H
#define HSQ_WORKER_WORKER_H

#include "common/conf.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exit codes (sysexits.h values where one fits). systemd should restart on
 * STICKY and SOFTWARE, and not on USAGE or CONFIG. */
#define HSQ_WORKER_EXIT_OK 0
#define HSQ_WORKER_EXIT_USAGE 64    /* bad command line */
#define HSQ_WORKER_EXIT_SOFTWARE 70 /* internal failure (cannot create sockets, thread) */
#define HSQ_WORKER_EXIT_STICKY 75   /* HSQ_ECUDASTICKY: device unusable, restart the process */
#define HSQ_WORKER_EXIT_CONFIG 78   /* bad config file or value; blob_dir unusable */

typedef struct {
    char *endpoint;
    char *blob_dir;
    char *name; /* "" = <hostname>-<pid> */
    uint64_t max_batch;
    uint64_t lease_wait;    /* ms */
    uint64_t reconnect_min; /* ms */
    uint64_t reconnect_max; /* ms */
    uint64_t stop_timeout;  /* ms */
    uint64_t max_image_bytes;
    uint64_t max_image_pixels;
    uint64_t max_image_side;
    uint64_t job_delay; /* ms; testing aid */
    char *models_dir;
    char *pipeline; /* "headshot" or "resize" */   /* the two .tflite files (worker/pipeline.h) */
    uint64_t threads;   /* pipeline pool size, caller included */
    uint64_t overlap;   /* 1: decode the next batch while one runs (2 x max_batch held) */
    char *log_level;
    char *curve_server_key; /* Z85; all three or none */
    char *curve_public_key;
    char *curve_secret_key;
} hsq_worker_conf;

extern const hsq_conf_item hsq_worker_conf_items[];
extern const size_t hsq_worker_conf_nitems;

/* Fill defaults (STR fields malloc'd; release with hsq_conf_free). */
void hsq_worker_conf_defaults(hsq_worker_conf *c);

/* Cross-field checks after loading; message in err.
 * Errors: HSQ_EINVAL. */
int hsq_worker_conf_check(const hsq_worker_conf *c, char *err, size_t errlen);

/* Run until SIGTERM/SIGINT (or a sticky device error). Blocks SIGTERM and
 * SIGINT in every thread and receives them through a signalfd, so call it
 * before starting any other thread. Returns an HSQ_WORKER_EXIT_* code. */
int hsq_worker_run(const hsq_worker_conf *c);

#ifdef __cplusplus
}
#endif

#endif
