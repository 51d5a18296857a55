// Native test of the kernel tier, built for the host or cross-built for
// aarch64 and run under qemu (tests/test_arm.py). No interpreter, no Python.
//
// Every SIMD kernel table the CPU supports (plain NEON, NEON dot product,
// AVX2, AVX-512 VNNI in both vector widths of its GEMV and block-sparse
// kernels) is compared with the scalar reference table function
// by function, and the three layer entry points (FullyConnected, Conv2D,
// DepthwiseConv2D) with the dispatcher's choice against force_reference. The math is integer up to
// the shared float epilogue, so every comparison is bit for bit (memcmp), and
// the reference itself is checked against a naive sum over decoded levels.
// Shapes step through primes and odd tails around the block sizes; outputs
// are poisoned before each call; seeds are fixed and printed with failures.
// Block-sparse weights (format version 2, packed here independently of the
// converter and checked by the library's own validator): every table's
// sparse_gemm against the scalar SparseGemm with FC-style and scattered
// (convolution-style) activation rows, and the sparse FullyConnected and
// Conv2D with each table pinned (isa_cap) against force_reference, at
// sparsities 0/50/90/99/100%, empty block rows, edge blocks, 8- and 16-bit
// indices, 1-4 threads and the int16/int32 worst cases.
//
// Usage: tfq_kernels_test --expect-isa=NAME [--seed=N]
//   NAME is what the dispatcher must select on this CPU (neon_dotprod under
//   `qemu-aarch64 -cpu max`, neon under `-cpu cortex-a53`, avx2 on x86-64);
//   a mismatch fails, so a missing fast path never passes silently. `any`
//   accepts the CPU's choice but still needs one SIMD table to test.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/kernels_internal.h"
#include "kernels/sparse/sparse.h"
#include "kernels/thread_pool.h"

namespace {

using tfq::Scheme;
using tfq::internal::KernelTable;

int g_failures = 0;
int g_checks = 0;

#define EXPECT(cond, ...)                                  \
  do {                                                     \
    ++g_checks;                                            \
    if (!(cond)) {                                         \
      if (++g_failures <= 20) {                            \
        std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
        std::fprintf(stderr, __VA_ARGS__);                 \
        std::fputc('\n', stderr);                          \
      }                                                    \
    }                                                      \
  } while (0)

const Scheme kSchemes[] = {Scheme::kBinary, Scheme::kTernary, Scheme::kPow2_3bit,
                           Scheme::kPow2_4bit};

// Valid codes of a scheme and the code of the largest |level| (positive).
std::vector<int> ValidCodes(Scheme s) {
  std::vector<int> v;
  for (int c = 0; c < (1 << tfq::SchemeBits(s)); ++c)
    if (tfq::CodeValid(s, c)) v.push_back(c);
  return v;
}

// The code of the largest (or most negative) level.
int MaxCode(Scheme s, bool negative) {
  int best = -1, best_level = 0;
  for (int c : ValidCodes(s)) {
    const int l = negative ? -tfq::CodeLevel(s, c) : tfq::CodeLevel(s, c);
    if (l > best_level) best = c, best_level = l;
  }
  return best;
}

// Packs codes[r * k + i] (row-major, logical k) into a dense layout of
// docs/format.md (compact: version 2 `dense`, rows ending in mini-blocks);
// padding gets code 0.
std::vector<uint8_t> Pack(Scheme s, const std::vector<int>& codes, int64_t rows, int64_t k,
                          bool compact = false) {
  const int bits = tfq::SchemeBits(s), wpb = tfq::WeightsPerBlock(s);
  const tfq::RowGeometry geo = tfq::DenseRowGeometry(s, k, compact);
  const int64_t row_bytes = geo.row_bytes;
  const int mb = tfq::MiniBlockBytes(s);
  std::vector<uint8_t> out(rows * row_bytes, 0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < k; ++i) {
      int64_t byte, t;
      if (i < geo.blocks * wpb) {
        const int64_t b = i / wpb, rem = i % wpb;
        t = rem / 32;
        byte = b * 32 + rem % 32;
      } else {
        const int64_t m = (i - geo.blocks * wpb) / 32, rem = (i - geo.blocks * wpb) % 32;
        t = rem / mb;
        byte = geo.blocks * 32 + m * mb + rem % mb;
      }
      out[r * row_bytes + byte] |= static_cast<uint8_t>(codes[r * k + i] << (t * bits));
    }
  }
  return out;
}

std::vector<int> RandomCodes(std::mt19937& rng, Scheme s, int64_t n) {
  const std::vector<int> valid = ValidCodes(s);
  std::uniform_int_distribution<int> pick(0, static_cast<int>(valid.size()) - 1);
  std::vector<int> c(n);
  for (auto& x : c) x = valid[pick(rng)];
  return c;
}

std::vector<int8_t> RandomQ(std::mt19937& rng, int64_t n) {
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> q(n);
  for (auto& x : q) x = static_cast<int8_t>(d(rng));
  return q;
}

std::vector<float> RandomFloats(std::mt19937& rng, int64_t n, float spread) {
  std::normal_distribution<float> d(0.0f, spread);
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}

bool SameBits(const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

// --------------------------------------------------------------------------
// Table-level tests

void TestAbsMax(const KernelTable& t, const KernelTable& ref, std::mt19937& rng) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t n : {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 127, 1031}) {
    for (int variant = 0; variant < 5; ++variant) {
      std::vector<float> x = RandomFloats(rng, n, 3.0f);
      std::uniform_int_distribution<int64_t> pos(0, n - 1);
      if (variant == 1) x[pos(rng)] = nan;
      if (variant == 2) x[pos(rng)] = -inf;
      if (variant == 3) x[n - 1] = -1e30f;  // the maximum in the scalar tail
      if (variant == 4) x.assign(n, 0.0f);
      bool bad_t = false, bad_r = false;
      const float mt = t.absmax(x.data(), n, &bad_t);
      const float mr = ref.absmax(x.data(), n, &bad_r);
      EXPECT(bad_t == bad_r, "%s absmax nonfinite n=%lld variant=%d", tfq::IsaName(t.isa),
             (long long)n, variant);
      if (!bad_r) {
        EXPECT(SameBits(&mt, &mr, sizeof(float)), "%s absmax n=%lld variant=%d: %g vs %g",
               tfq::IsaName(t.isa), (long long)n, variant, mt, mr);
      }
    }
  }
}

