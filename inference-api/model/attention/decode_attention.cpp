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
// The 8-bit cache (KV_CACHE_DTYPE=int8) halves what a step reads, and decode attention is bound
// by memory: each tile of 16 positions is the 16 positions' float32 scales, then 16 * head_dim
// int8 codes (value = code * scale, a scale per row, kv head and position). A key tile's codes
// are [head_dim, 16], so a row's keys are still one contiguous stream and a dimension's 16
// positions load and widen into one float vector; a value tile's are [16, head_dim]. The new
// token's key and value are quantized here as they are written, exactly as int8_cache.py does.
//
// Threads come from `#pragma omp parallel`: linked against libgomp.so.1, the library resolves
// to the one torch has already loaded, so the kernel shares torch's threads, never adds its own.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

// GCC/Clang vector extensions of the CPU's own width: 16 floats with AVX-512, 8 otherwise (AVX2;
// 4-float NEON registers take two). A wider vector than the machine has is not split into
// registers: the compiler keeps it in memory and every operation goes through the stack
// (measured 3x slower on an AVX2 machine), so the width follows the target.
#ifdef __AVX512F__
constexpr int V = 16;
#else
constexpr int V = 8;
#endif
typedef float vf __attribute__((vector_size(V * 4)));
typedef int32_t vi __attribute__((vector_size(V * 4)));
typedef uint32_t vu __attribute__((vector_size(V * 4)));
typedef uint16_t vh __attribute__((vector_size(V * 2)));

constexpr int W = 16;           // positions per key tile (the cache layout, whatever V is)
constexpr int LINE = W / V;     // vectors per 16 positions
constexpr int MAX_GROUP = 64;
// Blocks keep every accumulator in a register beside what the inner loop loads: AVX-512 has 32,
// AVX2 16. Query heads sharing a kv head are handled together so their keys are read once.
#ifdef __AVX512F__
constexpr int HEADS = 4;     // query heads per block
constexpr int TILES = 4;     // key tiles per q.k block
constexpr int DIM_VECS = 4;  // vectors of head dims per p.v block
#else
constexpr int HEADS = 3;
constexpr int TILES = 1;
constexpr int DIM_VECS = 2;
#endif

typedef uint16_t bf16;

inline vf splat(float x) { return vf{} + x; }

inline vf load(const float *p) { vf v; std::memcpy(&v, p, sizeof v); return v; }

inline vf load(const bf16 *p) {  // bfloat16 is the top half of a float32
    vh h;
    std::memcpy(&h, p, sizeof h);
    vu u = __builtin_convertvector(h, vu) << 16;
    vf f;
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

// V int8 values widened to float32. GCC's __builtin_convertvector widens int8 lane by lane
// through scalar registers (GCC 12, measured 2.4x slower than the bfloat16 cache), so x86 gets
// the one instruction that sign-extends 16 (or 8) bytes into int32 lanes.
inline vf load(const int8_t *p) {
    vi i;
#if defined(__AVX512F__)
    const __m512i x = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    std::memcpy(&i, &x, sizeof i);
#elif defined(__AVX2__)
    const __m256i x = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)));
    std::memcpy(&i, &x, sizeof i);
#else
    for (int lane = 0; lane < V; lane++) i[lane] = p[lane];
#endif
    return __builtin_convertvector(i, vf);
}

constexpr int64_t SCALES = W * 4;  // an int8 tile's 16 float32 scales, before its codes
inline int64_t tile_bytes(int64_t dim) { return SCALES + dim * W; }

// The symmetric 8-bit code of n values x[0..n) (a row's key or value at one position): the
// scale max |x| / 127 (0 for all zeros) and round(x / scale) to nearest even into q[i * stride].
template <typename T>
void quantize(const T *x, int64_t n, int8_t *q, int64_t stride, int8_t *scale) {
    float top = 0;
    for (int64_t i = 0; i < n; i++) top = std::max(top, std::fabs(to_float(x[i])));
    const float s = top / 127.0f, divisor = s > 0 ? s : 1.0f;
    for (int64_t i = 0; i < n; i++) {
        const float code = std::nearbyint(to_float(x[i]) / divisor);
        q[i * stride] = int8_t(std::min(127.0f, std::max(-127.0f, code)));
    }
    std::memcpy(scale, &s, sizeof s);
}

