// The decoder layer's small operations, each in one pass over its rows: the residual add with
// the RMSNorm after it, and rotary embeddings of queries and keys (queries scaled, and each head
// normalized first in the families that norm queries and keys). Built at
// first use by fused.py for the machine it runs on, like the attention kernel, and called
// through ctypes once per operation and layer.
//
// Why: in torch ops each of these is five to ten kernels, each a pass over memory and a fork and
// join of the thread pool; a 32-row decode step spends more time in them than in attention.
//
// The results are torch's to the bit: every product and sum that torch rounds to bfloat16 is
// rounded here at the same place (round to nearest even), float32 products and sums are not
// contracted into fused multiply-adds (built with -ffp-contract=off), and a norm sums its
// squares in the order of torch's own reduction (torch_row_sum). SiLU stays a torch op: its
// exp is not ours to reproduce to the last bit.
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

typedef uint16_t bf16;

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) {
    uint32_t u = uint32_t(x) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// The value as the tensor's dtype holds it: float32 as is, bfloat16 rounded to nearest even.
template <typename T> inline float round_as(float x);
template <> inline float round_as<float>(float x) { return x; }
template <> inline float round_as<bf16>(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u = (x != x) ? 0x7FC00000u : ((u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u);
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline void store(float *p, float x) { *p = x; }
inline void store(bf16 *p, float x) {  // x is already rounded: its top half is the bfloat16
    uint32_t u;
    std::memcpy(&u, &x, 4);
    *p = bf16(u >> 16);
}

// Rows are shared among torch's threads only when there is enough work to pay for the fork.
constexpr int64_t PARALLEL_ELEMENTS = 1 << 15;

// The sum of a row of floats in the order torch's CPU reduction adds them (its cascade_sum for a
// contiguous row: 8-lane vectors, four accumulators, and accumulator levels every 16 steps), so
// that a norm's statistics are torch's to the bit.
constexpr int LANES = 8, ILP = 4, LEVELS = 4, LEVEL_POWER = 4;

float torch_row_sum(const float *v, int64_t n) {
    const int64_t vectors = n / LANES, steps = vectors / ILP;
    float acc[LEVELS][ILP][LANES] = {};
    int64_t i = 0;
    auto add_step = [&](int64_t step) {
        for (int k = 0; k < ILP; k++)
            for (int l = 0; l < LANES; l++) acc[0][k][l] += v[(step * ILP + k) * LANES + l];
    };
    while (i + (1 << LEVEL_POWER) <= steps) {
        for (int j = 0; j < (1 << LEVEL_POWER); j++) add_step(i++);
        for (int level = 1; level < LEVELS; level++) {
            for (int k = 0; k < ILP; k++)
                for (int l = 0; l < LANES; l++) {
                    acc[level][k][l] += acc[level - 1][k][l];
                    acc[level - 1][k][l] = 0.0f;
                }
            if (i & (((1 << LEVEL_POWER) - 1) << (level * LEVEL_POWER))) break;
        }
    }
    for (; i < steps; i++) add_step(i);
    for (int level = 1; level < LEVELS; level++)
        for (int k = 0; k < ILP; k++)
            for (int l = 0; l < LANES; l++) acc[0][k][l] += acc[level][k][l];
    for (int64_t vec = steps * ILP; vec < vectors; vec++)
        for (int l = 0; l < LANES; l++) acc[0][0][l] += v[vec * LANES + l];
    for (int k = 1; k < ILP; k++)
        for (int l = 0; l < LANES; l++) acc[0][0][l] += acc[0][k][l];
    float total = 0.0f;
    for (int64_t k = vectors * LANES; k < n; k++) total += v[k];
    for (int l = 0; l < LANES; l++) total += acc[0][0][l];
    return total;
}

// out = the RMSNorm of v [dim] (float32 values, as the tensor's dtype holds them) times the
// weight, as transformers computes it: float32 statistics, then Llama's weight * (the normalized
// row cast back), or Gemma's (the normalized row * (1 + weight)) in float32, cast once. `squares`
// is scratch room for dim floats.
template <typename T>
void normalize(const float *v, const T *weight, int64_t dim, float eps, bool gemma,
               float *squares, float *out) {
    for (int64_t i = 0; i < dim; i++) squares[i] = v[i] * v[i];
    const float scale = 1.0f / std::sqrt(torch_row_sum(squares, dim) / float(dim) + eps);
    for (int64_t i = 0; i < dim; i++) {
        const float y = v[i] * scale, w = to_float(weight[i]);
        out[i] = gemma ? round_as<T>(y * (1.0f + w)) : round_as<T>(w * round_as<T>(y));
    }
}

// x += delta (when given), then out = the RMSNorm of x: x [rows, dim].
template <typename T>
void add_rms_norm(T *x, const T *delta, const T *weight, T *out, int64_t rows, int64_t dim,
                  float eps, int gemma) {
    #pragma omp parallel if (rows * dim >= PARALLEL_ELEMENTS)
    {
        float *values = new float[3 * dim];
        float *squares = values + dim, *normed = values + 2 * dim;
        #pragma omp for
        for (int64_t r = 0; r < rows; r++) {
            T *xr = x + r * dim;
            for (int64_t i = 0; i < dim; i++) {
                float v = to_float(xr[i]);
                if (delta) {
                    v = round_as<T>(v + to_float(delta[r * dim + i]));
                    store(xr + i, v);
                }
                values[i] = v;
            }
            normalize(values, weight, dim, eps, gemma != 0, squares, normed);
            for (int64_t i = 0; i < dim; i++) store(out + r * dim + i, normed[i]);
        }
        delete[] values;
    }
}

// The first `heads + kv_heads` heads of each row of qkv [rows, stride], in place: each head's
// RMSNorm where q_norm / k_norm [dim] are given (Qwen3, Gemma 3), then its rotary embedding
// (rotate-half) over its first `rot` dims at the row's position of the cos/sin tables
// [positions, rot] (none where cos is null), and the first `heads` (the queries) times q_scale.
template <typename T>
void rotary(T *qkv, int64_t stride, const int64_t *positions, const T *cos, const T *sin, int rot,
            int64_t rows, int heads, int kv_heads, int dim, float q_scale, const T *q_norm,
            const T *k_norm, float eps, int gemma) {
    const int half = cos ? rot / 2 : 0;
    #pragma omp parallel if (rows * (heads + kv_heads) * dim >= PARALLEL_ELEMENTS)
    {
        float *values = new float[3 * dim];
        float *squares = values + dim, *normed = values + 2 * dim;
        #pragma omp for
        for (int64_t r = 0; r < rows; r++) {
            const int64_t at = cos ? positions[r] * rot : 0;
            const T *c = cos + at, *s = sin + at;  // unread without tables (half is 0)
            for (int h = 0; h < heads + kv_heads; h++) {
                T *x = qkv + r * stride + int64_t(h) * dim;
                float *v = values;
                for (int i = 0; i < dim; i++) v[i] = to_float(x[i]);
                if (q_norm) {
                    normalize(values, h < heads ? q_norm : k_norm, dim, eps, gemma != 0, squares,
                              normed);
                    v = normed;
                }
                for (int i = 0; i < half; i++) {
                    const float x1 = v[i], x2 = v[i + half];
                    v[i] = round_as<T>(round_as<T>(x1 * to_float(c[i]))
                                       + round_as<T>(-x2 * to_float(s[i])));
                    v[i + half] = round_as<T>(round_as<T>(x2 * to_float(c[i + half]))
                                              + round_as<T>(x1 * to_float(s[i + half])));
                }
                for (int i = 0; i < dim; i++)
                    store(x + i, h < heads ? round_as<T>(v[i] * q_scale) : v[i]);
            }
        }
        delete[] values;
    }
}

}  // namespace

#define EXPORT(suffix, T)                                                                       \
    extern "C" void add_rms_norm_##suffix(T *x, const T *delta, const T *weight, T *out,       \
                                          int64_t rows, int64_t dim, float eps, int gemma) {    \
        add_rms_norm<T>(x, delta, weight, out, rows, dim, eps, gemma);                          \
    }                                                                                           \
    extern "C" void rotary_##suffix(T *qkv, int64_t stride, const int64_t *positions,           \
                                    const T *cos, const T *sin, int rot, int64_t rows,          \
                                    int heads, int kv_heads, int dim, float q_scale,            \
                                    const T *q_norm, const T *k_norm, float eps, int gemma) {   \
        rotary<T>(qkv, stride, positions, cos, sin, rot, rows, heads, kv_heads, dim, q_scale,   \
                  q_norm, k_norm, eps, gemma);                                                  \
    }

EXPORT(bf16, bf16)
EXPORT(f32, float)
