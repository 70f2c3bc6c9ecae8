// Fused transformer-inference kernels of loom (compiled by NVRTC through CuPy's RawModule).
//
// Decode (one token, batch 1) is memory-bound: every weight is read once per token. The
// matrix-vector kernels therefore stream each matrix once with 16-byte loads, coalesced across
// a warp, and fuse the work around them so a decoder layer takes five launches:
//
//   loom_qkv_rope_*   norm(x) -> x @ Wqkv (+ bias) -> RoPE -> q, and k/v written into the cache
//   loom_decode_attention_s*  one query over the cache, split over key ranges (flash-decoding)
//   loom_attn_out_*   combine the split partials -> @ Wo (+ bias) -> added to the residual x
//   loom_mlp_in_*     norm(x) -> x @ [Wgate | Wup] -> silu(gate) * up   (or GELU for GPT-2)
//   loom_mlp_out_*    @ Wdown (+ bias) -> added to the residual x
//
// plus loom_embed before the first layer and loom_lm_head_* (final norm, logits, argmax) after
// the last. Weights stay in loom's [in, out] layout (row-major): a block owns TX column vectors
// (4 float32 or 8 16-bit columns each) and its 256 threads split the rows; partial sums meet
// through warp shuffles and shared memory. The suffix is the weight storage: f32, f16, bf16
// (16-bit weights are widened to float32; all arithmetic and accumulation is float32).
//
// Prefill (many tokens) uses cuBLAS for the matrix products and these kernels for the rest:
// loom_norm_rows, loom_rope_scatter, loom_prefill_attention_s*, loom_gated_activation. The attention
// kernels come in head-size classes: _sN serves head_dim <= 32 N.
//
// Conventions: blockDim.x is a multiple of 32; GEMV kernels run 256 threads; `io` holds the step's
// token (io[0]) and position (io[1]) on the device so a recorded CUDA graph can be replayed.

#ifndef LOOM_DYNAMIC_SMEM
extern __shared__ float4 loom_dynamic_smem_[];  // sized at launch (shared_mem)
#define LOOM_DYNAMIC_SMEM(name) float* name = reinterpret_cast<float*>(loom_dynamic_smem_)
#endif

#define LOOM_FULL_MASK 0xffffffffu
#define LOOM_NEG_INF __int_as_float(0xff800000)
#define LOOM_GEMV_THREADS 256
#define LOOM_MAX_VW 8

__device__ __forceinline__ int loom_imin(int a, int b) { return a < b ? a : b; }

__device__ __forceinline__ float loom_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(LOOM_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float loom_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(LOOM_FULL_MASK, v, o));
    return v;
}

// Sum of v over the whole block; every thread receives the total. scratch: >= 32 floats.
__device__ float loom_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = loom_warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const float total = lane < warps ? scratch[lane] : 0.0f;
    return loom_warp_sum(total);
}

// xs[0..K) = norm(x) in shared memory. kind 0: RMSNorm x / sqrt(mean(x^2) + eps) * w;
// kind 1: LayerNorm (x - mean) / sqrt(var + eps) * w + b; kind 2: plain copy.
__device__ void loom_norm_to_shared(const float* __restrict__ x, int K, const float* __restrict__ w,
                                    const float* __restrict__ b, float eps, int kind, float* xs, float* scratch) {
    float s = 0.0f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        const float v = x[k];
        xs[k] = v;
        s += kind == 0 ? v * v : v;
    }
    if (kind == 0) {
        s = loom_block_sum(s, scratch);
        const float inv = 1.0f / sqrtf(s * (1.0f / (float)K) + eps);
        for (int k = threadIdx.x; k < K; k += blockDim.x) xs[k] = (xs[k] * inv) * w[k];
    } else if (kind == 1) {
        s = loom_block_sum(s, scratch);
        const float mean = s / (float)K;
        float q = 0.0f;
        for (int k = threadIdx.x; k < K; k += blockDim.x) {
            const float c = xs[k] - mean;
            q += c * c;
        }
        q = loom_block_sum(q, scratch);
        const float inv = 1.0f / sqrtf(q / (float)K + eps);
        for (int k = threadIdx.x; k < K; k += blockDim.x) xs[k] = (xs[k] - mean) * inv * w[k] + b[k];
    }
    __syncthreads();
}

__device__ __forceinline__ float loom_half_to_float(unsigned int bits) {
#ifdef __CUDA_ARCH__
    float f;
    const unsigned short h = (unsigned short)(bits & 0xffffu);
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    const unsigned int sign = (bits & 0x8000u) << 16, exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
    if (exponent == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent != 0) return __uint_as_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    const float subnormal = (float)mantissa * 5.9604644775390625e-08f;  // mantissa * 2^-24
    return sign ? -subnormal : subnormal;
#endif
}

