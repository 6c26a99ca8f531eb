/* srv.h - the hsqd shell: libuv loop, ZeroMQ sockets, turns.
 *
 * The shell owns the loop, the sockets and the clock. It wakes on socket
 * readiness or a timer, drains both ROUTER sockets (bounded per turn), feeds
 * every message to the queue core inside one write transaction, commits, and
 * only then sends the outbox. ZMQ_FD is edge-triggered and every send or recv
 * consumes the edge, so after each turn it re-reads ZMQ_EVENTS and keeps an
 * idle handle running while any socket still has input: the loop never
 * blocks with a message waiting. The events socket is an XPUB: each turn
 * also reads its (un)subscriptions into a topics set (topics.h), and the
 * core encodes only events that some subscription matches.
 *
 * Readiness: once the sockets are bound and the first turn has run, the
 * endpoints go to --ready-fd and READY=1 to systemd (sd_notify); a 1 s tick
 * sends WATCHDOG=1 when systemd asked for it (WATCHDOG_USEC) and renders the
 * metrics snapshot, so both prove that the loop itself still turns.
 */
#ifndef HSQ_DAEMON_SRV_H
#define HSQ_DAEMON_SRV_H

#include "daemon/auth.h"
#include "daemon/metrics.h"
#include "daemon/queue.h"
#include "daemon/store.h"

#include <stdint.h>

typedef struct {
    const char *client_endpoint;
    const char *worker_endpoint;
    const char *events_endpoint;  /* "" = no events socket */
    uint64_t max_msg_bytes;       /* ZMQ_MAXMSGSIZE: larger messages drop the peer */
    int ready_fd;                 /* -1 = none; else endpoints are written here, then closed */
    /* Transport security (see auth.h). With curve_secret_key set, every
     * endpoint that is not ipc:// is a CURVE server in ZAP domain "hsq" with
     * domain enforcement, and auth (borrowed) is bound as the ZAP handler
     * before any socket binds. NULL/"" = plaintext everywhere (main.c allows
     * that for tcp:// only with --insecure). */
    const char *curve_secret_key; /* Z85, 40 characters */
    hsq_auth *auth;
    /* Observability, all borrowed and optional. */
    hsq_metrics *metrics; /* snapshot rendered by the loop about once a second */
    hsq_store *store;     /* for the LMDB map usage in metrics */
    /* The blob store's root: the sweeper's file deletions then run on a
     * thread of their own (reaper.h), and the whole-tree walks on another
     * (janitor.h). NULL/"" = inline, on the loop, and no walks. */
    const char *blob_root;
    /* Start-up recovery (queue.h): the ranges hsq_queue_recover_begin gave,
     * walked by the janitor thread (janitor.h) while the loop serves; it
     * walks again for stale temp files every janitor_interval_s (0: never). */
    const hsq_id_range *recover;
    size_t n_recover;
    uint64_t recover_settle_ms; /* the ranges are walked again this much later */
    uint64_t janitor_interval_s;
    uint64_t slow_turn_ms; /* log turns at least this long with their phases; 0 = never */
    /* Bytes of submits held while their large inputs are written on the
     * pool (queue.h "staging"); 0 = written in the turn. Needs blob_root. */
    uint64_t staging_max;
    const char *version;
} hsq_srv_conf;

/* Bind, serve until SIGTERM/SIGINT, shut down cleanly. Returns 0 on a clean
 * stop. Errors: -errno from bind (logged), HSQ_ESTORE when a turn's commit
 * keeps failing (sticky: the process exits and systemd restarts it). */
int hsq_srv_run(const hsq_srv_conf *conf, hsq_queue *q);

#endif
