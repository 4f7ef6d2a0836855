/* The device half of a split virtqueue in bursts: the C twin of
 * nicdev/virtio/device_queue.py (DeviceQueue.pop/_walk/push_many and the
 * notification calls) and of the frame loops of nicdev/net/device_datapath.py.
 *
 * The Python queue is the readable reference: every rule here is one of its
 * rules, checked in the same order, so that a hostile ring gives the same
 * result on both paths (the differential tests require it). Nothing read
 * from guest memory is trusted: every address is checked against the
 * region table before it is touched, each descriptor is copied once before
 * it is used, and a chain walk ends after at most queue-size steps per table.
 *
 * Errors are not formatted here: a kernel fills a `struct dk_error` with a
 * code and the numbers the message needs, and the Python side words it
 * exactly as DeviceQueue does.
 */
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "device_burst.h"

#define DESC_F_NEXT 1u
#define DESC_F_WRITE 2u
#define DESC_F_INDIRECT 4u
#define AVAIL_F_NO_INTERRUPT 1u
#define USED_F_NO_NOTIFY 1u
#define MAX_CHAIN_BYTES 0xFFFFFFFFull

struct desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };

/* -- guest memory (kernels.h) and ring fields ------------------------------- */

static inline uint16_t ld16(const uint8_t *p) { return mnet_load_acquire16((const uint16_t *)p); }
static inline void st16(uint8_t *p, uint16_t v) { mnet_store_release16((uint16_t *)p, v); }

static uint32_t avail_bytes(const struct dk_ring *q) { return 4 + 2 * q->size + (q->event_idx ? 2 : 0); }
static uint32_t used_bytes(const struct dk_ring *q) { return 4 + 8 * q->size + (q->event_idx ? 2 : 0); }

static int fail(struct dk_error *e, int code, uint32_t head, uint32_t a, uint32_t b, uint64_t addr, uint64_t len)
{
    e->code = code;
    e->head = head;
    e->a = a;
    e->b = b;
    e->addr = addr;
    e->len = len;
    return -1;
}

static uint8_t *avail_ring(const struct dk_ring *q, const struct mnet_mem *m, struct dk_error *e)
{
    uint8_t *p = mnet_host_span(m, q->avail_gpa, avail_bytes(q));
    if (p == NULL)
        fail(e, DK_ERR_AVAIL_MEM, 0, 0, 0, q->avail_gpa, avail_bytes(q));
    return p;
}

static uint8_t *used_ring(const struct dk_ring *q, const struct mnet_mem *m, struct dk_error *e)
{
    uint8_t *p = mnet_host_span(m, q->used_gpa, used_bytes(q));
    if (p == NULL)
        fail(e, DK_ERR_USED_MEM, 0, 0, 0, q->used_gpa, used_bytes(q));
    return p;
}

/* Entries made available and not popped; -1 if the index ran too far ahead. */
static int pending(const struct dk_ring *q, struct dk_state *s, const uint8_t *avail, struct dk_error *e)
{
    uint16_t idx = ld16(avail + 2);
    uint32_t ahead = (uint16_t)(idx - (uint16_t)s->next_avail);
    if (ahead > q->size)
        return fail(e, DK_ERR_AHEAD, 0, idx, ahead, 0, 0);
    return (int)ahead;
}

static uint16_t current_used(struct dk_state *s, const uint8_t *used)
{
    if (s->used_idx < 0)
        s->used_idx = ld16(used + 2);
    return (uint16_t)s->used_idx;
}

/* -- the optional trace (tracing off: each call site tests one NULL) -------- */

static struct dk_event *trace(struct dk_events *ev, uint16_t kind, uint16_t head, uint32_t len)
{
    if (ev->count == ev->capacity) {
        ev->lost++;
        return NULL;
    }
    struct dk_event *x = &ev->events[ev->count++];
    memset(x, 0, sizeof *x);
    x->kind = kind;
    x->head = head;
    x->len = len;
    return x;
}

