// Harness of the block-sparse prototype: random block-sparse ternary weights,
// a scalar reference, exact int32 checks of every variant, then interleaved
// timing (medians). Output: tab-separated lines for choose_block.py.
//
// Usage: bs_bench CASES SPARSITIES ROUNDS [isa filter]
//   CASES: comma list of conv3x3, conv1x1, gemv4096, gemv1024
//   SPARSITIES: comma list of fractions of blocks removed (0 = dense)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <tuple>

#include "bs_kernels.h"

namespace {

struct Case {
  std::string name;
  int H, W, Cin, kh;  // conv (kh x kh, stride 1, same padding); H == 0: GEMV
  int M, K;
  int N() const { return H ? H * W : 1; }
};

Case MakeCase(const std::string& n) {
  if (n == "conv3x3") return {n, 56, 56, 64, 3, 64, 576};
  if (n == "conv1x1") return {n, 28, 28, 256, 1, 256, 256};
  if (n == "gemv4096") return {n, 0, 0, 0, 0, 4096, 4096};
  if (n == "gemv1024") return {n, 0, 0, 0, 0, 1024, 1024};
  std::fprintf(stderr, "unknown case %s\n", n.c_str());
  std::exit(2);
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Block mask (kept blocks) of an M x K matrix in R x C blocks: exactly
// round((1 - sparsity) * blocks) blocks kept, uniformly at random.
std::vector<uint8_t> Mask(int M, int K, int R, int C, double sparsity, std::mt19937* rng) {
  const int64_t nb = (int64_t)(M / R) * (K / C);
  const int64_t keep = std::llround((1.0 - sparsity) * nb);
  std::vector<uint8_t> m(nb, 0);
  std::fill(m.begin(), m.begin() + keep, 1);
  std::shuffle(m.begin(), m.end(), *rng);
  return m;
}

// Packs the dense levels W (M x K, zero outside kept blocks) for a kernel
// with group size `pad` (entries consumed together; C == 1: groups of 4).
Sparse Pack(const std::vector<int8_t>& W, const std::vector<uint8_t>& mask, int M, int K, int R,
            int C, int pad) {
  Sparse s;
  s.R = R, s.C = C, s.M = M, s.K = K, s.pad = pad;
  s.wide = K / C > 256;
  const int ncb = K / C;
  s.wsum.assign(M, 0);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) s.wsum[m] += W[(int64_t)m * K + k];
  for (int br = 0; br < M / R; ++br) {
    std::vector<int> cols;
    for (int cb = 0; cb < ncb; ++cb)
      if (mask[(int64_t)br * ncb + cb]) cols.push_back(cb);
    s.nnz_blocks += cols.size();
    std::vector<bool> real(cols.size(), true);
    while (cols.size() % pad) {  // padding entries: zero values at column 0
      cols.push_back(0);
      real.push_back(false);
    }
    if (cols.size() > 65535) std::abort();
    s.counts.push_back(static_cast<uint16_t>(cols.size()));
    for (int c : cols) {
      if (s.wide) s.idx16.push_back(static_cast<uint16_t>(c));
      else s.idx8.push_back(static_cast<uint8_t>(c));
    }
    auto level = [&](size_t e, int r, int k) -> int8_t {
      return real[e] ? W[(int64_t)(br * R + r) * K + cols[e] * C + k] : 0;
    };
    if (C >= 4) {
      for (size_t e = 0; e < cols.size(); ++e)
        for (int j = 0; j < C / 4; ++j)
          for (int r = 0; r < R; ++r)
            for (int i = 0; i < 4; ++i) s.vals.push_back(level(e, r, 4 * j + i));
    } else {
      for (size_t e = 0; e < cols.size(); e += 4)
        for (int r = 0; r < R; ++r)
          for (int i = 0; i < 4; ++i) s.vals.push_back(level(e + i, r, 0));
    }
  }
  return s;
}

// 2-bit codes (level + 1) of s.vals for vectors of B bytes (see Sparse::codes).
void PackCodes(Sparse* s, int B) {
  s->code_vec = B;
  const int q = B / 4;
  s->codes.assign(s->vals.size() / 4, 0);
  for (size_t c = 0; c < s->vals.size() / B; ++c)
    for (int b = 0; b < B; ++b) {
      const int code = s->vals[c * B + b] + 1;
      s->codes[c * q + b % q] |= static_cast<uint8_t>(code << (2 * (b / q)));
    }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s CASES SPARSITIES ROUNDS [ISA-SUBSTRING]\n", argv[0]);
    return 2;
  }
  auto split = [](std::string s) {
    std::vector<std::string> out;
    size_t p;
    while ((p = s.find(',')) != std::string::npos) out.push_back(s.substr(0, p)), s = s.substr(p + 1);
    if (!s.empty()) out.push_back(s);
    return out;
  };
  const auto cases = split(argv[1]);
  std::vector<double> sps;
  for (auto& x : split(argv[2])) sps.push_back(std::atof(x.c_str()));
  const int rounds = std::atoi(argv[3]);
  const std::string isa_filter = argc > 4 ? argv[4] : "";

