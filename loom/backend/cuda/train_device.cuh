// Device functions of loom's training kernels: activations and their derivatives, block reductions,
// and the element-wise optimizer updates. Shared by the step kernels (train_kernels.cu) and the
// generated whole-epoch kernels of tiny networks (loom/nn/fused_cuda.py); the text is prepended to
// both before NVRTC compiles them, so it has no includes and no host code.
//
// Every formula is the one of the array-API reference it replaces, in float32 with the same operation
// order where that order decides the rounding:
//   activations            loom.ops.activations (ids of Activation; unknown ids are the identity)
//   optimizers             loom.nn.optimizers (torch.optim's formulas)
// Reductions accumulate in float64 (losses, squared norms), as the references do.

#define LOOM_FULL_MASK 0xffffffffu
#define LOOM_TRAIN_THREADS 256

__device__ __forceinline__ bool loom_finite(double v) { return (v - v) == 0.0; }  // false for NaN and +-Inf

__device__ __forceinline__ float loom_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float loom_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }

__device__ __forceinline__ float loom_clampf(float x, float lo, float hi) { return fminf(fmaxf(x, lo), hi); }

// GELU x * Phi(x) with Abramowitz & Stegun 7.1.26 for erf, as loom.ops.activations._gelu_parts:
// returns y, and Phi(x) and exp(-x^2 / 2) through cdf / gauss.
__device__ __forceinline__ float loom_gelu_parts(float x, float* cdf, float* gauss) {
    const float z = x * 0.7071067811865476f;
    const float a = fabsf(z);
    const float t = 1.0f / (1.0f + 0.3275911f * a);
    const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    const float g = expf(-(a * a));
    const float erf_z = copysignf(1.0f - poly * g, z);
    const float c = (1.0f + erf_z) * 0.5f;
    *cdf = c;
    *gauss = g;
    return x * c;
}

// Activation `act` of the pre-activation x.
__device__ __forceinline__ float loom_act(int act, float x) {
    switch (act) {
        case 0: return fmaxf(x * 1.1f, 0.0f);  // LOOM's ScaledReLU
        case 1: return loom_sigmoid(x);
        case 2: return tanhf(x);
        case 3: return loom_softplus(x);
        case 4: return x < 0.0f ? x * 0.1f : x;
        case 6: {
            float c, g;
            return loom_gelu_parts(x, &c, &g);
        }
        case 7: return x * loom_sigmoid(x);
        case 8: return x > 0.0f ? x : expm1f(fminf(x, 0.0f));
        case 9: return 1.0507009873554805f * (x > 0.0f ? x : 1.6732632423543772f * expm1f(fminf(x, 0.0f)));
        case 10: return x * tanhf(loom_softplus(x));
        case 11: return loom_clampf(x / 6.0f + 0.5f, 0.0f, 1.0f);
        case 12: return loom_clampf(x, -1.0f, 1.0f);
        case 13: return x / (1.0f + fabsf(x));
        case 14: return loom_clampf(x, 0.0f, 6.0f);
        case 15: return fmaxf(x, 0.0f);
        default: return x;  // 5 (linear) and unknown ids
    }
}

// d act / d x at the pre-activation x, given y = act(x) (sigmoid and tanh read y, as loom does).
__device__ __forceinline__ float loom_act_derivative(int act, float x, float y) {
    switch (act) {
        case 0: return y > 0.0f ? 1.1f : 0.0f;
        case 1: return y * (1.0f - y);
        case 2: return 1.0f - y * y;
        case 3: return loom_sigmoid(x);
        case 4: return x >= 0.0f ? 1.0f : 0.1f;
        case 6: {
            float c, g;
            loom_gelu_parts(x, &c, &g);
            return c + x * (g * 0.3989422804014327f);
        }
        case 7: {
            const float s = loom_sigmoid(x);
            return s * (1.0f + x * (1.0f - s));
        }
        case 8: return x > 0.0f ? 1.0f : expf(fminf(x, 0.0f));
        case 9: return 1.0507009873554805f * (x > 0.0f ? 1.0f : 1.6732632423543772f * expf(fminf(x, 0.0f)));
        case 10: {
            const float t = tanhf(loom_softplus(x));
            return t + x * (1.0f - t * t) * loom_sigmoid(x);
        }
        case 11: return (x > -3.0f && x < 3.0f) ? 1.0f / 6.0f : 0.0f;
        case 12: return (x > -1.0f && x < 1.0f) ? 1.0f : 0.0f;
        case 13: {
            const float d = 1.0f + fabsf(x);
            return 1.0f / (d * d);
        }
        case 14: return (x > 0.0f && x < 6.0f) ? 1.0f : 0.0f;
        case 15: return x > 0.0f ? 1.0f : 0.0f;
        default: return 1.0f;
    }
}

// grad_y * act'(x): the identity passes grad_y through unchanged (as loom.ops.activations does).
__device__ __forceinline__ float loom_act_backward(int act, float grad_y, float x, float y) {
    return act == 5 ? grad_y : grad_y * loom_act_derivative(act, x, y);
}

