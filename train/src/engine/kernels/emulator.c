/* The training step's kernels for the CPU emulator the tests run: see kernels.h. Each kernel
 * becomes `emulated_<name>(args, thread)`, one GPU thread's work; Rust loops over the threads. */
#include <math.h>
#include <stddef.h>
#define KERNEL(name) void emulated_##name(struct KernelArgs a, unsigned thread_index)
#define THREAD_INDEX(t, n)          \
    const int t = (int)thread_index; \
    if (t >= (n)) return
#define DEVICE static
#include "kernels.h"
