// Per-row (per-token) int8 quantization of a linear layer's input, and the scaling of its
// output rows back, for QUANTIZATION=int8.
//
// quantize_rows: for each row of x [rows, cols] (bfloat16 or float32, rows `stride` elements
// apart):
//   amax = max |x|,  inv = 127 / amax (in float32),  scale = amax / 127,
//   q = rint(x * inv) + 128   (round half to even; 1..255 as uint8, 128 standing for 0)
// so that x ~ (q - 128) * scale. An all-zero row gets scale 0 and q all 128. These are the
// same float32 operations, in the same order, as quantized.quantize_rows_reference, so the
// results are equal bit for bit. No threads: a decode step's rows are a few tens of thousands
// of values, done in microseconds.
//
// scale_rows: y[r, c] = y[r, c] * scale[r] + bias[c] in place, computed in float32 and rounded
// to y's dtype once (bias may be null); threads only for large outputs (lm_head's).
#include <cmath>
#include <cstdint>
#include <cstring>

namespace {

inline float bf16_to_float(uint16_t bits) {
    uint32_t wide = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &wide, sizeof value);
    return value;
}

inline float bits_to_float(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

// |x| compared as integers: for finite values the magnitude's bits order like the magnitude.
inline float row_amax_bf16(const uint16_t* x, int64_t cols) {
    uint16_t top = 0;
    for (int64_t i = 0; i < cols; i++) {
        uint16_t magnitude = x[i] & 0x7fff;
        top = magnitude > top ? magnitude : top;
    }
    return bf16_to_float(top);
}

inline float row_amax_f32(const float* x, int64_t cols) {
    uint32_t top = 0;
    for (int64_t i = 0; i < cols; i++) {
        uint32_t bits;
        std::memcpy(&bits, x + i, sizeof bits);
        uint32_t magnitude = bits & 0x7fffffffu;
        top = magnitude > top ? magnitude : top;
    }
    return bits_to_float(top);
}

inline void quantize(const float* values, int64_t cols, float inv, uint8_t* q) {
    for (int64_t i = 0; i < cols; i++) {
        q[i] = static_cast<uint8_t>(static_cast<int32_t>(std::rint(values[i] * inv)) + 128);
    }
}

}  // namespace

extern "C" void quantize_rows_bf16(const uint16_t* x, int64_t rows, int64_t cols, int64_t stride,
                                   uint8_t* q, float* scale) {
    float wide[4096];  // a block of the row in float32, so the loops below vectorize
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t* row = x + r * stride;
        float amax = row_amax_bf16(row, cols);
        float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        scale[r] = amax / 127.0f;
        for (int64_t start = 0; start < cols; start += 4096) {
            int64_t n = cols - start < 4096 ? cols - start : 4096;
            for (int64_t i = 0; i < n; i++) wide[i] = bf16_to_float(row[start + i]);
            quantize(wide, n, inv, q + r * cols + start);
        }
    }
}

extern "C" void quantize_rows_f32(const float* x, int64_t rows, int64_t cols, int64_t stride,
                                  uint8_t* q, float* scale) {
    for (int64_t r = 0; r < rows; r++) {
        const float* row = x + r * stride;
        float amax = row_amax_f32(row, cols);
        float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        scale[r] = amax / 127.0f;
        quantize(row, cols, inv, q + r * cols);
    }
}

namespace {

inline uint16_t float_to_bf16(float value) {  // round to nearest even, as torch does
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    uint32_t quiet_nan = (bits >> 16) | 0x40u;  // a select, not a branch: the loops vectorize
    return static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

constexpr int64_t kParallelFrom = 1 << 14;  // values; below this, threads cost more than they save

}  // namespace

extern "C" void scale_rows_bf16(uint16_t* y, int64_t rows, int64_t cols, const float* scale,
                                const uint16_t* bias) {
#pragma omp parallel for if (rows * cols >= kParallelFrom)
    for (int64_t r = 0; r < rows; r++) {
        uint16_t* row = y + r * cols;
        const float s = scale[r];
        if (bias) {
            for (int64_t c = 0; c < cols; c++)
                row[c] = float_to_bf16(bf16_to_float(row[c]) * s + bf16_to_float(bias[c]));
        } else {
            for (int64_t c = 0; c < cols; c++) row[c] = float_to_bf16(bf16_to_float(row[c]) * s);
        }
    }
}

extern "C" void scale_rows_f32(float* y, int64_t rows, int64_t cols, const float* scale,
                               const float* bias) {
#pragma omp parallel for if (rows * cols >= kParallelFrom)
    for (int64_t r = 0; r < rows; r++) {
        float* row = y + r * cols;
        const float s = scale[r];
        if (bias) {
            for (int64_t c = 0; c < cols; c++) row[c] = row[c] * s + bias[c];
        } else {
            for (int64_t c = 0; c < cols; c++) row[c] = row[c] * s;
        }
    }
}
