/* Shared by every burst kernel: the guest-memory region table and the
 * bounds-checked ways to reach guest memory through it.
 *
 * Python builds the table (nicdev/virtio/kernels.py: mem_table) from a
 * GuestMemory; regions are sorted by guest-physical address and never
 * overlap. Nothing a guest wrote is trusted: every access checks that the
 * whole range lies inside regions, and a range may run from one region into
 * the next adjacent one, as GuestMemory allows. */
#ifndef MNET_KERNELS_H
#define MNET_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct mnet_region {
    uint64_t gpa;
    uint64_t size;
    uint8_t *host;
};

struct mnet_mem {
    uint32_t count;
    struct mnet_region *regions;
};

/* The region holding `gpa`, or NULL. Guests have few regions (QEMU gives
 * one or two), so a linear scan beats anything cleverer. */
static inline const struct mnet_region *mnet_region_of(const struct mnet_mem *mem, uint64_t gpa)
{
    for (uint32_t i = 0; i < mem->count; i++) {
        const struct mnet_region *r = &mem->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa < r->size)
            return r;
    }
    return NULL;
}

/* A host pointer to [gpa, gpa+len) when it lies inside one region, else
 * NULL. len 0 is refused: callers skip empty ranges first. */
static inline uint8_t *mnet_host_span(const struct mnet_mem *mem, uint64_t gpa, uint64_t len)
{
    const struct mnet_region *r = mnet_region_of(mem, gpa);
    if (r == NULL || len == 0 || len > r->size - (gpa - r->gpa))
        return NULL;
    return r->host + (gpa - r->gpa);
}

/* 1 if [gpa, gpa+len) is all guest memory (possibly over adjacent regions). */
static inline int mnet_range_ok(const struct mnet_mem *mem, uint64_t gpa, uint64_t len)
{
    if (gpa + len < gpa)
        return 0;
    while (len > 0) {
        const struct mnet_region *r = mnet_region_of(mem, gpa);
        if (r == NULL)
            return 0;
        uint64_t n = r->size - (gpa - r->gpa);
        if (n > len)
            n = len;
        gpa += n;
        len -= n;
    }
    return 1;
}

/* Copy guest memory out (dir 0) or in (dir 1); 0 on success, -1 if any
 * part is outside guest memory (then nothing is guaranteed copied). */
static inline int mnet_copy(const struct mnet_mem *mem, uint64_t gpa, uint8_t *buf, uint64_t len, int into_guest)
{
    if (!mnet_range_ok(mem, gpa, len))
        return -1;
    while (len > 0) {
        const struct mnet_region *r = mnet_region_of(mem, gpa);
        uint64_t off = gpa - r->gpa;
        uint64_t n = r->size - off;
        if (n > len)
            n = len;
        if (into_guest)
            memcpy(r->host + off, buf, n);
        else
            memcpy(buf, r->host + off, n);
        gpa += n;
        buf += n;
        len -= n;
    }
    return 0;
}

/* Ring fields the other side writes concurrently: one aligned 16-bit access
 * each, with the ordering the virtio spec asks for. */
static inline uint16_t mnet_load_acquire16(const uint16_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void mnet_store_release16(uint16_t *p, uint16_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Orders our stores before our following loads (publish an index, then read
 * the other side's event or flags field). */
static inline void mnet_full_barrier(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* 1 when compiled with AddressSanitizer (kernels.c). */
int mnet_kernels_sanitized(void);

#endif
