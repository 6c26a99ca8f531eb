#include "daemon/auth.h"

#include "common/alloc.h"
#include "schemas/err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_FRAMES 8      /* a request has 7 frames (CURVE: one credential) */
#define ZAP_FRAME_MAX 256 /* longer frames are not a ZAP request we answer 200 */
#define USER_ID_MAX 80

typedef struct {
    uint8_t key[32];
    hsq_role role;
    char user_id[USER_ID_MAX]; /* "role" or "role:name" */
} client_rec;

struct hsq_auth {
    client_rec *clients;
    size_t n, cap;
    void *rep; /* ZAP handler socket, NULL until started */
    uint64_t allowed, denied;
};

__attribute__((format(printf, 3, 4))) static int errf(char *err, size_t errlen, const char *fmt,
                                                      ...) {
    if (errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return HSQ_EINVAL;
}

static int z85_ok(const char *k, size_t len) {
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              ".-:+=^!/*?&<>()[]{}@%$#";
    if (len != HSQ_AUTH_KEY_Z85)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!k[i] || !strchr(z85, k[i]))
            return 0;
    return 1;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

int hsq_auth_read_key(const char *path, char out[HSQ_AUTH_KEY_Z85 + 1], int *mode_ok, char *err,
                      size_t errlen) {
    FILE *f = fopen(path, "re");
    if (!f) {
        int e = errno;
        errf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    if (mode_ok) {
        struct stat st;
        *mode_ok = fstat(fileno(f), &st) == 0 && (st.st_mode & 077) == 0;
    }
    char line[512];
    int rc = errf(err, errlen, "%s: no Z85 key (40 characters) in the file", path);
    while (fgets(line, sizeof line, f)) {
        char *s = trim(line);
        /* '#' is a Z85 digit too: a line is a key when it is one. */
        if (!*s || (*s == '#' && !z85_ok(s, strlen(s))))
            continue;
        if (!z85_ok(s, strlen(s))) {
            rc = errf(err, errlen, "%s: the first line is not a Z85 key (40 characters)", path);
            break;
        }
        memcpy(out, s, HSQ_AUTH_KEY_Z85 + 1);
        rc = 0;
        break;
    }
    explicit_bzero(line, sizeof line);
    fclose(f);
    return rc;
}

static int write_key(const char *path, const char *key, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    /* O_CREAT's mode is filtered by the umask; the secret key must be 0600
     * whatever it is. */
    int rc = fchmod(fd, mode) == 0 ? 0 : -errno;
    char buf[HSQ_AUTH_KEY_Z85 + 2];
    memcpy(buf, key, HSQ_AUTH_KEY_Z85);
    buf[HSQ_AUTH_KEY_Z85] = '\n';
    size_t done = 0;
    while (rc == 0 && done < HSQ_AUTH_KEY_Z85 + 1) {
        ssize_t w = write(fd, buf + done, HSQ_AUTH_KEY_Z85 + 1 - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            rc = -errno;
        else
            done += (size_t)w;
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    explicit_bzero(buf, sizeof buf);
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0)
        unlink(path);
    return rc;
}

int hsq_auth_keygen(const char *prefix, char pub_out[HSQ_AUTH_KEY_Z85 + 1]) {
    char pub[HSQ_AUTH_KEY_Z85 + 1], sec[HSQ_AUTH_KEY_Z85 + 1];
    char kpath[4096], ppath[4096];
    if (snprintf(kpath, sizeof kpath, "%s.key", prefix) >= (int)sizeof kpath ||
        snprintf(ppath, sizeof ppath, "%s.pub", prefix) >= (int)sizeof ppath)
        return -ENAMETOOLONG;
    if (!zmq_has("curve") || zmq_curve_keypair(pub, sec) != 0)
        return HSQ_EINTERNAL;
    /* Both names must be free before anything is written, so a keygen
     * never leaves a public key that belongs to another secret. */
    if (access(kpath, F_OK) == 0 || access(ppath, F_OK) == 0)
        return -EEXIST;
    int rc = write_key(kpath, sec, 0600);
    explicit_bzero(sec, sizeof sec);
    if (rc == 0) {
        rc = write_key(ppath, pub, 0644);
        if (rc != 0)
            unlink(kpath);
    }
    if (rc == 0 && pub_out)
        memcpy(pub_out, pub, sizeof pub);
    return rc;
}

int hsq_auth_role(const char *user_id) {
    if (!user_id)
        return -1;
    char role[16];
    size_t n = strcspn(user_id, ":");
    if (n == 0 || n >= sizeof role)
        return -1;
    memcpy(role, user_id, n);
    role[n] = '\0';
    int r = hsq_role_from_name(role);
    return r == HSQ_ROLE_ANY ? -1 : r; /* "any" is never granted to a key */
}

static int parse_line(hsq_auth *a, char *s, const char *path, int lineno, char *err,
                      size_t errlen) {
    char *save = NULL;
    char *key = strtok_r(s, " \t", &save);
    if (key && *key == '#' && !z85_ok(key, strlen(key)))
        return 0; /* a comment line ('#' is also a Z85 digit, hence the check) */
    char *role = strtok_r(NULL, " \t", &save);
    char *name = strtok_r(NULL, " \t", &save);
    char *extra = strtok_r(NULL, " \t", &save);
    /* After the fields, a token starting with '#' begins a comment. */
    if (role && *role == '#')
        role = name = extra = NULL;
    else if (name && *name == '#')
        name = extra = NULL;
    else if (extra && *extra == '#')
        extra = NULL;
    if (!key || !role)
        return errf(err, errlen, "%s:%d: expected \"<z85 public key> <role> [name]\"", path,
                    lineno);
    if (extra)
        return errf(err, errlen, "%s:%d: unexpected \"%s\" after the name", path, lineno, extra);
    if (!z85_ok(key, strlen(key)))
        return errf(err, errlen, "%s:%d: the key is not 40 characters of Z85", path, lineno);
    int r = hsq_auth_role(role);
    if (r < 0 || strchr(role, ':'))
        return errf(err, errlen, "%s:%d: role \"%s\" is not web, worker or operator", path,
                    lineno, role);
    if (name && (strlen(name) > 60 || strchr(name, ':')))
        return errf(err, errlen, "%s:%d: the name is longer than 60 bytes or has a ':'", path,
                    lineno);
    client_rec c;
    memset(&c, 0, sizeof c);
    if (!zmq_z85_decode(c.key, key))
        return errf(err, errlen, "%s:%d: the key does not decode", path, lineno);
    for (size_t i = 0; i < a->n; i++)
        if (memcmp(a->clients[i].key, c.key, 32) == 0)
            return errf(err, errlen, "%s:%d: the key is listed twice", path, lineno);
    c.role = (hsq_role)r;
    if (name)
        snprintf(c.user_id, sizeof c.user_id, "%s:%s", role, name);
    else
        snprintf(c.user_id, sizeof c.user_id, "%s", role);
    a->clients = hsq_xgrow(a->clients, a->n, &a->cap, sizeof *a->clients, 16);
    a->clients[a->n++] = c;
    return 0;
}

int hsq_auth_new(hsq_auth **out, const char *clients_path, char *err, size_t errlen) {
    *out = NULL;
    FILE *f = fopen(clients_path, "re");
    if (!f) {
        int e = errno;
        errf(err, errlen, "%s: %s", clients_path, strerror(e));
        return -e;
    }
    hsq_auth *a = hsq_xcalloc(1, sizeof *a);
    char line[1024];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = errf(err, errlen, "%s:%d: line too long", clients_path, lineno);
            break;
        }
        char *s = trim(line);
        if (*s)
            rc = parse_line(a, s, clients_path, lineno, err, errlen);
    }
    fclose(f);
    if (rc != 0) {
        hsq_auth_free(&a);
        return rc;
    }
    *out = a;
    return 0;
}

void hsq_auth_free(hsq_auth **ap) {
    hsq_auth *a = *ap;
    if (!a)
        return;
    hsq_auth_stop(a);
    if (a->clients)
        explicit_bzero(a->clients, a->cap * sizeof *a->clients);
    free(a->clients);
    free(a);
    *ap = NULL;
}

size_t hsq_auth_count(const hsq_auth *a) {
    return a ? a->n : 0;
}

int hsq_auth_start(hsq_auth *a, void *zctx) {
    void *s = zmq_socket(zctx, ZMQ_REP);
    if (!s)
        return -zmq_errno();
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(s, ZAP_ENDPOINT) != 0) {
        int e = zmq_errno();
        zmq_close(s);
        return -e;
    }
    a->rep = s;
    return 0;
}

