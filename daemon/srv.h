/* srv.h - the hsqd shell: libuv loop, ZeroMQ sockets, turns.
 *
 * The shell owns the loop, the sockets and the clock. It wakes on socket
 * readiness or a timer, drains both ROUTER sockets (bounded per turn), feeds
 * every message to the queue core inside one write transaction, commits, and
 * only then sends the outbox. ZMQ_FD is edge-triggered and every send or recv
 * consumes the edge, so after each turn it re-reads ZMQ_EVENTS and keeps an
 * idle handle running while any socket still has input: the loop never
 * blocks with a message waiting.
 */
#ifndef HSQ_DAEMON_SRV_H
#define HSQ_DAEMON_SRV_H

#include "daemon/queue.h"

#include <stdint.h>

typedef struct {
    const char *client_endpoint;
    const char *worker_endpoint;
    const char *events_endpoint;  /* "" = no PUB socket */
    uint64_t max_msg_bytes;       /* ZMQ_MAXMSGSIZE: larger messages drop the peer */
    int ready_fd;                 /* -1 = none; else endpoints are written here, then closed */
} hsq_srv_conf;

/* Bind, serve until SIGTERM/SIGINT, shut down cleanly. Returns 0 on a clean
 * stop. Errors: -errno from bind (logged), HSQ_ESTORE when a turn's commit
 * keeps failing (sticky: the process exits and systemd restarts it). */
int hsq_srv_run(const hsq_srv_conf *conf, hsq_queue *q);

#endif
