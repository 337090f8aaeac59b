// The training step's kernels for nvcc: see kernels.h.
#define KERNEL(name) extern "C" __global__ void name(struct KernelArgs a)
#define THREAD_INDEX(t, n)                                  \
    const int t = (int)(blockIdx.x * blockDim.x + threadIdx.x); \
    if (t >= (n)) return
#define DEVICE static __device__ __forceinline__
#include "kernels.h"
