/* The driver half of a split virtqueue, in bursts (see driver_burst.c).
 *
 * The structs are filled by nicdev/virtio/driver_burst_c.py: every pointer
 * is into memory the driver owns (the three ring areas and its buffer pool,
 * each with its length) or into private bookkeeping arrays the device never
 * sees. The device can write anything into the shared areas at any time,
 * so what it wrote (used ring, event and flag fields, buffer bytes) is read
 * once and checked before it is used. */
#ifndef MNET_DRIVER_BURST_H
#define MNET_DRIVER_BURST_H

#include <stdint.h>

/* Why a queue broke (sticky, like DriverQueue.broken); err[] says which idx. */
#define MNET_DRV_OK 0
#define MNET_DRV_E_USED_AHEAD 1       /* err: used_idx, pending, last_used, offered */
#define MNET_DRV_E_NOT_IN_FLIGHT 2    /* err: used entry idx, descriptor id */
#define MNET_DRV_E_NUM_BUFFERS 3      /* err: num_buffers (RX only; not sticky) */

/* Other negative returns: the caller's own mistake, never the device's. */
#define MNET_DRV_BROKEN (-1)          /* the queue is broken (see error) */
#define MNET_DRV_FULL (-2)            /* no free descriptor or slot */
#define MNET_DRV_BAD_ARGS (-3)        /* arguments that do not fit the memory given */
#define MNET_DRV_NO_TOKEN 0xFFFFFFFFu /* a token that is no slot */

/* An optional trace of a ring's work, filled only when a queue has one
 * (ev NULL: tracing off, one test per event site). Records past `capacity`
 * are counted in `lost`. The fields of each kind: */
#define MNET_DRV_EV_TX_ADD 1          /* head, len (header + frame), extra: descriptors */
#define MNET_DRV_EV_USED 2            /* used entry reaped: id, len (clamped) */
#define MNET_DRV_EV_RX_POST 3         /* receive buffer posted: head, len */
#define MNET_DRV_EV_RX_USED 4         /* receive buffer consumed: id, len, extra: num_buffers (0: a continuation) */
#define MNET_DRV_EV_KICK 5            /* kick decided: id = avail idx published */
#define MNET_DRV_EV_NO_KICK 6         /* kick suppressed by the device: id = avail idx published */
struct mnet_drv_event {
    uint16_t kind;
    uint16_t id;
    uint32_t len;
    uint32_t extra;
};
struct mnet_drv_events {
    uint32_t capacity, count, lost;
    struct mnet_drv_event *events;
};

struct mnet_drvq {
    /* the ring areas (shared with the device) */
    uint8_t *desc;
    uint16_t *avail;
    uint8_t *used;
    uint64_t desc_len, avail_len, used_len;
    uint32_t size;
    uint32_t event_idx;
    /* private bookkeeping, one entry per descriptor (every buffer of the
       driver's rings is one descriptor, so a head is a buffer) */
    uint16_t *free_stack;       /* the top is free_stack[num_free - 1] */
    uint8_t *in_flight;         /* 1 while the device holds the buffer */
    uint32_t *capacity;         /* per head: device-writable bytes */
    uint32_t *token;            /* per head: the caller's token */
    uint32_t *reap_token;       /* scratch for one reap: size entries each */
    uint32_t *reap_written;
    uint32_t num_free;
    uint16_t avail_idx;         /* next avail slot to fill */
    uint16_t published;         /* avail idx as last stored */
    uint16_t kick_old;          /* avail idx at the last kick decision */
    uint16_t last_used;         /* used idx reaped up to */
    uint32_t len_clamped;
    int32_t error;
    uint32_t err[4];
    struct mnet_drv_events *ev;  /* NULL: no trace */
};

/* The driver's TX ring: one descriptor per frame, into fixed pool slots. */
struct mnet_drv_tx {
    struct mnet_drvq *q;
    uint8_t *pool;
    uint64_t pool_gpa, pool_len;
    const uint32_t *slot_off;   /* pool offset and length of each slot */
    const uint32_t *slot_len;
    uint32_t nslots;
    uint32_t small;             /* slots from here on are big (GSO) ones */
    uint32_t split_big;         /* reaped big slots go back to big_free */
    uint32_t max_frame;
    uint16_t *small_free;       /* stacks of free slots */
    uint16_t *big_free;
    uint32_t n_small_free, n_big_free;
};

/* Per frame of a mnet_drv_tx_put burst (NULL: all MNET_DRV_TX_PLAIN). */
#define MNET_DRV_TX_PLAIN 0
#define MNET_DRV_TX_BAD_CSUM 1        /* refused once it has a slot: bad checksum offsets */
#define MNET_DRV_TX_SW_CSUM 2         /* its checksum was finished in software: count it */

/* What one mnet_drv_tx_put call did (it zeroes them first). */
struct mnet_drv_tx_counts {
    uint64_t bytes;
    uint32_t taken, oversize, runt, bad_csum, sw_csum;
    uint32_t dropped;           /* oversize + runt + bad_csum */
};

/* The driver's RX ring: every descriptor one pool buffer, slot == token. */
struct mnet_drv_rx {
    struct mnet_drvq *q;
    uint8_t *pool;
    uint64_t pool_gpa, pool_len;
    uint32_t buf_size;
    uint32_t mrg;
    uint16_t *reap_head;        /* scratch for one poll: size entries */
    /* a mergeable frame whose first buffers came and others are missing */
    uint8_t *partial;
    uint64_t partial_cap, partial_len;
    uint32_t partial_missing;
    uint8_t partial_hdr[12];
};

/* Where mnet_drv_rx_poll puts the frames it finished. */
struct mnet_drv_rx_out {
    uint8_t *buf;               /* frame bytes, back to back */
    uint64_t cap, used;
    uint32_t *len;              /* per frame */
    uint8_t *hdr;               /* per frame: the 12-byte virtio_net_hdr */
    uint32_t max_frames, frames;
    uint32_t buffers, short_buffer, bad_num_buffers;
    uint32_t kick;
};

int mnet_drvq_start(struct mnet_drvq *q, uint16_t start_idx);
int mnet_drvq_publish(struct mnet_drvq *q);
int mnet_drvq_should_kick(struct mnet_drvq *q);
int mnet_drvq_flush(struct mnet_drvq *q);       /* publish, then should_kick */
int64_t mnet_drvq_pending(struct mnet_drvq *q);
int64_t mnet_drvq_reap(struct mnet_drvq *q, uint32_t *token, uint32_t *written, uint32_t max);
int mnet_drvq_enable_irq(struct mnet_drvq *q);
int mnet_drvq_disable_irq(struct mnet_drvq *q);

/* `frames`, `hdrs` and `kinds` are char * so that Python bytes pass as they are. */
int64_t mnet_drv_tx_put(struct mnet_drv_tx *tx, const char *frames, uint64_t frames_len, const uint32_t *lens,
                        const char *hdrs, const char *kinds, uint32_t start, uint32_t n,
                        struct mnet_drv_tx_counts *counts);
int64_t mnet_drv_tx_put_one(struct mnet_drv_tx *tx, uint32_t big, const uint8_t *frame, uint32_t len,
                            const uint8_t *hdr);
int64_t mnet_drv_tx_reap(struct mnet_drv_tx *tx);
int mnet_drv_tx_lend_big(struct mnet_drv_tx *tx);

int mnet_drv_rx_fill(struct mnet_drv_rx *rx);
int mnet_drv_rx_poll(struct mnet_drv_rx *rx, struct mnet_drv_rx_out *out);

#endif
