/* The device half of a split virtqueue in bursts (device_burst.c). The same
 * declarations are in device_burst.cdef for cffi. */
#ifndef MNET_DEVICE_BURST_H
#define MNET_DEVICE_BURST_H

#include <stdint.h>

#include "kernels.h"

/* One queue's geometry, fixed while the ring runs. */
struct dk_ring {
    uint64_t desc_gpa;
    uint64_t avail_gpa;
    uint64_t used_gpa;
    uint32_t size;          /* a power of two */
    uint8_t event_idx;      /* VIRTIO_F_RING_EVENT_IDX negotiated */
    uint8_t indirect;       /* VIRTIO_F_RING_INDIRECT_DESC negotiated */
};

/* The indices a DeviceQueue keeps: its own state array, shared with C so
 * that either data path can run the next call. -1: not known yet. */
struct dk_state {
    int32_t next_avail;
    int32_t used_idx;
    int32_t signalled_used;
};

/* Why a kernel stopped; the numbers are what the Python message needs. */
enum {
    DK_OK = 0,
    DK_ERR_AVAIL_MEM, DK_ERR_USED_MEM, DK_ERR_DESC_MEM, DK_ERR_AHEAD, DK_ERR_HEAD_RANGE,
    DK_ERR_LOOP, DK_ERR_NESTED_INDIRECT, DK_ERR_INDIRECT_NOT_NEGOTIATED, DK_ERR_INDIRECT_AND_NEXT,
    DK_ERR_INDIRECT_LENGTH, DK_ERR_INDIRECT_MEM, DK_ERR_BUFFER_MEM, DK_ERR_READABLE_AFTER_WRITABLE,
    DK_ERR_TOTAL_LENGTH, DK_ERR_NEXT_RANGE,
};
struct dk_error {
    int32_t code;
    uint32_t head;
    uint32_t a, b;
    uint64_t addr, len;
};

/* An optional trace: filled only when a kernel is given one. TX_CHAIN: a
 * transmit chain popped (len: its readable bytes); RX_POP: a receive chain
 * popped (len: its writable bytes); both with their descriptors, as walked
 * (an indirect descriptor, then its table's), at descs[first_desc...] and
 * `total` the chain's bytes both ways. RX_CHAIN: a receive chain written
 * (len: the bytes written). USED: a used element pushed (head: its id).
 * Events or descriptors that find no room are counted in `lost`. */
enum { DK_EV_TX_CHAIN = 1, DK_EV_RX_CHAIN = 2, DK_EV_RX_POP = 3, DK_EV_USED = 4 };
struct dk_event {
    uint16_t kind; uint16_t head; uint32_t len;
    uint32_t total; uint32_t first_desc; uint32_t ndescs; uint8_t indirect;
};
struct dk_desc { uint64_t addr; uint32_t len; uint16_t flags; };
struct dk_events {
    uint32_t capacity; uint32_t count; struct dk_event *events;
    uint32_t desc_capacity; uint32_t desc_count; struct dk_desc *descs;
    uint32_t lost;
};

/* A used-ring element, as it is in guest memory. */
struct dk_used { uint32_t id; uint32_t len; };
/* A checked writable segment. */
struct dk_seg { uint64_t gpa; uint64_t len; };

/* What became of a TX chain. */
enum { DK_TX_OK = 0, DK_TX_OFFLOAD, DK_TX_NO_HEADER, DK_TX_SHORT, DK_TX_DISABLED, DK_TX_TOO_BIG };
struct dk_tx_params {
    uint32_t hdr_len;
    uint32_t max_frame;
    uint32_t max_gso_frame;
    uint32_t slot;          /* pool bytes a frame may take: hdr_len + the largest frame */
    uint8_t gso;            /* GSO frames negotiated: they may exceed max_frame */
    uint8_t enabled;        /* a disabled ring is drained, its frames dropped */
};
struct dk_tx_work {
    uint8_t *pool;          /* frames, header included, one after the other */
    uint64_t pool_size;
    uint8_t *scratch;       /* 16 * queue size bytes: the copy of an indirect table */
    uint32_t *offset;       /* chain i: its bytes (header included) at pool + offset[i]... */
    uint32_t *len;          /* ...for len[i] bytes (its readable length) */
    uint8_t *status;        /* ...and what became of it (DK_TX_*) */
    struct dk_used *used;
    uint32_t capacity;      /* entries of offset, len, status and used */
    uint32_t frames_ok;     /* DK_TX_OK frames and their bytes (header excluded) */
    uint64_t bytes_ok;
};

struct dk_rx_params { uint32_t hdr_len; uint8_t mrg_rxbuf; };
struct dk_rx_chain { uint64_t room; uint32_t seg_first; };
struct dk_rx_work {
    uint8_t *scratch;       /* 16 * queue size bytes */
    struct dk_seg *segs;
    uint32_t seg_room;      /* at least header + frame bytes: a segment holds one or more */
    struct dk_rx_chain *chains;
    struct dk_used *used;
    uint32_t chain_room;    /* entries of chains and used: the queue size */
    uint32_t done;          /* dk_rx_burst: frames written before an error */
};

int dk_tx_burst(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m,
                const struct dk_tx_params *p, struct dk_tx_work *w, uint32_t limit,
                struct dk_error *e, struct dk_events *ev);
int dk_rx_put(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m, const struct dk_rx_params *p,
              struct dk_rx_work *w, uint8_t *hdr, const uint8_t *frame, uint32_t frame_len,
              struct dk_error *e, struct dk_events *ev);
/* Frames of a TX pool into a receive queue, and the runs of one MAC pair. */
struct dk_mac_run { uint32_t first; uint32_t count; uint8_t macs[12]; };
int dk_rx_burst(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m, const struct dk_rx_params *p,
                struct dk_rx_work *w, uint8_t *hdr, const uint8_t *frame_hdrs, const struct dk_tx_work *src,
                uint32_t src_hdr_len, uint32_t first, uint32_t count, uint32_t max_frame, uint64_t *bytes,
                struct dk_error *e, struct dk_events *ev);
int dk_mac_runs(const struct dk_tx_work *src, uint32_t hdr_len, uint32_t count, struct dk_mac_run *runs,
                uint32_t room);
int dk_needs_notification(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m, struct dk_error *e);
int dk_enable_notifications(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m, struct dk_error *e);

#endif