void TestQuantize(const KernelTable& t, const KernelTable& ref, std::mt19937& rng) {
  for (int64_t n : {1, 5, 15, 16, 17, 32, 33, 47, 129, 1000}) {
    for (int variant = 0; variant < 3; ++variant) {
      std::vector<float> x = RandomFloats(rng, n, 2.0f);
      float s;
      if (variant == 2) {
        // Ties: x * s lands exactly on k + 0.5 (round half to even).
        s = 1.0f;
        for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(static_cast<int>(i % 255) - 127) + 0.5f;
      } else {
        bool bad;
        const float amax = ref.absmax(x.data(), n, &bad);
        // variant 1: a scale a hair too large, so some values clamp at +-127.
        s = 127.0f / amax * (variant == 1 ? 1.01f : 1.0f);
      }
      std::vector<int8_t> q0;
      for (uint8_t flip : {0x00, 0x80}) {
        std::vector<int8_t> qt(n + 16, 99), qr(n + 16, 99);
        const int64_t st = t.quantize(x.data(), n, s, qt.data(), flip);
        const int64_t sr = ref.quantize(x.data(), n, s, qr.data(), flip);
        EXPECT(st == sr, "%s quantize sum n=%lld variant=%d flip=%d: %lld vs %lld", tfq::IsaName(t.isa),
               (long long)n, variant, flip, (long long)st, (long long)sr);
        EXPECT(SameBits(qt.data(), qr.data(), n + 16), "%s quantize n=%lld variant=%d flip=%d",
               tfq::IsaName(t.isa), (long long)n, variant, flip);
        // The biased codes are the plain ones xor 0x80 (BiasActivations).
        if (flip == 0) q0 = qr;
        for (int64_t i = 0; flip != 0 && i < n; ++i)
          EXPECT(static_cast<uint8_t>(qr[i]) == static_cast<uint8_t>(q0[i] ^ 0x80),
                 "ref quantize flip n=%lld i=%lld", (long long)n, (long long)i);
      }
    }
  }
}

void TestSumRows(const KernelTable& t, std::mt19937& rng) {
  if (t.sum_rows_i8 == nullptr) return;
  for (int64_t c : {1, 3, 8, 16, 24, 32, 40, 64, 96, 136, 256, 264, 576}) {
    for (int64_t rows : {1, 2, 7, 85, 300}) {
      std::vector<int8_t> q = RandomQ(rng, rows * c);
      if (rows == 7) q.assign(q.size(), -127);  // the extreme
      std::vector<int32_t> got(rows + 1, 12345), want(rows + 1, 12345);
      t.sum_rows_i8(q.data(), rows, c, got.data());
      for (int64_t r = 0; r < rows; ++r) {
        int64_t s = 0;
        for (int64_t j = 0; j < c; ++j) s += q[r * c + j];
        want[r] = static_cast<int32_t>(s);
      }
      EXPECT(got == want, "%s sum_rows_i8 rows=%lld c=%lld", tfq::IsaName(t.isa), (long long)rows,
             (long long)c);
    }
  }
}

void TestSum(const KernelTable& t, const KernelTable& ref, std::mt19937& rng) {
  for (int64_t n : {1, 15, 16, 17, 31, 100, 4099}) {
    std::vector<int8_t> q = RandomQ(rng, n);
    EXPECT(t.sum_i8(q.data(), n) == ref.sum_i8(q.data(), n), "%s sum_i8 n=%lld",
           tfq::IsaName(t.isa), (long long)n);
    std::vector<int8_t> hi(n, 127);
    EXPECT(t.sum_i8(hi.data(), n) == 127 * n, "%s sum_i8 all 127 n=%lld", tfq::IsaName(t.isa),
           (long long)n);
  }
}

// The int8 hand-over epilogue against HandoverCode (the portable definition):
// tails, strides, with and without bias, clamps at 0 and 6, NaN and infinite
// factors (NaN maps to code 0).
void TestEpilogueQ(const KernelTable& t, std::mt19937& rng) {
  if (t.epilogue_rows_q == nullptr) return;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::uniform_int_distribution<int32_t> acc_d(-3000, 3000);
  std::uniform_real_distribution<float> f_d(-0.004f, 0.006f);
  for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 33, 64, 96, 130, 200}) {
    for (int variant = 0; variant < 4; ++variant) {
      const int64_t rows = 1 + variant % 3, lda = n + 3, ldq = n + 5;
      std::vector<int32_t> acc(rows * lda);
      for (auto& v : acc) v = acc_d(rng);
      std::vector<float> f(n), b(n);
      for (auto& v : f) v = f_d(rng);
      for (auto& v : b) v = f_d(rng) * 500.0f;
      if (variant == 3) {
        f[0] = nan;
        f[n - 1] = inf;
        acc[n - 1] = 0;  // 0 * inf: NaN
      }
      const float* bp = variant % 2 ? b.data() : nullptr;
      std::vector<int8_t> qt(rows * ldq, 99), qr(rows * ldq, 99);
      t.epilogue_rows_q(acc.data(), lda, f.data(), bp, n, rows, qt.data(), ldq);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < n; ++i) {
          float v = static_cast<float>(acc[r * lda + i]) * f[i];
          if (bp) v = v + bp[i];
          qr[r * ldq + i] = tfq::internal::HandoverCode(v);
        }
      EXPECT(SameBits(qt.data(), qr.data(), qt.size()), "%s epilogue_rows_q n=%lld variant=%d",
             tfq::IsaName(t.isa), (long long)n, variant);
    }
  }
}

float Act(float v, tfq::Activation a) {
  if (a == tfq::Activation::kNone) return v;
  v = v < 0.0f ? 0.0f : v;
  return a == tfq::Activation::kRelu6 ? (v > 6.0f ? 6.0f : v) : v;
}

// The fused float epilogue (epilogue + residual ADD + statistics) against
// the three passes written out: every output bit-identical, same flag, and
// the same maximum when the outputs are finite. Tails, strides, every
// activation pair, with and without bias and residual, NaN / inf factors.
void TestEpilogueStats(const KernelTable& t, std::mt19937& rng) {
  if (t.epilogue_rows_stats == nullptr) return;
  using tfq::Activation;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::uniform_int_distribution<int32_t> acc_d(-3000, 3000);
  std::uniform_real_distribution<float> f_d(-0.004f, 0.006f);
  const Activation acts[] = {Activation::kNone, Activation::kRelu, Activation::kRelu6};
  for (int64_t n : {1, 7, 15, 16, 17, 33, 64, 130}) {
    for (int variant = 0; variant < 6; ++variant) {
      for (Activation a : acts) {
        for (Activation ra : acts) {
          const int64_t rows = 1 + variant % 3, lda = n + 3, ldy = n + 5, ldr = n + 2;
          std::vector<int32_t> acc(rows * lda);
          for (auto& v : acc) v = acc_d(rng);
          std::vector<float> f(n), b(n), res(rows * ldr);
          for (auto& v : f) v = f_d(rng);
          for (auto& v : b) v = f_d(rng) * 500.0f;
          for (auto& v : res) v = f_d(rng) * 800.0f;
          if (variant == 5) {
            f[0] = nan;
            f[n - 1] = inf;
          }
          const float* bp = variant % 2 ? b.data() : nullptr;
          const float* rp = variant >= 2 ? res.data() : nullptr;
          std::vector<float> yt(rows * ldy, 99.0f), yr(rows * ldy, 99.0f);
          float mt = 0.5f, mr = 0.5f;  // raised only: a start value survives when larger
          bool bt = false, br = false;
          t.epilogue_rows_stats(acc.data(), lda, f.data(), bp, n, rows, yt.data(), ldy, a, rp, ldr, ra, &mt,
                                &bt);
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < n; ++i) {
              float v = static_cast<float>(acc[r * lda + i]) * f[i];
              if (bp) v = v + bp[i];
              v = Act(v, a);
              if (rp) v = Act(v + rp[r * ldr + i], ra);
              yr[r * ldy + i] = v;
              const float m = std::fabs(v);
              if (!(m <= 3.402823466e38f)) br = true;
              else if (m > mr) mr = m;
            }
          EXPECT(SameBits(yt.data(), yr.data(), yt.size() * sizeof(float)),
                 "%s epilogue_rows_stats n=%lld variant=%d act=%d res act=%d", tfq::IsaName(t.isa),
                 (long long)n, variant, (int)a, (int)ra);
          EXPECT(bt == br && (br || mt == mr), "%s epilogue_rows_stats stats n=%lld variant=%d: %g/%d vs %g/%d",
                 tfq::IsaName(t.isa), (long long)n, variant, mt, bt, mr, br);
        }
      }
    }
  }
}