// e^x for x <= 0 (scores minus their maximum): 2^(x log2 e) split into an integer power of two
// and Cephes' degree-6 polynomial for 2^f on [-0.5, 0.5]. Relative error measured under 3.3e-7
// for x >= -20 and under 1.3e-6 down to -87, below which the result is held at e^-87.
inline vf exp_nonpositive(vf x) {
    x = x < splat(-87.0f) ? splat(-87.0f) : x;
    vf t = x * 1.44269504f;
    vf r = (t + 12582912.0f) - 12582912.0f;  // round to nearest: 1.5 * 2^23
    vf f = t - r;
    vf p = splat(1.535336188319500e-4f);
    p = p * f + 1.339887440266574e-3f;
    p = p * f + 9.618437357674640e-3f;
    p = p * f + 5.550332471162809e-2f;
    p = p * f + 2.402264791363012e-1f;
    p = p * f + 6.931472028550421e-1f;
    p = p * f + 1.0f;
    vi bits;
    std::memcpy(&bits, &p, sizeof bits);
    bits += __builtin_convertvector(r, vi) << 23;
    std::memcpy(&p, &bits, sizeof p);
    return p;
}

// scores[g][t * 16 + i] = q[g] . key i of tile t, for `tiles` tiles of bfloat16 keys
// [tiles, dim/2, 16, 2]. A line holds dims (2p, 2p+1) of 16 positions as 32-bit pairs: a shift
// and a mask turn each vector of pairs into two float vectors, one per dim.
void query_key(const float *q, int group, int dim, const bf16 *k, int64_t tiles, float *scores,
               int64_t scores_stride) {
    const int64_t tile_size = int64_t(dim) * W;
    for (int64_t t0 = 0; t0 < tiles; t0 += TILES) {
        const int block = int(std::min<int64_t>(TILES, tiles - t0));
        for (int g0 = 0; g0 < group; g0 += HEADS) {
            const int heads = std::min(HEADS, group - g0);
            vf acc[HEADS][TILES][LINE] = {};
            for (int pair = 0; pair < dim / 2; pair++) {
                vf even[TILES][LINE], odd[TILES][LINE];
                for (int t = 0; t < block; t++)
                    for (int j = 0; j < LINE; j++) {
                        vu u;
                        std::memcpy(&u, k + (t0 + t) * tile_size + pair * 2 * W + j * 2 * V,
                                    sizeof u);
                        const vu e = u << 16, o = u & 0xFFFF0000u;
                        std::memcpy(&even[t][j], &e, sizeof e);
                        std::memcpy(&odd[t][j], &o, sizeof o);
                    }
                for (int g = 0; g < heads; g++) {
                    const float *qg = q + (g0 + g) * dim + 2 * pair;
                    const vf qe = splat(qg[0]), qo = splat(qg[1]);
                    for (int t = 0; t < block; t++)
                        for (int j = 0; j < LINE; j++) acc[g][t][j] += qe * even[t][j] + qo * odd[t][j];
                }
            }
            for (int g = 0; g < heads; g++)
                for (int t = 0; t < block; t++)
                    std::memcpy(scores + (g0 + g) * scores_stride + (t0 + t) * W, acc[g][t],
                                sizeof acc[g][t]);
        }
    }
}

