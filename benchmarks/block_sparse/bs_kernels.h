// Block-sparse int8-activation x low-bit-weight kernels: a prototype for
// choosing the block shape (issue 12) and the inner loop of issue 13.
//
// Arithmetic: activations are int8 codes q in [-127, 127] stored shifted,
// u = q + 128 in [1, 255] (unsigned operand of vpdpbusd / vpmaddubsw);
// weights are signed int8 levels (ternary {-1, 0, 1} here; pow2 levels up to
// +-64 keep vpmaddubsw's int16 pair sums exact: 2 * 255 * 64 < 32768).
// sum(level * q) = sum(level * u) - 128 * sum(level): the correction depends
// only on the weights (precomputed per output row), unlike today's dense
// kernels' unsigned-code trick, whose correction is a sum of activations over
// the positions of the kept blocks, which a sparse row would need per row.
//
// Sparse matrix M x K in blocks of R rows x C columns. Block row br (rows
// br*R .. br*R+R-1) streams counts[br] entries; entry e has a column-block
// index idx[e] (uint8 when K / C <= 256, else uint16) and its values follow
// in `vals` in the order the kernel consumes them:
//   C % 4 == 0: per block, C/4 quads, each R rows x 4 bytes ([quad][row][4]);
//   C == 1:     entries come in groups of 4 (counts padded with zero blocks),
//               each group R rows x 4 bytes ([row][block of the group]).
// R == 1 row-dot GEMV pads counts to a multiple of its entries per vector.
#ifndef BS_KERNELS_H_
#define BS_KERNELS_H_

#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

struct Sparse {
  int R = 0, C = 0, M = 0, K = 0;
  int pad = 1;                 // counts are multiples of this (group size)
  bool wide = false;           // uint16 column indices
  std::vector<uint16_t> counts;  // per block row
  std::vector<uint8_t> idx8;
  std::vector<uint16_t> idx16;
  std::vector<int8_t> vals;
  // 2-bit codes (level + 1) of the same values for the packed variants: each
  // vector of B bytes of `vals` (B = code_vec) comes from B / 4 bytes, whose
  // field t (bits 2t, 2t + 1) holds byte t * B / 4 + s: one broadcast, one
  // variable shift per quarter (vpsrlvq), a mask and a subtract decode it.
  std::vector<uint8_t> codes;
  int code_vec = 0;
  std::vector<int32_t> wsum;     // per row: sum of levels (for the -128 correction)
  int64_t nnz_blocks = 0;        // real (unpadded) blocks
};

// A registered kernel: GEMM family C writes y[n * M + m]; family P writes
// y[m * N + n]; GEMV writes y[m].
enum class Kind { kGemmC, kGemmP, kGemv };
enum class ALayout { kRows, kQuads16, kQuads8, kKRows16, kKRows8, kVec };
struct Variant {
  std::string isa;     // avx512-zmm, avx512-ymm, avx2
  std::string family;  // C (channel lanes), P (pixel lanes), Rdot (row dot)
  int R, C;
  Kind kind;
  ALayout layout;
  int pad;  // entries per group the kernel consumes (counts padded to it)
  int code_vec = 0;  // > 0: the kernel reads 2-bit codes packed for this vector width
  std::function<void(const Sparse&, const uint8_t*, int, int32_t*)> run;
};

void RegisterAvx512(std::vector<Variant>* v);
void RegisterAvx2(std::vector<Variant>* v);

inline int32_t Load32(const void* p) {
  int32_t x;
  std::memcpy(&x, p, 4);
  return x;
}

// ---------------------------------------------------------------------------
// Kernels, generic over a vector type V (see the two .cc files).

template <typename I>
inline const I* Idx(const Sparse& s);
template <>
inline const uint8_t* Idx<uint8_t>(const Sparse& s) { return s.idx8.data(); }
template <>
inline const uint16_t* Idx<uint16_t>(const Sparse& s) { return s.idx16.data(); }

// Family C: lanes = output channels (R = G * V::kLanes), activation dwords
// broadcast from im2col rows (pixel-major, N x K), NP pixels per tile.
// Weight vector g of quad j of an entry at w (levels, or 2-bit codes: P2).
template <class V, bool P2>
inline typename V::T WeightVec(const int8_t* w, int R, int j, int g) {
  if constexpr (P2) return V::decode2(w + j * R + g * (V::kBytes / 4));
  else return V::load(w + j * R * 4 + g * V::kBytes);
}