// Naive accumulator from unpacked codes: the executable definition.
int32_t NaiveDot(Scheme s, const int* codes, const int8_t* a, int64_t n) {
  int64_t acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<int64_t>(tfq::CodeLevel(s, codes[i])) * a[i];
  return static_cast<int32_t>(acc);
}

void GemmCase(const KernelTable& t, const KernelTable& ref, Scheme s, int64_t n_rows,
              int64_t n_act, int64_t nblocks, int mode, std::mt19937& rng, uint32_t seed,
              int64_t ntail = 0) {
  const int64_t wpb = tfq::WeightsPerBlock(s);
  const int64_t kp = nblocks * wpb + ntail * tfq::kMiniWeights;
  const int64_t lda = kp + (n_act > 1 ? 32 : 0);  // rows need not be contiguous
  const int64_t ldc = n_rows + 3;
  std::vector<int> codes;
  std::vector<int8_t> a;
  if (mode == 0) {
    codes = RandomCodes(rng, s, n_rows * kp);
    a = RandomQ(rng, n_act * lda);
  } else {
    // Worst case for the int16 lanes: every product at +-127 * MaxAbsLevel
    // with one sign (mode 1: positive, mode 2: negative).
    codes.assign(n_rows * kp, MaxCode(s, false));
    a.assign(n_act * lda, static_cast<int8_t>(mode == 1 ? 127 : -127));
  }
  // ntail > 0: version-2 dense rows (kp = nblocks whole blocks + ntail mini-blocks).
  const std::vector<uint8_t> w = Pack(s, codes, n_rows, kp, ntail > 0);
  const int64_t row_bytes = tfq::DenseRowGeometry(s, kp, ntail > 0).row_bytes;
  std::vector<int32_t> sumq(n_act);
  for (int64_t j = 0; j < n_act; ++j) sumq[j] = static_cast<int32_t>(ref.sum_i8(&a[j * lda], kp));
  std::vector<int32_t> ct(n_act * ldc, 0x5A5A5A5A), cr(n_act * ldc, 0x5A5A5A5A);
  t.gemm(s, w.data(), row_bytes, n_rows, a.data(), lda, sumq.data(), n_act, nblocks, ntail, ct.data(),
         ldc);
  ref.gemm(s, w.data(), row_bytes, n_rows, a.data(), lda, sumq.data(), n_act, nblocks, ntail,
           cr.data(), ldc);
  int bad = 0;
  for (int64_t j = 0; j < n_act; ++j) {
    for (int64_t i = 0; i < n_rows; ++i) {
      const int32_t want = NaiveDot(s, &codes[i * kp], &a[j * lda], kp);
      if (ct[j * ldc + i] != want || cr[j * ldc + i] != want) ++bad;
    }
  }
  EXPECT(bad == 0, "%s gemm %s rows=%lld act=%lld blocks=%lld tail=%lld mode=%d seed=%u: %d wrong",
         tfq::IsaName(t.isa), tfq::SchemeName(s), (long long)n_rows, (long long)n_act,
         (long long)nblocks, (long long)ntail, mode, seed, bad);
  // Elements outside [0, n_rows) of each output row stay untouched.
  int outside = 0;
  for (int64_t j = 0; j < n_act; ++j)
    for (int64_t i = n_rows; i < ldc; ++i) outside += ct[j * ldc + i] != 0x5A5A5A5A;
  EXPECT(outside == 0, "%s gemm %s rows=%lld act=%lld blocks=%lld: wrote outside its tile",
         tfq::IsaName(t.isa), tfq::SchemeName(s), (long long)n_rows, (long long)n_act,
         (long long)nblocks);
}

void TestGemm(const KernelTable& t, const KernelTable& ref, uint32_t seed) {
  std::mt19937 rng(seed);
  for (Scheme s : kSchemes) {
    for (int64_t n_rows : {1, 2, 3, 4, 5, 7, 9, 13}) {
      for (int64_t n_act : {1, 2, 3, 4, 5, 7}) {
        const int64_t nblocks = 1 + (n_rows * 7 + n_act * 3) % 5;
        GemmCase(t, ref, s, n_rows, n_act, nblocks, 0, rng, seed);
      }
    }
    // Long rows cross every int16 widening window (binary 8, ternary 16,
    // pow2_3bit 8 blocks, pow2_4bit every field), at the worst-case values.
    for (int64_t nblocks : {7, 8, 9, 16, 17, 33}) {
      if (!tfq::AccumulatorFits(s, nblocks * tfq::WeightsPerBlock(s))) continue;
      GemmCase(t, ref, s, 5, 1, nblocks, 1, rng, seed);
      GemmCase(t, ref, s, 3, 5, nblocks, 2, rng, seed);
      GemmCase(t, ref, s, 4, 2, nblocks, 0, rng, seed);
    }
    // Version-2 dense rows: every mini-block count (1 .. wpb/32 - 1) after
    // 0, 1 or several whole blocks, every panel shape, and the worst-case
    // values across a widening window.
    for (int64_t ntail = 1; ntail < tfq::WeightsPerBlock(s) / tfq::kMiniWeights; ++ntail) {
      for (int64_t nblocks : {0, 1, 3}) {
        for (int64_t n_rows : {1, 3, 9}) {
          for (int64_t n_act : {1, 2, 3, 5}) GemmCase(t, ref, s, n_rows, n_act, nblocks, 0, rng, seed, ntail);
        }
      }
      if (tfq::AccumulatorFits(s, 17 * tfq::WeightsPerBlock(s))) {
        GemmCase(t, ref, s, 5, 1, 16, 1, rng, seed, ntail);
        GemmCase(t, ref, s, 3, 5, 17, 2, rng, seed, ntail);
      }
    }
  }
}

