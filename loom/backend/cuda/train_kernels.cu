// Fused element-wise kernels of loom's training step on the GPU (after train_device.cuh).
//
// A Dense stage of the step is: cuBLAS z = x @ W, then loom_bias_act (z += b, y = act(z)); backward
// loom_act_backward (gz = gy * act'(z)), cuBLAS gW = x^T @ gz, loom_column_sum (gb = sum over rows of gz),
// cuBLAS gx = gz @ W^T. The loss (loom_mse) writes its gradient and its value as a device scalar; the
// gradient clipping factor (loom_sum_squares, loom_clip_scale) stays on the device; one kernel updates
// the whole flat parameter buffer (loom_update), optionally keeping the previous parameters for the
// divergence guard and skipping the update when the step's loss is not finite.
//
// Conventions: 1-D launches, grid-stride loops, blockDim.x = LOOM_TRAIN_THREADS unless noted;
// every array is C-contiguous float32 unless noted.

// z[r, c] += bias[c]; y[r, c] = act(z[r, c]) for a [rows, cols] block (y may be z itself).
extern "C" __global__ void loom_bias_act(float* z, const float* bias, float* y, int rows, int cols, int act) {
    const long long n = (long long)rows * cols;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float v = z[i] + bias[i % cols];
        z[i] = v;
        y[i] = loom_act(act, v);
    }
}

// gz = gy * act'(z) element-wise over n values (y = act(z)).
extern "C" __global__ void loom_act_backward(const float* gy, const float* z, const float* y, float* gz, long long n,
                                             int act) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        gz[i] = loom_act_backward(act, gy[i], z[i], y[i]);
}

// out[c] = sum_r a[r, c] (rows summed in increasing order within each of blockDim.y row groups).
// Block (32, 8): 32 columns per block, 8 row groups combined through shared memory.
extern "C" __global__ void loom_column_sum(const float* a, float* out, int rows, int cols) {
    __shared__ float partial[8][33];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < cols)
        for (int r = threadIdx.y; r < rows; r += blockDim.y) s += a[(long long)r * cols + c];
    partial[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float total = partial[0][threadIdx.x];
        for (int g = 1; g < (int)blockDim.y; ++g) total += partial[g][threadIdx.x];
        out[c] = total;
    }
}

// Stage 1 of the squared L2 norm of g[0..n): one float64 partial sum per block. A single block
// finishes the job itself: with clip > 0 it writes the clipping factor (see loom_clip_scale).
extern "C" __global__ void loom_sum_squares(const float* g, long long n, double* partials, float clip, float* scale) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const double v = (double)g[i];
        s += v * v;
    }
    s = loom_block_sum_d(s, scratch);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = s;
        if (gridDim.x == 1) {
            const double norm = sqrt(s);
            scale[0] = norm > (double)clip ? (float)((double)clip / norm) : 1.0f;
        }
    }
}

// Stage 2: the norm from the partial sums; scale = clip / norm when norm > clip, else 1.
// One block.
extern "C" __global__ void loom_clip_scale(const double* partials, int parts, float clip, float* scale) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < parts; i += blockDim.x) s += partials[i];
    s = loom_block_sum_d(s, scratch);
    if (threadIdx.x == 0) {
        const double norm = sqrt(s);
        scale[0] = norm > (double)clip ? (float)((double)clip / norm) : 1.0f;
    }
}

// MSE: grad = (y - t) * grad_scale and per-block float64 sums of (y - t)^2 (the difference rounded to
// float32 first, as loom.ops.losses.loss_and_grad). A single block writes loss[0] = sum / divisor itself.
extern "C" __global__ void loom_mse(const float* y, const float* t, float* grad, long long n, float grad_scale,
                                    double* partials, double divisor, double* loss) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float d = y[i] - t[i];
        grad[i] = d * grad_scale;
        s += (double)d * (double)d;
    }
    s = loom_block_sum_d(s, scratch);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = s;
        if (gridDim.x == 1) loss[0] = s / divisor;
    }
}

// loss[0] = (sum of the partials) / divisor. One block.
extern "C" __global__ void loom_loss_final(const double* partials, int parts, double divisor, double* loss) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < parts; i += blockDim.x) s += partials[i];
    s = loom_block_sum_d(s, scratch);
    if (threadIdx.x == 0) loss[0] = s / divisor;
}

// One optimizer step over the flat buffers (p, g, s0, s1 of n values):
//   * scaled: multiply the gradient by scale[0] (the clipping factor on the device);
//   * gated: do nothing unless gate[0] (this step's loss) is finite;
//   * keep: backup = p before the update (the divergence guard's copy, written in the same pass).
// kind 0 SGD (s0 the momentum buffer), 1 Adam / AdamW (s0 = m, s1 = v), 2 RMSprop (s0 = v, s1 = momentum).
extern "C" __global__ void loom_update(float* p, const float* g, float* s0, float* s1, float* backup, long long n,
                                       const float* scale, int scaled, const double* gate, int gated, int keep,
                                       int kind, float mu, int nesterov, float wd, float c1, float b2, float c2,
                                       float eps, int decoupled, float alpha, float c_alpha, float lr, float decay,
                                       float step_size, float bias2) {
    if (gated && !loom_finite(gate[0])) return;
    const LoomOptimizer o = {kind, mu, nesterov, wd, c1, b2, c2, eps, decoupled, alpha, c_alpha};
    const LoomStep t = {lr, decay, step_size, bias2};
    const float sc = scaled ? scale[0] : 1.0f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const float old = p[i];
        if (keep) backup[i] = old;
        p[i] = loom_update_element(o, t, old, g[i], sc, scaled, s0 + i, s1 + i);
    }
}