template <class V, int G, int NP, int C, typename I, bool P2 = false>
void GemmCTile(const Sparse& s, const uint8_t* A, int p0, int32_t* Y) {
  using T = typename V::T;
  const int R = s.R, K = s.K, M = s.M;
  const I* idx = Idx<I>(s);
  const int8_t* w = P2 ? reinterpret_cast<const int8_t*>(s.codes.data()) : s.vals.data();
  constexpr int kDiv = P2 ? 4 : 1;  // bytes per weight: 1 / kDiv
  const int nbr = M / R;
  for (int br = 0; br < nbr; ++br) {
    T acc[G][NP];
    for (int g = 0; g < G; ++g)
      for (int p = 0; p < NP; ++p) acc[g][p] = V::zero();
    const int n = s.counts[br];
    if (C >= 4) {
      for (int e = 0; e < n; ++e) {
        const int col = idx[e] * C;
        for (int j = 0; j < C / 4; ++j) {
          T wv[G];
          for (int g = 0; g < G; ++g) wv[g] = WeightVec<V, P2>(w, R, j, g);
          for (int p = 0; p < NP; ++p) {
            const T a = V::bcast32(A + (int64_t)(p0 + p) * K + col + 4 * j);
            for (int g = 0; g < G; ++g) acc[g][p] = V::dp(acc[g][p], a, wv[g]);
          }
        }
        w += R * C / kDiv;
      }
    } else {
      for (int e = 0; e < n; e += 4) {
        T wv[G];
        for (int g = 0; g < G; ++g) wv[g] = V::load(w + g * V::kBytes);
        const int k0 = idx[e], k1 = idx[e + 1], k2 = idx[e + 2], k3 = idx[e + 3];
        for (int p = 0; p < NP; ++p) {
          const uint8_t* ar = A + (int64_t)(p0 + p) * K;
          const int32_t d = ar[k0] | (ar[k1] << 8) | (ar[k2] << 16) | ((int32_t)ar[k3] << 24);
          const T a = V::set1(d);
          for (int g = 0; g < G; ++g) acc[g][p] = V::dp(acc[g][p], a, wv[g]);
        }
        w += R * 4;
      }
    }
    idx += n;
    for (int g = 0; g < G; ++g) {
      const T corr = V::mul128(V::load(s.wsum.data() + br * R + g * V::kLanes));
      for (int p = 0; p < NP; ++p)
        V::store(Y + (int64_t)(p0 + p) * M + br * R + g * V::kLanes, V::sub(acc[g][p], corr));
    }
  }
}

template <class V, int G, int NP, int C, typename I, bool P2 = false>
void GemmC(const Sparse& s, const uint8_t* A, int N, int32_t* Y) {
  int p = 0;
  for (; p + NP <= N; p += NP) GemmCTile<V, G, NP, C, I, P2>(s, A, p, Y);
  for (; p < N; ++p) GemmCTile<V, G, 1, C, I, P2>(s, A, p, Y);
}

template <class V, int G, int NP, int C, typename I>
void GemmC2(const Sparse& s, const uint8_t* A, int N, int32_t* Y) {
  GemmC<V, G, NP, C, I, true>(s, A, N, Y);
}

// Family P: lanes = pixels (V::kLanes per vector, NPV vectors per tile),
// weight dwords broadcast, RS rows per pass. Activations:
//   C % 4 == 0: quads layout AQ[pv][quad][lanes][4] (pv = pixel vector);
//   C == 1:     k-rows layout A1[pv][k][lanes], 4 rows interleaved on the fly.
template <class V, int RS, int NPV, int C, typename I>
void GemmPTile(const Sparse& s, const uint8_t* A, int N, int pv0, int32_t* Y) {
  using T = typename V::T;
  const int R = s.R, K = s.K, M = s.M, nq = K / 4;
  const I* idx = Idx<I>(s);
  const int8_t* w = s.vals.data();
  const int nbr = M / R;
  for (int br = 0; br < nbr; ++br) {
    const int n = s.counts[br];
    for (int r0 = 0; r0 < R; r0 += RS) {
      T acc[RS][NPV];
      for (int r = 0; r < RS; ++r)
        for (int v = 0; v < NPV; ++v) acc[r][v] = V::zero();
      const int8_t* wb = w;
      if (C >= 4) {
        for (int e = 0; e < n; ++e) {
          const int q0 = idx[e] * (C / 4);
          for (int j = 0; j < C / 4; ++j) {
            T av[NPV];
            for (int v = 0; v < NPV; ++v)
              av[v] = V::load(A + ((int64_t)(pv0 + v) * nq + q0 + j) * V::kBytes);
            for (int r = 0; r < RS; ++r) {
              const T wt = V::bcast32(wb + (j * R + r0 + r) * 4);
              for (int v = 0; v < NPV; ++v) acc[r][v] = V::dp(acc[r][v], av[v], wt);
            }
          }
          wb += R * C;
        }
      } else {
        for (int e = 0; e < n; e += 4) {
          T av[NPV];
          for (int v = 0; v < NPV; ++v) {
            const uint8_t* base = A + (int64_t)(pv0 + v) * K * V::kLanes;
            av[v] = V::quad4(base + idx[e] * V::kLanes, base + idx[e + 1] * V::kLanes,
                             base + idx[e + 2] * V::kLanes, base + idx[e + 3] * V::kLanes);
          }
          for (int r = 0; r < RS; ++r) {
            const T wt = V::bcast32(wb + (r0 + r) * 4);
            for (int v = 0; v < NPV; ++v) acc[r][v] = V::dp(acc[r][v], av[v], wt);
          }
          wb += R * 4;
        }
      }
      for (int r = 0; r < RS; ++r) {
        const int row = br * R + r0 + r;
        const T corr = V::set1(128 * s.wsum[row]);
        for (int v = 0; v < NPV; ++v)
          V::store(Y + (int64_t)row * N + (pv0 + v) * V::kLanes, V::sub(acc[r][v], corr));
      }
    }
    w += (int64_t)n * R * C;  // C == 1: n padded to groups of 4, R * 4 bytes each
    idx += n;
  }
}

