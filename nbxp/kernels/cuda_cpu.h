/*
 * cuda_cpu.h -- just enough CUDA to compile nbxp's kernels as plain C++ for the CPU.
 *
 * nbxp/kernels/cpu.py compiles a .cu file with the system C++ compiler and
 * `-include cuda_cpu.h`, so the very source a GPU runs is tested where there is no GPU.
 * The header supplies:
 *
 *   - the function qualifiers (__global__, __device__, __host__, __forceinline__,
 *     __restrict__, __launch_bounds__) as their C++ equivalents;
 *   - the launch built-ins gridDim, blockDim, blockIdx, threadIdx, as globals;
 *   - the C math library (sqrt/sqrtf, sin/sinf, ... as CUDA's device math has them).
 *
 * A launch is emulated by nbxp_cpu_launch_<kernel>() functions that cpu.py appends to the
 * source: they set gridDim/blockDim and call the kernel once for every (block, thread) of
 * the grid, in order, setting blockIdx/threadIdx before each call.  That is a faithful
 * emulation for kernels whose threads do not cooperate (no shared memory, no
 * __syncthreads, no atomics), which is all nbxp uses; the macros below make any of those a
 * compile error rather than a silent mis-emulation.
 */
#ifndef NBXP_CUDA_CPU_H
#define NBXP_CUDA_CPU_H

#include <math.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static_assert(false, "cuda_cpu.h: __shared__ is not emulated");
#define __syncthreads() static_assert(false, "cuda_cpu.h: __syncthreads is not emulated")

struct uint3 {
    unsigned int x, y, z;
};
typedef uint3 dim3;

static dim3 gridDim = {1, 1, 1};
static dim3 blockDim = {1, 1, 1};
static uint3 blockIdx = {0, 0, 0};
static uint3 threadIdx = {0, 0, 0};

/* Visit every (block, thread) of a grid x block launch, x fastest, as the blocks of a GPU
   would (in some order) run them; body() is the kernel call. */
template <class Body>
static void nbxp_cpu_each_thread(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                 Body body)
{
    gridDim.x = gx; gridDim.y = gy; gridDim.z = gz;
    blockDim.x = bx; blockDim.y = by; blockDim.z = bz;
    for (blockIdx.z = 0; blockIdx.z < gz; ++blockIdx.z)
        for (blockIdx.y = 0; blockIdx.y < gy; ++blockIdx.y)
            for (blockIdx.x = 0; blockIdx.x < gx; ++blockIdx.x)
                for (threadIdx.z = 0; threadIdx.z < bz; ++threadIdx.z)
                    for (threadIdx.y = 0; threadIdx.y < by; ++threadIdx.y)
                        for (threadIdx.x = 0; threadIdx.x < bx; ++threadIdx.x)
                            body();
}

#endif
