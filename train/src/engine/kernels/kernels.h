/*
 * The kernels of the reference GAN's training step, written once for two compilers: nvcc builds
 * them for the GPU (kernels.cu) and a C compiler builds them for the CPU emulator the tests run
 * (emulator.c). The includer defines three macros:
 *
 *   KERNEL(name)         opens a kernel that takes one `struct KernelArgs a`;
 *   THREAD_INDEX(t, n)   declares `t`, this thread's index, and returns when `t >= n`;
 *   DEVICE               qualifies a helper function that kernels call.
 *
 * Every kernel is a plain loop body over its thread index: no shared memory, no barriers, so
 * the emulator runs a launch as a loop and computes what the GPU computes.
 */

/* The arguments of every kernel: buffers, integers and reals, by position. Rust's
 * `KernelArgs` has the same layout. */
struct KernelArgs {
    float *p[8];
    int i[8];
    float f[8];
};

DEVICE float leaky(float x, float slope) { return x > 0.0f ? x : x * slope; }

/* The LeakyReLU's derivative, read from its output (same sign as its input). */
DEVICE float leaky_slope_at(float y, float slope) { return y > 0.0f ? 1.0f : slope; }

DEVICE double softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }

DEVICE double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* Rows of the data set in the epoch's order: out[r][c] = data[order[first + r]][c].
 * p0 out, p1 data, p2 order (u32); i0 first, i1 rows, i2 cols. */
KERNEL(gather_rows) {
    const int cols = a.i[2];
    THREAD_INDEX(t, a.i[1] * cols);
    const unsigned *order = (const unsigned *)a.p[2];
    const int r = t / cols, c = t % cols;
    a.p[0][t] = a.p[1][(long)order[a.i[0] + r] * cols + c];
}

/* x = LeakyReLU(x + bias). p0 x [rows x cols], p1 bias; i0 rows, i1 cols; f0 slope. */
KERNEL(add_bias_leaky) {
    const int cols = a.i[1];
    THREAD_INDEX(t, a.i[0] * cols);
    a.p[0][t] = leaky(a.p[0][t] + a.p[1][t % cols], a.f[0]);
}

/* x = tanh(x + bias). p0 x [rows x cols], p1 bias; i0 rows, i1 cols. */
KERNEL(add_bias_tanh) {
    const int cols = a.i[1];
    THREAD_INDEX(t, a.i[0] * cols);
    a.p[0][t] = tanhf(a.p[0][t] + a.p[1][t % cols]);
}

/* BatchNorm1d in training mode after a linear layer, then LeakyReLU; one thread per feature.
 * h gets the bias, then is replaced by the normalised values (the backward pass reads them).
 * p0 h [rows x cols], p1 y out, p2 bias, p3 gamma, p4 beta, p5 inv_std out [cols],
 * p6 running mean, p7 running var; i0 rows, i1 cols; f0 eps, f1 momentum, f2 slope. */
KERNEL(batch_norm_leaky) {
    const int rows = a.i[0], cols = a.i[1];
    THREAD_INDEX(c, cols);
    float *h = a.p[0], *y = a.p[1];
    const float bias = a.p[2][c], gamma = a.p[3][c], beta = a.p[4][c];
    const float eps = a.f[0], momentum = a.f[1], slope = a.f[2];
    float mean = 0.0f;
    for (int r = 0; r < rows; r++) {
        const float v = h[r * cols + c] + bias;
        h[r * cols + c] = v;
        mean += v;
    }
    mean /= (float)rows;
    float var = 0.0f;
    for (int r = 0; r < rows; r++) {
        const float d = h[r * cols + c] - mean;
        var += d * d;
    }
    var /= (float)rows;
    const float inv_std = 1.0f / sqrtf(var + eps);
    a.p[5][c] = inv_std;
    const float unbiased = (float)rows / ((float)rows - 1.0f);
    a.p[6][c] = a.p[6][c] * (1.0f - momentum) + mean * momentum;
    a.p[7][c] = a.p[7][c] * (1.0f - momentum) + var * unbiased * momentum;
    for (int r = 0; r < rows; r++) {
        const float xhat = (h[r * cols + c] - mean) * inv_std;
        h[r * cols + c] = xhat;
        y[r * cols + c] = leaky(gamma * xhat + beta, slope);
    }
}

/* The discriminator's output layer: out[r] = bias + x[r] . w. p0 out [rows], p1 x [rows x cols],
 * p2 w [cols], p3 bias [1]; i0 rows, i1 cols. */
KERNEL(row_logits) {
    const int cols = a.i[1];
    THREAD_INDEX(r, a.i[0]);
    float sum = 0.0f;
    for (int c = 0; c < cols; c++) sum += a.p[1][r * cols + c] * a.p[2][c];
    a.p[0][r] = a.p[3][0] + sum;
}

/* The generator's loss BCE(D(G(z)), 1) and its gradient per logit, in one thread.
 * p0 logits [rows], p1 dl out, p2 losses (pairs D, G); i0 rows, i1 slot. */
KERNEL(generator_loss) {
    THREAD_INDEX(t, 1);
    (void)t;
    const int rows = a.i[0];
    const double scale = 1.0 / rows;
    double sum = 0.0;
    for (int r = 0; r < rows; r++) {
        const double l = a.p[0][r];
        sum += softplus(l) - l;
        a.p[1][r] = (float)((sigmoid(l) - 1.0) * scale);
    }
    a.p[2][2 * a.i[1] + 1] = (float)(sum * scale);
}

