/* The driver half of a split virtqueue in bursts: the C twin of
 * nicdev/virtio/driver_queue.py (DriverQueue, the readable reference) and of
 * the ring loops of the stack's virtio-net driver.
 *
 * The rules are the reference's, to the letter (the differential tests hold
 * both to it): descriptors come off a stack of free ones in the same order,
 * one avail idx store publishes a burst, the kick follows EVENT_IDX or
 * NO_NOTIFY, and a used entry is checked before it is believed: a used idx
 * running ahead of what was published, or an id that is not a buffer in
 * flight (never given out, or completed already), breaks the queue; a length
 * above the buffer is clamped and counted.
 *
 * Memory: the ring areas and the pool are the driver's own, given with their
 * lengths; the device may write them at any time, so a field it owns is
 * loaded once into a local and checked. Nothing here follows an address the
 * device wrote: buffers are found through our own private records. */
#include <string.h>

#include "driver_burst.h"

#define DESC_SIZE 16u
#define F_WRITE 2u
#define AVAIL_F_NO_INTERRUPT 1u
#define USED_F_NO_NOTIFY 1u
#define HDR_LEN 12u
#define ETH_HEADER_LEN 14u
#define MAX_QUEUE_SIZE 32768u

static inline uint16_t load16(const void *p)
{
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}

static inline void store16(void *p, uint16_t v)
{
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}

/* Our idx store must be visible before we read the other side's field. */
static inline void full_barrier(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static inline int need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old_idx);
}

/* One trace record, if the queue is traced (the caller tests q->ev first). */
static void trace(struct mnet_drvq *q, uint16_t kind, uint16_t id, uint32_t len, uint32_t extra)
{
    struct mnet_drv_events *ev = q->ev;
    if (ev->count >= ev->capacity) {
        ev->lost++;
        return;
    }
    struct mnet_drv_event *x = &ev->events[ev->count++];
    x->kind = kind;
    x->id = id;
    x->len = len;
    x->extra = extra;
}

static int64_t fail(struct mnet_drvq *q, int32_t code, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    if (q->error == MNET_DRV_OK) {
        q->error = code;
        q->err[0] = a;
        q->err[1] = b;
        q->err[2] = c;
        q->err[3] = d;
    }
    return MNET_DRV_BROKEN;
}

static void write_desc(struct mnet_drvq *q, uint32_t d, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    uint8_t *p = q->desc + (uint64_t)d * DESC_SIZE;
    memcpy(p, &addr, 8);
    memcpy(p + 8, &len, 4);
    memcpy(p + 12, &flags, 2);
    memcpy(p + 14, &next, 2);
}

/* Put a buffer whose descriptor is written into the avail ring (unpublished). */
static void offer(struct mnet_drvq *q, uint16_t head, uint32_t capacity, uint32_t token)
{
    q->in_flight[head] = 1;
    q->capacity[head] = capacity;
    q->token[head] = token;
    q->avail[2 + (q->avail_idx & (q->size - 1))] = head;
    q->avail_idx++;
}

/* A one-descriptor buffer at `gpa`: the common case of both rings. */
static uint16_t add_one(struct mnet_drvq *q, uint64_t gpa, uint32_t len, uint16_t flags, uint32_t capacity,
                        uint32_t token)
{
    uint16_t d = q->free_stack[--q->num_free];
    write_desc(q, d, gpa, len, flags, 0);
    offer(q, d, capacity, token);
    if (q->ev) {
        if (flags & F_WRITE)
            trace(q, MNET_DRV_EV_RX_POST, d, len, 0);
        else
            trace(q, MNET_DRV_EV_TX_ADD, d, len, 1);
    }
    return d;
}

