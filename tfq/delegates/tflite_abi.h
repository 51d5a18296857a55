// Minimal declarations of the TensorFlow Lite C ABI used by the tfq delegate.
//
// The Python wheels (tensorflow, ai-edge-litert) ship no TFLite C headers, so
// this file declares, in our own words, just the structs and constants the
// classic external-delegate interface touches. Layouts follow the current
// runtime (ai-edge-litert 2.3 / TF 2.21, see ../../docs/delegate.md):
//   * TfLiteTensor is 112 bytes on LP64 (checked by a static_assert below);
//   * TfLiteRegistration carries the appended fields (external registration,
//     async kernel, in-place flags): it is passed BY VALUE to
//     ReplaceNodeSubsetsWithDelegateKernels, so a short struct would make the
//     runtime read past its end;
//   * TfLiteDelegate has an appended opaque-builder pointer; we allocate it
//     zero-filled with spare room.
// Build with -DTFQ_TFLITE_INCLUDE_DIR=<dir with tensorflow/lite/core/c/common.h>
// to use official headers instead (the Android build does).
#ifndef TFQ_DELEGATES_TFLITE_ABI_H_
#define TFQ_DELEGATES_TFLITE_ABI_H_

#ifdef TFQ_USE_OFFICIAL_TFLITE_HEADERS
#include "tensorflow/lite/core/c/common.h"
#else

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum TfLiteStatus {
  kTfLiteOk = 0,
  kTfLiteError = 1,
  kTfLiteDelegateError = 2,
  kTfLiteApplicationError = 3,
  kTfLiteDelegateDataNotFound = 4,
  kTfLiteDelegateDataWriteError = 5,
  kTfLiteDelegateDataReadError = 6,
  kTfLiteUnresolvedOps = 7,
  kTfLiteCancelled = 8,
} TfLiteStatus;

typedef enum TfLiteType {
  kTfLiteNoType = 0,
  kTfLiteFloat32 = 1,
  kTfLiteInt32 = 2,
  kTfLiteUInt8 = 3,
  kTfLiteInt64 = 4,
  kTfLiteString = 5,
  kTfLiteBool = 6,
  kTfLiteInt16 = 7,
  kTfLiteComplex64 = 8,
  kTfLiteInt8 = 9,
  kTfLiteFloat16 = 10,
  kTfLiteTypeRangeEnd_ = 0x7FFFFFFF,  // ours: any int value is representable
} TfLiteType;

typedef enum TfLiteAllocationType {
  kTfLiteMemNone = 0,
  kTfLiteMmapRo = 1,
  kTfLiteArenaRw = 2,
  kTfLiteArenaRwPersistent = 3,
  kTfLiteDynamic = 4,
  kTfLitePersistentRo = 5,
  kTfLiteCustom = 6,
  kTfLiteVariantObject = 7,
  kTfLiteNonCpu = 8,
  kTfLiteAllocationRangeEnd_ = 0x7FFFFFFF,  // ours: any int value is representable
} TfLiteAllocationType;

// kTfLiteDelegateFlagsAllowDynamicTensors also makes the runtime apply the
// delegate before it rejects unresolved custom ops (docs/litert_abi.md, pitfall 3).
enum {
  kTfLiteDelegateFlagsNone = 0,
  kTfLiteDelegateFlagsAllowDynamicTensors = 1,
};

typedef int TfLiteBufferHandle;

typedef struct TfLiteIntArray {
  int size;
  int data[];
} TfLiteIntArray;

typedef struct TfLiteQuantizationParams {
  float scale;
  int32_t zero_point;
} TfLiteQuantizationParams;

typedef struct TfLiteQuantization {
  int type;  // kTfLiteAffineQuantization: params is a TfLiteAffineQuantization
  void* params;
} TfLiteQuantization;

enum { kTfLiteNoQuantization = 0, kTfLiteAffineQuantization = 1 };

typedef struct TfLiteFloatArray {
  int size;
  float data[];
} TfLiteFloatArray;

// Per-axis (or per-tensor, one entry) scales and zero points.
typedef struct TfLiteAffineQuantization {
  TfLiteFloatArray* scale;
  TfLiteIntArray* zero_point;
  int32_t quantized_dimension;
} TfLiteAffineQuantization;

typedef union TfLitePtrUnion {
  int32_t* i32;
  int64_t* i64;
  float* f;
  char* raw;
  const char* raw_const;
  uint8_t* uint8;
  int8_t* int8;
  void* data;
} TfLitePtrUnion;

