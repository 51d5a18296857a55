// Drives the Android demo's JNI bridge (android_demo/app/src/main/cpp/tfq_jni.cc)
// without a JVM: a JNIEnv whose function table holds only what the bridge
// calls (NewStringUTF, FindClass, ThrowNew) is enough to create a delegate,
// read the kernel name and destroy it, and to see an invalid argument turn
// into a Java exception. Cross-built for aarch64 and run under qemu by
// tests/test_android_demo.py.
//
// Usage: tfq_jni_bridge_check EXPECTED_KERNELS
#include <jni.h>

#include <cstdio>
#include <cstring>
#include <string>

extern "C" {
JNIEXPORT jlong JNICALL Java_dev_tfq_demo_TfqDelegate_nativeCreate(JNIEnv*, jclass, jint, jboolean);
JNIEXPORT void JNICALL Java_dev_tfq_demo_TfqDelegate_nativeDestroy(JNIEnv*, jclass, jlong);
JNIEXPORT jstring JNICALL Java_dev_tfq_demo_TfqDelegate_nativeKernels(JNIEnv*, jclass, jboolean);
JNIEXPORT jboolean JNICALL Java_dev_tfq_demo_TfqDelegate_nativeCpuHasDotprod(JNIEnv*, jclass);
}

namespace {

std::string g_string, g_thrown_class, g_thrown_message;

jstring NewStringUTF(JNIEnv*, const char* s) {
  g_string = s;
  return reinterpret_cast<jstring>(&g_string);
}

jclass FindClass(JNIEnv*, const char* name) {
  g_thrown_class = name;
  return reinterpret_cast<jclass>(&g_thrown_class);
}

jint ThrowNew(JNIEnv*, jclass, const char* message) {
  g_thrown_message = message;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: tfq_jni_bridge_check EXPECTED_KERNELS\n");
    return 2;
  }
  JNINativeInterface_ table;
  std::memset(&table, 0, sizeof(table));
  table.NewStringUTF = NewStringUTF;
  table.FindClass = FindClass;
  table.ThrowNew = ThrowNew;
  JNIEnv env;
  env.functions = &table;
  int failures = 0;

  const jlong handle = Java_dev_tfq_demo_TfqDelegate_nativeCreate(&env, nullptr, 2, JNI_FALSE);
  std::printf("nativeCreate(2 threads) -> %s\n", handle != 0 ? "delegate" : "null");
  if (handle == 0 || !g_thrown_message.empty()) ++failures;
  Java_dev_tfq_demo_TfqDelegate_nativeKernels(&env, nullptr, JNI_FALSE);
  std::printf("nativeKernels -> %s\n", g_string.c_str());
  if (g_string != argv[1]) ++failures;
  Java_dev_tfq_demo_TfqDelegate_nativeKernels(&env, nullptr, JNI_TRUE);
  std::printf("nativeKernels(forceReference) -> %s\n", g_string.c_str());
  if (g_string != "reference") ++failures;
  std::printf("nativeCpuHasDotprod -> %d\n",
              static_cast<int>(Java_dev_tfq_demo_TfqDelegate_nativeCpuHasDotprod(&env, nullptr)));
  Java_dev_tfq_demo_TfqDelegate_nativeDestroy(&env, nullptr, handle);

  const jlong bad = Java_dev_tfq_demo_TfqDelegate_nativeCreate(&env, nullptr, 1000, JNI_FALSE);
  std::printf("nativeCreate(1000 threads) -> %s, throws %s: %s\n", bad ? "delegate" : "null",
              g_thrown_class.c_str(), g_thrown_message.c_str());
  if (bad != 0 || g_thrown_class != "java/lang/IllegalArgumentException") ++failures;
  std::printf("%d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
