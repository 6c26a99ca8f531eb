/* hsqd - the hsq broker. */
#include "common/blob.h"
#include "common/clock.h"
#include "common/conf.h"
#include "common/log.h"
#include "daemon/auth.h"
#include "daemon/defaults.h"
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

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define SEC 1000ull
#define DAY (86400ull * SEC)

typedef struct {
    char *client_endpoint;
    char *worker_endpoint;
    char *events_endpoint;
    char *data_dir;
    char *blob_dir;
    char *log_level;
    char *metrics_listen;
    char *curve_secret_key_file;
    char *clients_file;
    uint64_t map_size;
    uint64_t map_max;
    uint64_t max_queued;
    uint64_t max_queued_per_user;
    uint64_t lease_ms;
    uint64_t heartbeat_ms;
    uint64_t max_attempts;
    uint64_t backoff_base_ms;
    uint64_t backoff_max_ms;
    uint64_t inline_max;
    uint64_t max_image_bytes;
    uint64_t retention_outputs_ms;
    uint64_t retention_uploads_ms;
    uint64_t retention_failed_ms;
    uint64_t retention_references_ms;
    uint64_t retention_pending_ms;
    uint64_t retention_tombstone_ms;
    uint64_t sweep_batch;
    uint64_t slow_turn_ms;
    uint64_t janitor_interval_s;
    uint64_t retention_audit_ms;
    char *retention_prio[HSQ_PRIO_COUNT_]; /* per-class overrides, "outputs:90d,..." */
    uint64_t submit_rate;
    uint64_t submit_burst;
    uint64_t key_submit_rate;
    uint64_t key_submit_burst;
    int credits;
    uint64_t credit_cost;
} daemon_conf;

