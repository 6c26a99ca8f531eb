/* hsqd_conf.h - hsqd's settings: the struct, the key table, the defaults.
 *
 * One definition for hsqd (main.c: config file, --set, --help) and for the
 * tools that work on hsqd's data directory while it is stopped (`hsq purge
 * --data-dir`, `hsq fsck`, client/cli_retention.c): reading the same file
 * with the same table and defaults, they apply the same retention policy
 * and limits hsqd would. README.md's configuration table documents the keys.
 */
#ifndef HSQ_DAEMON_HSQD_CONF_H
#define HSQ_DAEMON_HSQD_CONF_H

#include "common/conf.h"
#include "daemon/queue.h"

#include <stddef.h>
#include <stdint.h>

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
    uint64_t journal;
    uint64_t checkpoint_ms;
    uint64_t max_queued;
    uint64_t max_queued_per_user;
    uint64_t max_waits;
    uint64_t lease_ms;
    uint64_t heartbeat_ms;
    uint64_t max_attempts;
    uint64_t backoff_base_ms;
    uint64_t backoff_max_ms;
    uint64_t inline_max;
    uint64_t max_image_bytes;
    uint64_t staging_max;
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
} hsqd_conf;

extern const hsq_conf_item hsqd_conf_items[];
extern const size_t hsqd_conf_n_items;

/* Every field at its default (strings malloc'd: hsqd_conf_free). */
void hsqd_conf_defaults(hsqd_conf *c);
void hsqd_conf_free(hsqd_conf *c);

/* The queue core's settings from hsqd's. Errors: HSQ_EINVAL with a message
 * in err (a retention_<class> override that does not parse). */
int hsqd_conf_queue(const hsqd_conf *c, hsq_queue_conf *qc, char *err, size_t errlen);

#endif