// One 16-byte weight vector widened to float32: VW consecutive columns.
template <int WK>
struct LoomWeights;

template <>
struct LoomWeights<0> {  // float32
    static constexpr int VW = 4;
    static __device__ __forceinline__ void convert(const uint4& u, float* w) {
        w[0] = __uint_as_float(u.x);
        w[1] = __uint_as_float(u.y);
        w[2] = __uint_as_float(u.z);
        w[3] = __uint_as_float(u.w);
    }
};

template <>
struct LoomWeights<1> {  // float16, stored as 16-bit words
    static constexpr int VW = 8;
    static __device__ __forceinline__ void convert(const uint4& v, float* w) {
        const unsigned int u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            w[2 * i] = loom_half_to_float(u[i] & 0xffffu);
            w[2 * i + 1] = loom_half_to_float(u[i] >> 16);
        }
    }
};

template <>
struct LoomWeights<2> {  // bfloat16, stored as 16-bit words: the high half of a float32
    static constexpr int VW = 8;
    static __device__ __forceinline__ void convert(const uint4& v, float* w) {
        const unsigned int u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            w[2 * i] = __uint_as_float(u[i] << 16);
            w[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
        }
    }
};

// The weight rows one thread streams: rows k = ty, ty + TY, ... < K of nv <= NV column vectors
// (16 bytes each) of W [K, ldw] row-major. fetch() puts CH rows in flight into registers; a
// kernel calls it before computing its input vector, so the loads overlap that work.
template <int WK, int NV>
struct LoomRows {
    static constexpr int VW = LoomWeights<WK>::VW;
    static constexpr int CH = NV == 1 ? 16 : 8;
    uint4 raw[CH][NV];
    const uint4* W;
    long long stride, vec[NV];
    int nv, ty, TY, K;

    __device__ __forceinline__ LoomRows(const void* w, long long ldw, int k, const int* cols, int n, int t, int step)
        : W(reinterpret_cast<const uint4*>(w)), stride(ldw / VW), nv(n), ty(t), TY(step), K(k) {
#pragma unroll
        for (int v = 0; v < NV; ++v) vec[v] = cols[v] / VW;
    }

    __device__ __forceinline__ void fetch(int k0) {
#pragma unroll
        for (int r = 0; r < CH; ++r) {
            const int k = k0 + r * TY;
            if (k < K) {
#pragma unroll
                for (int v = 0; v < NV; ++v)
                    if (v < nv) raw[r][v] = __ldg(W + (long long)k * stride + vec[v]);
            }
        }
    }

    // acc[v * VW + j] += xs[k] * W[k, cols[v] + j] over the fetched rows from k0.
    __device__ __forceinline__ void use(int k0, const float* xs, float* acc) const {
#pragma unroll
        for (int r = 0; r < CH; ++r) {
            const int k = k0 + r * TY;
            if (k < K) {
                const float xv = xs[k];
#pragma unroll
                for (int v = 0; v < NV; ++v) {
                    if (v < nv) {
                        float w[VW];
                        LoomWeights<WK>::convert(raw[r][v], w);
#pragma unroll
                        for (int j = 0; j < VW; ++j) acc[v * VW + j] = fmaf(xv, w[j], acc[v * VW + j]);
                    }
                }
            }
        }
    }

    // Everything after the first fetch(ty): use it, then stream the remaining rows CH at a time.
    __device__ __forceinline__ void finish(const float* xs, float* acc) {
        use(ty, xs, acc);
        for (int k0 = ty + CH * TY; k0 < K; k0 += CH * TY) {
            fetch(k0);
            use(k0, xs, acc);
        }
    }
};

// Sums acc[0..N) over the threads that share tx = threadIdx.x % TX (TX a power of two <= 32).
// Afterwards threads threadIdx.x < TX hold the block's totals of their column item.
// red: 8 * TX * N floats, total: TX * N floats (shared memory).
template <int N>
__device__ __forceinline__ void loom_reduce_rows(float* acc, int TX, float* red, float* total) {
    for (int o = TX; o < 32; o <<= 1) {
#pragma unroll
        for (int j = 0; j < N; ++j) acc[j] += __shfl_xor_sync(LOOM_FULL_MASK, acc[j], o);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane < TX) {
#pragma unroll
        for (int j = 0; j < N; ++j) red[(warp * TX + lane) * N + j] = acc[j];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < TX * N; i += blockDim.x) {
        float s = 0.0f;
        for (int w = 0; w < warps; ++w) s += red[w * TX * N + i];
        total[i] = s;
    }
    __syncthreads();
    if ((int)threadIdx.x < TX) {
#pragma unroll
        for (int j = 0; j < N; ++j) acc[j] = total[threadIdx.x * N + j];
    }
}

