// JNI bridge between dev.tfq.demo.TfqDelegate (Kotlin) and the tfq delegate
// library (libtfq_delegate.so, built from tfq/delegates).
//
// The delegate is created through its external-delegate entry point, the same
// one LiteRT's Python `load_delegate` uses, and its TfLiteDelegate* is handed
// to Java as a long: TfqDelegate.getNativeHandle() returns it, which is all
// Interpreter.Options.addDelegate needs.
#include <jni.h>
#include <sys/auxv.h>

#include <cstdint>
#include <string>

#if defined(__aarch64__) && (defined(__linux__) || defined(__ANDROID__))
#include <asm/hwcap.h>
#endif

struct TfLiteDelegate;

extern "C" {
TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                              void (*report_error)(const char*));
void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate);
// Name of the kernels the delegate runs on this CPU (tfq/delegates/delegate.cc).
const char* tfq_delegate_isa(int force_reference);
}

namespace {

thread_local std::string g_last_error;

void RecordError(const char* message) { g_last_error = message ? message : "unknown error"; }

void Throw(JNIEnv* env, const char* cls, const std::string& message) {
  jclass c = env->FindClass(cls);
  if (c != nullptr) env->ThrowNew(c, message.c_str());
}

}  // namespace

extern "C" JNIEXPORT jlong JNICALL Java_dev_tfq_demo_TfqDelegate_nativeCreate(
    JNIEnv* env, jclass, jint num_threads, jboolean force_reference) {
  if (num_threads < 0 || num_threads > 64) {
    Throw(env, "java/lang/IllegalArgumentException",
          "numThreads must be in 0..64 (0: the interpreter's), got " + std::to_string(num_threads));
    return 0;
  }
  std::string threads = std::to_string(num_threads);
  std::string reference = force_reference ? "1" : "0";
  char* keys[] = {const_cast<char*>("num_threads"), const_cast<char*>("force_reference")};
  char* values[] = {&threads[0], &reference[0]};
  g_last_error.clear();
  TfLiteDelegate* d = tflite_plugin_create_delegate(keys, values, 2, RecordError);
  if (d == nullptr) {
    Throw(env, "java/lang/IllegalStateException",
          "tfq delegate could not be created: " +
              (g_last_error.empty() ? std::string("out of memory") : g_last_error));
    return 0;
  }
  return static_cast<jlong>(reinterpret_cast<intptr_t>(d));
}

extern "C" JNIEXPORT void JNICALL Java_dev_tfq_demo_TfqDelegate_nativeDestroy(JNIEnv*, jclass,
                                                                                jlong handle) {
  if (handle != 0) {
    tflite_plugin_destroy_delegate(reinterpret_cast<TfLiteDelegate*>(static_cast<intptr_t>(handle)));
  }
}

extern "C" JNIEXPORT jstring JNICALL Java_dev_tfq_demo_TfqDelegate_nativeKernels(
    JNIEnv* env, jclass, jboolean force_reference) {
  return env->NewStringUTF(tfq_delegate_isa(force_reference ? 1 : 0));
}

extern "C" JNIEXPORT jboolean JNICALL Java_dev_tfq_demo_TfqDelegate_nativeCpuHasDotprod(JNIEnv*,
                                                                                         jclass) {
#if defined(__aarch64__) && defined(HWCAP_ASIMDDP)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0 ? JNI_TRUE : JNI_FALSE;
#else
  return JNI_FALSE;
#endif
}