int mnet_drvq_start(struct mnet_drvq *q, uint16_t start_idx)
{
    uint32_t size = q->size, extra = q->event_idx ? 2 : 0;
    if (size == 0 || size > MAX_QUEUE_SIZE || (size & (size - 1)))
        return MNET_DRV_BAD_ARGS;
    if (q->desc_len < (uint64_t)DESC_SIZE * size || q->avail_len < 4 + 2ull * size + extra
        || q->used_len < 4 + 8ull * size + extra)
        return MNET_DRV_BAD_ARGS;
    for (uint32_t i = 0; i < size; i++) {
        q->free_stack[i] = (uint16_t)(size - 1 - i);    /* pops 0, 1, 2, ... */
        q->in_flight[i] = 0;
        q->capacity[i] = 0;
        q->token[i] = MNET_DRV_NO_TOKEN;
    }
    q->num_free = size;
    q->avail_idx = q->published = q->kick_old = q->last_used = start_idx;
    q->len_clamped = 0;
    q->error = MNET_DRV_OK;
    memset(q->err, 0, sizeof q->err);
    return 0;
}

int mnet_drvq_publish(struct mnet_drvq *q)
{
    if (q->error != MNET_DRV_OK)
        return MNET_DRV_BROKEN;
    uint16_t added = (uint16_t)(q->avail_idx - q->published);
    if (added) {
        store16(&q->avail[1], q->avail_idx);
        q->published = q->avail_idx;
    }
    return added;
}

int mnet_drvq_should_kick(struct mnet_drvq *q)
{
    if (q->error != MNET_DRV_OK)
        return MNET_DRV_BROKEN;
    uint16_t new_idx = q->published, old_idx = q->kick_old;
    q->kick_old = new_idx;
    if (new_idx == old_idx)
        return 0;
    full_barrier();
    int kick;
    if (q->event_idx)
        kick = need_event(load16(q->used + 4 + 8ull * q->size), new_idx, old_idx);
    else
        kick = !(load16(q->used) & USED_F_NO_NOTIFY);
    if (q->ev)
        trace(q, kick ? MNET_DRV_EV_KICK : MNET_DRV_EV_NO_KICK, new_idx, 0, 0);
    return kick;
}

int mnet_drvq_flush(struct mnet_drvq *q)
{
    int rc = mnet_drvq_publish(q);
    return rc < 0 ? rc : mnet_drvq_should_kick(q);
}

static int64_t check_pending(struct mnet_drvq *q, uint16_t used_idx)
{
    uint16_t pending = (uint16_t)(used_idx - q->last_used);
    uint16_t offered = (uint16_t)(q->published - q->last_used);
    if (pending > offered)
        return fail(q, MNET_DRV_E_USED_AHEAD, used_idx, pending, q->last_used, offered);
    return pending;
}

int64_t mnet_drvq_pending(struct mnet_drvq *q)
{
    if (q->error != MNET_DRV_OK)
        return MNET_DRV_BROKEN;
    return check_pending(q, load16(q->used + 2));
}

/* Reap into token[]/written[]; with `heads` the caller gets each entry's id
 * too (and traces it: the RX poll, with num_buffers), else it is traced here. */
static int64_t reap(struct mnet_drvq *q, uint32_t *token, uint32_t *written, uint16_t *heads, uint32_t max)
{
    if (q->error != MNET_DRV_OK)
        return MNET_DRV_BROKEN;
    int64_t pending = check_pending(q, load16(q->used + 2));
    if (pending < 0)
        return pending;
    if ((uint64_t)pending > max)        /* cannot be: pending <= published buffers <= size */
        return MNET_DRV_BAD_ARGS;
    uint16_t idx = q->last_used;
    uint32_t mask = q->size - 1;
    for (int64_t k = 0; k < pending; k++, idx++) {
        const uint8_t *elem = q->used + 4 + 8ull * (idx & mask);
        uint32_t head, len;
        memcpy(&head, elem, 4);          /* read once: the device may rewrite it */
        memcpy(&len, elem + 4, 4);
        if (head >= q->size || !q->in_flight[head]) {
            q->last_used = idx;
            return fail(q, MNET_DRV_E_NOT_IN_FLIGHT, idx, head, 0, 0);
        }
        if (len > q->capacity[head]) {
            q->len_clamped++;
            len = q->capacity[head];
        }
        token[k] = q->token[head];
        written[k] = len;
        if (heads)
            heads[k] = (uint16_t)head;
        else if (q->ev)
            trace(q, MNET_DRV_EV_USED, (uint16_t)head, len, 0);
        q->free_stack[q->num_free++] = (uint16_t)head;
        q->in_flight[head] = 0;
    }
    q->last_used = idx;
    return pending;
}

