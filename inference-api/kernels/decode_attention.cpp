// Decode attention on the CPU: one new token per row against that row's cached keys and values,
// read in place from the KV cache. Built at first use by native_attention.py for the
// machine it runs on (-march=native) and called through ctypes, once per layer.
//
// Why a kernel of our own: with torch ops, a decode step's attention is a batched matmul over
// a copy of the rows (a CPU bmm streams only contiguous batches), a mask, a softmax and a
// second bmm, per group of rows of similar length, each op a fork and join of the thread pool.
// Here one parallel region per layer streams each row's keys and values once, in float32
// arithmetic, and writes the new key and value into the cache on the way.
//
// Keys are stored in tiles of 16 positions, [tiles, head_dim / 2, 16, 2]: a row's keys are one
// contiguous stream (a [head_dim, seq] layout makes q.k read head_dim short runs at a time,
// measured 1.4x slower), and each 64-byte line holds two dimensions of 16 positions, which
// bfloat16 turns into two float32 vectors with one shift and one mask. Values stay
// [seq, head_dim]: the weighted sum over positions reads them in order as they are.
//
// Threads come from `#pragma omp parallel`: linked against libgomp.so.1, the library resolves
// to the one torch has already loaded, so the kernel shares torch's threads, never adds its own.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace {

// GCC/Clang vector extensions: the compiler maps them to whatever the CPU has (AVX-512: one
// register; AVX2: two), so one source serves every x86 and Arm machine.
typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef float f32x32 __attribute__((vector_size(128)));

constexpr int W = 16;        // floats per vector; also positions per key tile
// Block sizes keep every accumulator in a register. AVX-512 has 32 registers of 16 floats: 4
// heads by 4 key tiles (or 4 vectors of head dims) is 16 accumulators beside the loaded keys.
// Without it a 16-float vector takes two of only 16 registers, and those blocks spilled to the
// stack at every step of the inner loops (measured 3x slower on an AVX2 machine): there,
// 3 heads (a common group size) by one tile or one vector of dims.
#ifdef __AVX512F__
constexpr int TILES = 4;     // key tiles per q.k block
constexpr int HEADS = 4;     // query heads sharing a kv head, handled together
constexpr int DIM_VECS = 4;  // head dims per p.v block, in vectors
#else
constexpr int TILES = 1;
constexpr int HEADS = 3;
constexpr int DIM_VECS = 1;
#endif
constexpr int MAX_GROUP = 64;

typedef uint16_t bf16;

inline f32x16 splat(float x) { return f32x16{} + x; }

inline f32x16 load16(const float *p) { f32x16 v; std::memcpy(&v, p, sizeof v); return v; }