// ------------------------------------------------------------------------------------------ decode

extern "C" __global__ void loom_set_step(int* io, int token, int pos) {
    io[0] = token;
    io[1] = pos;
}

// x[d] = embedding of io[0] (+ learned position io[1]); resets the argmax slot of this step.
// tied: table is the LM head [D, V] (token = column), else the embedding [V, D] (token = row).
extern "C" __global__ void loom_embed(const float* __restrict__ table, int tied, int V, int D,
                                      const float* __restrict__ positions, int has_positions,
                                      const int* __restrict__ io, float* __restrict__ x,
                                      unsigned long long* __restrict__ best) {
    const int token = io[0], pos = io[1];
    for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < D; d += gridDim.x * blockDim.x) {
        float v = tied ? table[(long long)d * V + token] : table[(long long)token * D + d];
        if (has_positions) v = v + positions[(long long)pos * D + d];
        x[d] = v;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) *best = 0ull;
}

// Column items of the fused QKV matrix [D, (H + 2 Hk) hd]: per query/key head, (R/2)/VW items
// that each own VW rotation pairs (d, d + R/2) and (hd - R)/VW items of unrotated columns;
// then Hk * hd / VW items of value columns.
template <int WK>
__device__ __forceinline__ void loom_qkv_rope(const float* __restrict__ x, const float* __restrict__ norm_w,
                                              const float* __restrict__ norm_b, float eps, int norm_kind,
                                              const void* __restrict__ W, const float* __restrict__ bias,
                                              int has_bias, int D, int H, int Hk, int hd, int R,
                                              const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                              const int* __restrict__ io, int TX, float* __restrict__ q_out,
                                              float* __restrict__ k_cache, float* __restrict__ v_cache,
                                              int S_max) {
    constexpr int VW = LoomWeights<WK>::VW;
    __shared__ float red[8 * 32 * 2 * VW], total_[32 * 2 * VW];
    __shared__ float scratch[32];
    LOOM_DYNAMIC_SMEM(xs);

    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX, TY = blockDim.x / TX;
    const int item = blockIdx.x * TX + tx;
    const int half = R / 2;
    const int per_head = (hd - half) / VW;
    const int qk_items = (H + Hk) * per_head;
    const int total = qk_items + Hk * hd / VW;
    const long long N = (long long)(H + 2 * Hk) * hd;
    const bool active = item < total;
    int head = 0, d0 = 0, cols[2] = {0, 0};
    bool pair = false;
    if (active) {
        if (item < qk_items) {
            head = item / per_head;
            const int off = (item % per_head) * VW;
            pair = off < half;
            d0 = pair ? off : off + half;
            cols[0] = head * hd + d0;
            cols[1] = cols[0] + half;
        } else {
            const int c = (item - qk_items) * VW;
            head = H + Hk + c / hd;
            d0 = c % hd;
            cols[0] = (H + Hk) * hd + c;
        }
    }
    LoomRows<WK, 2> rows(W, N, active ? D : 0, cols, pair ? 2 : 1, ty, TY);
    rows.fetch(ty);
    // the epilogue's operands (position, rotation, bias), read while the weights stream in
    const bool writer = (int)threadIdx.x < TX && active;
    const int pos = writer ? io[1] : 0;
    float rot[4][VW], b[2][VW];
#pragma unroll
    for (int j = 0; j < VW; ++j) {
        const bool rotated = writer && pair;
        const long long at = (long long)pos * R + d0 + j;
        rot[0][j] = rotated ? cos_t[at] : 0.0f;
        rot[1][j] = rotated ? sin_t[at] : 0.0f;
        rot[2][j] = rotated ? cos_t[at + half] : 0.0f;
        rot[3][j] = rotated ? sin_t[at + half] : 0.0f;
        b[0][j] = writer && has_bias ? bias[cols[0] + j] : 0.0f;
        b[1][j] = writer && has_bias && pair ? bias[cols[1] + j] : 0.0f;
    }
    loom_norm_to_shared(x, D, norm_w, norm_b, eps, norm_kind, xs, scratch);
    float acc[2 * VW];
#pragma unroll
    for (int j = 0; j < 2 * VW; ++j) acc[j] = 0.0f;
    rows.finish(xs, acc);
    loom_reduce_rows<2 * VW>(acc, TX, red, total_);
    if (!writer) return;

#pragma unroll
    for (int j = 0; j < VW; ++j) {
        acc[j] += b[0][j];
        acc[VW + j] += b[1][j];
    }
    if (pair) {
#pragma unroll
        for (int j = 0; j < VW; ++j) {
            const float x1 = acc[j], x2 = acc[VW + j];
            acc[j] = x1 * rot[0][j] + x2 * rot[1][j];
            acc[VW + j] = x2 * rot[2][j] + x1 * rot[3][j];
        }
    }
    float* dst;
    if (head < H)
        dst = q_out + (long long)head * hd;
    else if (head < H + Hk)
        dst = k_cache + ((long long)(head - H) * S_max + pos) * hd;
    else
        dst = v_cache + ((long long)(head - H - Hk) * S_max + pos) * hd;
#pragma unroll
    for (int j = 0; j < VW; ++j) {
        dst[d0 + j] = acc[j];
        if (pair) dst[d0 + half + j] = acc[VW + j];
    }
}

