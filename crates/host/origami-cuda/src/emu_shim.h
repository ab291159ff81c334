// Host shim for the CPU emulation of kernels.cu in the unit tests (never used on a GPU): each
// kernel runs as a single thread of a single block, so its grid-stride loop visits every index.
#include <math.h>
#include <string.h>

#define __global__
#define __device__

struct EmuDim3 {
    unsigned int x, y, z;
};
static const EmuDim3 threadIdx = {0, 0, 0};
static const EmuDim3 blockIdx = {0, 0, 0};
static const EmuDim3 blockDim = {1, 1, 1};
static const EmuDim3 gridDim = {1, 1, 1};

static inline float __int_as_float(int v) {
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}