inline f32x16 load16(const bf16 *p) {  // bfloat16 is the top half of a float32
    u16x16 h;
    std::memcpy(&h, p, sizeof h);
    u32x16 u = __builtin_convertvector(h, u32x16) << 16;
    f32x16 f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) {
    uint32_t u = uint32_t(x) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline void store(float *p, float x) { *p = x; }
inline void store(bf16 *p, float x) {  // round to nearest even, as torch does
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    *p = bf16(u >> 16);
}

// e^x for x <= 0 (scores minus their maximum): 2^(x log2 e) split into an integer power of two
// and Cephes' degree-6 polynomial for 2^f on [-0.5, 0.5]. Relative error measured under 3.3e-7
// for x >= -20 and under 1.3e-6 down to -87, below which the result is held at e^-87.
inline f32x16 exp_nonpositive(f32x16 x) {
    x = x < splat(-87.0f) ? splat(-87.0f) : x;
    f32x16 t = x * 1.44269504f;
    f32x16 r = (t + 12582912.0f) - 12582912.0f;  // round to nearest: 1.5 * 2^23
    f32x16 f = t - r;
    f32x16 p = splat(1.535336188319500e-4f);
    p = p * f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    i32x16 bits;
    std::memcpy(&bits, &p, sizeof bits);
    bits += __builtin_convertvector(r, i32x16) << 23;
    std::memcpy(&p, &bits, sizeof p);
    return p;
}

// One line of a key tile, two dimensions of 16 positions ([16, 2] pairs), as two vectors.
inline void load_pairs(const bf16 *p, f32x16 &even, f32x16 &odd) {
    u32x16 u;
    std::memcpy(&u, p, sizeof u);
    const u32x16 e = u << 16, o = u & 0xFFFF0000u;  // a float32 is its bfloat16 and 16 zero bits
    std::memcpy(&even, &e, sizeof even);
    std::memcpy(&odd, &o, sizeof odd);
}

inline void load_pairs(const float *p, f32x16 &even, f32x16 &odd) {
    f32x32 x;
    std::memcpy(&x, p, sizeof x);
    even = __builtin_shufflevector(x, x, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    odd = __builtin_shufflevector(x, x, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

// scores[g][t * 16 + i] = q[g] . key i of tile t, for `tiles` tiles of k [tiles, dim/2, 16, 2].
template <typename T>
void query_key(const float *q, int group, int dim, const T *k, int64_t tiles, float *scores,
               int64_t scores_stride) {
    const int64_t tile_size = int64_t(dim) * W;
    for (int64_t t0 = 0; t0 < tiles; t0 += TILES) {
        const int block = int(std::min<int64_t>(TILES, tiles - t0));
        for (int g0 = 0; g0 < group; g0 += HEADS) {
            const int heads = std::min(HEADS, group - g0);
            f32x16 acc[HEADS][TILES] = {};
            for (int pair = 0; pair < dim / 2; pair++) {
                f32x16 even[TILES], odd[TILES];
                for (int t = 0; t < block; t++)
                    load_pairs(k + (t0 + t) * tile_size + pair * 2 * W, even[t], odd[t]);
                for (int g = 0; g < heads; g++) {
                    const float *qg = q + (g0 + g) * dim + 2 * pair;
                    const f32x16 qe = splat(qg[0]), qo = splat(qg[1]);
                    for (int t = 0; t < block; t++) acc[g][t] += qe * even[t] + qo * odd[t];
                }
            }
            for (int g = 0; g < heads; g++)
                for (int t = 0; t < block; t++)
                    std::memcpy(scores + (g0 + g) * scores_stride + (t0 + t) * W, &acc[g][t], 64);
        }
    }
}

// The same for float32 keys, without taking each line's pairs apart: a line is 16 positions of
// (dim 2p, dim 2p+1), so multiplying its two halves by (q[2p], q[2p+1], q[2p], ...) and adding
// over p leaves each position's score as the sum of two neighbouring lanes, added once per
// tile. Taking pairs apart at every line instead costs a dozen shuffles per line (measured 1.6x
// slower on AVX2).
void query_key(const float *q, int group, int dim, const float *k, int64_t tiles, float *scores,
               int64_t scores_stride) {
    constexpr int PAIR_HEADS = 2;
    const int64_t tile_size = int64_t(dim) * W;
    for (int64_t t = 0; t < tiles; t++) {
        const float *tile = k + t * tile_size;
        for (int g0 = 0; g0 < group; g0 += PAIR_HEADS) {
            const int heads = std::min(PAIR_HEADS, group - g0);
            f32x16 low[PAIR_HEADS] = {}, high[PAIR_HEADS] = {};
            for (int pair = 0; pair < dim / 2; pair++) {
                const f32x16 first = load16(tile + pair * 2 * W), second = load16(tile + pair * 2 * W + W);
                for (int g = 0; g < heads; g++) {
                    const float *qg = q + (g0 + g) * dim + 2 * pair;
                    f32x16 qq;
                    for (int i = 0; i < W; i += 2) { qq[i] = qg[0]; qq[i + 1] = qg[1]; }
                    low[g] += first * qq;
                    high[g] += second * qq;
                }
            }
            for (int g = 0; g < heads; g++) {
                f32x32 both = __builtin_shufflevector(low[g], high[g], 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                    10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29,
                    30, 31);
                f32x16 even = __builtin_shufflevector(both, both, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18,
                    20, 22, 24, 26, 28, 30);
                f32x16 odd = __builtin_shufflevector(both, both, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19,
                    21, 23, 25, 27, 29, 31);
                f32x16 sum = even + odd;
                std::memcpy(scores + (g0 + g) * scores_stride + t * W, &sum, 64);
            }
        }
    }
}

// s[p] = e^(s[p] - max s) for p < n, about e^-87 in the padding; returns 1 / sum.
float softmax_numerators(float *s, int64_t n) {
    const int64_t vecs = (n + W - 1) / W;
    for (int64_t p = n; p < vecs * W; p++) s[p] = -1e30f;
    f32x16 m = load16(s);
    for (int64_t j = 1; j < vecs; j++) { f32x16 x = load16(s + j * W); m = x > m ? x : m; }
    float top = m[0];
    for (int i = 1; i < W; i++) top = std::max(top, m[i]);
    f32x16 sum = {};
    for (int64_t j = 0; j < vecs; j++) {
        f32x16 e = exp_nonpositive(load16(s + j * W) - top);
        sum += e;
        std::memcpy(s + j * W, &e, 64);
    }
    float total = 0;
    for (int i = 0; i < W; i++) total += sum[i];
    return 1.0f / total;
}

// out[g] = sum_p weights[g][p] * v[p] for p < n, with v [n, dim] contiguous.
template <typename T>
void weights_values(const float *weights, int group, int dim, const T *v, int64_t n,
                    int64_t weights_stride, float *out) {
    for (int d0 = 0; d0 < dim; d0 += DIM_VECS * W) {
        const int vecs = std::min(DIM_VECS, (dim - d0) / W);
        for (int g0 = 0; g0 < group; g0 += HEADS) {
            const int heads = std::min(HEADS, group - g0);
            f32x16 acc[HEADS][DIM_VECS] = {};
            for (int64_t p = 0; p < n; p++) {
                const T *row = v + p * dim + d0;
                f32x16 values[DIM_VECS];
                for (int j = 0; j < vecs; j++) values[j] = load16(row + j * W);
                for (int g = 0; g < heads; g++) {
                    const f32x16 w = splat(weights[(g0 + g) * weights_stride + p]);
                    for (int j = 0; j < vecs; j++) acc[g][j] += w * values[j];
                }
            }
            for (int g = 0; g < heads; g++)
                for (int j = 0; j < vecs; j++)
                    std::memcpy(out + (g0 + g) * dim + d0 + j * W, &acc[g][j], 64);
        }
    }
}

template <typename T>
void decode_attention(const T *q, const T *k_new, const T *v_new, T *k_cache, T *v_cache,
                      const int64_t *rows, const int64_t *positions, int64_t n_rows,
                      int64_t kv_heads, int64_t group, int64_t dim, int64_t cache_seq,
                      int64_t window, T *out) {
    // Scores start at the tile of the first visible position: room for one tile more.
    const int64_t scores_stride = cache_seq + 2 * W;
    #pragma omp parallel
    {
        float *scores = static_cast<float *>(std::malloc(sizeof(float) * group * scores_stride));
        float *qf = static_cast<float *>(std::malloc(sizeof(float) * group * dim));
        float *of = static_cast<float *>(std::malloc(sizeof(float) * group * dim));
        // Rows differ in length by up to 100x: hand out (row, kv head) tasks one at a time.
        #pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < n_rows * kv_heads; task++) {
            const int64_t i = task / kv_heads, h = task % kv_heads;
            const int64_t pos = positions[i], length = pos + 1;
            const int64_t first = (window > 0 && length > window) ? length - window : 0;
            T *k = k_cache + (rows[i] * kv_heads + h) * cache_seq * dim;  // [tiles, dim/2, 16, 2]
            T *v = v_cache + (rows[i] * kv_heads + h) * cache_seq * dim;  // [cache_seq, dim]
            const T *kn = k_new + task * dim, *vn = v_new + task * dim;
            T *slot = k + (pos / W) * dim * W + (pos % W) * 2;
            for (int64_t d = 0; d < dim; d += 2) {
                slot[d * W] = kn[d];
                slot[d * W + 1] = kn[d + 1];
            }
            std::memcpy(v + pos * dim, vn, dim * sizeof(T));
            const T *qi = q + task * group * dim;
            for (int64_t x = 0; x < group * dim; x++) qf[x] = to_float(qi[x]);
            // Scores for whole tiles from the first visible position's tile; the softmax and the
            // weighted sum take only positions [first, length), so stale keys never count.
            const int64_t base = first / W * W, skip = first - base, n = length - first;
            query_key(qf, int(group), int(dim), k + base * dim, (length - base + W - 1) / W,
                      scores, scores_stride);
            float inverse_sum[MAX_GROUP];
            for (int g = 0; g < group; g++)
                inverse_sum[g] = softmax_numerators(scores + g * scores_stride + skip, n);
            weights_values(scores + skip, int(group), int(dim), v + first * dim, n, scores_stride,
                           of);
            T *o = out + task * group * dim;
            for (int g = 0; g < group; g++)
                for (int64_t d = 0; d < dim; d++)
                    store(o + g * dim + d, of[g * dim + d] * inverse_sum[g]);
        }
        std::free(scores);
        std::free(qf);
        std::free(of);
    }
}

}  // namespace

// q [rows, kv_heads, group, dim] (already scaled), k_new/v_new [rows, kv_heads, dim], one
// layer's k_cache [cache_rows, kv_heads, cache_seq / 16, dim / 2, 16, 2] and v_cache
// [cache_rows, kv_heads, cache_seq, dim], rows/positions [rows] int64 (cache row and position of
// each new token), window 0 for full attention; out like q. All contiguous. cache_seq and dim
// multiples of 16, group <= 64.
#define EXPORT(name, T)                                                                       \
    extern "C" void name(const T *q, const T *k_new, const T *v_new, T *k_cache, T *v_cache,    \
                         const int64_t *rows, const int64_t *positions, int64_t n_rows,       \
                         int64_t kv_heads, int64_t group, int64_t dim, int64_t cache_seq,     \
                         int64_t window, T *out) {                                            \
        decode_attention(q, k_new, v_new, k_cache, v_cache, rows, positions, n_rows, kv_heads, \
                         group, dim, cache_seq, window, out);                                 \
    }
EXPORT(decode_attention_bf16, bf16)
EXPORT(decode_attention_f32, float)
