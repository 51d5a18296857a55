package dev.tfq.demo

import android.app.Activity
import android.os.Build
import android.os.Bundle
import android.view.Gravity
import android.widget.Button
import android.widget.TableLayout
import android.widget.TableRow
import android.widget.TextView
import java.util.concurrent.Executors

/**
 * One screen: device and kernel information, a "Run comparison" button and a
 * table with, per configuration, model size, accuracy on the bundled MNIST
 * images (and the x86 figure from the manifest), and median latency.
 */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor()
    private lateinit var assets: Assets
    private lateinit var status: TextView
    private lateinit var table: TableLayout
    private lateinit var button: Button

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        status = findViewById(R.id.status)
        table = findViewById(R.id.table)
        button = findViewById(R.id.run)
        assets = Assets(this)
        val kernels = TfqDelegate(1).use { it.kernels }
        findViewById<TextView>(R.id.device).text = getString(
            R.string.device_info,
            "${Build.MANUFACTURER} ${Build.MODEL}",
            Build.SUPPORTED_ABIS.firstOrNull() ?: "?",
            if (TfqDelegate.cpuHasDotprod()) "yes" else "no",
            kernels,
            assets.count,
        )
        button.setOnClickListener { runComparison() }
    }

    private fun runComparison() {
        button.isEnabled = false
        table.removeAllViews()
        worker.execute {
            val rows = try {
                Comparison(assets, threads = THREADS, runs = RUNS).runAll { label ->
                    runOnUiThread { status.text = getString(R.string.running, label) }
                }
            } catch (e: Exception) {
                runOnUiThread {
                    status.text = getString(R.string.failed, e.message ?: e.toString())
                    button.isEnabled = true
                }
                return@execute
            }
            runOnUiThread { show(rows) }
        }
    }

    private fun show(rows: List<Row>) {
        addRow(listOf("configuration", "model", "accuracy (x86)", "median ms"), header = true)
        val base = rows.firstOrNull { it.label.startsWith("float · LiteRT XNNPACK") }?.medianMicros
        for (r in rows) {
            val acc = if (r.medianMicros.isNaN()) "—" else
                "%.1f%% (%.1f%%)".format(100.0 * r.correct / r.total, 100.0 * r.expectedCorrect / r.total)
            val ms = if (r.medianMicros.isNaN()) r.note else {
                val ratio = if (base != null && !base.isNaN()) " ×%.2f".format(base / r.medianMicros) else ""
                "%.3f%s".format(r.medianMicros / 1000.0, ratio)
            }
            addRow(listOf(r.label, "%.0f KB".format(r.sizeBytes / 1024.0), acc, ms))
            if (r.note.isNotEmpty() && !r.medianMicros.isNaN()) addRow(listOf("", r.note, "", ""))
        }
        status.text = getString(R.string.done, RUNS, THREADS)
        button.isEnabled = true
    }

    private fun addRow(cells: List<String>, header: Boolean = false) {
        val row = TableRow(this)
        for (c in cells) {
            row.addView(TextView(this).apply {
                text = c
                setPadding(12, 6, 12, 6)
                gravity = Gravity.START
                if (header) setTypeface(typeface, android.graphics.Typeface.BOLD)
            })
        }
        table.addView(row)
    }

    override fun onDestroy() {
        worker.shutdownNow()
        super.onDestroy()
    }

    companion object {
        const val RUNS = 200
        const val THREADS = 1
    }
}
