// Validation of one tfq custom node against docs/format.md: options, tensor
// types, shapes and sizes, constant buffers and codes. Everything a kernel
// needs is checked here before any byte of the packed buffer is touched.
#ifndef TFQ_DELEGATES_NODE_SPEC_H_
#define TFQ_DELEGATES_NODE_SPEC_H_

#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/sparse/sparse.h"
#include "tflite_abi.h"

namespace tfq {

enum class OpKind { kFullyConnected, kConv2D, kDepthwiseConv2D };

// Returns true and sets *kind when `custom_name` is one of the tfq ops.
bool IsTfqOp(const char* custom_name, OpKind* kind);
const char* OpName(OpKind kind);

struct NodeSpec;
// The node's op in messages: OpName, or "CONV_2D" for a builtin int8 convolution.
const char* SpecName(const NodeSpec& spec);

struct NodeSpec {
  OpKind kind = OpKind::kFullyConnected;
  int input = -1, weights = -1, scale = -1, bias = -1, output = -1;
  Scheme scheme = Scheme::kTernary;
  Activation activation = Activation::kNone;
  int64_t rows = 0, k = 0;
  std::vector<int64_t> weight_shape;
  bool same_padding = false;
  int stride_h = 1, stride_w = 1, dilation_h = 1, dilation_w = 1, depth_multiplier = 1;
  bool per_channel_scale = true;
  int64_t out_channels = 0;
  // Format version 2, layout block_sparse (docs/format.md): tensor 1 holds
  // counts, indices and the codes of the stored blocks, validated by ParseNode.
  bool sparse = false;
  // Format version 2, layout dense (docs/format.md): rows end in 32-weight
  // mini-blocks instead of a padded block (RowGeometry).
  bool compact = false;
  SparseOptions sparse_options;
  SparseSizes sparse_sizes;
  int64_t packed_bytes = 0;  // tensor 1's exact size, either layout
  // A builtin dynamic-range CONV_2D (ParseInt8Conv): `weights` is its int8
  // filter [O, KH, KW, I] of packed_bytes = rows * k bytes, held by the
  // node as block-sparse int8 weights with every block stored
  // (BuildInt8Blocks); `scale` is -1 and the filter's per-channel scales
  // are copied here.
  bool int8_conv = false;
  std::vector<float> int8_scale;
  // Its reduction axis in runs (PackedWeights::conv_run) when in_c is not a
  // multiple of 4 and dilation_w is 1: k = kernel_h * conv_run; else 0.
  int64_t conv_run = 0;
};

// Parses the custom options and checks the constant tensors (and codes).
// On failure returns false and sets *error to a message naming the problem.
bool ParseNode(const TfLiteContext* context, const TfLiteNode* node, OpKind kind, NodeSpec* spec,
               std::string* error);

// A builtin float ADD the delegate may fuse into the convolution producing
// one of its inputs (docs/delegate.md, "Fused residual addition").
struct AddSpec {
  int inputs[2] = {-1, -1};
  int output = -1;
  Activation activation = Activation::kNone;
};

// BuiltinOperator_ADD.
constexpr int32_t kBuiltinAdd = 0;

// Node-local checks of a builtin ADD: two float32 non-constant inputs, one
// float32 output that is neither input nor a constant, fused activation
// NONE, RELU or RELU6 (TfLiteAddParams read as its first int). Shapes are
// checked at prepare (no broadcast). On failure returns false with *error.
bool ParseAdd(const TfLiteContext* context, const TfLiteNode* node, AddSpec* spec,
              std::string* error);

// A builtin float PAD (zero padding, rank 1 to 4) the delegate runs as its
// own partition (docs/delegate.md, "Zero padding").
struct PadSpec {
  int input = -1, paddings = -1, output = -1;
  int rank = 0;
  int64_t before[4] = {0, 0, 0, 0}, after[4] = {0, 0, 0, 0};
};

// BuiltinOperator_PAD.
constexpr int32_t kBuiltinPad = 34;
// The largest padding accepted on one side of one axis.
constexpr int64_t kMaxPad = int64_t{1} << 20;

// Node-local checks of a builtin PAD: a float32 non-constant input of rank
// 1-4, a constant int32/int64 paddings tensor of shape [rank, 2] whose
// values lie in [0, kMaxPad] (read once, here), and a float32 output that is
// neither the input nor a constant. Shapes are checked at prepare. On
// failure returns false with *error.
bool ParsePad(const TfLiteContext* context, const TfLiteNode* node, PadSpec* spec, std::string* error);

// BuiltinOperator_CONV_2D.
constexpr int32_t kBuiltinConv2d = 3;

// Node-local checks of a builtin CONV_2D with float32 input and output and
// a constant int8 filter [O, KH, KW, I] quantized symmetrically per output
// channel (or per tensor), i.e. LiteRT's dynamic-range ("hybrid")
// convolution: scales finite and positive, zero points 0, an optional
// constant float32 bias of O elements, SAME/VALID padding, strides and
// dilations in [1, 2^16], fused activation NONE, RELU or RELU6
// (TfLiteConvParams read as ints). Fills *spec as a kConv2D of scheme
// kInt8, block-sparse in blocks of block_rows x 4 with every block stored.
// On failure returns false with *error.
bool ParseInt8Conv(const TfLiteContext* context, const TfLiteNode* node, NodeSpec* spec,
                   std::string* error);

// The format-version-2 block-sparse tensor (docs/format.md) of an int8
// filter of spec.rows x spec.k bytes, every block stored, codes = the
// filter's bytes; *out gets spec.sparse_sizes.packed_bytes bytes.
void BuildInt8Blocks(const NodeSpec& spec, const int8_t* filter, std::vector<uint8_t>* out);

// A builtin float MAX_POOL_2D the delegate runs together with the zero PAD
// that feeds it (docs/delegate.md, "Zero padding").
struct PoolSpec {
  int input = -1, output = -1;
  bool same_padding = false;
  int stride_h = 1, stride_w = 1, filter_h = 1, filter_w = 1;
  Activation activation = Activation::kNone;
};

// BuiltinOperator_MAX_POOL_2D.
constexpr int32_t kBuiltinMaxPool2d = 17;

// Node-local checks of a builtin MAX_POOL_2D: one float32 non-constant
// input, a float32 output that is neither the input nor a constant, SAME or
// VALID padding, strides and a window in [1, 2^16], fused activation NONE,
// RELU or RELU6 (TfLitePoolParams read as ints). On failure returns false
// with *error.
bool ParseMaxPool(const TfLiteContext* context, const TfLiteNode* node, PoolSpec* spec, std::string* error);

// Checks the activation tensor's current shape; fills the geometry (conv and
// depthwise) or the row count (fully connected) and the expected output dims.
bool ComputeShapes(const TfLiteContext* context, const NodeSpec& spec, ConvGeometry* geometry,
                   int64_t* fc_rows, std::vector<int>* output_dims, std::string* error);

}  // namespace tfq

#endif  // TFQ_DELEGATES_NODE_SPEC_H_
