// Portable low-bit kernels of tfq. This tier knows nothing of TFLite: it takes
// float activations, packed weight codes (docs/format.md) and float scales and
// bias, and writes float outputs.
//
// Arithmetic (docs/format.md, "Arithmetic"): activations are quantized to int8
// on the fly with absmax, per row for fully connected layers and per image for
// convolutions; the integer dot product with the weight levels is exact; the
// epilogue is y = float(acc) * (scale[o] / s) + bias[o] followed by the fused
// activation. The reference and the SIMD kernels produce the same int32
// accumulators and share the float epilogue, so their outputs are bit-identical.
#ifndef TFQ_DELEGATES_KERNELS_KERNELS_H_
#define TFQ_DELEGATES_KERNELS_KERNELS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tfq {

class ThreadPool;
struct SparseWeights;  // sparse/sparse.h

// kInt8 is the delegate's own: the 8-bit per-channel weights of a builtin
// dynamic-range CONV_2D it runs (docs/delegate.md, "8-bit convolutions"),
// held block-sparse with every block stored. No tfq file carries it
// (ParseNode knows the four file schemes only), and only the block-sparse
// kernels take it.
enum class Scheme : int { kBinary = 0, kTernary = 1, kPow2_3bit = 2, kPow2_4bit = 3, kInt8 = 4 };
constexpr int kNumSchemes = 5;
enum class Activation : int { kNone = 0, kRelu = 1, kRelu6 = 2 };
enum class Isa : int { kReference = 0, kAvx2 = 1, kNeon = 2, kNeonDotprod = 3, kAvx512Vnni = 4 };

const char* SchemeName(Scheme s);
const char* IsaName(Isa isa);

// The code table of docs/format.md ("Codes and levels"): constexpr, so that
// the SIMD kernels derive their per-scheme constants and lookup tables from
// it at compile time instead of restating them.
constexpr int SchemeBits(Scheme s) {
  switch (s) {
    case Scheme::kBinary: return 1;
    case Scheme::kTernary: return 2;
    case Scheme::kPow2_3bit: return 4;
    case Scheme::kPow2_4bit: return 4;
    case Scheme::kInt8: return 8;
  }
  return 8;
}
// Weights per 32-byte block: 256 / bits.
constexpr int WeightsPerBlock(Scheme s) { return 256 / SchemeBits(s); }
// Largest |level| of the scheme (binary 1, ternary 1, pow2_3bit 4, pow2_4bit 64, int8 128).
constexpr int MaxAbsLevel(Scheme s) {
  switch (s) {
    case Scheme::kBinary: return 1;
    case Scheme::kTernary: return 1;
    case Scheme::kPow2_3bit: return 4;
    case Scheme::kPow2_4bit: return 64;
    case Scheme::kInt8: return 128;
  }
  return 128;
}
// Level of one code, or a value > MaxAbsLevel when the code is invalid for
// the scheme (CodeValid).
constexpr int CodeLevel(Scheme s, int code) {
  constexpr int kInvalid = 1000;
  switch (s) {
    case Scheme::kBinary: return code == 0 ? -1 : (code == 1 ? 1 : kInvalid);
    case Scheme::kTernary: return code <= 2 && code >= 0 ? code - 1 : kInvalid;
    case Scheme::kPow2_3bit:
      if (code == 0) return 0;
      if (code >= 1 && code <= 3) return 1 << (code - 1);
      if (code >= 9 && code <= 11) return -(1 << (code - 9));
      return kInvalid;
    case Scheme::kPow2_4bit:
      if (code == 0) return 0;
      if (code >= 1 && code <= 7) return 1 << (code - 1);
      if (code >= 9 && code <= 15) return -(1 << (code - 9));
      return kInvalid;
    case Scheme::kInt8:  // the byte as two's complement
      return code >= 0 && code <= 255 ? (code < 128 ? code : code - 256) : kInvalid;
  }
  return kInvalid;
}
constexpr bool CodeValid(Scheme s, int code) { return CodeLevel(s, code) <= MaxAbsLevel(s); }
// Padded row length and bytes per packed row; -1 when k is out of range.
int64_t PaddedK(Scheme s, int64_t k);
int64_t RowBytes(Scheme s, int64_t k);
// True when k * MaxAbsLevel * 127 fits in int32 (the format's overflow rule).
bool AccumulatorFits(Scheme s, int64_t k);