/* -- the chain walk: DeviceQueue._walk --------------------------------------- */

/* What the walk does with each non-empty segment (already checked). */
struct sink {
    uint8_t *gather;        /* TX: readable bytes go here, up to gather_room */
    uint64_t gather_room;
    struct dk_seg *segs;    /* RX: writable segments go here while seg_need > 0 */
    uint32_t seg_room;
    uint64_t seg_need;
    uint32_t nsegs;
    struct dk_events *ev;   /* the trace: each descriptor walked, or NULL */
};

struct chain {
    uint64_t readable_len, writable_len;
    uint32_t desc_count;
    int indirect;
};

static void trace_desc(struct dk_events *ev, const struct desc *d)
{
    if (ev->desc_count == ev->desc_capacity) {
        ev->lost++;
        return;
    }
    struct dk_desc *x = &ev->descs[ev->desc_count++];
    x->addr = d->addr;
    x->len = d->len;
    x->flags = d->flags;
}

/* A popped chain, its descriptors the ones traced since `first_desc`. */
static void trace_chain(struct dk_events *ev, uint16_t kind, uint16_t head, uint32_t len, const struct chain *c,
                        uint32_t first_desc)
{
    struct dk_event *x = trace(ev, kind, head, len);
    if (x) {
        x->total = (uint32_t)(c->readable_len + c->writable_len);
        x->first_desc = first_desc;
        x->ndescs = ev->desc_count - first_desc;
        x->indirect = (uint8_t)c->indirect;
    }
}

/* Forget what was traced since a mark: a chain that is not popped after all. */
static void trace_rewind(struct dk_events *ev, uint32_t count, uint32_t desc_count)
{
    ev->count = count;
    ev->desc_count = desc_count;
}

static void take_readable(const struct mnet_mem *m, struct sink *k, uint64_t gpa, uint32_t len, uint64_t at)
{
    if (k->gather && at < k->gather_room) {
        uint64_t n = k->gather_room - at < len ? k->gather_room - at : len;
        mnet_copy(m, gpa, k->gather + at, n, 0);
    }
}

static void take_writable(struct sink *k, uint64_t gpa, uint32_t len)
{
    if (k->segs && k->seg_need && k->nsegs < k->seg_room) {
        k->segs[k->nsegs].gpa = gpa;
        k->segs[k->nsegs].len = len;
        k->nsegs++;
        k->seg_need = len < k->seg_need ? k->seg_need - len : 0;
    }
}

