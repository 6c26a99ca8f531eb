/* hsqd - the hsq broker. */
#include "common/blob.h"
#include "common/clock.h"
#include "common/conf.h"
#include "common/log.h"
#include "daemon/auth.h"
#include "daemon/hsqd_conf.h"
#include "daemon/metrics.h"
#include "daemon/queue.h"
#include "daemon/srv.h"
#include "daemon/store.h"
#include "schemas/err.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

static int is_ipc(const char *ep) {
    return strncmp(ep, "ipc://", 6) == 0;
}

/* Transport security (DESIGN.md "Security"): every endpoint that is not
 * ipc:// needs CURVE, i.e. both the server key and the allowlist, unless the
 * operator said --insecure. Returns 0, or -1 after logging why hsqd must not
 * start. */
static int setup_security(const hsqd_conf *c, int insecure, char *key, hsq_auth **auth) {
    char err[512];
    int have_key = c->curve_secret_key_file[0] != '\0';
    int have_list = c->clients_file[0] != '\0';
    const char *net = NULL;
    const char *eps[3] = {c->client_endpoint, c->worker_endpoint, c->events_endpoint};
    for (int i = 0; i < 3; i++)
        if (eps[i][0] && !is_ipc(eps[i]) && !net)
            net = eps[i];
    if (have_key != have_list) {
        hsq_log(HSQ_LOG_ERR, "hsqd",
                "set both curve_secret_key_file and clients_file, or neither (have %s)",
                have_key ? "curve_secret_key_file" : "clients_file");
        return -1;
    }
    if (!have_key) {
        if (net && !insecure) {
            hsq_log(HSQ_LOG_ERR, "hsqd",
                    "endpoint=%s is not ipc:// and no CURVE keys are set "
                    "(curve_secret_key_file, clients_file): refusing to start; "
                    "pass --insecure to run it in plaintext anyway",
                    net);
            return -1;
        }
        if (net)
            hsq_log(HSQ_LOG_WARN, "hsqd",
                    "INSECURE: endpoint=%s is plaintext without authentication (--insecure): "
                    "anyone who can reach it may submit, lease, requeue and read results",
                    net);
        else if (insecure)
            hsq_log(HSQ_LOG_WARN, "hsqd", "--insecure given; every endpoint is ipc:// anyway");
        return 0;
    }
    if (insecure)
        hsq_log(HSQ_LOG_WARN, "hsqd", "--insecure given but CURVE keys are set: using CURVE");
    int mode_ok = 1;
    if (hsq_auth_read_key(c->curve_secret_key_file, key, &mode_ok, err, sizeof err) != 0) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "curve_secret_key_file: %s", err);
        return -1;
    }
    if (!mode_ok)
        hsq_log(HSQ_LOG_WARN, "hsqd",
                "curve_secret_key_file=%s is readable by group or others; chmod 600 it",
                c->curve_secret_key_file);
    char pub[HSQ_AUTH_KEY_Z85 + 1];
    if (zmq_curve_public(pub, key) != 0) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "curve_secret_key_file=%s: not a CURVE secret key",
                c->curve_secret_key_file);
        return -1;
    }
    if (hsq_auth_new(auth, c->clients_file, err, sizeof err) != 0) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "clients_file: %s", err);
        return -1;
    }
    hsq_log(HSQ_LOG_NOTICE, "hsqd", "curve server_key=%s clients=%zu", pub,
            hsq_auth_count(*auth));
    return 0;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: hsqd [--config FILE] [--set KEY=VALUE]... [--data-dir DIR]\n"
            "            [--ready-fd N] [--log-time] [--insecure] [--help] [--version]\n\n"
            "  --config FILE     read settings from FILE (lines of key = value)\n"
            "  --set KEY=VALUE   override one setting (after the file)\n"
            "  --data-dir DIR    same as --set data_dir=DIR\n"
            "  --ready-fd N      once serving, write \"client=EP\\nworker=EP\\nevents=EP\\n\"\n"
            "                    to file descriptor N and close it\n"
            "                    (and \"metrics=URL\" when metrics_listen is set)\n"
            "  --log-time        prefix log lines with a UTC timestamp\n"
            "  --insecure        allow tcp:// endpoints without CURVE keys (anyone who\n"
            "                    reaches the port may submit, lease and requeue)\n\n"
            "settings:\n");
    hsq_conf_usage(hsqd_conf_items, hsqd_conf_n_items, f);
}