int64_t mnet_drvq_reap(struct mnet_drvq *q, uint32_t *token, uint32_t *written, uint32_t max)
{
    return reap(q, token, written, NULL, max);
}

int mnet_drvq_enable_irq(struct mnet_drvq *q)
{
    if (q->error != MNET_DRV_OK)
        return MNET_DRV_BROKEN;
    if (q->event_idx)
        store16(&q->avail[2 + q->size], q->last_used);
    else
        store16(&q->avail[0], load16(&q->avail[0]) & (uint16_t)~AVAIL_F_NO_INTERRUPT);
    full_barrier();     /* the enable must be visible before we re-read used idx */
    int64_t pending = mnet_drvq_pending(q);
    return pending < 0 ? MNET_DRV_BROKEN : pending > 0;
}

int mnet_drvq_disable_irq(struct mnet_drvq *q)
{
    if (q->error != MNET_DRV_OK)
        return MNET_DRV_BROKEN;
    if (q->event_idx)
        store16(&q->avail[2 + q->size], (uint16_t)(q->last_used - 1));
    else
        store16(&q->avail[0], load16(&q->avail[0]) | AVAIL_F_NO_INTERRUPT);
    return 0;
}

/* -- TX -------------------------------------------------------------------------------- */

static int fits_slot(const struct mnet_drv_tx *tx, uint32_t slot, uint32_t len)
{
    return slot < tx->nslots && HDR_LEN + (uint64_t)len <= tx->slot_len[slot]
           && (uint64_t)tx->slot_off[slot] + tx->slot_len[slot] <= tx->pool_len;
}

/* Header and frame into `slot`, then a device-readable descriptor for them. */
static void put_slot(struct mnet_drv_tx *tx, uint32_t slot, const uint8_t *frame, uint32_t len, const uint8_t *hdr)
{
    uint8_t *dst = tx->pool + tx->slot_off[slot];
    if (hdr)
        memcpy(dst, hdr, HDR_LEN);
    else
        memset(dst, 0, HDR_LEN);
    memcpy(dst + HDR_LEN, frame, len);
    add_one(tx->q, tx->pool_gpa + tx->slot_off[slot], HDR_LEN + len, 0, 0, slot);
}

int64_t mnet_drv_tx_put(struct mnet_drv_tx *tx, const char *frames, uint64_t frames_len, const uint32_t *lens,
                        const char *hdrs, const char *kinds, uint32_t start, uint32_t n,
                        struct mnet_drv_tx_counts *counts)
{
    struct mnet_drvq *q = tx->q;
    memset(counts, 0, sizeof *counts);
    if (q->error != MNET_DRV_OK)
        return MNET_DRV_BROKEN;
    uint64_t off = 0;
    for (uint32_t i = 0; i < start; i++)
        off += lens[i];
    for (uint32_t i = start; i < n; i++) {
        uint32_t len = lens[i];
        if (off + len > frames_len)
            return MNET_DRV_BAD_ARGS;
        const uint8_t *frame = (const uint8_t *)frames + off;
        off += len;
        if (len > tx->max_frame) {
            counts->oversize++;
            counts->dropped++;
            continue;
        }
        if (len < ETH_HEADER_LEN) {
            counts->runt++;
            counts->dropped++;
            continue;
        }
        if (tx->n_small_free == 0)
            return i;           /* the caller publishes, reaps, maybe lends a big slot */
        uint8_t kind = kinds ? (uint8_t)kinds[i] : MNET_DRV_TX_PLAIN;
        if (kind == MNET_DRV_TX_BAD_CSUM) {
            counts->bad_csum++;
            counts->dropped++;
            continue;
        }
        uint32_t slot = tx->small_free[tx->n_small_free - 1];
        if (q->num_free == 0)
            return MNET_DRV_FULL;
        if (!fits_slot(tx, slot, len))
            return MNET_DRV_BAD_ARGS;
        tx->n_small_free--;
        put_slot(tx, slot, frame, len, hdrs ? (const uint8_t *)hdrs + (uint64_t)HDR_LEN * i : NULL);
        counts->taken++;
        counts->bytes += len;
        if (kind == MNET_DRV_TX_SW_CSUM)
            counts->sw_csum++;
    }
    return n;
}

