// Origami's CUDA kernels. Compiled at run time by NVRTC (once per accelerator); the unit tests also
// compile this same file with the host C++ compiler behind a small shim (src/emu_shim.h) and run
// every kernel as one serial thread, so the index arithmetic is checked without a GPU.
//
// Rules that keep both compilations valid:
// - every kernel is a grid-stride loop (any launch size is correct, one thread included);
// - only plain C types: int sizes, long long flat indices, no headers, no CUDA-only intrinsics
//   other than __int_as_float (shimmed);
// - the field constants come from a prelude the host prepends (FIELD_P, LIMB_OFFSET,
//   LIMB_THRESHOLD, MAX_TERMS, INPUT_LIMBS), generated from the Rust constants.

typedef signed char i8;
typedef long long i64;

#define GRID_LOOP(i, n)                                                               \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n);             \
         i += (i64)blockDim.x * gridDim.x)

// ============================== field (exact) ==============================

// im2col and limb split for one image of blinded values x[in_c][h][w] (each in [0, p)).
// Writes B[g][limb][pixel < pp][kk < kp] (int8): the balanced base-256 digits of the
// representative v ≡ x (mod p), v ∈ [-0x808080, 0x7F7F7F]; zero in the padding (kk ≥ k,
// pixel ≥ npix, or a tap outside the image). See src/limbs.rs for the scheme and its proof.
extern "C" __global__ void field_im2col_limbs(const unsigned int* x, i8* b, int in_c, int h,
                                              int w, int kh, int kw, int sy, int sx, int pt,
                                              int pl, int ow, int groups, int k, int kp,
                                              int npix, int pp) {
    const int ipg = in_c / groups;
    const i64 limb_stride = (i64)pp * kp;
    const i64 total = (i64)groups * limb_stride;
    GRID_LOOP(idx, total) {
        const int kk = (int)(idx % kp);
        const i64 r = idx / kp;
        const int pix = (int)(r % pp);
        const int g = (int)(r / pp);
        unsigned int xb = 0;
        if (kk < k && pix < npix) {
            const int ci = kk / (kh * kw);
            const int rem = kk - ci * (kh * kw);
            const int ky = rem / kw;
            const int kx = rem - ky * kw;
            const int oy = pix / ow;
            const int ox = pix - oy * ow;
            const int iy = oy * sy + ky - pt;
            const int ix = ox * sx + kx - pl;
            if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                xb = x[((i64)(g * ipg + ci) * h + iy) * w + ix];
        }
        const int v = (xb > LIMB_THRESHOLD) ? (int)xb - FIELD_P : (int)xb;
        const unsigned int u = (unsigned int)(v + LIMB_OFFSET);  // in [0, 2^24)
        const i64 base = (i64)g * INPUT_LIMBS * limb_stride + (i64)pix * kp + kk;
        b[base] = (i8)((int)(u & 255u) - 128);
        b[base + limb_stride] = (i8)((int)((u >> 8) & 255u) - 128);
        b[base + 2 * limb_stride] = (i8)((int)((u >> 16) & 255u) - 128);
    }
}

// Recombination and reduction: y[oc][pixel] = Σ_t 256^t · s_t mod p, where
// s_t = Σ_chunks Σ_{i+j=t} C[chunk][g][i·pp + pixel][j·mp + oc_in_group] (int32 GEMM results,
// each |C| ≤ 2^30). 64-bit sums, Horner's rule mod p; results in [0, p).
extern "C" __global__ void field_reduce(const int* c, unsigned int* y, int out_c, int groups,
                                        int npix, int pp, int mp, int lw, int chunks) {
    const int opg = out_c / groups;
    const i64 nc = (i64)INPUT_LIMBS * pp;
    const i64 mg = (i64)lw * mp;
    GRID_LOOP(idx, (i64)out_c * npix) {
        const int oc = (int)(idx / npix);
        const int pix = (int)(idx - (i64)oc * npix);
        const int g = oc / opg;
        const int ocl = oc - g * opg;
        i64 s[MAX_TERMS];
        for (int t = 0; t < MAX_TERMS; ++t) s[t] = 0;
        for (int ch = 0; ch < chunks; ++ch) {
            const i64 block = ((i64)ch * groups + g) * nc * mg;
            for (int i = 0; i < INPUT_LIMBS; ++i)
                for (int j = 0; j < lw; ++j)
                    s[i + j] += (i64)c[block + ((i64)i * pp + pix) * mg + (i64)j * mp + ocl];
        }
        i64 r = 0;
        for (int t = INPUT_LIMBS + lw - 2; t >= 0; --t) {
            r = (r * 256 + s[t] % FIELD_P) % FIELD_P;  // |.| < 2^32 + 2^24
            if (r < 0) r += FIELD_P;
        }
        y[idx] = (unsigned int)r;
    }
}

// ============================== plain tail (f32) ==============================

