#include "schemas/err.h"

#include <errno.h>
#include <string.h>

const char *hsq_strerror(int code) {
    switch (code) {
    case 0:
        return "success";
#define XX(s, off, name, msg)                                                                      \
    case HSQ_E##s:                                                                                 \
        return msg;
        HSQ_ERR_MAP(XX)
#undef XX
    default:
        break;
    }
    if (code < 0 && code > HSQ_ERR_BASE)
        return strerror(-code);
    return "unknown error";
}

const char *hsq_errname(int code) {
    switch (code) {
    case 0:
        return "ok";
#define XX(s, off, name, msg)                                                                      \
    case HSQ_E##s:                                                                                 \
        return name;
        HSQ_ERR_MAP(XX)
#undef XX
    case -ENOSPC:
    case -EDQUOT:
        return "disk_full";
    case -ENOMEM:
        return "no_memory";
    default:
        return "internal";
    }
}

int hsq_err_from_name(const char *name, unsigned long len) {
#define XX(s, off, n, msg)                                                                         \
    if (len == sizeof(n) - 1 && memcmp(name, n, len) == 0)                                        \
        return HSQ_E##s;
    HSQ_ERR_MAP(XX)
#undef XX
    return 0;
}