int64_t mnet_drv_tx_put_one(struct mnet_drv_tx *tx, uint32_t big, const uint8_t *frame, uint32_t len,
                            const uint8_t *hdr)
{
    struct mnet_drvq *q = tx->q;
    if (q->error != MNET_DRV_OK)
        return MNET_DRV_BROKEN;
    uint16_t *stack = big ? tx->big_free : tx->small_free;
    uint32_t *count = big ? &tx->n_big_free : &tx->n_small_free;
    if (*count == 0 || q->num_free == 0)
        return MNET_DRV_FULL;
    uint32_t slot = stack[*count - 1];
    if (!fits_slot(tx, slot, len))
        return MNET_DRV_BAD_ARGS;
    (*count)--;
    put_slot(tx, slot, frame, len, hdr);
    return slot;
}

int64_t mnet_drv_tx_reap(struct mnet_drv_tx *tx)
{
    struct mnet_drvq *q = tx->q;
    int64_t n = mnet_drvq_reap(q, q->reap_token, q->reap_written, q->size);
    for (int64_t k = 0; k < n; k++) {
        uint32_t slot = q->reap_token[k];
        if (slot >= tx->nslots)
            continue;           /* a buffer added with no slot behind it */
        if (tx->split_big && slot >= tx->small) {
            if (tx->n_big_free < tx->nslots)
                tx->big_free[tx->n_big_free++] = (uint16_t)slot;
        } else if (tx->n_small_free < tx->nslots) {
            tx->small_free[tx->n_small_free++] = (uint16_t)slot;
        }
    }
    return n;
}

int mnet_drv_tx_lend_big(struct mnet_drv_tx *tx)
{
    if (tx->n_big_free == 0 || tx->n_small_free >= tx->nslots)
        return 0;
    tx->small_free[tx->n_small_free++] = tx->big_free[--tx->n_big_free];
    return 1;
}

/* -- RX -------------------------------------------------------------------------------- */

int mnet_drv_rx_fill(struct mnet_drv_rx *rx)
{
    struct mnet_drvq *q = rx->q;
    if (q->error != MNET_DRV_OK)
        return MNET_DRV_BROKEN;
    if ((uint64_t)q->size * rx->buf_size > rx->pool_len || q->num_free < q->size)
        return MNET_DRV_BAD_ARGS;
    for (uint32_t slot = 0; slot < q->size; slot++)
        add_one(q, rx->pool_gpa + (uint64_t)slot * rx->buf_size, rx->buf_size, F_WRITE, rx->buf_size, slot);
    return mnet_drvq_publish(q);
}

