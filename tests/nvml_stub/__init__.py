"""The stand-in libnvidia-ml.so.1 (fake_nvml.c) and the script that builds it."""