static int walk(const struct dk_ring *q, const struct mnet_mem *m, const uint8_t *desc_table, uint16_t head,
                uint8_t *scratch, struct sink *k, struct chain *c, struct dk_error *e)
{
    const uint8_t *table = desc_table;
    uint32_t entries = q->size, steps = 0, idx = head;
    int seen_write = 0;
    memset(c, 0, sizeof *c);
    for (;;) {
        if (++steps > entries)
            return fail(e, DK_ERR_LOOP, head, c->indirect, entries, 0, 0);
        struct desc d;
        memcpy(&d, table + (uint64_t)idx * 16, sizeof d);   /* once: the driver may rewrite it */
        c->desc_count++;
        if (k->ev)
            trace_desc(k->ev, &d);
        if (d.flags & DESC_F_INDIRECT) {
            if (c->indirect)
                return fail(e, DK_ERR_NESTED_INDIRECT, head, 0, 0, 0, 0);
            if (!q->indirect)
                return fail(e, DK_ERR_INDIRECT_NOT_NEGOTIATED, head, 0, 0, 0, 0);
            if (d.flags & DESC_F_NEXT)
                return fail(e, DK_ERR_INDIRECT_AND_NEXT, head, idx, 0, 0, 0);
            if (d.len == 0 || d.len % 16 || d.len > 16 * q->size)
                return fail(e, DK_ERR_INDIRECT_LENGTH, head, 0, 0, 0, d.len);
            /* One copy of the whole table, as the Python queue makes. */
            if (mnet_copy(m, d.addr, scratch, d.len, 0))
                return fail(e, DK_ERR_INDIRECT_MEM, head, 0, 0, d.addr, d.len);
            table = scratch;
            c->indirect = 1;
            entries = d.len / 16;
            steps = 0;
            idx = 0;
            continue;
        }
        if (d.flags & DESC_F_WRITE) {
            seen_write = 1;
            if (d.len) {
                if (!mnet_range_ok(m, d.addr, d.len))
                    return fail(e, DK_ERR_BUFFER_MEM, head, 0, 0, d.addr, d.len);
                take_writable(k, d.addr, d.len);
                c->writable_len += d.len;
            }
        } else {
            if (seen_write)
                return fail(e, DK_ERR_READABLE_AFTER_WRITABLE, head, 0, 0, 0, 0);
            if (d.len) {
                if (!mnet_range_ok(m, d.addr, d.len))
                    return fail(e, DK_ERR_BUFFER_MEM, head, 0, 0, d.addr, d.len);
                take_readable(m, k, d.addr, d.len, c->readable_len);
                c->readable_len += d.len;
            }
        }
        if (c->readable_len + c->writable_len > MAX_CHAIN_BYTES)
            return fail(e, DK_ERR_TOTAL_LENGTH, head, 0, 0, 0, c->readable_len + c->writable_len);
        if (!(d.flags & DESC_F_NEXT))
            return 0;
        if (d.next >= entries)
            return fail(e, DK_ERR_NEXT_RANGE, head, idx, d.next, 0, entries);
        idx = d.next;
    }
}

/* DeviceQueue.pop, up to the walk: the head of the next entry, or -1 with
 * `*empty` set when nothing is pending, or -1 on an error. */
static int next_head(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m, const uint8_t *avail,
                     const uint8_t **desc_table, int *empty, struct dk_error *e)
{
    int n = pending(q, s, avail, e);
    *empty = n == 0;
    if (n <= 0)
        return -1;
    uint16_t head = ld16(avail + 4 + 2 * ((uint16_t)s->next_avail & (q->size - 1)));
    if (head >= q->size)
        return fail(e, DK_ERR_HEAD_RANGE, head, (uint16_t)s->next_avail, 0, 0, 0);
    if (*desc_table == NULL) {
        *desc_table = mnet_host_span(m, q->desc_gpa, 16ull * q->size);
        if (*desc_table == NULL)
            return fail(e, DK_ERR_DESC_MEM, head, 0, 0, q->desc_gpa, 16ull * q->size);
    }
    return head;
}

/* DeviceQueue.push_many: the used elements, then one used idx store. */
static int push_used(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m,
                     const struct dk_used *elems, uint32_t n, struct dk_error *e, struct dk_events *ev)
{
    if (n == 0)
        return 0;
    uint8_t *used = used_ring(q, m, e);
    if (used == NULL)
        return -1;
    uint16_t idx = current_used(s, used);
    for (uint32_t i = 0; i < n; i++) {
        memcpy(used + 4 + 8 * (idx & (q->size - 1)), &elems[i], 8);
        idx++;
    }
    st16(used + 2, idx);    /* release: the elements are visible first */
    s->used_idx = idx;
    if (ev)
        for (uint32_t i = 0; i < n; i++)
            trace(ev, DK_EV_USED, (uint16_t)elems[i].id, elems[i].len);
    return 0;
}

/* -- TX: chains in, frames gathered into the pool, buffers back used ---------- */