int hsq_auth_fd(hsq_auth *a) {
    int fd = -1;
    size_t len = sizeof fd;
    if (!a || !a->rep || zmq_getsockopt(a->rep, ZMQ_FD, &fd, &len) != 0)
        return -1;
    return fd;
}

void hsq_auth_stop(hsq_auth *a) {
    if (a && a->rep) {
        zmq_close(a->rep);
        a->rep = NULL;
    }
}

void hsq_auth_counts(const hsq_auth *a, uint64_t *allowed, uint64_t *denied) {
    *allowed = a ? a->allowed : 0;
    *denied = a ? a->denied : 0;
}

static int frame_is(const zmq_msg_t *m, const char *s) {
    size_t n = strlen(s);
    return zmq_msg_size((zmq_msg_t *)m) == n && memcmp(zmq_msg_data((zmq_msg_t *)m), s, n) == 0;
}

/* Decide one request (RFC 27): frames are version, request id, domain,
 * address, routing id, mechanism, credentials. */
static const client_rec *decide(hsq_auth *a, zmq_msg_t *f, size_t n) {
    if (n != 7 || !frame_is(&f[0], "1.0") || !frame_is(&f[2], HSQ_AUTH_DOMAIN) ||
        !frame_is(&f[5], "CURVE") || zmq_msg_size(&f[6]) != 32)
        return NULL;
    const uint8_t *key = zmq_msg_data(&f[6]);
    for (size_t i = 0; i < a->n; i++)
        if (memcmp(a->clients[i].key, key, 32) == 0)
            return &a->clients[i];
    return NULL;
}

