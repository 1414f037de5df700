"""What machine a benchmark ran on, for its tables and JSON: CPU model, the SIMD features that
pick edgellm's and the peers' kernels, and the logical CPUs (Linux /proc/cpuinfo; elsewhere
what the platform module knows)."""
import os
import platform

# Features that decide a kernel tier (x86 flags, AArch64 "Features" names).
FEATURES = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_vbmi", "avx512_vbmi2",
            "amx_int8", "asimd", "asimddp", "i8mm", "sve"]


def describe():
    """{"cpu": model name, "features": [...], "logical_cpus": n, "arch": machine}."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    model = info.get("model name") or info.get("hardware") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        model += f" (family {info['cpu family']} model {info['model']})"
    elif "cpu part" in info:
        model += f" (implementer {info.get('cpu implementer', '?')}, part {info['cpu part']})"
    flags = set((info.get("flags") or info.get("features") or "").split())
    return {"cpu": model, "features": [f for f in FEATURES if f in flags], "logical_cpus": os.cpu_count(),
            "arch": platform.machine()}


def line():
    """One line for a table header."""
    d = describe()
    return f"machine: {d['cpu']}, {d['logical_cpus']} logical CPUs, {' '.join(d['features']) or 'no SIMD features listed'}"


if __name__ == "__main__":
    print(line())