void TestDepthwisePixel(const KernelTable& t, const KernelTable& ref, uint32_t seed) {
  std::mt19937 rng(seed);
  for (Scheme s : kSchemes) {
    for (int out_c : {1, 5, 16, 31, 32, 33, 64, 100, 129}) {
      for (int ntaps : {1, 9, 25, 260}) {
        for (int dm : {1, 2}) {
          if (out_c % dm) continue;
          for (int mode = 0; mode < 2; ++mode) {
            const int in_c = out_c / dm;
            const int64_t row_bytes = tfq::RowBytes(s, out_c);
            std::vector<int> codes = mode == 0 ? RandomCodes(rng, s, int64_t{ntaps} * out_c)
                                               : std::vector<int>(int64_t{ntaps} * out_c,
                                                                  MaxCode(s, true));
            const std::vector<uint8_t> w = Pack(s, codes, ntaps, out_c);
            // Each tap in its own buffer with 64 bytes of slack (the layer
            // code keeps that much after the image).
            std::vector<std::vector<int8_t>> bufs(ntaps);
            std::vector<const int8_t*> taps(ntaps);
            for (int k = 0; k < ntaps; ++k) {
              bufs[k] = mode == 0 ? RandomQ(rng, in_c + 64) : std::vector<int8_t>(in_c + 64, 127);
              taps[k] = (mode == 0 && k % 7 == 3) ? nullptr : bufs[k].data();  // zero padding
            }
            std::vector<int32_t> at(out_c + 8, 0x5A5A5A5A), ar(out_c + 8, 0x5A5A5A5A);
            t.depthwise_pixel(s, w.data(), row_bytes, taps.data(), ntaps, dm, out_c, at.data());
            ref.depthwise_pixel(s, w.data(), row_bytes, taps.data(), ntaps, dm, out_c, ar.data());
            int bad = 0;
            for (int o = 0; o < out_c; ++o) {
              int64_t want = 0;
              for (int k = 0; k < ntaps; ++k)
                if (taps[k]) want += int64_t{tfq::CodeLevel(s, codes[int64_t{k} * out_c + o])} * taps[k][o / dm];
              if (at[o] != want || ar[o] != want) ++bad;
            }
            EXPECT(bad == 0 && SameBits(at.data(), ar.data(), at.size() * 4),
                   "%s depthwise %s out_c=%d taps=%d dm=%d mode=%d seed=%u: %d wrong",
                   tfq::IsaName(t.isa), tfq::SchemeName(s), out_c, ntaps, dm, mode, seed, bad);
          }
        }
      }
    }
  }
}

// --------------------------------------------------------------------------
// Layer-level tests: dispatcher's choice vs force_reference, bit for bit.

struct Scratch {
  std::vector<uint64_t> storage;
  void* Get(size_t bytes) {
    storage.assign(bytes / 8 + 16, 0);
    auto p = reinterpret_cast<uintptr_t>(storage.data());
    return reinterpret_cast<void*>((p + 63) / 64 * 64);
  }
};

void TestFullyConnected(uint32_t seed, tfq::ThreadPool* pool) {
  std::mt19937 rng(seed);
  struct Shape { int64_t m, rows, k; };
  const Shape shapes[] = {{1, 1, 1},   {1, 5, 31},   {1, 13, 127}, {1, 7, 128}, {2, 9, 129},
                          {3, 37, 383}, {5, 4, 511}, {1, 61, 1031}, {7, 11, 67}, {4, 8, 2053}};
  int idx = 0;
  for (Scheme s : kSchemes) {
    for (const Shape& sh : shapes) {
      ++idx;
      const std::vector<int> codes = RandomCodes(rng, s, sh.rows * sh.k);
      const std::vector<uint8_t> packed = Pack(s, codes, sh.rows, sh.k);
      std::vector<float> x = RandomFloats(rng, sh.m * sh.k, 0.1f + (idx % 5));
      if (sh.m > 2) x[sh.k + 1] = std::numeric_limits<float>::quiet_NaN();  // row 1 non-finite
      if (sh.m > 3) std::fill(x.begin() + 2 * sh.k, x.begin() + 3 * sh.k, 0.0f);  // row 2 zero
      std::vector<float> scale = RandomFloats(rng, sh.rows, 0.2f), bias = RandomFloats(rng, sh.rows, 1.0f);
      tfq::PackedWeights w;
      w.scheme = s;
      w.codes = packed.data();
      w.rows = sh.rows;
      w.k = sh.k;
      w.row_bytes = tfq::RowBytes(s, sh.k);
      tfq::Epilogue e;
      e.scale = scale.data();
      e.per_channel_scale = idx % 4 != 3;
      e.bias = idx % 3 == 2 ? nullptr : bias.data();
      e.activation = static_cast<tfq::Activation>(idx % 3);
      std::vector<float> yt(sh.m * sh.rows, -777.0f), yr(sh.m * sh.rows, 777.0f);
      Scratch scratch;
      tfq::KernelOptions opt;
      opt.pool = pool;
      tfq::FullyConnected(x.data(), sh.m, w, e, yt.data(),
                          scratch.Get(tfq::FullyConnectedScratchBytes(w, sh.m)), opt);
      opt.force_reference = true;
      tfq::FullyConnected(x.data(), sh.m, w, e, yr.data(),
                          scratch.Get(tfq::FullyConnectedScratchBytes(w, sh.m)), opt);
      EXPECT(SameBits(yt.data(), yr.data(), yt.size() * sizeof(float)),
             "FullyConnected %s m=%lld rows=%lld k=%lld threads=%d seed=%u", tfq::SchemeName(s),
             (long long)sh.m, (long long)sh.rows, (long long)sh.k, pool ? pool->num_threads() : 1,
             seed);
      // The same weights as version-2 dense rows, prepared as the delegate
      // prepares them (execution layout included): the same bits.
      const std::vector<uint8_t> compact = Pack(s, codes, sh.rows, sh.k, true);
      tfq::PreparedWeights pw;
      EXPECT(pw.Init(s, compact.data(), sh.rows, sh.k, true), "compact Init k=%lld", (long long)sh.k);
      for (int pass = 0; pass < 2; ++pass) {
        pw.BuildExecLayout(pass == 1);
        const tfq::PackedWeights wc = pw.At(compact.data());
        std::vector<float> yc(sh.m * sh.rows, 555.0f);
        opt.force_reference = pass == 1;
        tfq::FullyConnected(x.data(), sh.m, wc, e, yc.data(),
                            scratch.Get(tfq::FullyConnectedScratchBytes(wc, sh.m)), opt);
        EXPECT(SameBits(yc.data(), yr.data(), yc.size() * sizeof(float)),
               "FullyConnected v2 dense %s m=%lld rows=%lld k=%lld reference=%d threads=%d seed=%u",
               tfq::SchemeName(s), (long long)sh.m, (long long)sh.rows, (long long)sh.k, pass,
               pool ? pool->num_threads() : 1, seed);
      }
    }
  }
}

