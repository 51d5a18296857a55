// The tfq demo app: LeNet-5 on MNIST, float vs tfq ternary, side by side.
//
// Native part (src/main/cpp/CMakeLists.txt): the tfq delegate is built from
// ../tfq/delegates in this repository, against the official TFLite C headers
// that the LiteRT AAR carries (extracted by `extractLiteRtHeaders` below and
// passed as TFQ_TFLITE_INCLUDE_DIR), plus a small JNI bridge (tfq_jni.cc) that
// hands the delegate to Interpreter.Options.addDelegate.
import java.util.zip.ZipFile

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// 1.4.x is the LiteRT line that still ships org.tensorflow.lite.Interpreter
// (the 2.x artifacts moved to the CompiledModel API).
val liteRtVersion = "1.4.2"
val liteRtHeadersDir = layout.buildDirectory.dir("litert-headers")

android {
    namespace = "dev.tfq.demo"
    compileSdk = 34
    ndkVersion = "26.1.10909125"

    defaultConfig {
        applicationId = "dev.tfq.demo"
        minSdk = 24
        targetSdk = 34
        versionCode = 1
        versionName = "0.1.0"
        ndk {
            // arm64-v8a: phones (NEON, dot product when the core has it);
            // x86_64: the emulator (AVX2 kernels).
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
        externalNativeBuild {
            cmake {
                arguments += listOf(
                    "-DANDROID_STL=c++_shared",
                    "-DTFQ_TFLITE_INCLUDE_DIR=${liteRtHeadersDir.get().asFile.absolutePath}",
                )
                targets += listOf("tfq_jni", "tfq_delegate")
            }
        }
    }

    externalNativeBuild {
        cmake {
            path = file("src/main/cpp/CMakeLists.txt")
            version = "3.22.1"
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
        }
    }

    // Models are memory-mapped from the APK: keep them uncompressed.
    androidResources {
        noCompress += listOf("tflite", "u8")
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
}

// The AAR, resolved on its own to read its headers/ folder.
val liteRtAar: Configuration by configurations.creating {
    isCanBeConsumed = false
    isCanBeResolved = true
    isTransitive = false
}

dependencies {
    implementation("com.google.ai.edge.litert:litert:$liteRtVersion")
    liteRtAar("com.google.ai.edge.litert:litert:$liteRtVersion@aar")
}

// Copies headers/** of the LiteRT AAR (tensorflow/lite/core/c/common.h and
// friends) to build/litert-headers. When an AAR carries no headers, the folder
// stays empty and the native CMake falls back to tfq's own declarations
// (tfq/delegates/tflite_abi.h), printing a warning.
val extractLiteRtHeaders by tasks.registering {
    val out = liteRtHeadersDir
    inputs.files(liteRtAar)
    outputs.dir(out)
    doLast {
        val dest = out.get().asFile
        dest.deleteRecursively()
        dest.mkdirs()
        liteRtAar.resolve().forEach { aar ->
            ZipFile(aar).use { zip ->
                zip.entries().asSequence()
                    .filter { !it.isDirectory && it.name.startsWith("headers/") }
                    .forEach { entry ->
                        val target = File(dest, entry.name.removePrefix("headers/"))
                        target.parentFile.mkdirs()
                        zip.getInputStream(entry).use { input ->
                            target.outputStream().use { input.copyTo(it) }
                        }
                    }
            }
        }
    }
}

tasks.configureEach {
    if (name.startsWith("configureCMake") || name.startsWith("buildCMake")) {
        dependsOn(extractLiteRtHeaders)
    }
}
