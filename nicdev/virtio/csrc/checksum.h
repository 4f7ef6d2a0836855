#ifndef MNET_CHECKSUM_H
#define MNET_CHECKSUM_H
#include "kernels.h"

uint64_t mnet_ones_complement_sum(const char *data, size_t len, uint64_t initial);

#endif