void TestConv(bool depthwise, uint32_t seed, tfq::ThreadPool* pool) {
  std::mt19937 rng(seed);
  struct Geo { int n, h, w, c, kh, kw, sh, sw, dh, dw, same, oc_or_dm; };
  const Geo geos[] = {
      {1, 5, 5, 3, 3, 3, 1, 1, 1, 1, 1, 7},    {2, 7, 6, 16, 3, 3, 2, 2, 1, 1, 1, 33},
      {1, 8, 8, 32, 1, 1, 1, 1, 1, 1, 0, 17},  {1, 9, 7, 5, 5, 3, 1, 2, 2, 1, 0, 13},
      {1, 6, 6, 64, 3, 3, 1, 1, 1, 1, 1, 64},  {1, 11, 13, 37, 3, 3, 1, 1, 1, 1, 1, 31}};
  int idx = 0;
  for (Scheme s : kSchemes) {
    for (const Geo& G : geos) {
      ++idx;
      tfq::ConvGeometry g;
      g.batch = G.n; g.in_h = G.h; g.in_w = G.w; g.in_c = G.c;
      g.kernel_h = G.kh; g.kernel_w = G.kw; g.stride_h = G.sh; g.stride_w = G.sw;
      g.dilation_h = G.dh; g.dilation_w = G.dw;
      g.depth_multiplier = depthwise ? 1 + (idx % 2) : 1;
      g.out_c = depthwise ? G.c * g.depth_multiplier : G.oc_or_dm;
      if (!tfq::ComputeOutputSize(G.same, G.h, G.kh, G.sh, G.dh, &g.out_h, &g.pad_top) ||
          !tfq::ComputeOutputSize(G.same, G.w, G.kw, G.sw, G.dw, &g.out_w, &g.pad_left)) {
        EXPECT(false, "bad test geometry %d", idx);
        continue;
      }
      tfq::PackedWeights w;
      w.scheme = s;
      w.rows = depthwise ? G.kh * G.kw : g.out_c;
      w.k = depthwise ? g.out_c : int64_t{G.kh} * G.kw * G.c;
      w.row_bytes = tfq::RowBytes(s, w.k);
      const std::vector<int> codes = RandomCodes(rng, s, w.rows * w.k);
      const std::vector<uint8_t> packed = Pack(s, codes, w.rows, w.k);
      w.codes = packed.data();
      std::vector<float> x = RandomFloats(rng, int64_t{G.n} * G.h * G.w * G.c, 1.0f + idx % 3);
      if (G.n > 1) std::fill(x.begin() + G.h * G.w * G.c, x.end(), 0.0f);  // a zero image
      std::vector<float> scale = RandomFloats(rng, g.out_c, 0.2f), bias = RandomFloats(rng, g.out_c, 1.0f);
      tfq::Epilogue e;
      e.scale = scale.data();
      e.per_channel_scale = idx % 4 != 1;
      e.bias = idx % 3 == 0 ? nullptr : bias.data();
      e.activation = static_cast<tfq::Activation>(idx % 3);
      const int threads = pool ? pool->num_threads() : 1;
      const size_t bytes = depthwise ? tfq::DepthwiseScratchBytes(w, g, threads)
                                     : tfq::Conv2DScratchBytes(w, g, threads);
      const size_t ny = size_t(g.batch) * g.out_h * g.out_w * g.out_c;
      std::vector<float> yt(ny, -777.0f), yr(ny, 777.0f);
      Scratch scratch;
      tfq::KernelOptions opt;
      opt.pool = pool;
      for (int pass = 0; pass < 2; ++pass) {
        opt.force_reference = pass == 1;
        float* y = pass == 0 ? yt.data() : yr.data();
        void* sc = scratch.Get(bytes);
        if (depthwise) tfq::DepthwiseConv2D(x.data(), g, w, e, y, sc, opt);
        else tfq::Conv2D(x.data(), g, w, e, y, sc, opt);
      }
      EXPECT(SameBits(yt.data(), yr.data(), ny * sizeof(float)),
             "%s %s geometry=%d threads=%d seed=%u", depthwise ? "DepthwiseConv2D" : "Conv2D",
             tfq::SchemeName(s), idx, threads, seed);
      if (depthwise) continue;
      // Version-2 dense rows (execution layout included): the same bits.
      const std::vector<uint8_t> compact = Pack(s, codes, w.rows, w.k, true);
      tfq::PreparedWeights pw;
      EXPECT(pw.Init(s, compact.data(), w.rows, w.k, true), "compact Init k=%lld", (long long)w.k);
      pw.BuildExecLayout(false);
      const tfq::PackedWeights wc = pw.At(compact.data());
      std::vector<float> yc(ny, 555.0f);
      opt.force_reference = false;
      tfq::Conv2D(x.data(), g, wc, e, yc.data(), scratch.Get(tfq::Conv2DScratchBytes(wc, g, threads)), opt);
      EXPECT(SameBits(yc.data(), yr.data(), ny * sizeof(float)), "Conv2D v2 dense %s geometry=%d threads=%d seed=%u",
             tfq::SchemeName(s), idx, threads, seed);
    }
  }
}


// --------------------------------------------------------------------------
// Block-sparse weights (format version 2).

int ZeroCodeOf(Scheme s) {
  for (int c : ValidCodes(s))
    if (tfq::CodeLevel(s, c) == 0) return c;
  return -1;
}

// A block-sparse tensor prepared as the delegate prepares a node.
struct SparseCase {
  Scheme s = Scheme::kTernary;
  int64_t rows = 0, k = 0;
  std::vector<int> codes;  // dense codes [rows, k]: the zero code outside stored blocks
  std::vector<uint8_t> data;
  tfq::SparseOptions o;
  tfq::SparseSizes sizes;
  tfq::SparsePrepared prepared;
  tfq::SparseWeights view;
  tfq::PackedWeights w;
};

// Random codes of nonzero level with round(sparsity * blocks) R x C blocks
// zeroed, plus every block of the block rows in `empty_rows`; `fill` >= 0
// puts that code everywhere instead of random ones. Packs format version 2
// (docs/format.md): uint16 LE counts per block row, the block-column
// indices (8 or 16 bits), then each stored block's R x C codes row-major,
// the zero code where the block leaves the matrix.
bool PackSparse(SparseCase* sc, int R, int C, bool drop_level_sums);

bool MakeSparse(std::mt19937& rng, Scheme s, int64_t rows, int64_t k, int R, int C, double sparsity,
                std::vector<int64_t> empty_rows, SparseCase* sc, int fill = -1,
                bool drop_level_sums = false) {
  sc->s = s;
  sc->rows = rows;
  sc->k = k;
  const int zero = ZeroCodeOf(s), bits = tfq::SchemeBits(s);
  std::vector<int> nonzero;
  for (int c : ValidCodes(s))
    if (tfq::CodeLevel(s, c) != 0) nonzero.push_back(c);
  std::uniform_int_distribution<int> pick(0, static_cast<int>(nonzero.size()) - 1);
  sc->codes.resize(rows * k);
  for (auto& c : sc->codes) c = fill >= 0 ? fill : nonzero[pick(rng)];
  const int64_t nbr = (rows + R - 1) / R, nbc = (k + C - 1) / C;
  std::vector<int64_t> order(nbr * nbc);
  for (int64_t i = 0; i < nbr * nbc; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<char> stored(nbr * nbc, 1);
  const int64_t drop = static_cast<int64_t>(std::llround(sparsity * nbr * nbc));
  for (int64_t i = 0; i < drop; ++i) stored[order[i]] = 0;
  for (int64_t br : empty_rows)
    for (int64_t bc = 0; bc < nbc; ++bc) stored[(br % nbr) * nbc + bc] = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i)
      if (!stored[(r / R) * nbc + i / C]) sc->codes[r * k + i] = zero;
  return PackSparse(sc, R, C, drop_level_sums);
}