// Weights of a mini-block, the end of a row in the version-2 dense layout
// (docs/format.md): one field of a 32-byte block, stored in 4 * bits bytes.
constexpr int kMiniWeights = 32;
constexpr int MiniBlockBytes(Scheme s) { return kMiniWeights * SchemeBits(s) / 8; }

// Where the codes of a dense row sit. Version 1 (compact = false): `blocks`
// whole 32-byte blocks, the last one padded, no mini-blocks. Version 2
// `dense` (compact = true): floor(k / wpb) whole blocks, then `tail`
// mini-blocks of 32 weights. kp = blocks * wpb + tail * 32 is the length of
// a quantized activation row the GEMMs read (zero beyond k).
struct RowGeometry {
  int64_t blocks = 0, tail = 0, row_bytes = -1, kp = -1;
};
// row_bytes and kp are -1 when k is out of range.
RowGeometry DenseRowGeometry(Scheme s, int64_t k, bool compact);

// Scans every field of `rows` packed rows (padding included) of either dense
// layout; returns false and fills *error (naming the row and position) at the
// first invalid code.
bool ValidateCodes(Scheme s, const uint8_t* codes, int64_t rows, int64_t k, std::string* error,
                   bool compact = false);

// Packed weights as stored in the model (not copied).
struct PackedWeights {
  Scheme scheme = Scheme::kTernary;
  const uint8_t* codes = nullptr;
  int64_t rows = 0;       // packed rows (see docs/format.md)
  int64_t k = 0;          // logical row length
  int64_t row_bytes = 0;  // DenseRowGeometry(scheme, k, compact).row_bytes
  // Version-2 dense rows: whole blocks, then 32-weight mini-blocks
  // (DenseRowGeometry); false: version 1, rows padded to whole blocks.
  bool compact = false;
  // Optional execution layout (PreparedWeights::BuildExecLayout): a
  // permutation of the codes, same size (rows rounded up to exec_group),
  // used by ISAs that support it; null: the kernels read `codes` directly.
  const uint8_t* exec = nullptr;
  int exec_group = 0;
  // Block-sparse weights (format version 2, sparse/sparse.h): when set, the fully
  // connected and convolution layers run their dot products with the scalar
  // SparseGemm, and codes / row_bytes / exec are not read.
  const SparseWeights* sparse = nullptr;
  // Block-sparse Conv2D weights whose reduction axis is kernel_h runs of
  // conv_run positions, each a kernel row's kernel_w * in_c adjacent image
  // bytes padded with zero weights to a multiple of block_cols (dilation_w
  // 1 only): blocks never straddle two kernel rows, so the implicit im2col
  // applies whatever in_c is (k = kernel_h * conv_run). 0: the usual
  // [kernel_h, kernel_w, in_c] axis.
  int64_t conv_run = 0;
};

struct Epilogue {
  const float* scale = nullptr;  // per output channel, or one value
  bool per_channel_scale = true;
  const float* bias = nullptr;   // per output channel, or null
  Activation activation = Activation::kNone;
};

struct ConvGeometry {
  int batch = 1, in_h = 0, in_w = 0, in_c = 0;
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1;
  int pad_top = 0, pad_left = 0;
  int out_h = 0, out_w = 0, out_c = 0;
  int depth_multiplier = 1;  // depthwise only
};

// Output size and leading padding of one spatial dimension with TFLite's
// SAME / VALID semantics; returns false when the output would be empty or a
// value is out of range.
bool ComputeOutputSize(bool same_padding, int in, int kernel, int stride, int dilation, int* out,
                       int* pad_before);

// Largest |x| over the finite elements of a float tensor and whether any
// element is NaN or infinite: what the activation quantization of a
// convolution measures first (docs/delegate.md, "Activation statistics").
struct TensorStats {
  float absmax = 0.0f;
  bool nonfinite = false;
};

