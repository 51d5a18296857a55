#include "node_spec.h"

#include <cstring>
#include <limits>

#include "flexbuffer_reader.h"

namespace tfq {
namespace {

constexpr int64_t kMaxDim = int64_t{1} << 30;
constexpr int64_t kMaxElements = int64_t{1} << 40;

std::string Str(int64_t v) { return std::to_string(v); }

// Enum fields read as raw ints: a crafted model may hold values outside the
// enumerators we (or an older header) declare, and loading such a value as the
// enum type is undefined behaviour.
int RawType(const TfLiteTensor* t) {
  int v;
  std::memcpy(&v, &t->type, sizeof(v));
  return v;
}
int RawAllocation(const TfLiteTensor* t) {
  int v;
  std::memcpy(&v, &t->allocation_type, sizeof(v));
  return v;
}

bool Fail(std::string* error, const std::string& message) {
  *error = message;
  return false;
}

const TfLiteTensor* TensorAt(const TfLiteContext* context, const TfLiteIntArray* list, int i,
                             int* index) {
  if (list == nullptr || i >= list->size) return nullptr;
  const int t = list->data[i];
  *index = t;
  if (t < 0 || static_cast<size_t>(t) >= context->tensors_size) return nullptr;
  return &context->tensors[t];
}

int64_t NumElements(const TfLiteTensor* t) {
  if (t->dims == nullptr) return -1;
  int64_t n = 1;
  for (int i = 0; i < t->dims->size; ++i) {
    const int d = t->dims->data[i];
    if (d < 0 || d > kMaxDim) return -1;
    n *= d;
    if (n > kMaxElements) return -1;
  }
  return n;
}

bool IsConstant(const TfLiteTensor* t) {
  const int a = RawAllocation(t);
  return t->data.raw != nullptr && (a == kTfLiteMmapRo || a == kTfLitePersistentRo);
}

bool CheckConstFloat(const TfLiteTensor* t, const char* what, int64_t want_a, int64_t want_b,
                     std::string* error) {
  const int64_t n = NumElements(t);
  if (RawType(t) != kTfLiteFloat32) return Fail(error, std::string(what) + " tensor must be float32");
  if (!IsConstant(t)) return Fail(error, std::string(what) + " tensor must be constant");
  if (n != want_a && n != want_b)
    return Fail(error, std::string(what) + " tensor has " + Str(n) + " elements, expected " +
                           Str(want_a) + (want_b != want_a ? " or " + Str(want_b) : std::string()));
  if (t->bytes != static_cast<size_t>(n) * sizeof(float))
    return Fail(error, std::string(what) + " tensor byte size does not match its shape");
  return true;
}

// The output must be a tensor of its own: writing it must not change what
// the node reads, nor memory the runtime maps read-only.
bool OwnOutput(const TfLiteNode* node, const TfLiteTensor* out, int output, std::string* error) {
  for (int i = 0; i < node->inputs->size; ++i)
    if (node->inputs->data[i] == output)
      return Fail(error, "output tensor " + Str(output) + " is also input " + Str(i) + " of the node");
  const int alloc = RawAllocation(out);
  if (alloc == kTfLiteMmapRo || alloc == kTfLitePersistentRo)
    return Fail(error, "output tensor " + Str(output) + " is a constant");
  return true;
}

// A TfLiteFusedActivation read as an int (builtin options of ADD, CONV_2D,
// MAX_POOL_2D): NONE, RELU or RELU6, else false with *error.
bool FusedActivation(int v, const char* op, Activation* a, std::string* error) {
  switch (v) {
    case 0: *a = Activation::kNone; return true;
    case 1: *a = Activation::kRelu; return true;
    case 3: *a = Activation::kRelu6; return true;
  }
  return Fail(error, std::string(op) + " fused activation " + Str(v) + " is not NONE, RELU or RELU6");
}

// A TfLitePadding read as an int: SAME (1) or VALID (2), else false.
bool SamePadding(int v, bool* same, std::string* error) {
  if (v != 1 && v != 2) return Fail(error, "padding " + Str(v) + " is not SAME or VALID");
  *same = v == 1;
  return true;
}

}  // namespace

bool IsTfqOp(const char* name, OpKind* kind) {
  if (name == nullptr) return false;
  if (std::strcmp(name, "TFQ_FULLY_CONNECTED") == 0) *kind = OpKind::kFullyConnected;
  else if (std::strcmp(name, "TFQ_CONV_2D") == 0) *kind = OpKind::kConv2D;
  else if (std::strcmp(name, "TFQ_DEPTHWISE_CONV_2D") == 0) *kind = OpKind::kDepthwiseConv2D;
  else return false;
  return true;
}

const char* OpName(OpKind kind) {
  switch (kind) {
    case OpKind::kFullyConnected: return "TFQ_FULLY_CONNECTED";
    case OpKind::kConv2D: return "TFQ_CONV_2D";
    case OpKind::kDepthwiseConv2D: return "TFQ_DEPTHWISE_CONV_2D";
  }
  return "?";
}

const char* SpecName(const NodeSpec& spec) { return spec.int8_conv ? "CONV_2D" : OpName(spec.kind); }

bool ParseNode(const TfLiteContext* context, const TfLiteNode* node, OpKind kind, NodeSpec* spec,
               std::string* error) {
  spec->kind = kind;
  FlexMapReader opts;
  if (node->custom_initial_data == nullptr || node->custom_initial_data_size <= 0)
    return Fail(error, "missing custom options");
  if (!opts.Parse(static_cast<const uint8_t*>(node->custom_initial_data),
                  static_cast<size_t>(node->custom_initial_data_size), error))
    return false;
  using R = FlexMapReader::Result;
  auto get_int = [&](const char* key, int64_t lo, int64_t hi, int64_t* out) {
    const R r = opts.GetInt(key, out);
    if (r == R::kMissing) return Fail(error, std::string("custom option '") + key + "' is missing");
    if (r == R::kWrongType)
      return Fail(error, std::string("custom option '") + key + "' is not an integer");
    if (*out < lo || *out > hi)
      return Fail(error, std::string("custom option '") + key + "' = " + Str(*out) +
                             " is out of range [" + Str(lo) + ", " + Str(hi) + "]");
    return true;
  };
  auto get_str = [&](const char* key, std::string* out) {
    const R r = opts.GetString(key, out);
    if (r == R::kMissing) return Fail(error, std::string("custom option '") + key + "' is missing");
    if (r == R::kWrongType)
      return Fail(error, std::string("custom option '") + key + "' is not a string");
    return true;
  };
  int64_t version;
  {
    const R r = opts.GetInt("version", &version);
    if (r != R::kOk) return Fail(error, "custom option 'version' is missing or not an integer");
    if (version != 1 && version != 2)
      return Fail(error, "unsupported format version " + Str(version) + " (supported: 1, 2)");
  }
  // Version 1 ignores keys it does not know (docs/format.md), 'layout' too.
  std::string layout;
  if (version == 2) {
    if (!get_str("layout", &layout)) return false;
    if (layout != "block_sparse" && layout != "dense")
      return Fail(error, "unknown layout '" + layout + "' (format version 2 knows: block_sparse, dense)");
  }
  spec->sparse = layout == "block_sparse";
  spec->compact = layout == "dense";
  std::string s;
  if (!get_str("scheme", &s)) return false;
  if (s == "binary") spec->scheme = Scheme::kBinary;
  else if (s == "ternary") spec->scheme = Scheme::kTernary;
  else if (s == "pow2_3bit") spec->scheme = Scheme::kPow2_3bit;
  else if (s == "pow2_4bit") spec->scheme = Scheme::kPow2_4bit;
  else return Fail(error, "unknown scheme '" + s + "' (known: binary, ternary, pow2_3bit, pow2_4bit)");
  int64_t bits;
  if (!get_int("bits", 1, 8, &bits)) return false;
  if (bits != SchemeBits(spec->scheme))
    return Fail(error, "bits = " + Str(bits) + " does not match scheme " + s + " (expects " +
                           Str(SchemeBits(spec->scheme)) + ")");
  if (!get_int("rows", 1, kMaxDim, &spec->rows) || !get_int("k", 1, kMaxDim, &spec->k)) return false;
  if (!get_str("activation", &s)) return false;
  if (s == "NONE") spec->activation = Activation::kNone;
  else if (s == "RELU") spec->activation = Activation::kRelu;
  else if (s == "RELU6") spec->activation = Activation::kRelu6;
  else return Fail(error, "unknown activation '" + s + "' (known: NONE, RELU, RELU6)");
  {
    const R r = opts.GetIntVector("weight_shape", &spec->weight_shape);
    if (r != R::kOk) return Fail(error, "custom option 'weight_shape' is missing or not an int vector");
    for (int64_t d : spec->weight_shape)
      if (d < 1 || d > kMaxDim) return Fail(error, "weight_shape has an invalid dimension " + Str(d));
  }
  const auto& ws = spec->weight_shape;
  if (kind == OpKind::kFullyConnected) {
    if (ws.size() != 2) return Fail(error, "weight_shape must be [O, K] for TFQ_FULLY_CONNECTED");
    if (ws[0] != spec->rows || ws[1] != spec->k)
      return Fail(error, "weight_shape [" + Str(ws[0]) + ", " + Str(ws[1]) +
                             "] disagrees with rows/k " + Str(spec->rows) + "/" + Str(spec->k));
    spec->out_channels = ws[0];
  } else {
    if (ws.size() != 4) return Fail(error, "weight_shape must have 4 dimensions");
    int64_t v;
    if (!get_int("stride_h", 1, 1 << 16, &v)) return false;
    spec->stride_h = static_cast<int>(v);
    if (!get_int("stride_w", 1, 1 << 16, &v)) return false;
    spec->stride_w = static_cast<int>(v);
    if (!get_int("dilation_h", 1, 1 << 16, &v)) return false;
    spec->dilation_h = static_cast<int>(v);
    if (!get_int("dilation_w", 1, 1 << 16, &v)) return false;
    spec->dilation_w = static_cast<int>(v);
    if (!get_str("padding", &s)) return false;
    if (s == "SAME") spec->same_padding = true;
    else if (s == "VALID") spec->same_padding = false;
    else return Fail(error, "unknown padding '" + s + "' (known: SAME, VALID)");
    if (ws[1] * ws[2] > 4096) return Fail(error, "kernel window larger than 4096 taps");
    if (kind == OpKind::kConv2D) {
      if (ws[0] != spec->rows || ws[1] * ws[2] * ws[3] != spec->k)
        return Fail(error, "weight_shape [O, KH, KW, I] disagrees with rows/k " + Str(spec->rows) +
                               "/" + Str(spec->k));
      spec->out_channels = ws[0];
    } else {
      if (!get_int("depth_multiplier", 1, kMaxDim, &v)) return false;
      spec->depth_multiplier = static_cast<int>(v);
      if (ws[0] != 1 || ws[1] * ws[2] != spec->rows || ws[3] != spec->k)
        return Fail(error, "weight_shape [1, KH, KW, O] disagrees with rows/k " + Str(spec->rows) +
                               "/" + Str(spec->k));
      if (ws[3] % spec->depth_multiplier != 0)
        return Fail(error, "output channels are not a multiple of depth_multiplier");
      spec->out_channels = ws[3];
    }
  }
  if (!AccumulatorFits(spec->scheme, spec->k))
    return Fail(error, "row length k = " + Str(spec->k) + " could overflow the int32 accumulator");
  if (spec->compact && kind == OpKind::kDepthwiseConv2D)
    return Fail(error, "a TFQ_DEPTHWISE_CONV_2D cannot have layout 'dense' (version 2 covers "
                       "TFQ_FULLY_CONNECTED and TFQ_CONV_2D; depthwise stays version 1)");
  if (spec->sparse) {
    if (kind == OpKind::kDepthwiseConv2D)
      return Fail(error, "a TFQ_DEPTHWISE_CONV_2D cannot be block-sparse (version 2 covers "
                         "TFQ_FULLY_CONNECTED and TFQ_CONV_2D)");
    if (spec->scheme == Scheme::kBinary)
      return Fail(error, "a binary op cannot be block-sparse (the scheme has no zero)");
    SparseOptions& so = spec->sparse_options;
    int64_t v;
    if (!get_int("block_rows", 1, 32, &v)) return false;
    so.block_rows = static_cast<int>(v);
    if (!get_int("block_cols", 1, 32, &v)) return false;
    so.block_cols = static_cast<int>(v);
    if (!get_int("index_bits", 0, 64, &v)) return false;
    so.index_bits = static_cast<int>(v);
    if (!get_int("nnz_blocks", 0, std::numeric_limits<int64_t>::max(), &so.nnz_blocks)) return false;
    if (!ComputeSparseSizes(spec->scheme, spec->rows, spec->k, so, &spec->sparse_sizes, error))
      return false;
    spec->packed_bytes = spec->sparse_sizes.packed_bytes;
  } else {
    // rows, k <= 2^30: the product fits in int64.
    spec->packed_bytes = DenseRowGeometry(spec->scheme, spec->k, spec->compact).row_bytes * spec->rows;
  }

  // Tensors.
  if (node->inputs == nullptr || node->outputs == nullptr)
    return Fail(error, "node has no input or output list");
  if (node->inputs->size != 3 && node->inputs->size != 4)
    return Fail(error, "expected 3 or 4 inputs, found " + Str(node->inputs->size));
  if (node->outputs->size != 1) return Fail(error, "expected 1 output, found " + Str(node->outputs->size));
  const TfLiteTensor* in = TensorAt(context, node->inputs, 0, &spec->input);
  const TfLiteTensor* w = TensorAt(context, node->inputs, 1, &spec->weights);
  const TfLiteTensor* sc = TensorAt(context, node->inputs, 2, &spec->scale);
  const TfLiteTensor* out = TensorAt(context, node->outputs, 0, &spec->output);
  if (!in || !w || !sc || !out) return Fail(error, "tensor index out of range");
  if (!OwnOutput(node, out, spec->output, error)) return false;
  if (RawType(in) != kTfLiteFloat32) return Fail(error, "input 0 (activations) must be float32");
  if (RawType(out) != kTfLiteFloat32) return Fail(error, "output must be float32");
  if (RawType(w) != kTfLiteUInt8) return Fail(error, "input 1 (packed codes) must be uint8");
  if (!IsConstant(w)) return Fail(error, "input 1 (packed codes) must be constant");
  const int64_t packed = spec->packed_bytes;
  if (NumElements(w) != packed || static_cast<uint64_t>(w->bytes) != static_cast<uint64_t>(packed))
    return Fail(error, "packed codes have " + Str(static_cast<int64_t>(w->bytes)) + " bytes, expected " +
                           (spec->sparse    ? "2 nbr + nnz_blocks * (index_bits / 8 + block_bytes) = "
                            : spec->compact ? "rows * (whole blocks * 32 + mini-blocks * 4 * bits) = "
                                            : "rows * row_bytes = ") +
                           Str(packed));
  spec->bias = -1;
  if (node->inputs->size == 4 && node->inputs->data[3] >= 0) {
    const TfLiteTensor* b = TensorAt(context, node->inputs, 3, &spec->bias);
    if (!b) return Fail(error, "bias tensor index out of range");
    if (!CheckConstFloat(b, "bias", spec->out_channels, spec->out_channels, error)) return false;
  }
  if (!CheckConstFloat(sc, "scale", spec->out_channels, 1, error)) return false;
  spec->per_channel_scale = NumElements(sc) == spec->out_channels;
  if (spec->sparse)
    return ValidateSparse(spec->scheme, spec->rows, spec->k, spec->sparse_options, spec->sparse_sizes,
                          w->data.uint8, error);
  if (!ValidateCodes(spec->scheme, w->data.uint8, spec->rows, spec->k, error, spec->compact)) return false;
  return true;
}

bool ParseAdd(const TfLiteContext* context, const TfLiteNode* node, AddSpec* spec,
              std::string* error) {
  if (node->inputs == nullptr || node->outputs == nullptr)
    return Fail(error, "node has no input or output list");
  if (node->inputs->size != 2) return Fail(error, "expected 2 inputs, found " + Str(node->inputs->size));
  if (node->outputs->size != 1) return Fail(error, "expected 1 output, found " + Str(node->outputs->size));
  if (node->builtin_data == nullptr) return Fail(error, "ADD has no parameters");
  const TfLiteTensor* a = TensorAt(context, node->inputs, 0, &spec->inputs[0]);
  const TfLiteTensor* b = TensorAt(context, node->inputs, 1, &spec->inputs[1]);
  const TfLiteTensor* out = TensorAt(context, node->outputs, 0, &spec->output);
  if (!a || !b || !out) return Fail(error, "tensor index out of range");
  if (RawType(a) != kTfLiteFloat32 || RawType(b) != kTfLiteFloat32 || RawType(out) != kTfLiteFloat32)
    return Fail(error, "ADD is not float32");
  if (spec->inputs[0] == spec->output || spec->inputs[1] == spec->output)
    return Fail(error, "ADD output tensor " + Str(spec->output) + " is also its input");
  if (RawAllocation(out) == kTfLiteMmapRo || RawAllocation(out) == kTfLitePersistentRo)
    return Fail(error, "ADD output tensor " + Str(spec->output) + " is a constant");
  if (IsConstant(a) || IsConstant(b)) return Fail(error, "ADD has a constant input");
  // TfLiteAddParams starts with its TfLiteFusedActivation (an int enum).
  int act;
  std::memcpy(&act, node->builtin_data, sizeof(act));
  return FusedActivation(act, "ADD", &spec->activation, error);
}

bool ParseInt8Conv(const TfLiteContext* context, const TfLiteNode* node, NodeSpec* spec,
                   std::string* error) {
  *spec = NodeSpec();
  spec->kind = OpKind::kConv2D;
  spec->scheme = Scheme::kInt8;
  spec->int8_conv = true;
  spec->sparse = true;
  if (node->inputs == nullptr || node->outputs == nullptr)
    return Fail(error, "node has no input or output list");
  if (node->inputs->size != 2 && node->inputs->size != 3)
    return Fail(error, "expected 2 or 3 inputs, found " + Str(node->inputs->size));
  if (node->outputs->size != 1) return Fail(error, "expected 1 output, found " + Str(node->outputs->size));
  if (node->builtin_data == nullptr) return Fail(error, "CONV_2D has no parameters");
  const TfLiteTensor* in = TensorAt(context, node->inputs, 0, &spec->input);
  const TfLiteTensor* w = TensorAt(context, node->inputs, 1, &spec->weights);
  const TfLiteTensor* out = TensorAt(context, node->outputs, 0, &spec->output);
  if (!in || !w || !out) return Fail(error, "tensor index out of range");
  if (!OwnOutput(node, out, spec->output, error)) return false;
  if (RawType(in) != kTfLiteFloat32 || IsConstant(in))
    return Fail(error, "input 0 is not a float32 activation tensor");
  if (RawType(out) != kTfLiteFloat32) return Fail(error, "output is not float32");
  if (RawType(w) != kTfLiteInt8 || !IsConstant(w))
    return Fail(error, "filter is not a constant int8 tensor (not a dynamic-range convolution)");
  if (w->dims == nullptr || w->dims->size != 4) return Fail(error, "filter is not 4-D [O, KH, KW, I]");
  const int64_t elems = NumElements(w);
  if (elems <= 0) return Fail(error, "filter has an invalid or empty shape");
  if (static_cast<uint64_t>(w->bytes) != static_cast<uint64_t>(elems))
    return Fail(error, "filter has " + Str(static_cast<int64_t>(w->bytes)) + " bytes, its shape needs " +
                           Str(elems));
  spec->weight_shape.assign(w->dims->data, w->dims->data + 4);
  const auto& ws = spec->weight_shape;
  if (ws[1] * ws[2] > 4096) return Fail(error, "kernel window larger than 4096 taps");
  spec->rows = spec->out_channels = ws[0];
  spec->k = ws[1] * ws[2] * ws[3];
  spec->packed_bytes = elems;
  if (!AccumulatorFits(spec->scheme, spec->k))
    return Fail(error, "row length k = " + Str(spec->k) + " could overflow the int32 accumulator");
  // Symmetric quantization along the output channels.
  if (w->quantization.type != kTfLiteAffineQuantization || w->quantization.params == nullptr)
    return Fail(error, "filter has no affine quantization");
  const auto* q = static_cast<const TfLiteAffineQuantization*>(w->quantization.params);
  const TfLiteFloatArray* sc = q->scale;
  if (sc == nullptr || (sc->size != 1 && sc->size != spec->rows))
    return Fail(error, "filter has " + Str(sc == nullptr ? 0 : sc->size) + " scales, expected 1 or " +
                           Str(spec->rows));
  if (sc->size > 1 && q->quantized_dimension != 0)
    return Fail(error, "filter is quantized along axis " + Str(q->quantized_dimension) + ", not 0");
  for (int i = 0; i < sc->size; ++i)
    if (!(sc->data[i] > 0.0f && sc->data[i] <= std::numeric_limits<float>::max()))
      return Fail(error, "filter scale " + Str(i) + " is not finite and positive");
  const TfLiteIntArray* zp = q->zero_point;
  if (zp != nullptr) {
    if (zp->size != 0 && zp->size != sc->size) return Fail(error, "filter zero points do not match its scales");
    for (int i = 0; i < zp->size; ++i)
      if (zp->data[i] != 0) return Fail(error, "filter zero point " + Str(i) + " is not 0 (not symmetric)");
  }
  spec->per_channel_scale = sc->size > 1;
  spec->int8_scale.assign(sc->data, sc->data + sc->size);
  spec->scale = -1;
  spec->bias = -1;
  if (node->inputs->size == 3 && node->inputs->data[2] >= 0) {
    const TfLiteTensor* b = TensorAt(context, node->inputs, 2, &spec->bias);
    if (!b) return Fail(error, "bias tensor index out of range");
    if (!CheckConstFloat(b, "bias", spec->out_channels, spec->out_channels, error)) return false;
  }
  // TfLiteConvParams: padding, stride_width, stride_height, activation,
  // dilation_width_factor, dilation_height_factor (ints and int enums).
  int p[6];
  std::memcpy(p, node->builtin_data, sizeof(p));
  if (!SamePadding(p[0], &spec->same_padding, error) ||
      !FusedActivation(p[3], "CONV_2D", &spec->activation, error))
    return false;
  for (int i : {1, 2, 4, 5})
    if (p[i] < 1 || p[i] > (1 << 16)) return Fail(error, "stride or dilation " + Str(p[i]) + " out of range");
  spec->stride_w = p[1];
  spec->stride_h = p[2];
  spec->dilation_w = p[4];
  spec->dilation_h = p[5];
  // Kernel rows as runs of adjacent bytes (a 7x7 stem on 3 channels: 21
  // bytes, run 24): no im2col copy.
  if (ws[3] % 4 != 0 && spec->dilation_w == 1) {
    spec->conv_run = (ws[2] * ws[3] + 3) / 4 * 4;
    spec->k = ws[1] * spec->conv_run;
    if (!AccumulatorFits(spec->scheme, spec->k))
      return Fail(error, "row length k = " + Str(spec->k) + " could overflow the int32 accumulator");
  }
  // Every block stored: blocks of 16 (or 8) output channels x 4 positions.
  SparseOptions& so = spec->sparse_options;
  so.block_rows = spec->rows >= 16 ? 16 : 8;
  so.block_cols = 4;
  const int64_t nbr = (spec->rows + so.block_rows - 1) / so.block_rows;
  const int64_t nbc = (spec->k + 3) / 4;
  if (nbc > kMaxBlockColumns) return Fail(error, "row length k = " + Str(spec->k) + " is too long");
  so.index_bits = nbc <= 256 ? 8 : 16;
  so.nnz_blocks = nbr * nbc;
  return ComputeSparseSizes(spec->scheme, spec->rows, spec->k, so, &spec->sparse_sizes, error);
}

bool ParseMaxPool(const TfLiteContext* context, const TfLiteNode* node, PoolSpec* spec, std::string* error) {
  if (node->inputs == nullptr || node->outputs == nullptr)
    return Fail(error, "node has no input or output list");
  if (node->inputs->size != 1) return Fail(error, "expected 1 input, found " + Str(node->inputs->size));
  if (node->outputs->size != 1) return Fail(error, "expected 1 output, found " + Str(node->outputs->size));
  if (node->builtin_data == nullptr) return Fail(error, "MAX_POOL_2D has no parameters");
  const TfLiteTensor* in = TensorAt(context, node->inputs, 0, &spec->input);
  const TfLiteTensor* out = TensorAt(context, node->outputs, 0, &spec->output);
  if (!in || !out) return Fail(error, "tensor index out of range");
  if (RawType(in) != kTfLiteFloat32 || RawType(out) != kTfLiteFloat32) return Fail(error, "MAX_POOL_2D is not float32");
  if (IsConstant(in)) return Fail(error, "input is a constant");
  if (!OwnOutput(node, out, spec->output, error)) return false;
  // TfLitePoolParams: padding, stride_width, stride_height, filter_width,
  // filter_height, activation (ints and int enums).
  int p[6];
  std::memcpy(p, node->builtin_data, sizeof(p));
  if (!SamePadding(p[0], &spec->same_padding, error) ||
      !FusedActivation(p[5], "MAX_POOL_2D", &spec->activation, error))
    return false;
  for (int i = 1; i <= 4; ++i)
    if (p[i] < 1 || p[i] > (1 << 16)) return Fail(error, "stride or window " + Str(p[i]) + " out of range");
  spec->stride_w = p[1];
  spec->stride_h = p[2];
  spec->filter_w = p[3];
  spec->filter_h = p[4];
  return true;
}

void BuildInt8Blocks(const NodeSpec& spec, const int8_t* filter, std::vector<uint8_t>* out) {
  const SparseOptions& so = spec.sparse_options;
  const SparseSizes& sz = spec.sparse_sizes;
  const int R = so.block_rows, C = so.block_cols, ib = so.index_bits / 8;
  const int64_t nbr = sz.block_row_count, nbc = sz.block_col_count;
  out->assign(static_cast<size_t>(sz.packed_bytes), 0);
  uint8_t* counts = out->data();
  uint8_t* indices = counts + 2 * nbr;
  uint8_t* codes = indices + so.nnz_blocks * ib;
  const int64_t filter_k = spec.weight_shape[1] * spec.weight_shape[2] * spec.weight_shape[3];
  for (int64_t br = 0; br < nbr; ++br) {
    counts[2 * br] = static_cast<uint8_t>(nbc & 0xFF);
    counts[2 * br + 1] = static_cast<uint8_t>(nbc >> 8);
    for (int64_t bc = 0; bc < nbc; ++bc) {
      const int64_t b = br * nbc + bc;
      indices[b * ib] = static_cast<uint8_t>(bc & 0xFF);
      if (ib == 2) indices[b * ib + 1] = static_cast<uint8_t>(bc >> 8);
      uint8_t* block = codes + b * sz.block_bytes;
      for (int r = 0; r < R && br * R + r < spec.rows; ++r)
        for (int c = 0; c < C && bc * C + c < spec.k; ++c) {
          // Position p of the node's axis -> index in the filter row (-1: a run's zero tail).
          int64_t p = bc * C + c;
          if (spec.conv_run > 0) {
            const int64_t run_used = spec.weight_shape[2] * spec.weight_shape[3];
            p = p % spec.conv_run < run_used ? p / spec.conv_run * run_used + p % spec.conv_run : -1;
          }
          if (p >= 0) block[r * C + c] = static_cast<uint8_t>(filter[(br * R + r) * filter_k + p]);
        }
    }
  }
}

bool ParsePad(const TfLiteContext* context, const TfLiteNode* node, PadSpec* spec, std::string* error) {
  if (node->inputs == nullptr || node->outputs == nullptr)
    return Fail(error, "node has no input or output list");
  if (node->inputs->size != 2) return Fail(error, "expected 2 inputs, found " + Str(node->inputs->size));
  if (node->outputs->size != 1) return Fail(error, "expected 1 output, found " + Str(node->outputs->size));
  const TfLiteTensor* in = TensorAt(context, node->inputs, 0, &spec->input);
  const TfLiteTensor* pads = TensorAt(context, node->inputs, 1, &spec->paddings);
  const TfLiteTensor* out = TensorAt(context, node->outputs, 0, &spec->output);
  if (!in || !pads || !out) return Fail(error, "tensor index out of range");
  if (RawType(in) != kTfLiteFloat32 || RawType(out) != kTfLiteFloat32) return Fail(error, "PAD is not float32");
  if (spec->input == spec->output) return Fail(error, "PAD output tensor " + Str(spec->output) + " is its input");
  if (IsConstant(in)) return Fail(error, "PAD has a constant input");
  if (RawAllocation(out) == kTfLiteMmapRo || RawAllocation(out) == kTfLitePersistentRo)
    return Fail(error, "PAD output tensor " + Str(spec->output) + " is a constant");
  if (in->dims == nullptr || in->dims->size < 1 || in->dims->size > 4)
    return Fail(error, "PAD input must have rank 1 to 4");
  spec->rank = in->dims->size;
  if (!IsConstant(pads)) return Fail(error, "PAD paddings tensor must be constant");
  const int ptype = RawType(pads);
  if (ptype != kTfLiteInt32 && ptype != kTfLiteInt64) return Fail(error, "PAD paddings must be int32 or int64");
  if (pads->dims == nullptr || pads->dims->size != 2 || pads->dims->data[0] != spec->rank ||
      pads->dims->data[1] != 2)
    return Fail(error, "PAD paddings must have shape [" + Str(spec->rank) + ", 2]");
  const size_t width = ptype == kTfLiteInt32 ? 4 : 8;
  if (pads->bytes != static_cast<size_t>(spec->rank) * 2 * width)
    return Fail(error, "PAD paddings byte size does not match its shape");
  for (int a = 0; a < spec->rank; ++a) {
    for (int side = 0; side < 2; ++side) {
      int64_t v;
      const char* src = pads->data.raw_const + (a * 2 + side) * width;
      if (width == 4) {
        int32_t v32;
        std::memcpy(&v32, src, 4);
        v = v32;
      } else {
        std::memcpy(&v, src, 8);
      }
      if (v < 0 || v > kMaxPad)
        return Fail(error, "PAD padding " + Str(v) + " of axis " + Str(a) + " is outside [0, " + Str(kMaxPad) + "]");
      (side == 0 ? spec->before : spec->after)[a] = v;
    }
  }
  return true;
}

bool ComputeShapes(const TfLiteContext* context, const NodeSpec& spec, ConvGeometry* g,
                   int64_t* fc_rows, std::vector<int>* out_dims, std::string* error) {
  if (spec.input < 0 || static_cast<size_t>(spec.input) >= context->tensors_size)
    return Fail(error, "input tensor index out of range");
  const TfLiteTensor* in = &context->tensors[spec.input];
  const int64_t n = NumElements(in);
  if (n < 0) return Fail(error, "input tensor has an invalid shape");
  out_dims->clear();
  if (spec.kind == OpKind::kFullyConnected) {
    if (in->dims->size < 1) return Fail(error, "fully connected input must have rank >= 1");
    const int last = in->dims->data[in->dims->size - 1];
    if (n % spec.k != 0 || n == 0)
      return Fail(error, "input size " + Str(n) + " is not a positive multiple of k = " + Str(spec.k));
    *fc_rows = n / spec.k;
    if (*fc_rows > kMaxDim || *fc_rows > kMaxElements / spec.out_channels)
      return Fail(error, "output too large");
    const TfLiteTensor* out = &context->tensors[spec.output];
    if (out->dims != nullptr && out->dims->size == in->dims->size && last == spec.k) {
      for (int i = 0; i + 1 < in->dims->size; ++i) out_dims->push_back(in->dims->data[i]);
    } else {
      out_dims->push_back(static_cast<int>(*fc_rows));
    }
    out_dims->push_back(static_cast<int>(spec.out_channels));
    return true;
  }
  if (in->dims->size != 4) return Fail(error, "convolution input must be 4-D NHWC");
  g->batch = in->dims->data[0];
  g->in_h = in->dims->data[1];
  g->in_w = in->dims->data[2];
  g->in_c = in->dims->data[3];
  const auto& ws = spec.weight_shape;
  g->kernel_h = static_cast<int>(ws[1]);
  g->kernel_w = static_cast<int>(ws[2]);
  g->stride_h = spec.stride_h;
  g->stride_w = spec.stride_w;
  g->dilation_h = spec.dilation_h;
  g->dilation_w = spec.dilation_w;
  g->depth_multiplier = spec.depth_multiplier;
  g->out_c = static_cast<int>(spec.out_channels);
  if (spec.kind == OpKind::kConv2D) {
    if (g->in_c != ws[3])
      return Fail(error, "input has " + Str(g->in_c) + " channels, weights expect " + Str(ws[3]));
  } else {
    if (static_cast<int64_t>(g->in_c) * spec.depth_multiplier != spec.out_channels)
      return Fail(error, "input channels * depth_multiplier != output channels");
  }
  if (g->batch < 1) return Fail(error, "empty batch");
  if (!ComputeOutputSize(spec.same_padding, g->in_h, g->kernel_h, g->stride_h, g->dilation_h,
                         &g->out_h, &g->pad_top) ||
      !ComputeOutputSize(spec.same_padding, g->in_w, g->kernel_w, g->stride_w, g->dilation_w,
                         &g->out_w, &g->pad_left))
    return Fail(error, "convolution window does not fit the input");
  const int64_t out_elems = static_cast<int64_t>(g->batch) * g->out_h * g->out_w * g->out_c;
  if (out_elems > kMaxElements) return Fail(error, "output too large");
  *out_dims = {g->batch, g->out_h, g->out_w, g->out_c};
  return true;
}

}  // namespace tfq
