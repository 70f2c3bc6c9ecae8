// A CPU stand-in for the CUDA runtime features loom's kernels use, for checking kernel logic on
// machines without a GPU: each CUDA thread of a block is one std::thread; blocks run one after
// another, so `static` variables serve as shared memory; __syncthreads is a block-wide barrier
// and warp shuffles meet at a per-warp barrier (all 32 lanes must take part, as in the kernels).
#pragma once
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};

namespace emu {
inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline uint64_t exchange[32][32];
inline std::vector<unsigned char> dynamic_smem;
inline std::mutex atomic_mutex;

inline int linear_thread() { return (int)thread_idx.x; }

template <typename T>
T warp_exchange(T v, int src_lane) {
    const int t = linear_thread(), warp = t / 32, lane = t % 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    exchange[warp][lane] = bits;
    warp_barriers[warp]->arrive_and_wait();
    uint64_t got = exchange[warp][src_lane & 31];
    warp_barriers[warp]->arrive_and_wait();
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}

template <typename... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*reinterpret_cast<std::remove_reference_t<A>*>(args[I])...);
}

template <typename... A>
void launch(void (*kernel)(A...), dim3 grid, dim3 block, size_t smem, void** args) {
    block_dim = block;
    grid_dim = grid;
    const unsigned n = block.x * block.y * block.z;
    dynamic_smem.assign(smem + 16, 0xcd);  // poisoned: kernels must write before they read
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                block_barrier = std::make_unique<std::barrier<>>(n);
                warp_barriers.clear();
                for (unsigned w = 0; w < (n + 31) / 32; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
                std::vector<std::thread> threads;
                threads.reserve(n);
                for (unsigned t = 0; t < n; ++t)
                    threads.emplace_back([=] {
                        block_idx = dim3{bx, by, bz};
                        thread_idx = dim3{t, 0, 0};
                        call(kernel, args, std::index_sequence_for<A...>{});
                        // a finished thread keeps arriving so that the rest of its block and warp can go on
                        block_barrier->arrive_and_drop();
                        warp_barriers[t / 32]->arrive_and_drop();
                    });
                for (auto& th : threads) th.join();
            }
}
}  // namespace emu

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(n)
#define __shared__ static
#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)
#define LOOM_DYNAMIC_SMEM(name) float* name = reinterpret_cast<float*>(emu::dynamic_smem.data())

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barriers[emu::linear_thread() / 32]->arrive_and_wait(); }
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask) {
    return emu::warp_exchange(v, (emu::linear_thread() % 32) ^ mask);
}
template <typename T>
T __shfl_sync(unsigned, T v, int src) {
    return emu::warp_exchange(v, src);
}
template <typename T>
T __ldg(const T* p) {
    return *p;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline float __uint_as_float(unsigned int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int i;
    std::memcpy(&i, &f, 4);
    return i;
}
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
    std::lock_guard<std::mutex> lock(emu::atomic_mutex);
    const unsigned long long old = *p;
    if (v > old) *p = v;
    return old;
}