// Execution options of one call.
struct KernelOptions {
  bool force_reference = false;
  // -1: the best kernels the CPU has; an Isa value: at most that ISA's (the
  // delegate's `isa` option; tests and benchmarks pin a table with it).
  int isa_cap = -1;
  ThreadPool* pool = nullptr;  // null: run on the calling thread
  // Below this many multiply-adds a layer runs on the calling thread: handing
  // out tasks costs microseconds, and on a loaded machine a worker preempted
  // mid-task can stall the caller for a whole time slice.
  int64_t min_parallel_macs = int64_t{1} << 21;
  // Conv2D / DepthwiseConv2D only. input_stats: statistics of the whole
  // input (batch 1 only; ignored otherwise), measured when the producing
  // layer wrote it; saves one pass over the input. They must describe exactly
  // the current contents of x. output_stats: filled with the statistics of
  // everything written to y.
  const TensorStats* input_stats = nullptr;
  TensorStats* output_stats = nullptr;
  // Conv2D / DepthwiseConv2D, batch 1: the int8 hand-over between two
  // low-bit layers (docs/delegate.md, "int8 hand-over").
  // output_q (only with Activation::kRelu6): the outputs are written as
  // q = rint(y * kHandoverScale) in [0, 127] here, and y is not written;
  // output_stats then only reports whether the outputs would have been
  // non-finite (NaN input, or a non-finite output factor).
  // input_q: the input as such a layer wrote it (readable 64 bytes past its
  // end); x is not read. input_nonfinite: that layer reported non-finite
  // outputs: every output is then NaN, as if the float input held NaN.
  int8_t* output_q = nullptr;
  const int8_t* input_q = nullptr;
  bool input_nonfinite = false;
  // Conv2D with float outputs only: a residual addition fused into the
  // epilogue (docs/delegate.md, "Fused residual addition"). Each output is
  // written as act_r(v + residual[i]), v the convolution's own output (its
  // activation applied), i its index in y, act_r residual_activation; the
  // output statistics describe those sums. residual must hold as many floats
  // as y and must not overlap y or x.
  const float* residual = nullptr;
  Activation residual_activation = Activation::kNone;
};

// Fixed activation scale of the int8 hand-over: ReLU6 outputs lie in [0, 6].
constexpr float kHandoverScale = 127.0f / 6.0f;
// Bytes the SIMD depthwise rows may read past the end of an int8 image: its
// own quantized copy, or an input_q image.
constexpr int64_t kHandoverSlack = 64;

// Scratch memory sizes (bytes) the calls below need for the given shapes and
// thread count; callers allocate them once (e.g. when a node is prepared).
size_t FullyConnectedScratchBytes(const PackedWeights& w, int64_t m);
size_t Conv2DScratchBytes(const PackedWeights& w, const ConvGeometry& g, int num_threads);
size_t DepthwiseScratchBytes(const PackedWeights& w, const ConvGeometry& g, int num_threads);

// Max pooling of `image` (batch x in_h x in_w x in_c floats at x) placed at
// (frame_top, frame_left) of a frame of zeros pool.in_h x pool.in_w: a zero
// PAD and a MAX_POOL_2D in one pass, no padded copy. pool: window
// (kernel_h/w), strides, the SAME offsets pad_top/pad_left and out_h/out_w,
// over the frame; window positions outside the frame are ignored (LiteRT's
// SAME), positions in the frame but outside the image count as 0. Then the
// activation (RELU, RELU6). y: batch x out_h x out_w x in_c; a window with
// no position in the frame gives the lowest float, as in LiteRT.
void MaxPoolPadded(const float* x, const ConvGeometry& image, int frame_top, int frame_left,
                   const ConvGeometry& pool, Activation act, float* y);

// y[m, o] for x[m, k]; w.rows == number of outputs.
void FullyConnected(const float* x, int64_t m, const PackedWeights& w, const Epilogue& e, float* y,
                    void* scratch, const KernelOptions& opt);
// NHWC convolution; w.rows == out_c, w.k == kernel_h*kernel_w*in_c in (kh, kw, i) order.
void Conv2D(const float* x, const ConvGeometry& g, const PackedWeights& w, const Epilogue& e,
            float* y, void* scratch, const KernelOptions& opt);
// NHWC depthwise convolution; w.rows == kernel_h*kernel_w taps, w.k == out_c.
void DepthwiseConv2D(const float* x, const ConvGeometry& g, const PackedWeights& w,
                     const Epilogue& e, float* y, void* scratch, const KernelOptions& opt);