// One warp's online-softmax attention of the query qs (shared memory, already scaled) over the
// keys first, first + stride, ... < end (in runs of 32: lane = key) of one key/value head.
// SLOTS = head_dim / 32 rounded up (head_dim <= 32 * SLOTS): each lane owns dimensions
// lane + 32 i of the output. A run's key rows and then its value rows are loaded in groups whose
// loads are all in flight before any arithmetic waits on them (the whole run for head_dim <= 64).
template <int SLOTS>
__device__ __forceinline__ void loom_warp_attend(const float* qs, const float* __restrict__ kc,
                                                 const float* __restrict__ vc, int hd, int first, int end,
                                                 int stride, float& m, float& l, float* o) {
    constexpr int KB = SLOTS * 8 < 16 ? SLOTS * 8 : 16;  // float4 key loads in flight per lane
    constexpr int GROUP = SLOTS <= 2 ? 32 : 64 / SLOTS;   // value rows in flight per lane
    const int lane = threadIdx.x & 31;
    for (int base = first; base < end; base += stride) {
        const int j = base + lane;
        float s = LOOM_NEG_INF;
        if (j < end) {
            const float4* kr = reinterpret_cast<const float4*>(kc + (long long)j * hd);
            float dot = 0.0f;
#pragma unroll
            for (int v0 = 0; v0 < SLOTS * 8; v0 += KB) {
                float4 k4[KB];
#pragma unroll
                for (int v = 0; v < KB; ++v)
                    if (4 * (v0 + v) < hd) k4[v] = kr[v0 + v];
#pragma unroll
                for (int v = 0; v < KB; ++v) {
                    const int d = 4 * (v0 + v);
                    if (d < hd) dot += qs[d] * k4[v].x + qs[d + 1] * k4[v].y + qs[d + 2] * k4[v].z + qs[d + 3] * k4[v].w;
                }
            }
            s = dot;
        }
        const int n = loom_imin(32, end - base);
        const float m_new = fmaxf(m, loom_warp_max(s));  // finite: key `base` is visible
        const float p = j < end ? expf(s - m_new) : 0.0f;
        const float corr = expf(m - m_new);
        l = l * corr + loom_warp_sum(p);
#pragma unroll
        for (int i = 0; i < SLOTS; ++i) o[i] *= corr;
#pragma unroll
        for (int u0 = 0; u0 < 32; u0 += GROUP) {
            float vv[GROUP][SLOTS];  // GROUP value rows of the run, this lane's dimensions
#pragma unroll
            for (int u = 0; u < GROUP; ++u) {
#pragma unroll
                for (int i = 0; i < SLOTS; ++i) {
                    const int d = lane + 32 * i;
                    vv[u][i] = (u0 + u < n && d < hd) ? vc[(long long)(base + u0 + u) * hd + d] : 0.0f;
                }
            }
#pragma unroll
            for (int u = 0; u < GROUP; ++u) {
                const float pu = __shfl_sync(LOOM_FULL_MASK, p, u0 + u);  // 0 past the visible keys
#pragma unroll
                for (int i = 0; i < SLOTS; ++i) o[i] = fmaf(pu, vv[u][i], o[i]);
            }
        }
        m = m_new;
    }
}