// Packs sc->codes (rows x k dense codes of scheme sc->s) as format version 2
// in R x C blocks, storing the blocks that hold a nonzero level, and
// prepares them.
bool PackSparse(SparseCase* sc, int R, int C, bool drop_level_sums) {
  const Scheme s = sc->s;
  const int64_t rows = sc->rows, k = sc->k;
  const int zero = ZeroCodeOf(s), bits = tfq::SchemeBits(s);
  const int64_t nbr = (rows + R - 1) / R, nbc = (k + C - 1) / C;
  std::vector<char> stored(nbr * nbc, 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i)
      if (tfq::CodeLevel(s, sc->codes[r * k + i]) != 0) stored[(r / R) * nbc + i / C] = 1;
  sc->o.block_rows = R;
  sc->o.block_cols = C;
  sc->o.index_bits = nbc <= 256 ? 8 : 16;
  const int ib = sc->o.index_bits / 8;
  const int64_t block_bytes = (int64_t{R} * C * bits + 7) / 8;
  std::vector<uint8_t> counts(2 * nbr), indices, blocks;
  int64_t nnz = 0;
  for (int64_t br = 0; br < nbr; ++br) {
    int64_t n = 0;
    for (int64_t bc = 0; bc < nbc; ++bc) {
      if (!stored[br * nbc + bc]) continue;
      ++n;
      ++nnz;
      indices.push_back(static_cast<uint8_t>(bc & 0xFF));
      if (ib == 2) indices.push_back(static_cast<uint8_t>(bc >> 8));
      std::vector<uint8_t> block(block_bytes, 0);
      for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) {
          const int64_t row = br * R + r, col = bc * C + c;
          const int code = row < rows && col < k ? sc->codes[row * k + col] : zero;
          const int i = r * C + c;
          block[i * bits / 8] |= static_cast<uint8_t>(code << ((i % (8 / bits)) * bits));
        }
      blocks.insert(blocks.end(), block.begin(), block.end());
    }
    counts[2 * br] = static_cast<uint8_t>(n & 0xFF);
    counts[2 * br + 1] = static_cast<uint8_t>(n >> 8);
  }
  sc->o.nnz_blocks = nnz;
  sc->data = counts;
  sc->data.insert(sc->data.end(), indices.begin(), indices.end());
  sc->data.insert(sc->data.end(), blocks.begin(), blocks.end());
  std::string error;
  if (!tfq::ComputeSparseSizes(s, rows, k, sc->o, &sc->sizes, &error) ||
      sc->sizes.packed_bytes != static_cast<int64_t>(sc->data.size()) ||
      !tfq::ValidateSparse(s, rows, k, sc->o, sc->sizes, sc->data.data(), &error) ||
      !sc->prepared.Build(s, rows, k, sc->o, sc->sizes, sc->data.data())) {
    EXPECT(false, "sparse test tensor %s %lldx%lld %dx%d refused: %s", tfq::SchemeName(s),
           (long long)rows, (long long)k, R, C, error.c_str());
    return false;
  }
  if (drop_level_sums) sc->prepared.level_sums.clear();
  sc->view = sc->prepared.View(sc->o, sc->sizes, sc->data.data());
  sc->w = tfq::PackedWeights();
  sc->w.scheme = s;
  sc->w.codes = sc->data.data();
  sc->w.rows = rows;
  sc->w.k = k;
  sc->w.sparse = &sc->view;
  return true;
}

// kInt8: the delegate's 8-bit convolutions (every block stored there; any pattern here).
const Scheme kSparseSchemes[] = {Scheme::kTernary, Scheme::kPow2_3bit, Scheme::kPow2_4bit, Scheme::kInt8};
// Fast shapes (R >= 4, C a multiple of 4) and scalar-fallback ones.
const int kSparseBlocks[][2] = {{32, 4}, {16, 4}, {8, 4},  {4, 4}, {32, 8}, {8, 16}, {4, 32},
                                {16, 32}, {8, 8}, {1, 4}, {2, 2}, {32, 1}, {16, 2}};
const double kSparsities[] = {0.0, 0.5, 0.9, 0.99, 1.0};

// One sparse_gemm call of table t against the reference on activation rows
// a[j] (n_act of them) with block-column offsets coloff, rows [o0, o1).
void SparseGemmCompare(const KernelTable& t, const KernelTable& ref, const SparseCase& sc,
                       int64_t o0, int64_t o1, const std::vector<const uint8_t*>& a,
                       const std::vector<int64_t>& coloff, const char* what, uint32_t seed) {
  const int64_t n_act = static_cast<int64_t>(a.size()), width = o1 - o0, ldc = width + 3;
  std::vector<int32_t> ct(n_act * ldc, -7777777), cr(n_act * ldc, -7777777);
  t.sparse_gemm(sc.w, o0, o1, a.data(), coloff.data(), n_act, ct.data(), ldc);
  ref.sparse_gemm(sc.w, o0, o1, a.data(), coloff.data(), n_act, cr.data(), ldc);
  EXPECT(SameBits(ct.data(), cr.data(), ct.size() * sizeof(int32_t)),
         "sparse_gemm %s %s %s rows=%lld k=%lld %dx%d nnz=%lld o=[%lld,%lld) n_act=%lld seed=%u",
         tfq::IsaName(t.isa), what, tfq::SchemeName(sc.s), (long long)sc.rows, (long long)sc.k,
         sc.o.block_rows, sc.o.block_cols, (long long)sc.o.nnz_blocks, (long long)o0, (long long)o1,
         (long long)n_act, seed);
}

// The activations as the sparse kernels take them: biased, u = q + 128
// (SparseGemmFn).
std::vector<uint8_t> Biased(const std::vector<int8_t>& q) {
  std::vector<uint8_t> u(q.size());
  tfq::BiasActivations(q.data(), static_cast<int64_t>(q.size()), u.data());
  return u;
}

// The reference itself against a naive sum over the dense codes.
void SparseRefAgainstNaive(const KernelTable& ref, const SparseCase& sc, const int8_t* q, int64_t m) {
  const std::vector<uint8_t> u = Biased(std::vector<int8_t>(q, q + m * sc.k));
  std::vector<const uint8_t*> a(m);
  for (int64_t j = 0; j < m; ++j) a[j] = u.data() + j * sc.k;
  const int64_t nbc = (sc.k + sc.o.block_cols - 1) / sc.o.block_cols;
  std::vector<int64_t> coloff(nbc);
  for (int64_t b = 0; b < nbc; ++b) coloff[b] = b * sc.o.block_cols;
  std::vector<int32_t> c(m * sc.rows);
  ref.sparse_gemm(sc.w, 0, sc.rows, a.data(), coloff.data(), m, c.data(), sc.rows);
  bool ok = true;
  for (int64_t j = 0; j < m; ++j)
    for (int64_t r = 0; r < sc.rows; ++r)
      ok = ok && c[j * sc.rows + r] == NaiveDot(sc.s, &sc.codes[r * sc.k], q + j * sc.k, sc.k);
  EXPECT(ok, "SparseGemm reference != naive sum %s rows=%lld k=%lld %dx%d", tfq::SchemeName(sc.s),
         (long long)sc.rows, (long long)sc.k, sc.o.block_rows, sc.o.block_cols);
}