// The same for float32 keys, without taking the pairs apart: multiplying a line's vectors by
// (q[2p], q[2p+1], q[2p], ...) and adding over p leaves each position's score as the sum of two
// neighbouring lanes, added once per tile. Taking pairs apart at every line costs a shuffle per
// vector (measured 1.6x slower on AVX2).
void query_key(const float *q, int group, int dim, const float *k, int64_t tiles, float *scores,
               int64_t scores_stride) {
    constexpr int PAIR_HEADS = V == 16 ? 4 : 2;  // 2 * LINE accumulators a head
    const int64_t tile_size = int64_t(dim) * W;
    for (int64_t t = 0; t < tiles; t++) {
        const float *tile = k + t * tile_size;
        for (int g0 = 0; g0 < group; g0 += PAIR_HEADS) {
            const int heads = std::min(PAIR_HEADS, group - g0);
            vf acc[PAIR_HEADS][2 * LINE] = {};
            for (int pair = 0; pair < dim / 2; pair++) {
                vf line[2 * LINE];
                for (int j = 0; j < 2 * LINE; j++) line[j] = load(tile + pair * 2 * W + j * V);
                for (int g = 0; g < heads; g++) {
                    const float *qg = q + (g0 + g) * dim + 2 * pair;
                    vf qq;
                    for (int i = 0; i < V; i += 2) { qq[i] = qg[0]; qq[i + 1] = qg[1]; }
                    for (int j = 0; j < 2 * LINE; j++) acc[g][j] += line[j] * qq;
                }
            }
            for (int g = 0; g < heads; g++) {
                float lanes[2 * W];
                std::memcpy(lanes, acc[g], sizeof lanes);
                float *out = scores + (g0 + g) * scores_stride + t * W;
                for (int i = 0; i < W; i++) out[i] = lanes[2 * i] + lanes[2 * i + 1];
            }
        }
    }
}

// The same for int8 key tiles (16 float32 scales, then [dim, 16] int8 codes): a dimension's 16
// positions widen into one float vector, and each position's score is scaled once at the end.
// H heads and B tiles are template arguments so that every accumulator stays in a register
// (with bounds known only at run time the compiler kept them on the stack, and the int8 loops
// took 1.5x the time, measured in cache: longer than reading the bfloat16 cache from memory).
template <int H, int B>
void query_key_int8(const float *q, int dim, const int8_t *k, int64_t size, float *scores,
                    int64_t scores_stride) {
    vf acc[H][B][LINE] = {};
    for (int d = 0; d < dim; d++) {
        vf key[B][LINE];
        for (int t = 0; t < B; t++)
            for (int j = 0; j < LINE; j++)
                key[t][j] = load(k + t * size + SCALES + d * W + j * V);
        for (int g = 0; g < H; g++) {
            const vf qd = splat(q[g * dim + d]);
            for (int t = 0; t < B; t++)
                for (int j = 0; j < LINE; j++) acc[g][t][j] += qd * key[t][j];
        }
    }
    for (int t = 0; t < B; t++)
        for (int j = 0; j < LINE; j++) {
            const vf scale = load(reinterpret_cast<const float *>(k + t * size) + j * V);
            for (int g = 0; g < H; g++) {
                const vf s = acc[g][t][j] * scale;
                std::memcpy(scores + g * scores_stride + t * W + j * V, &s, sizeof s);
            }
        }
}

template <int B>
void query_key_int8(const float *q, int heads, int dim, const int8_t *k, int64_t size,
                    float *scores, int64_t scores_stride) {
    static_assert(HEADS <= 4, "query heads per block: one instance each up to 4");
    switch (heads) {
        case 1: return query_key_int8<1, B>(q, dim, k, size, scores, scores_stride);
        case 2: return query_key_int8<2, B>(q, dim, k, size, scores, scores_stride);
        case 3: return query_key_int8<3, B>(q, dim, k, size, scores, scores_stride);
        default: return query_key_int8<HEADS, B>(q, dim, k, size, scores, scores_stride);
    }
}