static int emit(struct mnet_drv_rx_out *out, const uint8_t *hdr, const uint8_t *a, uint64_t alen, const uint8_t *b,
                uint64_t blen)
{
    uint64_t len = alen + blen;
    if (out->frames >= out->max_frames || out->used + len > out->cap || len > 0xFFFFFFFFu)
        return MNET_DRV_BAD_ARGS;
    memcpy(out->hdr + (uint64_t)HDR_LEN * out->frames, hdr, HDR_LEN);
    memcpy(out->buf + out->used, a, alen);
    if (blen)
        memcpy(out->buf + out->used + alen, b, blen);
    out->len[out->frames++] = (uint32_t)len;
    out->used += len;
    return 0;
}

/* One used buffer (`written` <= buf_size: the reap clamps it). Returns 0, or
 * MNET_DRV_E_NUM_BUFFERS / a negative code to stop. */
static int take_buffer(struct mnet_drv_rx *rx, struct mnet_drv_rx_out *out, uint16_t head, const uint8_t *src,
                       uint32_t written)
{
    struct mnet_drvq *q = rx->q;
    if (rx->partial_missing) {          /* a continuation buffer of a mergeable frame */
        if (q->ev)
            trace(q, MNET_DRV_EV_RX_USED, head, written, 0);
        if (--rx->partial_missing)
            goto keep;
        int rc = emit(out, rx->partial_hdr, rx->partial, rx->partial_len, src, written);
        rx->partial_len = 0;
        return rc;
    }
    if (written < HDR_LEN) {
        if (q->ev)
            trace(q, MNET_DRV_EV_RX_USED, head, written, 0);
        out->short_buffer++;
        return 0;
    }
    uint8_t hdr[HDR_LEN];
    memcpy(hdr, src, HDR_LEN);          /* once: the device may rewrite the buffer */
    uint32_t nbuf = (uint32_t)hdr[10] | (uint32_t)hdr[11] << 8;
    if (q->ev)
        trace(q, MNET_DRV_EV_RX_USED, head, written, nbuf);
    if (rx->mrg && nbuf != 1) {
        if (nbuf == 0) {
            out->bad_num_buffers++;     /* device bug; treat as 1 */
        } else if (nbuf > rx->q->size) {
            rx->q->err[0] = nbuf;
            return MNET_DRV_E_NUM_BUFFERS;
        } else {
            memcpy(rx->partial_hdr, hdr, HDR_LEN);
            rx->partial_len = 0;
            rx->partial_missing = nbuf - 1;
            src += HDR_LEN;
            written -= HDR_LEN;
            goto keep;
        }
    }
    return emit(out, hdr, src + HDR_LEN, written - HDR_LEN, NULL, 0);
keep:
    if (rx->partial_len + written > rx->partial_cap)
        return MNET_DRV_BAD_ARGS;
    memcpy(rx->partial + rx->partial_len, src, written);
    rx->partial_len += written;
    return 0;
}

int mnet_drv_rx_poll(struct mnet_drv_rx *rx, struct mnet_drv_rx_out *out)
{
    struct mnet_drvq *q = rx->q;
    out->frames = 0;
    out->used = 0;
    out->buffers = out->short_buffer = out->bad_num_buffers = out->kick = 0;
    int64_t n = reap(q, q->reap_token, q->reap_written, rx->reap_head, q->size);
    if (n <= 0)
        return (int)n;
    out->buffers = (uint32_t)n;
    for (int64_t k = 0; k < n; k++) {
        uint32_t slot = q->reap_token[k];
        if (slot >= q->size)
            return MNET_DRV_BAD_ARGS;
        int rc = take_buffer(rx, out, rx->reap_head[k], rx->pool + (uint64_t)slot * rx->buf_size, q->reap_written[k]);
        if (rc)
            return rc;
    }
    for (int64_t k = 0; k < n; k++) {
        uint32_t slot = q->reap_token[k];
        add_one(q, rx->pool_gpa + (uint64_t)slot * rx->buf_size, rx->buf_size, F_WRITE, rx->buf_size, slot);
    }
    mnet_drvq_publish(q);
    out->kick = (uint32_t)mnet_drvq_should_kick(q);
    return 0;
}