void TestSparseGemm(const KernelTable& t, const KernelTable& ref, uint32_t seed) {
  std::mt19937 rng(seed);
  struct Shape { int64_t rows, k; };
  // Odd and prime sizes; k = 1100 with C = 4 needs 16-bit indices.
  const Shape shapes[] = {{37, 131}, {64, 96}, {70, 333}, {33, 67}, {1, 5}, {97, 1100}, {61, 257}};
  const int64_t n_acts[] = {1, 2, 3, 5, 8, 9, 17};
  int idx = 0;
  for (Scheme s : kSparseSchemes) {
    for (const auto& blk : kSparseBlocks) {
      for (const Shape& sh : shapes) {
        ++idx;
        const int R = blk[0], C = blk[1];
        if (sh.k == 1100 && C != 4 && C != 1 && C != 2) continue;  // the 16-bit index case
        SparseCase sc;
        if (!MakeSparse(rng, s, sh.rows, sh.k, R, C, kSparsities[idx % 5], {idx, idx + 2}, &sc,
                        -1, idx % 4 == 3))
          continue;
        const int64_t n_act = n_acts[idx % 7];
        const int64_t nbc = (sh.k + C - 1) / C;
        // FC style: rows of one matrix, offsets b * C.
        const std::vector<int8_t> q = RandomQ(rng, n_act * sh.k + 64);
        const std::vector<uint8_t> u = Biased(q);
        std::vector<const uint8_t*> a(n_act);
        for (int64_t j = 0; j < n_act; ++j) a[j] = u.data() + j * sh.k;
        std::vector<int64_t> coloff(nbc);
        for (int64_t b = 0; b < nbc; ++b) coloff[b] = b * C;
        SparseGemmCompare(t, ref, sc, 0, sh.rows, a, coloff, "fc", seed);
        // A row range not aligned to the blocks (threads split at units).
        if (sh.rows > 9) SparseGemmCompare(t, ref, sc, 3, sh.rows - 5, a, coloff, "range", seed);
        // Convolution style: scattered rows, block columns at shuffled
        // offsets inside a larger buffer (as into a padded image).
        const std::vector<uint8_t> img = Biased(RandomQ(rng, (n_act + 2) * (nbc + 3) * C + 64));
        std::vector<int64_t> slots(nbc + 3);
        for (int64_t b = 0; b < nbc + 3; ++b) slots[b] = b * C;
        std::shuffle(slots.begin(), slots.end(), rng);
        for (int64_t b = 0; b < nbc; ++b) coloff[b] = slots[b];
        for (int64_t j = 0; j < n_act; ++j) a[j] = img.data() + ((j * 5 + 1) % (n_act + 2)) * (nbc + 3) * C;
        SparseGemmCompare(t, ref, sc, 0, sh.rows, a, coloff, "conv", seed);
        if (&t == &ref || idx % 5 == 0) SparseRefAgainstNaive(ref, sc, q.data(), n_act);
      }
    }
  }
  // Worst cases: the largest |level| everywhere against +-127 (int16 lanes
  // of the plain NEON and AVX2 paths at their bound) and a long k whose
  // int32 sum is near the format's limit.
  for (Scheme s : kSparseSchemes) {
    for (bool negative : {false, true}) {
      const int64_t k = s == Scheme::kPow2_4bit ? 262000 : 33000;
      SparseCase sc;
      if (!MakeSparse(rng, s, 8, k, 4, 8, 0.0, {}, &sc, MaxCode(s, negative))) continue;
      std::vector<int8_t> q(2 * k, 127);
      for (int64_t i = 0; i < k; i += 2) q[k + i] = -127;  // row 1 alternates
      const std::vector<uint8_t> u = Biased(q);
      std::vector<const uint8_t*> a = {u.data(), u.data() + k};
      std::vector<int64_t> coloff((k + 7) / 8);
      for (size_t b = 0; b < coloff.size(); ++b) coloff[b] = static_cast<int64_t>(b) * 8;
      SparseGemmCompare(t, ref, sc, 0, 8, a, coloff, "worst", seed);
      if (&t == &ref) SparseRefAgainstNaive(ref, sc, q.data(), 2);
    }
  }
}