// The int8 loops ask for a block's cache lines before they read them, the keys' block of TILES
// tiles as they start it and the values' tile 4 tiles ahead: more reads in flight than the loops
// alone make (measured 25% faster at 1,000 positions; further ahead was slower).
void query_key(const float *q, int group, int dim, const int8_t *k, int64_t tiles, float *scores,
               int64_t scores_stride) {
    const int64_t size = tile_bytes(dim);
    for (int64_t t0 = 0; t0 < tiles; t0 += TILES) {
        const bool whole = t0 + TILES <= tiles;
        for (int64_t b = 0; b < TILES * size; b += 64) __builtin_prefetch(k + t0 * size + b);
        for (int g0 = 0; g0 < group; g0 += HEADS) {
            const int heads = std::min(HEADS, group - g0);
            if (whole) {
                query_key_int8<TILES>(q + g0 * dim, heads, dim, k + t0 * size, size,
                                      scores + g0 * scores_stride + t0 * W, scores_stride);
                continue;
            }
            for (int64_t t = t0; t < tiles; t++)
                query_key_int8<1>(q + g0 * dim, heads, dim, k + t * size, size,
                                  scores + g0 * scores_stride + t * W, scores_stride);
        }
    }
}

// s[p] = e^(s[p] - max s) for p < n, about e^-87 in the padding; returns 1 / sum.
float softmax_numerators(float *s, int64_t n) {
    const int64_t vecs = (n + V - 1) / V;
    for (int64_t p = n; p < vecs * V; p++) s[p] = -1e30f;
    vf m = load(s);
    for (int64_t j = 1; j < vecs; j++) { vf x = load(s + j * V); m = x > m ? x : m; }
    float top = m[0];
    for (int i = 1; i < V; i++) top = std::max(top, m[i]);
    vf sum = {};
    for (int64_t j = 0; j < vecs; j++) {
        vf e = exp_nonpositive(load(s + j * V) - top);
        sum += e;
        std::memcpy(s + j * V, &e, sizeof e);
    }
    float total = 0;
    for (int i = 0; i < V; i++) total += sum[i];
    return 1.0f / total;
}

// out[g] = sum_p weights[g][p] * v[first + p] for p < n, with v [positions, dim] contiguous.
template <typename T>
void weights_values(const float *weights, int group, int dim, const T *v, int64_t first,
                    int64_t n, int64_t weights_stride, float *out) {
    for (int d0 = 0; d0 < dim; d0 += DIM_VECS * V) {
        const int vecs = std::min(DIM_VECS, (dim - d0) / V);
        for (int g0 = 0; g0 < group; g0 += HEADS) {
            const int heads = std::min(HEADS, group - g0);
            vf acc[HEADS][DIM_VECS] = {};
            for (int64_t p = 0; p < n; p++) {
                const T *row = v + (first + p) * dim + d0;
                vf values[DIM_VECS];
                for (int j = 0; j < vecs; j++) values[j] = load(row + j * V);
                for (int g = 0; g < heads; g++) {
                    const vf w = splat(weights[(g0 + g) * weights_stride + p]);
                    for (int j = 0; j < vecs; j++) acc[g][j] += w * values[j];
                }
            }
            for (int g = 0; g < heads; g++)
                for (int j = 0; j < vecs; j++)
                    std::memcpy(out + (g0 + g) * dim + d0 + j * V, &acc[g][j], sizeof acc[g][j]);
        }
    }
}

// The same over int8 value tiles (16 float32 scales, then [16, dim] int8 codes), for H heads and
// dims d0 .. d0 + DV * V (H and DV template arguments, as in query_key_int8): each position's
// weight takes its scale, a tile at a time, before it multiplies the widened codes. The scales
// come first in a tile so that it is read in order (after the codes, each tile's first read
// jumped ahead of the stream the CPU prefetches: measured 10% slower).
template <int H, int DV>
void weights_values_int8(const float *weights, int dim, int d0, const int8_t *v, int64_t first,
                         int64_t n, int64_t weights_stride, float *out) {
    const int64_t size = tile_bytes(dim);
    vf acc[H][DV] = {};
    for (int64_t p = first, end = first + n; p < end;) {
        const int8_t *tile = v + p / W * size;
        for (int64_t b = 0; b < size; b += 64) __builtin_prefetch(tile + 4 * size + b);
        const int64_t stop = std::min(end, (p / W + 1) * W);
        float scaled[H][W];  // this tile's weights times its scales
        for (int64_t i = p; i < stop; i++) {
            float scale;
            std::memcpy(&scale, tile + (i % W) * 4, sizeof scale);
            for (int g = 0; g < H; g++)
                scaled[g][i % W] = weights[g * weights_stride + i - first] * scale;
        }
        for (; p < stop; p++) {
            const int8_t *codes = tile + SCALES + (p % W) * dim + d0;
            vf values[DV];
            for (int j = 0; j < DV; j++) values[j] = load(codes + j * V);
            for (int g = 0; g < H; g++) {
                const vf w = splat(scaled[g][p % W]);
                for (int j = 0; j < DV; j++) acc[g][j] += w * values[j];
            }
        }
    }
    for (int g = 0; g < H; g++)
        for (int j = 0; j < DV; j++)
            std::memcpy(out + g * dim + d0 + j * V, &acc[g][j], sizeof acc[g][j]);
}