// grid (H, splits), 128 threads. Query head h over the cached keys 0..io[1] of its key/value head;
// split s takes an equal share of them and writes its unnormalised output with its max and sum.
template <int SLOTS>
__device__ __forceinline__ void loom_decode_attention(const float* __restrict__ q, const float* __restrict__ k_cache,
                                                      const float* __restrict__ v_cache, const int* __restrict__ io,
                                                      int H, int Hk, int hd, int S_max, float scale, int splits,
                                                      float* __restrict__ part_o, float* __restrict__ part_ml) {
    __shared__ float qs[32 * SLOTS];
    __shared__ float wm[4], wl[4];
    __shared__ float wo[4][32 * SLOTS];
    const int h = blockIdx.x, split = blockIdx.y, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kvh = h / (H / Hk);
    const int S = io[1] + 1;
    const int chunk = (S + splits - 1) / splits;
    const int s0 = split * chunk, s1 = loom_imin(S, s0 + chunk);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[(long long)h * hd + d] * scale;
    __syncthreads();
    const float* kc = k_cache + (long long)kvh * S_max * hd;
    const float* vc = v_cache + (long long)kvh * S_max * hd;
    float m = LOOM_NEG_INF, l = 0.0f, o[SLOTS];
#pragma unroll
    for (int i = 0; i < SLOTS; ++i) o[i] = 0.0f;
    loom_warp_attend<SLOTS>(qs, kc, vc, hd, s0 + 32 * warp, s1, 32 * 4, m, l, o);
    if (lane == 0) {
        wm[warp] = m;
        wl[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < SLOTS; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) wo[warp][d] = o[i];
    }
    __syncthreads();
    float M = LOOM_NEG_INF;
    for (int w = 0; w < 4; ++w) M = fmaxf(M, wm[w]);
    const long long slot = (long long)h * splits + split;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float num = 0.0f, den = 0.0f;
        if (M != LOOM_NEG_INF) {
            for (int w = 0; w < 4; ++w) {
                const float e = expf(wm[w] - M);
                num += e * wo[w][d];
                den += e * wl[w];
            }
        }
        part_o[slot * hd + d] = num;
        if (d == 0) {
            part_ml[2 * slot] = M;
            part_ml[2 * slot + 1] = den;
        }
    }
}

// Causal attention of T new queries (positions start .. start + T - 1) over the cache: grid
// (H, ceil(T / 4)), 128 threads, one warp per query. q, out: [T, H hd].
template <int SLOTS>
__device__ __forceinline__ void loom_prefill_attention(const float* __restrict__ q, const float* __restrict__ k_cache,
                                                       const float* __restrict__ v_cache, int T, int start, int H,
                                                       int Hk, int hd, int S_max, float scale,
                                                       float* __restrict__ out) {
    __shared__ float qs[4][32 * SLOTS];
    const int h = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int t = blockIdx.y * 4 + warp;
    if (t >= T) return;  // whole warps leave: no block-wide barrier follows
    const long long row = (long long)t * H * hd + (long long)h * hd;
    for (int d = lane; d < hd; d += 32) qs[warp][d] = q[row + d] * scale;
    __syncwarp();
    const int kvh = h / (H / Hk);
    const float* kc = k_cache + (long long)kvh * S_max * hd;
    const float* vc = v_cache + (long long)kvh * S_max * hd;
    float m = LOOM_NEG_INF, l = 0.0f, o[SLOTS];
#pragma unroll
    for (int i = 0; i < SLOTS; ++i) o[i] = 0.0f;
    loom_warp_attend<SLOTS>(qs[warp], kc, vc, hd, 0, start + t + 1, 32, m, l, o);
#pragma unroll
    for (int i = 0; i < SLOTS; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) out[row + d] = o[i] / l;
    }
}

#define LOOM_ATTENTION_KERNELS(SLOTS)                                                                                 \
    extern "C" __global__ void __launch_bounds__(128) loom_decode_attention_s##SLOTS(                               \
        const float* q, const float* k_cache, const float* v_cache, const int* io, int H, int Hk, int hd, int S_max,  \
        float scale, int splits, float* part_o, float* part_ml) {                                                     \
        loom_decode_attention<SLOTS>(q, k_cache, v_cache, io, H, Hk, hd, S_max, scale, splits, part_o, part_ml);      \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(128) loom_prefill_attention_s##SLOTS(                              \
        const float* q, const float* k_cache, const float* v_cache, int T, int start, int H, int Hk, int hd,          \
        int S_max, float scale, float* out) {                                                                         \
        loom_prefill_attention<SLOTS>(q, k_cache, v_cache, T, start, H, Hk, hd, S_max, scale, out);                   \
    }

LOOM_ATTENTION_KERNELS(1)
LOOM_ATTENTION_KERNELS(2)
LOOM_ATTENTION_KERNELS(4)
LOOM_ATTENTION_KERNELS(8)