// im2col for images [0, nb) of group g (x points at the first image):
// cols[b][kk][pixel], kk = (ci·kh + ky)·kw + kx over the group's input channels.
extern "C" __global__ void im2col_f32(const float* x, float* cols, int nb, int in_c, int h, int w,
                                      int kh, int kw, int sy, int sx, int pt, int pl, int oh,
                                      int ow, int groups, int g) {
    const int ipg = in_c / groups;
    const int k = ipg * kh * kw;
    const i64 npix = (i64)oh * ow;
    GRID_LOOP(idx, (i64)nb * k * npix) {
        const int pix = (int)(idx % npix);
        const i64 r = idx / npix;
        const int kk = (int)(r % k);
        const int b = (int)(r / k);
        const int ci = kk / (kh * kw);
        const int rem = kk - ci * (kh * kw);
        const int ky = rem / kw;
        const int kx = rem - ky * kw;
        const int oy = pix / ow;
        const int ox = pix - oy * ow;
        const int iy = oy * sy + ky - pt;
        const int ix = ox * sx + kx - pl;
        float v = 0.0f;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w)
            v = x[(((i64)b * in_c + g * ipg + ci) * h + iy) * w + ix];
        cols[idx] = v;
    }
}

// y[i] += bias[(i / plane) % channels], then max(·, 0) when relu != 0 (conv: plane = oh·ow;
// dense: plane = 1). Same order of operations as the CPU executor: (v + b).max(0).
extern "C" __global__ void bias_act(float* y, const float* bias, i64 n, int channels, i64 plane,
                                    int relu) {
    GRID_LOOP(i, n) {
        float v = y[i] + bias[(i / plane) % channels];
        if (relu) v = fmaxf(v, 0.0f);
        y[i] = v;
    }
}

// y = min(max(x, lo), hi): ReLU is clip(0, +inf). fmaxf/fminf ignore NaN like f32::max/min.
extern "C" __global__ void clip_f32(const float* x, float* y, i64 n, float lo, float hi) {
    GRID_LOOP(i, n) { y[i] = fminf(fmaxf(x[i], lo), hi); }
}

// Per-channel affine map (inference batch norm). Compiled with --fmad=false: x·s + t rounds
// twice, as on the CPU.
extern "C" __global__ void batchnorm_f32(const float* x, float* y, const float* scale,
                                         const float* shift, i64 n, int channels, i64 plane) {
    GRID_LOOP(i, n) {
        const int c = (int)((i / plane) % channels);
        y[i] = x[i] * scale[c] + shift[c];
    }
}

// Max (mode 0) or average (mode 1) pooling over planes x[planes][h][w]; padded cells are
// skipped; the average divides by the window size or by the cells counted
// (count_include_pad). Same summation order as the CPU executor.
extern "C" __global__ void pool_f32(const float* x, float* y, int planes, int h, int w, int oh,
                                    int ow, int kh, int kw, int sy, int sx, int pt, int pl,
                                    int mode, int count_include_pad) {
    GRID_LOOP(idx, (i64)planes * oh * ow) {
        const int ox = (int)(idx % ow);
        const i64 r = idx / ow;
        const int oy = (int)(r % oh);
        const i64 plane = r / oh;
        const float* src = x + plane * h * w;
        float acc = mode == 0 ? __int_as_float((int)0xff800000) : 0.0f;  // -inf for max
        int cnt = 0;
        for (int ky = 0; ky < kh; ++ky) {
            const int iy = oy * sy + ky - pt;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int ix = ox * sx + kx - pl;
                if (ix < 0 || ix >= w) continue;
                const float v = src[(i64)iy * w + ix];
                acc = mode == 0 ? fmaxf(acc, v) : acc + v;
                ++cnt;
            }
        }
        if (mode != 0) {
            const int div = count_include_pad ? kh * kw : (cnt > 0 ? cnt : 1);
            acc = acc / (float)div;
        }
        y[idx] = acc;
    }
}

// Global average pooling: one thread per plane, summed in double in order (as the CPU does).
extern "C" __global__ void global_avg_f32(const float* x, float* y, int planes, i64 hw) {
    GRID_LOOP(p, planes) {
        double s = 0.0;
        for (i64 i = 0; i < hw; ++i) s += (double)x[p * hw + i];
        y[p] = (float)(s / (double)hw);
    }
}

extern "C" __global__ void add_f32(const float* a, const float* b, float* y, i64 n) {
    GRID_LOOP(i, n) { y[i] = a[i] + b[i]; }
}

// Softmax of each row of `len` values: max, exp, sum in double, divide in double (as the CPU).
extern "C" __global__ void softmax_f32(const float* x, float* y, int rows, int len) {
    GRID_LOOP(r, rows) {
        const float* src = x + r * len;
        float* dst = y + r * len;
        float m = __int_as_float((int)0xff800000);
        for (int i = 0; i < len; ++i) m = fmaxf(m, src[i]);
        double s = 0.0;
        for (int i = 0; i < len; ++i) {
            const float e = expf(src[i] - m);
            dst[i] = e;
            s += (double)e;
        }
        for (int i = 0; i < len; ++i) dst[i] = (float)((double)dst[i] / s);
    }
}
