package dev.tfq.demo

import java.io.Closeable
import org.tensorflow.lite.Delegate

/**
 * The tfq delegate (libtfq_delegate.so, built from tfq/delegates) as a LiteRT [Delegate].
 *
 * Pass it to `Interpreter.Options().addDelegate(...)`; it claims the tfq custom ops
 * (TFQ_FULLY_CONNECTED, TFQ_CONV_2D, TFQ_DEPTHWISE_CONV_2D) and leaves the rest to LiteRT.
 * Close it after the interpreters that use it.
 *
 * @param numThreads threads of the delegate's own pool (0: the interpreter's count).
 * @param forceReference run the scalar reference kernels instead of NEON (for comparison).
 */
class TfqDelegate(numThreads: Int = 1, forceReference: Boolean = false) : Delegate, Closeable {
    private var handle: Long = nativeCreate(numThreads, forceReference)

    /** Which kernels run: "neon_dotprod", "neon", "avx2" or "reference". */
    val kernels: String = nativeKernels(forceReference)

    override fun getNativeHandle(): Long {
        check(handle != 0L) { "TfqDelegate is closed" }
        return handle
    }

    override fun close() {
        if (handle != 0L) {
            nativeDestroy(handle)
            handle = 0L
        }
    }

    companion object {
        init {
            System.loadLibrary("tfq_jni")
        }

        /** True when the CPU has the ARMv8.2 dot-product instructions (sdot). */
        fun cpuHasDotprod(): Boolean = nativeCpuHasDotprod()

        @JvmStatic private external fun nativeCreate(numThreads: Int, forceReference: Boolean): Long
        @JvmStatic private external fun nativeDestroy(handle: Long)
        @JvmStatic private external fun nativeKernels(forceReference: Boolean): String
        @JvmStatic private external fun nativeCpuHasDotprod(): Boolean
    }
}
