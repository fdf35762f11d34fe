"""``ddrm.host``: the host facts every run is tagged with (CPU model, torch kernel ISA, torch version)."""

from __future__ import annotations

import builtins
import platform

import torch

from ddrm import host


def test_host_tags_name_this_process_cpu_kernels_and_torch():
    tags = host.host_tags()
    assert set(tags) == {"cpu_model", "cpu_capability", "torch_version"}
    assert tags["torch_version"] == torch.__version__
    assert tags["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert all(isinstance(v, str) and v for v in tags.values())


def test_cpu_model_is_the_cpuinfo_model_name(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU 9000 @ 3.0GHz\nflags\t: fpu\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    host.cpu_model.cache_clear()
    try:
        assert host.cpu_model() == "Example CPU 9000 @ 3.0GHz"
    finally:
        host.cpu_model.cache_clear()


def test_cpu_model_falls_back_where_cpuinfo_cannot_be_read(monkeypatch):
    real_open = builtins.open

    def no_cpuinfo(path, *args, **kwargs):
        if path == "/proc/cpuinfo":
            raise OSError("not Linux")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    host.cpu_model.cache_clear()
    try:
        assert host.cpu_model() == "arm"
    finally:
        host.cpu_model.cache_clear()