template <int DV>
void weights_values_int8(const float *w, int heads, int dim, int d0, const int8_t *v,
                         int64_t first, int64_t n, int64_t stride, float *out) {
    switch (heads) {
        case 1: return weights_values_int8<1, DV>(w, dim, d0, v, first, n, stride, out);
        case 2: return weights_values_int8<2, DV>(w, dim, d0, v, first, n, stride, out);
        case 3: return weights_values_int8<3, DV>(w, dim, d0, v, first, n, stride, out);
        default: return weights_values_int8<HEADS, DV>(w, dim, d0, v, first, n, stride, out);
    }
}

void weights_values(const float *weights, int group, int dim, const int8_t *v, int64_t first,
                    int64_t n, int64_t stride, float *out) {
    for (int d0 = 0; d0 < dim; d0 += DIM_VECS * V)
        for (int g0 = 0; g0 < group; g0 += HEADS) {
            const int heads = std::min(HEADS, group - g0);
            const float *w = weights + g0 * stride;
            float *o = out + g0 * dim;
            switch (std::min(DIM_VECS, (dim - d0) / V)) {  // vectors of dims in this block
                case 1: weights_values_int8<1>(w, heads, dim, d0, v, first, n, stride, o); break;
                case 2: weights_values_int8<2>(w, heads, dim, d0, v, first, n, stride, o); break;
                case 3: weights_values_int8<3>(w, heads, dim, d0, v, first, n, stride, o); break;
                default: weights_values_int8<DIM_VECS>(w, heads, dim, d0, v, first, n, stride, o);
            }
        }
}

// A (row, kv head)'s share of a cache, and where its key tile t starts: cache_seq positions of
// dim values in the model's dtype, or cache_seq / 16 int8 tiles.
template <typename T>
int64_t head_size(const T *, int64_t cache_seq, int64_t dim) { return cache_seq * dim; }
inline int64_t head_size(const int8_t *, int64_t cache_seq, int64_t dim) {
    return cache_seq / W * tile_bytes(dim);
}
template <typename T>
T *key_tile(T *k, int64_t tile, int64_t dim) { return k + tile * dim * W; }
inline int8_t *key_tile(int8_t *k, int64_t tile, int64_t dim) { return k + tile * tile_bytes(dim); }

// The new token's key into its tile ([dim/2, 16, 2]) and value into [cache_seq, dim] as they are.
template <typename T>
void write_token(T *k, T *v, int64_t pos, const T *kn, const T *vn, int64_t dim) {
    T *slot = key_tile(k, pos / W, dim) + (pos % W) * 2;
    for (int64_t d = 0; d < dim; d += 2) {
        slot[d * W] = kn[d];
        slot[d * W + 1] = kn[d + 1];
    }
    std::memcpy(v + pos * dim, vn, dim * sizeof(T));
}

// The same into int8 tiles: quantized, each with its scale at the start of its tile.
template <typename T>
void write_token(int8_t *k, int8_t *v, int64_t pos, const T *kn, const T *vn, int64_t dim) {
    const int64_t tile = pos / W * tile_bytes(dim), slot = pos % W;
    quantize(kn, dim, k + tile + SCALES + slot, W, k + tile + slot * 4);
    quantize(vn, dim, v + tile + SCALES + slot * dim, 1, v + tile + slot * 4);
}