static uint8_t tx_status(const struct dk_tx_params *p, const struct chain *c, const uint8_t *data)
{
    uint64_t n = c->readable_len;
    if (n < p->hdr_len + 14u)
        return n >= p->hdr_len ? DK_TX_SHORT : DK_TX_NO_HEADER;
    if (!p->enabled)
        return DK_TX_DISABLED;
    uint64_t size = n - p->hdr_len;
    int too_big = size > p->max_frame;
    if (too_big && (!p->gso || size > p->max_gso_frame))
        return DK_TX_TOO_BIG;
    if (n > p->slot)
        return DK_TX_TOO_BIG;           /* cannot happen: a slot holds the largest frame above */
    if (data[1] || data[0] & 1)         /* GSO or NEEDS_CSUM: the Python side checks the header */
        return DK_TX_OFFLOAD;
    return too_big ? DK_TX_TOO_BIG : DK_TX_OK;
}

int dk_tx_burst(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m,
                const struct dk_tx_params *p, struct dk_tx_work *w, uint32_t limit,
                struct dk_error *e, struct dk_events *ev)
{
    uint32_t taken = 0;
    uint64_t cursor = 0;
    const uint8_t *desc_table = NULL;
    e->code = DK_OK;
    w->frames_ok = 0;
    w->bytes_ok = 0;
    uint8_t *avail = avail_ring(q, m, e);
    if (avail == NULL)
        return 0;
    if (limit > w->capacity)
        limit = w->capacity;
    while (taken < limit && w->pool_size - cursor >= p->slot) {
        int empty;
        int head = next_head(q, s, m, avail, &desc_table, &empty, e);
        if (head < 0)
            break;
        struct sink k = {.gather = w->pool + cursor, .gather_room = p->slot, .ev = ev};
        struct chain c;
        uint32_t first_desc = ev ? ev->desc_count : 0;
        if (walk(q, m, desc_table, (uint16_t)head, w->scratch, &k, &c, e)) {
            if (ev)
                trace_rewind(ev, ev->count, first_desc);
            break;
        }
        s->next_avail = (uint16_t)(s->next_avail + 1);
        uint8_t status = tx_status(p, &c, w->pool + cursor);
        w->status[taken] = status;
        w->offset[taken] = (uint32_t)cursor;
        w->len[taken] = (uint32_t)c.readable_len;
        w->used[taken].id = (uint32_t)head;
        w->used[taken].len = 0;
        taken++;
        if (status == DK_TX_OK) {
            w->frames_ok++;
            w->bytes_ok += c.readable_len - p->hdr_len;
        }
        if (status == DK_TX_OK || status == DK_TX_OFFLOAD)
            cursor += c.readable_len;
        if (ev)
            trace_chain(ev, DK_EV_TX_CHAIN, (uint16_t)head, (uint32_t)c.readable_len, &c, first_desc);
    }
    if (e->code == DK_OK)       /* else like pop() raising: the chains so far are not returned */
        push_used(q, s, m, w->used, taken, e, ev);
    return (int)taken;
}

/* -- RX: one frame scattered over one chain, or several with MRG_RXBUF ------- */

/* Copy bytes [from, from+n) of header-then-frame to guest address gpa. */
static void put_bytes(const struct mnet_mem *m, uint64_t gpa, uint64_t from, uint64_t n,
                      uint8_t *hdr, uint32_t hdr_len, const uint8_t *frame)
{
    if (from < hdr_len) {
        uint64_t h = hdr_len - from < n ? hdr_len - from : n;
        mnet_copy(m, gpa, hdr + from, h, 1);
        gpa += h;
        from += h;
        n -= h;
    }
    if (n)
        mnet_copy(m, gpa, (uint8_t *)frame + (from - hdr_len), n, 1);
}

/* Pop the chains for one frame and write it into them; the used elements
 * go to used[0..], at most used_room of them. Returns the chains used, 0
 * when they cannot hold the frame (then nothing was popped or written), -1
 * on an error (the chains walked before it stay popped, as in Python). */