/* The discriminator's loss over real rows 0..half and fake rows half..2 half, its gradient per
 * logit, and the output bias's gradient, in one thread.
 * p0 logits [2 half], p1 dl out, p2 losses, p3 bias grad [1]; i0 half, i1 slot; f0 real label. */
KERNEL(discriminator_loss) {
    THREAD_INDEX(t, 1);
    (void)t;
    const int half = a.i[0], rows = 2 * half;
    const double scale = 1.0 / rows;
    double sum = 0.0;
    float bias_grad = 0.0f;
    for (int r = 0; r < rows; r++) {
        const double l = a.p[0][r];
        const double target = r < half ? (double)a.f[0] : 0.0;
        sum += softplus(l) - target * l;
        const float g = (float)((sigmoid(l) - target) * scale);
        a.p[1][r] = g;
        bias_grad += g;
    }
    a.p[3][0] = bias_grad;
    a.p[2][2 * a.i[1]] = (float)(sum * scale);
}

/* Back through the output layer and the LeakyReLU before it: dh[r][c] = dl[r] w[c] slope(y).
 * p0 dh out, p1 dl [rows], p2 w [cols], p3 y [rows x cols]; i0 rows, i1 cols; f0 slope. */
KERNEL(logit_backward) {
    const int cols = a.i[1];
    THREAD_INDEX(t, a.i[0] * cols);
    const int r = t / cols, c = t % cols;
    a.p[0][t] = a.p[1][r] * a.p[2][c] * leaky_slope_at(a.p[3][t], a.f[0]);
}

/* g *= LeakyReLU'(y). p0 g, p1 y; i0 n; f0 slope. */
KERNEL(leaky_backward) {
    THREAD_INDEX(t, a.i[0]);
    a.p[0][t] *= leaky_slope_at(a.p[1][t], a.f[0]);
}

/* Back through the output Tanh: g = dy (1 - y^2). p0 g out, p1 dy, p2 y; i0 n. */
KERNEL(tanh_backward) {
    THREAD_INDEX(t, a.i[0]);
    const float y = a.p[2][t];
    a.p[0][t] = a.p[1][t] * (1.0f - y * y);
}

/* out[c] = sum over rows of x[r][c]. p0 out [cols], p1 x; i0 rows, i1 cols. */
KERNEL(column_sums) {
    const int rows = a.i[0], cols = a.i[1];
    THREAD_INDEX(c, cols);
    float sum = 0.0f;
    for (int r = 0; r < rows; r++) sum += a.p[1][r * cols + c];
    a.p[0][c] = sum;
}

/* out[c] = sum over rows of w[r] x[r][c]. p0 out [cols], p1 x, p2 w [rows]; i0 rows, i1 cols. */
KERNEL(weighted_column_sums) {
    const int rows = a.i[0], cols = a.i[1];
    THREAD_INDEX(c, cols);
    float sum = 0.0f;
    for (int r = 0; r < rows; r++) sum += a.p[2][r] * a.p[1][r * cols + c];
    a.p[0][c] = sum;
}

/* Back through LeakyReLU and BatchNorm (training mode); one thread per feature. du becomes the
 * gradient with respect to the normalised layer's input.
 * p0 du [rows x cols], p1 y, p2 xhat, p3 inv_std, p4 gamma, p5 gamma grad out, p6 beta grad out;
 * i0 rows, i1 cols; f0 slope. */
KERNEL(batch_norm_backward) {
    const int rows = a.i[0], cols = a.i[1];
    THREAD_INDEX(c, cols);
    float *du = a.p[0];
    const float *y = a.p[1], *xhat = a.p[2];
    float beta_grad = 0.0f, gamma_grad = 0.0f;
    for (int r = 0; r < rows; r++) {
        const float g = du[r * cols + c] * leaky_slope_at(y[r * cols + c], a.f[0]);
        du[r * cols + c] = g;
        beta_grad += g;
        gamma_grad += g * xhat[r * cols + c];
    }
    a.p[5][c] = gamma_grad;
    a.p[6][c] = beta_grad;
    const float n = (float)rows;
    const float scale = a.p[4][c] * a.p[3][c] / n;
    for (int r = 0; r < rows; r++) {
        const int t = r * cols + c;
        du[t] = scale * (n * du[t] - beta_grad - xhat[t] * gamma_grad);
    }
}

/* One Adam step (no weight decay) over a whole network's parameters, and the weight average's
 * update when there is one. p0 values, p1 grads, p2 m, p3 v, p4 average (null: none); i0 n;
 * f0 beta1, f1 beta2, f2 step size (lr / bias correction 1), f3 sqrt(bias correction 2),
 * f4 eps, f5 the average's rate (1 - decay). */
KERNEL(adam) {
    THREAD_INDEX(t, a.i[0]);
    const float b1 = a.f[0], b2 = a.f[1];
    const float g = a.p[1][t];
    const float m = b1 * a.p[2][t] + (1.0f - b1) * g;
    const float v = b2 * a.p[3][t] + (1.0f - b2) * g * g;
    a.p[2][t] = m;
    a.p[3][t] = v;
    const float value = a.p[0][t] - a.f[2] * m / (sqrtf(v) / a.f[3] + a.f[4]);
    a.p[0][t] = value;
    if (a.p[4]) a.p[4][t] += a.f[5] * (value - a.p[4][t]);
}
