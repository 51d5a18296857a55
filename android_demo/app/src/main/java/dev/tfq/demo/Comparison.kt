package dev.tfq.demo

import android.content.Context
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import org.json.JSONObject
import org.tensorflow.lite.Interpreter

/** One line of the comparison table. */
data class Row(
    val label: String,
    val model: String,
    val sizeBytes: Long,
    val correct: Int,
    val total: Int,
    val expectedCorrect: Int,
    val medianMicros: Double,
    val note: String = "",
)

/** The bundled assets (see android_demo/make_assets.py and assets/manifest.json). */
class Assets(private val context: Context) {
    val manifest = JSONObject(context.assets.open(MANIFEST).bufferedReader().use { it.readText() })
    val count: Int = manifest.getJSONObject("images").getInt("count")
    val pixels: ByteArray = context.assets.open(IMAGES).use { it.readBytes() }
    val labels: ByteArray = context.assets.open(LABELS).use { it.readBytes() }

    init {
        require(pixels.size == count * PIXELS) { "$IMAGES has ${pixels.size} bytes, expected $count images" }
        require(labels.size == count) { "$LABELS has ${labels.size} labels, expected $count" }
    }

    /** A model memory-mapped from the APK (assets are stored uncompressed, see build.gradle.kts). */
    fun model(name: String): MappedByteBuffer =
        context.assets.openFd(name).use { fd ->
            FileInputStream(fd.fileDescriptor).channel.use { ch ->
                ch.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        }

    fun modelBytes(name: String): Long = context.assets.openFd(name).use { it.length }

    fun expectedCorrect(key: String): Int =
        manifest.getJSONObject("models").getJSONObject(key).getInt("x86_correct")

    /** Image i as a direct float buffer (pixel / 255), the models' input. */
    fun input(i: Int, into: ByteBuffer) {
        into.rewind()
        for (p in 0 until PIXELS) into.putFloat((pixels[i * PIXELS + p].toInt() and 0xFF) / 255f)
        into.rewind()
    }

    companion object {
        const val MANIFEST = "manifest.json"
        const val IMAGES = "mnist_images.u8"
        const val LABELS = "mnist_labels.u8"
        const val FLOAT = "lenet5_float.tflite"
        const val TFQ = "lenet5_tfq_ternary.tflite"
        const val PORTABLE = "lenet5_portable_ternary.tflite"
        const val PIXELS = 28 * 28
    }
}

/**
 * Runs every configuration: accuracy over all bundled images, then the median
 * latency of [runs] invokes (after warm-up) on one image. Configurations run
 * one after another in the same process, so compare ratios, not absolute times.
 */
class Comparison(private val assets: Assets, private val threads: Int, private val runs: Int) {

    private class Config(
        val label: String,
        val key: String,
        val file: String,
        val xnnpack: Boolean,
        val tfq: Boolean = false,
        val reference: Boolean = false,
    )

    private val configs = listOf(
        Config("float · LiteRT built-in", "float", Assets.FLOAT, xnnpack = false),
        Config("float · LiteRT XNNPACK", "float", Assets.FLOAT, xnnpack = true),
        Config("ternary · tfq delegate", "tfq_ternary", Assets.TFQ, xnnpack = true, tfq = true),
        Config("ternary · tfq scalar ref", "tfq_ternary", Assets.TFQ, xnnpack = true, tfq = true,
            reference = true),
        Config("ternary INT2 · LiteRT XNNPACK", "portable_ternary", Assets.PORTABLE, xnnpack = true),
    )

    fun runAll(progress: (String) -> Unit): List<Row> = configs.map { c ->
        progress(c.label)
        try {
            runOne(c)
        } catch (e: Exception) {
            // The portable INT2 model needs a LiteRT that knows INT2 weights.
            Row(c.label, c.file, assets.modelBytes(c.file), 0, assets.count,
                assets.expectedCorrect(c.key), Double.NaN, "failed: ${e.message?.take(80)}")
        }
    }

    private fun runOne(c: Config): Row {
        val delegate = if (c.tfq) TfqDelegate(threads, c.reference) else null
        return try {
            val options = Interpreter.Options().setNumThreads(threads).setUseXNNPACK(c.xnnpack)
            if (delegate != null) options.addDelegate(delegate)
            Interpreter(assets.model(c.file), options).use { interp ->
                val input = ByteBuffer.allocateDirect(Assets.PIXELS * 4).order(ByteOrder.nativeOrder())
                val output = Array(1) { FloatArray(10) }
                var correct = 0
                for (i in 0 until assets.count) {
                    assets.input(i, input)
                    interp.run(input, output)
                    if (argmax(output[0]) == assets.labels[i].toInt()) correct++
                }
                assets.input(0, input)
                repeat(WARMUP) { interp.run(input, output) }
                val times = DoubleArray(runs)
                for (r in 0 until runs) {
                    val t0 = System.nanoTime()
                    interp.run(input, output)
                    times[r] = (System.nanoTime() - t0) / 1000.0
                }
                times.sort()
                val note = if (delegate != null) "kernels: ${delegate.kernels}" else ""
                Row(c.label, c.file, assets.modelBytes(c.file), correct, assets.count,
                    assets.expectedCorrect(c.key), times[runs / 2], note)
            }
        } finally {
            delegate?.close()
        }
    }

    private fun argmax(v: FloatArray): Int {
        var best = 0
        for (i in 1 until v.size) if (v[i] > v[best]) best = i
        return best
    }

    companion object {
        const val WARMUP = 10
    }
}