static int rx_place(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m, const struct dk_rx_params *p,
                    struct dk_rx_work *w, const uint8_t *avail, const uint8_t **desc_table, uint8_t *hdr,
                    const uint8_t *frame, uint32_t frame_len, struct dk_used *used, uint32_t used_room,
                    struct dk_error *e, struct dk_events *ev)
{
    uint64_t need = (uint64_t)p->hdr_len + frame_len;
    uint64_t room = 0;
    uint32_t nchains = 0;
    int32_t start = s->next_avail;
    struct sink k = {.segs = w->segs, .seg_room = w->seg_room, .seg_need = need, .ev = ev};
    uint32_t ev_start = ev ? ev->count : 0, desc_start = ev ? ev->desc_count : 0;
    while (room < need && nchains < used_room) {
        int empty;
        int head = next_head(q, s, m, avail, desc_table, &empty, e);
        if (head < 0) {
            if (empty)
                break;
            return -1;
        }
        struct chain c;
        w->chains[nchains].seg_first = k.nsegs;
        uint32_t first_desc = ev ? ev->desc_count : 0;
        if (walk(q, m, *desc_table, (uint16_t)head, w->scratch, &k, &c, e)) {
            if (ev)
                trace_rewind(ev, ev->count, first_desc);
            return -1;
        }
        s->next_avail = (uint16_t)(s->next_avail + 1);
        if (ev)
            trace_chain(ev, DK_EV_RX_POP, (uint16_t)head, (uint32_t)c.writable_len, &c, first_desc);
        w->chains[nchains].room = c.writable_len;
        used[nchains].id = (uint32_t)head;
        nchains++;
        room += c.writable_len;
        if (!p->mrg_rxbuf)
            break;      /* without MRG_RXBUF a frame must fit in one chain */
    }
    if (room < need || k.seg_need) {
        /* Nothing written: the chains go back to the ring, and the Python
         * data path pops them again and holds them (its reference rules). */
        s->next_avail = start;
        if (ev)
            trace_rewind(ev, ev_start, desc_start);
        return 0;
    }
    if (p->hdr_len == 12) {
        uint16_t num_buffers = (uint16_t)nchains;
        memcpy(hdr + 10, &num_buffers, 2);
    }
    uint64_t pos = 0;
    for (uint32_t i = 0; i < nchains; i++) {
        uint64_t n = need - pos < w->chains[i].room ? need - pos : w->chains[i].room;
        used[i].len = (uint32_t)n;
        for (uint32_t g = w->chains[i].seg_first; n; g++) {
            uint64_t piece = w->segs[g].len < n ? w->segs[g].len : n;
            put_bytes(m, w->segs[g].gpa, pos, piece, hdr, p->hdr_len, frame);
            pos += piece;
            n -= piece;
        }
        if (ev)
            trace(ev, DK_EV_RX_CHAIN, (uint16_t)used[i].id, used[i].len);
    }
    return (int)nchains;
}

int dk_rx_put(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m, const struct dk_rx_params *p,
              struct dk_rx_work *w, uint8_t *hdr, const uint8_t *frame, uint32_t frame_len,
              struct dk_error *e, struct dk_events *ev)
{
    const uint8_t *desc_table = NULL;
    e->code = DK_OK;
    uint8_t *avail = avail_ring(q, m, e);
    if (avail == NULL)
        return -1;
    int n = rx_place(q, s, m, p, w, avail, &desc_table, hdr, frame, frame_len, w->used, w->chain_room, e, ev);
    if (n > 0 && push_used(q, s, m, w->used, (uint32_t)n, e, ev))
        return -1;
    return n;
}

/* Frames of a TX pool (another queue's burst, all DK_TX_OK, or frames a
 * caller laid out the same way) into this receive queue: each as dk_rx_put
 * would, one used idx store for them all. Every frame gets `hdr`, or with
 * `frame_hdrs` its own header (hdr_len bytes at frame_hdrs + i * hdr_len for
 * frame i of src, copied into `hdr` before it is written: offload metadata
 * carried through). Stops before the first frame longer than max_frame or
 * without room; returns the frames written, their bytes in *bytes. On an
 * error the frames before it are returned used first (each dk_rx_put would
 * have). */