// Two-pass activations (docs/delegate.md, "Activation precision"). The layers
// above quantize their input to int8 per segment (a fully connected row, a
// convolution image) and lose up to half a step per element.
// QuantizationResidual writes r = x minus that quantization, exactly as the
// layer computes it. Run on the batch [x; r] with a linear epilogue (no
// bias, no activation), a layer gives two partial outputs a and b whose sum
// carries about 15 bits of activation precision, for twice the
// multiply-adds; CombinePasses writes y = act(a + b + bias[c]) over n
// elements of out_c channels (whole rows only). TwoPassScratchBytes: the
// stacked inputs and outputs and one int8 segment (0 when out of range).
size_t TwoPassScratchBytes(int64_t seg_elems, int64_t in_elems, int64_t out_elems);
void QuantizationResidual(const float* x, int64_t segments, int64_t seg_elems, float* r, int8_t* q,
                          const KernelOptions& opt);
void CombinePasses(const Epilogue& e, const float* a, const float* b, int64_t n, int64_t out_c, float* y);

// y[i] = act(a[i] + b[i]) for i < n: a residual addition the delegate runs
// itself when it cannot fuse it into the convolution that produces a
// (KernelOptions::residual gives the same floats). y must not overlap a or b
// unless it equals one of them.
void AddFloats(const float* a, const float* b, int64_t n, Activation act, float* y);

// Bytes of the execution layout the selected ISA wants for these weights (0:
// none; also 0 when it would exceed 2x the packed size), its channel group,
// and the builder. PreparedWeights calls them; build the layout once per
// weight tensor (e.g. when a node is prepared).
size_t ExecWeightsBytes(const PackedWeights& w, bool force_reference, int* exec_group,
                        int isa_cap = -1);
void PrepareExecWeights(const PackedWeights& w, int exec_group, uint8_t* out);

// One weight tensor made ready for the kernels, once (when a node is
// prepared; the test entry points too): the description of its packed codes
// and, for the GEMM layers, the execution layout of the ISA that will run it.
class PreparedWeights {
 public:
  // Describes rows x k packed codes (not copied), version 1 rows or, with
  // compact, version-2 dense rows. Returns false, leaving the object
  // unchanged, when rows or k is out of range or the accumulator could
  // overflow int32 (AccumulatorFits).
  bool Init(Scheme scheme, const uint8_t* codes, int64_t rows, int64_t k, bool compact = false);
  bool ready() const { return w_.rows > 0; }
  // Builds the execution layout the selected ISA wants (FullyConnected and
  // Conv2D weights; none for depthwise), unless built already.
  void BuildExecLayout(bool force_reference, int isa_cap = -1);
  // The weights as the kernels take them, reading the codes at `codes` (the
  // same bytes as at Init: a constant tensor's data, fetched again per call).
  PackedWeights At(const uint8_t* codes) const {
    PackedWeights w = w_;
    w.codes = codes;
    w.exec = exec_.empty() ? nullptr : exec_.data();
    return w;
  }

 private:
  PackedWeights w_;  // exec is set by At (this object may move)
  std::vector<uint8_t> exec_;
  bool exec_built_ = false;
};

// The instruction set the dispatcher picks (force_reference -> kReference;
// isa_cap as KernelOptions::isa_cap), and whether this build and CPU have it.
Isa SelectedIsa(bool force_reference, int isa_cap = -1);
bool IsaAvailable(Isa isa);

// Exactly the float elements the calls above read from x and write to y:
// what a caller checks its buffers against before every call (the kernels
// trust these sizes; docs/delegate.md, "Memory invariants").
inline int64_t FullyConnectedInputElems(const PackedWeights& w, int64_t m) { return m * w.k; }
inline int64_t FullyConnectedOutputElems(const PackedWeights& w, int64_t m) { return m * w.rows; }
inline int64_t ConvInputElems(const ConvGeometry& g) {
  return static_cast<int64_t>(g.batch) * g.in_h * g.in_w * g.in_c;
}
inline int64_t ConvOutputElems(const ConvGeometry& g) {
  return static_cast<int64_t>(g.batch) * g.out_h * g.out_w * g.out_c;
}

}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_KERNELS_H_