// Queries and outputs in T (bfloat16 or float32), the cache in C: T itself or int8 tiles.
template <typename T, typename C>
void decode_attention(const T *q, const T *k_new, const T *v_new, int64_t q_stride,
                      int64_t k_stride, int64_t v_stride, C *k_cache, C *v_cache,
                      const int64_t *rows, const int64_t *positions, int64_t n_rows,
                      int64_t kv_heads, int64_t group, int64_t dim, int64_t cache_seq,
                      int64_t window, float softcap, T *out) {
    // Scores start at the tile of the first visible position: room for one tile more.
    const int64_t scores_stride = cache_seq + 2 * W;
    const int64_t size = head_size(k_cache, cache_seq, dim);
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
            C *k = k_cache + (rows[i] * kv_heads + h) * size;  // key tiles
            C *v = v_cache + (rows[i] * kv_heads + h) * size;  // [cache_seq, dim] or value tiles
            if (k_new)  // null: the keys and values are in the cache already (a prompt's)
                write_token(k, v, pos, k_new + i * k_stride + h * dim,
                            v_new + i * v_stride + h * dim, dim);
            const T *qi = q + i * q_stride + h * group * dim;
            for (int64_t x = 0; x < group * dim; x++) qf[x] = to_float(qi[x]);
            // Scores for whole tiles from the first visible position's tile; the softmax and the
            // weighted sum take only positions [first, length), so stale keys never count.
            const int64_t base = first / W * W, skip = first - base, n = length - first;
            query_key(qf, int(group), int(dim), key_tile(k, base / W, dim),
                      (length - base + W - 1) / W, scores, scores_stride);
            if (softcap > 0)  // cap * tanh(score / cap) before the softmax (Gemma 2)
                for (int g = 0; g < group; g++)
                    for (int64_t p = 0; p < n; p++) {
                        float &s = scores[g * scores_stride + skip + p];
                        s = std::tanh(s / softcap) * softcap;
                    }
            float inverse_sum[MAX_GROUP];
            for (int g = 0; g < group; g++)
                inverse_sum[g] = softmax_numerators(scores + g * scores_stride + skip, n);
            weights_values(scores + skip, int(group), int(dim), v, first, n, scores_stride, of);
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

// q [rows, kv_heads, group, dim] (already scaled), k_new/v_new [rows, kv_heads, dim], each
// row contiguous, their rows q_stride, k_stride and v_stride elements apart (views of the step's
// stacked q, k, v projection are read where they are), or k_new and v_new null where the cache
// holds them already (a prompt's positions, several of one cache row), one layer's k_cache [cache_rows, kv_heads,
// cache_seq / 16, dim / 2, 16, 2] and v_cache [cache_rows, kv_heads, cache_seq, dim] in q's
// dtype, or both [cache_rows, kv_heads, cache_seq / 16, 64 + 16 * dim] int8 tiles (the _int8
// variants), rows/positions [rows] int64 (cache row and position of each new token), window 0
// for full attention, softcap 0 for scores not soft-capped (else cap * tanh(score / cap));
// out [rows, kv_heads, group, dim] contiguous. The caches contiguous, cache_seq and dim
// multiples of 16, group <= 64.
#define EXPORT(name, T, C)                                                                    \
    extern "C" void name(const T *q, const T *k_new, const T *v_new,                           \
                         int64_t q_stride, int64_t k_stride, int64_t v_stride,                \
                         C *k_cache, C *v_cache, const int64_t *rows, const int64_t *positions, \
                         int64_t n_rows, int64_t kv_heads, int64_t group, int64_t dim,         \
                         int64_t cache_seq, int64_t window, float softcap, T *out) {           \
        decode_attention(q, k_new, v_new, q_stride, k_stride, v_stride, k_cache, v_cache, rows, positions,      \
                         n_rows, kv_heads, group, dim, cache_seq, window, softcap, out);      \
    }
EXPORT(decode_attention_bf16, bf16, bf16)
EXPORT(decode_attention_f32, float, float)
EXPORT(decode_attention_int8_bf16, bf16, int8_t)
EXPORT(decode_attention_int8_f32, float, int8_t)