int dk_rx_burst(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m, const struct dk_rx_params *p,
                struct dk_rx_work *w, uint8_t *hdr, const uint8_t *frame_hdrs, const struct dk_tx_work *src,
                uint32_t src_hdr_len, uint32_t first, uint32_t count, uint32_t max_frame, uint64_t *bytes,
                struct dk_error *e, struct dk_events *ev)
{
    const uint8_t *desc_table = NULL;
    uint32_t done = 0, used = 0;
    *bytes = 0;
    w->done = 0;
    e->code = DK_OK;
    uint8_t *avail = avail_ring(q, m, e);
    if (avail == NULL)
        return -1;
    struct dk_error unused_ring;
    if (used_ring(q, m, &unused_ring) == NULL && count > 1)
        count = 1;      /* the first frame's push fails, as it would in Python */
    for (; done < count; done++) {
        uint32_t i = first + done;
        uint32_t len = src->len[i] - src_hdr_len;
        if (len > max_frame)
            break;
        if (frame_hdrs)
            memcpy(hdr, frame_hdrs + (uint64_t)i * p->hdr_len, p->hdr_len);
        int n = rx_place(q, s, m, p, w, avail, &desc_table, hdr, src->pool + src->offset[i] + src_hdr_len, len,
                         w->used + used, w->chain_room - used, e, ev);
        if (n <= 0) {
            if (n < 0) {
                struct dk_error later;
                w->done = done;
                push_used(q, s, m, w->used, used, &later, ev);
                return -1;
            }
            break;
        }
        used += (uint32_t)n;
        *bytes += len;
    }
    if (push_used(q, s, m, w->used, used, e, ev))
        return -1;
    return (int)done;
}

/* Runs of frames of a TX pool with the same destination and source MACs:
 * the switch learns and looks up once per run. Returns the runs written. */
int dk_mac_runs(const struct dk_tx_work *src, uint32_t hdr_len, uint32_t count, struct dk_mac_run *runs,
                uint32_t room)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *macs = src->pool + src->offset[i] + hdr_len;
        if (n && memcmp(runs[n - 1].macs, macs, 12) == 0) {
            runs[n - 1].count++;
            continue;
        }
        if (n == room)
            return -1;
        memcpy(runs[n].macs, macs, 12);
        runs[n].first = i;
        runs[n].count = 1;
        n++;
    }
    return (int)n;
}

/* -- notifications: DeviceQueue.needs_notification / enable_notifications ----- */

int dk_needs_notification(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m, struct dk_error *e)
{
    e->code = DK_OK;
    uint8_t *avail = avail_ring(q, m, e);
    if (avail == NULL)
        return -1;
    if (!q->event_idx)
        return !(ld16(avail) & AVAIL_F_NO_INTERRUPT);
    mnet_full_barrier();    /* our used idx store must be visible before we read used_event */
    uint8_t *used = used_ring(q, m, e);
    if (used == NULL)
        return -1;
    uint16_t now = current_used(s, used);
    int32_t old = s->signalled_used;
    s->signalled_used = now;
    if (old < 0)
        return 1;
    uint16_t event = ld16(avail + 4 + 2 * q->size);
    return (uint16_t)(now - event - 1) < (uint16_t)(now - (uint16_t)old);
}

int dk_enable_notifications(const struct dk_ring *q, struct dk_state *s, const struct mnet_mem *m, struct dk_error *e)
{
    e->code = DK_OK;
    uint8_t *used = used_ring(q, m, e);
    if (used == NULL)
        return -1;
    if (q->event_idx)
        st16(used + 4 + 8 * q->size, (uint16_t)s->next_avail);
    else
        st16(used, ld16(used) & (uint16_t)~USED_F_NO_NOTIFY);
    mnet_full_barrier();    /* the enable must be visible before we re-read avail idx */
    uint8_t *avail = avail_ring(q, m, e);
    if (avail == NULL)
        return -1;
    int n = pending(q, s, avail, e);
    return n < 0 ? -1 : n > 0;
}