// x[c] += (y @ W)[c] (+ bias[c]) for the column items of this block: the shared tail of the
// attention-output and down projections, after rows.fetch(ty) and the input y in xs (K floats).
template <int WK>
__device__ __forceinline__ void loom_gemv_residual(LoomRows<WK, 1>& rows, const float* xs,
                                                   const float* __restrict__ bias, int has_bias, int col, bool active,
                                                   int TX, float* __restrict__ x) {
    constexpr int VW = LoomWeights<WK>::VW;
    __shared__ float red[8 * 32 * VW], total_[32 * VW];
    float acc[VW], old[VW];  // old: the residual and bias, read while the rows are summed
    const bool writer = (int)threadIdx.x < TX && active;
#pragma unroll
    for (int j = 0; j < VW; ++j) {
        acc[j] = 0.0f;
        old[j] = writer ? x[col + j] + (has_bias ? bias[col + j] : 0.0f) : 0.0f;
    }
    rows.finish(xs, acc);
    loom_reduce_rows<VW>(acc, TX, red, total_);
    if (!writer) return;
#pragma unroll
    for (int j = 0; j < VW; ++j) x[col + j] = old[j] + acc[j];
}

// Attention output: combine the decode-attention splits, then x += att @ Wo (+ bias).
template <int WK>
__device__ __forceinline__ void loom_attn_out(const float* __restrict__ part_o, const float* __restrict__ part_ml,
                                              int H, int hd, int splits, const void* __restrict__ W,
                                              const float* __restrict__ bias, int has_bias, int D, int TX,
                                              float* __restrict__ x) {
    constexpr int VW = LoomWeights<WK>::VW;
    LOOM_DYNAMIC_SMEM(xs);
    const int K = H * hd;
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX, TY = blockDim.x / TX;
    const int item = blockIdx.x * TX + tx;
    const bool active = item < D / VW;
    const int cols[1] = {item * VW};
    LoomRows<WK, 1> rows(W, D, active ? K : 0, cols, 1, ty, TY);
    rows.fetch(ty);
    for (int idx = threadIdx.x; idx < K; idx += blockDim.x) {
        const int h = idx / hd, d = idx % hd;
        const float* ml = part_ml + 2LL * h * splits;
        float M = LOOM_NEG_INF;
        for (int s = 0; s < splits; ++s) M = fmaxf(M, ml[2 * s]);
        float num = 0.0f, den = 0.0f;
        for (int s = 0; s < splits; ++s) {
            const float e = ml[2 * s] == LOOM_NEG_INF ? 0.0f : expf(ml[2 * s] - M);
            num += e * part_o[((long long)h * splits + s) * hd + d];
            den += e * ml[2 * s + 1];
        }
        xs[idx] = num / den;
    }
    __syncthreads();
    loom_gemv_residual<WK>(rows, xs, bias, has_bias, cols[0], active, TX, x);
}

// MLP input: norm(x) @ W_in (+ bias), then silu(gate) * up (gated, W_in = [D, 2 Di]) or GELU-tanh.
template <int WK>
__device__ __forceinline__ void loom_mlp_in(const float* __restrict__ x, const float* __restrict__ norm_w,
                                            const float* __restrict__ norm_b, float eps, int norm_kind,
                                            const void* __restrict__ W, const float* __restrict__ bias,
                                            int has_bias, int D, int Di, int gated, int TX,
                                            float* __restrict__ out) {
    constexpr int VW = LoomWeights<WK>::VW;
    __shared__ float red[8 * 32 * 2 * VW], total_[32 * 2 * VW];
    __shared__ float scratch[32];
    LOOM_DYNAMIC_SMEM(xs);
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX, TY = blockDim.x / TX;
    const int item = blockIdx.x * TX + tx;
    const bool active = item < Di / VW;
    const int cols[2] = {item * VW, Di + item * VW};
    const long long ldw = gated ? 2LL * Di : (long long)Di;
    LoomRows<WK, 2> rows(W, ldw, active ? D : 0, cols, gated ? 2 : 1, ty, TY);
    rows.fetch(ty);
    loom_norm_to_shared(x, D, norm_w, norm_b, eps, norm_kind, xs, scratch);
    float acc[2 * VW];
#pragma unroll
    for (int j = 0; j < 2 * VW; ++j) acc[j] = 0.0f;
    rows.finish(xs, acc);
    loom_reduce_rows<2 * VW>(acc, TX, red, total_);
    if ((int)threadIdx.x >= TX || !active) return;
#pragma unroll
    for (int j = 0; j < VW; ++j) {
        const int c = cols[0] + j;
        if (gated) {
            const float g = has_bias ? acc[j] + bias[c] : acc[j];
            const float u = has_bias ? acc[VW + j] + bias[Di + c] : acc[VW + j];
            out[c] = g / (1.0f + expf(-g)) * u;
        } else {
            const float v = has_bias ? acc[j] + bias[c] : acc[j];
            out[c] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * (v * v * v))));
        }
    }
}

