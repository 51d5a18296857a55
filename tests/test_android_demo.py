"""The Android demo (android_demo/): what can be checked without the Android SDK.

* The asset script runs (quick mode) and its output verifies; the committed
  assets match their manifest (hashes, op lists, sizes) and give the recorded
  accuracies when re-measured here; corrupted assets are refused by name.
* The app's native part (its own CMakeLists.txt: the tfq delegate from
  tfq/delegates plus the JNI bridge) cross-compiles for aarch64 with clang
  (the NDK's compiler family) against the JDK's jni.h, and the bridge runs under qemu through a JVM-less JNIEnv:
  it creates a delegate, reports the kernels (neon_dotprod / neon) and turns a
  bad argument into the right Java exception.
* The Kotlin side agrees with the native one (every `external fun` has its
  exported JNI symbol) and with the assets (every file it opens exists).

The APK itself is not built here: no Android SDK, NDK or Maven access.
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = ROOT / "android_demo"
APP = DEMO / "app"
ASSETS = APP / "src" / "main" / "assets"
KOTLIN = APP / "src" / "main" / "java" / "dev" / "tfq" / "demo"
JNI_BUILD = ROOT / "build-aarch64-jni-clang"
JDK_INCLUDE = pathlib.Path("/usr/lib/jvm/default-java/include")
SYSROOT = "/usr/aarch64-linux-gnu"

sys.path.insert(0, str(DEMO))
import make_assets  # noqa: E402


def test_committed_assets_match_manifest_and_accuracy():
    m = make_assets.verify_assets(ASSETS, remeasure=True)
    assert m["images"]["count"] >= 300
    models = m["models"]
    assert "TFQ_FULLY_CONNECTED" in models["tfq_ternary"]["ops"]
    assert "TFQ_CONV_2D" in models["tfq_ternary"]["ops"]
    assert models["float"]["bytes"] > 8 * models["tfq_ternary"]["bytes"]
    # A trained network: the ternary model stays close to the float one.
    assert models["float"]["x86_accuracy"] > 0.95
    assert models["tfq_ternary"]["x86_accuracy"] > models["float"]["x86_accuracy"] - 0.02


def test_verify_names_a_corrupted_asset(tmp_path):
    work = tmp_path / "assets"
    shutil.copytree(ASSETS, work)
    labels = work / make_assets.LABELS
    data = bytearray(labels.read_bytes())
    data[0] ^= 1
    labels.write_bytes(bytes(data))
    with pytest.raises(make_assets.AssetError, match="mnist_labels.u8: SHA-256 differs"):
        make_assets.verify_assets(work, remeasure=False)
    (work / make_assets.MODELS["tfq_ternary"]).unlink()
    shutil.copy(ASSETS / make_assets.LABELS, labels)
    with pytest.raises(make_assets.AssetError, match="lenet5_tfq_ternary.tflite: listed in the manifest but missing"):
        make_assets.verify_assets(work, remeasure=False)


def test_make_assets_script_runs_quick(tmp_path):
    out = tmp_path / "assets"
    r = subprocess.run([sys.executable, str(DEMO / "make_assets.py"), "--quick", "--images", "100",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "assets verified" in r.stdout
    m = json.loads((out / make_assets.MANIFEST).read_text())
    assert m["made_by"].endswith("--quick") and m["images"]["count"] == 100
    assert set(m["models"]) == set(make_assets.MODELS)


def _require_cross():
    missing = [t for t in ("aarch64-linux-gnu-g++", "clang++", "qemu-aarch64", "cmake")
               if not shutil.which(t)]
    if missing or not (JDK_INCLUDE / "jni.h").exists():
        pytest.fail(f"cross tools or JDK headers missing ({missing or JDK_INCLUDE / 'jni.h'}); "
                    "scripts/setup_env.sh installs them")


@pytest.fixture(scope="module")
def jni_build():
    """Builds the app's native CMake project for aarch64 (as Gradle would for arm64-v8a)."""
    _require_cross()
    import fcntl
    JNI_BUILD.mkdir(exist_ok=True)
    with open(JNI_BUILD / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (JNI_BUILD / "CMakeCache.txt").exists():
            subprocess.run(
                ["cmake", "-S", str(APP / "src" / "main" / "cpp"), "-B", str(JNI_BUILD),
                 f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'cmake' / 'aarch64-linux-gnu.toolchain.cmake'}",
                 # clang, as the NDK compiles (GCC is covered by tests/test_arm.py).
                 "-DTFQ_CROSS_COMPILER=clang", "-DCMAKE_BUILD_TYPE=Release",
                 f"-DTFQ_JNI_INCLUDE_DIRS={JDK_INCLUDE};{JDK_INCLUDE / 'linux'}"],
                check=True, capture_output=True, text=True)
        r = subprocess.run(["cmake", "--build", str(JNI_BUILD), "-j2"], capture_output=True,
                           text=True)
        assert r.returncode == 0, f"JNI bridge build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
        check = JNI_BUILD / "tfq_jni_bridge_check"
        r = subprocess.run(
            ["aarch64-linux-gnu-g++", "-std=c++17", "-O1", "-Wall", "-Werror",
             f"-I{JDK_INCLUDE}", f"-I{JDK_INCLUDE / 'linux'}",
             str(ROOT / "tests" / "native" / "jni_bridge_check.cc"),
             f"-L{JNI_BUILD}", "-ltfq_jni", f"-L{JNI_BUILD / 'tfq_delegates'}", "-ltfq_delegate",
             f"-Wl,-rpath-link,{JNI_BUILD / 'tfq_delegates'}", "-o", str(check)],
            capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    return JNI_BUILD


def _exported(lib):
    nm = shutil.which("aarch64-linux-gnu-nm") or "nm"
    out = subprocess.run([nm, "-D", "--defined-only", str(lib)], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if " T " in line}


def _kotlin_externals():
    src = (KOTLIN / "TfqDelegate.kt").read_text()
    package = re.search(r"^package ([\w.]+)", src, re.M).group(1)
    names = re.findall(r"external fun (\w+)\(", src)
    return {f"Java_{package.replace('.', '_')}_TfqDelegate_{n}" for n in names}


def test_jni_bridge_exports_every_kotlin_external(jni_build):
    lib = jni_build / "libtfq_jni.so"
    assert lib.read_bytes()[18] == 183  # e_machine EM_AARCH64 (low byte)
    expected = _kotlin_externals()
    assert len(expected) == 4
    assert expected <= _exported(lib), f"missing: {expected - _exported(lib)}"
    assert {"tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate"} <= _exported(
        jni_build / "tfq_delegates" / "libtfq_delegate.so")


@pytest.mark.parametrize("cpu,kernels", [("max", "neon_dotprod"), ("cortex-a53", "neon")])
def test_jni_bridge_runs_under_qemu(jni_build, cpu, kernels):
    libs = f"{jni_build}:{jni_build / 'tfq_delegates'}"
    r = subprocess.run(["qemu-aarch64", "-cpu", cpu, "-L", SYSROOT, "-E", f"LD_LIBRARY_PATH={libs}",
                        str(jni_build / "tfq_jni_bridge_check"), kernels],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"nativeKernels -> {kernels}" in r.stdout
    assert "throws java/lang/IllegalArgumentException" in r.stdout


def test_project_is_complete_and_consistent():
    gradle = (APP / "build.gradle.kts").read_text()
    assert int(re.search(r"minSdk = (\d+)", gradle).group(1)) >= 24
    assert re.search(r'implementation\("com\.google\.ai\.edge\.litert:litert:\$liteRtVersion"\)', gradle)
    assert '"arm64-v8a"' in gradle and "-DTFQ_TFLITE_INCLUDE_DIR=" in gradle
    cmake_path = re.search(r'path = file\("([^"]+)"\)', gradle).group(1)
    cmake = (APP / cmake_path).read_text()
    assert (APP / cmake_path).parent.joinpath("../../../../..", "tfq", "delegates", "CMakeLists.txt").resolve().exists()
    assert "add_subdirectory" in cmake and "tfq_jni.cc" in cmake
    for f in ("settings.gradle.kts", "build.gradle.kts", "gradle/wrapper/gradle-wrapper.properties",
              "README.md", "app/src/main/AndroidManifest.xml",
              "app/src/main/res/layout/activity_main.xml", "app/src/main/res/values/strings.xml"):
        assert (DEMO / f).is_file(), f
    manifest = (APP / "src" / "main" / "AndroidManifest.xml").read_text()
    assert 'android:name=".MainActivity"' in manifest
    # Every asset the Kotlin code opens is bundled and listed in the manifest.
    kotlin = "\n".join(p.read_text() for p in KOTLIN.glob("*.kt"))
    opened = set(re.findall(r'"([\w.]+\.(?:tflite|u8|json))"', kotlin))
    listed = json.loads((ASSETS / "manifest.json").read_text())
    listed_files = {e["file"] for e in listed["models"].values()} | {
        listed["images"]["file"], listed["labels"]["file"], "manifest.json"}
    assert opened == listed_files, (opened, listed_files)
    # Layout ids used from Kotlin exist.
    layout = (APP / "src" / "main" / "res" / "layout" / "activity_main.xml").read_text()
    for rid in set(re.findall(r"R\.id\.(\w+)", kotlin)):
        assert f'@+id/{rid}"' in layout, rid
    strings = (APP / "src" / "main" / "res" / "values" / "strings.xml").read_text()
    for sid in set(re.findall(r"R\.string\.(\w+)", kotlin)) | {"app_name"}:
        assert f'name="{sid}"' in strings, sid