template <class V, int RS, int NPV, int C, typename I>
void GemmP(const Sparse& s, const uint8_t* A, int N, int32_t* Y) {
  const int npv = N / V::kLanes;  // N is a multiple of the lanes (checked by the caller)
  int v = 0;
  for (; v + NPV <= npv; v += NPV) GemmPTile<V, RS, NPV, C, I>(s, A, N, v, Y);
  for (; v < npv; ++v) GemmPTile<V, RS, 1, C, I>(s, A, N, v, Y);
}

// GEMV, channel lanes (R = G * V::kLanes): one broadcast activation dword per
// quad, U independent accumulator sets (the dpbusd latency chain), unrolled
// so that every accumulator index is a compile-time constant.
template <class V, int G, int C, typename I, bool P2 = false>
void GemvC(const Sparse& s, const uint8_t* a, int, int32_t* y) {
  using T = typename V::T;
  constexpr int U = G >= 2 ? 2 : 4;
  const int R = s.R;
  const I* idx = Idx<I>(s);
  const int8_t* w = P2 ? reinterpret_cast<const int8_t*>(s.codes.data()) : s.vals.data();
  constexpr int kDiv = P2 ? 4 : 1;
  const int nbr = s.M / R;
  for (int br = 0; br < nbr; ++br) {
    T acc[U][G];
    for (int u = 0; u < U; ++u)
      for (int g = 0; g < G; ++g) acc[u][g] = V::zero();
    const int n = s.counts[br];
    // One entry into accumulator set u; weights streamed once: prefetch ahead.
    auto entry = [&](T* accu, int e) {
      _mm_prefetch(reinterpret_cast<const char*>(w + 1024), _MM_HINT_T0);
      if (C >= 4) {
        const int col = idx[e] * C;
        for (int j = 0; j < C / 4; ++j) {
          const T av = V::bcast32(a + col + 4 * j);
          for (int g = 0; g < G; ++g) accu[g] = V::dp(accu[g], av, WeightVec<V, P2>(w, R, j, g));
        }
        w += R * C / kDiv;
      } else {
        const int32_t d = a[idx[e]] | (a[idx[e + 1]] << 8) | (a[idx[e + 2]] << 16) |
                          ((int32_t)a[idx[e + 3]] << 24);
        const T av = V::set1(d);
        for (int g = 0; g < G; ++g) accu[g] = V::dp(accu[g], av, V::load(w + g * V::kBytes));
        w += R * 4;
      }
    };
    constexpr int step = C >= 4 ? 1 : 4;  // entries per call of `entry`
    int e = 0;
    for (; e + U * step <= n; e += U * step)
      for (int u = 0; u < U; ++u) entry(acc[u], e + u * step);
    for (; e < n; e += step) entry(acc[0], e);
    idx += n;
    for (int g = 0; g < G; ++g) {
      T t = acc[0][g];
      for (int u = 1; u < U; ++u) t = V::add(t, acc[u][g]);
      const T corr = V::mul128(V::load(s.wsum.data() + br * R + g * V::kLanes));
      V::store(y + br * R + g * V::kLanes, V::sub(t, corr));
    }
  }
}

template <class V, int G, int C, typename I>
void GemvC2(const Sparse& s, const uint8_t* a, int n, int32_t* y) {
  GemvC<V, G, C, I, true>(s, a, n, y);
}

// GEMV, R == 1, lanes along k: E = V::kBytes / C entries of one row per
// vector (their activations gathered from E places), one reduction per row.
template <class V, int C, typename I>
void GemvRdot(const Sparse& s, const uint8_t* a, int, int32_t* y) {
  using T = typename V::T;
  constexpr int E = V::kBytes / C;
  const I* idx = Idx<I>(s);
  const int8_t* w = s.vals.data();
  for (int m = 0; m < s.M; ++m) {
    T acc0 = V::zero(), acc1 = V::zero();
    const int n = s.counts[m];
    int e = 0;
    for (; e + 2 * E <= n; e += 2 * E) {
      _mm_prefetch(reinterpret_cast<const char*>(w + 1024), _MM_HINT_T0);
      acc0 = V::dp(acc0, V::template gather<C>(a, idx + e), V::load(w));
      acc1 = V::dp(acc1, V::template gather<C>(a, idx + e + E), V::load(w + V::kBytes));
      w += 2 * V::kBytes;
    }
    for (; e < n; e += E) {
      acc0 = V::dp(acc0, V::template gather<C>(a, idx + e), V::load(w));
      w += V::kBytes;
    }
    idx += n;
    y[m] = V::hsum(V::add(acc0, acc1)) - 128 * s.wsum[m];
  }
}

#endif  // BS_KERNELS_H_