// MLP output: x += a @ W_down (+ bias).
template <int WK>
__device__ __forceinline__ void loom_mlp_out(const float* __restrict__ a, const void* __restrict__ W,
                                             const float* __restrict__ bias, int has_bias, int Di, int D, int TX,
                                             float* __restrict__ x) {
    constexpr int VW = LoomWeights<WK>::VW;
    __shared__ float scratch[32];
    LOOM_DYNAMIC_SMEM(xs);
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX, TY = blockDim.x / TX;
    const int item = blockIdx.x * TX + tx;
    const bool active = item < D / VW;
    const int cols[1] = {item * VW};
    LoomRows<WK, 1> rows(W, D, active ? Di : 0, cols, 1, ty, TY);
    rows.fetch(ty);
    loom_norm_to_shared(a, Di, a, a, 0.0f, 2, xs, scratch);
    loom_gemv_residual<WK>(rows, xs, bias, has_bias, cols[0], active, TX, x);
}

__device__ __forceinline__ unsigned long long loom_argmax_key(float v, int index) {
    unsigned int u = __float_as_uint(v);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // order-preserving float -> unsigned
    return ((unsigned long long)u << 32) | (unsigned long long)(0xffffffffu - (unsigned int)index);
}

// LM head: logits = norm(x) @ W (W: [D, ldw], the first V columns real) and the running argmax
// (largest logit, first index on ties) in *best as an order-preserving 64-bit key.
template <int WK>
__device__ __forceinline__ void loom_lm_head(const float* __restrict__ x, const float* __restrict__ norm_w,
                                             const float* __restrict__ norm_b, float eps, int norm_kind,
                                             const void* __restrict__ W, int D, int V, int ldw, int TX,
                                             float* __restrict__ logits, unsigned long long* __restrict__ best) {
    constexpr int VW = LoomWeights<WK>::VW;
    __shared__ float red[8 * 32 * VW], total_[32 * VW];
    __shared__ float scratch[32];
    LOOM_DYNAMIC_SMEM(xs);
    const int tx = threadIdx.x % TX, ty = threadIdx.x / TX, TY = blockDim.x / TX;
    const int item = blockIdx.x * TX + tx;
    const bool active = item < ldw / VW;
    const int cols[1] = {item * VW};
    LoomRows<WK, 1> rows(W, ldw, active ? D : 0, cols, 1, ty, TY);
    rows.fetch(ty);
    loom_norm_to_shared(x, D, norm_w, norm_b, eps, norm_kind, xs, scratch);
    float acc[VW];
#pragma unroll
    for (int j = 0; j < VW; ++j) acc[j] = 0.0f;
    rows.finish(xs, acc);
    loom_reduce_rows<VW>(acc, TX, red, total_);
    if (threadIdx.x >= 32) return;
    unsigned long long key = 0ull;
    if ((int)threadIdx.x < TX && active) {
#pragma unroll
        for (int j = 0; j < VW; ++j) {
            const int c = cols[0] + j;
            if (c < V) {
                logits[c] = acc[j];
                const unsigned long long k = loom_argmax_key(acc[j], c);
                key = k > key ? k : key;
            }
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long other = __shfl_xor_sync(LOOM_FULL_MASK, key, o);
        key = other > key ? other : key;
    }
    if (threadIdx.x == 0 && key != 0ull) atomicMax(best, key);
}

#define LOOM_DECODE_KERNELS(WK, SUFFIX)                                                                              \
    extern "C" __global__ void __launch_bounds__(LOOM_GEMV_THREADS) loom_qkv_rope_##SUFFIX(                          \
        const float* x, const float* norm_w, const float* norm_b, float eps, int norm_kind, const void* W,             \
        const float* bias, int has_bias, int D, int H, int Hk, int hd, int R, const float* cos_t, const float* sin_t, \
        const int* io, int TX, float* q_out, float* k_cache, float* v_cache, int S_max) {                             \
        loom_qkv_rope<WK>(x, norm_w, norm_b, eps, norm_kind, W, bias, has_bias, D, H, Hk, hd, R, cos_t, sin_t, io,   \
                          TX, q_out, k_cache, v_cache, S_max);                                                        \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(LOOM_GEMV_THREADS) loom_attn_out_##SUFFIX(                          \
        const float* part_o, const float* part_ml, int H, int hd, int splits, const void* W, const float* bias,       \
        int has_bias, int D, int TX, float* x) {                                                                      \
        loom_attn_out<WK>(part_o, part_ml, H, hd, splits, W, bias, has_bias, D, TX, x);                               \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(LOOM_GEMV_THREADS) loom_mlp_in_##SUFFIX(                            \
        const float* x, const float* norm_w, const float* norm_b, float eps, int norm_kind, const void* W,             \
        const float* bias, int has_bias, int D, int Di, int gated, int TX, float* out) {                              \
        loom_mlp_in<WK>(x, norm_w, norm_b, eps, norm_kind, W, bias, has_bias, D, Di, gated, TX, out);                 \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(LOOM_GEMV_THREADS) loom_mlp_out_##SUFFIX(                           \
        const float* a, const void* W, const float* bias, int has_bias, int Di, int D, int TX, float* x) {            \
        loom_mlp_out<WK>(a, W, bias, has_bias, Di, D, TX, x);                                                         \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(LOOM_GEMV_THREADS) loom_lm_head_##SUFFIX(                           \
        const float* x, const float* norm_w, const float* norm_b, float eps, int norm_kind, const void* W, int D,     \
        int V, int ldw, int TX, float* logits, unsigned long long* best) {                                            \
        loom_lm_head<WK>(x, norm_w, norm_b, eps, norm_kind, W, D, V, ldw, TX, logits, best);                          \
    }