#define F(x) offsetof(daemon_conf, x)
static const hsq_conf_item items[] = {
    {"client_endpoint", HSQ_CONF_STR, F(client_endpoint), 0, 0,
     "ZeroMQ endpoint for clients (web tier, CLI)"},
    {"worker_endpoint", HSQ_CONF_STR, F(worker_endpoint), 0, 0, "ZeroMQ endpoint for workers"},
    {"events_endpoint", HSQ_CONF_STR, F(events_endpoint), 0, 0,
     "ZeroMQ PUB endpoint for task events (empty = off)"},
    {"data_dir", HSQ_CONF_STR, F(data_dir), 0, 0, "state directory (LMDB in <data_dir>/db)"},
    {"blob_dir", HSQ_CONF_STR, F(blob_dir), 0, 0,
     "blob store root, shared with workers (default <data_dir>/blobs)"},
    {"log_level", HSQ_CONF_STR, F(log_level), 0, 0, "err, warn, notice, info or debug"},
    {"metrics_listen", HSQ_CONF_STR, F(metrics_listen), 0, 0,
     "HOST:PORT for Prometheus /metrics, /healthz, /readyz (empty = off; port 0 = any)"},
    {"curve_secret_key_file", HSQ_CONF_STR, F(curve_secret_key_file), 0, 0,
     "hsqd's CURVE secret key (from `hsq keygen`); required for tcp:// endpoints"},
    {"clients_file", HSQ_CONF_STR, F(clients_file), 0, 0,
     "allowed CURVE clients: lines of \"<z85 public key> <web|worker|operator> [name]\""},
    {"map_size", HSQ_CONF_SIZE, F(map_size), 16 * MIB, 1ull << 42, "initial LMDB map size"},
    {"map_max", HSQ_CONF_SIZE, F(map_max), 16 * MIB, 1ull << 44,
     "the map grows (doubling) up to this on MAP_FULL"},
    {"max_queued", HSQ_CONF_U64, F(max_queued), 1, 1ull << 40,
     "active (queued + leased) tasks, all users; more answers queue_full"},
    {"max_queued_per_user", HSQ_CONF_U64, F(max_queued_per_user), 1, 1ull << 40,
     "active tasks of one user; more answers queue_full"},
    {"lease", HSQ_CONF_MS, F(lease_ms), 100, DAY, "lease length, renewed by worker heartbeats"},
    {"heartbeat", HSQ_CONF_MS, F(heartbeat_ms), 50, DAY,
     "heartbeat interval workers are told to use (keep it under lease/3)"},
    {"max_attempts", HSQ_CONF_U64, F(max_attempts), 1, 1000,
     "leases before a task is dead-lettered"},
    {"backoff_base", HSQ_CONF_MS, F(backoff_base_ms), 0, DAY,
     "first retry delay; doubles per attempt"},
    {"backoff_max", HSQ_CONF_MS, F(backoff_max_ms), 0, 30 * DAY, "largest retry delay"},
    {"inline_max", HSQ_CONF_SIZE, F(inline_max), 0, 1 * MIB,
     "inputs up to this size are kept in LMDB, larger ones in the blob store"},
    {"max_image_bytes", HSQ_CONF_SIZE, F(max_image_bytes), 1 * KIB, 200 * MIB,
     "largest accepted image frame"},
    {"retention_outputs", HSQ_CONF_MS, F(retention_outputs_ms), SEC, 3650 * DAY,
     "keep outputs and task metadata this long after success"},
    {"retention_uploads", HSQ_CONF_MS, F(retention_uploads_ms), 0, 3650 * DAY,
     "keep uploaded photos this long after the task ends"},
    {"retention_failed", HSQ_CONF_MS, F(retention_failed_ms), 0, 3650 * DAY,
     "keep inputs of failed or cancelled tasks this long"},
    {"retention_references", HSQ_CONF_MS, F(retention_references_ms), 0, 3650 * DAY,
     "keep clothing and background references this long after success"},
    {"retention_pending", HSQ_CONF_MS, F(retention_pending_ms), SEC, 3650 * DAY,
     "a task not finished this long after its submit is cancelled and its inputs deleted"},
    {"retention_tombstone", HSQ_CONF_MS, F(retention_tombstone_ms), 0, 36500 * DAY,
     "keep tombstones (id, user, state, dates; no images, no prompt) after outputs expire"},
    {"retention_audit", HSQ_CONF_MS, F(retention_audit_ms), DAY, 36500 * DAY,
     "keep audit log lines (no personal data) this long"},
    {"submit_rate", HSQ_CONF_U64, F(submit_rate), 0, 1000000,
     "submits per second per user (token bucket); more answers rate_limited; 0 = no limit"},
    {"submit_burst", HSQ_CONF_U64, F(submit_burst), 1, 1000000,
     "submits one user may send at once before submit_rate applies"},
    {"key_submit_rate", HSQ_CONF_U64, F(key_submit_rate), 0, 10000000,
     "submits per second per CURVE client key (one web-tier instance); 0 = no limit"},
    {"key_submit_burst", HSQ_CONF_U64, F(key_submit_burst), 1, 10000000,
     "submits one client key may send at once before key_submit_rate applies"},
    {"retention_high", HSQ_CONF_STR, F(retention_prio[HSQ_PRIO_HIGH]), 0, 0,
     "overrides for high-priority tasks, e.g. outputs:90d,uploads:14d (classes outputs, "
     "uploads, references, failed)"},
    {"retention_normal", HSQ_CONF_STR, F(retention_prio[HSQ_PRIO_NORMAL]), 0, 0,
     "overrides for normal-priority tasks (as retention_high)"},
    {"retention_low", HSQ_CONF_STR, F(retention_prio[HSQ_PRIO_LOW]), 0, 0,
     "overrides for low-priority tasks (as retention_high)"},
    {"sweep_batch", HSQ_CONF_U64, F(sweep_batch), 0, 100000,
     "expired entries the sweeper handles per loop turn (0 = off)"},
    {"slow_turn_ms", HSQ_CONF_U64, F(slow_turn_ms), 0, 3600000,
     "log a warning with its phases for every loop turn at least this long (0 = never)"},
    {"janitor_interval_s", HSQ_CONF_U64, F(janitor_interval_s), 0, 604800,
     "seconds between walks of the blob store for temp files of writes that died "
     "(0 = only the walk at start)"},
    {"credits", HSQ_CONF_BOOL, F(credits), 0, 1,
     "charge submits against the per-user credit ledger (`hsq credits`); off = free"},
    {"credit_cost", HSQ_CONF_U64, F(credit_cost), 0, 1000000,
     "credits per output (background x style x size) when credits are on"},
};
#undef F
#define N_ITEMS (sizeof items / sizeof items[0])

