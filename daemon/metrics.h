/* metrics.h - Prometheus exposition over HTTP, served from a snapshot.
 *
 * DESIGN. GNU libmicrohttpd answers on its own thread
 * (MHD_USE_INTERNAL_POLLING_THREAD). That thread never touches the queue,
 * LMDB or a ZeroMQ socket: it copies the latest snapshot, a text buffer that
 * the loop thread renders (hsq_metrics_render, a pure function of a sample)
 * and hands over with hsq_metrics_publish, swapping a pointer under a mutex.
 * A slow or stuck scraper therefore never delays a turn, and a stuck loop
 * shows up as a stale /healthz, not as a hung scrape.
 *
 * Endpoints: /metrics (text format 0.0.4), /healthz (200 while the loop has
 * published within HSQ_METRICS_STALE_MS, else 503), /readyz (200 once the
 * daemon serves and is not draining, else 503).
 */
#ifndef HSQ_DAEMON_METRICS_H
#define HSQ_DAEMON_METRICS_H

#include "common/buf.h"
#include "daemon/queue.h"
#include "schemas/wire.h"

#include <stddef.h>
#include <stdint.h>

#define HSQ_METRICS_STALE_MS 5000
#define HSQ_HIST_MAX_BUCKETS 20

/* A cumulative histogram with fixed upper bounds in seconds (+Inf implied). */
typedef struct {
    size_t n;
    double bounds[HSQ_HIST_MAX_BUCKETS];
    uint64_t counts[HSQ_HIST_MAX_BUCKETS + 1]; /* per bucket, not cumulative; last = +Inf */
    uint64_t count;
    double sum;
} hsq_hist;

/* Bounds suited to sub-second latencies (submit ack) and to job times. */
void hsq_hist_init_latency(hsq_hist *h); /* 0.5 ms .. 10 s */
void hsq_hist_init_job(hsq_hist *h);     /* 10 ms .. 1 h */
void hsq_hist_observe(hsq_hist *h, double seconds);

/* Per-task times for the queue-wait and run histograms, fed from the task
 * events the core publishes (queued, leased, terminal). Only tasks queued or
 * leased since this process started are tracked; the table is bounded
 * (HSQ_TIMING_MAX entries): beyond that, observations are dropped and
 * counted, never the loop slowed. */
#define HSQ_TIMING_MAX (1u << 20)

typedef struct {
    uint64_t id; /* 0 = empty slot */
    int64_t queued_ms, leased_ms;
} hsq_timing_slot;

typedef struct {
    hsq_hist queue_wait, run;
    hsq_timing_slot *slots;
    size_t cap, n;
    uint64_t dropped;
} hsq_timing;

void hsq_timing_init(hsq_timing *t);
void hsq_timing_free(hsq_timing *t);
/* One task event: state is an hsq_state, at_ms its time (wall clock). */
void hsq_timing_event(hsq_timing *t, uint64_t task, uint8_t state, int64_t at_ms);

/* Everything one exposition shows; filled by the shell on the loop thread. */
typedef struct {
    hsq_wire_stats st;        /* hsq_queue_stats, with oldest_queued_ms filled in */
    int64_t now_ms;           /* wall clock, for the oldest queued age */
    uint64_t lmdb_used_bytes; /* hsq_store_usage */
    uint64_t lmdb_map_bytes;
    uint64_t zap_allowed, zap_denied; /* CURVE handshakes let in / refused */
    int draining;
    hsq_sweep_counts swept; /* retention sweeper totals since start */
    uint64_t rate_limited;  /* submits refused by the rate limits since start */
    uint64_t blob_bytes;    /* hsq_queue_blob_bytes */
    uint64_t workers_cpu, workers_cuda;
    int recovering;         /* hsq_queue_recovering */
    int scrubbing;          /* hsq_queue_scrub_state */
    uint64_t scrub_pages;
    uint64_t janitor_walks; /* the janitor's walks of the blob store (janitor.h) */
    uint64_t janitor_uploads_removed, janitor_tmp_removed;
    uint64_t janitor_last_ms;
    uint64_t events_published; /* task events encoded and sent (someone subscribed) */
    uint64_t events_unwatched; /* ... skipped: no subscription matched the user */
    uint64_t event_topics;     /* distinct subscriptions held (topics.h) */
    uint64_t waits_parked;     /* hsq_queue_waits */
    uint64_t waits_refused;
    uint64_t
        checks_inflight; /* dones whose outputs are being checked (hsq_queue_checks_inflight) */
    uint64_t stages_inflight, staged_bytes; /* submits whose inputs are being written */
    const char *version;
    const hsq_hist *submit_ack; /* each may be NULL (not shown) */
    const hsq_hist *queue_wait;
    const hsq_hist *run;
} hsq_metrics_sample;

/* Append the exposition text for s to out. Pure: no clock, no I/O. */
void hsq_metrics_render(const hsq_metrics_sample *s, hsq_wbuf *out);

typedef struct hsq_metrics hsq_metrics;

/* Listen on "HOST:PORT" (IPv4 address or "localhost"; port 0 = any) and
 * start the HTTP thread. Errors: HSQ_EINVAL (bad address, message in err),
 * -errno / HSQ_EINTERNAL when the daemon cannot start. */
int hsq_metrics_start(hsq_metrics **out, const char *listen, char *err, size_t errlen);

/* The bound port (useful with port 0) and host (IPv4 text; loopback for a
 * wildcard bind); the host is valid until hsq_metrics_stop. */
int hsq_metrics_port(const hsq_metrics *m);
const char *hsq_metrics_host(const hsq_metrics *m);

/* Replace the snapshot with text (ownership of text->data moves in; text is
 * reset to empty), and record that the loop is alive at mono_ms. ready:
 * whether /readyz answers 200. Thread-safe against the HTTP thread. */
void hsq_metrics_publish(hsq_metrics *m, hsq_wbuf *text, uint64_t mono_ms, int ready);

/* Stop the HTTP thread and free everything; sets *m to NULL. */
void hsq_metrics_stop(hsq_metrics **m);

#endif