static int has_input(void *s) {
    int ev = 0;
    size_t len = sizeof ev;
    if (zmq_getsockopt(s, ZMQ_EVENTS, &ev, &len) != 0)
        return 0;
    return (ev & ZMQ_POLLIN) != 0;
}

int hsq_auth_serve(hsq_auth *a) {
    if (!a || !a->rep)
        return 0;
    int answered = 0;
    while (has_input(a->rep)) {
        zmq_msg_t f[ZAP_FRAMES];
        size_t n = 0;
        int more = 1, ok = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, a->rep, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                ok = 0;
                break;
            }
            more = zmq_msg_more(&m);
            if (n < ZAP_FRAMES)
                f[n++] = m; /* ownership moves into f */
            else
                zmq_msg_close(&m);
        }
        if (!ok && n == 0)
            break; /* spurious: nothing to answer */
        const client_rec *c = ok ? decide(a, f, n) : NULL;
        /* The reply echoes the request id; a request too short to carry one
         * still gets an answer so the REP socket can take the next. */
        const char *rid = "";
        size_t rid_len = 0;
        if (n >= 2 && zmq_msg_size(&f[1]) <= ZAP_FRAME_MAX) {
            rid = zmq_msg_data(&f[1]);
            rid_len = zmq_msg_size(&f[1]);
        }
        const char *status = c ? "200" : "400";
        const char *text = c ? "OK" : "key not allowed";
        const char *uid = c ? c->user_id : "";
        zmq_send(a->rep, "1.0", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(a->rep, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(a->rep, status, 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(a->rep, text, strlen(text), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(a->rep, uid, strlen(uid), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(a->rep, "", 0, ZMQ_DONTWAIT);
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
        if (c)
            a->allowed++;
        else
            a->denied++;
        answered++;
    }
    return answered;
}
