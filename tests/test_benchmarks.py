"""The benchmark script's file handling (benchmarks/bench.py); its timings are never tests."""


def test_benchmark_keeps_its_end_to_end_section(tmp_path):
    """A benchmark run without the cnn end to end keeps the section the file has; one run of it replaces only that
    section (benchmarks/bench.py)."""
    from benchmarks import bench

    section = "\n## The cnn end to end: `nth solve`\n\n| code | wall time [s] |\n|---|---|\n| old | 4911 |\n"
    for text in ("# b\n\n## K\nrows\n" + section, "# b\n" + section + "\n## float32\nx\n"):
        head, got, tail = bench._split_end_to_end(text)
        assert head + got + tail == text and got.startswith("\n## The cnn end to end") and "float32" not in got
        out = tmp_path / "b.md"
        out.write_text(text)
        assert "\n".join(bench._kept_end_to_end(str(out))) == section.rstrip("\n")
    assert bench._split_end_to_end("# b\n## K\n") == ("# b\n## K\n", "", "")
    assert bench._kept_end_to_end(str(tmp_path / "absent.md")) == []
