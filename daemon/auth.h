/* auth.h - CURVE keys, the client allowlist and hsqd's ZAP handler.
 *
 * DESIGN. CURVE on its own authenticates the server, not the client: libzmq
 * lets in any peer with a valid handshake unless a ZAP handler is bound at
 * inproc://zeromq.zap.01 in the same context and the server socket has
 * ZMQ_ZAP_ENFORCE_DOMAIN set (without it, a missing handler means "accept").
 * So hsqd binds this handler before any server socket, sets the "hsq" domain
 * and enforcement on every CURVE socket, and answers each ZAP request from
 * its allowlist: 200 with user id "<role>" or "<role>:<name>" for a listed
 * public key, 400 for anything else (unknown key, other mechanism, other
 * domain). Authorisation reads that user id from each message
 * (zmq_msg_gets "User-Id"), never the ROUTER routing id, which a peer may
 * choose.
 *
 * The handler socket is a REP served from the loop thread (hsq_auth_serve on
 * every wake-up of its ZMQ_FD): it never blocks, and ZeroMQ sockets stay on
 * one thread.
 *
 * Key files hold one Z85 key (40 characters) on the first line that is not
 * blank or a '#' comment. The allowlist file has one client per line:
 *     <z85 public key> <role> [name]      role: web | worker | operator
 * Blank lines and lines starting with '#' are comments, and so is the rest of
 * a line from a field that starts with '#'. ('#' is also a Z85 digit: a first
 * field that is a valid key is a key.)
 */
#ifndef HSQ_DAEMON_AUTH_H
#define HSQ_DAEMON_AUTH_H

#include "daemon/queue.h"

#include <stddef.h>

#define HSQ_AUTH_DOMAIN "hsq"
#define HSQ_AUTH_KEY_Z85 40 /* characters of a Z85 key, without the NUL */

typedef struct hsq_auth hsq_auth;

/* Read one Z85 key from path into out (41 bytes, NUL-terminated). If
 * mode_ok is not NULL it is set to 0 when the file is readable by group or
 * others (the caller warns), else 1. Errors: -errno (cannot read),
 * HSQ_EINVAL (no valid Z85 key in the file; err says why). */
int hsq_auth_read_key(const char *path, char out[HSQ_AUTH_KEY_Z85 + 1], int *mode_ok, char *err,
                      size_t errlen);

/* Write a fresh CURVE key pair: <prefix>.key (the secret key, created 0600,
 * never overwritten) and <prefix>.pub (the public key, 0644). Errors:
 * -EEXIST (either file exists), -errno, HSQ_EINTERNAL (no CURVE in libzmq). */
int hsq_auth_keygen(const char *prefix, char pub_out[HSQ_AUTH_KEY_Z85 + 1]);

/* Load the allowlist. Errors: -errno (cannot read), HSQ_EINVAL with
 * "path:line: why" in err (bad key, unknown role, duplicate key). An empty
 * list is valid (it lets nobody in). */
int hsq_auth_new(hsq_auth **out, const char *clients_path, char *err, size_t errlen);
void hsq_auth_free(hsq_auth **a);

size_t hsq_auth_count(const hsq_auth *a);

/* Bind the handler's REP socket at inproc://zeromq.zap.01 in zctx. Must run
 * before any CURVE server socket binds. Errors: -errno (EADDRINUSE when
 * another handler is bound). */
int hsq_auth_start(hsq_auth *a, void *zctx);

/* The REP socket's ZMQ_FD (edge-triggered, for a uv_poll), or -1. */
int hsq_auth_fd(hsq_auth *a);

/* Answer every pending ZAP request without blocking; returns how many were
 * answered. Leaves the socket drained (ZMQ_EVENTS has no POLLIN). */
int hsq_auth_serve(hsq_auth *a);

/* Requests answered 200 and 400 since start. */
void hsq_auth_counts(const hsq_auth *a, uint64_t *allowed, uint64_t *denied);

/* Close the handler socket (before zmq_ctx_term). */
void hsq_auth_stop(hsq_auth *a);

/* The role in a ZAP user id ("worker" or "worker:gpu-07"); -1 when the id
 * names no role this daemon knows (callers refuse the message). */
int hsq_auth_role(const char *user_id);

#endif