// Sparse FullyConnected and Conv2D with table t pinned (isa_cap) against
// force_reference, bit for bit.
void TestSparseLayers(const KernelTable& t, uint32_t seed, tfq::ThreadPool* pool) {
  std::mt19937 rng(seed);
  const int threads = pool ? pool->num_threads() : 1;
  int idx = 0;
  struct FcShape { int64_t m, rows, k; };
  const FcShape fcs[] = {{1, 37, 131}, {2, 64, 96}, {5, 70, 333}, {1, 128, 1100}, {17, 61, 257}};
  for (Scheme s : kSparseSchemes) {
    for (const auto& blk : kSparseBlocks) {
      for (const FcShape& sh : fcs) {
        ++idx;
        if (idx % 2 == 0) continue;  // half of the combinations per thread count
        SparseCase sc;
        if (!MakeSparse(rng, s, sh.rows, sh.k, blk[0], blk[1], kSparsities[idx % 5], {idx}, &sc))
          continue;
        std::vector<float> x = RandomFloats(rng, sh.m * sh.k, 0.1f + (idx % 5));
        std::vector<float> scale = RandomFloats(rng, sh.rows, 0.2f), bias = RandomFloats(rng, sh.rows, 1.0f);
        tfq::Epilogue e;
        e.scale = scale.data();
        e.bias = idx % 3 == 2 ? nullptr : bias.data();
        e.activation = static_cast<tfq::Activation>(idx % 3);
        std::vector<float> yt(sh.m * sh.rows, -777.0f), yr(sh.m * sh.rows, 777.0f);
        Scratch scratch;
        tfq::KernelOptions opt;
        opt.pool = pool;
        opt.isa_cap = static_cast<int>(t.isa);
        tfq::FullyConnected(x.data(), sh.m, sc.w, e, yt.data(),
                            scratch.Get(tfq::FullyConnectedScratchBytes(sc.w, sh.m)), opt);
        opt.force_reference = true;
        tfq::FullyConnected(x.data(), sh.m, sc.w, e, yr.data(),
                            scratch.Get(tfq::FullyConnectedScratchBytes(sc.w, sh.m)), opt);
        EXPECT(SameBits(yt.data(), yr.data(), yt.size() * sizeof(float)),
               "sparse FullyConnected %s %s %dx%d m=%lld rows=%lld k=%lld threads=%d seed=%u",
               tfq::IsaName(t.isa), tfq::SchemeName(s), blk[0], blk[1], (long long)sh.m,
               (long long)sh.rows, (long long)sh.k, threads, seed);
      }
    }
  }
  struct Geo { int n, h, w, c, kh, kw, sh, sw, dh, dw, same, oc; };
  // in_c a multiple of C: implicit im2col (padded or not); otherwise im2col.
  const Geo geos[] = {{1, 9, 7, 8, 3, 3, 1, 1, 1, 1, 1, 37},   {2, 8, 8, 12, 1, 1, 1, 1, 1, 1, 0, 32},
                      {1, 11, 6, 5, 3, 2, 2, 1, 1, 2, 1, 16},  {1, 7, 7, 16, 3, 3, 2, 2, 1, 1, 0, 64},
                      {2, 10, 10, 32, 3, 3, 1, 1, 2, 2, 1, 40}, {1, 6, 9, 3, 5, 3, 1, 2, 1, 1, 0, 33},
                      {1, 12, 9, 3, 3, 3, 1, 1, 2, 1, 1, 24}};  // dilation_h 2: kernel-row runs
  const int conv_blocks[][2] = {{32, 4}, {16, 4}, {8, 4}, {4, 4}, {16, 8}, {8, 16}, {1, 4}, {4, 2}};
  for (Scheme s : kSparseSchemes) {
    for (const Geo& G : geos) {
      for (const auto& blk : conv_blocks) {
        ++idx;
        tfq::ConvGeometry g;
        g.batch = G.n; g.in_h = G.h; g.in_w = G.w; g.in_c = G.c;
        g.kernel_h = G.kh; g.kernel_w = G.kw; g.stride_h = G.sh; g.stride_w = G.sw;
        g.dilation_h = G.dh; g.dilation_w = G.dw;
        g.depth_multiplier = 1;
        g.out_c = G.oc;
        if (!tfq::ComputeOutputSize(G.same, G.h, G.kh, G.sh, G.dh, &g.out_h, &g.pad_top) ||
            !tfq::ComputeOutputSize(G.same, G.w, G.kw, G.sw, G.dw, &g.out_w, &g.pad_left)) {
          EXPECT(false, "bad sparse test geometry %d", idx);
          continue;
        }
        SparseCase sc;
        if (!MakeSparse(rng, s, G.oc, int64_t{G.kh} * G.kw * G.c, blk[0], blk[1], kSparsities[idx % 5],
                        {idx}, &sc, -1, idx % 4 == 1))
          continue;
        std::vector<float> x = RandomFloats(rng, int64_t{G.n} * G.h * G.w * G.c, 1.0f + idx % 3);
        std::vector<float> scale = RandomFloats(rng, g.out_c, 0.2f), bias = RandomFloats(rng, g.out_c, 1.0f);
        tfq::Epilogue e;
        e.scale = scale.data();
        e.bias = idx % 3 == 0 ? nullptr : bias.data();
        e.activation = static_cast<tfq::Activation>(idx % 3);
        const size_t ny = size_t(g.batch) * g.out_h * g.out_w * g.out_c;
        std::vector<float> yt(ny, -777.0f), yr(ny, 777.0f);
        Scratch scratch;
        tfq::KernelOptions opt;
        opt.pool = pool;
        opt.isa_cap = static_cast<int>(t.isa);
        for (int pass = 0; pass < 2; ++pass) {
          opt.force_reference = pass == 1;
          tfq::Conv2D(x.data(), g, sc.w, e, pass == 0 ? yt.data() : yr.data(),
                      scratch.Get(tfq::Conv2DScratchBytes(sc.w, g, threads)), opt);
        }
        EXPECT(SameBits(yt.data(), yr.data(), ny * sizeof(float)),
               "sparse Conv2D %s %s %dx%d geometry=%d threads=%d seed=%u", tfq::IsaName(t.isa),
               tfq::SchemeName(s), blk[0], blk[1], idx, threads, seed);
        // The same weights with kernel rows as runs (PackedWeights::conv_run;
        // in_c % C != 0, dilation_w 1): the implicit im2col, same outputs.
        if (G.c % blk[1] != 0 && G.dw == 1) {
          const int64_t used = int64_t{G.kw} * G.c, run = (used + blk[1] - 1) / blk[1] * blk[1];
          SparseCase rc;
          rc.s = s;
          rc.rows = G.oc;
          rc.k = G.kh * run;
          rc.codes.assign(rc.rows * rc.k, ZeroCodeOf(s));
          for (int64_t o = 0; o < rc.rows; ++o)
            for (int64_t p = 0; p < G.kh * used; ++p)
              rc.codes[o * rc.k + p / used * run + p % used] = sc.codes[o * sc.k + p];
          if (!PackSparse(&rc, blk[0], blk[1], idx % 4 == 1)) continue;
          rc.w.conv_run = run;
          std::vector<float> yrun(ny, 555.0f);
          opt.force_reference = false;
          tfq::Conv2D(x.data(), g, rc.w, e, yrun.data(),
                      scratch.Get(tfq::Conv2DScratchBytes(rc.w, g, threads)), opt);
          EXPECT(SameBits(yrun.data(), yr.data(), ny * sizeof(float)),
                 "sparse Conv2D in runs %s %s %dx%d geometry=%d threads=%d seed=%u", tfq::IsaName(t.isa),
                 tfq::SchemeName(s), blk[0], blk[1], idx, threads, seed);
        }
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string expect;
  uint32_t seed = 1234;
  for (int i = 1; i < argc; ++i) {
    if (!std::strncmp(argv[i], "--expect-isa=", 13)) expect = argv[i] + 13;
    else if (!std::strncmp(argv[i], "--seed=", 7)) seed = static_cast<uint32_t>(std::atoi(argv[i] + 7));
    else {
      std::fprintf(stderr, "unknown argument %s (use --expect-isa=NAME [--seed=N])\n", argv[i]);
      return 2;
    }
  }
  const char* selected = tfq::IsaName(tfq::SelectedIsa(false));
  std::printf("selected isa: %s\n", selected);
  // --expect-isa=any (Bazel, host builds): whatever this CPU selects, but at
  // least one SIMD table must be tested.
  if (expect.empty() || (expect != "any" && expect != selected)) {
    std::fprintf(stderr, "FAIL: dispatcher selected %s, expected %s\n", selected,
                 expect.empty() ? "(no --expect-isa given)" : expect.c_str());
    return 1;
  }
  const KernelTable& ref = tfq::internal::RefTable();
  std::vector<const KernelTable*> tables;
  for (const KernelTable* t : {tfq::internal::NeonTable(), tfq::internal::NeonDotprodTable(),
                               tfq::internal::Avx2Table(), tfq::internal::Avx512VnniTable(),
                               tfq::internal::Avx512VnniOtherWidthTable()})
    if (t) tables.push_back(t);
  for (const KernelTable* t : tables) {
    const int before = g_failures;
    std::mt19937 rng(seed);
    TestAbsMax(*t, ref, rng);
    TestQuantize(*t, ref, rng);
    TestSum(*t, ref, rng);
    TestEpilogueQ(*t, rng);
    TestEpilogueStats(*t, rng);
    TestSumRows(*t, rng);
    TestGemm(*t, ref, seed);
    TestDepthwisePixel(*t, ref, seed + 1);
    TestSparseGemm(*t, ref, seed + 5);
    std::printf("table %-13s (%s) %s\n", tfq::IsaName(t->isa), t->sparse_path,
                g_failures == before ? "ok" : "FAILED");
  }
  for (int threads : {1, 3}) {
    const int before = g_failures;
    tfq::ThreadPool pool(threads);
    tfq::ThreadPool* p = threads > 1 ? &pool : nullptr;
    TestFullyConnected(seed + 2, p);
    TestConv(false, seed + 3, p);
    TestConv(true, seed + 4, p);
    std::printf("layers (%s vs reference, %d thread%s) %s\n", selected, threads,
                threads > 1 ? "s" : "", g_failures == before ? "ok" : "FAILED");
  }
  // Block-sparse layers with each table pinned, 1-4 threads.
  for (const KernelTable* t : tables) {
    const int before = g_failures;
    for (int threads : {1, 2, 3, 4}) {
      tfq::ThreadPool pool(threads);
      TestSparseLayers(*t, seed + 6 + threads, threads > 1 ? &pool : nullptr);
    }
    std::printf("sparse layers (%s, sparse path %s, 1-4 threads) %s\n", tfq::IsaName(t->isa),
                t->sparse_path, g_failures == before ? "ok" : "FAILED");
  }
  {
    const int before = g_failures;
    TestSparseGemm(ref, ref, seed + 5);  // the reference against the naive sums
    std::printf("sparse reference vs naive sums %s\n", g_failures == before ? "ok" : "FAILED");
  }
  std::printf("%d checks, %d failures, tables tested:", g_checks, g_failures);
  for (const KernelTable* t : tables) std::printf(" %s", tfq::IsaName(t->isa));
  std::printf("\n");
  // (the AVX-512 table appears twice: its 256- and 512-bit GEMV and sparse kernels)
  return g_failures == 0 && !tables.empty() ? 0 : 1;
}