static void defaults(daemon_conf *c) {
    memset(c, 0, sizeof *c);
    hsq_conf_set_str(&c->client_endpoint, "ipc:///run/hsq/client.sock");
    hsq_conf_set_str(&c->worker_endpoint, "ipc:///run/hsq/worker.sock");
    hsq_conf_set_str(&c->events_endpoint, "ipc:///run/hsq/events.sock");
    hsq_conf_set_str(&c->data_dir, "/var/lib/hsq");
    hsq_conf_set_str(&c->blob_dir, "");
    hsq_conf_set_str(&c->log_level, "info");
    hsq_conf_set_str(&c->metrics_listen, "");
    hsq_conf_set_str(&c->curve_secret_key_file, "");
    hsq_conf_set_str(&c->clients_file, "");
    c->map_size = 1 * GIB;
    c->map_max = 64 * GIB;
    c->max_queued = 2000000;
    c->max_queued_per_user = 1000;
    c->lease_ms = 30 * SEC;
    c->heartbeat_ms = 5 * SEC;
    c->max_attempts = 3;
    c->backoff_base_ms = 1 * SEC;
    c->backoff_max_ms = 60 * SEC;
    c->inline_max = 64 * KIB;
    c->max_image_bytes = 50 * MIB;
    c->retention_outputs_ms = HSQ_DEF_RETENTION_OUTPUTS_MS;
    c->retention_uploads_ms = HSQ_DEF_RETENTION_UPLOADS_MS;
    c->retention_failed_ms = HSQ_DEF_RETENTION_FAILED_MS;
    c->retention_references_ms = HSQ_DEF_RETENTION_REFERENCES_MS;
    c->retention_pending_ms = HSQ_DEF_RETENTION_PENDING_MS;
    c->retention_tombstone_ms = HSQ_DEF_RETENTION_TOMBSTONE_MS;
    c->sweep_batch = HSQ_DEF_SWEEP_BATCH;
    c->slow_turn_ms = 50;
    c->janitor_interval_s = 21600;
    c->retention_audit_ms = HSQ_DEF_RETENTION_AUDIT_MS;
    for (int p = 0; p < HSQ_PRIO_COUNT_; p++)
        hsq_conf_set_str(&c->retention_prio[p], "");
    c->submit_rate = 0;
    c->submit_burst = 20;
    c->key_submit_rate = 0;
    c->key_submit_burst = 200;
    c->credits = 0;
    c->credit_cost = 1;
}

static int is_ipc(const char *ep) {
    return strncmp(ep, "ipc://", 6) == 0;
}

/* Transport security (DESIGN.md "Security"): every endpoint that is not
 * ipc:// needs CURVE, i.e. both the server key and the allowlist, unless the
 * operator said --insecure. Returns 0, or -1 after logging why hsqd must not
 * start. */
static int setup_security(const daemon_conf *c, int insecure, char *key, hsq_auth **auth) {
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
    hsq_conf_usage(items, N_ITEMS, f);
}

static int run(int argc, char **argv, daemon_conf *cp) {
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
    if (config && hsq_conf_load(items, N_ITEMS, cp, config, err, sizeof err) != 0) {
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
            if (hsq_conf_set(items, N_ITEMS, cp, kv, eq + 1, err, sizeof err) != 0) {
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
    int rc = hsq_store_open(&st, dbdir, cp->map_size);
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
    hsq_queue_conf qc = {
        .max_queued = cp->max_queued,
        .max_queued_per_user = cp->max_queued_per_user,
        .lease_ms = cp->lease_ms,
        .heartbeat_ms = cp->heartbeat_ms,
        .max_attempts = cp->max_attempts,
        .backoff_base_ms = cp->backoff_base_ms,
        .backoff_max_ms = cp->backoff_max_ms,
        .inline_max = cp->inline_max,
        .max_frame_bytes = cp->max_image_bytes,
        .retention_outputs_ms = cp->retention_outputs_ms,
        .retention_uploads_ms = cp->retention_uploads_ms,
        .retention_failed_ms = cp->retention_failed_ms,
        .retention_references_ms = cp->retention_references_ms,
        .retention_pending_ms = cp->retention_pending_ms,
        .retention_tombstone_ms = cp->retention_tombstone_ms,
        .sweep_batch = cp->sweep_batch,
        .retention_audit_ms = cp->retention_audit_ms,
        .submit_rate = cp->submit_rate,
        .submit_burst = cp->submit_burst,
        .key_submit_rate = cp->key_submit_rate,
        .key_submit_burst = cp->key_submit_burst,
        .map_max_bytes = cp->map_max,
        .credits = cp->credits,
        .credit_cost = cp->credit_cost,
    };
    for (int p = 0; p < HSQ_PRIO_COUNT_; p++) {
        if (hsq_retention_override_parse(cp->retention_prio[p], qc.retention_by_prio[p], err,
                                          sizeof err) != 0) {
            hsq_log(HSQ_LOG_ERR, "hsqd", "retention_%s: %s", hsq_prio_name((hsq_prio)p), err);
            hsq_blob_close(&blob);
            hsq_store_close(&st);
            hsq_auth_free(&auth);
            return 2;
        }
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
    if (rc != 0) {
        hsq_log(HSQ_LOG_ERR, "hsqd", "cannot set aside the recovery ids err=%s", hsq_strerror(rc));
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
        .janitor_interval_s = cp->janitor_interval_s,
        .slow_turn_ms = cp->slow_turn_ms,
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
    daemon_conf c;
    defaults(&c);
    int rc = run(argc, argv, &c);
    hsq_conf_free(items, N_ITEMS, &c);
    return rc;
}