__device__ __forceinline__ double loom_warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(LOOM_FULL_MASK, v, o);
    return v;
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
// scratch: >= 32 doubles of shared memory.
__device__ double loom_block_sum_d(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = loom_warp_sum_d(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const double total = lane < warps ? scratch[lane] : 0.0;
    return loom_warp_sum_d(total);
}

// ------------------------------------------------------------------------------------- optimizers
// ``scale * g + wd * p`` as Optimizer._gradient computes it (no decay term when wd == 0).
__device__ __forceinline__ float loom_opt_gradient(float p, float g, float scale, int scaled, float wd) {
    float d = scaled ? g * scale : g;
    if (wd != 0.0f) d = d + p * wd;
    return d;
}

// SGD (momentum, Nesterov, L2 decay): returns the new parameter; *buf is the momentum buffer.
// Plain SGD is p - g * (lr * scale), as loom.nn.optimizers.SGD's fast path.
__device__ __forceinline__ float loom_sgd_element(float p, float g, float lr, float scale, int scaled, float wd,
                                                  float mu, int nesterov, float* buf) {
    if (mu == 0.0f && wd == 0.0f) return p - g * (scaled ? lr * scale : lr);
    float d = loom_opt_gradient(p, g, scale, scaled, wd);
    if (mu != 0.0f) {
        const float b = *buf * mu + d;
        *buf = b;
        d = nesterov ? d + b * mu : b;
    }
    return p - d * lr;
}

// Adam / AdamW: step_size = lr / (1 - b1^t), bias2 = sqrt(1 - b2^t); c1 = 1 - b1, c2 = 1 - b2 and
// decay = 1 - lr * wd rounded from float64 by the caller, as the reference's Python floats are.
__device__ __forceinline__ float loom_adam_element(float p, float g, float scale, int scaled, float c1, float b2,
                                                   float c2, float eps, float wd, int decoupled, float decay,
                                                   float step_size, float bias2, float* m, float* v) {
    if (decoupled && wd != 0.0f) p = p * decay;
    const float d = loom_opt_gradient(p, g, scale, scaled, decoupled ? 0.0f : wd);
    const float mm = *m + (d - *m) * c1;
    const float vv = *v * b2 + (d * d) * c2;
    *m = mm;
    *v = vv;
    const float denom = sqrtf(vv) / bias2 + eps;
    return p - (mm / denom) * step_size;
}

// RMSprop (torch's non-centered variant, optional momentum); c_alpha = 1 - alpha.
__device__ __forceinline__ float loom_rmsprop_element(float p, float g, float lr, float scale, int scaled, float alpha,
                                                      float c_alpha, float eps, float wd, float mu, float* v,
                                                      float* buf) {
    const float d = loom_opt_gradient(p, g, scale, scaled, wd);
    const float vv = *v * alpha + (d * d) * c_alpha;
    *v = vv;
    float s = d / (sqrtf(vv) + eps);
    if (mu != 0.0f) {
        s = *buf * mu + s;
        *buf = s;
    }
    return p - s * lr;
}

// Optimizer hyper-parameters as the kernels receive them (kind 0 SGD, 1 Adam/AdamW, 2 RMSprop). The
// complements (c1 = 1 - b1 ...) are rounded from float64 by the host, as the reference's are.
struct LoomOptimizer {
    int kind;
    float mu;        // SGD / RMSprop momentum
    int nesterov;    // SGD
    float wd;        // weight decay (L2, or decoupled for AdamW)
    float c1, b2, c2;  // Adam: 1 - beta1, beta2, 1 - beta2
    float eps;       // Adam / RMSprop
    int decoupled;   // AdamW
    float alpha, c_alpha;  // RMSprop: alpha, 1 - alpha
};

// Per-step values: the learning rate (float32), AdamW's decay factor 1 - lr wd, Adam's step size and
// bias correction (see loom_adam_element).
struct LoomStep {
    float lr, decay, step_size, bias2;
};

// One element of the update: new p (state in s0 / s1: momentum buffer, or Adam's m / v, or RMSprop's v / buf).
__device__ __forceinline__ float loom_update_element(const LoomOptimizer& o, const LoomStep& t, float p, float g,
                                                     float scale, int scaled, float* s0, float* s1) {
    if (o.kind == 1)
        return loom_adam_element(p, g, scale, scaled, o.c1, o.b2, o.c2, o.eps, o.wd, o.decoupled, t.decay,
                                 t.step_size, t.bias2, s0, s1);
    if (o.kind == 2)
        return loom_rmsprop_element(p, g, t.lr, scale, scaled, o.alpha, o.c_alpha, o.eps, o.wd, o.mu, s0, s1);
    return loom_sgd_element(p, g, t.lr, scale, scaled, o.wd, o.mu, o.nesterov, s0);
}