  std::vector<Variant> all;
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi")) RegisterAvx512(&all);
  if (__builtin_cpu_supports("avx2")) RegisterAvx2(&all);
  std::mt19937 rng(12345);
  int failures = 0;

  for (const auto& cn : cases) {
    const Case cs = MakeCase(cn);
    const int N = cs.N(), M = cs.M, K = cs.K;
    const bool gemv = cs.H == 0;
    // Activations: int8 codes q in [-127, 127]; the kernels read u = q + 128.
    std::uniform_int_distribution<int> qd(-127, 127);
    std::vector<int8_t> img(gemv ? K : (int64_t)cs.H * cs.W * cs.Cin);
    for (auto& x : img) x = static_cast<int8_t>(qd(rng));
    std::vector<int8_t> Aq((int64_t)N * K);  // im2col, pixel-major, signed
    auto im2col = [&](uint8_t* dst, bool shifted) {
      if (gemv) {
        for (int k = 0; k < K; ++k) dst[k] = static_cast<uint8_t>(img[k] + (shifted ? 128 : 0));
        return;
      }
      const int pad = cs.kh / 2;
      for (int y = 0; y < cs.H; ++y)
        for (int x = 0; x < cs.W; ++x) {
          uint8_t* row = dst + ((int64_t)y * cs.W + x) * K;
          for (int dy = 0; dy < cs.kh; ++dy)
            for (int dx = 0; dx < cs.kh; ++dx) {
              const int iy = y + dy - pad, ix = x + dx - pad;
              uint8_t* d = row + (dy * cs.kh + dx) * cs.Cin;
              if (iy < 0 || iy >= cs.H || ix < 0 || ix >= cs.W) {
                std::memset(d, shifted ? 128 : 0, cs.Cin);
              } else {
                const int8_t* s = img.data() + ((int64_t)iy * cs.W + ix) * cs.Cin;
                for (int c = 0; c < cs.Cin; ++c) d[c] = static_cast<uint8_t>(s[c] + (shifted ? 128 : 0));
              }
            }
        }
    };
    im2col(reinterpret_cast<uint8_t*>(Aq.data()), false);
    // Activation layouts (u = q + 128), built once; their cost is timed below.
    std::map<ALayout, std::vector<uint8_t>> lay;
    lay[ALayout::kRows].resize((int64_t)N * K + 64);
    im2col(lay[ALayout::kRows].data(), true);
    lay[ALayout::kVec] = lay[ALayout::kRows];
    const uint8_t* rows = lay[ALayout::kRows].data();
    auto quads = [&](int lanes, uint8_t* dst) {  // [pv][quad][lane][4]
      for (int pv = 0; pv < N / lanes; ++pv)
        for (int q = 0; q < K / 4; ++q)
          for (int l = 0; l < lanes; ++l)
            std::memcpy(dst + (((int64_t)pv * (K / 4) + q) * lanes + l) * 4,
                        rows + (int64_t)(pv * lanes + l) * K + 4 * q, 4);
    };
    auto krows = [&](int lanes, uint8_t* dst) {  // [pv][k][lane]
      for (int pv = 0; pv < N / lanes; ++pv)
        for (int l = 0; l < lanes; ++l) {
          const uint8_t* src = rows + (int64_t)(pv * lanes + l) * K;
          for (int k = 0; k < K; ++k) dst[((int64_t)pv * K + k) * lanes + l] = src[k];
        }
    };
    if (!gemv) {
      for (auto [l, lanes, fq] : {std::tuple{ALayout::kQuads16, 16, true}, {ALayout::kQuads8, 8, true},
                                  {ALayout::kKRows16, 16, false}, {ALayout::kKRows8, 8, false}}) {
        lay[l].resize((int64_t)N * K + 64);
        if (fq) quads(lanes, lay[l].data());
        else krows(lanes, lay[l].data());
      }
      // Layout costs (scalar loops, medians): what a kernel family adds
      // before its first multiply (im2col for C; im2col + transpose for P),
      // and the int32 output transpose family P needs for NHWC outputs.
      std::vector<uint8_t> tmp((int64_t)N * K + 64);
      std::vector<int32_t> o1((int64_t)N * M), o2((int64_t)N * M);
      auto med = [&](auto fn) {
        std::vector<double> t;
        for (int r = 0; r < 7; ++r) {
          const double t0 = Now();
          fn();
          t.push_back(Now() - t0);
        }
        std::sort(t.begin(), t.end());
        return t[t.size() / 2] * 1e6;
      };
      // im2col as a delegate would do it: the image already holds u = q + 128
      // (the quantizer writes it), runs of Cin bytes copied per tap.
      std::vector<uint8_t> imgu(img.size());
      for (size_t i = 0; i < img.size(); ++i) imgu[i] = static_cast<uint8_t>(img[i] + 128);
      const double t_im2col = cs.kh == 1 ? 0.0 : med([&] {
        const int pad = cs.kh / 2;
        for (int y0 = 0; y0 < cs.H; ++y0)
          for (int x0 = 0; x0 < cs.W; ++x0) {
            uint8_t* row = tmp.data() + ((int64_t)y0 * cs.W + x0) * K;
            for (int dy = 0; dy < cs.kh; ++dy)
              for (int dx = 0; dx < cs.kh; ++dx) {
                const int iy = y0 + dy - pad, ix = x0 + dx - pad;
                uint8_t* d = row + (dy * cs.kh + dx) * cs.Cin;
                if (iy < 0 || iy >= cs.H || ix < 0 || ix >= cs.W) std::memset(d, 128, cs.Cin);
                else std::memcpy(d, imgu.data() + ((int64_t)iy * cs.W + ix) * cs.Cin, cs.Cin);
              }
          }
      });
      const double t_q16 = med([&] { quads(16, tmp.data()); });
      const double t_k16 = med([&] { krows(16, tmp.data()); });
      // Channel-major int32 tile output of family P to NHWC, 16 x 16 tiles.
      const double t_tr = med([&] {
        for (int m0 = 0; m0 < M; m0 += 16)
          for (int n0 = 0; n0 < N; n0 += 16)
            for (int m = m0; m < std::min(M, m0 + 16); ++m)
              for (int n = n0; n < std::min(N, n0 + 16); ++n) o2[(int64_t)n * M + m] = o1[(int64_t)m * N + n];
      });
      std::printf("LAYOUT\t%s\t%.1f\t%.1f\t%.1f\t%.1f\n", cn.c_str(), t_im2col, t_q16, t_k16, t_tr);
    }

    for (double sp : sps) {
      struct Item {
        const Variant* v;
        Sparse s;
        std::vector<double> t;
      };
      std::vector<Item> items;
      std::map<std::pair<int, int>, std::pair<std::vector<int8_t>, std::vector<uint8_t>>> weights;
      std::map<std::pair<int, int>, std::vector<int32_t>> refs;
      for (const auto& v : all) {
        if (!isa_filter.empty() && v.isa.find(isa_filter) == std::string::npos) continue;
        if ((v.kind == Kind::kGemv) != gemv) continue;
        if (M % v.R || K % v.C) continue;
        const auto key = std::make_pair(v.R, v.C);
        if (!weights.count(key)) {
          std::vector<uint8_t> mask = Mask(M, K, v.R, v.C, sp, &rng);
          std::vector<int8_t> W((int64_t)M * K, 0);
          std::uniform_int_distribution<int> ld(-1, 1);
          const int ncb = K / v.C;
          for (int m = 0; m < M; ++m)
            for (int k = 0; k < K; ++k)
              if (mask[(int64_t)(m / v.R) * ncb + k / v.C]) W[(int64_t)m * K + k] = static_cast<int8_t>(ld(rng));
          // Scalar reference, y[n * M + m] = sum_k W[m][k] * q[n][k].
          std::vector<int32_t> ref((int64_t)N * M);
          for (int n = 0; n < N; ++n)
            for (int m = 0; m < M; ++m) {
              int32_t acc = 0;
              const int8_t* wr = W.data() + (int64_t)m * K;
              const int8_t* ar = Aq.data() + (int64_t)n * K;
              for (int k = 0; k < K; ++k) acc += wr[k] * ar[k];
              ref[(int64_t)n * M + m] = acc;
            }
          refs[key] = std::move(ref);
          weights[key] = {std::move(W), std::move(mask)};
        }
        const auto& wm = weights[key];
        items.push_back({&v, Pack(wm.first, wm.second, M, K, v.R, v.C, v.pad), {}});
        if (v.code_vec) {
          PackCodes(&items.back().s, v.code_vec);
          items.back().s.vals.clear();  // the kernel must not need them
          items.back().s.vals.shrink_to_fit();
        }
      }
      // Exact check of every variant before timing.
      std::vector<int32_t> y((int64_t)N * M + 64);
      for (auto& it : items) {
        std::fill(y.begin(), y.end(), 0x7EADBEEF);
        it.v->run(it.s, lay[it.v->layout].data(), N, y.data());
        const auto& ref = refs[{it.v->R, it.v->C}];
        int64_t bad = 0;
        for (int n = 0; n < N; ++n)
          for (int m = 0; m < M; ++m) {
            const int32_t got = it.v->kind == Kind::kGemmP ? y[(int64_t)m * N + n] : y[(int64_t)n * M + m];
            bad += got != ref[(int64_t)n * M + m];
          }
        if (bad) {
          ++failures;
          std::printf("FAIL\t%s\t%g\t%s\t%s\t%dx%d\t%lld mismatches\n", cn.c_str(), sp, it.v->isa.c_str(),
                      it.v->family.c_str(), it.v->R, it.v->C, (long long)bad);
        }
      }
      // Interleaved timing: every round runs every variant once: one untimed
      // warm-up call (the variant before it evicted its data from L1/L2),
      // then `reps` timed calls (>= ~0.3 ms per sample, calibrated on a warm
      // call); medians over the rounds. Without the warm-up, a variant whose
      // calibration call ran cold got few reps and its samples stayed cold.
      std::vector<int> reps(items.size(), 1);
      for (size_t i = 0; i < items.size(); ++i) {
        const auto& it = items[i];
        it.v->run(it.s, lay[it.v->layout].data(), N, y.data());
        const double t0 = Now();
        it.v->run(it.s, lay[it.v->layout].data(), N, y.data());
        const double dt = Now() - t0;
        reps[i] = std::max(1, std::min(1000, static_cast<int>(3e-4 / std::max(dt, 1e-7))));
      }
      for (int r = 0; r < rounds; ++r)
        for (size_t i = 0; i < items.size(); ++i) {
          const auto& it = items[i];
          it.v->run(it.s, lay[it.v->layout].data(), N, y.data());
          const double t0 = Now();
          for (int k = 0; k < reps[i]; ++k) it.v->run(it.s, lay[it.v->layout].data(), N, y.data());
          items[i].t.push_back((Now() - t0) / reps[i]);
        }
      for (auto& it : items) {
        std::sort(it.t.begin(), it.t.end());
        const double nb = (double)(M / it.s.R) * (K / it.s.C);
        std::printf("RESULT\t%s\t%g\t%s\t%s\t%dx%d\t%.2f\t%.4f\t%.2f\t%.2f\t%zu\n", cn.c_str(), sp,
                    it.v->isa.c_str(), it.v->family.c_str(), it.s.R, it.s.C, it.t[it.t.size() / 2] * 1e6,
                    1.0 - it.s.nnz_blocks / nb, it.t[it.t.size() / 4] * 1e6,
                    it.t[it.t.size() * 3 / 4] * 1e6,
                    it.s.vals.size() + it.s.codes.size() + it.s.counts.size() * 2 + it.s.idx8.size() +
                        it.s.idx16.size() * 2);
      }
      std::fflush(stdout);
    }
  }
  if (failures) std::printf("FAILURES\t%d\n", failures);
  return failures ? 1 : 0;
}
