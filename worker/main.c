/* main.c - hsq-worker: command line, config, then hsq_worker_run(). */
#include "common/conf.h"
#include "common/log.h"
#include "worker/worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: hsq-worker [--config PATH] [--set key=value ...] [--log-time]\n"
               "\n"
               "Runs jobs leased from hsqd in batches through the headshot pipeline: decode,\n"
               "face detection, eye levelling and head-and-shoulders framing, segmentation,\n"
               "matte, backgrounds, clothing colour, retouch, encode; stores the outputs in\n"
               "the blob store and reports to hsqd. Needs the two models in models_dir\n"
               "(scripts/models).\n"
               "\n"
               "options:\n"
               "  --config PATH     read 'key = value' lines from PATH\n"
               "  --set key=value   override one key (after the file; repeatable)\n"
               "  --log-time        prefix log lines with a UTC timestamp (outside systemd)\n"
               "  --help            this text\n"
               "\n"
               "config keys:\n");
    hsq_conf_usage(hsq_worker_conf_items, hsq_worker_conf_nitems, f);
    fprintf(f, "\n"
               "exit codes: 0 stopped by SIGTERM/SIGINT, 64 usage, 70 internal error,\n"
               "            75 device unusable (restart me), 78 configuration error\n");
}

int main(int argc, char **argv) {
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            i++; /* applied below, after the file */
        } else if (strcmp(argv[i], "--log-time") == 0) {
            hsq_log_time = 1;
        } else {
            fprintf(stderr, "hsq-worker: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return HSQ_WORKER_EXIT_USAGE;
        }
    }

    hsq_worker_conf conf;
    hsq_worker_conf_defaults(&conf);
    char err[512];
    int code = 0;
    if (config && hsq_conf_load(hsq_worker_conf_items, hsq_worker_conf_nitems, &conf, config, err,
                                sizeof err) != 0) {
        hsq_log(HSQ_LOG_ERR, "worker", "config error: %s", err);
        code = HSQ_WORKER_EXIT_CONFIG;
    }
    for (int i = 1; code == 0 && i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            i++;
        } else if (strcmp(argv[i], "--set") == 0) {
            if (hsq_conf_set(hsq_worker_conf_items, hsq_worker_conf_nitems, &conf, argv[++i], NULL,
                             err, sizeof err) != 0) {
                hsq_log(HSQ_LOG_ERR, "worker", "config error: %s", err);
                code = HSQ_WORKER_EXIT_CONFIG;
            }
        }
    }
    if (code == 0 && hsq_worker_conf_check(&conf, err, sizeof err) != 0) {
        hsq_log(HSQ_LOG_ERR, "worker", "config error: %s", err);
        code = HSQ_WORKER_EXIT_CONFIG;
    }
    if (code == 0)
        code = hsq_worker_run(&conf);
    hsq_conf_free(hsq_worker_conf_items, hsq_worker_conf_nitems, &conf);
    return code;
}