static int run(int argc, char **argv, hsqd_conf *cp) {
    /* cp is owned by main(), which frees its strings on every exit path. */
    char err[512];
    const char *config = NULL;
    int ready_fd = -1;
    int insecure = 0;

    /* Pass 1: find the config file, so --set always wins over it. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("hsqd %s (protocol %d)\n", HSQ_VERSION, HSQ_WIRE_VERSION);
            return 0;
        }
    }
    if (config && hsq_conf_load(hsqd_conf_items, hsqd_conf_n_items, cp, config, err, sizeof err) != 0) {
        fprintf(stderr, "hsqd: %s\n", err);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0) {
            i++;
        } else if (strcmp(a, "--set") == 0 && i + 1 < argc) {
            char kv[4096];
            snprintf(kv, sizeof kv, "%s", argv[++i]);
            char *eq = strchr(kv, '=');
            if (!eq) {
                fprintf(stderr, "hsqd: --set needs KEY=VALUE, got '%s'\n", kv);
                return 2;
            }
            *eq = '\0';
            if (hsq_conf_set(hsqd_conf_items, hsqd_conf_n_items, cp, kv, eq + 1, err, sizeof err) != 0) {
                fprintf(stderr, "hsqd: %s\n", err);
                return 2;
            }
        } else if (strcmp(a, "--data-dir") == 0 && i + 1 < argc) {
            hsq_conf_set_str(&cp->data_dir, argv[++i]);
        } else if (strcmp(a, "--ready-fd") == 0 && i + 1 < argc) {
            char *end;
            long fd = strtol(argv[++i], &end, 10);
            if (*end || fd < 0 || fd > INT_MAX) {
                fprintf(stderr, "hsqd: --ready-fd needs a file descriptor number\n");
                return 2;
            }
            ready_fd = (int)fd;
        } else if (strcmp(a, "--log-time") == 0) {
            hsq_log_time = 1;
        } else if (strcmp(a, "--insecure") == 0) {
            insecure = 1;
        } else {
            fprintf(stderr, "hsqd: unknown argument '%s' (see --help)\n", a);
            return 2;
        }
    }
    int lvl = hsq_log_level_parse(cp->log_level);
    if (lvl < 0) {
        fprintf(stderr, "hsqd: log_level '%s' is not one of err, warn, notice, info, debug\n",
                cp->log_level);
        return 2;
    }
    hsq_log_level = lvl;
    signal(SIGPIPE, SIG_IGN);

    char curve_key[HSQ_AUTH_KEY_Z85 + 1] = "";
    hsq_auth *auth = NULL;
    if (setup_security(cp, insecure, curve_key, &auth) != 0) {
        return 2;
    }

    char dbdir[PATH_MAX], blobdir[PATH_MAX];
    if (mkdir(cp->data_dir, 0700) != 0 && errno != EEXIST) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "cannot create data_dir=%s err=%s", cp->data_dir,
                strerror(errno));
        hsq_auth_free(&auth);
        return 1;
    }
    snprintf(dbdir, sizeof dbdir, "%s/db", cp->data_dir);
    if (cp->blob_dir[0])
        snprintf(blobdir, sizeof blobdir, "%s", cp->blob_dir);
    else
        snprintf(blobdir, sizeof blobdir, "%s/blobs", cp->data_dir);

    hsq_store *st = NULL;
    hsq_blob *blob = NULL;
    hsq_queue *q = NULL;
    hsq_store_opts so = {cp->journal, (uint32_t)cp->checkpoint_ms};
    int rc = hsq_store_open_opts(&st, dbdir, cp->map_size, &so);
    if (rc != 0) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "cannot open store dir=%s err=%s detail=\"%s\"", dbdir,
                hsq_errname(rc), hsq_strerror(rc));
        hsq_auth_free(&auth);
        return 1;
    }
    rc = hsq_blob_open(&blob, blobdir);
    if (rc != 0) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "cannot open blob store dir=%s err=%s", blobdir,
                hsq_strerror(rc));
        hsq_store_close(&st);
        hsq_auth_free(&auth);
        return 1;
    }
    hsq_queue_conf qc;
    if (hsqd_conf_queue(cp, &qc, err, sizeof err) != 0) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "%s", err);
        hsq_blob_close(&blob);
        hsq_store_close(&st);
        hsq_auth_free(&auth);
        return 2;
    }
    rc = hsq_queue_new(&q, st, blob, &qc, hsq_clock_wall_ms());
    if (rc != 0) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "cannot load queue state err=%s", hsq_errname(rc));
        hsq_blob_close(&blob);
        hsq_store_close(&st);
        hsq_auth_free(&auth);
        return 1;
    }
    /* Uploads a crash left behind are found by the janitor's walk while we
     * serve (srv.h); here only their id range is set aside, durably. */
    hsq_id_range recover[HSQ_RECOVER_RANGES];
    size_t n_recover = 0;
    rc = hsq_queue_recover_begin(q, recover, &n_recover);
    if (rc == HSQ_ECORRUPT)
        hsq_log(HSQ_LOG_ERR, "hsqd",
                "the start-up recovery record in %s is corrupt: with hsqd stopped, run "
                "`hsq fsck --data-dir %s --repair` (it deletes the uploads of lost submits "
                "as orphans, then the record)",
                dbdir, cp->data_dir);
    else if (rc != 0)
        hsq_log(HSQ_LOG_ERR, "hsqd", "cannot set aside the recovery ids err=%s", hsq_strerror(rc));
    if (rc != 0) {
        hsq_queue_free(&q);
        hsq_blob_close(&blob);
        hsq_store_close(&st);
        hsq_auth_free(&auth);
        return 1;
    }
    for (size_t i = 0; i < n_recover; i++)
        hsq_log(HSQ_LOG_INFO, "hsqd", "recovery ids=%llu-%llu (uploads of uncommitted submits)",
                (unsigned long long)recover[i].lo, (unsigned long long)(recover[i].hi - 1));
    hsq_wire_stats s;
    hsq_queue_stats(q, &s);
    hsq_log(HSQ_LOG_NOTICE, "hsqd",
            "start data_dir=%s queued=%llu leased=%llu succeeded=%llu failed=%llu", cp->data_dir,
            (unsigned long long)s.queued, (unsigned long long)s.leased,
            (unsigned long long)s.succeeded, (unsigned long long)s.failed);

    hsq_metrics *metrics = NULL;
    if (cp->metrics_listen[0] && hsq_metrics_start(&metrics, cp->metrics_listen, err, sizeof err)) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "%s", err);
        rc = HSQ_EINVAL;
    } else if (metrics) {
        hsq_log(HSQ_LOG_NOTICE, "hsqd", "metrics listen=%s port=%d", cp->metrics_listen,
                hsq_metrics_port(metrics));
    }

    hsq_srv_conf sc = {
        .client_endpoint = cp->client_endpoint,
        .worker_endpoint = cp->worker_endpoint,
        .events_endpoint = cp->events_endpoint,
        /* The largest valid message: every input at its limit plus the meta. */
        .max_msg_bytes = cp->max_image_bytes * HSQ_MAX_INPUTS + HSQ_MAX_META_BYTES + 4096,
        .ready_fd = ready_fd,
        .curve_secret_key = curve_key,
        .auth = auth,
        .metrics = metrics,
        .store = st,
        .blob_root = hsq_blob_root(blob),
        .recover = recover,
        .n_recover = n_recover,
        /* Past the lease of any worker that held one when hsqd died: by
         * then its heartbeats have been refused and it has stopped. */
        .recover_settle_ms = 2 * cp->lease_ms,
        .janitor_interval_s = cp->janitor_interval_s,
        .slow_turn_ms = cp->slow_turn_ms,
        .staging_max = cp->staging_max,
        .version = HSQ_VERSION,
    };
    if (rc == 0)
        rc = hsq_srv_run(&sc, q);
    if (rc == 0) {
        /* Without the mark the next start only walks for uploads in vain. */
        int mc = hsq_queue_mark_clean(q);
        if (mc != 0)
            hsq_log(HSQ_LOG_WARN, "hsqd", "cannot record the clean stop err=%s", hsq_strerror(mc));
    }
    hsq_metrics_stop(&metrics);
    hsq_auth_free(&auth);
    explicit_bzero(curve_key, sizeof curve_key);
    hsq_queue_free(&q);
    hsq_blob_close(&blob);
    hsq_store_close(&st);
    if (rc != 0) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "exit err=%s", hsq_errname(rc));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    hsqd_conf c;
    hsqd_conf_defaults(&c);
    int rc = run(argc, argv, &c);
    hsqd_conf_free(&c);
    return rc;
}
