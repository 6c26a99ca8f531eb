#include "daemon/hsqd_conf.h"

#include "schemas/err.h"

#include <stdio.h>
#include <string.h>

#define KIB 1024ull
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define SEC 1000ull
#define DAY (86400ull * SEC)

#define F(x) offsetof(hsqd_conf, x)
const hsq_conf_item hsqd_conf_items[] = {
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
    {"journal", HSQ_CONF_SIZE, F(journal), 0, 1ull << 36,
     "each of the two journal files in the data dir's db/ (0 = no journal: every commit syncs "
     "LMDB; a db/ that has one keeps it)"},
    {"checkpoint_interval", HSQ_CONF_MS, F(checkpoint_ms), 1, 60 * SEC,
     "how often the journal's changes are checkpointed into LMDB's file"},
    {"map_max", HSQ_CONF_SIZE, F(map_max), 16 * MIB, 1ull << 44,
     "the map grows (doubling) up to this on MAP_FULL"},
    {"max_queued", HSQ_CONF_U64, F(max_queued), 1, 1ull << 40,
     "active (queued + leased) tasks, all users; more answers queue_full"},
    {"max_queued_per_user", HSQ_CONF_U64, F(max_queued_per_user), 1, 1ull << 40,
     "active tasks of one user; more answers queue_full"},
    {"max_waits", HSQ_CONF_U64, F(max_waits), 1, 1ull << 32,
     "parked `wait` long-polls, all clients; more answers unavailable"},
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
    {"staging_max", HSQ_CONF_SIZE, F(staging_max), 0, 64 * GIB,
     "submits with inputs above inline_max held in memory while a thread writes the inputs; "
     "past it they are written in the loop's turn (0: always)"},
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
const size_t hsqd_conf_n_items = sizeof hsqd_conf_items / sizeof hsqd_conf_items[0];

void hsqd_conf_defaults(hsqd_conf *c) {
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
    c->journal = 32 * MIB;
    c->checkpoint_ms = 100;
    c->max_queued = 2000000;
    c->max_queued_per_user = 1000;
    c->max_waits = 100000;
    c->lease_ms = 30 * SEC;
    c->heartbeat_ms = 5 * SEC;
    c->max_attempts = 3;
    c->backoff_base_ms = 1 * SEC;
    c->backoff_max_ms = 60 * SEC;
    c->inline_max = 64 * KIB;
    c->max_image_bytes = 50 * MIB;
    c->staging_max = 256 * MIB;
    c->retention_outputs_ms = 30 * DAY;
    c->retention_uploads_ms = 7 * DAY;
    c->retention_failed_ms = 1 * DAY;
    c->retention_references_ms = 1 * DAY;
    c->retention_pending_ms = 7 * DAY;
    c->retention_tombstone_ms = 365 * DAY;
    c->sweep_batch = 64;
    c->slow_turn_ms = 50;
    c->janitor_interval_s = 21600;
    c->retention_audit_ms = 730 * DAY;
    for (int p = 0; p < HSQ_PRIO_COUNT_; p++)
        hsq_conf_set_str(&c->retention_prio[p], "");
    c->submit_rate = 0;
    c->submit_burst = 20;
    c->key_submit_rate = 0;
    c->key_submit_burst = 200;
    c->credits = 0;
    c->credit_cost = 1;
}

void hsqd_conf_free(hsqd_conf *c) {
    hsq_conf_free(hsqd_conf_items, hsqd_conf_n_items, c);
}

int hsqd_conf_queue(const hsqd_conf *c, hsq_queue_conf *qc, char *err, size_t errlen) {
    *qc = (hsq_queue_conf){
        .max_queued = c->max_queued,
        .max_queued_per_user = c->max_queued_per_user,
        .max_waits = c->max_waits,
        .lease_ms = c->lease_ms,
        .heartbeat_ms = c->heartbeat_ms,
        .max_attempts = c->max_attempts,
        .backoff_base_ms = c->backoff_base_ms,
        .backoff_max_ms = c->backoff_max_ms,
        .inline_max = c->inline_max,
        .max_frame_bytes = c->max_image_bytes,
        .retention_outputs_ms = c->retention_outputs_ms,
        .retention_uploads_ms = c->retention_uploads_ms,
        .retention_failed_ms = c->retention_failed_ms,
        .retention_references_ms = c->retention_references_ms,
        .retention_pending_ms = c->retention_pending_ms,
        .retention_tombstone_ms = c->retention_tombstone_ms,
        .sweep_batch = c->sweep_batch,
        .retention_audit_ms = c->retention_audit_ms,
        .submit_rate = c->submit_rate,
        .submit_burst = c->submit_burst,
        .key_submit_rate = c->key_submit_rate,
        .key_submit_burst = c->key_submit_burst,
        .map_max_bytes = c->map_max,
        .credits = c->credits,
        .credit_cost = c->credit_cost,
    };
    for (int p = 0; p < HSQ_PRIO_COUNT_; p++) {
        char e[256];
        if (hsq_retention_override_parse(c->retention_prio[p], qc->retention_by_prio[p], e,
                                         sizeof e) != 0) {
            snprintf(err, errlen, "retention_%s: %s", hsq_prio_name((hsq_prio)p), e);
            return HSQ_EINVAL;
        }
    }
    return 0;
}
