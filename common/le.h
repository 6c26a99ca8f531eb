/* le.h - little-endian integers in byte buffers, for the on-disk formats
 * that are not LMDB keys (daemon/journal.c, the store's checkpoint file).
 * LMDB keys are big-endian (store.h) so that they sort. */
#ifndef HSQ_COMMON_LE_H
#define HSQ_COMMON_LE_H

#include <stdint.h>

static inline void hsq_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void hsq_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint32_t hsq_rd_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t hsq_rd_le64(const uint8_t *p) {
    return (uint64_t)hsq_rd_le32(p) | (uint64_t)hsq_rd_le32(p + 4) << 32;
}

#endif