LOOM_DECODE_KERNELS(0, f32)
LOOM_DECODE_KERNELS(1, f16)
LOOM_DECODE_KERNELS(2, bf16)

// ----------------------------------------------------------------------------------------- prefill

// out[t] = norm(x[t]) for the T rows of x [T, D] (one block per row).
extern "C" __global__ void loom_norm_rows(const float* __restrict__ x, int D, const float* __restrict__ w,
                                          const float* __restrict__ b, float eps, int kind,
                                          float* __restrict__ out) {
    __shared__ float scratch[32];
    LOOM_DYNAMIC_SMEM(xs);
    const long long row = blockIdx.x;
    loom_norm_to_shared(x + row * D, D, w, b, eps, kind, xs, scratch);
    for (int k = threadIdx.x; k < D; k += blockDim.x) out[row * D + k] = xs[k];
}

// qkv [T, (H + 2 Hk) hd] (+ bias) -> q [T, H hd] rotated, keys (rotated) and values written into the
// cache [Hk, S_max, hd] at positions start .. start + T - 1. One thread per rotation pair or single.
extern "C" __global__ void loom_rope_scatter(const float* __restrict__ qkv, int T, const float* __restrict__ bias,
                                             int has_bias, int H, int Hk, int hd, int R,
                                             const float* __restrict__ cos_t, const float* __restrict__ sin_t,
                                             int start, float* __restrict__ q_out, float* __restrict__ k_cache,
                                             float* __restrict__ v_cache, int S_max) {
    const int half = R / 2;
    const int per_head = hd - half;
    const int qk_units = (H + Hk) * per_head;
    const int units = qk_units + Hk * hd;
    const int N = (H + 2 * Hk) * hd;
    const long long total = (long long)T * units;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int t = (int)(i / units), u = (int)(i % units), pos = start + t;
        const float* row = qkv + (long long)t * N;
        if (u < qk_units) {
            const int head = u / per_head, r = u % per_head;
            float* dst = head < H ? q_out + (long long)t * H * hd + (long long)head * hd
                                  : k_cache + ((long long)(head - H) * S_max + pos) * hd;
            if (r < half) {
                const int c1 = head * hd + r, c2 = c1 + half;
                const float x1 = has_bias ? row[c1] + bias[c1] : row[c1];
                const float x2 = has_bias ? row[c2] + bias[c2] : row[c2];
                const float* c = cos_t + (long long)pos * R;
                const float* s = sin_t + (long long)pos * R;
                dst[r] = x1 * c[r] + x2 * s[r];
                dst[r + half] = x2 * c[r + half] + x1 * s[r + half];
            } else {
                const int d = r + half, col = head * hd + d;
                dst[d] = has_bias ? row[col] + bias[col] : row[col];
            }
        } else {
            const int c = u - qk_units, col = (H + Hk) * hd + c;
            v_cache[((long long)(c / hd) * S_max + pos) * hd + c % hd] = has_bias ? row[col] + bias[col] : row[col];
        }
    }
}

// a [T, 2 Di] (+ bias) -> out [T, Di] = silu(gate) * up (gated) or a [T, Di] -> GELU-tanh.
extern "C" __global__ void loom_gated_activation(const float* __restrict__ a, const float* __restrict__ bias,
                                                 int has_bias, int T, int Di, int gated, float* __restrict__ out) {
    const long long total = (long long)T * Di;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const long long t = i / Di;
        const int c = (int)(i % Di);
        if (gated) {
            const float* row = a + t * 2 * Di;
            const float g = has_bias ? row[c] + bias[c] : row[c];
            const float u = has_bias ? row[Di + c] + bias[Di + c] : row[Di + c];
            out[i] = g / (1.0f + expf(-g)) * u;
        } else {
            const float v = has_bias ? a[i] + bias[c] : a[i];
            out[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * (v * v * v))));
        }
    }
}