struct TfLiteDelegate;
struct TfLiteContext;

typedef struct TfLiteTensor {
  TfLiteType type;
  TfLitePtrUnion data;
  TfLiteIntArray* dims;
  TfLiteQuantizationParams params;
  TfLiteAllocationType allocation_type;
  size_t bytes;
  const void* allocation;
  const char* name;
  struct TfLiteDelegate* delegate;
  TfLiteBufferHandle buffer_handle;
  bool data_is_stale;
  bool is_variable;
  TfLiteQuantization quantization;
  void* sparsity;
  const TfLiteIntArray* dims_signature;
} TfLiteTensor;

typedef struct TfLiteNode {
  TfLiteIntArray* inputs;
  TfLiteIntArray* outputs;
  TfLiteIntArray* intermediates;
  TfLiteIntArray* temporaries;
  void* user_data;
  void* builtin_data;
  const void* custom_initial_data;
  int custom_initial_data_size;
  struct TfLiteDelegate* delegate;
  bool might_have_side_effect;
} TfLiteNode;

typedef struct TfLiteRegistration {
  void* (*init)(struct TfLiteContext* context, const char* buffer, size_t length);
  void (*free)(struct TfLiteContext* context, void* buffer);
  TfLiteStatus (*prepare)(struct TfLiteContext* context, TfLiteNode* node);
  TfLiteStatus (*invoke)(struct TfLiteContext* context, TfLiteNode* node);
  const char* (*profiling_string)(const struct TfLiteContext* context, const TfLiteNode* node);
  int32_t builtin_code;
  const char* custom_name;
  int version;
  void* registration_external;
  void* (*async_kernel)(struct TfLiteContext* context, TfLiteNode* node);
  uint64_t inplace_operator;
} TfLiteRegistration;

// What the runtime passes to a delegate kernel's init() (as `buffer`).
typedef struct TfLiteDelegateParams {
  struct TfLiteDelegate* delegate;
  TfLiteIntArray* nodes_to_replace;
  TfLiteIntArray* input_tensors;
  TfLiteIntArray* output_tensors;
} TfLiteDelegateParams;

typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext* context, TfLiteIntArray** execution_plan);
  TfLiteTensor* tensors;
  void* impl_;
  TfLiteStatus (*ResizeTensor)(struct TfLiteContext*, TfLiteTensor* tensor, TfLiteIntArray* new_size);
  void (*ReportError)(struct TfLiteContext*, const char* format, ...);
  TfLiteStatus (*AddTensors)(struct TfLiteContext*, int tensors_to_add, int* first_new_tensor_index);
  TfLiteStatus (*GetNodeAndRegistration)(struct TfLiteContext*, int node_index, TfLiteNode** node,
                                         TfLiteRegistration** registration);
  TfLiteStatus (*ReplaceNodeSubsetsWithDelegateKernels)(struct TfLiteContext*,
                                                        TfLiteRegistration registration,
                                                        const TfLiteIntArray* nodes_to_replace,
                                                        struct TfLiteDelegate* delegate);
  int recommended_num_threads;
  // Further members exist in the runtime; the delegate never touches them and
  // never allocates a TfLiteContext, so they are left undeclared.
} TfLiteContext;

typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(TfLiteContext* context, struct TfLiteDelegate* delegate);
  TfLiteStatus (*CopyFromBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate,
                                       TfLiteBufferHandle buffer_handle, TfLiteTensor* tensor);
  TfLiteStatus (*CopyToBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate,
                                     TfLiteBufferHandle buffer_handle, TfLiteTensor* tensor);
  void (*FreeBufferHandle)(TfLiteContext* context, struct TfLiteDelegate* delegate,
                           TfLiteBufferHandle* handle);
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;

#ifdef __cplusplus
}  // extern "C"
#endif

#if defined(__LP64__) && defined(__cplusplus)
static_assert(sizeof(TfLiteTensor) == 112, "TfLiteTensor layout differs from the runtime's");
static_assert(sizeof(TfLiteRegistration) == 88, "TfLiteRegistration must have its current size");
static_assert(sizeof(TfLiteNode) == 80, "TfLiteNode layout differs from the runtime's");
#endif

#endif  // TFQ_USE_OFFICIAL_TFLITE_HEADERS
#endif  // TFQ_DELEGATES_TFLITE_ABI_H_
