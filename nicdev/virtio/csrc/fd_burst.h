#ifndef MNET_FD_BURST_H
#define MNET_FD_BURST_H
#include "kernels.h"

uint32_t mnet_fd_read_burst(int fd, uint8_t *pool, uint32_t slot_size, uint32_t max_frames, uint32_t *lengths,
                            int *err);
uint32_t mnet_fd_write_burst(int fd, const char *buf, const uint32_t *lengths, uint32_t n, int *errs);
uint32_t mnet_dgram_recv_burst(int fd, uint8_t *pool, uint32_t slot_size, uint32_t max_frames, uint32_t *lengths,
                               uint8_t *from_remote, const char *remote, uint32_t remote_len, int *err);
uint32_t mnet_dgram_send_burst(int fd, const char *buf, const uint32_t *lengths, uint32_t n, const char *remote,
                               uint32_t remote_len, int *errs);

#endif
